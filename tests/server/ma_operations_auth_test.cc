// SPDX-License-Identifier: GPL-2.0-or-later
// Authentication on the domain functions (server/ma_operations.h), no SOAP in between, on
// swtpm platforms and a real SQLite vault: expired challenges, EK chains from unknown roots,
// remembered EK chains, the cap on pending Begins, and a Begin on one instance completed on
// another over one vault (issue #14).
#include "tests/server/ma_operations_fixture.h"

namespace tpmma::server {
namespace {

TEST_F(MaOperationsTest, ExpiredChallengeIsRefused) {
  Client c(ep_.get());
  Plat p;
  ASSERT_NO_FATAL_FAILURE(OpenPlat(t_, &p));
  auto ek = tpm_->CreateEk();
  ASSERT_OK(ek);
  auto ak_blob = tpm_->CreateAk(*ek, esys::KeyAlg::kRsa2048);
  ASSERT_OK(ak_blob);
  auto ak = tpm_->Load(*ek, *ak_blob);
  ASSERT_OK(ak);
  Begun b;
  ASSERT_TRUE(Begin(c, *ek, *tpm::Marshal(ak_blob->public_area), &b).ok());
  auto secret = tpm_->ActivateCredential(*ak, *ek, b.blob, b.secret);
  ASSERT_OK(secret);
  env_.offset += cfg_.challenge_ttl_s;
  std::string token, platform;
  EXPECT_CODE(Complete(c, b.challenge_id, Proof(*secret, b.challenge_id), nullptr, nullptr, &token,
                       &platform),
              Code::kExpired);
  // Still refused later, by this instance or any other reading the row (issue #14): expiry
  // is decided by the clock, which instances keep in step (NTP), not by who issued it.
  env_.offset += 1;
  EXPECT_CODE(Complete(c, b.challenge_id, Proof(*secret, b.challenge_id), nullptr, nullptr, &token,
                       &platform),
              Code::kExpired);
  env_.offset = 0;
}

TEST_F(MaOperationsTest, EkFromAnUnknownRootIsRefused) {
  // Roots = the MA's own certificate: a well-formed chain that ends nowhere we trust.
  TempDir d;
  Config cfg = cfg_;
  cfg.vault_path = d.File("v.db");
  cfg.ek_roots = {ma_.cert};
  auto ep = MakeOps(cfg, &env_);
  ASSERT_OK(ep);
  Client c(ep->get());
  auto ek = tpm_->CreateEk();
  ASSERT_OK(ek);
  Plat p;
  ASSERT_NO_FATAL_FAILURE(OpenPlat(t_, &p));
  auto ak = tpm_->CreateAk(*ek, esys::KeyAlg::kRsa2048);
  ASSERT_OK(ak);
  Begun b;
  Status s = Begin(c, *ek, *tpm::Marshal(ak->public_area), &b);
  EXPECT_EQ(s.code(), Code::kUnauthenticated) << s.ToString();
  EXPECT_NE(s.message().find("EK certificate not trusted"), std::string::npos) << s.message();
}

// A verified EK chain is remembered for exactly its bytes (EK public included) and only
// while every certificate in it is valid.
TEST_F(MaOperationsTest, RememberedEkChainsHoldOnlyForTheirBytesAndValidity) {
  Client c(ep_.get());
  auto ek = tpm_->CreateEk();
  ASSERT_OK(ek);
  auto ak_blob = tpm_->CreateAk(*ek, esys::KeyAlg::kRsa2048);
  ASSERT_OK(ak_blob);
  Bytes ak_pub = *tpm::Marshal(ak_blob->public_area);
  Begun b;
  ASSERT_TRUE(Begin(c, *ek, ak_pub, &b).ok());
  ASSERT_TRUE(Begin(c, *ek, ak_pub, &b).ok());  // from the cache
  // The same certificate and intermediate with another key as "EK": refused.
  auto srk = tpm_->GetOrCreateSrk(esys::KeyAlg::kRsa2048);
  ASSERT_OK(srk);
  Status other = Begin(c, *srk, ak_pub, &b);
  EXPECT_EQ(other.code(), Code::kUnauthenticated) << other.ToString();
  EXPECT_NE(other.message().find("does not certify"), std::string::npos) << other.message();
  // Before the certificates' validity: refused although the bytes were verified before.
  env_.offset = -20LL * 365 * 86400;
  Status early = Begin(c, *ek, ak_pub, &b);
  EXPECT_EQ(early.code(), Code::kUnauthenticated) << early.ToString();
  env_.offset = 0;
  ASSERT_TRUE(Begin(c, *ek, ak_pub, &b).ok());
}

// auth.max_pending_challenges bounds what Begin keeps in memory: beyond it the oldest is
// forgotten there, and its Complete is then checked from the challenge row, as on an
// instance that never saw the Begin. Each challenge still completes once.
TEST_F(MaOperationsTest, PendingBeginsBeyondTheCapCompleteFromTheVault) {
  TempDir d;
  Config cfg = cfg_;
  cfg.vault_path = d.File("v.db");
  cfg.max_pending_challenges = 1;
  auto ep = MakeOps(cfg, &env_);
  ASSERT_OK(ep);
  Client c(ep->get());
  Ak a;
  ASSERT_NO_FATAL_FAILURE(MakeAk(&a));
  auto& ek = a.ek;
  auto& ak = a.ak;
  Bytes& ak_pub = a.pub;
  Begun first, second;
  ASSERT_TRUE(Begin(c, *ek, ak_pub, &first).ok());
  ASSERT_TRUE(Begin(c, *ek, ak_pub, &second).ok());
  auto s1 = tpm_->ActivateCredential(*ak, *ek, first.blob, first.secret);
  ASSERT_OK(s1);
  auto s2 = tpm_->ActivateCredential(*ak, *ek, second.blob, second.secret);
  ASSERT_OK(s2);
  std::string token, platform;
  EXPECT_TRUE(Complete(c, first.challenge_id, Proof(*s1, first.challenge_id), nullptr, nullptr,
                       &token, &platform)
                  .ok());
  EXPECT_CODE(Complete(c, first.challenge_id, Proof(*s1, first.challenge_id), nullptr, nullptr,
                       &token, &platform),
              Code::kUnauthenticated);
  EXPECT_TRUE(Complete(c, second.challenge_id, Proof(*s2, second.challenge_id), nullptr, nullptr,
                       &token, &platform)
                  .ok());
}

// Issue #14: two instances on one vault behind a load balancer. Begin on one, Complete on the
// other: the session works on both; the challenge is used up for both; a wrong proof sent to
// the instance that did not issue the challenge is refused and burns it too.
TEST_F(MaOperationsTest, BeginOnOneInstanceCompletesOnAnother) {
  TempDir d;
  Config cfg = cfg_;
  cfg.vault_path = d.File("v.db");
  auto one = MakeOps(cfg, &env_);
  ASSERT_OK(one);
  auto two = MakeOps(cfg, &env_, one->vault.get(), one->custody.get());
  ASSERT_OK(two);
  Client c1(one->get());
  Client c2(two->get());
  Ak a;
  ASSERT_NO_FATAL_FAILURE(MakeAk(&a));
  auto& ek = a.ek;
  auto& ak = a.ak;
  Bytes& ak_pub = a.pub;
  Begun b;
  ASSERT_TRUE(Begin(c1, *ek, ak_pub, &b).ok());
  auto secret = tpm_->ActivateCredential(*ak, *ek, b.blob, b.secret);
  ASSERT_OK(secret);
  std::string token, platform;
  ASSERT_TRUE(Complete(c2, b.challenge_id, Proof(*secret, b.challenge_id), nullptr, nullptr, &token,
                       &platform)
                  .ok());
  auto session = one->vault->GetSession(Authenticator::TokenHash(token), env_.NowUnixSeconds());
  ASSERT_OK(session);
  EXPECT_EQ(session->platform_id, platform);
  EXPECT_CODE(Complete(c1, b.challenge_id, Proof(*secret, b.challenge_id), nullptr, nullptr, &token,
                       &platform),
              Code::kUnauthenticated);

  Begun wrong;
  ASSERT_TRUE(Begin(c1, *ek, ak_pub, &wrong).ok());
  Bytes bad_proof(32, 0x55);
  EXPECT_CODE(Complete(c2, wrong.challenge_id, bad_proof, nullptr, nullptr, &token, &platform),
              Code::kUnauthenticated);
  auto s = tpm_->ActivateCredential(*ak, *ek, wrong.blob, wrong.secret);
  ASSERT_OK(s);
  EXPECT_CODE(Complete(c1, wrong.challenge_id, Proof(*s, wrong.challenge_id), nullptr, nullptr,
                       &token, &platform),
              Code::kUnauthenticated);
}

}  // namespace
}  // namespace tpmma::server
