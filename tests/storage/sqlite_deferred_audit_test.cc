// SPDX-License-Identifier: GPL-2.0-or-later
// SqliteVault's deferred audit records (AppendAuditDeferred: successful reads): batching,
// the delay, back-pressure, lost records, draining on close.
#include "tests/storage/sqlite_test_support.h"

namespace tpmma::storage::testing {
namespace {

TEST_F(SqliteVaultTest, DeferredAuditRecordsJoinTheChainInBatches) {
  auto v = OpenOrDie(Path());
  ASSERT_TRUE(v);
  ASSERT_OK(v->UpsertPlatform(MakePlatform("p"), std::nullopt));
  // A burst of reads from 8 threads, with durable writes in between.
  constexpr int kThreads = 8, kReads = 150;
  SqliteVaultStats before = v->GetStats();
  std::latch start(kThreads);
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      start.arrive_and_wait();
      for (int i = 0; i < kReads; ++i) {
        if (!v->AppendAuditDeferred(Audit("GetMAKey", "t" + std::to_string(t))).ok()) ++failures;
        if (i % 50 == 0) {
          std::string id = "w" + std::to_string(t) + "-" + std::to_string(i);
          if (!v->PutPackage(MakePackage(id, "p", 1, "<" + id + "/>"), Audit("Upload", id))) {
            ++failures;
          }
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
  ASSERT_OK(v->FlushDeferredAudit());
  SqliteVaultStats after = v->GetStats();
  EXPECT_EQ(after.deferred_committed - before.deferred_committed, uint64_t{kThreads * kReads});
  EXPECT_EQ(after.deferred_lost, 0u);
  EXPECT_EQ(after.deferred_queued, 0u);
  // Far fewer commits than records: they rode along in shared batches.
  EXPECT_LT(after.commits - before.commits, uint64_t{kThreads * kReads / 4});
  EXPECT_EQ(CountAudit(*v, "GetMAKey"), kThreads * kReads);
  EXPECT_EQ(CountAudit(*v, "Upload"), kThreads * 3);
  ASSERT_OK(v->VerifyAuditChain());
  ASSERT_OK(v->IntegrityCheck());
  // Reopened: they are in the file, not only in the writer's memory.
  v.reset();
  v = OpenOrDie(Path());
  ASSERT_TRUE(v);
  EXPECT_EQ(CountAudit(*v, "GetMAKey"), kThreads * kReads);
  ASSERT_OK(v->VerifyAuditChain());
}

TEST_F(SqliteVaultTest, DeferredAuditWaitsForMoreButNotForAFlush) {
  SqliteVaultOptions o;
  o.deferred_audit_delay_ms = 60'000;  // only a flush (or a full batch) ends the wait
  auto v = OpenOrDie(Path(), std::move(o));
  ASSERT_TRUE(v);
  SqliteVaultStats before = v->GetStats();
  for (int i = 0; i < 20; ++i) ASSERT_OK(v->AppendAuditDeferred(Audit("Query")));
  ASSERT_OK(v->FlushDeferredAudit());
  SqliteVaultStats after = v->GetStats();
  EXPECT_EQ(after.deferred_committed - before.deferred_committed, 20u);
  EXPECT_EQ(after.commits - before.commits, 1u) << "20 records, one commit";
  EXPECT_EQ(CountAudit(*v, "Query"), 20);
  // A durable call does not wait for the delay either, and takes queued records along.
  for (int i = 0; i < 5; ++i) ASSERT_OK(v->AppendAuditDeferred(Audit("Query")));
  auto seq = v->AppendAudit(Audit("Refused"));
  ASSERT_OK(seq);
  EXPECT_EQ(*seq, kGenesisRecords + 26);  // after the 5 queued before it
  EXPECT_EQ(CountAudit(*v, "Query"), 25);
  ASSERT_OK(v->VerifyAuditChain());
}

TEST_F(SqliteVaultTest, FullDeferredQueueAppliesBackPressureInsteadOfGrowing) {
  ScriptedHook hook;
  SqliteVaultOptions o;
  o.fault_hook = hook.Hook();
  o.max_deferred_audit = 4;
  o.deferred_audit_delay_ms = 0;
  auto v = OpenOrDie(Path(), std::move(o));
  ASSERT_TRUE(v);
  // Park the writer inside a batch: nothing leaves the queue.
  hook.HoldCommit(hook.commits_seen() + 1);
  std::thread holder([&] { ASSERT_OK(v->AppendAudit(Audit("Hold"))); });
  hook.WaitHeld();
  for (int i = 0; i < 4; ++i) ASSERT_OK(v->AppendAuditDeferred(Audit("Read")));
  EXPECT_EQ(v->GetStats().deferred_queued, 4u);
  // The fifth waits for room rather than growing the queue.
  std::atomic<bool> fifth_returned{false};
  std::thread fifth([&] {
    EXPECT_TRUE(v->AppendAuditDeferred(Audit("Read")).ok());
    fifth_returned = true;
  });
  // Bounded, so that a regression (the queue growing) fails here instead of hanging.
  auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (v->GetStats().deferred_blocked < 1 && !fifth_returned.load() &&
         std::chrono::steady_clock::now() < give_up) {
    std::this_thread::yield();
  }
  EXPECT_FALSE(fifth_returned.load()) << "the fifth record did not wait for room";
  EXPECT_EQ(v->GetStats().deferred_queued, 4u);
  EXPECT_EQ(v->GetStats().deferred_waits, 1u);
  hook.Release();
  holder.join();
  fifth.join();
  EXPECT_TRUE(fifth_returned.load());
  ASSERT_OK(v->FlushDeferredAudit());
  EXPECT_EQ(CountAudit(*v, "Read"), 5);
  EXPECT_EQ(v->GetStats().deferred_blocked, 0u);
  ASSERT_OK(v->VerifyAuditChain());
}

TEST_F(SqliteVaultTest, FailedDeferredRecordsAreCountedLostAndTheChainStaysWhole) {
  ScriptedHook hook;
  SqliteVaultOptions o;
  o.fault_hook = hook.Hook();
  o.deferred_audit_delay_ms = 0;
  auto v = OpenOrDie(Path(), std::move(o));
  ASSERT_TRUE(v);
  ASSERT_OK(v->AppendAudit(Audit("Before")));
  // A record that fails on its own is given up; durable calls beside it are not affected.
  hook.FailDeferred(true);
  ASSERT_OK(v->AppendAuditDeferred(Audit("Lost")));
  ASSERT_OK(v->FlushDeferredAudit());
  hook.FailDeferred(false);
  EXPECT_EQ(v->GetStats().deferred_lost, 1u);
  // A batch whose COMMIT fails loses its deferred records (and fails its durable calls).
  hook.HoldCommit(hook.commits_seen() + 1);
  std::thread holder([&] { ASSERT_OK(v->AppendAudit(Audit("Hold"))); });
  hook.WaitHeld();
  for (int i = 0; i < 3; ++i) ASSERT_OK(v->AppendAuditDeferred(Audit("Lost")));
  hook.FailCommit(hook.commits_seen() + 1);
  std::thread failing([&] { EXPECT_CODE(v->AppendAudit(Audit("Failed")), Code::kIoError); });
  while (v->GetStats().queued < 1) std::this_thread::yield();
  hook.Release();
  holder.join();
  failing.join();
  ASSERT_OK(v->FlushDeferredAudit());
  EXPECT_EQ(v->GetStats().deferred_lost, 4u);
  // And then everything works again.
  ASSERT_OK(v->AppendAuditDeferred(Audit("Kept")));
  ASSERT_OK(v->FlushDeferredAudit());
  EXPECT_EQ(CountAudit(*v, "Lost"), 0);
  EXPECT_EQ(CountAudit(*v, "Failed"), 0);
  EXPECT_EQ(CountAudit(*v, "Kept"), 1);
  ASSERT_OK(v->VerifyAuditChain());
  ASSERT_OK(v->IntegrityCheck());
}

TEST_F(SqliteVaultTest, DeferredAuditIsValidatedAtOnceAndDrainedOnClose) {
  SqliteVaultOptions o;
  o.deferred_audit_delay_ms = 60'000;
  auto v = OpenOrDie(Path(), o);
  ASSERT_TRUE(v);
  AuditEvent big = Audit("Read");
  big.detail = std::string(2000, 'x');
  EXPECT_CODE(v->AppendAuditDeferred(big), Code::kInvalidArgument);
  for (int i = 0; i < 10; ++i) ASSERT_OK(v->AppendAuditDeferred(Audit("Read")));
  v.reset();  // no flush: closing commits what is queued
  // The last connection closed cleanly (cached statements finalized): WAL checkpointed away.
  EXPECT_FALSE(std::filesystem::exists(Path() + "-wal"));
  v = OpenOrDie(Path(), o);
  ASSERT_TRUE(v);
  EXPECT_EQ(CountAudit(*v, "Read"), 10);
  ASSERT_OK(v->VerifyAuditChain());
}

}  // namespace
}  // namespace tpmma::storage::testing
