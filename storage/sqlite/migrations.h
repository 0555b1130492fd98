// SPDX-License-Identifier: GPL-2.0-or-later
// The vault file's identity (application_id) and schema version (user_version): refusing
// files that are not ours or are newer than this build, and migrating older ones forward.
// The schema itself is migrations/*.sql. Internal to storage/.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "common/status.h"
#include "storage/sqlite/stmt.h"

namespace tpmma::storage::sqlite {

// PRAGMA application_id of tpm-ma vault files ("TPMA").
inline constexpr int32_t kApplicationId = 0x54504d41;

// The schema version this build writes: the number of migrations.
int SchemaVersion();

Result<int64_t> ReadPragmaInt(sqlite3* db, std::string_view pragma);

// Refuses files that are not ours before anything is written to them: kCorruption if it
// is not SQLite, kInvalidArgument if it is another program's (a foreign application_id,
// or tables without ours).
Status CheckIdentity(sqlite3* db, const std::string& path);

// Runs migration i (user_version i → i+1) in its own write transaction until the file is
// at SchemaVersion(). kVersionTooNew if the file is newer than this build.
Status Migrate(sqlite3* db, const std::string& path);

}  // namespace tpmma::storage::sqlite
