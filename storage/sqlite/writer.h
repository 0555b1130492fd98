// SPDX-License-Identifier: GPL-2.0-or-later
// The group-commit writer: one thread that owns the only read-write connection and runs
// queued calls in batches, one transaction and one fsync-ed COMMIT per batch, each call in
// its own SAVEPOINT (storage/README.md, "Threading"). It knows nothing of the vault's tables:
// a call is a function of the connection, and deferred audit records are written by the
// function the owner passes in. Internal to storage/; tests/storage/sqlite_writer_test.cc.
#pragma once

#include <sqlite3.h>

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <string_view>
#include <thread>
#include <type_traits>
#include <vector>

#include "common/status.h"
#include "storage/sqlite/stmt.h"
#include "storage/sqlite_vault.h"
#include "storage/vault.h"

namespace tpmma::storage::sqlite {

// A non-owning, non-allocating callable reference: enough because a caller blocks until
// the writer is done with its closure.
template <typename Sig>
class FunctionRef;
template <typename R, typename... A>
class FunctionRef<R(A...)> {
 public:
  // Constrained so that copying a FunctionRef copies it instead of wrapping it.
  template <typename F,
            typename = std::enable_if_t<!std::is_same_v<std::remove_cvref_t<F>, FunctionRef>>>
  FunctionRef(F& f)  // NOLINT(google-explicit-constructor)
      : obj_(&f), call_([](void* obj, A... a) -> R { return (*static_cast<F*>(obj))(a...); }) {}
  R operator()(A... a) const { return call_(obj_, a...); }

 private:
  void* obj_;
  R (*call_)(void*, A...);
};

struct WriterOptions {
  // At most this many queued calls share one transaction. 0 counts as 1.
  size_t max_batch = 64;
  // At most this many deferred records wait; Defer() blocks beyond. 0 counts as 1.
  size_t max_deferred = 8192;
  // With only deferred records to write, wait this long for more before committing.
  std::chrono::milliseconds deferred_delay{10};
  // Called at "deferred_audit" (after each deferred record) and "commit" (before each
  // COMMIT); see FaultHook. Null: no hook. Must outlive the writer.
  const FaultHook* hook = nullptr;
  // Appends one deferred record inside the open transaction (the vault's audit append).
  std::function<Status(sqlite3*, const AuditEvent&)> append_deferred;
};

// Calls queue up while the thread is busy (mostly in fsync); it then takes up to max_batch
// of them into one transaction, each inside its own SAVEPOINT, and commits once. Deferred
// audit records wait in a second, bounded queue that nobody blocks on; each batch appends
// those queued so far (at most kMaxDeferredPerBatch) before its calls, and counts them
// committed or lost.
class Writer {
 public:
  // Bounds how long the calls sharing a batch with deferred records wait for them.
  static constexpr size_t kMaxDeferredPerBatch = 1024;

  Writer(DbPtr db, WriterOptions options);
  // Stop().
  ~Writer();
  Writer(const Writer&) = delete;
  Writer& operator=(const Writer&) = delete;

  // Runs everything already queued, then joins the thread. Idempotent. Afterwards Run and
  // Defer return kUnavailable.
  void Stop();

  // Runs `run` on the writer thread inside the current batch's transaction and blocks
  // until the COMMIT that holds it returned (or failed): the call's own Status if that
  // COMMIT succeeded, the COMMIT's error otherwise. `run` may run more than once if SQLite
  // drops a transaction under its neighbours; the last run counts. checkpoint_after: once
  // committed, truncate the WAL (so deleted data leaves the files) before returning.
  Status Run(std::string_view purpose, FunctionRef<Status(sqlite3*)> run, bool checkpoint_after);

  // Queues an audit record for the next batch; blocks only while the queue is full.
  Status Defer(AuditEvent event);

  // Waits until every record deferred before this call is committed or lost.
  void FlushDeferred();

  SqliteVaultStats Stats() const;
  // The batch-size histogram (VaultStats::batch_sizes, batches, batch_calls).
  void AddBatchSizes(VaultStats* stats) const;

