// SPDX-License-Identifier: GPL-2.0-or-later
// The MA's EK trust (server/ek_trust.h) and `ma-admin ek-trust` / `ek check`
// (server/admin_ek_trust.h) on chains made here with OpenSSL: root -> int1 -> EK and
// root -> int1 -> int2 -> EK, the intermediates given only to the MA.
#include "server/ek_trust.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <string>
#include <vector>

#include "server/admin_ek_trust.h"
#include "server/admin_init.h"
#include "server/config.h"
#include "server/pki.h"
#include "storage/sqlite_vault.h"
#include "tests/server/ek_test_certs.h"
#include "tests/support/status_testing.h"
#include "tests/support/testutil.h"

namespace tpmma::server {
namespace {

using testing::Slurp;
using testing::Spit;
using testing::TempDir;

using Ca = TestCa;

Ca Make(const TempDir& dir, const std::string& cn, CertProfile profile, const Ca* issuer,
        int days = 30) {
  if (profile == CertProfile::kCa) return MakeTestCa(dir, cn, issuer, days);
  EvpPkeyPtr key = *GenerateKey(KeyType::kEcP256);
  return MakeTestLeaf(dir, cn, key.get(), *issuer);
}

class EkTrustTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = Make(dir_, "EK Root", CertProfile::kCa, nullptr);
    int1_ = Make(dir_, "EK Int 1", CertProfile::kCa, &root_);
    int2_ = Make(dir_, "EK Int 2", CertProfile::kCa, &int1_);
    ek1_ = Make(dir_, "EK one", CertProfile::kTlsClient, &int1_);
    ek2_ = Make(dir_, "EK two", CertProfile::kTlsClient, &int2_);
  }

  std::unique_ptr<EkTrust> Trust(std::vector<std::string> roots, std::vector<std::string> pool) {
    auto t = EkTrust::Load(roots, pool, Env::Default());
    EXPECT_TRUE(t.has_value()) << (t ? "" : t.error().ToString());
    return t ? std::move(*t) : nullptr;
  }
  int64_t Now() { return Env::Default()->NowUnixSeconds(); }

  TempDir dir_;
  Ca root_, int1_, int2_, ek1_, ek2_;
};

TEST_F(EkTrustTest, OneIntermediateOnlyInThePool) {
  auto t = Trust({root_.file}, {int1_.file});
  ASSERT_OK_AND_ASSIGN(VerifiedPath p, t->Verify(ek1_.cert.get(), {}, Now()));
  ASSERT_EQ(p.certs.size(), 3u);
  EXPECT_EQ(p.certs[0].subject, "CN=EK one");
  EXPECT_EQ(p.certs[1].subject, "CN=EK Int 1");
  EXPECT_EQ(p.sources[1], PathSource::kPool);
  EXPECT_EQ(p.certs[2].subject, "CN=EK Root");
  EXPECT_EQ(p.sources[2], PathSource::kRoot);
}

TEST_F(EkTrustTest, TwoIntermediatesOnlyInThePool) {
  auto t = Trust({root_.file}, {int2_.file, int1_.file});
  ASSERT_OK_AND_ASSIGN(VerifiedPath p, t->Verify(ek2_.cert.get(), {}, Now()));
  ASSERT_EQ(p.certs.size(), 4u);
  EXPECT_EQ(p.certs[1].subject, "CN=EK Int 2");
  EXPECT_EQ(p.certs[2].subject, "CN=EK Int 1");
  EXPECT_EQ(p.sources[3], PathSource::kRoot);
  // One from the endpoint, one from the pool.
  auto half = Trust({root_.file}, {int1_.file});
  ASSERT_OK_AND_ASSIGN(VerifiedPath q, half->Verify(ek2_.cert.get(), {int2_.cert.get()}, Now()));
  EXPECT_EQ(q.sources[1], PathSource::kSent);
  EXPECT_EQ(q.sources[2], PathSource::kPool);
}

