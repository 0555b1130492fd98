// SPDX-License-Identifier: GPL-2.0-or-later
// Adversarial tests for the Migration Package library: every way in which bytes from the
// network could lie to the MA should end in a precise error, never in a model.
#include <atomic>
#include <chrono>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <openssl/pem.h>

#include "common/openssl.h"
#include "schema/package.h"
#include "schema/package_xml.h"
#include "tests/support/testutil.h"

namespace tpmma::schema {
namespace {

using tpmma::testing::RunCommand;
using tpmma::testing::TempDir;

EVP_PKEY* RsaKey() {
  static EvpPkeyPtr key(EVP_RSA_gen(2048));
  return key.get();
}
EVP_PKEY* RsaKey2() {
  static EvpPkeyPtr key(EVP_RSA_gen(2048));
  return key.get();
}
EVP_PKEY* EcKey() {
  static EvpPkeyPtr key(EVP_EC_gen("P-256"));
  return key.get();
}

std::string PublicPem(EVP_PKEY* key) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  PEM_write_bio_PUBKEY(bio.get(), key);
  char* data = nullptr;
  long len = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<size_t>(len));
}
std::string PrivatePem(EVP_PKEY* key) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr);
  char* data = nullptr;
  long len = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<size_t>(len));
}

Bytes Blob(size_t n, uint8_t seed) {
  Bytes b(n);
  for (size_t i = 0; i < n; ++i) b[i] = static_cast<uint8_t>(seed + i * 7);
  return b;
}

ChildKey MakeChild(int i) {
  ChildKey k;
  k.key_id = "00000000-0000-4000-8000-" + std::string(12 - std::to_string(i).size(), '0') +
             std::to_string(i);
  k.label = "vpn key " + std::to_string(i);
  k.usage = KeyUsage::kSign;
  k.public_area = Blob(90, 1);
  k.private_area = Blob(126, 2);
  return k;
}

MigrationPackage Sample() {
  MigrationPackage p;
  p.package_id = "3f1c2a9e-7b4d-4e2f-9a1b-0c8d7e6f5a4b";
  p.source_platform_id = "000b" + std::string(64, 'a');
  p.creation_time = 1795334400;  // 2026-11-22T08:00:00Z
  p.mrk.public_area = Blob(280, 3);
  p.mrk.duplicate = Blob(150, 4);
  p.mrk.encrypted_seed = Blob(258, 5);
  p.mrk.symmetric = SymmetricAlgorithm::kAes128Cfb;
  ChildKey a = MakeChild(1);
  a.label = "SSH key <&> \"ü\" ✓";  // markup characters and non-ASCII survive
  a.application_data.push_back({ApplicationDataType::kX509Certificate, Blob(700, 6)});
  a.application_data.push_back({ApplicationDataType::kOpaque, Blob(3, 7)});
  a.encrypted_auth = EncryptedAuth{AuthEncryption::kAes256Gcm, Blob(60, 8)};
  ChildKey b = MakeChild(2);
  b.usage = KeyUsage::kDecrypt;
  p.child_keys = {a, b};
  RecoveryCodeCustody rc;
  rc.salt = Blob(16, 9);
  rc.n = 1 << 15;
  rc.r = 8;
  rc.p = 1;
  rc.verifier = Blob(32, 10);
  p.custody = rc;
  return p;
}

std::string Str(const Bytes& b) {
  return std::string(b.begin(), b.end());
}

std::string SignedSample(EVP_PKEY* key = RsaKey(), const MigrationPackage& p = Sample()) {
  auto signed_bytes = SignPackage(p, key);
  EXPECT_TRUE(signed_bytes.has_value()) << signed_bytes.error().ToString();
  return signed_bytes ? Str(*signed_bytes) : std::string();
}

Result<PackageReader> OpenText(const std::string& xml, const ParseLimits& limits = {}) {
  return PackageReader::Open(View(xml), limits);
}

Result<MigrationPackage> OpenAndVerify(const std::string& xml, EVP_PKEY* key) {
  auto reader = OpenText(xml);
  if (!reader) return Error(reader.error());
  return reader->Verify(key);
}

// Replaces the first match of `pattern`; fails the test if there is none.
std::string Replace(const std::string& xml, const std::string& pattern, const std::string& with) {
  std::regex re(pattern);
  EXPECT_TRUE(std::regex_search(xml, re)) << "pattern not found: " << pattern;
  return std::regex_replace(xml, re, with, std::regex_constants::format_first_only);
}

std::string ElementRe(const std::string& name) {
  return "<" + name + "( [^>]*)?>[\\s\\S]*?</" + name + ">";
}

#define EXPECT_CODE(result, want, substring)                                         \
  do {                                                                               \
    auto&& r_ = (result);                                                            \
    ASSERT_FALSE(r_.has_value()) << "unexpectedly succeeded";                        \
    EXPECT_EQ(CodeName(r_.error().code()), CodeName(want)) << r_.error().ToString(); \
    EXPECT_NE(r_.error().message().find(substring), std::string::npos)               \
        << "message lacks '" << (substring) << "': " << r_.error().ToString();       \
  } while (0)

