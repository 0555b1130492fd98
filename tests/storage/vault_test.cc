// SPDX-License-Identifier: GPL-2.0-or-later
// Backend-independent tests of the Vault contract (see vault_test.h).
#include <atomic>
#include <latch>
#include <set>
#include <thread>

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

AuditEvent Audit(std::string action, std::string object = "obj") {
  return AuditEvent{kNow, "system", std::move(action), std::move(object), "ok", "test"};
}

Platform MakePlatform(const std::string& id, int64_t t = kNow) {
  Platform p;
  p.id = id;
  p.ek_public = ToBytes("ek-" + id);
  p.ek_certificate = ToBytes("cert-" + id);
  p.ak_public = ToBytes("ak-" + id);
  p.ak_name = ToBytes("akname-" + id);
  p.created_at = t;
  p.last_seen_at = t;
  return p;
}

Package MakePackage(const std::string& id, const std::string& platform, int nkeys = 2,
                    const std::string& body = "", int64_t created = kNow) {
  Package p;
  p.descriptor.package_id = id;
  p.descriptor.source_platform_id = platform;
  p.descriptor.format_version = "1.0";
  p.descriptor.created_at = created;
  p.descriptor.uploaded_at = created + 1;
  p.descriptor.custody = CustodyMode::kEscrow;
  for (int i = 0; i < nkeys; ++i) {
    p.descriptor.keys.push_back(
        {id + "-k" + std::to_string(i), "label-" + std::to_string(i) + "-" + id, "sign"});
  }
  p.body = ToBytes(body.empty() ? "<Package id='" + id + "'/>" : body);
  p.descriptor.sha256 = Sha(::tpmma::ToString(p.body));  // the caller hashes, the vault keeps
  return p;
}

Challenge MakeChallenge(const std::string& id, const std::string& platform,
                        const std::string& secret,
                        ChallengeKind kind = ChallengeKind::kAuthenticate) {
  Challenge c;
  c.id = id;
  c.kind = kind;
  c.platform_id = platform;
  c.expected_hash = Sha(secret);
  c.nonce = ToBytes("nonce");
  c.associated_data = ToBytes("ak-public");
  c.created_at = kNow;
  c.expires_at = kNow + 60;
  return c;
}

Session MakeSession(const std::string& token, const std::string& platform, int64_t ttl = 300) {
  return Session{Sha(token), platform, kNow, kNow + ttl};
}

// The records callers appended: every log also starts with the vault's genesis record.
int64_t CountAudit(Vault& v) {
  int64_t n = 0;
  AuditFilter f;
  f.page_size = 1000;
  while (true) {
    auto page = v.ListAudit(f);
    EXPECT_TRUE(page.has_value());
    if (!page) return -1;
    for (const AuditRecord& r : page->records) n += r.event.action.starts_with("Audit.") ? 0 : 1;
    if (page->next_page_token.empty()) return n;
    f.page_token = page->next_page_token;
  }
}

std::vector<PackageDescriptor> QueryAll(Vault& v, PackageQuery q, size_t page_size) {
  std::vector<PackageDescriptor> all;
  q.page_size = page_size;
  while (true) {
    auto page = v.QueryPackages(q);
    EXPECT_TRUE(page.has_value()) << page.error().ToString();
    if (!page) return all;
    EXPECT_LE(page->packages.size(), page_size);
    for (auto& d : page->packages) all.push_back(std::move(d));
    if (page->next_page_token.empty()) return all;
    q.page_token = page->next_page_token;
  }
}

TEST_P(VaultTest, PlatformUpsertKeepsCreatedAtAndState) {
  Platform p = MakePlatform("p1");
  p.signing_key_public = ToBytes("sigkey");
  auto stored = vault_->UpsertPlatform(p, Audit("Authenticate", "p1"));
  ASSERT_OK(stored);
  EXPECT_EQ(stored->state, PlatformState::kActive);

  Platform again = MakePlatform("p1", kNow + 100);
  again.ak_public = ToBytes("new-ak");
  again.signing_key_public.reset();
  stored = vault_->UpsertPlatform(again, std::nullopt);
  ASSERT_OK(stored);
  EXPECT_EQ(stored->created_at, kNow);
  EXPECT_EQ(stored->last_seen_at, kNow + 100);
  EXPECT_EQ(stored->ak_public, ToBytes("new-ak"));
  EXPECT_EQ(stored->signing_key_public, ToBytes("sigkey"));  // absent means "unchanged"

  ASSERT_OK(vault_->CreateSession(MakeSession("tok", "p1"), std::nullopt));
  ASSERT_OK(vault_->RevokePlatform("p1", Audit("RevokePlatform", "p1")));
  EXPECT_CODE(vault_->GetSession(Sha("tok"), kNow), Code::kNotFound);  // sessions ended
  stored = vault_->UpsertPlatform(MakePlatform("p1"), std::nullopt);
  ASSERT_OK(stored);
  EXPECT_EQ(stored->state, PlatformState::kRevoked);  // upsert never un-revokes
  EXPECT_CODE(vault_->RevokePlatform("nope", Audit("RevokePlatform")), Code::kNotFound);
  EXPECT_CODE(vault_->GetPlatform("nope"), Code::kNotFound);
}

TEST_P(VaultTest, ListPlatformsPages) {
  for (int i = 0; i < 7; ++i) {
    ASSERT_OK(vault_->UpsertPlatform(MakePlatform("p" + std::to_string(i)), std::nullopt));
  }
  std::vector<std::string> ids;
  std::string token;
  do {
    auto page = vault_->ListPlatforms(3, token);
    ASSERT_OK(page);
    EXPECT_LE(page->platforms.size(), 3u);
    for (const auto& p : page->platforms) ids.push_back(p.id);
    token = page->next_page_token;
  } while (!token.empty());
  EXPECT_EQ(ids, (std::vector<std::string>{"p0", "p1", "p2", "p3", "p4", "p5", "p6"}));
  EXPECT_CODE(vault_->ListPlatforms(3, "garbage"), Code::kInvalidArgument);
}

