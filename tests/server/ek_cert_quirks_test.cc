// SPDX-License-Identifier: GPL-2.0-or-later
// Quirky EK certificates (server/ek_cert_quirks.h) made here: with the OpenSSL API where it
// can make them (critical TCG SubjectAltName, empty subject), and by editing the TBS bytes
// and signing them again with the issuer's key (EVP_DigestSign) where OpenSSL would only
// write DER (a serial number with leading zero bytes, Nuvoton's unsorted RDN SET).
#include "server/ek_cert_quirks.h"

#include <openssl/asn1.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "server/ek_trust.h"
#include "tests/server/ek_test_certs.h"
#include "tests/support/status_testing.h"
#include "tests/support/testutil.h"

namespace tpmma::server {
namespace {

using testing::TempDir;

Bytes Der(X509* c) {
  unsigned char* p = nullptr;
  int n = i2d_X509(c, &p);
  Bytes out(p, p + n);
  OPENSSL_free(p);
  return out;
}

Bytes Wrap(int constructed, int tag, ByteView content) {
  Bytes out(static_cast<size_t>(ASN1_object_size(constructed, int(content.size()), tag)));
  unsigned char* p = out.data();
  ASN1_put_object(&p, constructed, int(content.size()), tag, V_ASN1_UNIVERSAL);
  std::copy(content.begin(), content.end(), p);
  return out;
}

// The parts of a certificate: the TBS contents and the signatureAlgorithm element.
struct Parts {
  Bytes tbs_content;
  Bytes alg;
};
Parts Split(X509* c) {
  Bytes der = Der(c);
  const unsigned char* p = der.data();
  long len = 0;
  int tag = 0, cls = 0;
  ASN1_get_object(&p, &len, &tag, &cls, long(der.size()));  // Certificate
  const unsigned char* tbs = p;
  ASN1_get_object(&p, &len, &tag, &cls, long(der.data() + der.size() - p));  // TBS
  Parts out;
  out.tbs_content.assign(p, p + len);
  p += len;
  const unsigned char* alg = p;
  ASN1_get_object(&p, &len, &tag, &cls, long(der.data() + der.size() - p));
  out.alg.assign(alg, p + len);
  (void)tbs;
  return out;
}

// A certificate with these TBS contents, signed (ECDSA-SHA256, as Split's alg says) by `key`.
Bytes Sign(const Parts& parts, EVP_PKEY* key) {
  Bytes tbs = Wrap(1, V_ASN1_SEQUENCE, parts.tbs_content);
  EvpMdCtxPtr ctx(EVP_MD_CTX_new());
  size_t n = 0;
  EXPECT_EQ(EVP_DigestSignInit(ctx.get(), nullptr, EVP_sha256(), nullptr, key), 1);
  EXPECT_EQ(EVP_DigestSign(ctx.get(), nullptr, &n, tbs.data(), tbs.size()), 1);
  Bytes sig(n + 1, 0);  // the first byte: no unused bits
  EXPECT_EQ(EVP_DigestSign(ctx.get(), sig.data() + 1, &n, tbs.data(), tbs.size()), 1);
  sig.resize(n + 1);
  Bytes content = tbs;
  content.insert(content.end(), parts.alg.begin(), parts.alg.end());
  Bytes bits = Wrap(0, V_ASN1_BIT_STRING, sig);
  content.insert(content.end(), bits.begin(), bits.end());
  return Wrap(1, V_ASN1_SEQUENCE, content);
}

// The serial number INTEGER (after the [0] version) with `pad` prepended to its contents.
Bytes PadSerial(X509* c, std::vector<uint8_t> pad, EVP_PKEY* issuer_key) {
  Parts parts = Split(c);
  Bytes& t = parts.tbs_content;
  EXPECT_EQ(t[0], 0xa0);  // version
  const size_t at = 2 + t[1];
  EXPECT_EQ(t[at], V_ASN1_INTEGER);
  const size_t len = t[at + 1];
  Bytes value(t.begin() + ptrdiff_t(at + 2), t.begin() + ptrdiff_t(at + 2 + len));
  value.insert(value.begin(), pad.begin(), pad.end());
  Bytes serial = Wrap(0, V_ASN1_INTEGER, value);
  t.erase(t.begin() + ptrdiff_t(at), t.begin() + ptrdiff_t(at + 2 + len));
  t.insert(t.begin() + ptrdiff_t(at), serial.begin(), serial.end());
  return Sign(parts, issuer_key);
}

Bytes Replace(Bytes b, ByteView from, ByteView to) {
  auto it = std::search(b.begin(), b.end(), from.begin(), from.end());
  EXPECT_NE(it, b.end());
  while (it != b.end()) {
    std::copy(to.begin(), to.end(), it);
    it = std::search(it + ptrdiff_t(to.size()), b.end(), from.begin(), from.end());
  }
  return b;
}

X509Ptr Parse(ByteView der) {
  const unsigned char* p = der.data();
  return X509Ptr(d2i_X509(nullptr, &p, long(der.size())));
}

void WritePem(const std::string& file, X509* c) {
  testing::Spit(file, *CertificateToPem(c));
}

class EkCertQuirksTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = MakeTestCa(dir_, "Quirk Root", nullptr);
    int_ = MakeTestCa(dir_, "Quirk Int", &root_);
    ek_key_ = *GenerateKey(KeyType::kEcP256);
    leaf_ = MakeTestLeaf(dir_, "Quirk EK", ek_key_.get(), int_);
  }
  std::unique_ptr<EkTrust> Trust(const std::string& root, const std::string& pool) {
    auto t = EkTrust::Load({root}, {pool}, Env::Default());
    EXPECT_TRUE(t.has_value());
    return std::move(*t);
  }
  int64_t Now() { return Env::Default()->NowUnixSeconds(); }

