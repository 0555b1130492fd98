// SPDX-License-Identifier: GPL-2.0-or-later
// PostgresVault: connecting, migrating, the connection pool, the integrity check.
#include <algorithm>

#include "storage/postgres/audit_chain.h"
#include "storage/postgres/connection.h"
#include "storage/postgres/migrations.h"
#include "storage/postgres/rows.h"
#include "storage/postgres_vault.h"

namespace tpmma::storage {

using postgres::ConnPtr;

int PostgresVault::SchemaVersion() {
  return postgres::SchemaVersion();
}

PostgresVault::PostgresVault(std::unique_ptr<postgres::ConnPool> pool, size_t max_batch)
    : pool_(std::move(pool)),
      writes_(std::make_unique<postgres::GroupCommit>(pool_.get(), max_batch)) {}

PostgresVault::~PostgresVault() = default;

Result<bool> PostgresVault::ConnInfoHasPassword(const std::string& conninfo) {
  return postgres::ConnInfoHasPassword(conninfo);
}

Result<std::string> PostgresVault::DescribeConnInfo(const std::string& conninfo) {
  return postgres::DescribeConnInfo(conninfo);
}

Result<std::unique_ptr<PostgresVault>> PostgresVault::Open(const std::string& given,
                                                           PostgresVaultOptions options) {
  TPMMA_ASSIGN_OR_RETURN(std::string where, postgres::DescribeConnInfo(given));
  std::string conninfo = given;
  if (!options.password.empty()) {
    TPMMA_ASSIGN_OR_RETURN(conninfo, postgres::ConnInfoWithPassword(given, options.password));
  }
  std::vector<ConnPtr> conns;
  for (size_t i = 0; i < std::max<size_t>(options.connections, 1); ++i) {
    TPMMA_ASSIGN_OR_RETURN(ConnPtr c, postgres::Connect(conninfo, options.lock_timeout_ms));
    if (i == 0) TPMMA_RETURN_IF_ERROR(postgres::Migrate(c.get(), where));
    conns.push_back(std::move(c));
  }
  return std::unique_ptr<PostgresVault>(new PostgresVault(
      std::make_unique<postgres::ConnPool>(conninfo, options.lock_timeout_ms, std::move(conns)),
      options.max_batch));
}

Status PostgresVault::IntegrityCheck() {
  // PostgreSQL checks its own pages (and enforces the foreign keys SQLite's
  // foreign_key_check looks for); what is ours to check is the chain and its guards.
  return postgres::ToStatus(
      postgres::Snapshot(*pool_, "integrity check", [&](PGconn* c) -> Result<void> {
        TPMMA_RETURN_IF_ERROR(postgres::CheckAuditChainLocked(c));
        return {};
      }));
}

VaultStats PostgresVault::Stats() const {
  VaultStats s;
  writes_->FillStats(&s);
  return s;
}

}  // namespace tpmma::storage
