// SPDX-License-Identifier: GPL-2.0-or-later
#include "storage/sqlite/read_pool.h"

namespace tpmma::storage::sqlite {

ReadPool::ReadPool(std::vector<DbPtr> conns) : conns_(std::move(conns)) {
  for (const DbPtr& c : conns_) free_.push_back(c.get());
}

ReadPool::Lease ReadPool::Acquire() {
  std::unique_lock lock(mu_);
  cv_.wait(lock, [&] { return !free_.empty(); });
  sqlite3* db = free_.back();
  free_.pop_back();
  return Lease(this, db);
}

void ReadPool::Release(sqlite3* db) {
  {
    std::lock_guard lock(mu_);
    free_.push_back(db);
  }
  cv_.notify_one();
}

}  // namespace tpmma::storage::sqlite
