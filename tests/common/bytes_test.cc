// SPDX-License-Identifier: GPL-2.0-or-later
#include "common/bytes.h"

#include <gtest/gtest.h>

namespace tpmma {
namespace {

TEST(BytesTest, HexRoundTripAndErrors) {
  Bytes b = {0x00, 0x0b, 0xff, 0x10};
  EXPECT_EQ(HexEncode(b), "000bff10");
  EXPECT_EQ(*HexDecode("000BFF10"), b);
  EXPECT_EQ(HexDecode("abc").error().code(), Code::kMalformed);
  EXPECT_EQ(HexDecode("zz").error().code(), Code::kMalformed);
}

TEST(BytesTest, Base64RoundTripAllLengths) {
  Bytes data;
  for (int i = 0; i < 70; ++i) {
    auto enc = Base64Encode(data);
    auto dec = Base64Decode(enc);
    ASSERT_TRUE(dec.has_value()) << enc;
    EXPECT_EQ(*dec, data) << enc;
    data.push_back(static_cast<uint8_t>(i * 37));
  }
}

TEST(BytesTest, Base64RefusesGarbage) {
  EXPECT_EQ(*Base64Decode("QUJD\nREVG"), ToBytes("ABCDEF"));  // XML line breaks are fine
  EXPECT_FALSE(Base64Decode("QUJ").has_value());            // truncated
  EXPECT_FALSE(Base64Decode("QU*D").has_value());           // outside the alphabet
  EXPECT_FALSE(Base64Decode("QQ==QUJD").has_value());       // padding in the middle
  EXPECT_FALSE(Base64Decode("QUJD!!!!").has_value());
}

TEST(BytesTest, ConstantTimeEqual) {
  EXPECT_TRUE(ConstantTimeEqual(View("abc"), View("abc")));
  EXPECT_FALSE(ConstantTimeEqual(View("abc"), View("abd")));
  EXPECT_FALSE(ConstantTimeEqual(View("abc"), View("ab")));
}

TEST(BytesTest, RandomBytesDiffer) {
  auto a = RandomBytes(32), b = RandomBytes(32);
  ASSERT_TRUE(a && b);
  EXPECT_EQ(a->size(), 32u);
  EXPECT_NE(*a, *b);
}

}  // namespace
}  // namespace tpmma
