// SPDX-License-Identifier: GPL-2.0-or-later
#include "storage/sqlite/audit_chain.h"

#include <string>
#include <string_view>

#include "common/text.h"
#include "storage/audit_walk.h"
#include "storage/sqlite/rows.h"

namespace tpmma::storage::sqlite {
namespace {

// The triggers' text as migrations 1 and 6 created them, whitespace collapsed. A trigger
// that was dropped and re-created with another body (say, WHEN 0) is a changed trigger.
struct ExpectedTrigger {
  std::string_view name;
  std::string_view sql;
};
constexpr ExpectedTrigger kTriggers[] = {
    {"audit_log_no_update",
     "CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log BEGIN SELECT RAISE(ABORT, "
     "'audit_log is append-only'); END"},
    {"audit_log_no_delete",
     "CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log WHEN OLD.seq > (SELECT "
     "coalesce(max(last_seq), 0) FROM audit_segments) BEGIN SELECT RAISE(ABORT, 'audit_log is "
     "append-only'); END"},
    {"audit_segments_no_update",
     "CREATE TRIGGER audit_segments_no_update BEFORE UPDATE ON audit_segments BEGIN SELECT "
     "RAISE(ABORT, 'audit_segments is append-only'); END"},
    {"audit_segments_no_delete",
     "CREATE TRIGGER audit_segments_no_delete BEFORE DELETE ON audit_segments BEGIN SELECT "
     "RAISE(ABORT, 'audit_segments is append-only'); END"},
    {"vault_meta_no_update",
     "CREATE TRIGGER vault_meta_no_update BEFORE UPDATE ON vault_meta BEGIN SELECT "
     "RAISE(ABORT, 'vault_meta is write-once'); END"},
    {"vault_meta_no_delete",
     "CREATE TRIGGER vault_meta_no_delete BEFORE DELETE ON vault_meta BEGIN SELECT "
     "RAISE(ABORT, 'vault_meta is write-once'); END"},
};

AuditRecord ReadRecord(const Stmt& s) {
  AuditRecord r;
  r.seq = s.Int(0);
  r.event = AuditEvent{s.Int(1), s.Text(2), s.Text(3), s.Text(4), s.Text(5), s.Text(6)};
  r.prev_hash = s.Blob(7);
  r.hash = s.Blob(8);
  return r;
}

}  // namespace

Result<Bytes> ReadVaultId(sqlite3* db) {
  TPMMA_ASSIGN_OR_RETURN(
      Stmt s,
      Stmt::Prepare(db, "read vault id", "SELECT value FROM vault_meta WHERE key = 'vault_id'"));
  TPMMA_ASSIGN_OR_RETURN(bool row, s.Step());
  if (!row || s.Blob(0).size() != 16) {
    return Error(Code::kCorruption, "vault_meta has no 16-byte vault_id");
  }
  return s.Blob(0);
}

Status AppendGenesisLocked(sqlite3* db, int64_t now) {
  TPMMA_ASSIGN_OR_RETURN(Bytes id, ReadVaultId(db));
  TPMMA_ASSIGN_OR_RETURN(
      Stmt count, Stmt::Prepare(db, "count audit records", "SELECT count(*) FROM audit_log"));
  TPMMA_RETURN_IF_ERROR(count.Step());
  const int64_t earlier = count.Int(0);
  AuditEvent genesis{now,           "system", std::string(kAuditGenesisAction),
                     HexEncode(id), "ok",     AuditGenesisDetail(earlier)};
  auto seq = AppendAuditLocked(db, genesis);
  return seq ? Status() : seq.error();
}

Result<std::vector<AuditSegment>> ReadSegments(sqlite3* db) {
  TPMMA_ASSIGN_OR_RETURN(
      Stmt s, Stmt::Prepare(db, "read audit segments",
                            "SELECT first_seq, last_seq, last_hash, archived_at, archive_sha256 "
                            "FROM audit_segments ORDER BY last_seq"));
  std::vector<AuditSegment> out;
  while (true) {
    TPMMA_ASSIGN_OR_RETURN(bool row, s.Step());
    if (!row) break;
    out.push_back(AuditSegment{s.Int(0), s.Int(1), s.Blob(2), s.Int(3), s.Blob(4)});
  }
  return out;
}

Status CheckAuditTriggers(sqlite3* db) {
  for (const ExpectedTrigger& t : kTriggers) {
    TPMMA_ASSIGN_OR_RETURN(
        Stmt s, Stmt::Prepare(db, "read audit trigger",
                              "SELECT sql FROM sqlite_schema WHERE type = 'trigger' AND name = ?"));
    s.Bind(t.name);
    TPMMA_ASSIGN_OR_RETURN(bool row, s.Step());
    if (!row) return Status(Code::kCorruption, Cat("append-only trigger ", t.name, " is missing"));
    if (CollapseSqlSpace(s.Text(0)) != t.sql) {
      return Status(Code::kCorruption, Cat("append-only trigger ", t.name,
                                           " was changed: it is not what schema 6 made"));
    }
  }
  return Status();
}

Result<AuditChainReport> CheckAuditChainLocked(sqlite3* db) {
  TPMMA_ASSIGN_OR_RETURN(Bytes vault_id, ReadVaultId(db));
  TPMMA_ASSIGN_OR_RETURN(std::vector<AuditSegment> segments, ReadSegments(db));
  TPMMA_ASSIGN_OR_RETURN(
      AuditChainWalk walk,
      AuditChainWalk::Start(std::move(vault_id), segments, AuditChainWalk::Genesis::kAfterUpgrade));
  TPMMA_ASSIGN_OR_RETURN(Stmt s,
                         Stmt::Prepare(db, "read audit log",
                                       "SELECT seq, time, actor, action, object, outcome, detail, "
                                       "prev_hash, hash FROM audit_log ORDER BY seq"));
  while (true) {
    TPMMA_ASSIGN_OR_RETURN(bool row, s.Step());
    if (!row) break;
    TPMMA_RETURN_IF_ERROR(walk.Add(ReadRecord(s)));
  }
  TPMMA_ASSIGN_OR_RETURN(AuditChainReport report, walk.Finish());
  // Last: a record missing or altered is the finding to report first.
  TPMMA_RETURN_IF_ERROR(CheckAuditTriggers(db));
  return report;
}

}  // namespace tpmma::storage::sqlite
