// SPDX-License-Identifier: GPL-2.0-or-later
// SqliteVault's group commit seen through the Vault API: one writer thread, calls batched
// into one transaction each in a savepoint (the Writer alone: sqlite_writer_test.cc).
#include "tests/storage/sqlite_test_support.h"

namespace tpmma::storage::testing {
namespace {

TEST_F(SqliteVaultTest, ConcurrentWritersShareCommits) {
  ScriptedHook hook;
  SqliteVaultOptions o;
  o.fault_hook = hook.Hook();
  auto v = OpenOrDie(Path(), std::move(o));
  ASSERT_TRUE(v);
  ASSERT_OK(v->UpsertPlatform(MakePlatform("p"), std::nullopt));

  // Deterministic: 16 calls queued behind a held commit go into one transaction.
  constexpr int kThreads = 16;
  SqliteVaultStats before = v->GetStats();
  VaultStats neutral_before = v->Stats();
  std::vector<Result<PutOutcome>> results(kThreads, Error(Code::kInternal, "not run"));
  std::vector<std::function<void()>> calls;
  for (int t = 0; t < kThreads; ++t) {
    calls.emplace_back([&, t] {
      std::string id = "b" + std::to_string(t);
      results[t] = v->PutPackage(MakePackage(id, "p", 2, "<" + id + "/>"), Audit("Upload", id));
    });
  }
  RunAsOneBatch(*v, hook, std::move(calls));
  SqliteVaultStats after = v->GetStats();
  EXPECT_EQ(after.calls - before.calls, uint64_t{kThreads + 1});
  EXPECT_EQ(after.commits - before.commits, 2u);  // the held call's batch, then all 16
  EXPECT_GE(after.largest_batch, uint64_t{kThreads});
  // The same in the backend-neutral shape (ma-server's /metrics): the held call's batch of
  // one, then one batch of 16 in the bucket whose bound is 16.
  VaultStats neutral = v->Stats();
  EXPECT_EQ(neutral.calls, after.calls);
  EXPECT_EQ(neutral.commits, after.commits);
  EXPECT_EQ(neutral.batches - neutral_before.batches, 2u);
  EXPECT_EQ(neutral.batch_calls - neutral_before.batch_calls, uint64_t{kThreads + 1});
  const size_t b16 = BatchSizeBucket(kThreads);
  EXPECT_EQ(kBatchSizeBounds[b16], uint64_t{kThreads});
  EXPECT_EQ(neutral.batch_sizes[b16] - neutral_before.batch_sizes[b16], 1u);
  for (int t = 0; t < kThreads; ++t) {
    ASSERT_OK(results[t]);
    EXPECT_EQ(*results[t], PutOutcome::kStored);
    auto got = v->GetPackage("b" + std::to_string(t));
    ASSERT_OK(got);
    EXPECT_EQ(got->body, ToBytes("<b" + std::to_string(t) + "/>"));
    EXPECT_EQ(got->descriptor.keys.size(), 2u);
  }

  // Free-running: 16 threads, mixed calls, every result right and the chain intact.
  constexpr int kOps = 30;
  before = v->GetStats();
  std::atomic<int> failures{0};
  std::latch start(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      start.arrive_and_wait();
      for (int i = 0; i < kOps; ++i) {
        std::string id = "t" + std::to_string(t) + "-" + std::to_string(i);
        bool ok = false;
        if (i % 3 == 0) {
          auto r = v->PutPackage(MakePackage(id, "p", 1, "<" + id + "/>"), Audit("Upload", id));
          ok = r.has_value() && *r == PutOutcome::kStored;
        } else if (i % 3 == 1) {
          auto r = v->AppendAudit(Audit("Ping", id));
          ok = r.has_value() && *r > 0;
        } else {  // the one just stored again: idempotent
          std::string prev = "t" + std::to_string(t) + "-" + std::to_string(i - 2);
          auto r =
              v->PutPackage(MakePackage(prev, "p", 1, "<" + prev + "/>"), Audit("Upload", prev));
          ok = r.has_value() && *r == PutOutcome::kAlreadyStored;
        }
        if (!ok) ++failures;
      }
    });
  }
  for (auto& th : threads) th.join();
  after = v->GetStats();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(after.calls - before.calls, uint64_t{kThreads * kOps});
  EXPECT_LE(after.commits - before.commits, after.calls - before.calls);
  EXPECT_LT(after.commits, after.calls) << "no two calls ever shared a commit";
  for (int t = 0; t < kThreads; ++t) {
    for (int i = 0; i < kOps; i += 3) {
      std::string id = "t" + std::to_string(t) + "-" + std::to_string(i);
      auto got = v->GetPackage(id);
      ASSERT_OK(got);
      EXPECT_EQ(got->body, ToBytes("<" + id + "/>"));
    }
  }
  ASSERT_OK(v->VerifyAuditChain());
  ASSERT_OK(v->IntegrityCheck());
  std::cout << "[ stats    ] calls " << after.calls << ", commits " << after.commits
            << ", largest batch " << after.largest_batch << "\n";
}