// ---- round trips -----------------------------------------------------------------------

TEST(PackageRoundTrip, RsaSignOpenVerify) {
  MigrationPackage p = Sample();
  std::string xml = SignedSample(RsaKey(), p);
  auto reader = OpenText(xml);
  ASSERT_TRUE(reader) << reader.error().ToString();
  EXPECT_EQ(reader->UnverifiedHeaderFields().package_id, p.package_id);
  EXPECT_EQ(reader->UnverifiedHeaderFields().source_platform_id, p.source_platform_id);
  EXPECT_EQ(reader->UnverifiedHeaderFields().format_version, 1u);
  auto model = reader->Verify(RsaKey());
  ASSERT_TRUE(model) << model.error().ToString();
  EXPECT_EQ(*model, p);
}

// Store-wide application data (issue #11): on the MRK, after its SymmetricAlgorithm.
TEST(PackageRoundTrip, MrkApplicationDataComesBackInOrder) {
  MigrationPackage p = Sample();
  p.mrk.application_data.push_back({ApplicationDataType::kOpaque, ToBytes("tpm-ma:x\n1")});
  p.mrk.application_data.push_back({ApplicationDataType::kOpaque, Blob(65536, 11)});
  const std::string xml = SignedSample(RsaKey(), p);
  EXPECT_LT(xml.find("SymmetricAlgorithm>"), xml.find("<ApplicationData"));
  EXPECT_LT(xml.find("<ApplicationData"), xml.find("<ChildKey"));
  auto reader = OpenText(xml);
  ASSERT_TRUE(reader) << reader.error().ToString();
  auto model = reader->Verify(RsaKey());
  ASSERT_TRUE(model) << model.error().ToString();
  EXPECT_EQ(*model, p);
  // One byte over the limit is refused before signing.
  p.mrk.application_data[1].value.push_back(0);
  EXPECT_CODE(SerializeTemplate(p, RsaKey()), Code::kInvalidArgument, "mrk.application_data[1]");
}

TEST(PackageRoundTrip, EcdsaP256AndEscrowCustody) {
  MigrationPackage p = Sample();
  p.child_keys.clear();
  p.mrk.symmetric = SymmetricAlgorithm::kNull;
  p.custody = EscrowCustody{"escrow-2026.1", EscrowAlgorithm::kRsaOaepSha256, Blob(256, 11)};
  std::string xml = SignedSample(EcKey(), p);
  EXPECT_NE(xml.find("ecdsa-sha256"), std::string::npos);
  auto model = OpenAndVerify(xml, EcKey());
  ASSERT_TRUE(model) << model.error().ToString();
  EXPECT_EQ(*model, p);
}

TEST(PackageRoundTrip, SerializationIsDeterministicAndCompact) {
  auto a = SerializeTemplate(Sample(), RsaKey());
  auto b = SerializeTemplate(Sample(), RsaKey());
  ASSERT_TRUE(a && b);
  EXPECT_EQ(*a, *b);
  // RSA PKCS#1 v1.5 is deterministic, so the signed bytes are too.
  EXPECT_EQ(SignedSample(), SignedSample());
  std::string xml = Str(*a);
  EXPECT_TRUE(
      xml.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<MigrationPackage "
                      "xmlns=\"urn:tpm-ma:package:1\"><PackageId>"))
      << xml.substr(0, 120);
  EXPECT_EQ(xml.find(">\n<", 40), std::string::npos) << "layout whitespace in output";
  EXPECT_NE(xml.find("<Label>SSH key &lt;&amp;&gt; \"ü\" ✓</Label>"), std::string::npos);
}