 private:
  struct Op;

  void Loop();
  void Complete(Op* op, Status status);
  void RunInSavepoint(sqlite3* db, Op& op);
  Status AppendDeferred(sqlite3* db, const AuditEvent& e);
  // kOneByOne: a record failed and the shared savepoint was undone (nothing given up yet).
  enum class DeferredResult { kDone, kOneByOne, kTransactionGone };
  DeferredResult RunDeferredTogether(sqlite3* db, std::vector<AuditEvent>& events, uint64_t* lost);
  bool RunDeferredOneByOne(sqlite3* db, std::vector<AuditEvent>& events, uint64_t* lost);
  bool RunDeferred(sqlite3* db, std::vector<AuditEvent>& events, uint64_t* lost);
  void RunBatch(std::vector<Op*> pending, std::vector<AuditEvent>& deferred);
  Status Hook(std::string_view step) const { return hook_ ? (*hook_)(step) : Status(); }

  DbPtr db_;  // the writer thread's alone once the thread runs
  const size_t max_batch_;
  const size_t max_deferred_;
  const size_t deferred_eager_;  // this many deferred records end the wait for more
  const std::chrono::milliseconds deferred_delay_;
  const FaultHook* hook_;
  const std::function<Status(sqlite3*, const AuditEvent&)> append_deferred_;

  std::mutex mu_;
  std::condition_variable cv_;        // the writer waits for work
  std::condition_variable space_cv_;  // Defer() waits for room in deferred_
  std::condition_variable done_cv_;   // FlushDeferred() waits for deferred_done_
  std::deque<Op*> queue_;             // guarded by mu_
  std::deque<AuditEvent> deferred_;   // guarded by mu_
  uint64_t deferred_enqueued_ = 0;    // guarded by mu_
  uint64_t deferred_done_ = 0;        // guarded by mu_; committed or lost
  bool stopping_ = false;             // guarded by mu_
  bool exited_ = false;               // guarded by mu_
  int flushers_ = 0;                  // guarded by mu_; threads in FlushDeferred()

  std::atomic<uint64_t> calls_{0};
  std::atomic<uint64_t> commits_{0};
  std::atomic<uint64_t> largest_batch_{0};
  std::atomic<uint64_t> queued_{0};
  std::atomic<uint64_t> deferred_queued_{0};
  std::atomic<uint64_t> deferred_committed_{0};
  std::atomic<uint64_t> deferred_lost_{0};
  std::atomic<uint64_t> deferred_waits_{0};
  std::atomic<uint64_t> deferred_blocked_{0};
  // Batches of calls (those holding only deferred records are not counted) by size.
  std::array<std::atomic<uint64_t>, kBatchSizeBounds.size() + 1> batch_sizes_{};
  std::atomic<uint64_t> batches_{0};
  std::atomic<uint64_t> batch_calls_{0};

  std::thread thread_;  // last: starts once everything above exists
};

// Runs f(db) through writer.Run and returns f's result once its transaction has committed;
// the COMMIT's error if it did not.
template <typename F>
auto Write(Writer& writer, std::string_view purpose, bool checkpoint_after, F&& f)
    -> std::invoke_result_t<F&, sqlite3*> {
  using R = std::invoke_result_t<F&, sqlite3*>;
  std::optional<R> result;
  auto run = [&](sqlite3* db) -> Status {
    result.emplace(f(db));  // may run twice if SQLite drops the transaction; last one counts
    return result->has_value() ? Status() : result->error();
  };
  Status s = writer.Run(purpose, run, checkpoint_after);
  if (!s.ok()) return Error(std::move(s));
  return std::move(*result);
}

template <typename F>
auto Write(Writer& writer, std::string_view purpose, F&& f) {
  return Write(writer, purpose, false, std::forward<F>(f));
}

inline constexpr bool kCheckpointAfter = true;

}  // namespace tpmma::storage::sqlite
