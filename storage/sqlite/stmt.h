// SPDX-License-Identifier: GPL-2.0-or-later
// SQLite plumbing every other file here uses: errors as Status, RAII prepared statements
// (Stmt) borrowed from a per-connection cache, connections that close cleanly (DbPtr), and
// Exec for statements that return nothing. Internal to storage/ (see storage/README.md).
#pragma once

#include <sqlite3.h>

#include <concepts>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

#include "common/bytes.h"
#include "common/status.h"
#include "common/text.h"

namespace tpmma::storage::sqlite {

// Messages name the statement's purpose and SQLite's own text (which names tables and
// columns, never bound values).
Status SqliteError(sqlite3* db, int rc, std::string_view purpose);

// Gives `db` a statement cache (once its schema is fixed: cached statements would not see
// a migration). Without one, every Stmt is prepared and finalized per use.
void AttachStmtCache(sqlite3* db);

// Closes a connection after finalizing its cached statements (SQLite keeps a connection
// with live statements open as a zombie, and it would never checkpoint).
struct DbCloser {
  void operator()(sqlite3* db) const;
};
using DbPtr = std::unique_ptr<sqlite3, DbCloser>;

struct StmtCacheEntry;

// Finalizes an uncached statement; resets a cached one and gives it back to its cache.
struct StmtRelease {
  StmtCacheEntry* entry = nullptr;
  void operator()(sqlite3_stmt* s) const;
};
using StmtPtr = std::unique_ptr<sqlite3_stmt, StmtRelease>;

// A prepared statement for the lifetime of this object. Bind errors are kept and reported
// by the first Step(), so that call sites bind without checking each value.
class Stmt {
 public:
  static Result<Stmt> Prepare(sqlite3* db, std::string_view purpose, std::string_view sql);

  template <typename... Args>
  Stmt& Bind(const Args&... args) {
    int i = 1;
    (BindOne(i++, args), ...);
    return *this;
  }

  template <std::integral T>
  void BindOne(int i, T v) {
    Check(sqlite3_bind_int64(stmt_.get(), i, static_cast<sqlite3_int64>(v)));
  }
  void BindOne(int i, std::string_view v);
  void BindOne(int i, const std::string& v) { BindOne(i, std::string_view(v)); }
  void BindOne(int i, const char* v) { BindOne(i, std::string_view(v)); }
  void BindOne(int i, ByteView v);
  void BindOne(int i, const Bytes& v) { BindOne(i, ByteView(v)); }
  void BindOne(int i, std::nullopt_t) { Check(sqlite3_bind_null(stmt_.get(), i)); }
  template <typename T>
  void BindOne(int i, const std::optional<T>& v) {
    if (v) {
      BindOne(i, *v);
    } else {
      BindOne(i, std::nullopt);
    }
  }
  void BindOne(int i, const std::variant<int64_t, std::string>& v) {
    std::visit([&](const auto& x) { BindOne(i, x); }, v);
  }

  // true: a row is ready; false: done.
  Result<bool> Step();
  // For statements that return no rows.
  Status Run();
  void Reset();

  int64_t Int(int c) const { return sqlite3_column_int64(stmt_.get(), c); }
  bool IsNull(int c) const { return sqlite3_column_type(stmt_.get(), c) == SQLITE_NULL; }
  std::string Text(int c) const;
  Bytes Blob(int c) const;
  std::optional<int64_t> OptInt(int c) const {
    return IsNull(c) ? std::nullopt : std::optional<int64_t>(Int(c));
  }

 private:
  Stmt(sqlite3* db, std::string_view purpose, StmtPtr stmt)
      : db_(db), purpose_(purpose), stmt_(std::move(stmt)) {}
  void Check(int rc) {
    if (rc != SQLITE_OK && bind_error_.ok()) bind_error_ = SqliteError(db_, rc, "bind " + purpose_);
  }

  sqlite3* db_;
  std::string purpose_;
  StmtPtr stmt_;
  Status bind_error_;
};

// One statement (BEGIN, SAVEPOINT, COMMIT, ...) from the connection's cache; a script
// (anything with a ';') through sqlite3_exec.
Status Exec(sqlite3* db, std::string_view purpose, const std::string& sql);

}  // namespace tpmma::storage::sqlite
