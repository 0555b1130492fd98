// SPDX-License-Identifier: GPL-2.0-or-later
// Group commit for PostgresVault's write calls. Every state change appends an audit record,
// and every append locks the one audit_head row until its transaction commits, so writes
// from all instances run one after another, each paying a WAL flush while it holds that
// lock. Here the calls queued at the same time share one transaction: the first in the queue
// leads (as in LevelDB's write queue, no extra thread), locks the audit head once, runs
// each call in its own SAVEPOINT (a call that fails is rolled back alone, with its own
// error), commits once, and wakes the others. A call returns only after the COMMIT that holds it,
// so an acknowledged write is durable; if the COMMIT fails, every call of the batch gets that
// error.
//
// Why not libpq's pipeline mode: each call reads what it wrote a statement before (the
// package's new pk, the approval row it locked), so its statements cannot be queued ahead
// of their answers; what a batch saves is the flush and the head lock per call, not round
// trips.
//
// Internal to storage/.
#pragma once

#include <libpq-fe.h>

#include <array>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <string_view>

#include "common/status.h"
#include "storage/vault_stats.h"

namespace tpmma::storage::postgres {

class ConnPool;

class GroupCommit {
 public:
  // max_batch: at most this many calls per transaction; 1 turns batching off.
  GroupCommit(ConnPool* pool, size_t max_batch);
  GroupCommit(const GroupCommit&) = delete;
  GroupCommit& operator=(const GroupCommit&) = delete;

  // Runs op(conn) inside a write transaction shared with the calls queued with it; returns
  // op's status once that transaction has committed (or the commit's error).
  Status Run(std::string_view purpose, const std::function<Status(PGconn*)>& op);

  // calls, commits, queued, batches, batch_calls, largest_batch and batch_sizes of VaultStats.
  void FillStats(VaultStats* stats) const;

 private:
  struct Call {
    std::string_view purpose;
    const std::function<Status(PGconn*)>* op;
    Status result;
    bool done = false;
  };

  // Runs `batch` (taken from the queue's front) in one transaction; sets each result.
  void Lead(const std::vector<Call*>& batch);
  void RecordBatch(size_t calls);

  ConnPool* const pool_;
  const size_t max_batch_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Call*> queue_;
  bool committed_ = false;  // by the current leader's Lead: only the leader touches it
  // Under mu_.
  uint64_t batches_ = 0, batch_calls_ = 0, largest_ = 0, commits_ = 0;
  std::array<uint64_t, kBatchSizeBounds.size() + 1> sizes_{};
};

}  // namespace tpmma::storage::postgres