TEST_F(SqliteVaultTest, FailingCallsInABatchLeaveTheirNeighboursAlone) {
  ScriptedHook hook;
  SqliteVaultOptions o;
  o.fault_hook = hook.Hook();
  auto v = OpenOrDie(Path(), std::move(o));
  ASSERT_TRUE(v);
  ASSERT_OK(v->UpsertPlatform(MakePlatform("p"), std::nullopt));
  ASSERT_OK(v->PutPackage(MakePackage("dup", "p", 2, "<dup/>"), Audit("Upload", "dup")));
  ASSERT_OK(v->CreateChallenge(
      Challenge{"c1", ChallengeKind::kAuthenticate, "p", Bytes(32, 7), {}, {}, kNow, kNow + 60},
      std::nullopt));
  hook.FailPackageWithKeys(5);  // only "bad" has 5 keys: it fails after writing rows

  constexpr int kGood = 4;
  std::vector<Result<PutOutcome>> good(kGood, Error(Code::kInternal, "not run"));
  Result<PutOutcome> conflict = Error(Code::kInternal, "not run");
  Result<PutOutcome> bad = Error(Code::kInternal, "not run");
  Result<PutOutcome> ghost = Error(Code::kInternal, "not run");
  std::vector<Result<Challenge>> consumed(2, Error(Code::kInternal, "not run"));
  Status session(Code::kInternal, "not run");
  std::vector<std::function<void()>> calls;
  for (int i = 0; i < kGood; ++i) {
    calls.emplace_back([&, i] {
      std::string id = "g" + std::to_string(i);
      good[i] = v->PutPackage(MakePackage(id, "p", 2, "<" + id + "/>"), Audit("Upload", id));
    });
  }
  calls.emplace_back([&] {
    conflict = v->PutPackage(MakePackage("dup", "p", 2, "<other/>"), Audit("Upload", "dup"));
  });
  calls.emplace_back(
      [&] { bad = v->PutPackage(MakePackage("bad", "p", 5, "<bad/>"), Audit("Upload", "bad")); });
  calls.emplace_back([&] {
    ghost = v->PutPackage(MakePackage("ghost", "nobody", 1, "<g/>"), Audit("Upload", "ghost"));
  });
  for (int i = 0; i < 2; ++i) {
    calls.emplace_back(
        [&, i] { consumed[i] = v->ConsumeChallenge("c1", ChallengeKind::kAuthenticate, kNow); });
  }
  calls.emplace_back([&] {
    session = v->CreateSession(Session{Bytes(32, 9), "p", kNow, kNow + 60}, Audit("Login", "p"));
  });
  SqliteVaultStats before = v->GetStats();
  RunAsOneBatch(*v, hook, std::move(calls));
  EXPECT_EQ(v->GetStats().commits - before.commits, 2u) << "the calls did not share a batch";

  for (int i = 0; i < kGood; ++i) ExpectValue(good[i], PutOutcome::kStored);
  EXPECT_CODE(conflict, Code::kConflict);
  EXPECT_CODE(bad, Code::kIoError);
  EXPECT_CODE(ghost, Code::kNotFound);
  EXPECT_EQ(consumed[0].has_value() + consumed[1].has_value(), 1) << "exactly one consumer wins";
  EXPECT_CODE(consumed[0].has_value() ? consumed[1] : consumed[0], Code::kUnauthenticated);
  ASSERT_OK(session);

  v.reset();  // what survives is what is in the file
  v = OpenOrDie(Path());
  ASSERT_TRUE(v);
  for (int i = 0; i < kGood; ++i) ASSERT_OK(v->GetPackage("g" + std::to_string(i)));
  auto dup = v->GetPackage("dup");
  ASSERT_OK(dup);
  EXPECT_EQ(dup->body, ToBytes("<dup/>"));
  EXPECT_CODE(v->GetPackage("bad"), Code::kNotFound);
  ASSERT_OK(v->GetSession(Bytes(32, 9), kNow));
  EXPECT_CODE(v->ConsumeChallenge("c1", ChallengeKind::kAuthenticate, kNow),
              Code::kUnauthenticated);
  ASSERT_OK(v->VerifyAuditChain());
  ASSERT_OK(v->IntegrityCheck());
  v.reset();
  RawDb raw(Path());
  EXPECT_EQ(raw.Count("SELECT count(*) FROM packages"), 1 + kGood);
  EXPECT_EQ(raw.Count("SELECT count(*) FROM package_keys"), 2 * (1 + kGood));  // none of bad's
  EXPECT_EQ(raw.Count("SELECT count(*) FROM package_bodies"), 1 + kGood);
  // dup + the held call + the good uploads + the login; refusals leave no row.
  EXPECT_EQ(raw.Count("SELECT count(*) FROM audit_log"), kGenesisRecords + 1 + 1 + kGood + 1);
}

