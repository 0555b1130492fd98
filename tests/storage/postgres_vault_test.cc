// SPDX-License-Identifier: GPL-2.0-or-later
// PostgresVault: the shared conformance suite on a real PostgreSQL (a throw-away cluster,
// tests/support/postgres.h, one per test binary and one database per vault directory), plus
// what only a shared database has: several instances racing for a challenge, an approval and
// the audit chain's head; the schema version; the append-only guards inside PostgreSQL;
// the password kept out of every message.
#include <atomic>
#include <chrono>
#include <functional>
#include <latch>
#include <map>
#include <memory>
#include <set>
#include <thread>
#include <vector>

#include <libpq-fe.h>
#include <openssl/evp.h>

#include "storage/postgres_vault.h"
#include "tests/storage/vault_test.h"
#include "tests/support/postgres.h"

namespace tpmma::storage::testing {
namespace {

using tpmma::testing::PostgresCluster;

constexpr int64_t kNow = 1'800'000'000;

// A vault directory of the conformance suite names its database.
std::string DatabaseFor(const std::string& dir) {
  return "v_" + HexEncode(View(std::to_string(std::hash<std::string>{}(dir)))).substr(0, 24);
}

Result<std::unique_ptr<PostgresVault>> OpenDatabase(const std::string& db,
                                                    PostgresVaultOptions options = {}) {
  TPMMA_ASSIGN_OR_RETURN(PostgresCluster * cluster, PostgresCluster::Shared());
  if (cluster == nullptr) return Error(Code::kUnavailable, PostgresCluster::SkipReason());
  TPMMA_RETURN_IF_ERROR(cluster->CreateDatabase(db));
  return PostgresVault::Open(cluster->ConnInfo(db), options);
}

VaultBackend Backend(std::string name, PostgresVaultOptions options) {
  return VaultBackend{std::move(name),
                      [options](const std::string& dir) -> Result<std::unique_ptr<Vault>> {
                        TPMMA_ASSIGN_OR_RETURN(auto v, OpenDatabase(DatabaseFor(dir), options));
                        return std::unique_ptr<Vault>(std::move(v));
                      }};
}

std::vector<VaultBackend> Backends() {
  if (!PostgresCluster::SkipReason().empty()) return {};
  // One connection: no call may hold one lease while it waits for another.
  PostgresVaultOptions one;
  one.connections = 1;
  return {Backend("Postgres", {}), Backend("PostgresOneConnection", one)};
}

// Without PostgreSQL installed the suite has no instance (and PostgresVaultTest skips).
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(VaultTest);
INSTANTIATE_TEST_SUITE_P(Postgres, VaultTest, ::testing::ValuesIn(Backends()), BackendName);

AuditEvent Audit(std::string action, std::string object = "obj") {
  return AuditEvent{kNow, "system", std::move(action), std::move(object), "ok", "test"};
}

Bytes Sha(std::string_view s) {
  Bytes out(32);
  unsigned int len = 0;
  EVP_Digest(s.data(), s.size(), out.data(), &len, EVP_sha256(), nullptr);
  return out;
}

Platform MakePlatform(const std::string& id) {
  Platform p;
  p.id = id;
  p.ek_public = ToBytes("ek-" + id);
  p.ek_certificate = ToBytes("cert-" + id);
  p.ak_public = ToBytes("ak-" + id);
  p.ak_name = ToBytes("akname-" + id);
  p.created_at = kNow;
  p.last_seen_at = kNow;
  return p;
}

Challenge MakeChallenge(const std::string& id, const std::string& platform) {
  return Challenge{
      id,       ChallengeKind::kAuthenticate, platform, Sha("s"), ToBytes("n"), ToBytes("ad"), kNow,
      kNow + 60};
}

// Authenticate's Complete for `platform` on `challenge`, with its own session token.
AuthCompletion Completion(const std::string& challenge, const std::string& platform,
                          const Bytes& ek_key_id, const std::string& token) {
  AuthCompletion a;
  a.challenge_id = challenge;
  a.proof_hash = Sha("s");
  a.now = kNow;
  a.platform = MakePlatform(platform);
  a.platform.ek_key_id = ek_key_id;
  a.session = Session{Sha(token), platform, kNow, kNow + 300};
  a.audit = Audit("Authenticate", platform);
  return a;
}

class PostgresVaultTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (std::string why = PostgresCluster::SkipReason(); !why.empty()) GTEST_SKIP() << why;
    auto c = PostgresCluster::Shared();
    ASSERT_TRUE(c.has_value()) << c.error().ToString();
    cluster_ = *c;
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    db_ = "t_";
    for (char ch : std::string(info->name())) {
      db_ += static_cast<char>((ch >= 'A' && ch <= 'Z') ? ch - 'A' + 'a' : ch);
    }
    db_ = db_.substr(0, 60);
    ASSERT_OK(cluster_->DropDatabase(db_));  // --gtest_repeat runs a test again
    ASSERT_OK(cluster_->DropDatabase(db_ + "_b"));
    ASSERT_OK(cluster_->CreateDatabase(db_));
  }

