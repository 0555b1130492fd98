// SPDX-License-Identifier: GPL-2.0-or-later
// Read-only connections shared by all reading threads. A WAL reader sees the last COMMIT
// and is never blocked by the writer, so reads do not queue behind an fsync; a small pool,
// because the server's worker threads are few and each connection keeps its own page cache
// (up to 2 MB). Internal to storage/.
#pragma once

#include <condition_variable>
#include <mutex>
#include <vector>

#include "storage/sqlite/stmt.h"

namespace tpmma::storage::sqlite {

class ReadPool {
 public:
  // One connection, held until destroyed; then back to the pool.
  class Lease {
   public:
    Lease(ReadPool* pool, sqlite3* db) : pool_(pool), db_(db) {}
    ~Lease() { pool_->Release(db_); }
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    sqlite3* get() const { return db_; }

   private:
    ReadPool* pool_;
    sqlite3* db_;
  };

  explicit ReadPool(std::vector<DbPtr> conns);

  // Blocks until a connection is free.
  Lease Acquire();

 private:
  void Release(sqlite3* db);

  std::vector<DbPtr> conns_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<sqlite3*> free_;  // guarded by mu_
};

}  // namespace tpmma::storage::sqlite