TEST(PackageRoundTrip, DigestIsSha256OfBytes) {
  auto d = PackageDigest(View("abc"));
  ASSERT_TRUE(d);
  EXPECT_EQ(HexEncode(*d), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(PackageRoundTrip, EmbeddedSchemaIsTheFile) {
  Bytes file =
      tpmma::testing::ReadFileOrDie(tpmma::testing::SourceDir() + "/schema/migration-package.xsd");
  EXPECT_EQ(EmbeddedSchema(), Str(file));
}

TEST(PackageModel, BuilderRefusesBadModels) {
  MigrationPackage p = Sample();
  p.package_id = "3F1C2A9E-7B4D-4E2F-9A1B-0C8D7E6F5A4B";
  EXPECT_CODE(SignPackage(p, RsaKey()), Code::kInvalidArgument, "package_id");
  p = Sample();
  p.child_keys[1].label = "bad\rlabel";
  EXPECT_CODE(SignPackage(p, RsaKey()), Code::kInvalidArgument, "child_keys[1].label");
  p = Sample();
  p.child_keys[0].public_area = Blob(kMaxTpm2bPublic + 1, 0);
  EXPECT_CODE(SignPackage(p, RsaKey()), Code::kInvalidArgument, "child_keys[0].public_area");
  p = Sample();
  p.child_keys[0].label = std::string(257, 'x');
  EXPECT_CODE(SignPackage(p, RsaKey()), Code::kInvalidArgument, "257 characters");
  auto uuid = NewUuid();
  ASSERT_TRUE(uuid);
  EXPECT_TRUE(IsCanonicalUuid(*uuid)) << *uuid;
}

// ---- schema: every required element, wrong types, sizes ----------------------------------

TEST(PackageSchema, EveryRequiredElementRemovedInTurn) {
  const std::string xml = SignedSample();
  struct Case {
    std::string element;  // as written in the document
    std::string named;    // what the error must mention
  };
  const std::vector<Case> cases = {
      {"PackageId", "PackageId"},
      {"FormatVersion", "FormatVersion"},
      {"SourcePlatformId", "SourcePlatformId"},
      {"CreationTime", "CreationTime"},
      {"MigratableRootKey", "MigratableRootKey"},
      {"Public", "Public"},  // the MRK's, first in document order
      {"Duplicate", "Duplicate"},
      {"EncryptedSeed", "EncryptedSeed"},
      {"SymmetricAlgorithm", "SymmetricAlgorithm"},
      {"KeyId", "KeyId"},
      {"Label", "Label"},
      {"Usage", "Usage"},
      {"Private", "Private"},
      {"Algorithm", "Algorithm"},  // EncryptedAuth's
      {"Ciphertext", "Ciphertext"},
      {"InnerKeyCustody", "InnerKeyCustody"},
      {"RecoveryCode", "RecoveryCode"},
      {"Kdf", "Kdf"},
      {"Salt", "Salt"},
      {"N", "N"},
      {"R", "R"},
      {"P", "P"},
      {"ds:Signature", "xmldsig"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.element);
    std::string broken = Replace(xml, ElementRe(c.element), "");
    EXPECT_CODE(OpenText(broken), Code::kSchemaViolation, c.named);
  }
}

TEST(PackageSchema, WrongTypesAreNamed) {
  const std::string xml = SignedSample();
  struct Case {
    std::string pattern, replacement, named;
  };
  const std::vector<Case> cases = {
      {"<PackageId>[^<]*<", "<PackageId>not-a-uuid<", "PackageId"},
      {"<PackageId>[^<]*<", "<PackageId>3F1C2A9E-7B4D-4E2F-9A1B-0C8D7E6F5A4B<", "PackageId"},
      {"<KeyId>[^<]*<", "<KeyId>1234<", "KeyId"},
      {"<CreationTime>[^<]*<", "<CreationTime>2026-13-01T00:00:00Z<", "CreationTime"},
      {"<CreationTime>[^<]*<", "<CreationTime>2026-11-22T00:00:00+01:00<", "CreationTime"},
      {"<CreationTime>[^<]*<", "<CreationTime>yesterday<", "CreationTime"},
      {"<Usage>[^<]*<", "<Usage>Fly<", "Usage"},
      {"<SymmetricAlgorithm>[^<]*<", "<SymmetricAlgorithm>DES<", "SymmetricAlgorithm"},
      {"<FormatVersion>1<", "<FormatVersion>2<", "FormatVersion"},
      {"<SourcePlatformId>[^<]*<", "<SourcePlatformId>xyz<", "SourcePlatformId"},
      {"<N>[^<]*<", "<N>-5<", "N"},
      {"<Kdf>[^<]*<", "<Kdf>md5<", "Kdf"},
      {"Type=\"X509Certificate\"", "Type=\"Jpeg\"", "Type"},
      {"<Label>", "<Surprise>x</Surprise><Label>", "Surprise"},
      {"<MigrationPackage ", "<MigrationPackage Id=\"pkg\" ", "Id"},
      {"<Public>[A-Za-z0-9+/=]*<", "<Public>!!!not base64!!!<", "Public"},
      {"<Label>[^<]*<", "<Label><", "Label"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.replacement);
    EXPECT_CODE(OpenText(Replace(xml, c.pattern, c.replacement)), Code::kSchemaViolation, c.named);
  }
  EXPECT_CODE(OpenText(Replace(xml, "urn:tpm-ma:package:1", "urn:evil")), Code::kSchemaViolation,
              "MigrationPackage");
}

TEST(PackageSchema, OversizedBlobsAreRefused) {
  const std::string xml = SignedSample();
  struct Case {
    std::string element;
    size_t octets;
  };
  // One past each documented maximum.
  const std::vector<Case> cases = {{"Public", kMaxTpm2bPublic + 1},
                                   {"Duplicate", kMaxTpm2bPrivate + 1},
                                   {"EncryptedSeed", kMaxTpm2bEncryptedSecret + 1},
                                   {"Private", kMaxTpm2bPrivate + 1},
                                   {"Ciphertext", kMaxEncryptedAuth + 1},
                                   {"Salt", kMaxSalt + 1},
                                   {"Verifier", kMaxVerifier + 1}};
  for (const Case& c : cases) {
    SCOPED_TRACE(c.element);
    std::string big = "<" + c.element + ">" + Base64Encode(Blob(c.octets, 1)) + "<";
    EXPECT_CODE(OpenText(Replace(xml, "<" + c.element + ">[A-Za-z0-9+/=]*<", big)),
                Code::kSchemaViolation, c.element);
    // ... and exactly at the maximum it is fine (schema-wise; the signature then fails).
    std::string max = "<" + c.element + ">" + Base64Encode(Blob(c.octets - 1, 1)) + "<";
    auto ok = OpenText(Replace(xml, "<" + c.element + ">[A-Za-z0-9+/=]*<", max));
    EXPECT_TRUE(ok) << ok.error().ToString();
  }
  std::string app =
      "<ApplicationData Type=\"Opaque\">" + Base64Encode(Blob(kMaxApplicationData + 1, 1)) + "<";
  EXPECT_CODE(OpenText(Replace(xml, "<ApplicationData Type=\"Opaque\">[A-Za-z0-9+/=]*<", app)),
              Code::kSchemaViolation, "ApplicationData");
  std::string label = "<Label>" + std::string(257, 'x') + "<";
  EXPECT_CODE(OpenText(Replace(xml, "<Label>[^<]*<", label)), Code::kSchemaViolation, "Label");
}

// ---- limits ---------------------------------------------------------------------------------

TEST(PackageLimits, TooManyChildKeysNamesTheLimit) {
  MigrationPackage p = Sample();
  p.child_keys.clear();
  for (int i = 0; i < 1001; ++i) p.child_keys.push_back(MakeChild(i));
  auto xml = SerializeTemplate(p, RsaKey());
  ASSERT_TRUE(xml);
  EXPECT_CODE(PackageReader::Open(*xml), Code::kLimitExceeded, "max_child_keys=1000");
  ParseLimits limits;
  limits.max_child_keys = 1001;
  // Within the count limit, the (unsigned) template then fails only later, in Verify.
  auto reader = PackageReader::Open(*xml, limits);
  ASSERT_TRUE(reader) << reader.error().ToString();
  EXPECT_CODE(reader->Verify(RsaKey()), Code::kSignatureInvalid, "");
  limits.max_child_keys = 3;
  EXPECT_CODE(PackageReader::Open(*xml, limits), Code::kLimitExceeded, "max_child_keys=3");
}

TEST(PackageLimits, ApplicationDataAndElementCounts) {
  MigrationPackage p = Sample();
  p.child_keys[0].application_data.assign(17, {ApplicationDataType::kOpaque, Blob(4, 1)});
  auto xml = SerializeTemplate(p, RsaKey());
  ASSERT_TRUE(xml);
  EXPECT_CODE(PackageReader::Open(*xml), Code::kLimitExceeded, "max_application_data_per_key=16");
  p = Sample();
  p.mrk.application_data.assign(17, {ApplicationDataType::kOpaque, Blob(4, 1)});
  xml = SerializeTemplate(p, RsaKey());
  ASSERT_TRUE(xml);
  EXPECT_CODE(PackageReader::Open(*xml), Code::kLimitExceeded, "in one MigratableRootKey");
  ParseLimits limits;
  limits.max_elements = 20;
  EXPECT_CODE(OpenText(SignedSample(), limits), Code::kLimitExceeded, "max_elements=20");
}

TEST(PackageLimits, DocumentSizeCheckedBeforeParsing) {
  ParseLimits limits;
  limits.max_document_bytes = 100;
  std::string junk(101, '<');  // not even XML: the size check comes first
  EXPECT_CODE(OpenText(junk, limits), Code::kLimitExceeded, "max_document_bytes=100");
  EXPECT_CODE(OpenText(""), Code::kMalformed, "empty");
}

TEST(PackageLimits, HundredThousandDeepNestingIsRefusedQuickly) {
  std::string deep;
  for (int i = 0; i < 100000; ++i) deep += "<a>";
  for (int i = 0; i < 100000; ++i) deep += "</a>";
  auto start = std::chrono::steady_clock::now();
  EXPECT_CODE(OpenText(deep), Code::kLimitExceeded, "depth");
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(2));
}

TEST(PackageLimits, ModestNestingBeyondOurLimit) {
  std::string nest;
  for (int i = 0; i < 20; ++i) nest += "<x>";
  for (int i = 0; i < 20; ++i) nest += "</x>";
  std::string xml = Replace(SignedSample(), "<Label>[^<]*<", "<Label>" + nest + "<");
  EXPECT_CODE(OpenText(xml), Code::kLimitExceeded, "max_depth=16");
}

// ---- hostile XML -------------------------------------------------------------------------

TEST(PackageHostile, DoctypeIsRefused) {
  std::string xml = SignedSample();
  std::string with_doctype = Replace(xml, "\\?>\n", "?>\n<!DOCTYPE MigrationPackage>\n");
  EXPECT_CODE(OpenText(with_doctype), Code::kMalformed, "DOCTYPE");
}

TEST(PackageHostile, ExternalEntityIsRefusedWithoutFetching) {
  TempDir dir;
  tpmma::testing::WriteFileOrDie(dir.File("secret"), View("TOP-SECRET"));
  std::string xxe = "<?xml version=\"1.0\"?>\n<!DOCTYPE p [<!ENTITY x SYSTEM \"file://" +
                    dir.File("secret") + "\">]>\n<p>&x;</p>";
  auto r = OpenText(xxe);
  EXPECT_CODE(r, Code::kMalformed, "DOCTYPE");
  EXPECT_EQ(r.error().message().find("TOP-SECRET"), std::string::npos);
  // Network form too (NONET; and we never get that far).
  EXPECT_CODE(OpenText("<!DOCTYPE p SYSTEM \"http://127.0.0.1:9/x.dtd\"><p/>"), Code::kMalformed,
              "DOCTYPE");
}

TEST(PackageHostile, BillionLaughsIsRefusedFast) {
  std::string bomb = "<?xml version=\"1.0\"?>\n<!DOCTYPE lolz [\n<!ENTITY lol \"lol\">\n";
  for (int i = 1; i <= 9; ++i) {
    bomb += "<!ENTITY lol" + std::to_string(i) + " \"";
    for (int j = 0; j < 10; ++j)
      bomb += "&lol" + (i == 1 ? std::string() : std::to_string(i - 1)) + ";";
    bomb += "\">\n";
  }
  bomb += "]>\n<lolz>&lol9;</lolz>";
  auto start = std::chrono::steady_clock::now();
  EXPECT_CODE(OpenText(bomb), Code::kMalformed, "DOCTYPE");
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(500));
}

