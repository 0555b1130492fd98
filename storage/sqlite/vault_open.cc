// SPDX-License-Identifier: GPL-2.0-or-later
// SqliteVault: opening the file, the writer thread and read connections it is made of,
// shutdown, statistics and the integrity check.
#include <algorithm>

#include "storage/sqlite/audit_chain.h"
#include "storage/sqlite/connection.h"
#include "storage/sqlite/migrations.h"
#include "storage/sqlite/read_pool.h"
#include "storage/sqlite/rows.h"
#include "storage/sqlite/txn.h"
#include "storage/sqlite/writer.h"
#include "storage/sqlite_vault.h"

namespace tpmma::storage {

static_assert(SqliteVault::kApplicationId == sqlite::kApplicationId);

using sqlite::DbPtr;
using sqlite::Stmt;

int SqliteVault::SchemaVersion() {
  return sqlite::SchemaVersion();
}

SqliteVault::SqliteVault(SqliteVaultOptions options, std::unique_ptr<sqlite::ReadPool> readers)
    : options_(std::move(options)), readers_(std::move(readers)) {}

SqliteVault::~SqliteVault() {
  // Drain first; then close the readers before the writer, so that the read-write
  // connection is the last one and its close checkpoints the WAL into the file.
  if (writer_) writer_->Stop();
  readers_.reset();
  writer_.reset();
}

SqliteVaultStats SqliteVault::GetStats() const {
  return writer_->Stats();
}

VaultStats SqliteVault::Stats() const {
  SqliteVaultStats s = writer_->Stats();
  VaultStats v;
  v.calls = s.calls;
  v.commits = s.commits;
  v.largest_batch = s.largest_batch;
  v.queued = s.queued;
  v.deferred_queued = s.deferred_queued;
  v.deferred_committed = s.deferred_committed;
  v.deferred_lost = s.deferred_lost;
  writer_->AddBatchSizes(&v);
  return v;
}

Result<std::unique_ptr<SqliteVault>> SqliteVault::Open(const std::string& path,
                                                       SqliteVaultOptions options) {
  TPMMA_RETURN_IF_ERROR(sqlite::CreatePrivateFile(path));
  TPMMA_ASSIGN_OR_RETURN(
      DbPtr db, sqlite::OpenConnection(path, options.busy_timeout_ms, "PRAGMA secure_delete = ON;",
                                       options.vfs));
  TPMMA_RETURN_IF_ERROR(sqlite::CheckIdentity(db.get(), path));
  TPMMA_RETURN_IF_ERROR(sqlite::MakeDurable(db.get(), path));
  TPMMA_RETURN_IF_ERROR(sqlite::Migrate(db.get(), path));
  // From here on the schema is fixed: statements can be kept.
  sqlite::AttachStmtCache(db.get());

  // Opened after the migration, so they never hold an outdated schema. query_only: a bug
  // that wrote through a reader would bypass the writer's transaction and audit chain.
  std::vector<DbPtr> readers;
  for (size_t i = 0; i < std::max<size_t>(options.read_connections, 1); ++i) {
    TPMMA_ASSIGN_OR_RETURN(DbPtr r, sqlite::OpenConnection(path, options.busy_timeout_ms,
                                                           "PRAGMA query_only = ON;", options.vfs));
    sqlite::AttachStmtCache(r.get());
    readers.push_back(std::move(r));
  }
  size_t max_batch = options.group_commit ? options.max_batch : 1;
  std::unique_ptr<SqliteVault> vault(
      new SqliteVault(std::move(options), std::make_unique<sqlite::ReadPool>(std::move(readers))));
  sqlite::WriterOptions w;
  w.max_batch = max_batch;
  w.max_deferred = vault->options_.max_deferred_audit;
  w.deferred_delay = std::chrono::milliseconds(vault->options_.deferred_audit_delay_ms);
  w.hook = &vault->options_.fault_hook;
  w.append_deferred = [](sqlite3* db, const AuditEvent& e) -> Status {
    auto seq = sqlite::AppendAuditLocked(db, e);
    return seq ? Status() : seq.error();
  };
  vault->writer_ = std::make_unique<sqlite::Writer>(std::move(db), std::move(w));
  return vault;
}

namespace sqlite {
namespace {

Status SqliteFindings(sqlite3* db) {
  TPMMA_ASSIGN_OR_RETURN(Stmt s,
                         Stmt::Prepare(db, "integrity check", "PRAGMA integrity_check(20)"));
  std::string findings;
  while (true) {
    TPMMA_ASSIGN_OR_RETURN(bool row, s.Step());
    if (!row) break;
    std::string line = s.Text(0);
    if (line != "ok") findings += (findings.empty() ? "" : "; ") + line;
  }
  if (!findings.empty()) return Status(Code::kCorruption, "SQLite integrity check: " + findings);
  return Status();
}

Status ForeignKeyFindings(sqlite3* db) {
  TPMMA_ASSIGN_OR_RETURN(Stmt s,
                         Stmt::Prepare(db, "foreign key check", "PRAGMA foreign_key_check"));
  TPMMA_ASSIGN_OR_RETURN(bool row, s.Step());
  if (row) {
    return Status(Code::kCorruption, Cat("foreign key violation: table ", s.Text(0), " rowid ",
                                         s.Int(1), " references ", s.Text(2)));
  }
  return Status();
}

}  // namespace

Status IntegrityFindings(sqlite3* db) {
  TPMMA_RETURN_IF_ERROR(SqliteFindings(db));
  return ForeignKeyFindings(db);
}

}  // namespace sqlite

Status SqliteVault::IntegrityCheck() {
  auto conn = readers_->Acquire();
  sqlite3* db = conn.get();
  return sqlite::ToStatus(sqlite::InTxn(db, false, "integrity check", [&]() -> Result<void> {
    TPMMA_RETURN_IF_ERROR(sqlite::IntegrityFindings(db));
    TPMMA_RETURN_IF_ERROR(sqlite::CheckAuditChainLocked(db));
    return {};
  }));
}

}  // namespace tpmma::storage