// Issue #14: an instance that did not issue a challenge reads it to check the answer; the
// read never uses it up, and refuses what ConsumeChallenge would refuse.
TEST_P(VaultTest, GetChallengeReadsWithoutConsuming) {
  ASSERT_OK(vault_->CreateChallenge(MakeChallenge("g1", "p1", "s"), std::nullopt));
  for (int i = 0; i < 2; ++i) {
    auto c = vault_->GetChallenge("g1", ChallengeKind::kAuthenticate, kNow);
    ASSERT_OK(c);
    EXPECT_EQ(c->platform_id, "p1");
    EXPECT_EQ(c->expected_hash, Sha("s"));
    EXPECT_EQ(c->associated_data, ToBytes("ak-public"));
  }
  EXPECT_CODE(vault_->GetChallenge("g1", ChallengeKind::kDownloadNonce, kNow),
              Code::kUnauthenticated);
  EXPECT_CODE(vault_->GetChallenge("g1", ChallengeKind::kAuthenticate, kNow + 60), Code::kExpired);
  EXPECT_CODE(vault_->GetChallenge("nope", ChallengeKind::kAuthenticate, kNow), Code::kNotFound);
  ASSERT_OK(vault_->ConsumeChallenge("g1", ChallengeKind::kAuthenticate, kNow));
  EXPECT_CODE(vault_->GetChallenge("g1", ChallengeKind::kAuthenticate, kNow),
              Code::kUnauthenticated);
}

TEST_P(VaultTest, ChallengeIsConsumedOnce) {
  ASSERT_OK(vault_->CreateChallenge(MakeChallenge("c1", "p1", "s"), std::nullopt));
  EXPECT_CODE(vault_->CreateChallenge(MakeChallenge("c1", "p1", "s"), std::nullopt),
              Code::kAlreadyExists);
  EXPECT_CODE(vault_->ConsumeChallenge("c1", ChallengeKind::kDownloadNonce, kNow),
              Code::kUnauthenticated);  // wrong kind does not burn it
  auto c = vault_->ConsumeChallenge("c1", ChallengeKind::kAuthenticate, kNow);
  ASSERT_OK(c);
  EXPECT_EQ(c->platform_id, "p1");
  EXPECT_EQ(c->expected_hash, Sha("s"));
  EXPECT_EQ(c->associated_data, ToBytes("ak-public"));
  EXPECT_CODE(vault_->ConsumeChallenge("c1", ChallengeKind::kAuthenticate, kNow),
              Code::kUnauthenticated);
  EXPECT_CODE(vault_->ConsumeChallenge("zz", ChallengeKind::kAuthenticate, kNow), Code::kNotFound);

  ASSERT_OK(vault_->CreateChallenge(MakeChallenge("c2", "p1", "s"), std::nullopt));
  EXPECT_CODE(vault_->ConsumeChallenge("c2", ChallengeKind::kAuthenticate, kNow + 60),
              Code::kExpired);
  auto purged = vault_->PurgeExpired(kNow + 61);
  ASSERT_OK(purged);
  EXPECT_EQ(*purged, 2);
}

TEST_P(VaultTest, CompleteAuthenticationIsAtomicAndOneTime) {
  ASSERT_OK(vault_->CreateChallenge(MakeChallenge("c1", "p1", "secret"), std::nullopt));
  AuthCompletion a;
  a.challenge_id = "c1";
  a.proof_hash = Sha("secret");
  a.now = kNow + 5;
  a.platform = MakePlatform("p1", kNow + 5);
  a.session = MakeSession("token", "p1");
  a.audit = Audit("Authenticate", "p1");
  int64_t audit_before = CountAudit(*vault_);
  ASSERT_OK(vault_->CompleteAuthentication(a));
  ASSERT_OK(vault_->GetPlatform("p1"));
  auto s = vault_->GetSession(Sha("token"), kNow + 10);
  ASSERT_OK(s);
  EXPECT_EQ(s->platform_id, "p1");
  EXPECT_EQ(CountAudit(*vault_), audit_before + 1);

  a.session = MakeSession("token2", "p1");
  EXPECT_CODE(vault_->CompleteAuthentication(a), Code::kUnauthenticated);  // replay
  EXPECT_CODE(vault_->GetSession(Sha("token2"), kNow), Code::kNotFound);

  // A wrong proof burns the challenge: the right one afterwards fails too.
  ASSERT_OK(vault_->CreateChallenge(MakeChallenge("c2", "p1", "secret"), std::nullopt));
  a.challenge_id = "c2";
  a.proof_hash = Sha("guess");
  EXPECT_CODE(vault_->CompleteAuthentication(a), Code::kUnauthenticated);
  a.proof_hash = Sha("secret");
  EXPECT_CODE(vault_->CompleteAuthentication(a), Code::kUnauthenticated);
  EXPECT_CODE(vault_->GetSession(Sha("token2"), kNow), Code::kNotFound);

  ASSERT_OK(vault_->RevokePlatform("p1", Audit("RevokePlatform", "p1")));
  ASSERT_OK(vault_->CreateChallenge(MakeChallenge("c3", "p1", "secret"), std::nullopt));
  a.challenge_id = "c3";
  EXPECT_CODE(vault_->CompleteAuthentication(a), Code::kPermissionDenied);
  EXPECT_CODE(vault_->GetSession(Sha("token2"), kNow), Code::kNotFound);

  ASSERT_OK(vault_->CreateChallenge(MakeChallenge("c5", "p2", "secret"), std::nullopt));
  a.challenge_id = "c5";  // issued to p2, presented for p1: refused and burnt
  EXPECT_CODE(vault_->CompleteAuthentication(a), Code::kUnauthenticated);
  EXPECT_CODE(vault_->ConsumeChallenge("c5", ChallengeKind::kAuthenticate, kNow),
              Code::kUnauthenticated);

  ASSERT_OK(vault_->CreateChallenge(MakeChallenge("c4", "p1", "secret"), std::nullopt));
  a.challenge_id = "c4";
  a.now = kNow + 100;
  EXPECT_CODE(vault_->CompleteAuthentication(a), Code::kExpired);
}