  TempDir dir_;
  TestCa root_, int_, leaf_;
  EvpPkeyPtr ek_key_;
};

TEST_F(EkCertQuirksTest, CriticalTcgSubjectAltNameAndEmptySubjectAreAccepted) {
  X509Ptr c(X509_new());
  X509_set_version(c.get(), 2);
  ASN1_INTEGER_set(X509_get_serialNumber(c.get()), 77);
  X509_set_issuer_name(c.get(), X509_get_subject_name(int_.cert.get()));
  X509_gmtime_adj(X509_getm_notBefore(c.get()), -300);
  X509_gmtime_adj(X509_getm_notAfter(c.get()), 86400);
  X509_set_pubkey(c.get(), ek_key_.get());
  X509_NAME* dir = X509_NAME_new();
  for (auto [oid, value] :
       {std::pair{"2.23.133.2.1", "id:4E544300"}, std::pair{"2.23.133.2.2", "NPCT75x"},
        std::pair{"2.23.133.2.3", "id:00070002"}}) {
    ASN1_OBJECT* obj = OBJ_txt2obj(oid, 1);
    X509_NAME_add_entry_by_OBJ(dir, obj, MBSTRING_UTF8,
                               reinterpret_cast<const unsigned char*>(value), -1, -1, 0);
    ASN1_OBJECT_free(obj);
  }
  GENERAL_NAMES* names = sk_GENERAL_NAME_new_null();
  GENERAL_NAME* gn = GENERAL_NAME_new();
  GENERAL_NAME_set0_value(gn, GEN_DIRNAME, dir);
  sk_GENERAL_NAME_push(names, gn);
  ASSERT_EQ(X509_add1_ext_i2d(c.get(), NID_subject_alt_name, names, 1, X509V3_ADD_DEFAULT), 1);
  GENERAL_NAMES_free(names);
  ASSERT_GT(X509_sign(c.get(), int_.key.get(), EVP_sha256()), 0);

  ASSERT_OK_AND_ASSIGN(EkCertificate ek, ParseEkCertificate(Der(c.get()), "EKCertificate"));
  EXPECT_TRUE(ek.issued_tbs.empty());
  EXPECT_EQ(ek.quirk, "");
  ASSERT_OK_AND_ASSIGN(VerifiedPath p, Trust(root_.file, int_.file)->Verify(ek, {}, Now()));
  ASSERT_EQ(p.certs.size(), 3u);
  EXPECT_EQ(p.certs[0].subject, "(empty subject)");
}