  std::unique_ptr<PostgresVault> OpenOrDie(PostgresVaultOptions o = {}) {
    auto v = PostgresVault::Open(cluster_->ConnInfo(db_), o);
    EXPECT_TRUE(v.has_value()) << v.error().ToString();
    return v ? std::move(*v) : nullptr;
  }
  std::string Sql(const std::string& sql) {
    Status s = cluster_->Exec(db_, sql);
    return s.ok() ? "" : s.message();
  }
  // How many other connections the test database has (terminated ones count until gone).
  int OtherBackends() {
    auto n = cluster_->QueryValue(db_,
                                  "SELECT count(*) FROM pg_stat_activity WHERE datname = "
                                  "current_database() AND pid <> pg_backend_pid()");
    return n ? std::stoi(*n) : -1;
  }
  void ExpectCorruption(Vault& v, std::string_view finding) {
    auto r = v.CheckAuditChain();
    ASSERT_FALSE(r.has_value()) << "expected: " << finding;
    EXPECT_EQ(r.error().code(), Code::kCorruption);
    EXPECT_NE(r.error().message().find(finding), std::string::npos) << r.error().message();
  }

  // Runs `f(instance, thread)` on kThreads threads of each of two instances at once.
  void OnTwoInstances(int threads, const std::function<void(Vault&, int)>& f) {
    auto a = OpenOrDie();
    auto b = OpenOrDie();
    ASSERT_TRUE(a && b);
    Vault* vaults[] = {a.get(), b.get()};
    std::latch start(2 * threads);
    std::vector<std::thread> all;
    for (int i = 0; i < 2 * threads; ++i) {
      all.emplace_back([&, i] {
        start.arrive_and_wait();
        f(*vaults[i % 2], i);
      });
    }
    for (auto& t : all) t.join();
  }

  PostgresCluster* cluster_ = nullptr;
  std::string db_;
};

TEST(PostgresCluster, IsInstalledOrTheSuiteSaysWhyNot) {
  if (std::string why = PostgresCluster::SkipReason(); !why.empty()) GTEST_SKIP() << why;
  ASSERT_OK(PostgresCluster::Shared());
}

TEST_F(PostgresVaultTest, ANewerSchemaIsRefused) {
  OpenOrDie().reset();
  ASSERT_EQ(Sql("UPDATE schema_version SET version = 99"), "");
  auto v = PostgresVault::Open(cluster_->ConnInfo(db_));
  ASSERT_FALSE(v.has_value());
  EXPECT_EQ(v.error().code(), Code::kVersionTooNew);
  EXPECT_NE(v.error().message().find("99"), std::string::npos) << v.error().message();
  ASSERT_EQ(
      Sql("UPDATE schema_version SET version = " + std::to_string(PostgresVault::SchemaVersion())),
      "");
  ASSERT_TRUE(OpenOrDie());
}