// One TPM, one platform: a platform whose EK key another platform holds (another encoding of
// the same key, hence another id) is refused, and after that one is revoked it stays refused.
TEST_P(VaultTest, CompleteAuthenticationBindsToTheEkKey) {
  auto complete = [&](const std::string& challenge, const std::string& id, const Bytes& key_id) {
    EXPECT_TRUE(vault_->CreateChallenge(MakeChallenge(challenge, id, "s"), std::nullopt).ok());
    AuthCompletion a;
    a.challenge_id = challenge;
    a.proof_hash = Sha("s");
    a.now = kNow;
    a.platform = MakePlatform(id);
    a.platform.ek_key_id = key_id;
    a.session = MakeSession("token-" + challenge, id);
    a.audit = Audit("Authenticate", id);
    auto r = vault_->CompleteAuthentication(a);
    return r ? Status::Ok() : r.error();
  };
  const Bytes key = Sha("ek key"), other_key = Sha("another ek key");
  ASSERT_OK(complete("c1", "p1", key));
  auto p1 = vault_->GetPlatform("p1");
  ASSERT_OK(p1);
  EXPECT_EQ(p1->ek_key_id, key);
  ASSERT_OK(complete("c2", "p1", key));  // the same platform again
  Status s = complete("c3", "p2", key);
  EXPECT_EQ(s.code(), Code::kPermissionDenied) << s.ToString();
  EXPECT_NE(s.message().find("already enrolled as platform p1"), std::string::npos) << s.message();
  EXPECT_CODE(vault_->GetPlatform("p2"), Code::kNotFound);
  EXPECT_CODE(vault_->GetSession(Sha("token-c3"), kNow), Code::kNotFound);
  ASSERT_OK(complete("c4", "p3", other_key));
  ASSERT_OK(complete("c5", "p4", {}));  // key not known: nothing to compare

  ASSERT_OK(vault_->RevokePlatform("p1", Audit("RevokePlatform", "p1")));
  s = complete("c6", "p2", key);
  EXPECT_EQ(s.code(), Code::kPermissionDenied) << s.ToString();
  EXPECT_NE(s.message().find("revoked platform p1"), std::string::npos) << s.message();
  // An upsert without a key id keeps the stored one.
  Platform again = MakePlatform("p3");
  ASSERT_OK(vault_->UpsertPlatform(again, std::nullopt));
  EXPECT_EQ(vault_->GetPlatform("p3")->ek_key_id, other_key);
}

TEST_P(VaultTest, Sessions) {
  ASSERT_OK(vault_->UpsertPlatform(MakePlatform("p1"), std::nullopt));
  EXPECT_CODE(vault_->CreateSession(MakeSession("t", "unknown"), std::nullopt), Code::kNotFound);
  ASSERT_OK(vault_->CreateSession(MakeSession("t", "p1", 10), Audit("Login")));
  EXPECT_CODE(vault_->CreateSession(MakeSession("t", "p1", 10), std::nullopt),
              Code::kAlreadyExists);
  ASSERT_OK(vault_->GetSession(Sha("t"), kNow + 9));
  EXPECT_CODE(vault_->GetSession(Sha("t"), kNow + 10), Code::kExpired);
  EXPECT_CODE(vault_->GetSession(Sha("other"), kNow), Code::kNotFound);
  ASSERT_OK(vault_->DeleteSession(Sha("t"), std::nullopt));
  EXPECT_CODE(vault_->DeleteSession(Sha("t"), std::nullopt), Code::kNotFound);
  EXPECT_CODE(vault_->GetSession(Sha("t"), kNow), Code::kNotFound);

  ASSERT_OK(vault_->CreateSession(MakeSession("a", "p1", 10), std::nullopt));
  ASSERT_OK(vault_->CreateSession(MakeSession("b", "p1", 1000), std::nullopt));
  auto purged = vault_->PurgeExpired(kNow + 10);
  ASSERT_OK(purged);
  EXPECT_EQ(*purged, 1);
  ASSERT_OK(vault_->GetSession(Sha("b"), kNow + 10));
}

TEST_P(VaultTest, ListSessionsShowsAPlatformsLiveSessionsNewestFirst) {
  ASSERT_OK(vault_->UpsertPlatform(MakePlatform("p1"), std::nullopt));
  ASSERT_OK(vault_->UpsertPlatform(MakePlatform("p2"), std::nullopt));
  Session older = MakeSession("a", "p1", 100);
  Session newer = MakeSession("b", "p1", 1000);
  newer.created_at = kNow + 5;
  ASSERT_OK(vault_->CreateSession(older, std::nullopt));
  ASSERT_OK(vault_->CreateSession(newer, std::nullopt));
  ASSERT_OK(vault_->CreateSession(MakeSession("c", "p2"), std::nullopt));
  auto live = vault_->ListSessions("p1", kNow, 0);
  ASSERT_OK(live);
  ASSERT_EQ(live->size(), 2u);
  EXPECT_EQ((*live)[0].token_hash, Sha("b"));
  EXPECT_EQ((*live)[0].created_at, kNow + 5);
  EXPECT_EQ((*live)[0].expires_at, kNow + 1000);
  EXPECT_EQ((*live)[0].platform_id, "p1");
  EXPECT_EQ((*live)[1].token_hash, Sha("a"));
  // Expired is gone even before a purge; a limit holds; another platform's is not shown.
  EXPECT_EQ(vault_->ListSessions("p1", kNow + 100, 0)->size(), 1u);
  EXPECT_EQ(vault_->ListSessions("p1", kNow, 1)->size(), 1u);
  EXPECT_TRUE(vault_->ListSessions("nobody", kNow, 0)->empty());
  // Revoking a platform ends its sessions.
  ASSERT_OK(vault_->RevokePlatform("p1", Audit("RevokePlatform", "p1")));
  EXPECT_TRUE(vault_->ListSessions("p1", kNow, 0)->empty());
}

