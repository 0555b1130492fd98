// SPDX-License-Identifier: GPL-2.0-or-later
#include "tpm/ek_templates.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "common/bytes.h"
#include "tpm/marshal.h"

namespace tpmma::tpm {
namespace {

std::string Hex(uint32_t v, int digits) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%0*x", digits, v);
  return buf;
}

// TCG EK Credential Profile 2.x, the templates' authPolicy digests. PolicyA (low range) =
// PolicySecret(TPM_RH_ENDORSEMENT); PolicyB (high range) = PolicyOR(PolicyA, PolicyC) for
// the template's nameAlg. Values as in the profile's tables, cross-checked with
// google/go-tpm (tpm2.RSAEKTemplate/ECCEKTemplate: PolicyA), loicsikidi/go-tpm-kit
// tpmutil/templates.go (the high-range templates B.4.4.1..B.4.4.7 with PolicyB SHA-256,
// SHA-384, SHA-512 and SM3-256) and wolfTPM's TPM_20_EK_AUTH_POLICY_SHA{256,384,512}.
constexpr uint8_t kPolicyA[] = {0x83, 0x71, 0x97, 0x67, 0x44, 0x84, 0xb3, 0xf8, 0x1a, 0x90, 0xcc,
                                0x8d, 0x46, 0xa5, 0xd7, 0x24, 0xfd, 0x52, 0xd7, 0x6e, 0x06, 0x52,
                                0x0b, 0x64, 0xf2, 0xa1, 0xda, 0x1b, 0x33, 0x14, 0x69, 0xaa};
constexpr uint8_t kPolicyBSha256[] = {
    0xca, 0x3d, 0x0a, 0x99, 0xa2, 0xb9, 0x39, 0x06, 0xf7, 0xa3, 0x34, 0x24, 0x14, 0xef, 0xcf, 0xb3,
    0xa3, 0x85, 0xd4, 0x4c, 0xd1, 0xfd, 0x45, 0x90, 0x89, 0xd1, 0x9b, 0x50, 0x71, 0xc0, 0xb7, 0xa0};
constexpr uint8_t kPolicyBSha384[] = {
    0xb2, 0x6e, 0x7d, 0x28, 0xd1, 0x1a, 0x50, 0xbc, 0x53, 0xd8, 0x82, 0xbc, 0xf5, 0xfd, 0x3a, 0x1a,
    0x07, 0x41, 0x48, 0xbb, 0x35, 0xd3, 0xb4, 0xe4, 0xcb, 0x1c, 0x0a, 0xd9, 0xbd, 0xe4, 0x19, 0xca,
    0xcb, 0x47, 0xba, 0x09, 0x69, 0x96, 0x46, 0x15, 0x0f, 0x9f, 0xc0, 0x00, 0xf3, 0xf8, 0x0e, 0x12};
constexpr uint8_t kPolicyBSha512[] = {
    0xb8, 0x22, 0x1c, 0xa6, 0x9e, 0x85, 0x50, 0xa4, 0x91, 0x4d, 0xe3, 0xfa, 0xa6, 0xa1, 0x8c, 0x07,
    0x2c, 0xc0, 0x12, 0x08, 0x07, 0x3a, 0x92, 0x8d, 0x5d, 0x66, 0xd5, 0x9e, 0xf7, 0x9e, 0x49, 0xa4,
    0x29, 0xc4, 0x1a, 0x6b, 0x26, 0x95, 0x71, 0xd5, 0x7e, 0xdb, 0x25, 0xfb, 0xdb, 0x18, 0x38, 0x42,
    0x56, 0x08, 0xb4, 0x13, 0xcd, 0x61, 0x6a, 0x5f, 0x6d, 0xb5, 0xb6, 0x07, 0x1a, 0xf9, 0x9b, 0xea};
constexpr uint8_t kPolicyBSm3[] = {0x16, 0x78, 0x60, 0xa3, 0x5f, 0x2c, 0x5c, 0x35, 0x67, 0xf9, 0xc9,
                                   0x27, 0xac, 0x56, 0xc0, 0x32, 0xf3, 0xb3, 0xa6, 0x46, 0x2f, 0x8d,
                                   0x03, 0x79, 0x98, 0xe7, 0xa1, 0x0f, 0x77, 0xfa, 0x45, 0x4a};

// fixedTPM|fixedParent|sensitiveDataOrigin|adminWithPolicy|restricted|decrypt (0x000300b2);
// the high range adds userWithAuth (0x000300f2).
constexpr TPMA_OBJECT kLowAttributes =
    TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT | TPMA_OBJECT_SENSITIVEDATAORIGIN |
    TPMA_OBJECT_ADMINWITHPOLICY | TPMA_OBJECT_RESTRICTED | TPMA_OBJECT_DECRYPT;
constexpr TPMA_OBJECT kHighAttributes = kLowAttributes | TPMA_OBJECT_USERWITHAUTH;

struct Spec {
  const char* name;
  uint32_t cert_index;
  TPMI_ALG_PUBLIC type;
  TPMI_ALG_HASH name_alg;
  TPMA_OBJECT attributes;
  ByteView policy;
  TPMI_ALG_SYM_OBJECT sym;
  uint16_t sym_bits;
  uint16_t key_bits;  // RSA
  TPMI_ECC_CURVE curve;
  uint16_t unique_bytes;  // the template's zero unique (per coordinate for ECC)
};

TPMT_PUBLIC Build(const Spec& s) {
  TPMT_PUBLIC p{};
  p.type = s.type;
  p.nameAlg = s.name_alg;
  p.objectAttributes = s.attributes;
  p.authPolicy.size = static_cast<uint16_t>(s.policy.size());
  std::memcpy(p.authPolicy.buffer, s.policy.data(), s.policy.size());
  TPMT_SYM_DEF_OBJECT sym{};
  sym.algorithm = s.sym;
  sym.keyBits.sym = s.sym_bits;
  sym.mode.sym = TPM2_ALG_CFB;
  if (s.type == TPM2_ALG_RSA) {
    auto& r = p.parameters.rsaDetail;
    r.symmetric = sym;
    r.scheme.scheme = TPM2_ALG_NULL;
    r.keyBits = s.key_bits;
    r.exponent = 0;
    p.unique.rsa.size = s.unique_bytes;
  } else {
    auto& e = p.parameters.eccDetail;
    e.symmetric = sym;
    e.scheme.scheme = TPM2_ALG_NULL;
    e.curveID = s.curve;
    e.kdf.scheme = TPM2_ALG_NULL;
    p.unique.ecc.x.size = s.unique_bytes;
    p.unique.ecc.y.size = s.unique_bytes;
  }
  return p;
}

std::vector<EkTemplate> MakeTemplates() {
  const ByteView a(kPolicyA, sizeof kPolicyA), b256(kPolicyBSha256, sizeof kPolicyBSha256),
      b384(kPolicyBSha384, sizeof kPolicyBSha384), b512(kPolicyBSha512, sizeof kPolicyBSha512),
      bsm3(kPolicyBSm3, sizeof kPolicyBSm3);
  constexpr auto kRsa = TPM2_ALG_RSA, kEcc = TPM2_ALG_ECC, kAes = TPM2_ALG_AES;
  // Profile B.3.3/B.3.4 (low range; also google/go-tpm RSAEKTemplate/ECCEKTemplate and
  // tpm2-tools tpm2_createek -G rsa|ecc) and B.4.4.1..B.4.4.7 (high range; certificate
  // indices as in wolfTPM's TPM2_NV_EK_* and the profile's table of NV indices).
  const Spec specs[] = {
      {"L-1", 0x01c00002, kRsa, TPM2_ALG_SHA256, kLowAttributes, a, kAes, 128, 2048, 0, 256},
      {"L-2", 0x01c0000a, kEcc, TPM2_ALG_SHA256, kLowAttributes, a, kAes, 128, 0,
       TPM2_ECC_NIST_P256, 32},
      {"H-1", 0x01c00012, kRsa, TPM2_ALG_SHA256, kHighAttributes, b256, kAes, 128, 2048, 0, 0},
      {"H-2", 0x01c00014, kEcc, TPM2_ALG_SHA256, kHighAttributes, b256, kAes, 128, 0,
       TPM2_ECC_NIST_P256, 0},
      {"H-3", 0x01c00016, kEcc, TPM2_ALG_SHA384, kHighAttributes, b384, kAes, 256, 0,
       TPM2_ECC_NIST_P384, 0},
      {"H-4", 0x01c00018, kEcc, TPM2_ALG_SHA512, kHighAttributes, b512, kAes, 256, 0,
       TPM2_ECC_NIST_P521, 0},
      {"H-5", 0x01c0001a, kEcc, TPM2_ALG_SM3_256, kHighAttributes, bsm3, TPM2_ALG_SM4, 128, 0,
       TPM2_ECC_SM2_P256, 0},
      {"H-6", 0x01c0001c, kRsa, TPM2_ALG_SHA384, kHighAttributes, b384, kAes, 256, 3072, 0, 0},
      {"H-7", 0x01c0001e, kRsa, TPM2_ALG_SHA384, kHighAttributes, b384, kAes, 256, 4096, 0, 0},
  };
  std::vector<EkTemplate> out;
  for (const Spec& s : specs) out.push_back(EkTemplate{s.name, s.cert_index, Build(s)});
  return out;
}

std::string AlgName(uint16_t alg) {
  switch (alg) {
    case TPM2_ALG_SHA1:
      return "SHA-1";
    case TPM2_ALG_SHA256:
      return "SHA-256";
    case TPM2_ALG_SHA384:
      return "SHA-384";
    case TPM2_ALG_SHA512:
      return "SHA-512";
    case TPM2_ALG_SM3_256:
      return "SM3-256";
    case TPM2_ALG_RSA:
      return "RSA";
    case TPM2_ALG_ECC:
      return "ECC";
    case TPM2_ALG_NULL:
      return "NULL";
    default:
      return Hex(alg, 4);
  }
}

std::string PolicyText(const TPM2B_DIGEST& d) {
  if (d.size == 0) return "empty";
  std::string hex = HexEncode(ByteView(d.buffer, d.size));
  return hex.size() > 16 ? hex.substr(0, 16) + "..." : hex;
}

std::string SymText(const TPMT_SYM_DEF_OBJECT& s) {
  if (s.algorithm == TPM2_ALG_NULL) return "NULL";
  std::string alg = s.algorithm == TPM2_ALG_AES   ? "AES"
                    : s.algorithm == TPM2_ALG_SM4 ? "SM4"
                                                  : Hex(s.algorithm, 4);
  std::string mode = s.mode.sym == TPM2_ALG_CFB ? "CFB" : Hex(s.mode.sym, 4);
  return alg + "-" + std::to_string(s.keyBits.sym) + "-" + mode;
}

size_t CurveBytes(TPMI_ECC_CURVE curve) {
  switch (curve) {
    case TPM2_ECC_NIST_P256:
    case TPM2_ECC_SM2_P256:
      return 32;
    case TPM2_ECC_NIST_P384:
      return 48;
    case TPM2_ECC_NIST_P521:
      return 66;
    default:
      return 0;
  }
}

// Both with the unique field emptied, marshalled: the authority on "everything else".
Bytes WithoutUnique(TPMT_PUBLIC p) {
  std::memset(&p.unique, 0, sizeof p.unique);
  auto m = Marshal(p);
  return m ? *m : Bytes{};
}

void DiffParameters(const TPMT_PUBLIC& ek, const TPMT_PUBLIC& t, std::vector<std::string>& out) {
  auto differ = [&](const char* what, const std::string& got, const std::string& want) {
    if (got != want) out.push_back(std::string(what) + " " + got + " (expected " + want + ")");
  };
  if (ek.type == TPM2_ALG_RSA) {
    const auto &e = ek.parameters.rsaDetail, &w = t.parameters.rsaDetail;
    differ("symmetric", SymText(e.symmetric), SymText(w.symmetric));
    differ("scheme", AlgName(e.scheme.scheme), AlgName(w.scheme.scheme));
    differ("keyBits", std::to_string(e.keyBits), std::to_string(w.keyBits));
    differ("exponent", std::to_string(e.exponent), std::to_string(w.exponent));
    if (ek.unique.rsa.size != e.keyBits / 8) {
      out.push_back("unique " + std::to_string(ek.unique.rsa.size) + " bytes (expected " +
                    std::to_string(e.keyBits / 8) + " for RSA-" + std::to_string(e.keyBits) + ")");
    }
    return;
  }
  const auto &e = ek.parameters.eccDetail, &w = t.parameters.eccDetail;
  differ("symmetric", SymText(e.symmetric), SymText(w.symmetric));
  differ("scheme", AlgName(e.scheme.scheme), AlgName(w.scheme.scheme));
  differ("curve", Hex(e.curveID, 4), Hex(w.curveID, 4));
  differ("kdf", AlgName(e.kdf.scheme), AlgName(w.kdf.scheme));
  const size_t n = CurveBytes(e.curveID);
  if (ek.unique.ecc.x.size != n || ek.unique.ecc.y.size != n) {
    out.push_back("unique point " + std::to_string(ek.unique.ecc.x.size) + "+" +
                  std::to_string(ek.unique.ecc.y.size) + " bytes (expected " + std::to_string(n) +
                  "+" + std::to_string(n) + ")");
  }
}

}  // namespace