TEST(PackageHostile, UndeclaredEntityIsMalformed) {
  std::string xml = Replace(SignedSample(), "<Label>[^<]*<", "<Label>&x;<");
  EXPECT_CODE(OpenText(xml), Code::kMalformed, "Entity 'x' not defined");
}

TEST(PackageHostile, InvalidUtf8IsRefused) {
  const std::string xml = SignedSample();
  for (std::string bad :
       {std::string("\xC3\x28"), std::string("\xC0\xAF"), std::string("\xED\xA0\x80"),
        std::string("\xF4\x90\x80\x80"), std::string("\xE2\x82")}) {
    SCOPED_TRACE(HexEncode(View(bad)));
    EXPECT_CODE(OpenText(Replace(xml, "<Label>", "<Label>" + bad)), Code::kMalformed, "UTF-8");
  }
  // A UTF-16 document is not UTF-8 either.
  EXPECT_CODE(OpenText(std::string("\xFF\xFE<\0p\0/\0>\0", 10)), Code::kMalformed, "UTF-8");
}

TEST(PackageHostile, EncodingDeclarationNamingAnotherEncodingIsRefused) {
  // The signature does not cover the XML declaration: a package re-labelled Latin-1 (or
  // anything else) would be a second encoding, and a second digest, of one package.
  const std::string xml = SignedSample();
  EXPECT_CODE(OpenText(Replace(xml, "encoding=\"UTF-8\"", "encoding=\"ISO-8859-1\"")),
              Code::kMalformed, "names encoding 'ISO-8859-1'");
  EXPECT_CODE(OpenText(Replace(xml, "encoding=\"UTF-8\"", "encoding = 'UTF-16'")), Code::kMalformed,
              "names encoding 'UTF-16'");
  auto lower = OpenAndVerify(Replace(xml, "encoding=\"UTF-8\"", "encoding=\"utf-8\""), RsaKey());
  EXPECT_TRUE(lower) << lower.error().ToString();
}

