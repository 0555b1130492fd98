// SPDX-License-Identifier: GPL-2.0-or-later
#include "storage/sqlite/audit_chain.h"

#include <string>
#include <string_view>

#include "common/text.h"
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

std::string CollapseSpace(std::string_view sql) {
  std::string out;
  for (char c : sql) {
    const bool space = c == ' ' || c == '\n' || c == '\t' || c == '\r';
    if (space) {
      if (!out.empty() && out.back() != ' ') out.push_back(' ');
    } else {
      out.push_back(c);
    }
  }
  while (!out.empty() && (out.back() == ' ' || out.back() == ';')) out.pop_back();
  return out;
}

std::string GenesisDetail(int64_t earlier) {
  if (earlier == 0) return "new vault";
  return Cat("after ", earlier,
             " record(s) written before schema 6; those are chained but not anchored by this "
             "record");
}

// The genesis record must be the first record, or follow exactly the records its detail
// counts (a vault upgraded to schema 6).
Status CheckGenesis(const AuditRecord& r, const Bytes& vault_id) {
  if (r.event.actor != "system" || r.event.object != HexEncode(vault_id)) {
    return Status(Code::kCorruption,
                  Cat("audit chain: the genesis record at seq ", r.seq, " names another vault"));
  }
  if (r.event.detail != GenesisDetail(r.seq - 1)) {
    return Status(Code::kCorruption, Cat("audit chain: the genesis record is at seq ", r.seq,
                                         ", not where it says it is"));
  }
  return Status();
}

struct ChainCursor {
  int64_t expected_seq = 1;
  Bytes prev;
};

// The segments are contiguous from seq 1; returns where the live log must continue.
Result<ChainCursor> CheckSegments(const std::vector<AuditSegment>& segments) {
  ChainCursor c{1, Bytes(kHashSize, 0)};
  for (const AuditSegment& s : segments) {
    if (s.first_seq != c.expected_seq || s.last_seq < s.first_seq ||
        s.last_hash.size() != kHashSize) {
      return Error(Code::kCorruption,
                   Cat("audit chain: archived segment ending at seq ", s.last_seq,
                       " does not continue the one before (expected it to start at seq ",
                       c.expected_seq, ")"));
    }
    c.expected_seq = s.last_seq + 1;
    c.prev = s.last_hash;
  }
  return c;
}

AuditRecord ReadRecord(const Stmt& s) {
  AuditRecord r;
  r.seq = s.Int(0);
  r.event = AuditEvent{s.Int(1), s.Text(2), s.Text(3), s.Text(4), s.Text(5), s.Text(6)};
  r.prev_hash = s.Blob(7);
  r.hash = s.Blob(8);
  return r;
}

Status CheckLink(const AuditRecord& r, ChainCursor* c) {
  if (r.seq != c->expected_seq) {
    return Status(Code::kCorruption, Cat("audit chain broken at seq ", c->expected_seq,
                                         ": record missing (next present is seq ", r.seq, ")"));
  }
  if (r.prev_hash != c->prev) {
    return Status(Code::kCorruption, Cat("audit chain broken at seq ", r.seq,
                                         ": prev_hash does not match the hash of seq ", r.seq - 1));
  }
  TPMMA_ASSIGN_OR_RETURN(Bytes computed, AuditRecordHash(r.seq, r.event, r.prev_hash));
  if (computed != r.hash) {
    return Status(Code::kCorruption,
                  Cat("audit chain broken at seq ", r.seq, ": record was altered"));
  }
  c->prev = r.hash;
  ++c->expected_seq;
  return Status();
}

// What the walk over the live records found beyond the links.
struct Walk {
  int64_t first_seq = 0;
  int64_t genesis_seq = 0;
  bool archive_recorded = false;
};

Status CheckRecord(const AuditRecord& r, const Bytes& vault_id, int64_t archived_through, Walk* w) {
  if (w->first_seq == 0) w->first_seq = r.seq;
  if (r.event.action == kAuditGenesisAction) {
    if (w->genesis_seq != 0) {
      return Status(Code::kCorruption, Cat("audit chain: a second genesis record at seq ", r.seq));
    }
    TPMMA_RETURN_IF_ERROR(CheckGenesis(r, vault_id));
    w->genesis_seq = r.seq;
  }
  if (r.event.action == kAuditArchiveAction && r.event.actor == "system" &&
      r.event.object == std::to_string(archived_through)) {
    w->archive_recorded = true;
  }
  return Status();
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
                     HexEncode(id), "ok",     GenesisDetail(earlier)};
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
    if (CollapseSpace(s.Text(0)) != t.sql) {
      return Status(Code::kCorruption, Cat("append-only trigger ", t.name,
                                           " was changed: it is not what schema 6 made"));
    }
  }
  return Status();
}

Result<AuditChainReport> CheckAuditChainLocked(sqlite3* db) {
  TPMMA_ASSIGN_OR_RETURN(Bytes vault_id, ReadVaultId(db));
  TPMMA_ASSIGN_OR_RETURN(std::vector<AuditSegment> segments, ReadSegments(db));
  TPMMA_ASSIGN_OR_RETURN(ChainCursor cursor, CheckSegments(segments));
  const int64_t archived_through = cursor.expected_seq - 1;
  TPMMA_ASSIGN_OR_RETURN(Stmt s,
                         Stmt::Prepare(db, "read audit log",
                                       "SELECT seq, time, actor, action, object, outcome, detail, "
                                       "prev_hash, hash FROM audit_log ORDER BY seq"));
  Walk walk;
  while (true) {
    TPMMA_ASSIGN_OR_RETURN(bool row, s.Step());
    if (!row) break;
    AuditRecord r = ReadRecord(s);
    TPMMA_RETURN_IF_ERROR(CheckLink(r, &cursor));
    TPMMA_RETURN_IF_ERROR(CheckRecord(r, vault_id, archived_through, &walk));
  }
  if (walk.first_seq == 0) {
    return Error(Code::kCorruption,
                 "audit chain: the log is empty, not even its genesis record is left "
                 "(every record deleted?)");
  }
  if (archived_through == 0 && walk.genesis_seq == 0) {
    return Error(Code::kCorruption, "audit chain: no genesis record (the log's start was cut)");
  }
  if (archived_through != 0 && !walk.archive_recorded) {
    return Error(Code::kCorruption, Cat("audit chain: records up to seq ", archived_through,
                                        " are marked archived, but the log has no ",
                                        kAuditArchiveAction, " record for it"));
  }
  // Last: a record missing or altered is the finding to report first.
  TPMMA_RETURN_IF_ERROR(CheckAuditTriggers(db));
  return AuditChainReport{std::move(vault_id), walk.first_seq, cursor.expected_seq - 1,
                          walk.genesis_seq, archived_through};
}

}  // namespace tpmma::storage::sqlite
