// SPDX-License-Identifier: GPL-2.0-or-later
// Backend-independent tests of the Vault contract for the enrollment policy: pending
// platforms (approve-first) and registrations (registered). See vault_test.h.
#include <openssl/evp.h>

#include "tests/storage/vault_test.h"

namespace tpmma::storage::testing {
namespace {

constexpr int64_t kNow = 1'800'000'000;

Bytes Sha(std::string_view s) {
  Bytes out(32);
  unsigned int len = 0;
  EVP_Digest(s.data(), s.size(), out.data(), &len, EVP_sha256(), nullptr);
  return out;
}

AuditEvent Audit(std::string action, std::string object) {
  return AuditEvent{kNow, "system", std::move(action), std::move(object), "ok", "test"};
}

int64_t CountAudit(Vault& v) {
  AuditFilter f;
  f.page_size = 1000;
  auto page = v.ListAudit(f);
  return page ? static_cast<int64_t>(page->records.size()) : -1;
}

AuthCompletion Completion(Vault& v, const std::string& challenge, const std::string& id) {
  Challenge c;
  c.id = challenge;
  c.kind = ChallengeKind::kAuthenticate;
  c.platform_id = id;
  c.expected_hash = Sha("s");
  c.created_at = kNow;
  c.expires_at = kNow + 60;
  EXPECT_TRUE(v.CreateChallenge(c, std::nullopt).ok());
  AuthCompletion a;
  a.challenge_id = challenge;
  a.proof_hash = Sha("s");
  a.now = kNow;
  a.platform.id = id;
  a.platform.ek_public = ToBytes("ek-" + id);
  a.platform.ek_certificate = ToBytes("cert-" + id);
  a.platform.ak_public = ToBytes("ak-" + id);
  a.platform.ak_name = ToBytes("akname-" + id);
  a.platform.created_at = kNow;
  a.platform.last_seen_at = kNow;
  a.session = Session{Sha("token-" + challenge), id, kNow, kNow + 300};
  a.audit = Audit("Authenticate.Complete", id);
  a.pending_audit = AuditEvent{kNow, id, "Authenticate.Complete", id, "pending", "pending"};
  return a;
}

TEST_P(VaultTest, PendingPlatformGetsNoSessionUntilAccepted) {
  AuthCompletion a = Completion(*vault_, "c1", "p1");
  a.enroll_pending = true;
  a.pending_message = "awaits an operator";
  const int64_t before = CountAudit(*vault_);
  auto r = vault_->CompleteAuthentication(a);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), Code::kPermissionDenied);
  EXPECT_EQ(r.error().message(), "awaits an operator");
  EXPECT_EQ(CountAudit(*vault_), before + 1);  // the pending row's own record
  auto p = vault_->GetPlatform("p1");
  ASSERT_OK(p);
  EXPECT_EQ(p->state, PlatformState::kPending);
  EXPECT_EQ(ToString(p->state), "pending");
  EXPECT_CODE(vault_->GetSession(Sha("token-c1"), kNow), Code::kNotFound);

  // Pending under any policy; nothing new is audited by the vault.
  AuthCompletion again = Completion(*vault_, "c2", "p1");
  EXPECT_CODE(vault_->CompleteAuthentication(again), Code::kPermissionDenied);
  EXPECT_CODE(vault_->GetSession(Sha("token-c2"), kNow), Code::kNotFound);
  EXPECT_EQ(CountAudit(*vault_), before + 1);
  // An upsert keeps it pending.
  ASSERT_OK(vault_->UpsertPlatform(again.platform, std::nullopt));
  EXPECT_EQ(vault_->GetPlatform("p1")->state, PlatformState::kPending);

  EXPECT_CODE(vault_->AcceptPlatform("nope", Audit("AcceptPlatform", "nope")), Code::kNotFound);
  ASSERT_OK(vault_->AcceptPlatform("p1", Audit("AcceptPlatform", "p1")));
  EXPECT_EQ(vault_->GetPlatform("p1")->state, PlatformState::kActive);
  EXPECT_CODE(vault_->AcceptPlatform("p1", Audit("AcceptPlatform", "p1")), Code::kConflict);
  Reopen();
  EXPECT_EQ(vault_->GetPlatform("p1")->state, PlatformState::kActive);

  AuthCompletion accepted = Completion(*vault_, "c3", "p1");
  accepted.enroll_pending = true;  // only for platforms not yet stored
  ASSERT_OK(vault_->CompleteAuthentication(accepted));
  ASSERT_OK(vault_->GetSession(Sha("token-c3"), kNow));
}

TEST_P(VaultTest, RevokedPendingPlatformStaysRevoked) {
  AuthCompletion a = Completion(*vault_, "c1", "p1");
  a.enroll_pending = true;
  EXPECT_CODE(vault_->CompleteAuthentication(a), Code::kPermissionDenied);
  ASSERT_OK(vault_->RevokePlatform("p1", Audit("RevokePlatform", "p1")));
  EXPECT_EQ(vault_->GetPlatform("p1")->state, PlatformState::kRevoked);
  EXPECT_CODE(vault_->AcceptPlatform("p1", Audit("AcceptPlatform", "p1")), Code::kConflict);
}

TEST_P(VaultTest, Registrations) {
  const Bytes key = Sha("key"), cert = Sha("cert"), other = Sha("other");
  std::vector<PlatformRegistration> regs = {
      {RegistrationKind::kEkKeyId, key, "alice", kNow},
      {RegistrationKind::kEkCertSha256, cert, "bob", kNow},
  };
  const int64_t before = CountAudit(*vault_);
  auto added = vault_->RegisterPlatforms(regs, Audit("RegisterPlatforms", "2"));
  ASSERT_OK(added);
  EXPECT_EQ(*added, 2u);
  EXPECT_EQ(CountAudit(*vault_), before + 1);
  // Again, plus one new: the known ones are kept as they were.
  regs[0].label = "renamed";
  regs.push_back({RegistrationKind::kEkKeyId, other, "carol", kNow});
  added = vault_->RegisterPlatforms(regs, Audit("RegisterPlatforms", "3"));
  ASSERT_OK(added);
  EXPECT_EQ(*added, 1u);

  auto found = vault_->FindRegistration(key, {});
  ASSERT_OK(found);
  EXPECT_EQ(found->label, "alice");
  found = vault_->FindRegistration(Sha("unknown"), cert);
  ASSERT_OK(found);
  EXPECT_EQ(found->kind, RegistrationKind::kEkCertSha256);
  EXPECT_EQ(found->label, "bob");
  // A digest counts only under its own kind.
  EXPECT_CODE(vault_->FindRegistration(cert, key), Code::kNotFound);
  EXPECT_CODE(vault_->FindRegistration({}, {}), Code::kNotFound);

  // All or nothing.
  std::vector<PlatformRegistration> bad = {
      {RegistrationKind::kEkKeyId, Sha("new"), "x", kNow},
      {RegistrationKind::kEkKeyId, ToBytes("short"), "y", kNow}};
  EXPECT_CODE(vault_->RegisterPlatforms(bad, Audit("RegisterPlatforms", "2")),
              Code::kInvalidArgument);
  EXPECT_CODE(vault_->FindRegistration(Sha("new"), {}), Code::kNotFound);

  Reopen();
  auto all = vault_->ListRegistrations();
  ASSERT_OK(all);
  EXPECT_EQ(all->size(), 3u);
}

}  // namespace
}  // namespace tpmma::storage::testing
