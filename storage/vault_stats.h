// SPDX-License-Identifier: GPL-2.0-or-later
// What a vault backend tells about its own work, in the same meaning for every backend, so
// that ma-server's GET /metrics (server/metrics.h) never needs to know which one it runs on.
// Header only and dependency free: server/endpoint.h includes it without linking storage.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>

namespace tpmma::storage {

// Upper bounds (calls per transaction) of the batch-size histogram. SQLite's group commit
// defaults to 64 per batch and allows up to 4096 (vault.max_batch).
inline constexpr std::array<uint64_t, 10> kBatchSizeBounds = {1,  2,  4,   8,   16,
                                                              32, 64, 128, 256, 1024};

// Counters are monotonic since the vault was opened; `queued*` are right now.
struct VaultStats {
  uint64_t calls = 0;          // write calls completed (whatever their outcome)
  uint64_t commits = 0;        // COMMITs that succeeded (one durable flush each)
  uint64_t largest_batch = 0;  // most write calls that ever shared one transaction
  uint64_t queued = 0;         // write calls waiting for a transaction right now
  // Write transactions by how many calls they held: batch_sizes[i] counts those of at most
  // kBatchSizeBounds[i] calls and more than the bound before (not cumulative); the last
  // entry those above every bound. A backend without group commit has batches of 1.
  std::array<uint64_t, kBatchSizeBounds.size() + 1> batch_sizes{};
  uint64_t batches = 0;      // transactions counted in batch_sizes
  uint64_t batch_calls = 0;  // the calls they held together (the histogram's sum)
  // Audit records of reads (Vault::AppendAuditDeferred). A backend that appends them
  // durably (the Vault default) counts none queued and none lost.
  uint64_t deferred_queued = 0;
  uint64_t deferred_committed = 0;
  uint64_t deferred_lost = 0;  // given up: their batch failed to commit
  // Calls that returned kIoError, kCorruption or kUnavailable (storage/counting_vault.h):
  // the vault failed, as opposed to refusing the caller.
  uint64_t errors = 0;
};

// Index into VaultStats::batch_sizes for a transaction of `calls` calls.
constexpr size_t BatchSizeBucket(uint64_t calls) {
  size_t i = 0;
  while (i < kBatchSizeBounds.size() && calls > kBatchSizeBounds[i]) ++i;
  return i;
}

}  // namespace tpmma::storage