TEST_F(EkTrustTest, MissingIntermediateNamesTheIssuerAndTheCommand) {
  auto t = Trust({root_.file}, {int1_.file});
  auto r = t->Verify(ek2_.cert.get(), {}, Now());
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), Code::kUnauthenticated);
  const std::string& m = r.error().message();
  EXPECT_NE(m.find("missing issuer 'CN=EK Int 2'"), std::string::npos) << m;
  EXPECT_NE(m.find("ma-admin ek-trust add --intermediate FILE"), std::string::npos) << m;
  EXPECT_NE(m.find("ma-admin ek-trust add --root FILE"), std::string::npos) << m;
}

TEST_F(EkTrustTest, ThePoolIsNeverAnAnchor) {
  // The whole chain but the root in the pool, and a root the MA does not trust.
  Ca other = Make(dir_, "Other Root", CertProfile::kCa, nullptr);
  auto t = Trust({other.file}, {int1_.file, int2_.file, root_.file});
  auto r = t->Verify(ek2_.cert.get(), {}, Now());
  ASSERT_FALSE(r.has_value());
  EXPECT_NE(r.error().message().find("root 'CN=EK Root' is not a trusted EK root"),
            std::string::npos)
      << r.error().message();
  // A self-issued CA in the pool and an EK it issued: not trusted either.
  Ca rogue = Make(dir_, "Rogue", CertProfile::kCa, nullptr);
  Ca ek = Make(dir_, "EK rogue", CertProfile::kTlsClient, &rogue);
  auto t2 = Trust({root_.file}, {rogue.file, int1_.file});
  EXPECT_FALSE(t2->Verify(ek.cert.get(), {}, Now()).has_value());
  EXPECT_FALSE(t2->Verify(rogue.cert.get(), {}, Now()).has_value());
}

// ma-admin's commands on a state directory made by `ma-admin init --ek-root`.
class EkTrustAdminTest : public EkTrustTest {
 protected:
  void SetUp() override {
    EkTrustTest::SetUp();
    InitOptions o;
    o.dir = dir_.File("ma");
    o.listen_port = 0;
    o.escrow = false;
    o.ek_root_files = {root_.file};
    ASSERT_OK(InitMaState(o, Env::Default()));
    state_ = o.dir;
    ASSERT_OK_AND_ASSIGN(vault_, storage::SqliteVault::Open(state_ + "/vault.db"));
  }
  // Runs `f` with output to a file; returns the output.
  template <typename F>
  std::string Run(F f, Status* st, bool json = false) {
    const std::string out = dir_.File("out.txt");
    std::FILE* fp = std::fopen(out.c_str(), "w");
    AdminContext ctx{.vault = vault_.get(),
                     .env = Env::Default(),
                     .actor = "admin:test",
                     .json = json,
                     .out = fp,
                     .approvals = {}};
    *st = f(ctx);
    std::fclose(fp);
    return Slurp(out);
  }
  Status Add(const std::string& file, EkTrustKind kind, std::string* out = nullptr) {
    Status st;
    std::string text =
        Run([&](const AdminContext& c) { return EkTrustAdd(c, state_, file, kind); }, &st);
    if (out) *out = text;
    return st;
  }
  Status Check(const std::string& file, std::vector<std::string> chain, std::string* out) {
    Status st;
    *out = Run([&](const AdminContext& c) { return EkCheck(c, state_, file, chain); }, &st);
    return st;
  }

  std::string state_;
  std::unique_ptr<storage::SqliteVault> vault_;
};