TEST_F(SqliteVaultTest, CommitFailureFailsEveryCallInTheBatch) {
  ScriptedHook hook;
  SqliteVaultOptions o;
  o.fault_hook = hook.Hook();
  auto v = OpenOrDie(Path(), std::move(o));
  ASSERT_TRUE(v);
  ASSERT_OK(v->UpsertPlatform(MakePlatform("p"), std::nullopt));
  ASSERT_OK(v->PutPackage(MakePackage("dup", "p", 1, "<dup/>"), Audit("Upload", "dup")));
  ASSERT_OK(v->CreateChallenge(
      Challenge{"c1", ChallengeKind::kAuthenticate, "p", Bytes(32, 7), {}, {}, kNow, kNow + 60},
      std::nullopt));
  // The next commit is the held call's; the one after it, the batch's, fails.
  hook.FailCommit(hook.commits_seen() + 2);

  std::vector<Result<PutOutcome>> puts(3, Error(Code::kInternal, "not run"));
  Result<Challenge> consumed = Error(Code::kInternal, "not run");
  Result<int64_t> appended = Error(Code::kInternal, "not run");
  std::vector<std::function<void()>> calls;
  for (int i = 0; i < 2; ++i) {
    calls.emplace_back([&, i] {
      std::string id = "x" + std::to_string(i);
      puts[i] = v->PutPackage(MakePackage(id, "p", 2, "<" + id + "/>"), Audit("Upload", id));
    });
  }
  calls.emplace_back([&] {  // a refusal, but one that rests on state that never committed
    puts[2] = v->PutPackage(MakePackage("dup", "p", 1, "<other/>"), Audit("Upload", "dup"));
  });
  calls.emplace_back(
      [&] { consumed = v->ConsumeChallenge("c1", ChallengeKind::kAuthenticate, kNow); });
  calls.emplace_back([&] { appended = v->AppendAudit(Audit("Ping")); });
  SqliteVaultStats before = v->GetStats();
  RunAsOneBatch(*v, hook, std::move(calls));
  EXPECT_EQ(v->GetStats().commits - before.commits, 1u);  // only the held call's

  for (const auto& r : puts) {
    ASSERT_FALSE(r.has_value());
    EXPECT_EQ(r.error().code(), Code::kIoError);
    EXPECT_NE(r.error().message().find("injected COMMIT failure"), std::string::npos)
        << r.error().message();
  }
  EXPECT_CODE(consumed, Code::kIoError);
  EXPECT_CODE(appended, Code::kIoError);

  // Nothing of the batch is there; the challenge is still unused; the chain goes on.
  EXPECT_CODE(v->GetPackage("x0"), Code::kNotFound);
  EXPECT_CODE(v->GetPackage("x1"), Code::kNotFound);
  auto audit = v->AppendAudit(Audit("After"));
  ASSERT_OK(audit);
  EXPECT_EQ(*audit, kGenesisRecords + 3);  // dup's upload, the held call, this one
  ASSERT_OK(v->ConsumeChallenge("c1", ChallengeKind::kAuthenticate, kNow));
  ASSERT_OK(v->PutPackage(MakePackage("x0", "p", 2, "<x0/>"), Audit("Upload", "x0")));
  ASSERT_OK(v->VerifyAuditChain());
  ASSERT_OK(v->IntegrityCheck());
}

