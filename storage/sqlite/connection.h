// SPDX-License-Identifier: GPL-2.0-or-later
// Opening the vault file: the file itself (mode 0600) and connections configured the same
// way. Internal to storage/.
#pragma once

#include <string>
#include <string_view>

#include "common/status.h"
#include "storage/sqlite/stmt.h"

namespace tpmma::storage::sqlite {

// Creates `path` with mode 0600 whatever the umask if it does not exist yet; SQLite gives
// the -wal and -shm files the database file's mode.
Status CreatePrivateFile(const std::string& path);

// Same configuration on every connection: a tampered file's triggers/views cannot call
// risky functions (trusted_schema=OFF); foreign keys on; then `pragmas`. `vfs`: the SQLite
// VFS by name, empty for the default (tests register one that injects I/O faults).
Result<DbPtr> OpenConnection(const std::string& path, int busy_timeout_ms, std::string_view pragmas,
                             const std::string& vfs);

// WAL journal mode and synchronous=FULL: a commit is on disk (WAL fsynced) before the call
// returns (storage/README.md, "Durability and transactions").
Status MakeDurable(sqlite3* db, const std::string& path);

}  // namespace tpmma::storage::sqlite