// UTF-8 (ASCII and BMP; the sample has nothing beyond) to UTF-16, as iconv would write it.
std::string ToUtf16(const std::string& utf8, bool big_endian, bool bom) {
  std::u16string units;
  for (size_t i = 0; i < utf8.size();) {
    const auto c = static_cast<uint8_t>(utf8[i]);
    const size_t len = c < 0x80 ? 1 : c < 0xe0 ? 2 : 3;
    char32_t cp = len == 1 ? c : c & (len == 2 ? 0x1f : 0x0f);
    for (size_t k = 1; k < len; ++k) cp = (cp << 6) | (static_cast<uint8_t>(utf8[i + k]) & 0x3f);
    units.push_back(static_cast<char16_t>(cp));
    i += len;
  }
  std::string out;
  if (bom) units.insert(units.begin(), u'\uFEFF');
  for (char16_t u : units) {
    const char hi = static_cast<char>(u >> 8), lo = static_cast<char>(u & 0xff);
    out += big_endian ? std::string{hi, lo} : std::string{lo, hi};
  }
  return out;
}

// Issue #13 (fuzzing): the same signed package as UTF-16 without a BOM passed the UTF-8
// check (NUL is valid UTF-8), libxml2 read it as UTF-16, and it verified under a second
// digest.
TEST(PackageHostile, SignedPackageReencodedAsUtf16IsRefused) {
  const std::string xml = SignedSample();
  ASSERT_TRUE(OpenAndVerify(xml, RsaKey()));
  for (bool big_endian : {false, true}) {
    SCOPED_TRACE(big_endian ? "UTF-16BE" : "UTF-16LE");
    EXPECT_CODE(OpenText(ToUtf16(xml, big_endian, /*bom=*/false)), Code::kMalformed, "NUL byte");
    EXPECT_CODE(OpenText(ToUtf16(xml, big_endian, /*bom=*/true)), Code::kMalformed,
                "UTF-16 byte order mark");
  }
  EXPECT_CODE(OpenText(std::string("\xFF\xFE\0\0<\0\0\0", 8)), Code::kMalformed,
              "UTF-32 byte order mark");
}