TEST_P(VaultTest, PackagesKeepTheKeyTheyWereVerifiedWith) {
  ASSERT_TRUE(vault_->UpsertPlatform(MakePlatform("p1"), std::nullopt).has_value());
  Package with = MakePackage("3f2504e0-4f89-41d3-9a0c-0305e82c3301", "p1");
  with.descriptor.signing_key = ToBytes("TPM2B_PUBLIC of key 1");
  Package without = MakePackage("3f2504e0-4f89-41d3-9a0c-0305e82c3302", "p1");
  ASSERT_TRUE(vault_->PutPackage(with, Audit("Upload", "u1")).has_value());
  ASSERT_TRUE(vault_->PutPackage(without, Audit("Upload", "u2")).has_value());
  auto d = vault_->GetPackageDescriptor(with.descriptor.package_id);
  ASSERT_TRUE(d.has_value());
  EXPECT_EQ(d->signing_key, with.descriptor.signing_key);
  auto full = vault_->GetPackage(with.descriptor.package_id);
  ASSERT_TRUE(full.has_value());
  EXPECT_EQ(full->descriptor.signing_key, with.descriptor.signing_key);
  auto d2 = vault_->GetPackageDescriptor(without.descriptor.package_id);
  ASSERT_TRUE(d2.has_value());
  EXPECT_TRUE(d2->signing_key.empty());
  // Listing still counts keys right (the key count follows the new column).
  PackageQuery q;
  q.source_platform_id = "p1";
  q.with_keys = false;
  auto all = QueryAll(*vault_, q, 10);
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all[0].key_count, 2);
  EXPECT_EQ(all[0].signing_key, with.descriptor.signing_key);
}

TEST_P(VaultTest, PutPackageIsIdempotentAndDetectsConflicts) {
  ASSERT_OK(vault_->UpsertPlatform(MakePlatform("p1"), std::nullopt));
  Package pkg = MakePackage("u1", "p1", 3);
  auto put = vault_->PutPackage(pkg, Audit("Upload", "u1"));
  ASSERT_OK(put);
  EXPECT_EQ(*put, PutOutcome::kStored);
  put = vault_->PutPackage(pkg, Audit("Upload", "u1"));
  ASSERT_OK(put);
  EXPECT_EQ(*put, PutOutcome::kAlreadyStored);

  Package other = MakePackage("u1", "p1", 3, "<Package different='1'/>");
  int64_t audit_before = CountAudit(*vault_);
  EXPECT_CODE(vault_->PutPackage(other, Audit("Upload", "u1")), Code::kConflict);
  EXPECT_EQ(CountAudit(*vault_), audit_before);  // refused writes leave no audit row

  EXPECT_CODE(vault_->PutPackage(MakePackage("u2", "ghost"), Audit("Upload")), Code::kNotFound);
  EXPECT_CODE(vault_->PutPackage(MakePackage("", "p1"), Audit("Upload")), Code::kInvalidArgument);

  auto got = vault_->GetPackage("u1");
  ASSERT_OK(got);
  EXPECT_EQ(got->body, pkg.body);
  EXPECT_EQ(got->descriptor.sha256, Sha(::tpmma::ToString(pkg.body)));
  EXPECT_EQ(got->descriptor.size, static_cast<int64_t>(pkg.body.size()));
  EXPECT_EQ(got->descriptor.source_platform_id, "p1");
  EXPECT_EQ(got->descriptor.format_version, "1.0");
  EXPECT_EQ(got->descriptor.created_at, kNow);
  EXPECT_EQ(got->descriptor.uploaded_at, kNow + 1);
  EXPECT_EQ(got->descriptor.custody, CustodyMode::kEscrow);
  ASSERT_EQ(got->descriptor.keys.size(), 3u);
  EXPECT_EQ(got->descriptor.keys[2].key_id, "u1-k2");
  EXPECT_EQ(got->descriptor.keys[2].label, "label-2-u1");
  EXPECT_EQ(got->descriptor.keys[2].usage, "sign");
  EXPECT_EQ(got->descriptor.key_count, 3);
  auto desc = vault_->GetPackageDescriptor("u1");
  ASSERT_OK(desc);
  EXPECT_EQ(desc->keys.size(), 3u);
  EXPECT_EQ(desc->key_count, 3);

  ASSERT_OK(vault_->DeletePackage("u1", Audit("Delete", "u1")));
  EXPECT_CODE(vault_->GetPackage("u1"), Code::kNotFound);
  EXPECT_CODE(vault_->GetPackageDescriptor("u1"), Code::kNotFound);
  EXPECT_CODE(vault_->DeletePackage("u1", Audit("Delete", "u1")), Code::kNotFound);
  // After delete the id is free again, even for different content.
  ASSERT_OK(vault_->PutPackage(other, Audit("Upload", "u1")));
  ASSERT_OK(vault_->IntegrityCheck());
}

// The vault keeps the caller's digest (the server hashed the body once, for its reply) and
// refuses a package without a well-formed one rather than storing an unverifiable row.
TEST_P(VaultTest, PutPackageTakesTheCallersDigest) {
  ASSERT_OK(vault_->UpsertPlatform(MakePlatform("p1"), std::nullopt));
  int64_t audit_before = CountAudit(*vault_);
  Package missing = MakePackage("d1", "p1");
  missing.descriptor.sha256.clear();
  EXPECT_CODE(vault_->PutPackage(missing, Audit("Upload", "d1")), Code::kInvalidArgument);
  Package short_digest = MakePackage("d1", "p1");
  short_digest.descriptor.sha256.resize(31);
  EXPECT_CODE(vault_->PutPackage(short_digest, Audit("Upload", "d1")), Code::kInvalidArgument);
  Package long_digest = MakePackage("d1", "p1");
  long_digest.descriptor.sha256.push_back(0);
  EXPECT_CODE(vault_->PutPackage(long_digest, Audit("Upload", "d1")), Code::kInvalidArgument);
  EXPECT_CODE(vault_->GetPackage("d1"), Code::kNotFound);
  EXPECT_EQ(CountAudit(*vault_), audit_before);

  // Stored as given: the same body under another digest is a different upload.
  Package pkg = MakePackage("d1", "p1");
  ASSERT_OK(vault_->PutPackage(pkg, Audit("Upload", "d1")));
  auto got = vault_->GetPackageDescriptor("d1");
  ASSERT_OK(got);
  EXPECT_EQ(got->sha256, pkg.descriptor.sha256);
  EXPECT_EQ(got->size, static_cast<int64_t>(pkg.body.size()));
  Package relabelled = pkg;
  relabelled.descriptor.sha256 = Sha("something else");
  EXPECT_CODE(vault_->PutPackage(relabelled, Audit("Upload", "d1")), Code::kConflict);
}

