// SPDX-License-Identifier: GPL-2.0-or-later
// Software-only checks of marshalling, public areas, seeds, outer wrap, credential and
// re-wrap; the interop with real TPMs is in swtpm_interop_test.cc.
#include <gtest/gtest.h>
#include <openssl/evp.h>

#include "common/openssl.h"
#include "tpm/credential.h"
#include "tpm/escrow.h"
#include "tpm/marshal.h"
#include "tpm/public.h"
#include "tpm/rewrap.h"
#include "tpm/wrap.h"

namespace tpmma::tpm {
namespace {

EvpPkeyPtr GenRsa(int bits) {
  return EvpPkeyPtr(EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", static_cast<size_t>(bits)));
}
EvpPkeyPtr GenEc(const char* curve) {
  return EvpPkeyPtr(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", curve));
}

// One RSA key for the whole binary: keygen is the slow part.
EVP_PKEY* MaKey() {
  static EvpPkeyPtr key = GenRsa(2048);
  return key.get();
}

TEST(MarshalTest, RoundTripAndTrailingBytes) {
  auto pub = MaStoragePublic(MaKey());
  ASSERT_TRUE(pub.has_value()) << pub.error().ToString();
  auto bytes = Marshal(*pub);
  ASSERT_TRUE(bytes.has_value());
  auto back = Unmarshal<TPM2B_PUBLIC>(*bytes);
  ASSERT_TRUE(back.has_value()) << back.error().ToString();
  EXPECT_EQ(*Marshal(*back), *bytes);
  Bytes longer = *bytes;
  longer.push_back(0);
  EXPECT_EQ(Unmarshal<TPM2B_PUBLIC>(longer).error().code(), Code::kMalformed);
  Bytes shorter(bytes->begin(), bytes->end() - 1);
  EXPECT_EQ(Unmarshal<TPM2B_PUBLIC>(shorter).error().code(), Code::kMalformed);
  EXPECT_EQ(Unmarshal<TPM2B_PRIVATE>(Bytes{}).error().code(), Code::kMalformed);
}

TEST(PublicTest, MaStoragePublicShape) {
  auto pub = MaStoragePublic(MaKey());
  ASSERT_TRUE(pub.has_value());
  const TPMT_PUBLIC& p = pub->publicArea;
  EXPECT_EQ(p.type, TPM2_ALG_RSA);
  EXPECT_EQ(p.nameAlg, TPM2_ALG_SHA256);
  EXPECT_EQ(p.objectAttributes,
            TPMA_OBJECT_RESTRICTED | TPMA_OBJECT_DECRYPT | TPMA_OBJECT_USERWITHAUTH);
  EXPECT_EQ(p.parameters.rsaDetail.exponent, 65537u);  // explicit, as tpm2_loadexternal writes it
  EXPECT_EQ(p.parameters.rsaDetail.keyBits, 2048);
  EXPECT_TRUE(CheckStorageParent(p).ok());
  auto name = ComputeName(p);
  ASSERT_TRUE(name.has_value());
  EXPECT_EQ(name->size(), 34u);
  EXPECT_EQ((*name)[0], 0x00);
  EXPECT_EQ((*name)[1], 0x0b);
}

// What the helpdesk reads on the review of a restore (the SRK row).
TEST(PublicTest, KeyAlgorithmTextNamesRsaSizesCurvesAndTheRestByNumber) {
  TPMT_PUBLIC p{};
  p.type = TPM2_ALG_RSA;
  p.parameters.rsaDetail.keyBits = 3072;
  EXPECT_EQ(KeyAlgorithmText(p), "RSA 3072");
  p = TPMT_PUBLIC{};
  p.type = TPM2_ALG_ECC;
  p.parameters.eccDetail.curveID = TPM2_ECC_NIST_P256;
  EXPECT_EQ(KeyAlgorithmText(p), "ECC NIST P-256");
  p.parameters.eccDetail.curveID = TPM2_ECC_NIST_P384;
  EXPECT_EQ(KeyAlgorithmText(p), "ECC NIST P-384");
  p.parameters.eccDetail.curveID = TPM2_ECC_BN_P256;
  EXPECT_EQ(KeyAlgorithmText(p), "ECC curve 0x0010");
  p = TPMT_PUBLIC{};
  p.type = TPM2_ALG_KEYEDHASH;
  EXPECT_EQ(KeyAlgorithmText(p), "algorithm 0x0008");
}

TEST(PublicTest, EvpRoundTripRsaAndEcc) {
  for (EVP_PKEY* key : {MaKey()}) {
    auto pub = MaStoragePublic(key);
    ASSERT_TRUE(pub.has_value());
    auto back = PublicToEvp(pub->publicArea);
    ASSERT_TRUE(back.has_value()) << back.error().ToString();
    EXPECT_EQ(EVP_PKEY_eq(key, back->get()), 1);
  }
  for (const char* curve : {"P-256", "P-384"}) {
    EvpPkeyPtr ec = GenEc(curve);
    auto pub = MaStoragePublic(ec.get());
    ASSERT_TRUE(pub.has_value()) << pub.error().ToString();
    auto back = PublicToEvp(pub->publicArea);
    ASSERT_TRUE(back.has_value()) << back.error().ToString();
    EXPECT_EQ(EVP_PKEY_eq(ec.get(), back->get()), 1) << curve;
  }
  // Exponent 0 means 65537.
  auto pub = MaStoragePublic(MaKey());
  pub->publicArea.parameters.rsaDetail.exponent = 0;
  auto back = PublicToEvp(pub->publicArea);
  ASSERT_TRUE(back.has_value());
  EXPECT_EQ(EVP_PKEY_eq(MaKey(), back->get()), 1);
}

TEST(PublicTest, OffCurvePointRejected) {
  EvpPkeyPtr ec = GenEc("P-256");
  auto pub = MaStoragePublic(ec.get());
  pub->publicArea.unique.ecc.y.buffer[5] ^= 1;
  EXPECT_FALSE(PublicToEvp(pub->publicArea).has_value());
}

TEST(PublicTest, AttributeChecksNameTheAttribute) {
  TPMT_PUBLIC ak{};
  ak.type = TPM2_ALG_RSA;
  ak.nameAlg = TPM2_ALG_SHA256;
  ak.objectAttributes = TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT |
                        TPMA_OBJECT_SENSITIVEDATAORIGIN | TPMA_OBJECT_RESTRICTED |
                        TPMA_OBJECT_SIGN_ENCRYPT | TPMA_OBJECT_USERWITHAUTH;
  EXPECT_TRUE(CheckAkAttributes(ak).ok());
  TPMT_PUBLIC bad = ak;
  bad.objectAttributes &= ~TPMA_OBJECT_FIXEDTPM;
  Status s = CheckAkAttributes(bad);
  EXPECT_EQ(s.code(), Code::kInvalidArgument);
  EXPECT_NE(s.message().find("fixedTPM"), std::string::npos) << s.message();
  bad = ak;
  bad.objectAttributes |= TPMA_OBJECT_DECRYPT;
  EXPECT_NE(CheckAkAttributes(bad).message().find("decrypt"), std::string::npos);

  auto parent = MaStoragePublic(MaKey());
  TPMT_PUBLIC sp = parent->publicArea;
  sp.objectAttributes |= TPMA_OBJECT_SIGN_ENCRYPT;
  EXPECT_NE(CheckStorageParent(sp).message().find("sign"), std::string::npos);
  sp = parent->publicArea;
  sp.objectAttributes &= ~TPMA_OBJECT_RESTRICTED;
  EXPECT_NE(CheckStorageParent(sp).message().find("restricted"), std::string::npos);
  sp = parent->publicArea;
  sp.parameters.rsaDetail.symmetric.algorithm = TPM2_ALG_NULL;
  EXPECT_NE(CheckStorageParent(sp).message().find("AES-CFB"), std::string::npos);
}

class WrapTest : public ::testing::TestWithParam<const char*> {};

TEST_P(WrapTest, SeedAndOuterWrapRoundTrip) {
  EvpPkeyPtr ec;
  EVP_PKEY* priv = MaKey();
  if (std::string(GetParam()) != "RSA") {
    ec = GenEc(GetParam());
    priv = ec.get();
  }
  auto parent = MaStoragePublic(priv);
  ASSERT_TRUE(parent.has_value());
  const TPMT_PUBLIC& p = parent->publicArea;
  auto seed = CreateSeed(p, kDuplicateLabel);
  ASSERT_TRUE(seed.has_value()) << seed.error().ToString();
  EXPECT_EQ(seed->seed.size(), 32u);
  auto recovered = RecoverSeed(priv, p, seed->encrypted, kDuplicateLabel);
  ASSERT_TRUE(recovered.has_value()) << recovered.error().ToString();
  EXPECT_EQ(*recovered, seed->seed);
  // The label is bound in: a credential seed is not a duplication seed.
  auto wrong_label = RecoverSeed(priv, p, seed->encrypted, kIdentityLabel);
  EXPECT_TRUE(!wrong_label.has_value() || *wrong_label != seed->seed);

  const Bytes name = *ComputeName(p);
  const Bytes inner = ToBytes("inner payload that must pass through untouched");
  auto body = OuterWrap(p, seed->seed, name, inner);
  ASSERT_TRUE(body.has_value()) << body.error().ToString();
  auto plain = OuterUnwrap(p, seed->seed, name, *body);
  ASSERT_TRUE(plain.has_value()) << plain.error().ToString();
  EXPECT_EQ(Bytes(plain->begin(), plain->end()), inner);

  for (size_t i : {size_t{3}, body->size() - 1}) {
    Bytes flipped = *body;
    flipped[i] ^= 0x01;
    EXPECT_EQ(OuterUnwrap(p, seed->seed, name, flipped).error().code(), Code::kIntegrityFailure)
        << i;
  }
  Bytes other_name = name;
  other_name.back() ^= 1;
  EXPECT_EQ(OuterUnwrap(p, seed->seed, other_name, *body).error().code(), Code::kIntegrityFailure);
}

INSTANTIATE_TEST_SUITE_P(Parents, WrapTest, ::testing::Values("RSA", "P-256", "P-384"));

TEST(CredentialTest, FormatsAndLimits) {
  auto ek = MaStoragePublic(MaKey());
  Bytes ak_name = *ComputeName(ek->publicArea);
  Bytes secret(32, 0x5a);
  auto cred = MakeCredential(*ek, ak_name, secret);
  ASSERT_TRUE(cred.has_value()) << cred.error().ToString();
  EXPECT_EQ(cred->encrypted_secret.size, 256);
  auto file = CredentialFile(*cred);
  ASSERT_TRUE(file.has_value());
  EXPECT_EQ(Bytes(file->begin(), file->begin() + 8), (Bytes{0xba, 0xdc, 0xc0, 0xde, 0, 0, 0, 1}));
  EXPECT_EQ(MakeCredential(*ek, ak_name, Bytes(33, 1)).error().code(), Code::kInvalidArgument);
  EXPECT_EQ(MakeCredential(*ek, ak_name, Bytes{}).error().code(), Code::kInvalidArgument);
}

TEST(RewrapTest, SoftwareRoundTripToRsaAndEcc) {
  auto ma = MaStoragePublic(MaKey());
  EvpPkeyPtr obj_key = GenEc("P-256");
  PublicTemplate t;
  t.attributes |= TPMA_OBJECT_SENSITIVEDATAORIGIN;
  auto object = PublicFromEvp(obj_key.get(), t);
  ASSERT_TRUE(object.has_value());
  Bytes obj_name = *ComputeName(object->publicArea);
  const Bytes inner = ToBytes("opaque inner-wrapped sensitive");
  auto seed = CreateSeed(ma->publicArea, kDuplicateLabel);
  auto body = OuterWrap(ma->publicArea, seed->seed, obj_name, inner);
  TPM2B_PRIVATE dup{};
  ASSERT_TRUE(FillTpm2b(dup, *body).ok());
  TPM2B_ENCRYPTED_SECRET enc{};
  enc.size = static_cast<uint16_t>(seed->encrypted.size());
  std::copy(seed->encrypted.begin(), seed->encrypted.end(), enc.secret);

  EvpPkeyPtr ec_parent = GenEc("P-256");
  auto ecc_pub = MaStoragePublic(ec_parent.get());
  for (auto [np_priv, np_pub] : {std::pair{MaKey(), *ma}, std::pair{ec_parent.get(), *ecc_pub}}) {
    auto rw = Rewrap(MaKey(), ma->publicArea, *object, dup, enc, np_pub);
    ASSERT_TRUE(rw.has_value()) << rw.error().ToString();
    auto s2 =
        RecoverSeed(np_priv, np_pub.publicArea,
                    ByteView(rw->encrypted_seed.secret, rw->encrypted_seed.size), kDuplicateLabel);
    ASSERT_TRUE(s2.has_value()) << s2.error().ToString();
    auto plain = OuterUnwrap(np_pub.publicArea, *s2, obj_name, Tpm2bView(rw->duplicate));
    ASSERT_TRUE(plain.has_value()) << plain.error().ToString();
    EXPECT_EQ(Bytes(plain->begin(), plain->end()), inner);
  }
  // Tampered duplicate: integrity failure, nothing produced.
  TPM2B_PRIVATE bad = dup;
  bad.buffer[bad.size - 1] ^= 0x80;
  EXPECT_EQ(Rewrap(MaKey(), ma->publicArea, *object, bad, enc, *ecc_pub).error().code(),
            Code::kIntegrityFailure);
  // A signing key is not a storage parent.
  TPM2B_PUBLIC signer = *ecc_pub;
  signer.publicArea.objectAttributes |= TPMA_OBJECT_SIGN_ENCRYPT;
  EXPECT_EQ(Rewrap(MaKey(), ma->publicArea, *object, dup, enc, signer).error().code(),
            Code::kInvalidArgument);
}

TEST(EscrowTest, RoundTripAndBinding) {
  static EvpPkeyPtr escrow = GenRsa(2048);
  auto pub = EscrowPublicFromEvp(escrow.get());
  ASSERT_TRUE(pub.has_value()) << pub.error().ToString();
  EXPECT_EQ(pub->publicArea.objectAttributes, TPMA_OBJECT_DECRYPT | TPMA_OBJECT_USERWITHAUTH);
  const Bytes inner(16, 0x5a);
  const Bytes mrk_name = {0x00, 0x0b, 1, 2, 3};
  auto ct = EscrowEncrypt(pub->publicArea, inner, "platform-a", mrk_name);
  ASSERT_TRUE(ct.has_value()) << ct.error().ToString();
  EXPECT_EQ(ct->size(), 256u);

  auto plain = EscrowDecrypt(escrow.get(), *ct);
  ASSERT_TRUE(plain.has_value()) << plain.error().ToString();
  auto opened = EscrowOpen(*plain, "platform-a", mrk_name);
  ASSERT_TRUE(opened.has_value()) << opened.error().ToString();
  EXPECT_EQ(Bytes(opened->begin(), opened->end()), inner);

  // Another platform or another MRK: the same blob does not open.
  auto other_platform = EscrowOpen(*plain, "platform-b", mrk_name);
  ASSERT_FALSE(other_platform.has_value());
  EXPECT_EQ(other_platform.error().code(), Code::kIntegrityFailure);
  auto other_mrk = EscrowOpen(*plain, "platform-a", Bytes{0x00, 0x0b, 1, 2, 4});
  ASSERT_FALSE(other_mrk.has_value());
  EXPECT_EQ(other_mrk.error().code(), Code::kIntegrityFailure);

  // A flipped bit, or a blob for another key, never decrypts; the message says no more.
  Bytes flipped = *ct;
  flipped[100] ^= 1;
  auto bad = EscrowDecrypt(escrow.get(), flipped);
  ASSERT_FALSE(bad.has_value());
  EXPECT_EQ(bad.error().code(), Code::kIntegrityFailure);
  auto wrong_key = EscrowDecrypt(MaKey(), *ct);
  ASSERT_FALSE(wrong_key.has_value());
  EXPECT_EQ(wrong_key.error().code(), Code::kIntegrityFailure);

  // Only a plain RSA decryption key of at least 2048 bits can be an escrow key.
  auto storage = MaStoragePublic(MaKey());
  ASSERT_TRUE(storage.has_value());
  EXPECT_EQ(CheckEscrowKey(storage->publicArea).code(), Code::kInvalidArgument);
  EXPECT_FALSE(EscrowEncrypt(storage->publicArea, inner, "p", mrk_name).has_value());
  EXPECT_FALSE(EscrowEncrypt(pub->publicArea, Bytes(8, 1), "p", mrk_name).has_value());
}

}  // namespace
}  // namespace tpmma::tpm
