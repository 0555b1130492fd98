// SPDX-License-Identifier: GPL-2.0-or-later
// The SQLite vault as a file (issue #14): an online backup while ma-server runs, the check
// a backup must pass before anyone relies on it, restoring one, and exporting every row for
// `ma-admin vault migrate` (storage/vault_copy.h). No SQLite type appears here.
#pragma once

#include <cstdint>
#include <string>

#include "common/status.h"
#include "storage/vault.h"
#include "storage/vault_copy.h"

namespace tpmma::storage {

// What a checked vault file holds.
struct SqliteFileReport {
  int64_t schema_version = 0;
  AuditChainReport chain;  // CheckAuditChain's report (vault id, first and last seq)
  Bytes head_hash;         // the hash of record chain.last_seq
  int64_t pages = 0;       // the file's size in SQLite pages
};

// Opens `path` read-only and checks it as a backup must be checked: SQLite's
// integrity_check and foreign_key_check, the tpm-ma application_id, a schema version this
// build knows (at least 6, which anchored the audit log), and the audit chain with its
// genesis, segments and triggers (the same check as CheckAuditChain). kCorruption naming
// the first finding; kInvalidArgument for another program's file; kVersionTooNew.
Result<SqliteFileReport> CheckSqliteVaultFile(const std::string& path);

// Copies the vault at `vault_path` to `out_path` with SQLite's online backup API, in one
// read transaction: a consistent snapshot (the last COMMIT) even while ma-server writes in
// WAL mode. The copy is written to a temporary file in out_path's directory (mode 0600),
// made a self-contained rollback-journal file, fsynced, checked (CheckSqliteVaultFile),
// and only then linked as `out_path` (never replacing anything) and the directory fsynced;
// on any failure nothing is left behind. kAlreadyExists if `out_path` exists.
Result<SqliteFileReport> BackupSqliteVault(const std::string& vault_path,
                                           const std::string& out_path);

// Puts the backup `backup_path` in place as the vault `vault_path`, for an MA whose
// ma-server is stopped. The backup is checked first; a vault file already there is
// refused (kAlreadyExists) unless `force`, and refused in any case if another connection
// has it open (kUnavailable: ma-server is running). The copy goes to a temporary file
// (0600, fsynced, checked again, given the replaced file's owner and group) renamed over
// `vault_path`; the old vault's -wal/-shm go with it, so that no stale log is replayed into
// the restored file.
Result<SqliteFileReport> RestoreSqliteVault(const std::string& backup_path,
                                            const std::string& vault_path, bool force);

// kUnavailable if any other connection (ma-server) has the vault file open; it must exist.
// Closing the connection this opens checkpoints the file's WAL into it.
Status CheckSqliteVaultNotInUse(const std::string& path);

// Every row of the vault file at `path`, table by table (CopyTables() order), from one read
// snapshot, into `sink`. The file is opened read-only; it is checked as a vault
// (application_id, schema version) but not walked: the caller checks it first.
Status ExportSqliteVault(const std::string& path, CopySink& sink);

}  // namespace tpmma::storage