TEST_P(VaultTest, QueryPages250PackagesWithFilters) {
  for (const char* p : {"pa", "pb", "pc"}) {
    ASSERT_OK(vault_->UpsertPlatform(MakePlatform(p), std::nullopt));
  }
  const char* platforms[] = {"pa", "pb", "pc"};
  for (int i = 0; i < 250; ++i) {
    Package pkg = MakePackage("pkg-" + std::to_string(i), platforms[i % 3], 1, "", 1000 + i);
    pkg.descriptor.keys[0].label = (i % 10 == 0) ? "vpn-key-" + std::to_string(i) : "ssh";
    ASSERT_OK(vault_->PutPackage(pkg, Audit("Upload", pkg.descriptor.package_id)));
  }
  auto all = QueryAll(*vault_, PackageQuery{}, 7);
  ASSERT_EQ(all.size(), 250u);
  std::set<std::string> ids;
  for (size_t i = 0; i < all.size(); ++i) {
    ids.insert(all[i].package_id);
    EXPECT_EQ(all[i].package_id, "pkg-" + std::to_string(i));  // upload order
    EXPECT_EQ(all[i].keys.size(), 1u);
  }
  EXPECT_EQ(ids.size(), 250u);

  PackageQuery q;
  q.source_platform_id = "pb";
  auto pb = QueryAll(*vault_, q, 10);
  EXPECT_EQ(pb.size(), 83u);  // i % 3 == 1 for i < 250
  for (const auto& d : pb) EXPECT_EQ(d.source_platform_id, "pb");

  q = PackageQuery{};
  q.created_after = 1100;
  q.created_before = 1200;
  EXPECT_EQ(QueryAll(*vault_, q, 30).size(), 99u);

  q = PackageQuery{};
  q.label_contains = "vpn";
  EXPECT_EQ(QueryAll(*vault_, q, 4).size(), 25u);
  q.label_contains = "%";  // no wildcard semantics
  EXPECT_EQ(QueryAll(*vault_, q, 4).size(), 0u);

  q = PackageQuery{};
  q.source_platform_id = "pa";
  q.label_contains = "vpn";
  q.created_after = 1100;
  auto combined = QueryAll(*vault_, q, 2);
  for (const auto& d : combined) {
    EXPECT_EQ(d.source_platform_id, "pa");
    EXPECT_GT(d.created_at, 1100);
  }
  EXPECT_EQ(combined.size(), 5u);  // i in {120, 150, 180, 210, 240}

  q = PackageQuery{};
  q.page_token = "not-a-token";
  EXPECT_CODE(vault_->QueryPackages(q), Code::kInvalidArgument);
  q.page_size = 5000;  // capped, not refused
  q.page_token.clear();
  auto big = vault_->QueryPackages(q);
  ASSERT_OK(big);
  EXPECT_EQ(big->packages.size(), 250u);
}

TEST_P(VaultTest, QueryWithoutKeysStillCountsThem) {
  ASSERT_OK(vault_->UpsertPlatform(MakePlatform("p"), std::nullopt));
  for (int keys : {0, 1, 4}) {
    Package pkg = MakePackage("k" + std::to_string(keys), "p", keys);
    ASSERT_OK(vault_->PutPackage(pkg, Audit("Upload", pkg.descriptor.package_id)));
  }
  PackageQuery q;
  q.with_keys = false;
  auto counted = vault_->QueryPackages(q);
  ASSERT_OK(counted);
  ASSERT_EQ(counted->packages.size(), 3u);
  q.with_keys = true;
  auto full = vault_->QueryPackages(q);
  ASSERT_OK(full);
  ASSERT_EQ(full->packages.size(), 3u);
  const int64_t want[] = {0, 1, 4};
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_TRUE(counted->packages[i].keys.empty());
    EXPECT_EQ(counted->packages[i].key_count, want[i]);
    EXPECT_EQ(full->packages[i].key_count, want[i]);
    EXPECT_EQ(static_cast<int64_t>(full->packages[i].keys.size()), want[i]);
  }
}

TEST_P(VaultTest, DeferredAuditRecordsShareTheChain) {
  ASSERT_OK(vault_->AppendAudit(Audit("First")));
  for (int i = 0; i < 30; ++i) ASSERT_OK(vault_->AppendAuditDeferred(Audit("Read")));
  AuditEvent big = Audit("Read");
  big.object = std::string(2000, 'o');
  EXPECT_CODE(vault_->AppendAuditDeferred(big), Code::kInvalidArgument);
  ASSERT_OK(vault_->FlushDeferredAudit());
  auto last = vault_->AppendAudit(Audit("Last"));
  ASSERT_OK(last);
  EXPECT_EQ(*last, kGenesisRecords + 32);  // every deferred record before it, in sequence
  AuditFilter f;
  f.action = "Read";
  auto page = vault_->ListAudit(f);
  ASSERT_OK(page);
  EXPECT_EQ(page->records.size(), 30u);
  ASSERT_OK(vault_->VerifyAuditChain());
  Reopen();
  ASSERT_OK(vault_->VerifyAuditChain());
  page = vault_->ListAudit(f);
  ASSERT_OK(page);
  EXPECT_EQ(page->records.size(), 30u);
}

