// SPDX-License-Identifier: GPL-2.0-or-later
// KDFa/KDFe against an independent implementation: the TPM spec formulas spelled out as
// plain HMAC / hash loops here, so a mis-parameterised OpenSSL KBKDF/SSKDF cannot hide.
#include "tpm/kdf.h"

#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <string>

namespace tpmma::tpm {
namespace {

Bytes U32(uint32_t v) {
  return {uint8_t(v >> 24), uint8_t(v >> 16), uint8_t(v >> 8), uint8_t(v)};
}

Bytes Cat(std::initializer_list<ByteView> parts) {
  Bytes out;
  for (auto p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

Bytes RefKdfa(const EVP_MD* md, ByteView key, std::string label, ByteView u, ByteView v,
              size_t bits) {
  Bytes out;
  Bytes lbl = ToBytes(label);
  lbl.push_back(0);
  for (uint32_t i = 1; out.size() * 8 < bits; ++i) {
    Bytes msg = Cat({U32(i), lbl, u, v, U32(static_cast<uint32_t>(bits))});
    uint8_t mac[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    HMAC(md, key.data(), static_cast<int>(key.size()), msg.data(), msg.size(), mac, &len);
    out.insert(out.end(), mac, mac + len);
  }
  out.resize(bits / 8);
  return out;
}

Bytes RefKdfe(const EVP_MD* md, ByteView z, std::string label, ByteView u, ByteView v,
              size_t bits) {
  Bytes out;
  Bytes lbl = ToBytes(label);
  lbl.push_back(0);
  for (uint32_t i = 1; out.size() * 8 < bits; ++i) {
    Bytes msg = Cat({U32(i), z, lbl, u, v});
    uint8_t h[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    EVP_Digest(msg.data(), msg.size(), h, &len, md, nullptr);
    out.insert(out.end(), h, h + len);
  }
  out.resize(bits / 8);
  return out;
}

Bytes Pattern(size_t n, uint8_t start) {
  Bytes b(n);
  for (size_t i = 0; i < n; ++i) b[i] = static_cast<uint8_t>(start + 7 * i);
  return b;
}

TEST(KdfTest, KdfaMatchesSpecFormula) {
  const Bytes key = Pattern(32, 1);
  const Bytes name = Pattern(34, 9);
  const Bytes v = Pattern(5, 200);
  struct Case {
    TPMI_ALG_HASH alg;
    const EVP_MD* md;
    std::string label;
    Bytes u, v;
    size_t bits;
  } cases[] = {
      {TPM2_ALG_SHA256, EVP_sha256(), "STORAGE", name, {}, 128},
      {TPM2_ALG_SHA256, EVP_sha256(), "INTEGRITY", {}, {}, 256},
      {TPM2_ALG_SHA256, EVP_sha256(), "STORAGE", name, v, 520},  // several blocks, partial last
      {TPM2_ALG_SHA384, EVP_sha384(), "INTEGRITY", {}, {}, 384},
      {TPM2_ALG_SHA1, EVP_sha1(), "STORAGE", name, {}, 128},
  };
  for (const auto& c : cases) {
    auto got = KDFa(c.alg, key, c.label, c.u, c.v, c.bits);
    ASSERT_TRUE(got.has_value()) << got.error().ToString();
    EXPECT_EQ(Bytes(got->begin(), got->end()), RefKdfa(c.md, key, c.label, c.u, c.v, c.bits))
        << c.label << " " << c.bits;
  }
}

TEST(KdfTest, KdfeMatchesSpecFormula) {
  const Bytes z = Pattern(32, 3);
  const Bytes u = Pattern(32, 50);
  const Bytes v = Pattern(32, 90);
  for (size_t bits : {256u, 128u, 600u}) {
    auto got = KDFe(TPM2_ALG_SHA256, z, "DUPLICATE", u, v, bits);
    ASSERT_TRUE(got.has_value()) << got.error().ToString();
    EXPECT_EQ(Bytes(got->begin(), got->end()), RefKdfe(EVP_sha256(), z, "DUPLICATE", u, v, bits));
  }
  auto got = KDFe(TPM2_ALG_SHA384, z, "IDENTITY", u, v, 384);
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(Bytes(got->begin(), got->end()), RefKdfe(EVP_sha384(), z, "IDENTITY", u, v, 384));
}

TEST(KdfTest, RejectsBadArguments) {
  const Bytes key = Pattern(32, 1);
  EXPECT_EQ(KDFa(TPM2_ALG_SHA256, key, "X", {}, {}, 12).error().code(), Code::kInvalidArgument);
  EXPECT_EQ(KDFa(TPM2_ALG_SHA256, {}, "X", {}, {}, 128).error().code(), Code::kInvalidArgument);
  EXPECT_EQ(KDFa(0x1234, key, "X", {}, {}, 128).error().code(), Code::kUnsupported);
}

}  // namespace
}  // namespace tpmma::tpm
