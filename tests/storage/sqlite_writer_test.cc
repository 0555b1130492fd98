// SPDX-License-Identifier: GPL-2.0-or-later
// The group-commit writer on its own (storage/sqlite/writer.h), on a scratch table rather
// than the vault's schema: batching, a failing member, a failing COMMIT, shutdown.
#include "storage/sqlite/writer.h"

#include <sqlite3.h>

#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "storage/sqlite/connection.h"
#include "tests/support/status_testing.h"
#include "tests/support/testutil.h"

#define EXPECT_OK(expr)                                     \
  do {                                                      \
    Status s_ = (expr);                                     \
    EXPECT_TRUE(s_.ok()) << #expr << ": " << s_.ToString(); \
  } while (0)

namespace tpmma::storage::sqlite {
namespace {

// Holds the writer at the Nth "commit" step until released, or fails the Mth one.
class CommitScript {
 public:
  FaultHook Hook() {
    return [this](std::string_view step) -> Status { return OnStep(step); };
  }
  void HoldCommit(int n) {
    std::lock_guard l(mu_);
    hold_at_ = n;
    released_ = false;
  }
  void FailCommit(int n) {
    std::lock_guard l(mu_);
    fail_at_ = n;
  }
  void WaitHeld() {
    std::unique_lock l(mu_);
    cv_.wait(l, [&] { return held_; });
  }
  void Release() {
    {
      std::lock_guard l(mu_);
      released_ = true;
    }
    cv_.notify_all();
  }

 private:
  Status OnStep(std::string_view step) {
    if (step != "commit") return Status();
    std::unique_lock l(mu_);
    ++commits_;
    if (commits_ == hold_at_) {
      held_ = true;
      cv_.notify_all();
      cv_.wait(l, [&] { return released_; });
      held_ = false;
    }
    if (commits_ == fail_at_) return Status(Code::kIoError, "injected COMMIT failure");
    return Status();
  }

  std::mutex mu_;
  std::condition_variable cv_;
  int commits_ = 0;
  int hold_at_ = -1;
  int fail_at_ = -1;
  bool held_ = false;
  bool released_ = false;
};

class WriterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = dir_.File("writer.db");
    ASSERT_OK(CreatePrivateFile(path_));
    auto db = OpenConnection(path_, 5000, "PRAGMA journal_mode = WAL;", "");
    ASSERT_OK(db);
    ASSERT_OK(Exec(db->get(), "create tables",
                   "CREATE TABLE t (tag TEXT PRIMARY KEY); CREATE TABLE log (what TEXT);"));
    hook_ = script_.Hook();
    WriterOptions o;
    o.max_batch = 64;
    o.deferred_delay = std::chrono::milliseconds(0);
    o.hook = &hook_;
    o.append_deferred = [](sqlite3* c, const AuditEvent& e) -> Status {
      TPMMA_ASSIGN_OR_RETURN(Stmt s, Stmt::Prepare(c, "log", "INSERT INTO log (what) VALUES (?)"));
      s.Bind(e.action);
      return s.Run();
    };
    writer_ = std::make_unique<Writer>(std::move(*db), std::move(o));
  }

  // Inserts `tag` (kConflict if it is there already); `then` runs after the row is written.
  Status Insert(const std::string& tag, Status then = Status()) {
    auto run = [&](sqlite3* db) -> Status {
      TPMMA_ASSIGN_OR_RETURN(Stmt s, Stmt::Prepare(db, "insert", "INSERT INTO t (tag) VALUES (?)"));
      s.Bind(tag);
      TPMMA_RETURN_IF_ERROR(s.Run());
      return then;
    };
    return writer_->Run("insert", run, false);
  }

  // Through a connection of its own: what is committed.
  int64_t Count(const std::string& sql) {
    sqlite3* db = nullptr;
    EXPECT_EQ(sqlite3_open(path_.c_str(), &db), SQLITE_OK);
    sqlite3_stmt* s = nullptr;
    EXPECT_EQ(sqlite3_prepare_v2(db, sql.c_str(), -1, &s, nullptr), SQLITE_OK) << sql;
    int64_t n = -1;
    if (sqlite3_step(s) == SQLITE_ROW) n = sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    sqlite3_close(db);
    return n;
  }
  bool Has(const std::string& tag) {
    return Count("SELECT count(*) FROM t WHERE tag = '" + tag + "'") == 1;
  }

  void WaitQueued(uint64_t n) {
    while (writer_->Stats().queued < n) std::this_thread::yield();
  }

  // Runs each of `calls` on its own thread while the writer is held at the next commit
  // (behind one "hold" call), so that they form the next batch together.
  void RunAsOneBatch(int next_commit, std::vector<std::function<void()>> calls) {
    script_.HoldCommit(next_commit);
    std::thread holder([&] { EXPECT_OK(Insert("hold-" + std::to_string(next_commit))); });
    script_.WaitHeld();
    std::vector<std::thread> threads;
    for (auto& call : calls) threads.emplace_back(call);
    WaitQueued(calls.size());
    script_.Release();
    holder.join();
    for (auto& t : threads) t.join();
  }

  tpmma::testing::TempDir dir_;
  std::string path_;
  CommitScript script_;
  FaultHook hook_;
  std::unique_ptr<Writer> writer_;
};

