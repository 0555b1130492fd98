// SPDX-License-Identifier: GPL-2.0-or-later
// Unmarshal of untrusted bytes: one value, one encoding (issue #13, found by fuzzing).
#include <gtest/gtest.h>

#include <tss2/tss2_mu.h>

#include "tpm/marshal.h"

namespace tpmma::tpm {
namespace {

// An ECC P-256 signing key's public area, built by hand (no keygen: the point need not be
// on the curve for marshalling).
TPM2B_PUBLIC EccPublic() {
  TPM2B_PUBLIC pub{};
  TPMT_PUBLIC& p = pub.publicArea;
  p.type = TPM2_ALG_ECC;
  p.nameAlg = TPM2_ALG_SHA256;
  p.objectAttributes = TPMA_OBJECT_SIGN_ENCRYPT | TPMA_OBJECT_USERWITHAUTH | TPMA_OBJECT_FIXEDTPM |
                       TPMA_OBJECT_FIXEDPARENT;
  p.parameters.eccDetail.symmetric.algorithm = TPM2_ALG_NULL;
  p.parameters.eccDetail.scheme.scheme = TPM2_ALG_NULL;
  p.parameters.eccDetail.curveID = TPM2_ECC_NIST_P256;
  p.parameters.eccDetail.kdf.scheme = TPM2_ALG_NULL;
  p.unique.ecc.x.size = 32;
  p.unique.ecc.y.size = 32;
  for (uint8_t i = 0; i < 32; ++i) {
    p.unique.ecc.x.buffer[i] = i;
    p.unique.ecc.y.buffer[i] = static_cast<uint8_t>(0x80 + i);
  }
  return pub;
}

Bytes EccPublicBytes() {
  auto bytes = Marshal(EccPublic());
  EXPECT_TRUE(bytes.has_value());
  return bytes.value_or(Bytes{});
}

TEST(MarshalCanonicalTest, CanonicalEncodingIsAccepted) {
  const Bytes bytes = EccPublicBytes();
  ASSERT_GT(bytes.size(), 2u);
  auto back = Unmarshal<TPM2B_PUBLIC>(bytes);
  ASSERT_TRUE(back.has_value()) << back.error().ToString();
  EXPECT_EQ(*Marshal(*back), bytes);
}

// tss2-mu 3.2.1 decodes "00 00" to a zeroed public area and reports success.
TEST(MarshalCanonicalTest, EmptyPublicIsRefused) {
  auto r = Unmarshal<TPM2B_PUBLIC>(Bytes{0x00, 0x00});
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), Code::kMalformed);
  EXPECT_NE(r.error().message().find("empty"), std::string::npos) << r.error().ToString();
}

// tss2-mu ignores a TPM2B_PUBLIC's size field: the same key under several encodings.
TEST(MarshalCanonicalTest, SizeFieldMustMatchContent) {
  const Bytes good = EccPublicBytes();
  for (int delta : {-1, +1, -static_cast<int>(good.size() - 2)}) {
    Bytes bad = good;
    const int size = ((good[0] << 8) | good[1]) + delta;
    bad[0] = static_cast<uint8_t>(size >> 8);
    bad[1] = static_cast<uint8_t>(size);
    auto r = Unmarshal<TPM2B_PUBLIC>(bad);
    ASSERT_FALSE(r.has_value()) << "size field off by " << delta;
    EXPECT_EQ(r.error().code(), Code::kMalformed);
    EXPECT_NE(r.error().message().find("says it holds"), std::string::npos) << r.error().ToString();
  }
}

TEST(MarshalCanonicalTest, BufferTpm2bSizeMustMatch) {
  EXPECT_TRUE(Unmarshal<TPM2B_DIGEST>(Bytes{0x00, 0x02, 0xaa, 0xbb}).has_value());
  EXPECT_FALSE(Unmarshal<TPM2B_DIGEST>(Bytes{0x00, 0x01, 0xaa, 0xbb}).has_value());
  EXPECT_FALSE(Unmarshal<TPM2B_DIGEST>(Bytes{0x00, 0x03, 0xaa, 0xbb}).has_value());
  EXPECT_FALSE(Unmarshal<TPM2B_DIGEST>(Bytes{0x00}).has_value());
  // An empty digest is a valid (canonical) TPM2B_DIGEST.
  EXPECT_TRUE(Unmarshal<TPM2B_DIGEST>(Bytes{0x00, 0x00}).has_value());
}

// The public area inside a TPMT_PUBLIC's unique field is itself a TPM2B: a short inner size
// makes the remaining bytes trailing, a long one runs past the end.
TEST(MarshalCanonicalTest, InnerSizeFieldsAreChecked) {
  TPMT_PUBLIC area = EccPublic().publicArea;
  auto bytes = Marshal(area);
  ASSERT_TRUE(bytes.has_value());
  ASSERT_TRUE(Unmarshal<TPMT_PUBLIC>(*bytes).has_value());
  // unique.ecc.x's size field sits 68 bytes from the end (2 + 32 + 2 + 32).
  Bytes bad = *bytes;
  bad[bad.size() - 68 + 1] = 31;
  EXPECT_FALSE(Unmarshal<TPMT_PUBLIC>(bad).has_value());
}

}  // namespace
}  // namespace tpmma::tpm