TEST_P(VaultTest, VisibilityFollowsApprovals) {
  for (const char* p : {"old", "new", "other"}) {
    ASSERT_OK(vault_->UpsertPlatform(MakePlatform(p), std::nullopt));
  }
  for (int i = 0; i < 3; ++i) {
    ASSERT_OK(vault_->PutPackage(MakePackage("o" + std::to_string(i), "old"), Audit("Upload")));
  }
  ASSERT_OK(vault_->PutPackage(MakePackage("n0", "new"), Audit("Upload")));
  ASSERT_OK(vault_->PutPackage(MakePackage("x0", "other"), Audit("Upload")));

  auto visible = [&](int64_t now) {
    PackageQuery q;
    q.visible_to_platform = "new";
    q.now = now;
    std::set<std::string> ids;
    for (const auto& d : QueryAll(*vault_, q, 2)) ids.insert(d.package_id);
    return ids;
  };
  EXPECT_EQ(visible(kNow), (std::set<std::string>{"n0"}));

  ApprovalRequest r;
  r.old_platform_id = "old";
  r.new_platform_id = "new";
  r.all_packages = false;
  r.package_ids = {"o1", "x0"};  // x0 is not old's: never visible through this approval
  r.reason = "motherboard swap";
  r.created_by = "alice";
  r.created_at = kNow;
  r.expires_at = kNow + 3600;
  auto a = vault_->CreateApproval(r, Audit("ApproveRestore", ""));
  ASSERT_OK(a);
  EXPECT_EQ(visible(kNow), (std::set<std::string>{"n0", "o1"}));
  EXPECT_EQ(visible(kNow + 3600), (std::set<std::string>{"n0"}));  // expired

  r.all_packages = true;
  r.package_ids.clear();
  r.require_confirmation = true;
  auto all = vault_->CreateApproval(r, Audit("ApproveRestore", ""));
  ASSERT_OK(all);
  EXPECT_EQ(visible(kNow), (std::set<std::string>{"n0", "o1"}));  // pending: not yet
  ASSERT_OK(vault_->ConfirmApproval(all->id, "bob", kNow, Audit("ConfirmRestore")));
  EXPECT_EQ(visible(kNow), (std::set<std::string>{"n0", "o0", "o1", "o2"}));
  ASSERT_OK(vault_->RevokeApproval(all->id, Audit("RevokeRestore")));
  ASSERT_OK(vault_->RevokeApproval(a->id, Audit("RevokeRestore")));
  EXPECT_EQ(visible(kNow), (std::set<std::string>{"n0"}));
}

// A platform restores its own packages without an approval; only its escrowed inner keys
// need one (docs/protocol.md, "Inner-key custody": after a TPM clear it has no copy of its own). So
// an approval from a platform to itself must cover at least one escrow package.
TEST_P(VaultTest, SamePlatformApprovalOnlyForEscrowPackages) {
  ASSERT_OK(vault_->UpsertPlatform(MakePlatform("p"), std::nullopt));
  Package rc = MakePackage("rc0", "p");
  rc.descriptor.custody = CustodyMode::kRecoveryCode;
  ASSERT_OK(vault_->PutPackage(rc, Audit("Upload")));

  ApprovalRequest r;
  r.old_platform_id = r.new_platform_id = "p";
  r.reason = "tpm cleared";
  r.created_by = "alice";
  r.created_at = kNow;
  r.expires_at = kNow + 100;
  auto none = vault_->CreateApproval(r, Audit("ApproveRestore"));
  ASSERT_FALSE(none.has_value());
  EXPECT_EQ(none.error().code(), Code::kInvalidArgument);
  EXPECT_NE(none.error().message().find("same"), std::string::npos) << none.error().ToString();

  ASSERT_OK(vault_->PutPackage(MakePackage("es0", "p"), Audit("Upload")));  // escrow
  ApprovalRequest listed = r;
  listed.all_packages = false;
  listed.package_ids = {"rc0"};
  EXPECT_CODE(vault_->CreateApproval(listed, Audit("ApproveRestore")), Code::kInvalidArgument);
  listed.package_ids = {"rc0", "es0"};
  ASSERT_OK(vault_->CreateApproval(listed, Audit("ApproveRestore")));
  ASSERT_OK(vault_->CreateApproval(r, Audit("ApproveRestore")));  // all of p's packages
  auto found = vault_->FindActiveApproval("p", "es0", kNow);
  ASSERT_OK(found);
}