TEST_F(PostgresVaultTest, AnotherProgramsDatabaseIsRefused) {
  ASSERT_EQ(Sql("CREATE TABLE customers (id int)"), "");
  auto v = PostgresVault::Open(cluster_->ConnInfo(db_));
  ASSERT_FALSE(v.has_value());
  EXPECT_EQ(v.error().code(), Code::kInvalidArgument) << v.error().ToString();
}

TEST_F(PostgresVaultTest, ARoleThatMayNotCreateTheSchemaIsTold) {
  // PostgreSQL 15 no longer lets every role create tables in schema public.
  Status role = cluster_->Exec("postgres", "CREATE ROLE tpmma_no_create LOGIN");
  ASSERT_TRUE(role.ok() || role.message().find("already exists") != std::string::npos)
      << role.ToString();
  auto v = PostgresVault::Open(cluster_->ConnInfo(db_) + " user=tpmma_no_create");
  ASSERT_FALSE(v.has_value());
  EXPECT_EQ(v.error().code(), Code::kPermissionDenied) << v.error().ToString();
}

TEST_F(PostgresVaultTest, InstancesOpeningTogetherMigrateOnce) {
  std::vector<std::unique_ptr<PostgresVault>> vaults(4);
  std::vector<std::thread> threads;
  for (auto& v : vaults) threads.emplace_back([&] { v = OpenOrDie(); });
  for (auto& t : threads) t.join();
  for (auto& v : vaults) ASSERT_TRUE(v);
  auto report = vaults[0]->CheckAuditChain();
  ASSERT_TRUE(report.has_value()) << report.error().ToString();
  EXPECT_EQ(report->last_seq, 1);  // one genesis record
}

TEST_F(PostgresVaultTest, TheConnectionPasswordIsNeverInAnError) {
  const std::string secret = "s3cret-Pa55word";
  for (const std::string& conninfo :
       {"host=/nonexistent-socket-dir dbname=x user=u password=" + secret,
        "postgresql://u:" + secret + "@/x?host=/nonexistent-socket-dir",
        "password=" + secret + " this-does-not-parse",
        cluster_->ConnInfo(db_) + " user=nobody_here password=" + secret}) {
    auto v = PostgresVault::Open(conninfo);
    ASSERT_FALSE(v.has_value());
    EXPECT_EQ(v.error().message().find(secret), std::string::npos) << v.error().message();
  }
}

TEST_F(PostgresVaultTest, ALostConnectionIsMadeAgain) {
  PostgresVaultOptions o;
  o.connections = 1;
  auto v = OpenOrDie(o);
  ASSERT_TRUE(v);
  ASSERT_OK(v->AppendAudit(Audit("Before")));
  // What a database restart or a failover does to an instance's idle connections; the
  // next call notices, connects again and goes through.
  auto terminate = [&] {
    ASSERT_EQ(Sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '" + db_ +
                  "' AND pid <> pg_backend_pid()"),
              "");
    for (int i = 0; OtherBackends() != 0; ++i) {
      ASSERT_LT(i, 600) << "backends were not terminated";
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  };
  ASSERT_NO_FATAL_FAILURE(terminate());
  ASSERT_OK(v->AppendAudit(Audit("AfterRestart")));  // a write transaction
  ASSERT_NO_FATAL_FAILURE(terminate());
  ASSERT_OK(v->GetAuditRecord(2));  // a single-statement read
  ASSERT_NO_FATAL_FAILURE(terminate());
  ASSERT_OK(v->VerifyAuditChain());  // a snapshot
  EXPECT_EQ(v->GetAuditHead()->seq, 3);
}

