// SPDX-License-Identifier: GPL-2.0-or-later
// Transactions on one connection: InTxn runs a function inside BEGIN ... COMMIT and rolls
// back on any error. Internal to storage/.
#pragma once

#include <sqlite3.h>

#include <string_view>

#include "common/status.h"
#include "storage/sqlite/stmt.h"

namespace tpmma::storage::sqlite {

inline void RollbackIfOpen(sqlite3* db) {
  // A failed statement may already have rolled the transaction back (SQLITE_FULL, IOERR).
  if (sqlite3_get_autocommit(db) == 0) sqlite3_exec(db, "ROLLBACK", nullptr, nullptr, nullptr);
}

// Runs f() in a transaction: committed if f succeeds, rolled back otherwise. Writers use
// BEGIN IMMEDIATE so that the write lock is taken up front (no deadlock upgrading a read
// lock when another process writes), readers a deferred BEGIN for a consistent snapshot.
template <typename F>
auto InTxn(sqlite3* db, bool write, std::string_view purpose, F&& f) -> decltype(f()) {
  if (Status s = Exec(db, Cat("begin ", purpose), write ? "BEGIN IMMEDIATE" : "BEGIN"); !s.ok()) {
    return Error(std::move(s));
  }
  auto r = f();
  if (!r.has_value()) {
    RollbackIfOpen(db);
    return r;
  }
  if (Status s = Exec(db, Cat("commit ", purpose), "COMMIT"); !s.ok()) {
    RollbackIfOpen(db);
    return Error(std::move(s));
  }
  return r;
}

inline Status ToStatus(const Result<void>& r) {
  return r.has_value() ? Status() : r.error();
}

}  // namespace tpmma::storage::sqlite
