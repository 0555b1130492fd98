// SPDX-License-Identifier: GPL-2.0-or-later
// Backend-independent tests of the Vault contract for platform inventory (issue #12): the
// latest report per platform, stored by CompleteAuthentication, and FindPlatforms; the SRK
// the platform's AK certified (issue #15), kept the same way.
#include <openssl/evp.h>

#include "tests/storage/vault_test.h"

namespace tpmma::storage::testing {
namespace {

constexpr int64_t kNow = 1'800'000'000;
// Platform ids as the server makes them: lower-case hex of an EK Name.
const std::string kAlice = "000b" + std::string(64, 'a');
const std::string kBob = "000b" + std::string(63, 'a') + "b";
const std::string kCarol = "000b" + std::string(64, 'c');

Bytes Sha(std::string_view s) {
  Bytes out(32);
  unsigned int len = 0;
  EVP_Digest(s.data(), s.size(), out.data(), &len, EVP_sha256(), nullptr);
  return out;
}

AuthCompletion Completion(Vault& v, const std::string& challenge, const std::string& id,
                          int64_t now) {
  Challenge c;
  c.id = challenge;
  c.kind = ChallengeKind::kAuthenticate;
  c.platform_id = id;
  c.expected_hash = Sha("s");
  c.created_at = now;
  c.expires_at = now + 60;
  EXPECT_TRUE(v.CreateChallenge(c, std::nullopt).ok());
  AuthCompletion a;
  a.challenge_id = challenge;
  a.proof_hash = Sha("s");
  a.now = now;
  a.platform.id = id;
  a.platform.ek_public = ToBytes("ek-" + id);
  a.platform.ek_certificate = ToBytes("cert-" + id);
  a.platform.ak_public = ToBytes("ak-" + id);
  a.platform.ak_name = ToBytes("akname-" + id);
  a.platform.created_at = now;
  a.platform.last_seen_at = now;
  a.session = Session{Sha("token-" + challenge), id, now, now + 300};
  a.audit = AuditEvent{now, id, "Authenticate.Complete", id, "ok", "test"};
  a.pending_audit = AuditEvent{now, id, "Authenticate.Complete", id, "pending", "pending"};
  return a;
}

PlatformInventory Inventory(std::string host, std::string serial, std::string owner) {
  PlatformInventory i;
  i.hostname = std::move(host);
  i.serial_number = std::move(serial);
  i.owner_label = std::move(owner);
  i.os_name = "Debian GNU/Linux 12 (bookworm)";
  i.machine_id = "0123456789abcdef0123456789abcdef";
  i.tpm_manufacturer = "IBM";
  return i;
}

std::vector<std::string> Ids(const Result<std::vector<PlatformSummary>>& r) {
  std::vector<std::string> out;
  if (r) {
    for (const PlatformSummary& s : *r) out.push_back(s.platform.id);
  }
  return out;
}

TEST_P(VaultTest, InventoryIsStoredWithCompleteAndReplacedByTheNextReport) {
  AuthCompletion a = Completion(*vault_, "c1", kAlice, kNow);
  a.inventory = Inventory("alice-laptop", "SN-1", "Alice Example");
  ASSERT_OK(vault_->CompleteAuthentication(a));
  auto inv = vault_->GetPlatformInventory(kAlice);
  ASSERT_OK(inv);
  EXPECT_EQ(inv->hostname, "alice-laptop");
  EXPECT_EQ(inv->serial_number, "SN-1");
  EXPECT_EQ(inv->owner_label, "Alice Example");
  EXPECT_EQ(inv->tpm_manufacturer, "IBM");
  EXPECT_EQ(inv->asset_tag, "");  // not reported
  EXPECT_EQ(inv->reported_at, kNow);

  // A later Complete without inventory keeps the last report; one with inventory replaces it.
  ASSERT_OK(vault_->CompleteAuthentication(Completion(*vault_, "c2", kAlice, kNow + 10)));
  EXPECT_EQ(vault_->GetPlatformInventory(kAlice)->reported_at, kNow);
  AuthCompletion b = Completion(*vault_, "c3", kAlice, kNow + 20);
  b.inventory = Inventory("alice-new", "", "");
  ASSERT_OK(vault_->CompleteAuthentication(b));
  Reopen();
  inv = vault_->GetPlatformInventory(kAlice);
  ASSERT_OK(inv);
  EXPECT_EQ(inv->hostname, "alice-new");
  EXPECT_EQ(inv->serial_number, "");
  EXPECT_EQ(inv->reported_at, kNow + 20);
}

TEST_P(VaultTest, InventoryOfUnknownOrSilentPlatformIsNotFound) {
  EXPECT_CODE(vault_->GetPlatformInventory(kAlice), Code::kNotFound);
  ASSERT_OK(vault_->CompleteAuthentication(Completion(*vault_, "c1", kAlice, kNow)));
  EXPECT_CODE(vault_->GetPlatformInventory(kAlice), Code::kNotFound);
}

TEST_P(VaultTest, RefusedCompletionStoresNoInventory) {
  AuthCompletion a = Completion(*vault_, "c1", kAlice, kNow);
  a.proof_hash = Sha("wrong");
  a.inventory = Inventory("mallory", "", "");
  EXPECT_CODE(vault_->CompleteAuthentication(a), Code::kUnauthenticated);
  EXPECT_CODE(vault_->GetPlatformInventory(kAlice), Code::kNotFound);
}

TEST_P(VaultTest, InventoryWithControlCharactersOrBadUtf8IsRefused) {
  for (const std::string& bad :
       {std::string("host\nname"), std::string("a\x1b[31m"), std::string("\xc3"),
        std::string("\xc2\x85"), std::string(kMaxInventoryField + 1, 'x')}) {
    AuthCompletion a =
        Completion(*vault_, "c-" + std::to_string(bad.size()) + bad.substr(0, 1), kAlice, kNow);
    a.inventory = Inventory("h", "", bad);
    auto r = vault_->CompleteAuthentication(a);
    EXPECT_CODE(r, Code::kInvalidArgument) << bad;
    if (!r) {
      EXPECT_NE(r.error().message().find("OwnerLabel"), std::string::npos);
    }
  }
  EXPECT_CODE(vault_->GetPlatform(kAlice), Code::kNotFound);
  // Non-ASCII text that is valid UTF-8 is fine.
  AuthCompletion ok = Completion(*vault_, "c-ok", kAlice, kNow);
  ok.inventory = Inventory("h", "", "Zoë Müller");
  ASSERT_OK(vault_->CompleteAuthentication(ok));
  EXPECT_EQ(vault_->GetPlatformInventory(kAlice)->owner_label, "Zoë Müller");
}

TEST_P(VaultTest, PendingPlatformKeepsItsInventory) {
  AuthCompletion a = Completion(*vault_, "c1", kCarol, kNow);
  a.enroll_pending = true;
  a.inventory = Inventory("carol-pc", "", "Carol");
  EXPECT_CODE(vault_->CompleteAuthentication(a), Code::kPermissionDenied);
  EXPECT_EQ(vault_->GetPlatformInventory(kCarol)->hostname, "carol-pc");
}

TEST_P(VaultTest, FindPlatformsByInventoryTextOrIdPrefix) {
  AuthCompletion a = Completion(*vault_, "c1", kAlice, kNow);
  a.inventory = Inventory("shared-host", "SN-ALICE-1", "Alice Example");
  ASSERT_OK(vault_->CompleteAuthentication(a));
  AuthCompletion b = Completion(*vault_, "c2", kBob, kNow);
  b.inventory = Inventory("Shared-Host", "SN-BOB-2", "Bob Builder");
  b.inventory->asset_tag = "ASSET-77";
  ASSERT_OK(vault_->CompleteAuthentication(b));
  ASSERT_OK(vault_->CompleteAuthentication(Completion(*vault_, "c3", kCarol, kNow)));

  using V = std::vector<std::string>;
  EXPECT_EQ(Ids(vault_->FindPlatforms("alice", 0)), V{kAlice});                 // owner, any case
  EXPECT_EQ(Ids(vault_->FindPlatforms("sn-bob", 0)), V{kBob});                  // serial
  EXPECT_EQ(Ids(vault_->FindPlatforms("asset-77", 0)), V{kBob});                // asset tag
  EXPECT_EQ(Ids(vault_->FindPlatforms("SHARED-HOST", 0)), (V{kAlice, kBob}));   // hostname
  EXPECT_EQ(Ids(vault_->FindPlatforms("456789ABCDEF", 0)), (V{kAlice, kBob}));  // machine id
  EXPECT_EQ(Ids(vault_->FindPlatforms("000B" + std::string(20, 'A'), 0)), (V{kAlice, kBob}));
  EXPECT_EQ(Ids(vault_->FindPlatforms("000bcc", 0)), V{kCarol});  // id prefix, no inventory
  EXPECT_EQ(Ids(vault_->FindPlatforms(kBob, 0)), V{kBob});        // full id
  EXPECT_EQ(Ids(vault_->FindPlatforms("nobody", 0)), V{});
  EXPECT_EQ(Ids(vault_->FindPlatforms("shared", 1)), V{kAlice});  // limit
  // An id is matched as a prefix only: a hex run from the middle of an id is no match.
  EXPECT_EQ(Ids(vault_->FindPlatforms("cccc", 0)), V{});
  EXPECT_CODE(vault_->FindPlatforms("", 0), Code::kInvalidArgument);

  auto found = vault_->FindPlatforms("bob builder", 0);
  ASSERT_OK(found);
  ASSERT_EQ(found->size(), 1u);
  ASSERT_TRUE((*found)[0].inventory.has_value());
  EXPECT_EQ((*found)[0].inventory->serial_number, "SN-BOB-2");
  EXPECT_EQ((*found)[0].platform.last_seen_at, kNow);
  auto carol = vault_->FindPlatforms("000bcc", 0);
  ASSERT_OK(carol);
  EXPECT_FALSE((*carol)[0].inventory.has_value());
}

// The SRK a Complete carried stays until a later one carries another: a Complete without one
// (an older lms) changes neither the key nor when it was certified. Read back through every
// query that returns platforms, after a reopen.
TEST_P(VaultTest, CertifiedSrkIsKeptUntilAnotherReplacesIt) {
  AuthCompletion a = Completion(*vault_, "c1", kAlice, kNow);
  a.platform.srk_public = ToBytes("srk-1");
  a.platform.srk_certified_at = kNow;
  a.inventory = Inventory("alice-laptop", "SN-1", "Alice Example");
  ASSERT_OK(vault_->CompleteAuthentication(a));
  ASSERT_OK_AND_ASSIGN(Platform p, vault_->GetPlatform(kAlice));
  EXPECT_EQ(p.srk_public, ToBytes("srk-1"));
  EXPECT_EQ(p.srk_certified_at, kNow);

  AuthCompletion silent = Completion(*vault_, "c2", kAlice, kNow + 10);
  silent.platform.srk_certified_at = kNow + 10;  // no key: the time is not taken either
  ASSERT_OK(vault_->CompleteAuthentication(silent));
  ASSERT_OK_AND_ASSIGN(p, vault_->GetPlatform(kAlice));
  EXPECT_EQ(p.srk_public, ToBytes("srk-1"));
  EXPECT_EQ(p.srk_certified_at, kNow);
  EXPECT_EQ(p.last_seen_at, kNow + 10);

  AuthCompletion cleared = Completion(*vault_, "c3", kAlice, kNow + 20);
  cleared.platform.srk_public = ToBytes("srk-2");
  cleared.platform.srk_certified_at = kNow + 20;
  ASSERT_OK(vault_->CompleteAuthentication(cleared));
  ASSERT_OK(vault_->CompleteAuthentication(Completion(*vault_, "c4", kBob, kNow)));
  Reopen();
  ASSERT_OK_AND_ASSIGN(p, vault_->GetPlatform(kAlice));
  EXPECT_EQ(p.srk_public, ToBytes("srk-2"));
  EXPECT_EQ(p.srk_certified_at, kNow + 20);
  ASSERT_OK_AND_ASSIGN(p, vault_->GetPlatform(kBob));
  EXPECT_FALSE(p.srk_public.has_value());
  EXPECT_EQ(p.srk_certified_at, 0);

  ASSERT_OK_AND_ASSIGN(auto found, vault_->FindPlatforms("alice-laptop", 10));
  ASSERT_EQ(found.size(), 1u);
  EXPECT_EQ(found[0].platform.srk_public, ToBytes("srk-2"));
  ASSERT_TRUE(found[0].inventory.has_value());
  EXPECT_EQ(found[0].inventory->hostname, "alice-laptop");
  EXPECT_EQ(found[0].inventory->reported_at, kNow);
  ASSERT_OK_AND_ASSIGN(auto backups, vault_->ListPlatformBackups(10, ""));
  ASSERT_EQ(backups.platforms.size(), 2u);
  EXPECT_EQ(backups.platforms[0].summary.platform.srk_certified_at, kNow + 20);
  EXPECT_EQ(backups.platforms[0].summary.inventory->serial_number, "SN-1");
  EXPECT_EQ(backups.platforms[0].package_count, 0);
  ASSERT_OK_AND_ASSIGN(auto listed, vault_->ListPlatforms(10, ""));
  ASSERT_EQ(listed.platforms.size(), 2u);
  EXPECT_EQ(listed.platforms[0].srk_public, ToBytes("srk-2"));
}

}  // namespace
}  // namespace tpmma::storage::testing

