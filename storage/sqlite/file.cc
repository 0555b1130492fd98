// SPDX-License-Identifier: GPL-2.0-or-later
#include "storage/sqlite/file.h"

#include <fcntl.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "storage/sqlite/migrations.h"

namespace tpmma::storage::sqlite {
namespace {

constexpr int kBusyTimeoutMs = 5000;

Status PosixError(std::string_view what, const std::string& path, int err) {
  return Status(Code::kIoError, Cat(what, " ", path, ": ", std::strerror(err)));
}

}  // namespace

Result<DbPtr> OpenVaultFile(const std::string& path, FileAccess access) {
  const int flags =
      (access == FileAccess::kReadOnly ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE) |
      SQLITE_OPEN_NOMUTEX;
  sqlite3* raw = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &raw, flags, nullptr);
  DbPtr db(raw);
  if (rc != SQLITE_OK) return Error(SqliteError(db.get(), rc, Cat("open ", path)));
  sqlite3_extended_result_codes(db.get(), 1);
  sqlite3_busy_timeout(db.get(), access == FileAccess::kExclusive ? 0 : kBusyTimeoutMs);
  std::string pragmas = "PRAGMA trusted_schema = OFF;";
  if (access == FileAccess::kLive) pragmas += " PRAGMA query_only = ON;";
  if (access == FileAccess::kExclusive) pragmas += " PRAGMA locking_mode = EXCLUSIVE;";
  TPMMA_RETURN_IF_ERROR(Exec(db.get(), "configure connection", pragmas));
  return db;
}

Status CheckOwnFile(sqlite3* db, const std::string& path) {
  auto app_id = ReadPragmaInt(db, "application_id");
  if (!app_id) {
    if (app_id.error().code() == Code::kCorruption) {
      return Status(Code::kCorruption,
                    Cat(path, " is not a SQLite database: ", app_id.error().message()));
    }
    return app_id.error().WithContext(path);
  }
  if (*app_id != kApplicationId) {
    return Status(Code::kInvalidArgument,
                  Cat(path, " is not a tpm-ma vault (SQLite application_id ",
                      Hex32(static_cast<uint32_t>(*app_id)), ")"));
  }
  return Status();
}

Result<TempFile> TempFile::Create(const std::string& final_path) {
  std::string name = final_path + ".tmp-XXXXXX";
  std::vector<char> buf(name.begin(), name.end());
  buf.push_back('\0');
  int fd = ::mkstemp(buf.data());
  if (fd < 0) return Error(PosixError("cannot create a temporary file for", final_path, errno));
  ::fchmod(fd, 0600);
  ::close(fd);
  return TempFile(std::string(buf.data()));
}

void TempFile::Remove() {
  if (path_.empty()) return;
  ::unlink(path_.c_str());
  ::unlink((path_ + "-journal").c_str());
  ::unlink((path_ + "-wal").c_str());
  ::unlink((path_ + "-shm").c_str());
  path_.clear();
}

Status FsyncFile(const std::string& path) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) return PosixError("cannot open", path, errno);
  if (::fsync(fd.get()) != 0) return PosixError("cannot fsync", path, errno);
  return Status();
}

Status FsyncDirOf(const std::string& path) {
  const auto slash = path.rfind('/');
  const std::string dir =
      slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash));
  Fd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (fd.get() < 0) return PosixError("cannot open directory", dir, errno);
  if (::fsync(fd.get()) != 0) return PosixError("cannot fsync directory", dir, errno);
  return Status();
}

}  // namespace tpmma::storage::sqlite
