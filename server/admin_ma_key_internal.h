// SPDX-License-Identifier: GPL-2.0-or-later
// What admin_ma_key.cc (rotate, status) and admin_reencipher.cc (reencipher, retire) share.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "schema/package.h"
#include "server/admin_commands.h"
#include "server/config.h"
#include "storage/vault.h"

namespace tpmma::server {

// The stored package's document, verified with the key the MA verified it with at Upload
// (or, for packages stored before it kept that key, the platform's current one).
Result<schema::MigrationPackage> ReadVerifiedPackage(storage::Vault& vault,
                                                     const storage::Package& p);

// Storage key id -> the platforms (not revoked) whose newest package's MRK is bound to that
// key by PolicyDuplicationSelect: legacy MRKs, whose TPMs duplicate to it and nothing else.
Result<std::map<std::string, std::vector<std::string>>> BoundPlatforms(const AdminContext& ctx,
                                                                       const Config& cfg);

// Storage key id ("" : not recorded) -> packages whose outer wrap it holds.
Result<std::map<std::string, int64_t>> WrapCounts(storage::Vault& vault);

// Re-encipherment replaces the only wrap that opens once the old key is gone: a vault backup
// taken after the last rotation (an audit record says so), unless `have_backup`.
Status CheckBackedUp(const AdminContext& ctx, const Config& cfg, bool have_backup);

// config.toml replaced by `cfg` (paths relative to `state_dir`), checked as ma-server will
// read it, after `audit` is on record.
Status WriteConfig(const AdminContext& ctx, const std::string& state_dir, Config cfg,
                   const storage::AuditEvent& audit);

}  // namespace tpmma::server