TEST_F(PostgresVaultTest, TwoInstancesConsumingOneChallengeHaveOneWinner) {
  auto setup = OpenOrDie();
  ASSERT_TRUE(setup);
  constexpr int kThreads = 8;
  for (int round = 0; round < 10; ++round) {
    const std::string id = "race-" + std::to_string(round);
    Challenge ch{
        id,       ChallengeKind::kAuthenticate, "p", Sha("s"), ToBytes("n"), ToBytes("ad"), kNow,
        kNow + 60};
    ASSERT_OK(setup->CreateChallenge(ch, std::nullopt));
    std::atomic<int> wins{0}, replays{0}, other{0};
    OnTwoInstances(kThreads, [&](Vault& v, int) {
      auto r = v.ConsumeChallenge(id, ChallengeKind::kAuthenticate, kNow);
      if (r) {
        ++wins;
      } else if (r.error().code() == Code::kUnauthenticated) {
        ++replays;
      } else {
        ++other;
        ADD_FAILURE() << r.error().ToString();
      }
    });
    EXPECT_EQ(wins.load(), 1) << "round " << round;
    EXPECT_EQ(replays.load(), 2 * kThreads - 1);
    EXPECT_EQ(other.load(), 0);
  }
}

TEST_F(PostgresVaultTest, TwoInstancesUsingOneApprovalUseItOnce) {
  auto setup = OpenOrDie();
  ASSERT_TRUE(setup);
  ASSERT_OK(setup->UpsertPlatform(MakePlatform("old"), std::nullopt));
  ASSERT_OK(setup->UpsertPlatform(MakePlatform("new"), std::nullopt));
  constexpr int kThreads = 8;
  for (int round = 0; round < 10; ++round) {
    ApprovalRequest req{"old", "new", true, {}, "swap", "alice", kNow, kNow + 100, false};
    auto a = setup->CreateApproval(req, Audit("ApproveRestore"));
    ASSERT_OK(a);
    std::atomic<int> used{0}, refused{0};
    OnTwoInstances(kThreads, [&](Vault& v, int i) {
      Status s = v.MarkApprovalUsed(a->id, kNow, Audit("Download", std::to_string(i)));
      if (s.ok()) {
        ++used;
      } else if (s.code() == Code::kConflict) {
        ++refused;
      } else {
        ADD_FAILURE() << s.ToString();
      }
    });
    EXPECT_EQ(used.load(), 1) << "round " << round;
    EXPECT_EQ(refused.load(), 2 * kThreads - 1);
    auto after = setup->GetApproval(a->id);
    ASSERT_OK(after);
    EXPECT_EQ(after->state, ApprovalState::kUsed);
  }
  ASSERT_OK(setup->VerifyAuditChain());
}

TEST_F(PostgresVaultTest, TwoInstancesCompletingOneAuthenticationMakeOneSession) {
  auto setup = OpenOrDie();
  ASSERT_TRUE(setup);
  constexpr int kThreads = 8;
  for (int round = 0; round < 5; ++round) {
    const std::string id = "auth-" + std::to_string(round);
    ASSERT_OK(setup->CreateChallenge(MakeChallenge(id, "p"), std::nullopt));
    std::atomic<int> wins{0}, replays{0};
    OnTwoInstances(kThreads, [&](Vault& v, int i) {
      auto r = v.CompleteAuthentication(
          Completion(id, "p", Sha("ek"), id + "-token-" + std::to_string(i)));
      if (r) {
        ++wins;
      } else if (r.error().code() == Code::kUnauthenticated) {
        ++replays;
      } else {
        ADD_FAILURE() << r.error().ToString();
      }
    });
    EXPECT_EQ(wins.load(), 1) << "round " << round;
    EXPECT_EQ(replays.load(), 2 * kThreads - 1);
    int sessions = 0;
    for (int i = 0; i < 2 * kThreads; ++i) {
      sessions += setup->GetSession(Sha(id + "-token-" + std::to_string(i)), kNow) ? 1 : 0;
    }
    EXPECT_EQ(sessions, 1) << "round " << round;
  }
  ASSERT_OK(setup->VerifyAuditChain());
}