TEST_F(SqliteVaultTest, ReadsProceedWhileTheWriterIsInsideABatch) {
  ScriptedHook hook;
  SqliteVaultOptions o;
  o.fault_hook = hook.Hook();
  auto v = OpenOrDie(Path(), std::move(o));
  ASSERT_TRUE(v);
  ASSERT_OK(v->UpsertPlatform(MakePlatform("p"), std::nullopt));
  ASSERT_OK(v->PutPackage(MakePackage("old", "p", 1, "<old/>"), Audit("Upload", "old")));

  // The writer stops inside its transaction, rows written, before COMMIT.
  hook.HoldCommit(hook.commits_seen() + 1);
  std::atomic<bool> returned{false};
  Result<PutOutcome> put = Error(Code::kInternal, "not run");
  std::thread writer([&] {
    put = v->PutPackage(MakePackage("new", "p", 1, "<new/>"), Audit("Upload", "new"));
    returned = true;
  });
  hook.WaitHeld();

  // Run the reads elsewhere so that a regression (reads queued behind the writer) fails
  // the test instead of hanging it; the wait is a hang guard, not a delay.
  auto reads = std::async(std::launch::async, [&] {
    std::vector<std::thread> readers;
    std::atomic<int> bad{0};
    for (int t = 0; t < 8; ++t) {  // more readers than read connections
      readers.emplace_back([&] {
        if (!v->GetPackage("old").has_value()) ++bad;
        // Uncommitted rows are invisible to readers.
        auto fresh = v->GetPackage("new");
        if (fresh.has_value() || fresh.error().code() != Code::kNotFound) ++bad;
        auto page = v->QueryPackages(PackageQuery{});
        if (!page.has_value() || page->packages.size() != 1) ++bad;
        if (!v->GetPlatform("p").has_value()) ++bad;
        if (!v->VerifyAuditChain().ok()) ++bad;
      });
    }
    for (auto& r : readers) r.join();
    return bad.load();
  });
  bool finished = reads.wait_for(std::chrono::seconds(60)) == std::future_status::ready;
  EXPECT_TRUE(finished) << "reads waited for the writer's transaction";
  // A call must not return before the COMMIT holding it has.
  EXPECT_FALSE(returned.load());
  hook.Release();
  writer.join();
  if (finished) {
    EXPECT_EQ(reads.get(), 0);
  }
  EXPECT_TRUE(returned.load());
  ExpectValue(put, PutOutcome::kStored);
  ASSERT_OK(v->GetPackage("new"));
}
TEST_F(SqliteVaultTest, WithoutGroupCommitEveryCallCommitsAlone) {
  SqliteVaultOptions o;
  o.group_commit = false;
  auto v = OpenOrDie(Path(), std::move(o));
  ASSERT_TRUE(v);
  constexpr int kThreads = 16;
  std::latch start(kThreads);
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      start.arrive_and_wait();
      for (int i = 0; i < 5; ++i) {
        if (!v->AppendAudit(Audit("Ping")).has_value()) ++failures;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
  SqliteVaultStats s = v->GetStats();
  EXPECT_EQ(s.calls, uint64_t{kThreads * 5});
  EXPECT_EQ(s.commits, s.calls);
  EXPECT_EQ(s.largest_batch, 1u);
  VaultStats neutral = v->Stats();
  EXPECT_EQ(neutral.batch_sizes[BatchSizeBucket(1)], s.calls);
  EXPECT_EQ(neutral.batches, s.calls);
  ASSERT_OK(v->VerifyAuditChain());
}

TEST_F(SqliteVaultTest, CrashInTheMiddleOfABatchLeavesNoneOfIt) {
  {
    auto v = OpenOrDie(Path());
    ASSERT_TRUE(v);
    ASSERT_OK(v->UpsertPlatform(MakePlatform("p"), std::nullopt));
    ASSERT_OK(v->PutPackage(MakePackage("before", "p", 2, "<a/>"), Audit("Upload")));
  }
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    // Child: no gtest assertions here, only exit codes. Three uploads share a batch; the
    // second one's first key row kills the process, after the first upload's rows.
    ScriptedHook hook;
    int keys = 0;
    SqliteVaultOptions o;
    FaultHook scripted = hook.Hook();
    o.fault_hook = [&](std::string_view step) {
      if (step == "package_key" && ++keys == 3) ::raise(SIGKILL);
      return scripted(step);
    };
    auto v = SqliteVault::Open(DbPath(dir_.path()), std::move(o));
    if (!v) ::_exit(2);
    SqliteVault& vault = **v;
    hook.HoldCommit(1);
    std::thread holder([&] { (void)vault.AppendAudit(Audit("Hold")); });
    hook.WaitHeld();
    std::vector<std::thread> uploads;
    for (int i = 0; i < 3; ++i) {
      uploads.emplace_back([&, i] {
        std::string id = "crash" + std::to_string(i);
        (void)vault.PutPackage(MakePackage(id, "p", 2, "<" + id + "/>"), Audit("Upload"));
      });
    }
    WaitQueued(vault, 3);
    hook.Release();
    holder.join();
    for (auto& t : uploads) t.join();
    ::_exit(3);  // the hook should have killed us
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFSIGNALED(status)) << "child exited with " << WEXITSTATUS(status);
  EXPECT_EQ(WTERMSIG(status), SIGKILL);

  auto v = OpenOrDie(Path());
  ASSERT_TRUE(v);
  for (int i = 0; i < 3; ++i)
    EXPECT_CODE(v->GetPackage("crash" + std::to_string(i)), Code::kNotFound);
  ASSERT_OK(v->GetPackage("before"));
  ASSERT_OK(v->IntegrityCheck());
  v.reset();
  RawDb raw(Path());
  EXPECT_EQ(raw.Count("SELECT count(*) FROM packages"), 1);
  EXPECT_EQ(raw.Count("SELECT count(*) FROM package_keys"), 2);
  EXPECT_EQ(raw.Count("SELECT count(*) FROM audit_log"),
            kGenesisRecords + 2);  // "before" and the held call
}

