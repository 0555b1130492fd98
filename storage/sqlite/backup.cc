// SPDX-License-Identifier: GPL-2.0-or-later
// Backing up, checking and restoring the vault file (storage/sqlite_backup.h).
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string_view>

#include <openssl/evp.h>

#include "storage/sqlite/audit_chain.h"
#include "storage/sqlite/file.h"
#include "storage/sqlite/migrations.h"
#include "storage/sqlite/rows.h"
#include "storage/sqlite/txn.h"
#include "storage/sqlite_backup.h"

namespace tpmma::storage {

using sqlite::DbPtr;
using sqlite::Stmt;

namespace {

// The audit anchor (vault_meta, genesis, segments) came with schema 6: an older file has
// no chain this build can check.
constexpr int64_t kOldestCheckable = 6;
// SQLite's own retry of a busy source is its busy handler; these are rounds beyond it.
constexpr int kBackupAttempts = 20;

Status PosixError(std::string_view what, const std::string& path, int err) {
  return Status(Code::kIoError, Cat(what, " ", path, ": ", std::strerror(err)));
}

bool Exists(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0;
}

// Every package body against the digest and size stored with it: SQLite's checks cover
// its pages' structure, not what a row says, and a body is what a restore gives back.
Status CheckBodies(sqlite3* db) {
  TPMMA_ASSIGN_OR_RETURN(
      Stmt s, Stmt::Prepare(db, "read package bodies",
                            "SELECT p.package_id, p.sha256, p.size, b.body FROM packages p "
                            "JOIN package_bodies b ON b.package_pk = p.pk ORDER BY p.pk"));
  while (true) {
    TPMMA_ASSIGN_OR_RETURN(bool row, s.Step());
    if (!row) return Status();
    Bytes body = s.Blob(3);
    Bytes digest(EVP_MAX_MD_SIZE);
    unsigned int len = 0;
    if (EVP_Digest(body.data(), body.size(), digest.data(), &len, EVP_sha256(), nullptr) != 1) {
      return Status(Code::kCryptoError, "SHA-256 of a package body");
    }
    digest.resize(len);
    if (digest != s.Blob(1) || static_cast<int64_t>(body.size()) != s.Int(2)) {
      return Status(Code::kCorruption,
                    Cat("package ", s.Text(0), ": its body does not match its stored SHA-256"));
    }
  }
}

Result<Bytes> HeadHash(sqlite3* db, int64_t seq) {
  TPMMA_ASSIGN_OR_RETURN(
      Stmt s, Stmt::Prepare(db, "read audit head", "SELECT hash FROM audit_log WHERE seq = ?"));
  s.Bind(seq);
  TPMMA_ASSIGN_OR_RETURN(bool row, s.Step());
  if (!row) return Error(Code::kCorruption, "the audit log's last record is missing");
  return s.Blob(0);
}

Result<SqliteFileReport> CheckOpenFile(sqlite3* db) {
  SqliteFileReport report;
  TPMMA_ASSIGN_OR_RETURN(report.schema_version, sqlite::ReadPragmaInt(db, "user_version"));
  if (report.schema_version > sqlite::SchemaVersion()) {
    return Error(Code::kVersionTooNew,
                 Cat("schema version ", report.schema_version, ", newer than this build (",
                     sqlite::SchemaVersion(), ")"));
  }
  if (report.schema_version < kOldestCheckable) {
    return Error(Code::kInvalidArgument,
                 Cat("schema version ", report.schema_version,
                     " is older than 6 (no audit anchor to check); open the vault with "
                     "ma-server of this build first"));
  }
  return sqlite::InTxn(db, false, "check vault file", [&]() -> Result<SqliteFileReport> {
    TPMMA_RETURN_IF_ERROR(sqlite::IntegrityFindings(db));
    TPMMA_RETURN_IF_ERROR(CheckBodies(db));
    TPMMA_ASSIGN_OR_RETURN(report.chain, sqlite::CheckAuditChainLocked(db));
    TPMMA_ASSIGN_OR_RETURN(report.head_hash, HeadHash(db, report.chain.last_seq));
    TPMMA_ASSIGN_OR_RETURN(report.pages, sqlite::ReadPragmaInt(db, "page_count"));
    return report;
  });
}

// One online-backup pass: the whole source in one step, i.e. in one read transaction of
// the source, so the copy is the state of one COMMIT whatever ma-server writes meanwhile.
Status CopyDatabase(sqlite3* src, sqlite3* dst) {
  for (int attempt = 0;; ++attempt) {
    sqlite3_backup* b = sqlite3_backup_init(dst, "main", src, "main");
    if (b == nullptr) return sqlite::SqliteError(dst, sqlite3_errcode(dst), "start backup");
    int rc = sqlite3_backup_step(b, -1);
    int fin = sqlite3_backup_finish(b);
    if (rc == SQLITE_DONE && fin == SQLITE_OK) return Status();
    const bool busy = (rc & 0xff) == SQLITE_BUSY || (rc & 0xff) == SQLITE_LOCKED;
    if (!busy || attempt + 1 >= kBackupAttempts) {
      return sqlite::SqliteError(dst, rc == SQLITE_DONE ? fin : rc, "backup");
    }
    sqlite3_sleep(50);
  }
}

// The copy as a file of its own: rollback journal mode, so that it needs no -wal or -shm
// beside it to be read (and a read-only open of it never has to create one).
Status MakeSelfContained(sqlite3* db) {
  TPMMA_ASSIGN_OR_RETURN(
      Stmt s, Stmt::Prepare(db, "set backup journal mode", "PRAGMA journal_mode = DELETE"));
  TPMMA_ASSIGN_OR_RETURN(bool row, s.Step());
  if (!row || s.Text(0) != "delete") {
    return Status(Code::kIoError, "backup: cannot leave WAL mode in the copy");
  }
  return Status();
}

Status WriteBackup(const std::string& vault_path, const std::string& tmp) {
  TPMMA_ASSIGN_OR_RETURN(DbPtr src, sqlite::OpenVaultFile(vault_path, sqlite::FileAccess::kLive));
  TPMMA_RETURN_IF_ERROR(sqlite::CheckOwnFile(src.get(), vault_path));
  TPMMA_ASSIGN_OR_RETURN(DbPtr dst, sqlite::OpenVaultFile(tmp, sqlite::FileAccess::kReadWrite));
  TPMMA_RETURN_IF_ERROR(sqlite::Exec(dst.get(), "backup synchronous", "PRAGMA synchronous = FULL"));
  TPMMA_RETURN_IF_ERROR(CopyDatabase(src.get(), dst.get()));
  return MakeSelfContained(dst.get());
}

Status CopyFile(const std::string& from, const std::string& to) {
  sqlite::Fd in(::open(from.c_str(), O_RDONLY | O_CLOEXEC));
  if (in.get() < 0) return PosixError("cannot open", from, errno);
  sqlite::Fd out(::open(to.c_str(), O_WRONLY | O_TRUNC | O_CLOEXEC));
  if (out.get() < 0) return PosixError("cannot open", to, errno);
  char buf[1 << 16];
  while (true) {
    ssize_t n = ::read(in.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return PosixError("cannot read", from, errno);
    if (n == 0) break;
    for (ssize_t done = 0; done < n;) {
      ssize_t w = ::write(out.get(), buf + done, static_cast<size_t>(n - done));
      if (w < 0 && errno == EINTR) continue;
      if (w < 0) return PosixError("cannot write", to, errno);
      done += w;
    }
  }
  if (::fsync(out.get()) != 0) return PosixError("cannot fsync", to, errno);
  return Status();
}

// The restored file gets the replaced one's owner and group: restored by root for a vault
// ma-server's own user owns, a root-owned 0600 file would be one the server cannot open.
Status KeepOwner(const std::string& old_path, const std::string& tmp) {
  struct stat st {};
  if (::stat(old_path.c_str(), &st) != 0) return PosixError("cannot stat", old_path, errno);
  if (st.st_uid == ::geteuid() && st.st_gid == ::getegid()) return Status();
  if (::chown(tmp.c_str(), st.st_uid, st.st_gid) != 0) {
    return PosixError("cannot give the restored copy the owner of", old_path, errno);
  }
  return Status();
}

}  // namespace

Result<SqliteFileReport> CheckSqliteVaultFile(const std::string& path) {
  TPMMA_ASSIGN_OR_RETURN(DbPtr db, sqlite::OpenVaultFile(path, sqlite::FileAccess::kReadOnly));
  TPMMA_RETURN_IF_ERROR(sqlite::CheckOwnFile(db.get(), path));
  auto report = CheckOpenFile(db.get());
  if (!report) return Error(report.error().WithContext(path));
  return report;
}

// Refuses a vault file some connection holds open: a WAL connection keeps a shared lock on
// the file as long as it is open, so an exclusive lock is only granted when none is.
// Closing this last connection checkpoints the old WAL into the old file and removes it.
Status CheckSqliteVaultNotInUse(const std::string& path) {
  TPMMA_ASSIGN_OR_RETURN(DbPtr db, sqlite::OpenVaultFile(path, sqlite::FileAccess::kExclusive));
  Status st = sqlite::Exec(db.get(), "lock the vault", "BEGIN EXCLUSIVE");
  if (!st.ok()) {
    if (st.code() == Code::kUnavailable) {
      return Status(Code::kUnavailable,
                    Cat("vault ", path, " is in use by another process (stop ma-server first)"));
    }
    return st;
  }
  return sqlite::Exec(db.get(), "unlock the vault", "ROLLBACK");
}

Result<SqliteFileReport> BackupSqliteVault(const std::string& vault_path,
                                           const std::string& out_path) {
  if (Exists(out_path)) {
    return Error(Code::kAlreadyExists, Cat(out_path, " exists; refusing to overwrite it"));
  }
  TPMMA_ASSIGN_OR_RETURN(sqlite::TempFile tmp, sqlite::TempFile::Create(out_path));
  TPMMA_RETURN_IF_ERROR(WriteBackup(vault_path, tmp.path()).WithContext("backup of " + vault_path));
  TPMMA_RETURN_IF_ERROR(sqlite::FsyncFile(tmp.path()));
  TPMMA_ASSIGN_OR_RETURN(SqliteFileReport report, CheckSqliteVaultFile(tmp.path()));
  // link(), not rename(): it never replaces a file that appeared meanwhile.
  if (::link(tmp.path().c_str(), out_path.c_str()) != 0) {
    const int err = errno;
    if (err == EEXIST) {
      return Error(Code::kAlreadyExists, Cat(out_path, " exists; refusing to overwrite it"));
    }
    return Error(PosixError("cannot create", out_path, err));
  }
  tmp.Remove();
  TPMMA_RETURN_IF_ERROR(sqlite::FsyncDirOf(out_path));
  return report;
}

Result<SqliteFileReport> RestoreSqliteVault(const std::string& backup_path,
                                            const std::string& vault_path, bool force) {
  TPMMA_RETURN_IF_ERROR(CheckSqliteVaultFile(backup_path));
  const bool replacing = Exists(vault_path);
  if (replacing) {
    if (!force) {
      return Error(Code::kAlreadyExists,
                   Cat("vault ", vault_path, " exists; give --force to replace it"));
    }
    TPMMA_RETURN_IF_ERROR(CheckSqliteVaultNotInUse(vault_path));
  }
  TPMMA_ASSIGN_OR_RETURN(sqlite::TempFile tmp, sqlite::TempFile::Create(vault_path));
  TPMMA_RETURN_IF_ERROR(CopyFile(backup_path, tmp.path()));
  TPMMA_ASSIGN_OR_RETURN(SqliteFileReport report, CheckSqliteVaultFile(tmp.path()));
  if (replacing) TPMMA_RETURN_IF_ERROR(KeepOwner(vault_path, tmp.path()));
  // The old file's log and shared memory describe the old file: replayed into the restored
  // one they would corrupt it.
  for (const char* suffix : {"-wal", "-shm"}) {
    const std::string side = vault_path + suffix;
    if (::unlink(side.c_str()) != 0 && errno != ENOENT) {
      return Error(PosixError("cannot remove", side, errno));
    }
  }
  if (::rename(tmp.path().c_str(), vault_path.c_str()) != 0) {
    return Error(PosixError("cannot rename the restored copy to", vault_path, errno));
  }
  tmp.Release();
  TPMMA_RETURN_IF_ERROR(sqlite::FsyncDirOf(vault_path));
  return report;
}

}  // namespace tpmma::storage