TEST_F(WriterTest, ConcurrentCallsShareOneCommit) {
  constexpr int kCalls = 8;
  std::vector<Status> results(kCalls);
  std::vector<std::function<void()>> calls;
  for (int i = 0; i < kCalls; ++i) {
    calls.push_back([&, i] { results[i] = Insert("c" + std::to_string(i)); });
  }
  RunAsOneBatch(1, calls);
  for (const Status& s : results) EXPECT_OK(s);
  SqliteVaultStats st = writer_->Stats();
  EXPECT_EQ(st.commits, 2u);  // the held call alone, then all eight together
  EXPECT_EQ(st.largest_batch, static_cast<uint64_t>(kCalls));
  EXPECT_EQ(st.calls, static_cast<uint64_t>(kCalls + 1));
  EXPECT_EQ(st.queued, 0u);
  EXPECT_EQ(Count("SELECT count(*) FROM t"), kCalls + 1);
}

TEST_F(WriterTest, FailingMemberLeavesItsNeighboursAlone) {
  ASSERT_OK(Insert("dup"));
  Status first, failed, conflict, last;
  RunAsOneBatch(2, {[&] { first = Insert("first"); },
                    [&] { failed = Insert("half-done", Status(Code::kIoError, "fails late")); },
                    [&] { conflict = Insert("dup"); }, [&] { last = Insert("last"); }});
  EXPECT_OK(first);
  EXPECT_EQ(failed.code(), Code::kIoError);
  EXPECT_EQ(conflict.code(), Code::kConflict);
  EXPECT_OK(last);
  EXPECT_TRUE(Has("first"));
  EXPECT_TRUE(Has("last"));
  EXPECT_FALSE(Has("half-done"));  // its row was written, then undone with its savepoint
  EXPECT_EQ(writer_->Stats().largest_batch, 4u);
  EXPECT_EQ(writer_->Stats().commits, 3u);
}

TEST_F(WriterTest, CommitFailureFailsEveryMemberOfTheBatch) {
  ASSERT_OK(Insert("dup"));
  script_.FailCommit(3);  // 1: "dup", 2: the held call, 3: the batch
  Status a, b, refused;
  RunAsOneBatch(
      2, {[&] { a = Insert("a"); }, [&] { b = Insert("b"); }, [&] { refused = Insert("dup"); }});
  for (const Status* s : {&a, &b, &refused}) {
    EXPECT_EQ(s->code(), Code::kIoError);
    EXPECT_NE(s->message().find("injected COMMIT failure"), std::string::npos) << s->ToString();
  }
  EXPECT_FALSE(Has("a"));
  EXPECT_FALSE(Has("b"));
  EXPECT_EQ(writer_->Stats().commits, 2u);
  // The writer carries on with the next batch.
  ASSERT_OK(Insert("after"));
  EXPECT_TRUE(Has("after"));
}

TEST_F(WriterTest, DeferredRecordsRideWithTheNextBatch) {
  for (int i = 0; i < 5; ++i) ASSERT_OK(writer_->Defer(AuditEvent{0, "", "d", "", "", ""}));
  writer_->FlushDeferred();
  EXPECT_EQ(Count("SELECT count(*) FROM log"), 5);
  SqliteVaultStats st = writer_->Stats();
  EXPECT_EQ(st.deferred_committed, 5u);
  EXPECT_EQ(st.deferred_lost, 0u);
  EXPECT_EQ(st.deferred_queued, 0u);
}

TEST_F(WriterTest, StopRunsTheQueuedWorkThenRefusesMore) {
  constexpr int kCalls = 5;
  script_.HoldCommit(1);
  std::thread holder([&] { EXPECT_OK(Insert("hold")); });
  script_.WaitHeld();
  std::vector<Status> results(kCalls);
  std::vector<std::thread> threads;
  for (int i = 0; i < kCalls; ++i) {
    threads.emplace_back([&, i] { results[i] = Insert("q" + std::to_string(i)); });
  }
  WaitQueued(kCalls);
  std::thread stopper([&] { writer_->Stop(); });
  // Records accepted before the stop took effect must be written too; after it, refused.
  int accepted = 0;
  Status deferred;
  while ((deferred = writer_->Defer(AuditEvent{0, "", "d", "", "", ""})).ok()) {
    ++accepted;
    std::this_thread::yield();
  }
  EXPECT_EQ(deferred.code(), Code::kUnavailable);
  script_.Release();
  stopper.join();
  holder.join();
  for (auto& t : threads) t.join();
  for (const Status& s : results) EXPECT_OK(s);
  EXPECT_EQ(Count("SELECT count(*) FROM t"), kCalls + 1);
  EXPECT_EQ(Count("SELECT count(*) FROM log"), accepted);
  EXPECT_EQ(writer_->Stats().deferred_committed, static_cast<uint64_t>(accepted));

  EXPECT_EQ(Insert("late").code(), Code::kUnavailable);
  EXPECT_FALSE(Has("late"));
  writer_->FlushDeferred();  // returns at once: the thread has exited
  writer_->Stop();           // idempotent
}

}  // namespace
}  // namespace tpmma::storage::sqlite