TEST_P(VaultTest, ApprovalLifecycle) {
  for (const char* p : {"old", "new"}) {
    ASSERT_OK(vault_->UpsertPlatform(MakePlatform(p), std::nullopt));
  }
  ASSERT_OK(vault_->PutPackage(MakePackage("o0", "old"), Audit("Upload")));
  ASSERT_OK(vault_->PutPackage(MakePackage("n0", "new"), Audit("Upload")));

  ApprovalRequest r;
  r.old_platform_id = "old";
  r.new_platform_id = "new";
  r.reason = "swap";
  r.created_by = "alice";
  r.created_at = kNow;
  r.expires_at = kNow + 100;
  r.require_confirmation = true;

  ApprovalRequest bad = r;
  bad.all_packages = false;
  EXPECT_CODE(vault_->CreateApproval(bad, Audit("ApproveRestore")), Code::kInvalidArgument);
  bad = r;
  bad.expires_at = kNow;
  EXPECT_CODE(vault_->CreateApproval(bad, Audit("ApproveRestore")), Code::kInvalidArgument);

  auto a = vault_->CreateApproval(r, Audit("ApproveRestore", ""));
  ASSERT_OK(a);
  EXPECT_EQ(a->state, ApprovalState::kPending);
  EXPECT_GT(a->id, 0);
  // The vault fills in the new id as the audit object.
  AuditFilter f;
  f.action = "ApproveRestore";
  auto audit = vault_->ListAudit(f);
  ASSERT_OK(audit);
  ASSERT_EQ(audit->records.size(), 1u);
  EXPECT_EQ(audit->records[0].event.object, std::to_string(a->id));

  EXPECT_CODE(vault_->FindActiveApproval("new", "o0", kNow), Code::kNotFound);
  EXPECT_CODE(vault_->MarkApprovalUsed(a->id, kNow, Audit("Download")), Code::kConflict);
  EXPECT_CODE(vault_->ConfirmApproval(a->id, "alice", kNow, Audit("ConfirmRestore")),
              Code::kPermissionDenied);
  EXPECT_CODE(vault_->ConfirmApproval(a->id, "bob", kNow + 100, Audit("ConfirmRestore")),
              Code::kExpired);
  auto confirmed = vault_->ConfirmApproval(a->id, "bob", kNow, Audit("ConfirmRestore"));
  ASSERT_OK(confirmed);
  EXPECT_EQ(confirmed->state, ApprovalState::kActive);
  EXPECT_EQ(confirmed->confirmed_by, "bob");
  EXPECT_CODE(vault_->ConfirmApproval(a->id, "carol", kNow, Audit("ConfirmRestore")),
              Code::kConflict);

  auto found = vault_->FindActiveApproval("new", "o0", kNow + 1);
  ASSERT_OK(found);
  EXPECT_EQ(found->id, a->id);
  EXPECT_CODE(vault_->FindActiveApproval("new", "n0", kNow), Code::kNotFound);  // not old's
  EXPECT_CODE(vault_->FindActiveApproval("other", "o0", kNow), Code::kNotFound);
  EXPECT_CODE(vault_->FindActiveApproval("new", "o0", kNow + 100), Code::kNotFound);
  EXPECT_CODE(vault_->FindActiveApproval("new", "missing", kNow), Code::kNotFound);

  EXPECT_CODE(vault_->MarkApprovalUsed(a->id, kNow + 100, Audit("Download")), Code::kExpired);
  ASSERT_OK(vault_->MarkApprovalUsed(a->id, kNow + 5, Audit("Download")));
  auto used = vault_->GetApproval(a->id);
  ASSERT_OK(used);
  EXPECT_EQ(used->state, ApprovalState::kUsed);
  EXPECT_EQ(used->used_at, kNow + 5);
  EXPECT_CODE(vault_->MarkApprovalUsed(a->id, kNow + 6, Audit("Download")), Code::kConflict);
  EXPECT_CODE(vault_->RevokeApproval(a->id, Audit("RevokeRestore")), Code::kConflict);
  EXPECT_CODE(vault_->FindActiveApproval("new", "o0", kNow + 6), Code::kNotFound);
  EXPECT_CODE(vault_->GetApproval(9999), Code::kNotFound);

  r.require_confirmation = false;
  auto b = vault_->CreateApproval(r, Audit("ApproveRestore"));
  ASSERT_OK(b);
  EXPECT_EQ(b->state, ApprovalState::kActive);
  auto listed = vault_->ListApprovals("new");
  ASSERT_OK(listed);
  ASSERT_EQ(listed->size(), 2u);
  EXPECT_EQ((*listed)[0].id, b->id);  // newest first
  auto none = vault_->ListApprovals("old");
  ASSERT_OK(none);
  EXPECT_TRUE(none->empty());
  auto every = vault_->ListApprovals("");
  ASSERT_OK(every);
  EXPECT_EQ(every->size(), 2u);
}

TEST_P(VaultTest, Operators) {
  Operator alice{"alice", OperatorRole::kHelpdesk, std::string(64, 'a'), kNow, std::nullopt};
  Operator bob{"bob", OperatorRole::kAdmin, std::string(64, 'b'), kNow, std::nullopt};
  ASSERT_OK(vault_->AddOperator(alice, Audit("AddOperator", "alice")));
  ASSERT_OK(vault_->AddOperator(bob, Audit("AddOperator", "bob")));
  EXPECT_CODE(vault_->AddOperator(alice, Audit("AddOperator")), Code::kAlreadyExists);
  Operator dup_fp{"carol", OperatorRole::kAuditor, std::string(64, 'a'), kNow, std::nullopt};
  EXPECT_CODE(vault_->AddOperator(dup_fp, Audit("AddOperator")), Code::kAlreadyExists);

  auto got = vault_->GetOperatorByFingerprint(std::string(64, 'b'));
  ASSERT_OK(got);
  EXPECT_EQ(got->name, "bob");
  EXPECT_EQ(got->role, OperatorRole::kAdmin);
  EXPECT_CODE(vault_->GetOperatorByFingerprint(std::string(64, 'c')), Code::kNotFound);
  EXPECT_CODE(vault_->GetOperator("zed"), Code::kNotFound);

  ASSERT_OK(vault_->RevokeOperator("alice", kNow + 1, Audit("RevokeOperator", "alice")));
  EXPECT_CODE(vault_->RevokeOperator("alice", kNow + 2, Audit("RevokeOperator")), Code::kConflict);
  EXPECT_CODE(vault_->RevokeOperator("zed", kNow + 2, Audit("RevokeOperator")), Code::kNotFound);
  auto list = vault_->ListOperators();
  ASSERT_OK(list);
  ASSERT_EQ(list->size(), 2u);
  EXPECT_EQ((*list)[0].name, "alice");
  EXPECT_EQ((*list)[0].revoked_at, kNow + 1);
  EXPECT_FALSE((*list)[1].revoked_at.has_value());
}

