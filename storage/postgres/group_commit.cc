// SPDX-License-Identifier: GPL-2.0-or-later
#include "storage/postgres/group_commit.h"

#include <algorithm>

#include "common/text.h"
#include "storage/postgres/connection.h"
#include "storage/postgres/query.h"

namespace tpmma::storage::postgres {

GroupCommit::GroupCommit(ConnPool* pool, size_t max_batch)
    : pool_(pool), max_batch_(std::max<size_t>(max_batch, 1)) {}

Status GroupCommit::Run(std::string_view purpose, const std::function<Status(PGconn*)>& op) {
  Call call{purpose, &op, Status(), false};
  std::vector<Call*> batch;
  {
    std::unique_lock lock(mu_);
    queue_.push_back(&call);
    cv_.wait(lock, [&] { return call.done || queue_.front() == &call; });
    if (call.done) return call.result;
    // The front of the queue leads: it takes what has queued up behind it meanwhile.
    size_t n = std::min(queue_.size(), max_batch_);
    batch.assign(queue_.begin(), queue_.begin() + static_cast<std::ptrdiff_t>(n));
  }
  committed_ = false;
  Lead(batch);
  {
    std::lock_guard lock(mu_);
    if (committed_) ++commits_;
    for (Call* c : batch) {
      c->done = true;
      queue_.pop_front();
    }
    RecordBatch(batch.size());
  }
  cv_.notify_all();  // the batch's callers, and the next leader
  return call.result;
}

void GroupCommit::Lead(const std::vector<Call*>& batch) {
  auto fail_all = [&](const Status& s) {
    for (Call* c : batch) c->result = s;
  };
  auto lease = pool_->Acquire();
  if (!lease) return fail_all(lease.error());
  PGconn* conn = lease->get();
  const std::string_view what = batch.size() == 1 ? batch.front()->purpose : "group commit";
  if (Status s = Begin(conn, TxnKind::kWrite, what, pool_); !s.ok()) return fail_all(s);
  // The head first, once per batch: every write transaction of every instance then takes it
  // before any row lock, so no two of them can wait on each other (a batch that took the
  // head at its first audit record and a row after it would deadlock with another
  // instance's call holding that row and waiting for the head).
  if (Status s =
          Script(conn, "lock the audit head", "SELECT seq FROM audit_head WHERE id FOR UPDATE");
      !s.ok()) {
    (void)Script(conn, "rollback", "ROLLBACK");
    return fail_all(s);
  }
  bool any_ok = false;  // nothing to commit otherwise
  for (size_t i = 0; i < batch.size(); ++i) {
    Call* c = batch[i];
    if (Status s = Script(conn, Cat("savepoint for ", c->purpose), "SAVEPOINT call"); !s.ok()) {
      (void)Script(conn, "rollback", "ROLLBACK");
      return fail_all(s);
    }
    c->result = (*c->op)(conn);
    const char* end = c->result.ok() ? "RELEASE SAVEPOINT call" : "ROLLBACK TO SAVEPOINT call";
    if (Status s = Script(conn, Cat("end of ", c->purpose), end); !s.ok()) {
      // The transaction is unusable (the connection is gone): nothing of it commits.
      (void)Script(conn, "rollback", "ROLLBACK");
      for (size_t j = 0; j < batch.size(); ++j) {
        if (j > i || batch[j]->result.ok()) batch[j]->result = s;
      }
      return;
    }
    any_ok = any_ok || c->result.ok();
  }
  const char* end = any_ok ? "COMMIT" : "ROLLBACK";
  if (Status s = Script(conn, Cat("commit ", what), end); !s.ok()) {
    (void)Script(conn, "rollback", "ROLLBACK");
    for (Call* c : batch) {
      if (c->result.ok()) c->result = s;
    }
    return;
  }
  if (any_ok) committed_ = true;
}

void GroupCommit::RecordBatch(size_t calls) {
  ++batches_;
  batch_calls_ += calls;
  largest_ = std::max<uint64_t>(largest_, calls);
  ++sizes_[BatchSizeBucket(calls)];
}

void GroupCommit::FillStats(VaultStats* stats) const {
  std::lock_guard lock(mu_);
  stats->calls = batch_calls_;
  stats->commits = commits_;
  stats->batches = batches_;
  stats->batch_calls = batch_calls_;
  stats->largest_batch = largest_;
  stats->batch_sizes = sizes_;
  stats->queued = queue_.size();
}

}  // namespace tpmma::storage::postgres
