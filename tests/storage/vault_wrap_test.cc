// SPDX-License-Identifier: GPL-2.0-or-later
// Backend-independent tests of the Vault contract for outer wraps (issue #16, MA key
// rotation): which storage key holds each package's outer wrap, the re-enciphered wrap kept
// beside the signed document, counts and lists by key, moves that skip a package another job
// moved (or that was deleted), and packages from before the column recorded in one step.
#include <openssl/evp.h>

#include "tests/storage/vault_test.h"

namespace tpmma::storage::testing {
namespace {

constexpr int64_t kNow = 1'800'000'000;
const std::string kAlice = "000b" + std::string(64, 'a');

Package MakeWrapped(const std::string& id, const std::string& key_id) {
  Package p;
  p.descriptor.package_id = id;
  p.descriptor.source_platform_id = kAlice;
  p.descriptor.format_version = "1";
  p.descriptor.created_at = kNow;
  p.descriptor.uploaded_at = kNow;
  p.descriptor.wrap_key_id = key_id;
  p.body = ToBytes("<Package id='" + id + "'/>");
  p.descriptor.sha256 = Bytes(32);
  unsigned int n = 0;
  EVP_Digest(p.body.data(), p.body.size(), p.descriptor.sha256.data(), &n, EVP_sha256(), nullptr);
  return p;
}

AuditEvent Event(const std::string& action) {
  return AuditEvent{kNow, "ma-admin", action, "ma-key", "ok", "test"};
}

std::string Id(int i) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "3f2504e0-4f89-41d3-9a0c-%012d", i);
  return buf;
}

void AddAlice(Vault& v) {
  Platform p;
  p.id = kAlice;
  p.ek_public = ToBytes("ek");
  p.ak_public = ToBytes("ak");
  p.ak_name = ToBytes("akname");
  p.created_at = kNow;
  p.last_seen_at = kNow;
  ASSERT_OK(v.UpsertPlatform(p, std::nullopt));
}

int64_t Count(Vault& v, const std::string& key_id) {
  auto counts = v.CountPackagesByWrapKey();
  EXPECT_TRUE(counts.has_value());
  if (!counts) return -1;
  for (const WrapCount& c : *counts) {
    if (c.key_id == key_id) return c.packages;
  }
  return 0;
}

TEST_P(VaultTest, WrapTheWrapKeyAndAReencipheredWrapAreKept) {
  ASSERT_NO_FATAL_FAILURE(AddAlice(*vault_));
  Package plain = MakeWrapped(Id(1), "ma-1");
  Package moved = MakeWrapped(Id(2), "ma-2");
  moved.rewrap = OuterWrap{ToBytes("dup under ma-2"), ToBytes("seed under ma-2")};
  ASSERT_OK(vault_->PutPackage(plain, Event("Upload")));
  ASSERT_OK(vault_->PutPackage(moved, Event("Upload")));
  ASSERT_NO_FATAL_FAILURE(Reopen());
  auto got = vault_->GetPackage(Id(1));
  ASSERT_OK(got);
  EXPECT_EQ(got->descriptor.wrap_key_id, "ma-1");
  EXPECT_FALSE(got->rewrap.has_value());
  got = vault_->GetPackage(Id(2));
  ASSERT_OK(got);
  EXPECT_EQ(got->descriptor.wrap_key_id, "ma-2");
  EXPECT_EQ(got->rewrap, moved.rewrap);
  EXPECT_EQ(got->body, moved.body);  // the document as the platform signed it
  auto d = vault_->GetPackageDescriptor(Id(2));
  ASSERT_OK(d);
  EXPECT_EQ(d->wrap_key_id, "ma-2");
  PackageQuery q;
  auto page = vault_->QueryPackages(q);
  ASSERT_OK(page);
  ASSERT_EQ(page->packages.size(), 2u);
  EXPECT_EQ(page->packages[0].wrap_key_id, "ma-1");
  EXPECT_EQ(page->packages[1].key_count, 0);
}

TEST_P(VaultTest, WrapReplaceMovesOnlyWhatTheOldKeyStillHolds) {
  ASSERT_NO_FATAL_FAILURE(AddAlice(*vault_));
  for (int i = 1; i <= 5; ++i)
    ASSERT_OK(vault_->PutPackage(MakeWrapped(Id(i), "ma-1"), Event("Upload")));
  EXPECT_EQ(Count(*vault_, "ma-1"), 5);
  auto first = vault_->ListPackagesWrappedTo("ma-1", 3);
  ASSERT_OK(first);
  EXPECT_EQ(*first, (std::vector<std::string>{Id(1), Id(2), Id(3)}));  // oldest first
  ASSERT_OK(vault_->DeletePackage(Id(3), Event("Delete")));
  std::vector<WrapUpdate> updates;
  for (const std::string& id : *first) {
    updates.push_back({id, "ma-1", "ma-2", OuterWrap{ToBytes("d" + id), ToBytes("s" + id)}});
  }
  auto moved = vault_->ReplaceOuterWraps(updates, Event("ReencipherBatch"));
  ASSERT_OK(moved);
  EXPECT_EQ(*moved, 2);  // the deleted one is left alone
  // Run again (another instance got there first): nothing moves twice.
  moved = vault_->ReplaceOuterWraps(updates, Event("ReencipherBatch"));
  ASSERT_OK(moved);
  EXPECT_EQ(*moved, 0);
  EXPECT_EQ(Count(*vault_, "ma-1"), 2);
  EXPECT_EQ(Count(*vault_, "ma-2"), 2);
  auto rest = vault_->ListPackagesWrappedTo("ma-1", 100);
  ASSERT_OK(rest);
  EXPECT_EQ(*rest, (std::vector<std::string>{Id(4), Id(5)}));
  auto got = vault_->GetPackage(Id(2));
  ASSERT_OK(got);
  EXPECT_EQ(got->descriptor.wrap_key_id, "ma-2");
  ASSERT_TRUE(got->rewrap.has_value());
  EXPECT_EQ(got->rewrap->duplicate, ToBytes("d" + Id(2)));
  auto chain = vault_->CheckAuditChain();
  ASSERT_OK(chain);
}

TEST_P(VaultTest, WrapUnrecordedWrapsAreAssignedOnce) {
  ASSERT_NO_FATAL_FAILURE(AddAlice(*vault_));
  ASSERT_OK(vault_->PutPackage(MakeWrapped(Id(1), ""), Event("Upload")));
  ASSERT_OK(vault_->PutPackage(MakeWrapped(Id(2), ""), Event("Upload")));
  ASSERT_OK(vault_->PutPackage(MakeWrapped(Id(3), "ma-2"), Event("Upload")));
  EXPECT_EQ(Count(*vault_, ""), 2);
  EXPECT_CODE(vault_->AssignUnrecordedWraps("", Event("RecordWrapKeys")), Code::kInvalidArgument);
  auto n = vault_->AssignUnrecordedWraps("ma-1", Event("RecordWrapKeys"));
  ASSERT_OK(n);
  EXPECT_EQ(*n, 2);
  n = vault_->AssignUnrecordedWraps("ma-9", Event("RecordWrapKeys"));
  ASSERT_OK(n);
  EXPECT_EQ(*n, 0);
  EXPECT_EQ(Count(*vault_, ""), 0);
  EXPECT_EQ(Count(*vault_, "ma-1"), 2);
  EXPECT_EQ(Count(*vault_, "ma-2"), 1);
}

}  // namespace

}  // namespace tpmma::storage::testing