TEST_F(EkTrustAdminTest, AddListCheckRemove) {
  std::string out;
  Status st = Check(ek2_.file, {}, &out);
  EXPECT_EQ(st.code(), Code::kUnauthenticated);
  EXPECT_NE(st.message().find("missing issuer 'CN=EK Int 2'"), std::string::npos) << st.message();
  ASSERT_OK(Check(ek2_.file, {int2_.file, int1_.file}, &out));

  ASSERT_OK(Add(int1_.file, EkTrustKind::kIntermediate, &out));
  EXPECT_NE(out.find("restart ma-server"), std::string::npos) << out;
  ASSERT_OK(Add(int2_.file, EkTrustKind::kIntermediate));
  ASSERT_OK(Add(int2_.file, EkTrustKind::kIntermediate, &out));  // again: nothing changes
  EXPECT_NE(out.find("already"), std::string::npos) << out;
  ASSERT_OK(Check(ek2_.file, {}, &out));
  EXPECT_NE(out.find("trusted: 'CN=EK two' chains to the trusted root 'CN=EK Root'"),
            std::string::npos)
      << out;
  EXPECT_NE(out.find("pool        CN=EK Int 1"), std::string::npos) << out;
  EXPECT_NE(out.find("root        CN=EK Root"), std::string::npos) << out;

  // What ma-server will load: the pool is in config.toml.
  ASSERT_OK_AND_ASSIGN(Config cfg, LoadConfig(state_ + "/config.toml"));
  ASSERT_EQ(cfg.ek_intermediates.size(), 1u);
  auto t = Trust(cfg.ek_roots, cfg.ek_intermediates);
  EXPECT_EQ(t->pool_count(), 2u);

  Status listed;
  out = Run([&](const AdminContext& c) { return EkTrustList(c, state_); }, &listed);
  ASSERT_OK(listed);
  const std::string fp1 = *CertificateFingerprint(int1_.cert.get());
  EXPECT_NE(out.find("intermediate"), std::string::npos) << out;
  EXPECT_NE(out.find(fp1), std::string::npos) << out;
  EXPECT_NE(out.find("CN=EK Root"), std::string::npos) << out;
  out = Run([&](const AdminContext& c) { return EkTrustList(c, state_); }, &listed, true);
  EXPECT_NE(out.find("\"kind\": \"root\""), std::string::npos) << out;
  EXPECT_NE(out.find("\"not_after\""), std::string::npos) << out;

  out =
      Run([&](const AdminContext& c) { return EkTrustRemove(c, state_, fp1.substr(0, 12)); }, &st);
  ASSERT_OK(st);
  EXPECT_EQ(Check(ek2_.file, {}, &out).code(), Code::kUnauthenticated);
  ASSERT_OK(Check(ek1_.file, {int1_.file}, &out));
}

TEST_F(EkTrustAdminTest, Refusals) {
  auto refused = [&](const std::string& file, EkTrustKind kind, const std::string& want) {
    Status st = Add(file, kind);
    EXPECT_FALSE(st.ok()) << file;
    EXPECT_NE(st.message().find(want), std::string::npos) << st.ToString();
  };
  refused(ek1_.file, EkTrustKind::kRoot, "is not a CA certificate");
  refused(ek1_.file, EkTrustKind::kIntermediate, "is not a CA certificate");
  Ca old = Make(dir_, "Old Root", CertProfile::kCa, nullptr, -1);
  refused(old.file, EkTrustKind::kRoot, "expired on");
  Spit(dir_.File("garbage.pem"), "not a certificate at all");
  refused(dir_.File("garbage.pem"), EkTrustKind::kRoot, "is not an X.509 certificate");
  Spit(dir_.File("two.pem"), Slurp(int1_.file) + Slurp(int2_.file));
  refused(dir_.File("two.pem"), EkTrustKind::kIntermediate, "holds 2 certificates");
  // An intermediate is never an anchor, and a root is never in the pool.
  refused(int1_.file, EkTrustKind::kRoot, "not self-signed: add it with --intermediate");
  Ca other = Make(dir_, "Other Root", CertProfile::kCa, nullptr);
  refused(other.file, EkTrustKind::kIntermediate, "is self-signed");
  refused(dir_.File("none.pem"), EkTrustKind::kRoot, "none.pem");
  // The root init copied is known: adding it again as a root is a no-op.
  ASSERT_OK(Add(root_.file, EkTrustKind::kRoot));
}

}  // namespace
}  // namespace tpmma::server
