// SPDX-License-Identifier: GPL-2.0-or-later
// ma-admin vault backup / restore / migrate (issue #14): the vault as a whole, on the MA
// host. The SQLite work is storage/sqlite_backup.h's, the PostgreSQL import
// storage/postgres_vault.h's; these check the config, tie them together and print.
// docs/operations.md, "Backing up and restoring" and "Moving to PostgreSQL".
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "common/status.h"
#include "server/admin_commands.h"
#include "server/config.h"

namespace tpmma::server {

// The files besides the vault an MA needs to come back (what `vault backup` reminds of):
// (what, path), for every one `cfg` names.
std::vector<std::pair<std::string, std::string>> FilesToBackUp(const Config& cfg);

// An online backup of the SQLite vault to `out` (refused if it exists), checked before it
// is named `out`; recorded in the audit log as Vault.Backup. A PostgreSQL vault is
// refused: pg_dump is its backup.
Status BackupVault(const AdminContext& ctx, const Config& cfg, const std::string& out);

// A checked backup put in place as the SQLite vault while ma-server is stopped; `force`
// replaces an existing vault file. The restored vault records Vault.Restore.
Status RestoreVault(const AdminContext& ctx, const Config& cfg, const std::string& from,
                    bool force);

struct MigrateOptions {
  std::string to;             // postgresql:// URL or keyword DSN, without a password
  std::string password_file;  // as [vault] password_file; empty: PGPASSFILE or none
};
// Copies the (stopped) SQLite vault into an empty PostgreSQL database in one transaction,
// then verifies the copy's chain and compares its head and row counts with the source.
Status MigrateVault(const AdminContext& ctx, const Config& cfg, const MigrateOptions& options);

}  // namespace tpmma::server
