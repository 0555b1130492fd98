// SPDX-License-Identifier: GPL-2.0-or-later
// tpm/tss2_pem.h in software: the exact DER we write (built here field by field), round trips,
// emptyAuth both ways, and adversarial decodes in the spirit of LevelDB's log_test.cc: every
// truncation, every single-byte corruption, wrong tags, trailing bytes, each OID, bad parents
// and bad TPM2B sizes. Each bad input must fail with kInvalidArgument and words, never crash.
// Interop with tpm2_encodeobject and tpm2-openssl: tss2_pem_swtpm_test.cc.
#include "tpm/tss2_pem.h"

#include <gtest/gtest.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include <string>
#include <vector>

#include "common/openssl.h"
#include "tests/support/status_testing.h"
#include "tpm/marshal.h"
#include "tpm/public.h"

namespace tpmma::tpm {
namespace {

// A DER TLV (tag and definite minimal length); the tests build TPMKeys field by field with it.
Bytes Tlv(uint8_t tag, const Bytes& content) {
  Bytes out = {tag};
  const size_t n = content.size();
  if (n < 0x80) {
    out.push_back(static_cast<uint8_t>(n));
  } else if (n <= 0xFF) {
    out.insert(out.end(), {0x81, static_cast<uint8_t>(n)});
  } else {
    out.insert(out.end(), {0x82, static_cast<uint8_t>(n >> 8), static_cast<uint8_t>(n)});
  }
  out.insert(out.end(), content.begin(), content.end());
  return out;
}

Bytes Cat(std::initializer_list<Bytes> parts) {
  Bytes out;
  for (const Bytes& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

// 2.23.133.10.1.N
Bytes OidTlv(uint8_t last) {
  return Tlv(0x06, {0x67, 0x81, 0x05, 0x0a, 0x01, last});
}
Bytes EmptyAuthTlv(uint8_t value) {
  return Tlv(0xa0, Tlv(0x01, {value}));
}
const Bytes kParent81000001 = Tlv(0x02, {0x00, 0x81, 0x00, 0x00, 0x01});

// PEM of `der` under `name`, written by OpenSSL (what any producer would do).
std::string Pem(const Bytes& der, const char* name = "TSS2 PRIVATE KEY") {
  BioPtr bio(BIO_new(BIO_s_mem()));
  EXPECT_GT(PEM_write_bio(bio.get(), name, "", der.data(), static_cast<long>(der.size())), 0);
  char* text = nullptr;
  const long n = BIO_get_mem_data(bio.get(), &text);
  return std::string(text, static_cast<size_t>(n));
}

Bytes PemBody(const std::string& pem) {
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  char *name = nullptr, *header = nullptr;
  unsigned char* data = nullptr;
  long len = 0;
  EXPECT_EQ(PEM_read_bio(bio.get(), &name, &header, &data, &len), 1);
  Bytes out(data, data + len);
  OPENSSL_free(name);
  OPENSSL_free(header);
  OPENSSL_free(data);
  return out;
}

Bytes Tpm2b(const Bytes& content) {
  Bytes out = {static_cast<uint8_t>(content.size() >> 8), static_cast<uint8_t>(content.size())};
  out.insert(out.end(), content.begin(), content.end());
  return out;
}

// A real ECC P-256 signing key's TPM2B_PUBLIC, and a TPM2B_PRIVATE-shaped blob.
struct Blobs {
  Bytes pub;
  Bytes priv;
};
const Blobs& TestBlobs() {
  static const Blobs blobs = [] {
    EvpPkeyPtr ec(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"));
    auto pub = PublicFromEvp(
        ec.get(), PublicTemplate{.attributes = TPMA_OBJECT_SIGN_ENCRYPT | TPMA_OBJECT_USERWITHAUTH,
                                 .symmetric = TPM2_ALG_NULL,
                                 .sym_bits = 0});
    Blobs b;
    b.pub = *Marshal(*pub);
    Bytes inner(126);
    for (size_t i = 0; i < inner.size(); ++i) inner[i] = static_cast<uint8_t>(i * 37 + 1);
    b.priv = Tpm2b(inner);
    return b;
  }();
  return blobs;
}

Tss2PrivateKey TestKey(bool empty_auth = true) {
  return Tss2PrivateKey{.parent = 0x81000001,
                        .empty_auth = empty_auth,
                        .public_area = TestBlobs().pub,
                        .private_area = TestBlobs().priv};
}

// TPMKey with the given fields, each already a TLV (empty = left out).
Bytes TpmKeyDer(const Bytes& oid, const Bytes& empty_auth, const Bytes& parent, const Bytes& pub,
                const Bytes& priv) {
  return Tlv(0x30, Cat({oid, empty_auth, parent, pub, priv}));
}
Bytes GoodDer(uint8_t empty_auth = 0xff) {
  return TpmKeyDer(OidTlv(3), EmptyAuthTlv(empty_auth), kParent81000001, Tlv(0x04, TestBlobs().pub),
                   Tlv(0x04, TestBlobs().priv));
}

// Decoding must fail, with kInvalidArgument, and the message must contain `words`.
void ExpectRefused(const std::string& pem, const std::string& words, const std::string& what) {
  auto r = DecodeTss2PrivateKeyPem(pem);
  ASSERT_FALSE(r.has_value()) << what << ": decoded";
  EXPECT_EQ(r.error().code(), Code::kInvalidArgument) << what << ": " << r.error().ToString();
  EXPECT_NE(r.error().message().find(words), std::string::npos)
      << what << ": message '" << r.error().message() << "' lacks '" << words << "'";
}

TEST(Tss2Pem, EncodesExactlyTheTpmKeySequence) {
  for (bool empty_auth : {true, false}) {
    ASSERT_OK_AND_ASSIGN(std::string pem, EncodeTss2PrivateKeyPem(TestKey(empty_auth)));
    EXPECT_EQ(pem.rfind("-----BEGIN TSS2 PRIVATE KEY-----\n", 0), 0u) << pem;
    EXPECT_NE(pem.find("-----END TSS2 PRIVATE KEY-----\n"), std::string::npos) << pem;
    // emptyAuth TRUE as DER's 0xFF, FALSE written out as [0] FALSE (as tpm2-openssl does).
    EXPECT_EQ(HexEncode(PemBody(pem)), HexEncode(GoodDer(empty_auth ? 0xff : 0x00)))
        << "empty_auth " << empty_auth;
  }
}

TEST(Tss2Pem, RoundTrips) {
  for (bool empty_auth : {true, false}) {
    for (uint32_t parent : {0x81000001u, 0x81000100u, 0x40000001u, 1u, 0xffffffffu}) {
      Tss2PrivateKey key = TestKey(empty_auth);
      key.parent = parent;
      ASSERT_OK_AND_ASSIGN(std::string pem, EncodeTss2PrivateKeyPem(key));
      ASSERT_OK_AND_ASSIGN(Tss2PrivateKey back, DecodeTss2PrivateKeyPem(pem));
      EXPECT_EQ(back.parent, parent);
      EXPECT_EQ(back.empty_auth, empty_auth);
      EXPECT_EQ(back.public_area, key.public_area);
      EXPECT_EQ(back.private_area, key.private_area);
    }
  }
}

TEST(Tss2Pem, ReadsEmptyAuthAsOthersWriteIt) {
  struct {
    Bytes empty_auth;
    bool want;
  } const cases[] = {
      {EmptyAuthTlv(0xff), true},  // DER TRUE
      {EmptyAuthTlv(0x01), true},  // tpm2-openssl / tpm2-tss-engine write !!emptyAuth
      {EmptyAuthTlv(0x00), false},
      {{}, false},  // absent: tpm2-openssl asks for a password
  };
  for (const auto& c : cases) {
    const Bytes der = TpmKeyDer(OidTlv(3), c.empty_auth, kParent81000001,
                                Tlv(0x04, TestBlobs().pub), Tlv(0x04, TestBlobs().priv));
    ASSERT_OK_AND_ASSIGN(Tss2PrivateKey key, DecodeTss2PrivateKeyPem(Pem(der)));
    EXPECT_EQ(key.empty_auth, c.want) << HexEncode(c.empty_auth);
  }
}

TEST(Tss2Pem, ToleratesTextAroundThePemBlock) {
  const std::string pem = Pem(GoodDer());
  ASSERT_OK(DecodeTss2PrivateKeyPem("comment line\n" + pem + "\n"));
}

TEST(Tss2Pem, RefusesWhatIsNotATss2Pem) {
  ExpectRefused("", "not PEM", "empty input");
  ExpectRefused("hello world\n", "not PEM", "text");
  ExpectRefused(ToString(GoodDer()), "not PEM", "raw DER");
  ExpectRefused(Pem(GoodDer(), "PRIVATE KEY"),
                "expected a TSS2 PRIVATE KEY PEM, found 'PRIVATE KEY'", "PKCS#8");
  ExpectRefused(Pem(GoodDer(), "CERTIFICATE"), "found 'CERTIFICATE'", "certificate");
  std::string pem = Pem(GoodDer());
  pem.insert(pem.find('\n') + 1, "Proc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00\n\n");
  ExpectRefused(pem, "headers", "encrypted PEM");
  std::string bad64 = Pem(GoodDer());
  bad64[bad64.find('\n') + 5] = '*';
  ExpectRefused(bad64, "not PEM", "bad base64");
}

TEST(Tss2Pem, RefusesEveryTruncation) {
  const Bytes der = GoodDer();
  ExpectRefused("-----BEGIN TSS2 PRIVATE KEY-----\n-----END TSS2 PRIVATE KEY-----\n",
                "TSS2 PRIVATE KEY", "no body");
  for (size_t n = 1; n < der.size(); ++n) {
    ExpectRefused(Pem(Bytes(der.begin(), der.begin() + static_cast<long>(n))), "TSS2 PRIVATE KEY",
                  "DER cut at " + std::to_string(n));
  }
  const std::string pem = Pem(der);
  for (size_t n = 0; n < pem.size() - 1; ++n) {  // the last byte is the final newline
    ExpectRefused(pem.substr(0, n), "TSS2 PRIVATE KEY", "PEM cut at " + std::to_string(n));
  }
}

TEST(Tss2Pem, SurvivesEverySingleByteCorruption) {
  const Bytes der = GoodDer();
  for (size_t i = 0; i < der.size(); ++i) {
    for (uint8_t x : {0x01, 0x80, 0xff}) {
      Bytes bad = der;
      bad[i] ^= x;
      auto r = DecodeTss2PrivateKeyPem(Pem(bad));
      if (r.has_value()) continue;  // e.g. a changed byte inside the private blob
      EXPECT_EQ(r.error().code(), Code::kInvalidArgument) << i << ": " << r.error().ToString();
      EXPECT_FALSE(r.error().message().empty()) << i;
    }
  }
}

TEST(Tss2Pem, RefusesWrongTagsAndTrailingData) {
  const Bytes pub = Tlv(0x04, TestBlobs().pub), priv = Tlv(0x04, TestBlobs().priv);
  const Bytes fields = Cat({OidTlv(3), EmptyAuthTlv(0xff), kParent81000001, pub, priv});
  ExpectRefused(Pem(Tlv(0x31, fields)), "not a DER TPMKey", "SET instead of SEQUENCE");
  ExpectRefused(Pem(TpmKeyDer(Tlv(0x04, {0x67, 0x81, 0x05, 0x0a, 0x01, 0x03}), EmptyAuthTlv(0xff),
                              kParent81000001, pub, priv)),
                "not a DER TPMKey", "OCTET STRING for the OID");
  ExpectRefused(Pem(TpmKeyDer(OidTlv(3), Tlv(0xa1, Tlv(0x01, {0xff})), kParent81000001, pub, priv)),
                "not a DER TPMKey", "[1] for emptyAuth");
  ExpectRefused(Pem(TpmKeyDer(OidTlv(3), Tlv(0x80, {0xff}), kParent81000001, pub, priv)),
                "not a DER TPMKey", "IMPLICIT emptyAuth");
  ExpectRefused(
      Pem(TpmKeyDer(OidTlv(3), Tlv(0xa0, Tlv(0x01, {0xff, 0xff})), kParent81000001, pub, priv)),
      "not a DER TPMKey", "two-byte BOOLEAN");
  ExpectRefused(
      Pem(TpmKeyDer(OidTlv(3), EmptyAuthTlv(0xff), Tlv(0x04, {0x81, 0, 0, 1}), pub, priv)),
      "not a DER TPMKey", "OCTET STRING for the parent");
  ExpectRefused(Pem(TpmKeyDer(OidTlv(3), EmptyAuthTlv(0xff), kParent81000001,
                              Tlv(0x03, Cat({{0}, TestBlobs().pub})), priv)),
                "not a DER TPMKey", "BIT STRING for pubkey");
  ExpectRefused(Pem(TpmKeyDer(OidTlv(3), EmptyAuthTlv(0xff), kParent81000001, pub, {})),
                "not a DER TPMKey", "privkey missing");
  ExpectRefused(Pem(TpmKeyDer(OidTlv(3), EmptyAuthTlv(0xff), kParent81000001, priv, pub)),
                "pubkey is not a well-formed TPM2B_PUBLIC", "pubkey and privkey swapped");
  ExpectRefused(Pem(Tlv(0x30, Cat({fields, Tlv(0x04, {1})}))), "not a DER TPMKey", "a sixth field");
  for (const Bytes& tail : {Bytes{0}, Bytes{0x30, 0x00}, GoodDer()}) {
    ExpectRefused(Pem(Cat({GoodDer(), tail})), "trailing data after the TPMKey SEQUENCE",
                  "tail " + HexEncode(tail));
  }
  // BER that OpenSSL's decoder takes: long-form length, indefinite length.
  Bytes long_form = {0x30, 0x82, 0x00, static_cast<uint8_t>(fields.size())};
  ASSERT_LT(fields.size(), 0x80u * 2);
  long_form[2] = static_cast<uint8_t>(fields.size() >> 8);
  long_form[3] = static_cast<uint8_t>(fields.size());
  ExpectRefused(Pem(Cat({long_form, fields})), "BER, not DER", "long-form length");
  ExpectRefused(Pem(Cat({{0x30, 0x80}, fields, {0x00, 0x00}})), "BER, not DER",
                "indefinite length");
}

TEST(Tss2Pem, AcceptsOnlyLoadableKeys) {
  const Bytes pub = Tlv(0x04, TestBlobs().pub), priv = Tlv(0x04, TestBlobs().priv);
  auto with_oid = [&](const Bytes& oid) {
    return Pem(TpmKeyDer(oid, EmptyAuthTlv(0xff), kParent81000001, pub, priv));
  };
  ASSERT_OK(DecodeTss2PrivateKeyPem(with_oid(OidTlv(3))));
  ExpectRefused(with_oid(OidTlv(4)), "2.23.133.10.1.4 is an importable key", "importable");
  ExpectRefused(with_oid(OidTlv(5)), "2.23.133.10.1.5 is a sealed data object", "sealed");
  ExpectRefused(with_oid(OidTlv(6)), "2.23.133.10.1.6 is not a TPM key type", "1.6");
  ExpectRefused(with_oid(Tlv(0x06, {0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01})),
                "1.2.840.113549.1.1.1 is not a TPM key type", "rsaEncryption");
  ExpectRefused(with_oid(Tlv(0x06, {})), "TSS2 PRIVATE KEY", "empty OID");
}

TEST(Tss2Pem, ParentMustBeA32BitUnsignedHandle) {
  const Bytes pub = Tlv(0x04, TestBlobs().pub), priv = Tlv(0x04, TestBlobs().priv);
  auto with_parent = [&](const Bytes& content) {
    return Pem(TpmKeyDer(OidTlv(3), EmptyAuthTlv(0xff), Tlv(0x02, content), pub, priv));
  };
  ASSERT_OK_AND_ASSIGN(Tss2PrivateKey k,
                       DecodeTss2PrivateKeyPem(with_parent({0x00, 0xff, 0xff, 0xff, 0xff})));
  EXPECT_EQ(k.parent, 0xffffffffu);
  ASSERT_OK_AND_ASSIGN(k, DecodeTss2PrivateKeyPem(with_parent({0x40, 0x00, 0x00, 0x01})));
  EXPECT_EQ(k.parent, 0x40000001u);
  // 0x81000001 as a signed 32-bit value, as an old 32-bit writer might have put it.
  ExpectRefused(with_parent({0x81, 0x00, 0x00, 0x01}), "negative", "-2130706431");
  ExpectRefused(with_parent({0xff}), "negative", "-1");
  ExpectRefused(with_parent({0x01, 0x00, 0x00, 0x00, 0x00}), "does not fit a 32-bit", "2^32");
  ExpectRefused(with_parent({0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}),
                "does not fit a 32-bit", "2^64-1");
  ExpectRefused(with_parent(Bytes(40, 0x7f)), "does not fit a 32-bit", "huge");
  ExpectRefused(with_parent({0x00}), "parent handle 0", "0");
  ExpectRefused(with_parent({}), "TSS2 PRIVATE KEY", "empty INTEGER");
  ExpectRefused(with_parent({0x00, 0x00, 0x01}), "TSS2 PRIVATE KEY", "non-minimal INTEGER");
}

TEST(Tss2Pem, OctetStringsMustBeWellFormedTpm2bs) {
  const Bytes& pub = TestBlobs().pub;
  const Bytes& priv = TestBlobs().priv;
  auto with = [&](const Bytes& p, const Bytes& q) {
    return Pem(
        TpmKeyDer(OidTlv(3), EmptyAuthTlv(0xff), kParent81000001, Tlv(0x04, p), Tlv(0x04, q)));
  };
  auto minus_prefix = [](const Bytes& b) { return Bytes(b.begin() + 2, b.end()); };
  auto resized = [](Bytes b, int delta) {
    const int size = ((b[0] << 8) | b[1]) + delta;
    b[0] = static_cast<uint8_t>(size >> 8);
    b[1] = static_cast<uint8_t>(size);
    return b;
  };
  ExpectRefused(with({}, priv), "pubkey (TPM2B_PUBLIC) is empty", "empty pubkey");
  ExpectRefused(with(pub, {}), "privkey (TPM2B_PRIVATE) is empty", "empty privkey");
  ExpectRefused(with({0x00}, priv), "shorter than its 2-byte size prefix", "1-byte pubkey");
  ExpectRefused(with({0x00, 0x00}, priv), "pubkey (TPM2B_PUBLIC) has size 0", "size-0 pubkey");
  ExpectRefused(with(pub, {0x00, 0x00}), "privkey (TPM2B_PRIVATE) has size 0", "size-0 privkey");
  ExpectRefused(with(minus_prefix(pub), priv), "pubkey (TPM2B_PUBLIC) says", "TPMT_PUBLIC only");
  ExpectRefused(with(pub, minus_prefix(priv)), "privkey (TPM2B_PRIVATE) says", "no prefix");
  for (int delta : {-1, 1, -2, 0x100}) {
    ExpectRefused(with(resized(pub, delta), priv), "pubkey (TPM2B_PUBLIC) says",
                  "pub size " + std::to_string(delta));
    ExpectRefused(with(pub, resized(priv, delta)), "privkey (TPM2B_PRIVATE) says",
                  "priv size " + std::to_string(delta));
  }
  // Size prefix right, contents not a TPMT_PUBLIC: junk, and a TPMT_PUBLIC with a tail.
  ExpectRefused(with(Tpm2b(Bytes(100, 0xee)), priv), "not a well-formed TPM2B_PUBLIC", "junk");
  ExpectRefused(with(Tpm2b(Cat({minus_prefix(pub), {0}})), priv), "not a well-formed TPM2B_PUBLIC",
                "TPMT_PUBLIC + 1 byte");
  // Limits: public 1024 bytes, private 2048 (and a TPM2B_PRIVATE buffer is smaller still).
  ExpectRefused(with(Tpm2b(Bytes(1023, 0)), priv), "1025 bytes, more than the 1024 allowed",
                "oversize pubkey");
  ExpectRefused(with(pub, Tpm2b(Bytes(2047, 1))), "2049 bytes, more than the 2048 allowed",
                "oversize privkey");
  ExpectRefused(with(pub, Tpm2b(Bytes(sizeof(TPM2B_PRIVATE::buffer) + 1, 1))),
                "not a well-formed TPM2B_PRIVATE", "privkey beyond TPM2B_PRIVATE");
}

TEST(Tss2Pem, EncodeChecksTheSameThings) {
  auto refused = [](Tss2PrivateKey key, const std::string& words) {
    auto r = EncodeTss2PrivateKeyPem(key);
    ASSERT_FALSE(r.has_value()) << words;
    EXPECT_EQ(r.error().code(), Code::kInvalidArgument) << r.error().ToString();
    EXPECT_NE(r.error().message().find(words), std::string::npos) << r.error().message();
  };
  Tss2PrivateKey k = TestKey();
  k.parent = 0;
  refused(k, "parent handle 0");
  k = TestKey();
  k.public_area.clear();
  refused(k, "pubkey (TPM2B_PUBLIC) is empty");
  k = TestKey();
  k.private_area.clear();
  refused(k, "privkey (TPM2B_PRIVATE) is empty");
  k = TestKey();
  k.public_area.push_back(0);
  refused(k, "pubkey (TPM2B_PUBLIC) says");
  k = TestKey();
  k.private_area.erase(k.private_area.begin(), k.private_area.begin() + 2);
  refused(k, "privkey (TPM2B_PRIVATE) says");
  k = TestKey();
  k.public_area = Tpm2b(Bytes(2000, 0));
  refused(k, "more than the 1024 allowed");
  k = TestKey();
  k.private_area = Tpm2b(Bytes(3000, 0));
  refused(k, "more than the 2048 allowed");
}

}  // namespace
}  // namespace tpmma::tpm