const std::vector<EkTemplate>& TcgEkTemplates() {
  static const std::vector<EkTemplate> templates = MakeTemplates();
  return templates;
}

const EkTemplate& TcgEkTemplate(std::string_view name) {
  for (const EkTemplate& t : TcgEkTemplates()) {
    if (t.name == name) return t;
  }
  std::abort();
}

std::vector<std::string> EkTemplateDifferences(const TPMT_PUBLIC& ek, const TPMT_PUBLIC& t) {
  std::vector<std::string> out;
  if (ek.type != t.type) {
    out.push_back("type " + AlgName(ek.type) + " (expected " + AlgName(t.type) + ")");
    return out;
  }
  if (ek.nameAlg != t.nameAlg) {
    out.push_back("nameAlg " + AlgName(ek.nameAlg) + " (expected " + AlgName(t.nameAlg) + ")");
  }
  if (ek.objectAttributes != t.objectAttributes) {
    out.push_back("objectAttributes " + Hex(ek.objectAttributes, 8) + " (expected " +
                  Hex(t.objectAttributes, 8) + ")");
  }
  if (!std::ranges::equal(ByteView(ek.authPolicy.buffer, ek.authPolicy.size),
                          ByteView(t.authPolicy.buffer, t.authPolicy.size))) {
    out.push_back("authPolicy " + PolicyText(ek.authPolicy) + " (expected " +
                  PolicyText(t.authPolicy) + ")");
  }
  DiffParameters(ek, t, out);
  if (out.empty() && WithoutUnique(ek) != WithoutUnique(t)) out.push_back("parameters differ");
  return out;
}