// Not a test: durable PutPackage throughput with and without group commit. Run by hand:
//   build/tests/storage/storage_test --gtest_also_run_disabled_tests
//       --gtest_filter='*BenchmarkDurablePutPackage*'
// TPMMA_BENCH_OPS (default 6000) uploads per run; 8 KB bodies; median of 3 runs. The
// file lives under $TMPDIR: put it on the disk you mean to measure (not tmpfs).
TEST_F(SqliteVaultTest, DISABLED_BenchmarkDurablePutPackage) {
  int total_ops = 6000;
  if (const char* e = std::getenv("TPMMA_BENCH_OPS")) total_ops = std::atoi(e);
  Bytes body(8192);
  for (size_t i = 0; i < body.size(); ++i) body[i] = static_cast<uint8_t>('a' + (i * 7919) % 26);
  auto run_once = [&](bool group_commit, int nthreads, int run) -> std::pair<double, double> {
    SqliteVaultOptions o;
    o.group_commit = group_commit;
    auto v = OpenOrDie(dir_.File("bench-" + std::to_string(group_commit) + "-" +
                                 std::to_string(nthreads) + "-" + std::to_string(run) + ".db"),
                       std::move(o));
    EXPECT_TRUE(v);
    if (!v) return {0, 0};
    EXPECT_TRUE(v->UpsertPlatform(MakePlatform("p"), std::nullopt).has_value());
    SqliteVaultStats before = v->GetStats();
    int per_thread = total_ops / nthreads;
    std::vector<std::vector<Package>> work(nthreads);
    for (int t = 0; t < nthreads; ++t) {
      for (int i = 0; i < per_thread; ++i) {
        Package p = MakePackage("t" + std::to_string(t) + "-" + std::to_string(i), "p", 2, "");
        p.body = body;
        p.body[0] = static_cast<uint8_t>(t);
        p.descriptor.sha256 = Sha256Of(p.body);
        work[t].push_back(std::move(p));
      }
    }
    std::atomic<int> failures{0};
    std::latch start(nthreads + 1);
    std::vector<std::thread> threads;
    for (int t = 0; t < nthreads; ++t) {
      threads.emplace_back([&, t] {
        start.arrive_and_wait();
        for (const Package& p : work[t]) {
          if (!v->PutPackage(p, Audit("Upload", p.descriptor.package_id)).has_value()) {
            ++failures;
          }
        }
      });
    }
    start.arrive_and_wait();
    auto t0 = std::chrono::steady_clock::now();
    for (auto& th : threads) th.join();
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    EXPECT_EQ(failures.load(), 0);
    SqliteVaultStats after = v->GetStats();
    double ops = static_cast<double>(per_thread) * nthreads;
    return {ops / secs, ops / static_cast<double>(after.commits - before.commits)};
  };
  std::printf("durable PutPackage, 8 KB bodies, %d uploads per run, median of 3\n", total_ops);
  std::printf("%8s %16s %12s %16s %12s %8s\n", "threads", "unbatched ops/s", "calls/commit",
              "batched ops/s", "calls/commit", "speedup");
  for (int nthreads : {8, 32, 64}) {
    double median[2][2];
    for (bool group_commit : {false, true}) {
      std::vector<std::pair<double, double>> runs;
      for (int run = 0; run < 3; ++run) runs.push_back(run_once(group_commit, nthreads, run));
      std::sort(runs.begin(), runs.end());
      median[group_commit][0] = runs[1].first;
      median[group_commit][1] = runs[1].second;
    }
    std::printf("%8d %16.0f %12.1f %16.0f %12.1f %7.1fx\n", nthreads, median[0][0], median[0][1],
                median[1][0], median[1][1], median[1][0] / median[0][0]);
  }
}

}  // namespace
}  // namespace tpmma::storage::testing