// libxml2's own reports (encoding errors among them) go into the one error the caller
// gets, never to stderr (the server's log).
TEST(PackageHostile, LibxmlWritesNothingToStderr) {
  const std::string xml = SignedSample();
  const std::string inputs[] = {
      ToUtf16(xml, false, false),
      ToUtf16(xml, true, true),
      // UTF-16LE with an unpaired high surrogate: libxml2's converter reports it.
      ToUtf16(xml, false, false).substr(0, 200) + std::string("\x00\xD8<\0/\0", 6),
      Replace(xml, "<Label>", "<Label>\xC3\x28"),
      Replace(xml, "<Label>[^<]*<", "<Label>&x;<"),
      Replace(xml, "\\?>", "?><!DOCTYPE p [<!ENTITY x \"y\">]>"),
      "<?xml version=\"1.0\"?><p:q/>",
      "<?xml version=\"1.0\"?><a><b></a>",
      xml.substr(0, xml.size() / 2),
  };
  ::testing::internal::CaptureStderr();
  for (const std::string& input : inputs) {
    auto r = OpenText(input);
    if (r) (void)r->Verify(RsaKey2());
  }
  EXPECT_EQ(::testing::internal::GetCapturedStderr(), "");
}

TEST(PackageHostile, CommentsAndProcessingInstructionsAreRefused) {
  const std::string xml = SignedSample();
  EXPECT_CODE(OpenText(Replace(xml, "<Label>", "<!--x--><Label>")), Code::kMalformed, "comments");
  EXPECT_CODE(OpenText(Replace(xml, "<Label>", "<?pi x?><Label>")), Code::kMalformed,
              "processing instructions");
}

TEST(PackageHostile, UndeclaredNamespacePrefixIsMalformed) {
  std::string xml = Replace(SignedSample(), "<Label>", "<Label><q:x/>");
  EXPECT_CODE(OpenText(xml), Code::kMalformed, "namespace");
}

TEST(PackageHostile, NotWellFormedNamesTheLine) {
  EXPECT_CODE(OpenText("<?xml version=\"1.0\"?>\n<a>\n<b></a>"), Code::kMalformed, "line 3");
}

// ---- signatures -------------------------------------------------------------------------

TEST(PackageSignature, TamperedLabelAfterSigning) {
  std::string xml = Replace(SignedSample(), "<Label>vpn key 2<", "<Label>vpn key 3<");
  EXPECT_CODE(OpenAndVerify(xml, RsaKey()), Code::kSignatureInvalid, "does not verify");
  std::string ec = Replace(SignedSample(EcKey()), "<Usage>Decrypt<", "<Usage>Sign<");
  EXPECT_CODE(OpenAndVerify(ec, EcKey()), Code::kSignatureInvalid, "does not verify");
}

TEST(PackageSignature, WrongKeyOrWrongKeyType) {
  std::string xml = SignedSample();
  EXPECT_CODE(OpenAndVerify(xml, RsaKey2()), Code::kSignatureInvalid, "does not verify");
  EXPECT_CODE(OpenAndVerify(xml, EcKey()), Code::kSignatureInvalid, "key type");
  EXPECT_CODE(OpenAndVerify(SignedSample(EcKey()), RsaKey()), Code::kSignatureInvalid, "key type");
}

TEST(PackageSignature, SignatureMovedIsRefused) {
  std::string xml = SignedSample();
  std::smatch m;
  ASSERT_TRUE(std::regex_search(xml, m, std::regex(ElementRe("ds:Signature"))));
  std::string sig = m.str();
  std::string without = Replace(xml, ElementRe("ds:Signature"), "");
  // As first child of the root: the XSD wants it last.
  std::string first = Replace(without, "<PackageId>", sig + "<PackageId>");
  EXPECT_CODE(OpenText(first), Code::kSchemaViolation, "");
  // Inside a ChildKey: also not where a Signature may be.
  std::string inside = Replace(without, "</ChildKey>", sig + "</ChildKey>");
  EXPECT_CODE(OpenText(inside), Code::kSchemaViolation, "");
}