namespace tpmma::storage::testing {
namespace {

Package PackageOf(const std::string& id, const std::string& platform, int64_t uploaded) {
  Package p;
  p.descriptor.package_id = id;
  p.descriptor.source_platform_id = platform;
  p.descriptor.format_version = "1.0";
  p.descriptor.created_at = uploaded - 5;
  p.descriptor.uploaded_at = uploaded;
  p.descriptor.keys.push_back({id + "-k", "label", "sign"});
  p.body = ToBytes("<Package id='" + id + "'/>");
  p.descriptor.sha256 = Sha(::tpmma::ToString(p.body));
  return p;
}

// The compliance view's one query per page (issue #15): inventory, count and latest upload.
TEST_P(VaultTest, ListPlatformBackupsCountsPackagesAndTheLatestUpload) {
  AuthCompletion a = Completion(*vault_, "c1", kAlice, kNow);
  a.inventory = Inventory("laptop-a", "SN-A", "Alice Example");
  ASSERT_OK(vault_->CompleteAuthentication(a));
  ASSERT_OK(vault_->CompleteAuthentication(Completion(*vault_, "c2", kBob, kNow)));
  ASSERT_OK(vault_->CompleteAuthentication(Completion(*vault_, "c3", kCarol, kNow)));
  const AuditEvent up{kNow, "system", "Upload", "p", "ok", "test"};
  ASSERT_OK(vault_->PutPackage(PackageOf("p1", kAlice, kNow + 10), up));
  ASSERT_OK(vault_->PutPackage(PackageOf("p2", kAlice, kNow + 30), up));
  ASSERT_OK(vault_->PutPackage(PackageOf("p3", kCarol, kNow + 20), up));

  auto first = vault_->ListPlatformBackups(2, "");
  ASSERT_OK(first);
  ASSERT_EQ(first->platforms.size(), 2u);
  ASSERT_FALSE(first->next_page_token.empty());
  const PlatformBackups& alice = first->platforms[0];
  EXPECT_EQ(alice.summary.platform.id, kAlice);
  ASSERT_TRUE(alice.summary.inventory.has_value());
  EXPECT_EQ(alice.summary.inventory->hostname, "laptop-a");
  EXPECT_EQ(alice.package_count, 2);
  EXPECT_EQ(alice.last_uploaded_at, kNow + 30);
  EXPECT_EQ(first->platforms[1].summary.platform.id, kBob);  // never backed up
  EXPECT_EQ(first->platforms[1].package_count, 0);
  EXPECT_EQ(first->platforms[1].last_uploaded_at, 0);
  EXPECT_FALSE(first->platforms[1].summary.inventory.has_value());

  auto second = vault_->ListPlatformBackups(2, first->next_page_token);
  ASSERT_OK(second);
  ASSERT_EQ(second->platforms.size(), 1u);
  EXPECT_EQ(second->platforms[0].summary.platform.id, kCarol);
  EXPECT_EQ(second->platforms[0].package_count, 1);
  EXPECT_EQ(second->platforms[0].last_uploaded_at, kNow + 20);
  EXPECT_TRUE(second->next_page_token.empty());
  EXPECT_CODE(vault_->ListPlatformBackups(2, "garbage"), Code::kInvalidArgument);
}

}  // namespace
}  // namespace tpmma::storage::testing
