// SPDX-License-Identifier: GPL-2.0-or-later
#include "storage/postgres/audit_chain.h"

#include <string>
#include <string_view>

#include "storage/audit_walk.h"
#include "storage/postgres/rows.h"

namespace tpmma::storage::postgres {
namespace {

// pg_trigger.tgtype bits.
constexpr int64_t kRow = 1, kBefore = 2, kDelete = 8, kUpdate = 16, kTruncate = 32;

struct ExpectedTrigger {
  std::string_view name;
  std::string_view table;
  int64_t type;
  std::string_view function;
};
constexpr ExpectedTrigger kTriggers[] = {
    {"audit_log_no_update", "audit_log", kBefore | kRow | kUpdate, "tpmma_refuse"},
    {"audit_log_no_delete", "audit_log", kBefore | kRow | kDelete, "tpmma_audit_log_delete"},
    {"audit_log_no_truncate", "audit_log", kBefore | kTruncate, "tpmma_refuse"},
    {"audit_head_advance", "audit_head", kBefore | kRow | kUpdate, "tpmma_audit_head_advance"},
    {"audit_head_no_delete", "audit_head", kBefore | kRow | kDelete, "tpmma_refuse"},
    {"audit_head_no_truncate", "audit_head", kBefore | kTruncate, "tpmma_refuse"},
    {"audit_segments_no_update", "audit_segments", kBefore | kRow | kUpdate, "tpmma_refuse"},
    {"audit_segments_no_delete", "audit_segments", kBefore | kRow | kDelete, "tpmma_refuse"},
    {"audit_segments_no_truncate", "audit_segments", kBefore | kTruncate, "tpmma_refuse"},
    {"vault_meta_no_update", "vault_meta", kBefore | kRow | kUpdate, "tpmma_refuse"},
    {"vault_meta_no_delete", "vault_meta", kBefore | kRow | kDelete, "tpmma_refuse"},
    {"vault_meta_no_truncate", "vault_meta", kBefore | kTruncate, "tpmma_refuse"},
};

// The trigger functions' bodies as migration 1 wrote them, whitespace collapsed. A function
// re-created with another body (RETURN NEW) is a changed guard.
struct ExpectedFunction {
  std::string_view name;
  std::string_view body;
};
constexpr ExpectedFunction kFunctions[] = {
    {"tpmma_refuse",
     "BEGIN RAISE EXCEPTION '% is %', TG_TABLE_NAME, TG_ARGV[0] USING ERRCODE = "
     "'integrity_constraint_violation'; END"},
    {"tpmma_audit_log_delete",
     "BEGIN IF OLD.seq <= (SELECT coalesce(max(last_seq), 0) FROM audit_segments) THEN RETURN "
     "OLD; END IF; RAISE EXCEPTION 'audit_log is append-only' USING ERRCODE = "
     "'integrity_constraint_violation'; END"},
    {"tpmma_audit_head_advance",
     "BEGIN IF NEW.id AND NEW.seq = OLD.seq + 1 AND EXISTS (SELECT 1 FROM audit_log WHERE seq = "
     "NEW.seq AND hash = NEW.hash) THEN RETURN NEW; END IF; RAISE EXCEPTION 'audit_head only "
     "advances to the record appended after it' USING ERRCODE = "
     "'integrity_constraint_violation'; END"},
};

// Every live record, a page at a time (the log may be large).
Status WalkRecords(PGconn* c, AuditChainWalk* walk) {
  constexpr int64_t kPage = 1000;
  int64_t after = 0;
  while (true) {
    TPMMA_ASSIGN_OR_RETURN(Rows rows, Query(c, "read audit log",
                                            Cat("SELECT ", kAuditColumns,
                                                " FROM audit_log WHERE seq > $1 "
                                                "ORDER BY seq LIMIT $2"),
                                            Params(after, kPage)));
    for (int i = 0; i < rows.size(); ++i) {
      AuditRecord r = ReadAuditRecord(rows, i);
      TPMMA_RETURN_IF_ERROR(walk->Add(r));
      after = r.seq;
    }
    if (rows.size() < kPage) return Status();
  }
}

// The head row names the last record: a head behind it would fork the next append.
Status CheckHead(PGconn* c, const AuditChainWalk& walk) {
  TPMMA_ASSIGN_OR_RETURN(
      Rows h, Query(c, "read audit chain head", "SELECT seq, hash FROM audit_head WHERE id"));
  if (h.size() != 1) return Status(Code::kCorruption, "audit chain: the head row is missing");
  if (h.Int(0, 0) != walk.last_seq() || h.Blob(0, 1) != walk.last_hash()) {
    return Status(Code::kCorruption, Cat("audit chain: the head row says seq ", h.Int(0, 0),
                                         ", the log ends at seq ", walk.last_seq()));
  }
  return Status();
}

}  // namespace

Result<Bytes> ReadVaultId(PGconn* c) {
  TPMMA_ASSIGN_OR_RETURN(
      Rows r, Query(c, "read vault id", "SELECT value FROM vault_meta WHERE key = 'vault_id'"));
  if (r.size() != 1 || r.Blob(0, 0).size() != 16) {
    return Error(Code::kCorruption, "vault_meta has no 16-byte vault_id");
  }
  return r.Blob(0, 0);
}

Status AppendGenesisLocked(PGconn* c, int64_t now) {
  TPMMA_ASSIGN_OR_RETURN(Bytes id, ReadVaultId(c));
  AuditEvent genesis{now,           "system", std::string(kAuditGenesisAction),
                     HexEncode(id), "ok",     AuditGenesisDetail(0)};
  auto seq = AppendAuditLocked(c, genesis);
  if (!seq) return seq.error();
  if (*seq != 1) return Status(Code::kInternal, "genesis record is not the first");
  return Status();
}

Result<std::vector<AuditSegment>> ReadSegments(PGconn* c) {
  TPMMA_ASSIGN_OR_RETURN(Rows r,
                         Query(c, "read audit segments",
                               "SELECT first_seq, last_seq, last_hash, archived_at, archive_sha256 "
                               "FROM audit_segments ORDER BY last_seq"));
  std::vector<AuditSegment> out;
  for (int i = 0; i < r.size(); ++i) {
    out.push_back(AuditSegment{r.Int(i, 0), r.Int(i, 1), r.Blob(i, 2), r.Int(i, 3), r.Blob(i, 4)});
  }
  return out;
}

Status CheckAuditTriggers(PGconn* c) {
  TPMMA_ASSIGN_OR_RETURN(
      Rows t, Query(c, "read audit triggers",
                    "SELECT t.tgname, r.relname, t.tgtype, t.tgenabled, p.proname "
                    "FROM pg_trigger t JOIN pg_class r ON r.oid = t.tgrelid "
                    "JOIN pg_proc p ON p.oid = t.tgfoid WHERE NOT t.tgisinternal "
                    "AND r.relnamespace = current_schema()::regnamespace AND r.relname IN "
                    "('audit_log', 'audit_head', 'audit_segments', 'vault_meta')"));
  for (const ExpectedTrigger& e : kTriggers) {
    int found = -1;
    for (int i = 0; i < t.size(); ++i) {
      if (t.Text(i, 0) == e.name && t.Text(i, 1) == e.table) found = i;
    }
    if (found < 0)
      return Status(Code::kCorruption, Cat("append-only trigger ", e.name, " is missing"));
    if (t.Int(found, 2) != e.type || t.Text(found, 3) != "O" || t.Text(found, 4) != e.function) {
      return Status(Code::kCorruption,
                    Cat("append-only trigger ", e.name,
                        " was changed or disabled: it is not what schema 1 made"));
    }
  }
  if (t.size() != static_cast<int>(std::size(kTriggers))) {
    return Status(Code::kCorruption, "a trigger that schema 1 did not make is on the audit tables");
  }
  for (const ExpectedFunction& f : kFunctions) {
    TPMMA_ASSIGN_OR_RETURN(Rows p, Query(c, "read audit trigger function",
                                         "SELECT prosrc FROM pg_proc WHERE proname = $1 "
                                         "AND pronamespace = current_schema()::regnamespace",
                                         Params(f.name)));
    if (p.size() != 1 || CollapseSqlSpace(p.Text(0, 0)) != f.body) {
      return Status(Code::kCorruption,
                    Cat("append-only trigger function ", f.name, " was changed"));
    }
  }
  return Status();
}

Result<AuditChainReport> CheckAuditChainLocked(PGconn* c) {
  TPMMA_ASSIGN_OR_RETURN(Bytes vault_id, ReadVaultId(c));
  TPMMA_ASSIGN_OR_RETURN(std::vector<AuditSegment> segments, ReadSegments(c));
  TPMMA_ASSIGN_OR_RETURN(
      AuditChainWalk walk,
      AuditChainWalk::Start(std::move(vault_id), segments, AuditChainWalk::Genesis::kFirst));
  TPMMA_RETURN_IF_ERROR(WalkRecords(c, &walk));
  TPMMA_ASSIGN_OR_RETURN(AuditChainReport report, walk.Finish());
  TPMMA_RETURN_IF_ERROR(CheckHead(c, walk));
  // Last: a record missing or altered is the finding to report first.
  TPMMA_RETURN_IF_ERROR(CheckAuditTriggers(c));
  return report;
}

}  // namespace tpmma::storage::postgres