TEST(PackageSignature, UnsignedTwinChildKeyIsRefused) {
  std::string xml = SignedSample();
  std::smatch m;
  ASSERT_TRUE(std::regex_search(xml, m, std::regex(ElementRe("ChildKey"))));
  std::string twin =
      std::regex_replace(m.str(), std::regex("<Label>[^<]*<"), "<Label>attacker key<");
  std::string wrapped = Replace(xml, "<InnerKeyCustody>", twin + "<InnerKeyCustody>");
  EXPECT_CODE(OpenAndVerify(wrapped, RsaKey()), Code::kSignatureInvalid, "does not verify");
}

TEST(PackageSignature, SecondSignatureIsRefused) {
  std::string xml = SignedSample();
  std::smatch m;
  ASSERT_TRUE(std::regex_search(xml, m, std::regex(ElementRe("ds:Signature"))));
  std::string sig = m.str();
  // A second one at the end of the root breaks the schema...
  EXPECT_CODE(OpenText(Replace(xml, "</MigrationPackage>", sig + "</MigrationPackage>")),
              Code::kSchemaViolation, "");
  // ... and one hidden inside the first (in a ds:Object) is caught by the shape check.
  std::string nested = sig;
  nested.insert(nested.size() - std::string("</ds:Signature>").size(),
                "<ds:Object>" + sig + "</ds:Object>");
  std::string doc = Replace(xml, ElementRe("ds:Signature"), "SIG_HERE");
  doc.replace(doc.find("SIG_HERE"), 8, nested);
  EXPECT_CODE(OpenAndVerify(doc, RsaKey()), Code::kSignatureInvalid, "more than one");
}

TEST(PackageSignature, ReferenceMustBeTheWholeDocument) {
  std::string xml = SignedSample();
  EXPECT_CODE(OpenAndVerify(Replace(xml, "URI=\"\"", "URI=\"#pkg\""), RsaKey()),
              Code::kSignatureInvalid, "URI=\"\"");
  EXPECT_CODE(OpenAndVerify(Replace(xml, "URI=\"\"", "URI=\"#xpointer(/)\""), RsaKey()),
              Code::kSignatureInvalid, "URI=\"\"");
  EXPECT_CODE(OpenAndVerify(Replace(xml, " URI=\"\"", ""), RsaKey()), Code::kSignatureInvalid,
              "URI=\"\"");
  // An ID'd element to point at cannot even get through the XSD.
  EXPECT_CODE(OpenText(Replace(xml, "<ChildKey>", "<ChildKey Id=\"k\">")), Code::kSchemaViolation,
              "Id");
  // Two references.
  std::smatch m;
  ASSERT_TRUE(std::regex_search(xml, m, std::regex(ElementRe("ds:Reference"))));
  EXPECT_CODE(
      OpenAndVerify(Replace(xml, "</ds:SignedInfo>", m.str() + "</ds:SignedInfo>"), RsaKey()),
      Code::kSignatureInvalid, "exactly one Reference");
}

TEST(PackageSignature, OnlyAllowedAlgorithmsAndTransforms) {
  std::string xml = SignedSample();
  EXPECT_CODE(OpenAndVerify(Replace(xml, "xmlenc#sha256", "xmldsig#sha1"), RsaKey()),
              Code::kUnsupported, "DigestMethod");
  EXPECT_CODE(OpenAndVerify(Replace(xml, "xmldsig-more#rsa-sha256", "xmldsig#rsa-sha1"), RsaKey()),
              Code::kUnsupported, "SignatureMethod");
  EXPECT_CODE(
      OpenAndVerify(
          Replace(xml, "<ds:Transform Algorithm=\"http://www.w3.org/2001/10/xml-exc-c14n#\"/>",
                  "<ds:Transform Algorithm=\"http://www.w3.org/TR/1999/REC-xslt-19991116\"/>"),
          RsaKey()),
      Code::kUnsupported, "Transform");
  EXPECT_CODE(
      OpenAndVerify(Replace(xml, "<ds:Transform Algorithm=\"[^\"]*enveloped-signature\"/>", ""),
                    RsaKey()),
      Code::kSignatureInvalid, "enveloped");
  EXPECT_CODE(OpenAndVerify(Replace(xml, ElementRe("ds:SignatureValue"), ""), RsaKey()),
              Code::kSignatureInvalid, "SignatureValue");
}

