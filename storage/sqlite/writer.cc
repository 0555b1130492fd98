// SPDX-License-Identifier: GPL-2.0-or-later
#include "storage/sqlite/writer.h"

#include <algorithm>

#include "storage/sqlite/txn.h"

namespace tpmma::storage::sqlite {

// One queued call; lives on the caller's stack until Complete() has run.
struct Writer::Op {
  Op(std::string_view purpose_in, FunctionRef<Status(sqlite3*)> run_in, bool checkpoint)
      : purpose(purpose_in), run(run_in), checkpoint_after(checkpoint) {}
  std::string_view purpose;
  FunctionRef<Status(sqlite3*)> run;
  bool checkpoint_after;
  Status status;  // the call's own outcome; written by the writer thread only

  std::mutex mu;
  std::condition_variable cv;
  bool done = false;    // guarded by mu
  Status final_status;  // guarded by mu; what the caller gets
};

Writer::Writer(DbPtr db, WriterOptions options)
    : db_(std::move(db)),
      max_batch_(std::max<size_t>(options.max_batch, 1)),
      max_deferred_(std::max<size_t>(options.max_deferred, 1)),
      // Half the queue, so that writers rarely find it full while we wait.
      deferred_eager_(std::max<size_t>(std::min(max_deferred_ / 2, kMaxDeferredPerBatch), 1)),
      deferred_delay_(options.deferred_delay),
      hook_(options.hook),
      append_deferred_(std::move(options.append_deferred)) {
  thread_ = std::thread([this] { Loop(); });
}

Writer::~Writer() {
  Stop();
}

void Writer::Stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_one();
  space_cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

Status Writer::Run(std::string_view purpose, FunctionRef<Status(sqlite3*)> run,
                   bool checkpoint_after) {
  Op op(purpose, run, checkpoint_after);
  {
    std::lock_guard lock(mu_);
    if (stopping_) return Status(Code::kUnavailable, "vault is shutting down");
    queue_.push_back(&op);
    queued_.store(queue_.size(), std::memory_order_relaxed);
  }
  cv_.notify_one();
  std::unique_lock lock(op.mu);
  op.cv.wait(lock, [&] { return op.done; });
  return std::move(op.final_status);
}

Status Writer::Defer(AuditEvent event) {
  bool wake = false;
  {
    std::unique_lock lock(mu_);
    if (!stopping_ && deferred_.size() >= max_deferred_) {
      deferred_waits_.fetch_add(1, std::memory_order_relaxed);
      deferred_blocked_.fetch_add(1, std::memory_order_relaxed);
      space_cv_.wait(lock, [&] { return stopping_ || deferred_.size() < max_deferred_; });
      deferred_blocked_.fetch_sub(1, std::memory_order_relaxed);
    }
    if (stopping_) return Status(Code::kUnavailable, "vault is shutting down");
    deferred_.push_back(std::move(event));
    ++deferred_enqueued_;
    deferred_queued_.store(deferred_.size(), std::memory_order_relaxed);
    // The writer needs waking only to start its wait for more (first record) or to end
    // it early (enough for a batch); a wake-up per read would cost a context switch each.
    wake = deferred_.size() == 1 || deferred_.size() == deferred_eager_;
  }
  if (wake) cv_.notify_one();
  return Status();
}

void Writer::FlushDeferred() {
  std::unique_lock lock(mu_);
  const uint64_t target = deferred_enqueued_;
  ++flushers_;
  cv_.notify_one();  // no point in waiting for more records now
  done_cv_.wait(lock, [&] { return deferred_done_ >= target || exited_; });
  --flushers_;
}

SqliteVaultStats Writer::Stats() const {
  SqliteVaultStats s;
  s.calls = calls_.load(std::memory_order_relaxed);
  s.commits = commits_.load(std::memory_order_relaxed);
  s.largest_batch = largest_batch_.load(std::memory_order_relaxed);
  s.queued = queued_.load(std::memory_order_relaxed);
  s.deferred_queued = deferred_queued_.load(std::memory_order_relaxed);
  s.deferred_committed = deferred_committed_.load(std::memory_order_relaxed);
  s.deferred_lost = deferred_lost_.load(std::memory_order_relaxed);
  s.deferred_waits = deferred_waits_.load(std::memory_order_relaxed);
  s.deferred_blocked = deferred_blocked_.load(std::memory_order_relaxed);
  return s;
}

void Writer::AddBatchSizes(VaultStats* stats) const {
  for (size_t i = 0; i < batch_sizes_.size(); ++i) {
    stats->batch_sizes[i] = batch_sizes_[i].load(std::memory_order_relaxed);
  }
  stats->batches = batches_.load(std::memory_order_relaxed);
  stats->batch_calls = batch_calls_.load(std::memory_order_relaxed);
}

void Writer::Loop() {
  std::vector<Op*> batch;
  std::vector<AuditEvent> deferred;
  std::unique_lock lock(mu_);
  while (true) {
    cv_.wait(lock, [&] { return stopping_ || !queue_.empty() || !deferred_.empty(); });
    if (queue_.empty() && deferred_.empty()) {
      // Stopping, and everything queued has been run.
      exited_ = true;
      done_cv_.notify_all();
      return;
    }
    if (queue_.empty() && deferred_delay_.count() > 0) {
      // Only deferred records: nobody waits for them, so let them gather for a moment
      // (one fsync per delay rather than one per read). Ends early for a call that
      // waits, for a full batch, a flush, or shutdown.
      cv_.wait_for(lock, deferred_delay_, [&] {
        return stopping_ || !queue_.empty() || deferred_.size() >= deferred_eager_ || flushers_ > 0;
      });
    }
    while (!queue_.empty() && batch.size() < max_batch_) {
      batch.push_back(queue_.front());
      queue_.pop_front();
    }
    while (!deferred_.empty() && deferred.size() < kMaxDeferredPerBatch) {
      deferred.push_back(std::move(deferred_.front()));
      deferred_.pop_front();
    }
    queued_.store(queue_.size(), std::memory_order_relaxed);
    deferred_queued_.store(deferred_.size(), std::memory_order_relaxed);
    lock.unlock();
    if (!deferred.empty()) space_cv_.notify_all();
    if (batch.size() > largest_batch_.load(std::memory_order_relaxed)) {
      largest_batch_.store(batch.size(), std::memory_order_relaxed);
    }
    if (!batch.empty()) {
      batch_sizes_[BatchSizeBucket(batch.size())].fetch_add(1, std::memory_order_relaxed);
      batch_calls_.fetch_add(batch.size(), std::memory_order_relaxed);
      batches_.fetch_add(1, std::memory_order_relaxed);
    }
    const size_t taken = deferred.size();
    RunBatch(std::move(batch), deferred);
    batch.clear();
    deferred.clear();
    lock.lock();
    deferred_done_ += taken;
    done_cv_.notify_all();
  }
}

void Writer::Complete(Op* op, Status status) {
  calls_.fetch_add(1, std::memory_order_relaxed);
  // Notify under the lock: once it sees `done` the caller returns and destroys *op.
  std::lock_guard lock(op->mu);
  op->final_status = std::move(status);
  op->done = true;
  op->cv.notify_one();
}

// Runs one call in its own savepoint, so that its failure undoes only its own rows.
void Writer::RunInSavepoint(sqlite3* db, Op& op) {
  op.status = Exec(db, Cat("savepoint ", op.purpose), "SAVEPOINT call");
  if (!op.status.ok()) return;
  op.status = op.run(db);
  if (sqlite3_get_autocommit(db) != 0) return;  // SQLite dropped the transaction; see caller
  if (op.status.ok()) {
    op.status = Exec(db, Cat("release savepoint ", op.purpose), "RELEASE call");
    if (op.status.ok()) return;
  }
  Status undo = Exec(db, Cat("roll back ", op.purpose), "ROLLBACK TO call; RELEASE call");
  // Never commit a call's half-written rows: if they cannot be undone alone, drop the
  // whole transaction (the caller then runs the neighbours again).
  if (!undo.ok()) RollbackIfOpen(db);
}

Status Writer::AppendDeferred(sqlite3* db, const AuditEvent& e) {
  TPMMA_RETURN_IF_ERROR(append_deferred_(db, e));
  return Hook("deferred_audit");
}

// Fast path: one savepoint for all of the deferred records.
Writer::DeferredResult Writer::RunDeferredTogether(sqlite3* db, std::vector<AuditEvent>& events,
                                                   uint64_t* lost) {
  if (!Exec(db, "savepoint deferred audit", "SAVEPOINT deferred").ok()) {
    return DeferredResult::kOneByOne;
  }
  size_t i = 0;
  Status st;
  for (; i < events.size() && st.ok(); ++i) st = AppendDeferred(db, events[i]);
  if (sqlite3_get_autocommit(db) != 0) {
    events.erase(events.begin() + static_cast<std::ptrdiff_t>(i - 1));  // the last one run
    ++*lost;
    return DeferredResult::kTransactionGone;
  }
  if (st.ok() && Exec(db, "release deferred audit", "RELEASE deferred").ok()) {
    return DeferredResult::kDone;
  }
  if (!Exec(db, "roll back deferred audit", "ROLLBACK TO deferred; RELEASE deferred").ok()) {
    RollbackIfOpen(db);
    *lost += events.size();
    events.clear();
    return DeferredResult::kTransactionGone;
  }
  return DeferredResult::kOneByOne;
}

// One savepoint per record, so that only a record that fails on its own is given up.
bool Writer::RunDeferredOneByOne(sqlite3* db, std::vector<AuditEvent>& events, uint64_t* lost) {
  auto give_up = [&](size_t i) {
    events.erase(events.begin() + static_cast<std::ptrdiff_t>(i));
    ++*lost;
  };
  for (size_t i = 0; i < events.size();) {
    Status st = Exec(db, "savepoint deferred audit record", "SAVEPOINT one");
    if (st.ok()) st = AppendDeferred(db, events[i]);
    if (sqlite3_get_autocommit(db) != 0) {
      give_up(i);
      return false;
    }
    if (st.ok()) st = Exec(db, "release deferred audit record", "RELEASE one");
    if (st.ok()) {
      ++i;
      continue;
    }
    if (!Exec(db, "roll back deferred audit record", "ROLLBACK TO one; RELEASE one").ok()) {
      RollbackIfOpen(db);
      give_up(i);
      return false;
    }
    give_up(i);
  }
  return true;
}

// Appends the deferred records inside the open transaction; a record that fails is given up
// (erased, counted in *lost). Returns false if SQLite dropped the whole transaction: the
// caller starts a new one for the rest.
bool Writer::RunDeferred(sqlite3* db, std::vector<AuditEvent>& events, uint64_t* lost) {
  if (events.empty()) return true;
  switch (RunDeferredTogether(db, events, lost)) {
    case DeferredResult::kDone:
      return true;
    case DeferredResult::kTransactionGone:
      return false;
    case DeferredResult::kOneByOne:
      break;
  }
  return RunDeferredOneByOne(db, events, lost);
}

void Writer::RunBatch(std::vector<Op*> pending, std::vector<AuditEvent>& deferred) {
  sqlite3* db = db_.get();
  uint64_t lost = 0;
  auto finish = [&](bool committed) {
    if (committed) {
      deferred_committed_.fetch_add(deferred.size(), std::memory_order_relaxed);
    } else {
      lost += deferred.size();
    }
    deferred_lost_.fetch_add(lost, std::memory_order_relaxed);
  };
  while (!pending.empty() || !deferred.empty()) {
    if (Status s = Exec(db, "begin write batch", "BEGIN IMMEDIATE"); !s.ok()) {
      for (Op* op : pending) Complete(op, s);
      return finish(false);
    }
    // The deferred records first: they were queued before these calls were taken.
    if (!RunDeferred(db, deferred, &lost)) continue;  // transaction gone: again, without it
    size_t next = 0;
    Op* lost_by = nullptr;
    while (next < pending.size() && lost_by == nullptr) {
      Op* op = pending[next++];
      RunInSavepoint(db, *op);
      // Some errors (SQLITE_FULL, IOERR, ...) make SQLite roll back the whole
      // transaction, taking the neighbours' rows with it.
      if (sqlite3_get_autocommit(db) != 0) lost_by = op;
    }
    if (lost_by != nullptr) {
      Complete(lost_by, lost_by->status.ok()
                            ? Status(Code::kIoError,
                                     Cat(lost_by->purpose, ": transaction rolled back by SQLite"))
                            : lost_by->status);
      // Nothing of the others is left, and their answers may rest on rows that are
      // gone: run them again in a new transaction. Each round completes one call.
      std::erase(pending, lost_by);
      continue;
    }
    Status commit = Hook("commit");
    if (commit.ok()) commit = Exec(db, "commit write batch", "COMMIT");
    if (!commit.ok()) {
      RollbackIfOpen(db);
      // Nothing of theirs is durable, and even a refusal may rest on a neighbour's
      // rows that are now gone: every call gets the COMMIT's error.
      for (Op* op : pending) Complete(op, commit);
      return finish(false);
    }
    commits_.fetch_add(1, std::memory_order_relaxed);
    if (std::ranges::any_of(pending, [](const Op* op) { return op->checkpoint_after; })) {
      // Removes deleted bodies' old frames from the WAL file. Best effort: a reader in
      // another process can make it partial (the next delete or the automatic
      // checkpoint finishes the job).
      sqlite3_wal_checkpoint_v2(db, nullptr, SQLITE_CHECKPOINT_TRUNCATE, nullptr, nullptr);
    }
    for (Op* op : pending) Complete(op, op->status);
    return finish(true);
  }
  finish(false);  // every deferred record was given up (nothing left to commit)
}

}  // namespace tpmma::storage::sqlite