TEST_F(EkCertQuirksTest, SerialWithLeadingZerosIsReadAndVerifiedOverTheIssuedBytes) {
  Bytes quirky = PadSerial(leaf_.cert.get(), {0x00, 0x00}, int_.key.get());
  // Today's OpenSSL refuses it outright.
  EXPECT_EQ(Parse(quirky), nullptr);
  ERR_clear_error();
  ASSERT_OK_AND_ASSIGN(EkCertificate ek, ParseEkCertificate(quirky, "EKCertificate"));
  EXPECT_EQ(ek.quirk, "serial number with leading zero bytes (not minimal DER)");
  EXPECT_FALSE(ek.issued_tbs.empty());
  // The copy is readable and holds the same serial, but its own signature is not the issuer's.
  EXPECT_EQ(ASN1_INTEGER_cmp(X509_get0_serialNumber(ek.cert.get()),
                             X509_get0_serialNumber(leaf_.cert.get())),
            0);
  EXPECT_NE(X509_verify(ek.cert.get(), X509_get0_pubkey(int_.cert.get())), 1);
  ERR_clear_error();
  ASSERT_OK(VerifyIssuedSignature(ek, X509_get0_pubkey(int_.cert.get())));
  ASSERT_OK_AND_ASSIGN(VerifiedPath p, Trust(root_.file, int_.file)->Verify(ek, {}, Now()));
  ASSERT_EQ(p.certs.size(), 3u);
  EXPECT_EQ(p.sources[2], PathSource::kRoot);
}

TEST_F(EkCertQuirksTest, SerialWithLeadingZerosSignedByAnotherKeyIsRefused) {
  EvpPkeyPtr other = *GenerateKey(KeyType::kEcP256);
  Bytes forged = PadSerial(leaf_.cert.get(), {0x00}, other.get());
  ASSERT_OK_AND_ASSIGN(EkCertificate ek, ParseEkCertificate(forged, "EKCertificate"));
  auto r = Trust(root_.file, int_.file)->Verify(ek, {}, Now());
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), Code::kUnauthenticated);
  EXPECT_NE(r.error().message().find("signature failure"), std::string::npos)
      << r.error().message();
}

TEST_F(EkCertQuirksTest, SerialWithLeadingZerosStillNeedsTheWholeChain) {
  Bytes quirky = PadSerial(leaf_.cert.get(), {0x00}, int_.key.get());
  ASSERT_OK_AND_ASSIGN(EkCertificate ek, ParseEkCertificate(quirky, "EKCertificate"));
  // The intermediate alone, as a root: the real root is not trusted.
  TestCa other_root = MakeTestCa(dir_, "Other Root", nullptr);
  auto untrusted = Trust(other_root.file, int_.file)->Verify(ek, {}, Now());
  ASSERT_FALSE(untrusted.has_value());
  EXPECT_NE(untrusted.error().message().find("missing issuer 'CN=Quirk Root'"), std::string::npos)
      << untrusted.error().message();
  // Without the intermediate the chain cannot be built at all.
  auto no_int = Trust(root_.file, other_root.file)->Verify(ek, {}, Now());
  ASSERT_FALSE(no_int.has_value());
  EXPECT_NE(no_int.error().message().find("missing issuer 'CN=Quirk Int'"), std::string::npos);
}

