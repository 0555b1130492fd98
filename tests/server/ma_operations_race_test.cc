// SPDX-License-Identifier: GPL-2.0-or-later
// Issue #14, the races: two MA instances (each its own MaOperations, MA key custody and
// PostgresVault with its own connections, as two ma-server processes have) on one real
// PostgreSQL, with many threads on each at once. The vault's own race tests
// (tests/storage/postgres_vault_test.cc) cover the SQL; these cover what an instance
// keeps in memory on top of it (the Authenticator's pending Begins, the download nonces):
//   - one Authenticate Complete sent by every thread to both instances: one session;
//   - one single-use approval, a Download under it from every thread: one restore;
//   - every call's audit record, written by both instances at once: one chain.
#include <latch>
#include <thread>

#include "storage/postgres_vault.h"
#include "tests/server/ma_operations_fixture.h"
#include "tests/support/postgres.h"

namespace tpmma::server {
namespace {

constexpr int kThreadsPerInstance = 8;

class MaOperationsRaceTest : public MaOperationsTest {
 protected:
  void SetUp() override {
    MaOperationsTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    if (std::string why = testing::PostgresCluster::SkipReason(); !why.empty()) {
      GTEST_SKIP() << why;
    }
    auto cluster = testing::PostgresCluster::Shared();
    ASSERT_TRUE(cluster.has_value()) << cluster.error().ToString();
    pg_ = *cluster;
    db_ = "race_" + std::string(::testing::UnitTest::GetInstance()->current_test_info()->name());
    for (char& ch : db_) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    ASSERT_OK(pg_->DropDatabase(db_));
    ASSERT_OK(pg_->CreateDatabase(db_));
    for (Instance& in : instances_) {
      auto vault = storage::PostgresVault::Open(pg_->ConnInfo(db_));
      ASSERT_OK(vault);
      in.vault = std::move(*vault);
      auto custody = LoadSoftwareMaKey("ma-test", ma_.key, ma_.cert, &env_);
      ASSERT_OK(custody);
      in.custody = std::move(*custody);
    }
  }

  // Both instances' operations, made from `cfg`.
  void MakeInstances(const Config& cfg) {
    for (Instance& in : instances_) {
      auto ops = MakeOps(cfg, &env_, in.vault.get(), in.custody.get());
      ASSERT_OK(ops);
      in.ops = std::move(*ops);
    }
  }

  // f(instance, thread) on kThreadsPerInstance threads of each instance, started together;
  // thread i calls instance i % 2.
  void OnBothInstances(const std::function<void(MaOperations*, int)>& f) {
    std::latch start(2 * kThreadsPerInstance);
    std::vector<std::thread> threads;
    for (int i = 0; i < 2 * kThreadsPerInstance; ++i) {
      threads.emplace_back([&, i] {
        start.arrive_and_wait();
        f(instances_[i % 2].ops.get(), i);
      });
    }
    for (auto& t : threads) t.join();
  }

  int64_t Count(const std::string& sql) {
    auto v = pg_->QueryValue(db_, sql);
    EXPECT_TRUE(v.has_value()) << v.error().ToString();
    return v ? std::stoll(*v) : -1;
  }

