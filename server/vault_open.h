// SPDX-License-Identifier: GPL-2.0-or-later
// The one place ma-server and ma-admin open the vault: the backend is the config's choice
// (SQLite at vault.path, or PostgreSQL at vault.url), and no caller knows which it got.
#pragma once

#include <cstddef>
#include <memory>
#include <string>

#include "common/env.h"
#include "common/status.h"
#include "server/config.h"
#include "storage/postgres_vault.h"
#include "storage/vault.h"

namespace tpmma::server {

// The vault `cfg` names, with its [vault] tuning. Errors name the config key at fault
// ("vault.url host=db port=5432 dbname=tpmma user=ma: cannot connect ...") and never the
// password.
Result<std::unique_ptr<storage::Vault>> OpenVault(const Config& cfg, Env* env);

// A PostgreSQL vault at `url` (URL or keyword DSN, refused if it carries a password), with
// the password from `password_file` (owner-only; empty: libpq's PGPASSFILE or none).
// `connections`: the pool's size; `max_batch`: group commit's (vault.max_batch). What
// `ma-admin vault migrate --to` opens.
Result<std::unique_ptr<storage::Vault>> OpenPostgresVault(const std::string& url,
                                                          const std::string& password_file,
                                                          size_t connections, Env* env,
                                                          size_t max_batch = 64);

// What OpenPostgresVault checks and reads before it connects: `url` refused if it carries a
// password, the password read from `password_file` (owner-only; empty: none). For callers
// that connect otherwise (`ma-admin vault migrate` imports into an empty database).
Result<storage::PostgresVaultOptions> PostgresOptionsFor(const std::string& url,
                                                         const std::string& password_file,
                                                         Env* env);

// --check-config's question to the vault: it opens (a PostgreSQL schema is migrated
// forward, as a start would) and answers a read.
Status CheckVaultAnswers(const Config& cfg, Env* env);

}  // namespace tpmma::server