TEST_F(EkCertQuirksTest, OtherNonDerIsRefusedNamingTheReason) {
  // A negative serial padded with 0xFF: OpenSSL refuses it and the MA does not tolerate it.
  Bytes negative = PadSerial(leaf_.cert.get(), {0xff, 0xff}, int_.key.get());
  auto r = ParseEkCertificate(negative, "EKCertificate");
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), Code::kMalformed);
  EXPECT_NE(r.error().message().find("illegal padding"), std::string::npos) << r.error().message();
  EXPECT_NE(r.error().message().find("not one of the encodings the MA tolerates"),
            std::string::npos);
  auto junk = ParseEkCertificate(Bytes{0x30, 0x03, 0x02, 0x01, 0x01}, "EKCertificate");
  ASSERT_FALSE(junk.has_value());
  EXPECT_EQ(junk.error().code(), Code::kMalformed);
}

// Nuvoton: the issuer is one RDN holding CN, O and C, not in DER SET order (keylime issues
// 944, 1775: a strict DER parser refuses it, and a sorted re-encoding would break the
// signature). OpenSSL reads it and verifies over the bytes as issued.
TEST_F(EkCertQuirksTest, UnsortedMultiValuedRdnIsAcceptedAsIssued) {
  X509_NAME* name = X509_get_subject_name(int_.cert.get());
  for (auto [field, value] :
       {std::pair{"O", "Nuvoton Technology Corporation"}, std::pair{"C", "TW"}}) {
    X509_NAME_add_entry_by_txt(name, field, MBSTRING_UTF8,
                               reinterpret_cast<const unsigned char*>(value), -1, -1, -1);
  }
  ASSERT_EQ(X509_NAME_entry_count(name), 3);
  ASSERT_GT(X509_sign(int_.cert.get(), root_.key.get(), EVP_sha256()), 0);
  TestCa nuvo_leaf = MakeTestLeaf(dir_, "Nuvo EK", ek_key_.get(), int_);
  // The RDN's entries as DER sorts them, and in reverse.
  std::vector<Bytes> entries;
  for (int i = 0; i < 3; ++i) {
    unsigned char* p = nullptr;
    int n = i2d_X509_NAME_ENTRY(X509_NAME_get_entry(name, i), &p);
    entries.emplace_back(p, p + n);
    OPENSSL_free(p);
  }
  std::sort(entries.begin(), entries.end());
  Bytes sorted, reversed;
  for (const Bytes& e : entries) sorted.insert(sorted.end(), e.begin(), e.end());
  for (auto it = entries.rbegin(); it != entries.rend(); ++it) {
    reversed.insert(reversed.end(), it->begin(), it->end());
  }
  auto unsort = [&](X509* c, EVP_PKEY* key) {
    Parts parts = Split(c);
    parts.tbs_content = Replace(parts.tbs_content, sorted, reversed);
    return Sign(parts, key);
  };
  Bytes int_der = unsort(int_.cert.get(), root_.key.get());
  Bytes leaf_der = unsort(nuvo_leaf.cert.get(), int_.key.get());
  X509Ptr nuvo_int = Parse(int_der);
  ASSERT_NE(nuvo_int, nullptr);
  ASSERT_EQ(Der(nuvo_int.get()), int_der);  // kept as issued
  WritePem(dir_.File("nuvo-int.pem"), nuvo_int.get());

  ASSERT_OK_AND_ASSIGN(EkCertificate ek, ParseEkCertificate(leaf_der, "EKCertificate"));
  EXPECT_EQ(ek.quirk, "");
  ASSERT_OK_AND_ASSIGN(VerifiedPath p,
                       Trust(root_.file, dir_.File("nuvo-int.pem"))->Verify(ek, {}, Now()));
  ASSERT_EQ(p.certs.size(), 3u);
  // The MA checked it over the bytes as issued: the TBS of the copy is the one sent.
  EXPECT_EQ(Der(ek.cert.get()), leaf_der);
}

}  // namespace
}  // namespace tpmma::server