TEST_F(PostgresVaultTest, OneEkKeyEnrollingAsTwoPlatformsAtOnceGetsOne) {
  auto setup = OpenOrDie();
  ASSERT_TRUE(setup);
  constexpr int kThreads = 4;
  for (int round = 0; round < 5; ++round) {
    // One TPM under 2 * kThreads EK publics (platform ids), all at once, on two instances.
    const Bytes key = Sha("ek key " + std::to_string(round));
    auto name = [&](int i) { return "r" + std::to_string(round) + "-p" + std::to_string(i); };
    for (int i = 0; i < 2 * kThreads; ++i) {
      ASSERT_OK(setup->CreateChallenge(MakeChallenge("c-" + name(i), name(i)), std::nullopt));
    }
    std::atomic<int> enrolled{0}, refused{0};
    OnTwoInstances(kThreads, [&](Vault& v, int i) {
      auto r = v.CompleteAuthentication(Completion("c-" + name(i), name(i), key, name(i)));
      if (r) {
        ++enrolled;
      } else if (r.error().code() == Code::kPermissionDenied) {
        ++refused;
      } else {
        ADD_FAILURE() << r.error().ToString();
      }
    });
    EXPECT_EQ(enrolled.load(), 1) << "round " << round;
    EXPECT_EQ(refused.load(), 2 * kThreads - 1);
  }
}

// Stats() in the meaning SQLite's has (ma-server's /metrics): calls made one after another
// are batches of one; a refused write is a call but no commit; reads are neither.
TEST_F(PostgresVaultTest, StatsCountSequentialWriteCallsAsBatchesOfOne) {
  auto v = OpenOrDie();
  ASSERT_TRUE(v);
  VaultStats before = v->Stats();
  ASSERT_OK(v->UpsertPlatform(MakePlatform("p"), std::nullopt));
  ASSERT_OK(v->AppendAudit(Audit("Ping")));
  EXPECT_EQ(v->RevokePlatform("absent", Audit("RevokePlatform", "absent")).code(), Code::kNotFound);
  ASSERT_OK(v->GetPlatform("p"));
  VaultStats s = v->Stats();
  EXPECT_EQ(s.calls - before.calls, 3u);
  EXPECT_EQ(s.commits - before.commits, 2u);
  EXPECT_EQ(s.largest_batch, 1u);
  EXPECT_EQ(s.batches, s.calls);
  EXPECT_EQ(s.batch_calls, s.calls);
  EXPECT_EQ(s.batch_sizes[BatchSizeBucket(1)], s.calls);
  EXPECT_EQ(s.queued, 0u);
  EXPECT_EQ(s.deferred_lost, 0u);
}

