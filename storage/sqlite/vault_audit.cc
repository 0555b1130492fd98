// SPDX-License-Identifier: GPL-2.0-or-later
// SqliteVault: the audit log: durable and deferred appends, listing, chain verification.
#include "storage/sqlite/page_token.h"
#include "storage/sqlite/read_pool.h"
#include "storage/sqlite/rows.h"
#include "storage/sqlite/txn.h"
#include "storage/sqlite/writer.h"
#include "storage/sqlite_vault.h"

namespace tpmma::storage {

using sqlite::AppendAuditLocked;
using sqlite::Cat;
using sqlite::CheckAuditEvent;
using sqlite::ClampPageSize;
using sqlite::InTxn;
using sqlite::kHashSize;
using sqlite::MakePageToken;
using sqlite::ParseIntPageToken;
using sqlite::Stmt;
using sqlite::ToStatus;
using sqlite::VerifyAuditChainLocked;
using sqlite::Write;

// --- Audit

Result<int64_t> SqliteVault::AppendAudit(const AuditEvent& event) {
  return Write(*writer_, "append audit",
               [&](sqlite3* db) -> Result<int64_t> { return AppendAuditLocked(db, event); });
}

Status SqliteVault::AppendAuditDeferred(const AuditEvent& event) {
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

Status SqliteVault::VerifyAuditChain() {
  auto conn = readers_->Acquire();
  sqlite3* db = conn.get();
  return ToStatus(InTxn(db, false, "verify audit chain", [&]() -> Result<void> {
    TPMMA_RETURN_IF_ERROR(VerifyAuditChainLocked(db));
    return {};
  }));
}

}  // namespace tpmma::storage
