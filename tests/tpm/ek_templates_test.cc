// SPDX-License-Identifier: GPL-2.0-or-later
// The TCG EK templates (tpm/ek_templates.h) in software: the marshalled L-1 and L-2 bytes
// against the profile's field layout written out by hand, PolicyA recomputed, every template
// accepting a key of its own shape, and the refusals naming what differs. That tpm2_createek
// and TPM2_CreatePrimary produce publics these templates accept is checked on swtpm
// (tests/tpm/swtpm_interop_test.cc TcgEkTemplatesMatchTheTpm).
#include "tpm/ek_templates.h"

#include <openssl/sha.h>

#include <gtest/gtest.h>

#include "tests/support/status_testing.h"
#include "tpm/marshal.h"
#include "tpm/public.h"

namespace tpmma::tpm {
namespace {

TPMT_PUBLIC Filled(const TPMT_PUBLIC& t) {
  TPMT_PUBLIC p = t;
  if (p.type == TPM2_ALG_RSA) {
    p.unique.rsa.size = p.parameters.rsaDetail.keyBits / 8;
    p.unique.rsa.buffer[0] = 0xc3;
  } else {
    const uint16_t n = p.parameters.eccDetail.curveID == TPM2_ECC_NIST_P384   ? 48
                       : p.parameters.eccDetail.curveID == TPM2_ECC_NIST_P521 ? 66
                                                                              : 32;
    p.unique.ecc.x.size = p.unique.ecc.y.size = n;
    p.unique.ecc.x.buffer[0] = 0x5a;
  }
  return p;
}

std::string Refusal(const TPMT_PUBLIC& p, std::span<const EkTemplate> extra = {}) {
  Status s = CheckEkTemplate(p, extra);
  EXPECT_EQ(s.code(), Code::kUnauthenticated) << s.ToString();
  return s.message();
}

TEST(EkTemplates, LowRangeBytesAreTheProfilesLayout) {
  const std::string policy_a = "837197674484b3f81a90cc8d46a5d724fd52d76e06520b64f2a1da1b331469aa";
  // type, nameAlg, objectAttributes, authPolicy, AES-128-CFB, scheme NULL, then per type.
  const std::string head = "000b000300b20020" + policy_a + "000600800043" + "0010";
  ASSERT_OK_AND_ASSIGN(Bytes l1, Marshal(TcgEkTemplate("L-1").public_area));
  EXPECT_EQ(HexEncode(l1), "0001" + head + "0800" + "00000000" + "0100" + std::string(512, '0'));
  ASSERT_OK_AND_ASSIGN(Bytes l2, Marshal(TcgEkTemplate("L-2").public_area));
  EXPECT_EQ(HexEncode(l2), "0023" + head + "0003" + "0010" + "0020" + std::string(64, '0') +
                               "0020" + std::string(64, '0'));
  EXPECT_EQ(TcgEkTemplate("L-1").cert_index, 0x01c00002u);
  EXPECT_EQ(TcgEkTemplate("L-2").cert_index, 0x01c0000au);
}

TEST(EkTemplates, PolicyAIsPolicySecretOfTheEndorsementHierarchy) {
  // PolicySecret: H(H(0^32 || TPM_CC_PolicySecret || Name(TPM_RH_ENDORSEMENT)) || policyRef "").
  Bytes first(32, 0);
  for (uint8_t b : {0x00, 0x00, 0x01, 0x51, 0x40, 0x00, 0x00, 0x0b}) first.push_back(b);
  uint8_t d1[32], d2[32];
  SHA256(first.data(), first.size(), d1);
  SHA256(d1, sizeof d1, d2);
  const TPM2B_DIGEST& a = TcgEkTemplate("L-1").public_area.authPolicy;
  EXPECT_EQ(HexEncode(ByteView(a.buffer, a.size)), HexEncode(ByteView(d2, sizeof d2)));
}

TEST(EkTemplates, EveryTemplateAcceptsAKeyOfItsShape) {
  ASSERT_EQ(TcgEkTemplates().size(), 9u);
  for (const EkTemplate& t : TcgEkTemplates()) {
    const TPMT_PUBLIC& p = t.public_area;
    const bool high = t.name[0] == 'H';
    EXPECT_EQ(p.objectAttributes, high ? 0x000300f2u : 0x000300b2u) << t.name;
    // SM3-256 (H-5) is 32 bytes; tpm::DigestSize knows only what OpenSSL hashes here.
    const size_t digest = p.nameAlg == TPM2_ALG_SM3_256 ? 32 : *DigestSize(p.nameAlg);
    EXPECT_EQ(p.authPolicy.size, digest) << t.name;
    EXPECT_TRUE(EkTemplateDifferences(Filled(p), p).empty()) << t.name;
    Status s = CheckEkTemplate(Filled(p));
    EXPECT_TRUE(s.ok()) << t.name << ": " << s.ToString();
  }
}

TEST(EkTemplates, TheSameKeyUnderAnotherPublicAreaIsRefusedNamingTheDifference) {
  const TPMT_PUBLIC ek = Filled(TcgEkTemplate("L-1").public_area);
  TPMT_PUBLIC p = ek;
  p.objectAttributes |= TPMA_OBJECT_NODA;
  EXPECT_EQ(Refusal(p),
            "EK public is not a TCG EK template (closest: L-1): objectAttributes 0x000304b2 "
            "(expected 0x000300b2)");
  p = ek;
  p.authPolicy.size = 0;
  EXPECT_EQ(Refusal(p),
            "EK public is not a TCG EK template (closest: L-1): authPolicy empty (expected "
            "837197674484b3f8...)");
  p = ek;
  p.nameAlg = TPM2_ALG_SHA384;
  EXPECT_EQ(Refusal(p),
            "EK public is not a TCG EK template (closest: L-1): nameAlg SHA-384 (expected "
            "SHA-256)");
  p = ek;
  p.unique.rsa.size = 128;
  EXPECT_NE(Refusal(p).find("unique 128 bytes (expected 256 for RSA-2048)"), std::string::npos);
  p = ek;
  p.parameters.rsaDetail.symmetric.keyBits.aes = 256;
  EXPECT_NE(Refusal(p).find("symmetric AES-256-CFB (expected AES-128-CFB)"), std::string::npos);
  p = Filled(TcgEkTemplate("L-2").public_area);
  p.parameters.eccDetail.curveID = TPM2_ECC_NIST_P384;
  EXPECT_NE(Refusal(p).find("not a TCG EK template"), std::string::npos);
  p = ek;
  p.type = TPM2_ALG_KEYEDHASH;
  EXPECT_EQ(Refusal(p), "EK public is not a TCG EK template: type 0x0008");
}

TEST(EkTemplates, AConfiguredTemplateIsAcceptedToo) {
  TPMT_PUBLIC p = TcgEkTemplate("L-1").public_area;
  p.objectAttributes |= TPMA_OBJECT_NODA;
  ASSERT_OK(CheckConfiguredEkTemplate(p));
  std::vector<EkTemplate> extra = {EkTemplate{"site.pub", 0, p}};
  EXPECT_TRUE(CheckEkTemplate(Filled(p), extra).ok());
  TPMT_PUBLIC q = Filled(p);
  q.nameAlg = TPM2_ALG_SHA384;
  EXPECT_NE(Refusal(q, extra).find("nameAlg SHA-384"), std::string::npos);
  // A signing key is no EK template.
  p.objectAttributes = (p.objectAttributes & ~TPMA_OBJECT_DECRYPT) | TPMA_OBJECT_SIGN_ENCRYPT;
  EXPECT_EQ(CheckConfiguredEkTemplate(p).code(), Code::kInvalidArgument);
}

}  // namespace
}  // namespace tpmma::tpm