// Group commit (storage/postgres/group_commit.h): while one transaction waits for the audit
// head (held here by another session, as another instance's batch would), the calls queued
// behind it commit together in the next one, each with its own outcome: a refusal and a
// statement PostgreSQL rejects are rolled back alone.
TEST_F(PostgresVaultTest, WritesQueuedBehindTheAuditHeadCommitTogether) {
  auto v = OpenOrDie();
  ASSERT_TRUE(v);
  std::unique_ptr<PGconn, decltype(&PQfinish)> other(PQconnectdb(cluster_->ConnInfo(db_).c_str()),
                                                     &PQfinish);
  ASSERT_EQ(PQstatus(other.get()), CONNECTION_OK) << PQerrorMessage(other.get());
  auto exec = [&](const char* sql) {
    std::unique_ptr<PGresult, decltype(&PQclear)> r(PQexec(other.get(), sql), &PQclear);
    return PQresultStatus(r.get()) == PGRES_COMMAND_OK ||
           PQresultStatus(r.get()) == PGRES_TUPLES_OK;
  };
  ASSERT_OK(v->UpsertPlatform(MakePlatform("p"), std::nullopt));
  ASSERT_OK(v->CreateSession(Session{Sha("t5"), "p", kNow, kNow + 300}, std::nullopt));
  ASSERT_TRUE(exec("BEGIN"));
  ASSERT_TRUE(exec("SELECT seq FROM audit_head FOR UPDATE"));
  const VaultStats before = v->Stats();
  auto queued_at_least = [&](uint64_t n) {
    for (int i = 0; v->Stats().queued < n; ++i) {
      if (i == 2000) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return true;
  };
  constexpr int kCalls = 12;
  std::vector<Status> results(kCalls);
  auto call = [&](int i) {
    if (i % 4 == 3) {
      results[i] = v->RevokePlatform("absent", Audit("RevokePlatform", "absent"));
    } else if (i == 5) {
      // A token hash already taken: the INSERT's unique violation aborts the transaction up to
      // this call's savepoint.
      results[i] = v->CreateSession(Session{Sha("t5"), "p", kNow, kNow + 300}, Audit("S"));
    } else {
      results[i] = ::tpmma::internal::AsStatus(v->AppendAudit(Audit("Queued", std::to_string(i))));
    }
  };
  std::vector<std::thread> threads;
  threads.emplace_back(call, 0);  // leads alone, and waits for the head
  const bool leading = queued_at_least(1);
  for (int i = 1; i < kCalls; ++i) threads.emplace_back(call, i);
  const bool all_queued = queued_at_least(kCalls);
  const uint64_t queued = v->Stats().queued;
  ASSERT_TRUE(exec("COMMIT"));
  for (auto& t : threads) t.join();
  ASSERT_TRUE(leading && all_queued) << queued << " queued";

  for (int i = 0; i < kCalls; ++i) {
    if (i % 4 == 3) {
      EXPECT_EQ(results[i].code(), Code::kNotFound) << i << ": " << results[i].ToString();
    } else if (i == 5) {
      EXPECT_EQ(results[i].code(), Code::kAlreadyExists) << results[i].ToString();
    } else {
      EXPECT_TRUE(results[i].ok()) << i << ": " << results[i].ToString();
    }
  }
  const VaultStats s = v->Stats();
  EXPECT_EQ(s.calls - before.calls, uint64_t{kCalls});
  EXPECT_EQ(s.batches - before.batches, 2u);
  EXPECT_EQ(s.commits - before.commits, 2u);
  EXPECT_EQ(s.largest_batch, uint64_t{kCalls - 1});
  EXPECT_EQ(s.queued, 0u);
  AuditFilter f;
  f.action = "Queued";
  f.page_size = 100;
  auto page = v->ListAudit(f);
  ASSERT_OK(page);
  EXPECT_EQ(page->records.size(), size_t{kCalls - 3 - 1});
  ASSERT_OK(v->VerifyAuditChain());
}

TEST_F(PostgresVaultTest, TwoInstancesStoringOnePackageStoreItOnce) {
  auto setup = OpenOrDie();
  ASSERT_TRUE(setup);
  ASSERT_OK(setup->UpsertPlatform(MakePlatform("p"), std::nullopt));
  constexpr int kThreads = 8;
  for (int round = 0; round < 5; ++round) {
    const std::string id = "pkg-" + std::to_string(round);
    std::atomic<int> stored{0}, already{0}, conflicts{0};
    OnTwoInstances(kThreads, [&](Vault& v, int i) {
      // Half the callers upload another body under the same id.
      const std::string body = (i % 4 == 3) ? "<other/>" : "<same/>";
      Package pkg;
      pkg.descriptor.package_id = id;
      pkg.descriptor.source_platform_id = "p";
      pkg.descriptor.format_version = "1.0";
      pkg.descriptor.keys = {{id + "-k", "label", "sign"}};
      pkg.body = ToBytes(body);
      pkg.descriptor.sha256 = Sha(body);
      auto r = v.PutPackage(pkg, Audit("Upload", id));
      if (r && *r == PutOutcome::kStored) {
        ++stored;
      } else if (r) {
        ++already;
      } else if (r.error().code() == Code::kConflict) {
        ++conflicts;
      } else {
        ADD_FAILURE() << r.error().ToString();
      }
    });
    EXPECT_EQ(stored.load(), 1) << "round " << round;
    EXPECT_EQ(stored + already + conflicts, 2 * kThreads);
    auto p = setup->GetPackage(id);
    ASSERT_OK(p);
    EXPECT_EQ(p->descriptor.keys.size(), 1u);
    // Whichever body won, each caller was told the truth about its own.
    const bool same_won = p->body == ToBytes("<same/>");
    EXPECT_EQ(conflicts.load(), same_won ? kThreads / 2 : 2 * kThreads - kThreads / 2);
  }
  ASSERT_OK(setup->VerifyAuditChain());
}

TEST_F(PostgresVaultTest, ConcurrentAppendsFromTwoInstancesKeepOneChain) {
  constexpr int kThreads = 4;
  constexpr int kAppends = 150;
  std::mutex mu;
  std::set<int64_t> seqs;
  std::atomic<int> failures{0};
  OnTwoInstances(kThreads, [&](Vault& v, int t) {
    for (int i = 0; i < kAppends; ++i) {
      auto seq = v.AppendAudit(Audit("Ping", std::to_string(t) + "-" + std::to_string(i)));
      if (!seq) {
        ++failures;
        continue;
      }
      std::lock_guard lock(mu);
      EXPECT_TRUE(seqs.insert(*seq).second) << "seq " << *seq << " handed out twice";
    }
  });
  EXPECT_EQ(failures.load(), 0);
  constexpr int kTotal = 2 * kThreads * kAppends;
  EXPECT_EQ(seqs.size(), size_t{kTotal});
  auto v = OpenOrDie();
  auto report = v->CheckAuditChain();
  ASSERT_TRUE(report.has_value()) << report.error().ToString();
  EXPECT_EQ(report->last_seq, kGenesisRecords + kTotal);
  // Every record exactly once, in one linear chain.
  std::map<std::string, int> seen;
  AuditFilter f;
  f.action = "Ping";
  f.page_size = 1000;
  while (true) {
    auto page = v->ListAudit(f);
    ASSERT_OK(page);
    for (const AuditRecord& r : page->records) ++seen[r.event.object];
    if (page->next_page_token.empty()) break;
    f.page_token = page->next_page_token;
  }
  EXPECT_EQ(seen.size(), size_t{kTotal});
  for (const auto& [object, n] : seen) EXPECT_EQ(n, 1) << object;
  auto head = v->GetAuditHead();
  ASSERT_OK(head);
  EXPECT_EQ(head->seq, kGenesisRecords + kTotal);
}

TEST_F(PostgresVaultTest, TheAuditLogIsAppendOnlyInsidePostgres) {
  auto v = OpenOrDie();
  ASSERT_TRUE(v);
  for (int i = 0; i < 3; ++i) ASSERT_OK(v->AppendAudit(Audit("Ping")));
  EXPECT_NE(Sql("UPDATE audit_log SET detail = 'edited' WHERE seq = 2").find("append-only"),
            std::string::npos);
  EXPECT_NE(Sql("DELETE FROM audit_log WHERE seq = 2").find("append-only"), std::string::npos);
  EXPECT_NE(Sql("TRUNCATE audit_log").find("append-only"), std::string::npos);
  EXPECT_NE(Sql("UPDATE audit_head SET seq = 1").find("audit_head"), std::string::npos);
  EXPECT_NE(Sql("DELETE FROM vault_meta").find("write-once"), std::string::npos);
  ASSERT_OK(v->IntegrityCheck());
  // A guard switched off, or its function replaced, is a finding.
  ASSERT_EQ(Sql("ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_update"), "");
  ExpectCorruption(*v, "audit_log_no_update was changed or disabled");
  ASSERT_EQ(Sql("ALTER TABLE audit_log ENABLE TRIGGER audit_log_no_update"), "");
  ASSERT_OK(v->VerifyAuditChain());
  ASSERT_EQ(Sql("CREATE OR REPLACE FUNCTION tpmma_audit_log_delete() RETURNS trigger "
                "LANGUAGE plpgsql AS $$ BEGIN RETURN OLD; END $$"),
            "");
  ExpectCorruption(*v, "tpmma_audit_log_delete was changed");
}

TEST_F(PostgresVaultTest, AnEditedRecordBreaksTheChain) {
  auto v = OpenOrDie();
  ASSERT_TRUE(v);
  for (int i = 0; i < 4; ++i) ASSERT_OK(v->AppendAudit(Audit("Ping")));
  ASSERT_EQ(Sql("ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_update; "
                "UPDATE audit_log SET detail = 'edited' WHERE seq = 3; "
                "ALTER TABLE audit_log ENABLE TRIGGER audit_log_no_update"),
            "");
  ExpectCorruption(*v, "broken at seq 3");
  EXPECT_EQ(v->IntegrityCheck().code(), Code::kCorruption);
}

TEST_F(PostgresVaultTest, ArchivingRemovesOldRecordsAndTheChainStillVerifies) {
  auto v = OpenOrDie();
  ASSERT_TRUE(v);
  for (int i = 0; i < 9; ++i) ASSERT_OK(v->AppendAudit(Audit("Ping")));  // seq 1 .. 10
  auto seq5 = v->GetAuditRecord(5);
  ASSERT_OK(seq5);
  const Bytes digest(32, 0xab);
  AuditEvent archive{kNow, "system", std::string(kAuditArchiveAction), "5", "ok", "test"};
  ASSERT_OK(v->ArchiveAudit(5, digest, archive));
  auto report = v->CheckAuditChain();
  ASSERT_TRUE(report.has_value()) << report.error().ToString();
  EXPECT_EQ(report->archived_through, 5);
  EXPECT_EQ(report->first_seq, 6);
  EXPECT_EQ(report->last_seq, 11);
  EXPECT_EQ(report->genesis_seq, 0);
  EXPECT_EQ(v->GetAuditRecord(3).error().code(), Code::kNotFound);
  auto segments = v->ListAuditSegments();
  ASSERT_OK(segments);
  ASSERT_EQ(segments->size(), 1u);
  EXPECT_EQ((*segments)[0].last_hash, seq5->hash);
  AuditEvent at_head = archive;
  at_head.object = "11";
  EXPECT_EQ(v->ArchiveAudit(11, digest, at_head).code(), Code::kInvalidArgument);
  AuditEvent again = archive;
  again.object = "4";
  EXPECT_EQ(v->ArchiveAudit(4, digest, again).code(), Code::kInvalidArgument);
  // Records outside a segment stay undeletable; a segment forged by hand is a finding.
  EXPECT_NE(Sql("DELETE FROM audit_log WHERE seq = 7").find("append-only"), std::string::npos);
  ASSERT_EQ(Sql("INSERT INTO audit_segments SELECT seq, 6, hash, 0, hash FROM audit_log "
                "WHERE seq = 7; DELETE FROM audit_log WHERE seq <= 7"),
            "");
  ExpectCorruption(*v, "no Audit.Archive record");
}

TEST_F(PostgresVaultTest, ANewVaultStartsWithItsGenesisRecordAndItsOwnIdentity) {
  auto v = OpenOrDie();
  ASSERT_TRUE(v);
  auto g = v->GetAuditRecord(1);
  ASSERT_OK(g);
  EXPECT_EQ(g->event.action, kAuditGenesisAction);
  auto head = v->GetAuditHead();
  ASSERT_OK(head);
  EXPECT_EQ(head->seq, 1);
  EXPECT_EQ(g->event.object, HexEncode(head->vault_id));
  v.reset();
  v = OpenOrDie();  // a reopen writes no second genesis
  EXPECT_EQ(v->GetAuditHead()->seq, 1);
  ASSERT_OK(cluster_->CreateDatabase(db_ + "_b"));
  auto w = PostgresVault::Open(cluster_->ConnInfo(db_ + "_b"));
  ASSERT_OK(w);
  EXPECT_NE((*w)->GetAuditHead()->vault_id, head->vault_id);
}

}  // namespace
}  // namespace tpmma::storage::testing