  struct Instance {
    std::unique_ptr<storage::PostgresVault> vault;
    std::unique_ptr<MaKeyCustody> custody;
    std::unique_ptr<MaOperations> ops;
  };
  Instance instances_[2];
  testing::PostgresCluster* pg_ = nullptr;
  std::string db_;
};

TEST_F(MaOperationsRaceTest, OneCompleteSentToBothInstancesMakesOneSession) {
  ASSERT_NO_FATAL_FAILURE(MakeInstances(cfg_));
  Client c1(instances_[0].ops.get());
  Ak a;
  ASSERT_NO_FATAL_FAILURE(MakeAk(&a));
  Begun b;
  ASSERT_TRUE(Begin(c1, *a.ek, a.pub, &b).ok());
  auto secret = tpm_->ActivateCredential(*a.ak, *a.ek, b.blob, b.secret);
  ASSERT_OK(secret);
  const Bytes proof = Proof(*secret, b.challenge_id);
  std::atomic<int> won{0}, refused{0};
  std::vector<std::string> other_errors(2 * kThreadsPerInstance);
  OnBothInstances([&](MaOperations* ops, int i) {
    Client c(ops);
    std::string token, platform;
    Status s = Complete(c, b.challenge_id, proof, nullptr, nullptr, &token, &platform);
    if (s.ok()) {
      ++won;
    } else if (s.code() == Code::kUnauthenticated) {
      ++refused;
    } else {
      other_errors[i] = s.ToString();
    }
  });
  for (const std::string& e : other_errors) EXPECT_EQ(e, "");
  EXPECT_EQ(won.load(), 1);
  EXPECT_EQ(refused.load(), 2 * kThreadsPerInstance - 1);
  EXPECT_EQ(Count("SELECT count(*) FROM sessions"), 1);
  EXPECT_EQ(Count("SELECT count(*) FROM audit_log WHERE action = 'Authenticate.Complete' "
                  "AND outcome = 'ok'"),
            1);
  Status chain = instances_[1].vault->VerifyAuditChain();
  EXPECT_TRUE(chain.ok()) << chain.ToString();
}

TEST_F(MaOperationsRaceTest, OneSingleUseApprovalRestoresOnceAcrossInstances) {
  std::string why;
  testing::Swtpm* tb = testing::SharedSwtpm(1, &why);
  ASSERT_NE(tb, nullptr) << why;
  Config cfg = cfg_;
  cfg.ek_roots = {t_->RootCaCertPath(), tb->RootCaCertPath()};
  ASSERT_TRUE(cfg.approvals_single_use);
  ASSERT_NO_FATAL_FAILURE(MakeInstances(cfg));
  Client c1(instances_[0].ops.get()), c2(instances_[1].ops.get());
  Plat a, b;
  ASSERT_NO_FATAL_FAILURE(OpenPlat(t_, &a));
  ASSERT_NO_FATAL_FAILURE(OpenPlat(tb, &b));
  ASSERT_NO_FATAL_FAILURE(AuthenticatePlat(c1, a, true));
  ASSERT_NO_FATAL_FAILURE(AuthenticatePlat(c2, b, false));
  Made pa;
  const MaKeyCustody& key = *instances_[0].custody;
  ASSERT_NO_FATAL_FAILURE(MakePackage(a, key.public_area(), key.name(), &pa));
  ASSERT_TRUE(Upload(c1, a.token, pa.bytes, nullptr).ok());
  ASSERT_OK(Approve(*instances_[1].vault, a.id, b.id));

  // Every thread's download nonce, each certified by B's TPM ahead of the race: the TPM
  // serves one command at a time, the MA is what races.
  struct Attempt {
    Bytes nonce;
    esys::Attestation cert;
  };
  std::vector<Attempt> attempts(2 * kThreadsPerInstance);
  b.signer.reset();
  auto ek = b.tpm->CreateEk();
  ASSERT_OK(ek);
  auto ak = b.tpm->Load(*ek, b.ak_blob);
  ASSERT_OK(ak);
  for (size_t i = 0; i < attempts.size(); ++i) {
    Client c(instances_[i % 2].ops.get());
    ASSERT_TRUE(Prepare(c, b.token, pa.model.package_id, b.srk_name, &attempts[i].nonce).ok());
    auto cert = b.tpm->Certify(b.srk, *ak, attempts[i].nonce);
    ASSERT_OK(cert);
    attempts[i].cert = *cert;
  }
  ak->reset();
  ek->reset();

  std::atomic<int> won{0}, refused{0};
  std::vector<std::string> errors(attempts.size());
  OnBothInstances([&](MaOperations* ops, int i) {
    Client c(ops);
    Downloaded got;
    Status s = CompleteDownload(c, b.token, pa.model.package_id, attempts[i].nonce,
                                b.srk_info.marshalled, attempts[i].cert, &got);
    if (s.ok()) {
      ++won;
    } else {
      ++refused;
      errors[i] = s.ToString();
    }
  });
  EXPECT_EQ(won.load(), 1);
  EXPECT_EQ(refused.load(), 2 * kThreadsPerInstance - 1);
  for (const std::string& e : errors) {
    // Refused for the approval, never for anything else (a lock timeout, a lost nonce).
    if (!e.empty()) {
      EXPECT_NE(e.find("approval"), std::string::npos) << e;
    }
  }
  EXPECT_EQ(Count("SELECT count(*) FROM approvals WHERE used_at IS NOT NULL"), 1);
  EXPECT_EQ(Count("SELECT count(*) FROM audit_log WHERE action = 'Download.Complete' "
                  "AND outcome = 'ok'"),
            1);
  // Two instances appended every refusal at once: still one chain.
  Status chain = instances_[0].vault->VerifyAuditChain();
  EXPECT_TRUE(chain.ok()) << chain.ToString();
}

}  // namespace
}  // namespace tpmma::server
