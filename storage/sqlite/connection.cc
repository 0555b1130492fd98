// SPDX-License-Identifier: GPL-2.0-or-later
#include "storage/sqlite/connection.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace tpmma::storage::sqlite {

Status CreatePrivateFile(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd >= 0) {
    ::fchmod(fd, 0600);
    ::close(fd);
  } else if (errno != EEXIST) {
    return Status(Code::kIoError, Cat("cannot create vault ", path, ": ", std::strerror(errno)));
  }
  return Status();
}

Result<DbPtr> OpenConnection(const std::string& path, int busy_timeout_ms, std::string_view pragmas,
                             const std::string& vfs) {
  sqlite3* raw = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &raw, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX,
                           vfs.empty() ? nullptr : vfs.c_str());
  DbPtr db(raw);
  if (rc != SQLITE_OK) {
    return Error(SqliteError(db.get(), rc, Cat("open vault ", path)));
  }
  sqlite3_extended_result_codes(db.get(), 1);
  sqlite3_busy_timeout(db.get(), busy_timeout_ms);
  TPMMA_RETURN_IF_ERROR(
      Exec(db.get(), "configure connection",
           Cat("PRAGMA trusted_schema = OFF; PRAGMA foreign_keys = ON; ", pragmas)));
  return db;
}

Status MakeDurable(sqlite3* db, const std::string& path) {
  {
    TPMMA_ASSIGN_OR_RETURN(Stmt s,
                           Stmt::Prepare(db, "set WAL journal mode", "PRAGMA journal_mode = WAL"));
    TPMMA_ASSIGN_OR_RETURN(bool row, s.Step());
    if (!row || s.Text(0) != "wal") {
      return Status(Code::kIoError, Cat("vault ", path, ": cannot enable WAL mode"));
    }
  }
  return Exec(db, "set synchronous mode", "PRAGMA synchronous = FULL");
}

}  // namespace tpmma::storage::sqlite
