// SPDX-License-Identifier: GPL-2.0-or-later
// The package items lms writes for applications (client/lms/app_data.h), including what a
// hostile package could put in them.
#include "client/lms/app_data.h"

#include <gtest/gtest.h>
#include <zlib.h>

#include "client/lms/mrk_handle.h"

namespace tpmma::lms {
namespace {

using schema::ApplicationData;
using schema::ApplicationDataType;

TEST(AppData, OpaqueItemsAreFoundByExactName) {
  std::vector<ApplicationData> items = {OpaqueItem("tpm-ma:other", ToBytes("x")),
                                        OpaqueItem(kMrkHandleItem, ToBytes("0x81000100")),
                                        {ApplicationDataType::kOpaque, ToBytes("no newline")}};
  EXPECT_EQ(FindOpaqueItem(items, kMrkHandleItem), ToBytes("0x81000100"));
  EXPECT_FALSE(FindOpaqueItem(items, "tpm-ma:mrk").has_value());  // a prefix is not the name
  EXPECT_FALSE(FindOpaqueItem(items, "no newline").has_value());
  EXPECT_EQ(*MrkHandleOf(items), 0x81000100u);
  EXPECT_EQ(*MrkHandleOf({}), 0u);  // a package from before issue #11
  // A certificate is not an opaque item, even with a matching prefix.
  items = {{ApplicationDataType::kX509Certificate, OpaqueItem(kMrkHandleItem, {}).value}};
  EXPECT_FALSE(FindOpaqueItem(items, kMrkHandleItem).has_value());
}

TEST(AppData, MrkHandleMustBeAPersistentHandle) {
  for (const char* bad : {"0x80000001", "none", "81000100x", "", "0x1_81000100"}) {
    auto h = MrkHandleOf({OpaqueItem(kMrkHandleItem, ToBytes(bad))});
    ASSERT_FALSE(h.has_value()) << bad;
    EXPECT_EQ(h.error().code(), Code::kMalformed) << bad;
  }
  EXPECT_EQ(*ParseMrkHandle("0x81000100"), 0x81000100u);
  EXPECT_EQ(*ParseMrkHandle("817fffff"), 0x817fffffu);
  EXPECT_EQ(*ParseMrkHandle("none"), 0u);
  EXPECT_FALSE(ParseMrkHandle("0x81800000").has_value());  // the platform's range
  EXPECT_FALSE(ParseMrkHandle("0x1000000000081000100").has_value());
}

TEST(AppData, Pkcs11StoreRoundTripsCompressed) {
  Bytes db(45056, 0);  // a token store is mostly empty pages
  for (size_t i = 0; i < db.size(); i += 97) db[i] = static_cast<uint8_t>(i);
  auto item = Pkcs11StoreItem(db);
  ASSERT_TRUE(item.has_value()) << item.error().ToString();
  EXPECT_LT(item->value.size(), db.size() / 4);
  auto back = Pkcs11StoreOf({*item});
  ASSERT_TRUE(back.has_value() && back->has_value());
  EXPECT_EQ(**back, db);
  EXPECT_FALSE(Pkcs11StoreOf({})->has_value());
}

TEST(AppData, Pkcs11StoreThatDoesNotFitIsRefusedAtBackup) {
  Bytes noise(200000);
  uint32_t x = 1;
  for (auto& b : noise) b = static_cast<uint8_t>((x = x * 1103515245 + 12345) >> 24);
  auto item = Pkcs11StoreItem(noise);
  ASSERT_FALSE(item.has_value());
  EXPECT_EQ(item.error().code(), Code::kLimitExceeded);
  EXPECT_NE(item.error().message().find("too large for a package"), std::string::npos);
}

TEST(AppData, HostilePkcs11StoreItemsAreRefused) {
  // Damaged: not zlib at all, or cut short.
  auto bad = Pkcs11StoreOf({OpaqueItem(kPkcs11StoreItem, ToBytes("not zlib"))});
  ASSERT_FALSE(bad.has_value());
  EXPECT_EQ(bad.error().code(), Code::kMalformed);
  auto good = Pkcs11StoreItem(Bytes(1000, 7));
  ASSERT_TRUE(good.has_value());
  const size_t head = kPkcs11StoreItem.size() + 1;  // "tpm-ma:pkcs11-store\n"
  for (size_t keep = head; keep < good->value.size(); ++keep) {
    ApplicationData a = *good;
    a.value.resize(keep);
    auto cut = Pkcs11StoreOf({a});
    ASSERT_FALSE(cut.has_value()) << keep;
    EXPECT_EQ(cut.error().code(), Code::kMalformed) << keep;
  }
  // A bomb: 64 MiB of zeros packs into about 64 KiB; it must not be unpacked past 16 MiB.
  Bytes zeros(64 << 20, 0);
  uLongf size = compressBound(static_cast<uLong>(zeros.size()));
  Bytes packed(size);
  ASSERT_EQ(compress2(packed.data(), &size, zeros.data(), static_cast<uLong>(zeros.size()), 9),
            Z_OK);
  packed.resize(size);
  auto bomb = Pkcs11StoreOf({OpaqueItem(kPkcs11StoreItem, packed)});
  ASSERT_FALSE(bomb.has_value());
  EXPECT_EQ(bomb.error().code(), Code::kLimitExceeded);
}

}  // namespace
}  // namespace tpmma::lms