TEST_P(VaultTest, AuditChainListsAndFilters) {
  for (int i = 0; i < 30; ++i) {
    AuditEvent e{kNow + i,
                 i % 2 ? "operator:alice" : "system",
                 i % 3 ? "Upload" : "Delete",
                 "pkg-" + std::to_string(i % 5),
                 i % 7 ? "ok" : "Conflict",
                 "n=" + std::to_string(i)};
    auto seq = vault_->AppendAudit(e);
    ASSERT_OK(seq);
    EXPECT_EQ(*seq, kGenesisRecords + i + 1);
  }
  ASSERT_OK(vault_->VerifyAuditChain());

  AuditFilter f;
  f.page_size = 4;
  std::vector<AuditRecord> all;
  do {
    auto page = vault_->ListAudit(f);
    ASSERT_OK(page);
    for (auto& r : page->records) all.push_back(std::move(r));
    f.page_token = page->next_page_token;
  } while (!f.page_token.empty());
  ASSERT_EQ(all.size(), kGenesisRecords + 30u);
  EXPECT_EQ(all[0].event.action, kAuditGenesisAction);
  EXPECT_EQ(all[0].prev_hash, Bytes(32, 0));
  for (size_t i = 0; i < all.size(); ++i) {
    EXPECT_EQ(all[i].seq, static_cast<int64_t>(i + 1));
    auto h = AuditRecordHash(all[i].seq, all[i].event, all[i].prev_hash);
    ASSERT_OK(h);
    EXPECT_EQ(*h, all[i].hash);
    if (i > 0) {
      EXPECT_EQ(all[i].prev_hash, all[i - 1].hash);
    }
  }

  AuditFilter g;
  g.actor = "operator:alice";
  g.action = "Upload";
  auto page = vault_->ListAudit(g);
  ASSERT_OK(page);
  for (const auto& r : page->records) {
    EXPECT_EQ(r.event.actor, "operator:alice");
    EXPECT_EQ(r.event.action, "Upload");
  }
  EXPECT_EQ(page->records.size(), 10u);  // odd i not divisible by 3
  g = AuditFilter{};
  g.object = "pkg-0";
  g.time_from = kNow + 10;
  g.time_to = kNow + 20;
  page = vault_->ListAudit(g);
  ASSERT_OK(page);
  EXPECT_EQ(page->records.size(), 2u);  // i = 10, 15
  AuditEvent huge = Audit("Big");
  huge.detail = std::string(1025, 'x');
  EXPECT_CODE(vault_->AppendAudit(huge), Code::kInvalidArgument);
  g = AuditFilter{};
  g.page_token = "zz";
  EXPECT_CODE(vault_->ListAudit(g), Code::kInvalidArgument);
}

TEST_P(VaultTest, ConcurrentWritersKeepEverythingAndTheChain) {
  ASSERT_OK(vault_->UpsertPlatform(MakePlatform("p"), std::nullopt));
  constexpr int kThreads = 8;
  constexpr int kOps = 200;
  std::atomic<int> failures{0};
  std::latch start(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      start.arrive_and_wait();
      for (int i = 0; i < kOps; ++i) {
        std::string id = "t" + std::to_string(t) + "-" + std::to_string(i);
        bool ok = (i % 2 == 0)
                      ? vault_->PutPackage(MakePackage(id, "p", 2), Audit("Upload", id)).has_value()
                      : vault_->AppendAudit(Audit("Ping", id)).has_value();
        if (!ok) ++failures;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(QueryAll(*vault_, PackageQuery{}, 1000).size(), size_t{kThreads * kOps / 2});
  EXPECT_EQ(CountAudit(*vault_), kThreads * kOps);
  ASSERT_OK(vault_->VerifyAuditChain());
  ASSERT_OK(vault_->IntegrityCheck());
}

TEST_P(VaultTest, ChallengeReplayRaceHasOneWinner) {
  constexpr int kThreads = 16;
  for (int round = 0; round < 5; ++round) {
    std::string id = "race-" + std::to_string(round);
    ASSERT_OK(vault_->CreateChallenge(MakeChallenge(id, "p", "s"), std::nullopt));
    std::atomic<int> wins{0};
    std::atomic<int> replays{0};
    std::latch start(kThreads);
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&] {
        start.arrive_and_wait();
        auto r = vault_->ConsumeChallenge(id, ChallengeKind::kAuthenticate, kNow);
        if (r.has_value()) {
          ++wins;
        } else if (r.error().code() == Code::kUnauthenticated) {
          ++replays;
        }
      });
    }
    for (auto& th : threads) th.join();
    EXPECT_EQ(wins.load(), 1);
    EXPECT_EQ(replays.load(), kThreads - 1);
  }
}

TEST_P(VaultTest, ReopenKeepsEverything) {
  ASSERT_OK(vault_->UpsertPlatform(MakePlatform("old"), std::nullopt));
  ASSERT_OK(vault_->UpsertPlatform(MakePlatform("new"), std::nullopt));
  ASSERT_OK(vault_->PutPackage(MakePackage("u1", "old", 4), Audit("Upload", "u1")));
  ASSERT_OK(vault_->CreateSession(MakeSession("t", "new"), std::nullopt));
  ASSERT_OK(vault_->CreateChallenge(MakeChallenge("c", "new", "s"), std::nullopt));
  ASSERT_OK(vault_->AddOperator({"alice", OperatorRole::kHelpdesk, "ff", kNow, std::nullopt},
                                Audit("AddOperator")));
  ApprovalRequest r{"old", "new", false, {"u1"}, "swap", "alice", kNow, kNow + 100, false};
  auto a = vault_->CreateApproval(r, Audit("ApproveRestore"));
  ASSERT_OK(a);
  int64_t audit = CountAudit(*vault_);

  Reopen();
  auto pkg = vault_->GetPackage("u1");
  ASSERT_OK(pkg);
  EXPECT_EQ(pkg->descriptor.keys.size(), 4u);
  ASSERT_OK(vault_->GetSession(Sha("t"), kNow));
  ASSERT_OK(vault_->ConsumeChallenge("c", ChallengeKind::kAuthenticate, kNow));
  ASSERT_OK(vault_->GetOperatorByFingerprint("ff"));
  auto found = vault_->FindActiveApproval("new", "u1", kNow);
  ASSERT_OK(found);
  EXPECT_EQ(found->package_ids, std::vector<std::string>{"u1"});
  EXPECT_EQ(CountAudit(*vault_), audit);
  ASSERT_OK(vault_->IntegrityCheck());
  // The chain continues across the reopen.
  ASSERT_OK(vault_->AppendAudit(Audit("AfterReopen")));
  ASSERT_OK(vault_->VerifyAuditChain());
}

}  // namespace
}  // namespace tpmma::storage::testing