// LevelDB-style corruption sweep: whatever single byte is changed, the reader either refuses
// the package or returns exactly the model that was signed. Never a crash, never a lie.
TEST(PackageSignature, RandomByteCorruptionNeverYieldsAnotherModel) {
  const MigrationPackage p = Sample();
  const std::string xml = SignedSample(RsaKey(), p);
  uint32_t rng = 301;
  int refused = 0;
  for (int i = 0; i < 400; ++i) {
    rng = rng * 1103515245 + 12345;
    std::string bad = xml;
    size_t pos = (rng >> 8) % bad.size();
    bad[pos] = static_cast<char>(bad[pos] ^ (1 + ((rng >> 4) % 255)));
    auto model = OpenAndVerify(bad, RsaKey());
    if (model) {
      EXPECT_EQ(*model, p) << "offset " << pos;
    } else {
      ++refused;
    }
  }
  EXPECT_GT(refused, 350);
}

TEST(PackageSignature, ConcurrentOpenAndVerify) {
  const std::string rsa = SignedSample();
  const std::string ec = SignedSample(EcKey());
  const std::string bad = Replace(rsa, "<Label>vpn key 2<", "<Label>vpn key 9<");
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 25; ++i) {
        if (!OpenAndVerify(rsa, RsaKey())) ++failures;
        if (!OpenAndVerify(ec, EcKey())) ++failures;
        auto r = OpenAndVerify(bad, RsaKey());
        if (r || r.error().code() != Code::kSignatureInvalid) ++failures;
        if (OpenText("<a><b></a>")) ++failures;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
}

// ---- interop with the independent xmlsec1 CLI --------------------------------------------

class XmlsecCli : public ::testing::Test {
 protected:
  void SetUp() override {
    if (RunCommand({"xmlsec1", "--version"}).exit_code != 0) GTEST_SKIP() << "no xmlsec1 CLI";
  }
  std::string Write(const std::string& name, const std::string& content) {
    std::string path = dir_.File(name);
    tpmma::testing::WriteFileOrDie(path, View(content));
    return path;
  }
  TempDir dir_;
};

TEST_F(XmlsecCli, VerifiesWhatWeSign) {
  for (EVP_PKEY* key : {RsaKey(), EcKey()}) {
    std::string pem = Write("pub.pem", PublicPem(key));
    std::string signed_path = Write("signed.xml", SignedSample(key));
    auto r = RunCommand({"xmlsec1", "--verify", "--pubkey-pem", pem, signed_path});
    EXPECT_EQ(r.exit_code, 0) << r.output;
    std::string tampered =
        Write("tampered.xml", Replace(SignedSample(key), "<Label>vpn key 2<", "<Label>vpn key 3<"));
    r = RunCommand({"xmlsec1", "--verify", "--pubkey-pem", pem, tampered});
    EXPECT_NE(r.exit_code, 0) << r.output;
  }
}

TEST_F(XmlsecCli, WeVerifyWhatItSigns) {
  for (EVP_PKEY* key : {RsaKey(), EcKey()}) {
    auto tmpl = SerializeTemplate(Sample(), key);
    ASSERT_TRUE(tmpl);
    std::string tmpl_path = Write("template.xml", Str(*tmpl));
    std::string priv = Write("priv.pem", PrivatePem(key));
    std::string out = dir_.File("cli-signed.xml");
    auto r = RunCommand({"xmlsec1", "--sign", "--privkey-pem", priv, "--output", out, tmpl_path});
    ASSERT_EQ(r.exit_code, 0) << r.output;
    std::string xml = Str(tpmma::testing::ReadFileOrDie(out));
    auto model = OpenAndVerify(xml, key);
    ASSERT_TRUE(model) << model.error().ToString();
    EXPECT_EQ(*model, Sample());
  }
}

TEST_F(XmlsecCli, KeyInfoWithAnotherKeyIsIgnored) {
  // An attacker re-signs modified content with their own key and ships that key in KeyInfo;
  // the CLI (which trusts KeyInfo's KeyValue when asked to) accepts it, we must not.
  MigrationPackage p = Sample();
  p.child_keys[0].label = "attacker";
  auto tmpl = SerializeTemplate(p, RsaKey2());
  ASSERT_TRUE(tmpl);
  std::string with_keyinfo = Replace(Str(*tmpl), "</ds:Signature>",
                                     "<ds:KeyInfo><ds:KeyValue/></ds:KeyInfo></ds:Signature>");
  std::string tmpl_path = Write("template.xml", with_keyinfo);
  std::string priv = Write("priv.pem", PrivatePem(RsaKey2()));
  std::string out = dir_.File("attacker.xml");
  auto r = RunCommand({"xmlsec1", "--sign", "--privkey-pem", priv, "--output", out, tmpl_path});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  std::string xml = Str(tpmma::testing::ReadFileOrDie(out));
  ASSERT_NE(xml.find("RSAKeyValue"), std::string::npos) << xml;
  EXPECT_CODE(OpenAndVerify(xml, RsaKey()), Code::kSignatureInvalid, "does not verify");
  // The signature itself is sound: with the key we were really told about, it verifies.
  EXPECT_TRUE(OpenAndVerify(xml, RsaKey2()));
}

}  // namespace
}  // namespace tpmma::schema
