// SPDX-License-Identifier: GPL-2.0-or-later
// The vault file seen from outside a SqliteVault: opening it for a backup, a check, an
// export or a restore, and the POSIX steps that make a copy durable and all-or-nothing
// (temporary file, fsync, directory fsync). Internal to storage/.
#pragma once

#include <unistd.h>

#include <string>

#include "common/fd.h"
#include "common/status.h"
#include "storage/sqlite/stmt.h"

namespace tpmma::storage::sqlite {

enum class FileAccess {
  kReadOnly,   // a backup file (rollback journal mode: needs no -wal/-shm)
  kLive,       // a vault ma-server may be writing (WAL): read-write open, query_only
  kReadWrite,  // a file this process just created
  kExclusive,  // to find out whether anyone else has it open (no busy wait)
};

// Opens an existing file (never creates one) with trusted_schema=OFF.
Result<DbPtr> OpenVaultFile(const std::string& path, FileAccess access);

// kInvalidArgument unless it carries the tpm-ma application_id (an empty file does not),
// kCorruption if it is not SQLite.
Status CheckOwnFile(sqlite3* db, const std::string& path);

using tpmma::Fd;

// A new file, mode 0600, next to `final_path` (same directory, so rename and link stay on
// one file system); removed (with its -journal) when this goes unless Release()d.
class TempFile {
 public:
  static Result<TempFile> Create(const std::string& final_path);
  TempFile(TempFile&& o) noexcept : path_(std::move(o.path_)) { o.path_.clear(); }
  TempFile& operator=(TempFile&&) = delete;
  TempFile(const TempFile&) = delete;
  ~TempFile() { Remove(); }
  const std::string& path() const { return path_; }
  void Remove();
  void Release() { path_.clear(); }

 private:
  explicit TempFile(std::string path) : path_(std::move(path)) {}
  std::string path_;
};

Status FsyncFile(const std::string& path);
// fsync of the directory holding `path`, so that a new name in it survives power loss.
Status FsyncDirOf(const std::string& path);

}  // namespace tpmma::storage::sqlite