Status CheckEkTemplate(const TPMT_PUBLIC& ek, std::span<const EkTemplate> extra) {
  const EkTemplate* closest = nullptr;
  std::vector<std::string> closest_diff;
  auto consider = [&](const EkTemplate& t) {
    if (t.public_area.type != ek.type) return false;
    std::vector<std::string> d = EkTemplateDifferences(ek, t.public_area);
    if (d.empty()) return true;
    if (closest == nullptr || d.size() < closest_diff.size()) {
      closest = &t;
      closest_diff = std::move(d);
    }
    return false;
  };
  for (const EkTemplate& t : TcgEkTemplates()) {
    if (consider(t)) return Status::Ok();
  }
  for (const EkTemplate& t : extra) {
    if (consider(t)) return Status::Ok();
  }
  if (closest == nullptr) {
    return Status(Code::kUnauthenticated,
                  "EK public is not a TCG EK template: type " + AlgName(ek.type));
  }
  std::string what;
  for (const std::string& d : closest_diff) what += (what.empty() ? "" : "; ") + d;
  return Status(Code::kUnauthenticated,
                "EK public is not a TCG EK template (closest: " + closest->name + "): " + what);
}

Status CheckConfiguredEkTemplate(const TPMT_PUBLIC& t) {
  const TPMA_OBJECT need =
      TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT | TPMA_OBJECT_RESTRICTED | TPMA_OBJECT_DECRYPT;
  if (t.type != TPM2_ALG_RSA && t.type != TPM2_ALG_ECC) {
    return Status(Code::kInvalidArgument, "EK template must be an RSA or ECC key");
  }
  if ((t.objectAttributes & need) != need || (t.objectAttributes & TPMA_OBJECT_SIGN_ENCRYPT)) {
    return Status(Code::kInvalidArgument,
                  "EK template must be a fixedTPM|fixedParent restricted decryption key");
  }
  return Status::Ok();
}

}  // namespace tpmma::tpm
