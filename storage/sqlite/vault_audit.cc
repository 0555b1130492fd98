// SPDX-License-Identifier: GPL-2.0-or-later
// SqliteVault: the audit log: durable and deferred appends, listing, chain verification.
#include "storage/page_token.h"
#include "storage/sqlite/audit_chain.h"
#include "storage/sqlite/read_pool.h"
#include "storage/sqlite/rows.h"
#include "storage/sqlite/txn.h"
#include "storage/sqlite/writer.h"
#include "storage/sqlite_vault.h"

namespace tpmma::storage {

using sqlite::AppendAuditLocked;
using sqlite::CheckAuditEvent;
using sqlite::InTxn;
using sqlite::kHashSize;
using sqlite::Stmt;
using sqlite::ToStatus;
using sqlite::Write;

// --- Audit

namespace {}  // namespace

Result<int64_t> SqliteVault::AppendAudit(const AuditEvent& event) {
  TPMMA_RETURN_IF_ERROR(CheckCallerAuditAction(event));
  return Write(*writer_, "append audit",
               [&](sqlite3* db) -> Result<int64_t> { return AppendAuditLocked(db, event); });
}

Status SqliteVault::AppendAuditDeferred(const AuditEvent& event) {
  TPMMA_RETURN_IF_ERROR(CheckCallerAuditAction(event));
  TPMMA_RETURN_IF_ERROR(CheckAuditEvent(event));
  return writer_->Defer(event);
}

Status SqliteVault::FlushDeferredAudit() {
  writer_->FlushDeferred();
  return Status();
}

Result<AuditPage> SqliteVault::ListAudit(const AuditFilter& f) {
  TPMMA_ASSIGN_OR_RETURN(int64_t after_seq, ParseIntPageToken('a', f.page_token));
  size_t n = ClampPageSize(f.page_size);
  std::string sql =
      "SELECT seq, time, actor, action, object, outcome, detail, prev_hash, hash "
      "FROM audit_log WHERE seq > ?";
  std::vector<std::variant<int64_t, std::string>> args{after_seq};
  if (f.actor) {
    sql += " AND actor = ?";
    args.emplace_back(*f.actor);
  }
  if (f.action) {
    sql += " AND action = ?";
    args.emplace_back(*f.action);
  }
  if (f.object) {
    sql += " AND object = ?";
    args.emplace_back(*f.object);
  }
  if (f.time_from) {
    sql += " AND time >= ?";
    args.emplace_back(*f.time_from);
  }
  if (f.time_to) {
    sql += " AND time < ?";
    args.emplace_back(*f.time_to);
  }
  sql += " ORDER BY seq LIMIT ?";
  args.emplace_back(static_cast<int64_t>(n + 1));
  auto conn = readers_->Acquire();
  TPMMA_ASSIGN_OR_RETURN(Stmt s, Stmt::Prepare(conn.get(), "list audit log", sql));
  for (size_t i = 0; i < args.size(); ++i) s.BindOne(static_cast<int>(i + 1), args[i]);
  AuditPage page;
  while (true) {
    TPMMA_ASSIGN_OR_RETURN(bool row, s.Step());
    if (!row) break;
    if (page.records.size() == n) {
      page.next_page_token = MakePageToken('a', std::to_string(page.records.back().seq));
      break;
    }
    AuditRecord r;
    r.seq = s.Int(0);
    r.event = AuditEvent{s.Int(1), s.Text(2), s.Text(3), s.Text(4), s.Text(5), s.Text(6)};
    r.prev_hash = s.Blob(7);
    r.hash = s.Blob(8);
    page.records.push_back(std::move(r));
  }
  return page;
}

Result<AuditRecord> SqliteVault::GetAuditRecord(int64_t seq) {
  auto conn = readers_->Acquire();
  TPMMA_ASSIGN_OR_RETURN(
      Stmt s, Stmt::Prepare(conn.get(), "read audit record",
                            "SELECT seq, time, actor, action, object, outcome, detail, prev_hash, "
                            "hash FROM audit_log WHERE seq = ?"));
  s.Bind(seq);
  TPMMA_ASSIGN_OR_RETURN(bool row, s.Step());
  if (!row) return Error(Code::kNotFound, Cat("no audit record with seq ", seq, " in the vault"));
  AuditRecord r;
  r.seq = s.Int(0);
  r.event = AuditEvent{s.Int(1), s.Text(2), s.Text(3), s.Text(4), s.Text(5), s.Text(6)};
  r.prev_hash = s.Blob(7);
  r.hash = s.Blob(8);
  return r;
}

Result<AuditHead> SqliteVault::GetAuditHead() {
  auto conn = readers_->Acquire();
  sqlite3* db = conn.get();
  return InTxn(db, false, "read audit head", [&]() -> Result<AuditHead> {
    AuditHead head;
    TPMMA_ASSIGN_OR_RETURN(head.vault_id, sqlite::ReadVaultId(db));
    TPMMA_ASSIGN_OR_RETURN(
        Stmt s, Stmt::Prepare(db, "read audit chain head",
                              "SELECT seq, hash, time FROM audit_log ORDER BY seq DESC LIMIT 1"));
    TPMMA_ASSIGN_OR_RETURN(bool row, s.Step());
    if (!row) return Error(Code::kCorruption, "the audit log is empty (no genesis record)");
    head.seq = s.Int(0);
    head.hash = s.Blob(1);
    head.time = s.Int(2);
    return head;
  });
}

Result<AuditChainReport> SqliteVault::CheckAuditChain() {
  auto conn = readers_->Acquire();
  sqlite3* db = conn.get();
  return InTxn(db, false, "verify audit chain",
               [&]() -> Result<AuditChainReport> { return sqlite::CheckAuditChainLocked(db); });
}

namespace {

// Inside the writer's transaction: the bounds, the hash the live log will continue from.
Result<AuditSegment> SegmentToArchive(sqlite3* db, int64_t through_seq) {
  TPMMA_ASSIGN_OR_RETURN(std::vector<AuditSegment> segments, sqlite::ReadSegments(db));
  const int64_t first = segments.empty() ? 1 : segments.back().last_seq + 1;
  TPMMA_ASSIGN_OR_RETURN(Stmt s, Stmt::Prepare(db, "read audit bounds",
                                               "SELECT max(seq), (SELECT hash FROM audit_log "
                                               "WHERE seq = ?) FROM audit_log"));
  s.Bind(through_seq);
  TPMMA_RETURN_IF_ERROR(s.Step());
  const int64_t head = s.Int(0);
  if (through_seq < first || through_seq >= head) {
    return Error(Code::kInvalidArgument,
                 Cat("can archive records ", first, "..", head - 1, " only (the head, seq ", head,
                     ", stays); asked for up to seq ", through_seq));
  }
  AuditSegment seg;
  seg.first_seq = first;
  seg.last_seq = through_seq;
  seg.last_hash = s.Blob(1);
  return seg;
}

}  // namespace

Status SqliteVault::ArchiveAudit(int64_t through_seq, ByteView archive_sha256,
                                 const AuditEvent& audit) {
  if (archive_sha256.size() != kHashSize || audit.action != kAuditArchiveAction ||
      audit.object != std::to_string(through_seq)) {
    return Status(
        Code::kInvalidArgument,
        "ArchiveAudit needs the archive's SHA-256 and an Audit.Archive event naming the seq");
  }
  return ToStatus(Write(*writer_, "archive audit records", [&](sqlite3* db) -> Result<void> {
    TPMMA_ASSIGN_OR_RETURN(AuditSegment seg, SegmentToArchive(db, through_seq));
    TPMMA_ASSIGN_OR_RETURN(
        Stmt ins, Stmt::Prepare(db, "record audit segment",
                                "INSERT INTO audit_segments (last_seq, first_seq, last_hash, "
                                "archived_at, archive_sha256) VALUES (?, ?, ?, ?, ?)"));
    ins.Bind(seg.last_seq, seg.first_seq, seg.last_hash, audit.time, archive_sha256);
    TPMMA_RETURN_IF_ERROR(ins.Run());
    TPMMA_ASSIGN_OR_RETURN(Stmt del, Stmt::Prepare(db, "delete archived audit records",
                                                   "DELETE FROM audit_log WHERE seq <= ?"));
    del.Bind(through_seq);
    TPMMA_RETURN_IF_ERROR(del.Run());
    TPMMA_RETURN_IF_ERROR(AppendAuditLocked(db, audit));
    return {};
  }));
}

Result<std::vector<AuditSegment>> SqliteVault::ListAuditSegments() {
  auto conn = readers_->Acquire();
  return sqlite::ReadSegments(conn.get());
}

}  // namespace tpmma::storage
