// SPDX-License-Identifier: GPL-2.0-or-later
#include "tpm/public.h"

#include <openssl/core_names.h>
#include <openssl/obj_mac.h>

#include <cstdio>
#include <cstring>
#include <string>

#include "tpm/marshal.h"

namespace tpmma::tpm {

namespace {

struct Curve {
  TPMI_ECC_CURVE id;
  const char* group;  // OpenSSL group name
  size_t bytes;
};
constexpr Curve kCurves[] = {
    {TPM2_ECC_NIST_P256, SN_X9_62_prime256v1, 32},
    {TPM2_ECC_NIST_P384, SN_secp384r1, 48},
};

const Curve* CurveById(TPMI_ECC_CURVE id) {
  for (const auto& c : kCurves) {
    if (c.id == id) return &c;
  }
  return nullptr;
}

const Curve* CurveByGroup(std::string_view group) {
  for (const auto& c : kCurves) {
    if (group == c.group) return &c;
  }
  // OpenSSL may report the NIST alias.
  if (group == "P-256") return &kCurves[0];
  if (group == "P-384") return &kCurves[1];
  return nullptr;
}

Status BnToFixed(const BIGNUM* bn, size_t len, uint8_t* out) {
  if (BN_num_bytes(bn) > static_cast<int>(len) ||
      BN_bn2binpad(bn, out, static_cast<int>(len)) < 0) {
    return Status(Code::kInvalidArgument, "key component larger than the key size");
  }
  return Status::Ok();
}

std::string AttrFail(std::string_view what, std::string_view attr, bool want) {
  return std::string(what) + ": attribute " + std::string(attr) + " must be " +
         (want ? "set" : "clear");
}

}  // namespace

Result<const EVP_MD*> HashMd(TPMI_ALG_HASH alg) {
  switch (alg) {
    case TPM2_ALG_SHA1:
      return EVP_sha1();
    case TPM2_ALG_SHA256:
      return EVP_sha256();
    case TPM2_ALG_SHA384:
      return EVP_sha384();
    case TPM2_ALG_SHA512:
      return EVP_sha512();
    default:
      return Error(Code::kUnsupported, "unsupported TPM hash algorithm 0x" +
                                           HexEncode(Bytes{uint8_t(alg >> 8), uint8_t(alg)}));
  }
}

Result<size_t> DigestSize(TPMI_ALG_HASH alg) {
  TPMMA_ASSIGN_OR_RETURN(const EVP_MD* md, HashMd(alg));
  return static_cast<size_t>(EVP_MD_get_size(md));
}

Result<Bytes> ComputeName(const TPMT_PUBLIC& pub) {
  TPMMA_ASSIGN_OR_RETURN(const EVP_MD* md, HashMd(pub.nameAlg));
  TPMMA_ASSIGN_OR_RETURN(Bytes area, Marshal(pub));
  Bytes name(2 + EVP_MD_get_size(md));
  name[0] = static_cast<uint8_t>(pub.nameAlg >> 8);
  name[1] = static_cast<uint8_t>(pub.nameAlg);
  unsigned int len = 0;
  if (EVP_Digest(area.data(), area.size(), name.data() + 2, &len, md, nullptr) != 1) {
    return Error(OpensslError("EVP_Digest(Name)"));
  }
  return name;
}

Result<TPM2B_NAME> ComputeTpm2bName(const TPMT_PUBLIC& pub) {
  TPMMA_ASSIGN_OR_RETURN(Bytes name, ComputeName(pub));
  TPM2B_NAME out{};
  out.size = static_cast<uint16_t>(name.size());
  std::memcpy(out.name, name.data(), name.size());
  return out;
}

Result<EvpPkeyPtr> PublicToEvp(const TPMT_PUBLIC& pub) {
  OsslParamBldPtr bld(OSSL_PARAM_BLD_new());
  if (!bld) return Error(OpensslError("OSSL_PARAM_BLD_new"));
  const char* type = nullptr;
  BignumPtr n, e;
  Bytes point;
  if (pub.type == TPM2_ALG_RSA) {
    type = "RSA";
    const auto& rsa = pub.unique.rsa;
    if (rsa.size == 0) return Error(Code::kMalformed, "RSA public area has an empty modulus");
    n.reset(BN_bin2bn(rsa.buffer, rsa.size, nullptr));
    uint32_t exp = pub.parameters.rsaDetail.exponent;
    e.reset(BN_new());
    if (!n || !e || BN_set_word(e.get(), exp == 0 ? 65537 : exp) != 1 ||
        OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_N, n.get()) != 1 ||
        OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_E, e.get()) != 1) {
      return Error(OpensslError("RSA public parameters"));
    }
  } else if (pub.type == TPM2_ALG_ECC) {
    type = "EC";
    const Curve* curve = CurveById(pub.parameters.eccDetail.curveID);
    if (curve == nullptr)
      return Error(Code::kUnsupported, "unsupported ECC curve (P-256/P-384 only)");
    const auto& x = pub.unique.ecc.x;
    const auto& y = pub.unique.ecc.y;
    if (x.size > curve->bytes || y.size > curve->bytes || x.size == 0 || y.size == 0) {
      return Error(Code::kMalformed, "ECC point coordinates do not match the curve size");
    }
    point.assign(1 + 2 * curve->bytes, 0);
    point[0] = 0x04;  // uncompressed
    std::memcpy(point.data() + 1 + curve->bytes - x.size, x.buffer, x.size);
    std::memcpy(point.data() + 1 + 2 * curve->bytes - y.size, y.buffer, y.size);
    if (OSSL_PARAM_BLD_push_utf8_string(bld.get(), OSSL_PKEY_PARAM_GROUP_NAME, curve->group, 0) !=
            1 ||
        OSSL_PARAM_BLD_push_octet_string(bld.get(), OSSL_PKEY_PARAM_PUB_KEY, point.data(),
                                         point.size()) != 1) {
      return Error(OpensslError("EC public parameters"));
    }
  } else {
    return Error(Code::kUnsupported, "only RSA and ECC public areas are supported");
  }
  OsslParamPtr params(OSSL_PARAM_BLD_to_param(bld.get()));
  EvpPkeyCtxPtr ctx(EVP_PKEY_CTX_new_from_name(nullptr, type, nullptr));
  if (!params || !ctx || EVP_PKEY_fromdata_init(ctx.get()) != 1) {
    return Error(OpensslError("EVP_PKEY_fromdata_init"));
  }
  EVP_PKEY* raw = nullptr;
  if (EVP_PKEY_fromdata(ctx.get(), &raw, EVP_PKEY_PUBLIC_KEY, params.get()) != 1) {
    return Error(OpensslError("EVP_PKEY_fromdata"));
  }
  EvpPkeyPtr key(raw);
  if (pub.type == TPM2_ALG_ECC) {
    // fromdata does not check the point is on the curve; an off-curve point would turn
    // ECDH into an invalid-curve oracle.
    EvpPkeyCtxPtr check(EVP_PKEY_CTX_new_from_pkey(nullptr, key.get(), nullptr));
    if (!check || EVP_PKEY_public_check(check.get()) != 1) {
      return Error(Code::kInvalidArgument, "ECC public point is not on the curve");
    }
  }
  return key;
}

Result<TPM2B_PUBLIC> PublicFromEvp(const EVP_PKEY* key, const PublicTemplate& tmpl) {
  TPM2B_PUBLIC out{};
  TPMT_PUBLIC& p = out.publicArea;
  p.nameAlg = tmpl.name_alg;
  p.objectAttributes = tmpl.attributes;
  TPMT_SYM_DEF_OBJECT sym{};
  sym.algorithm = tmpl.symmetric;
  if (tmpl.symmetric == TPM2_ALG_AES) {
    sym.keyBits.aes = tmpl.sym_bits;
    sym.mode.aes = TPM2_ALG_CFB;
  }
  if (EVP_PKEY_is_a(key, "RSA")) {
    p.type = TPM2_ALG_RSA;
    p.parameters.rsaDetail.symmetric = sym;
    p.parameters.rsaDetail.scheme.scheme = TPM2_ALG_NULL;
    BIGNUM* n_raw = nullptr;
    BIGNUM* e_raw = nullptr;
    if (EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_RSA_N, &n_raw) != 1 ||
        EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_RSA_E, &e_raw) != 1) {
      BN_free(n_raw);
      return Error(OpensslError("EVP_PKEY_get_bn_param(RSA)"));
    }
    BignumPtr n(n_raw), e(e_raw);
    const int bits = EVP_PKEY_get_bits(key);
    if (BN_num_bits(e.get()) > 32)
      return Error(Code::kUnsupported, "RSA exponent wider than 32 bits");
    p.parameters.rsaDetail.keyBits = static_cast<uint16_t>(bits);
    p.parameters.rsaDetail.exponent = static_cast<uint32_t>(BN_get_word(e.get()));
    const size_t len = static_cast<size_t>((bits + 7) / 8);
    if (len > sizeof(p.unique.rsa.buffer)) return Error(Code::kUnsupported, "RSA key too large");
    TPMMA_RETURN_IF_ERROR(BnToFixed(n.get(), len, p.unique.rsa.buffer));
    p.unique.rsa.size = static_cast<uint16_t>(len);
  } else if (EVP_PKEY_is_a(key, "EC")) {
    p.type = TPM2_ALG_ECC;
    char group[64] = {};
    if (EVP_PKEY_get_utf8_string_param(key, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof group,
                                       nullptr) != 1) {
      return Error(OpensslError("EVP_PKEY_get_utf8_string_param(group)"));
    }
    const Curve* curve = CurveByGroup(group);
    if (curve == nullptr)
      return Error(Code::kUnsupported, std::string("unsupported curve ") + group);
    auto& ecc = p.parameters.eccDetail;
    ecc.symmetric = sym;
    ecc.scheme.scheme = TPM2_ALG_NULL;
    ecc.curveID = curve->id;
    ecc.kdf.scheme = TPM2_ALG_NULL;
    BIGNUM* x_raw = nullptr;
    BIGNUM* y_raw = nullptr;
    if (EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_EC_PUB_X, &x_raw) != 1 ||
        EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_EC_PUB_Y, &y_raw) != 1) {
      BN_free(x_raw);
      return Error(OpensslError("EVP_PKEY_get_bn_param(EC)"));
    }
    BignumPtr x(x_raw), y(y_raw);
    TPMMA_RETURN_IF_ERROR(BnToFixed(x.get(), curve->bytes, p.unique.ecc.x.buffer));
    TPMMA_RETURN_IF_ERROR(BnToFixed(y.get(), curve->bytes, p.unique.ecc.y.buffer));
    p.unique.ecc.x.size = p.unique.ecc.y.size = static_cast<uint16_t>(curve->bytes);
  } else {
    return Error(Code::kUnsupported, "only RSA and EC keys can become TPM public areas");
  }
  return out;
}

Result<TPM2B_PUBLIC> MaStoragePublic(const EVP_PKEY* key) {
  return PublicFromEvp(key, PublicTemplate{});
}

Status CheckAkAttributes(const TPMT_PUBLIC& ak) {
  const TPMA_OBJECT a = ak.objectAttributes;
  struct {
    TPMA_OBJECT bit;
    const char* name;
  } const need[] = {{TPMA_OBJECT_FIXEDTPM, "fixedTPM"},
                    {TPMA_OBJECT_FIXEDPARENT, "fixedParent"},
                    {TPMA_OBJECT_SENSITIVEDATAORIGIN, "sensitiveDataOrigin"},
                    {TPMA_OBJECT_RESTRICTED, "restricted"},
                    {TPMA_OBJECT_SIGN_ENCRYPT, "sign"}};
  for (const auto& n : need) {
    if (!(a & n.bit)) return Status(Code::kInvalidArgument, AttrFail("AK", n.name, true));
  }
  if (a & TPMA_OBJECT_DECRYPT)
    return Status(Code::kInvalidArgument, AttrFail("AK", "decrypt", false));
  if (ak.type != TPM2_ALG_RSA && ak.type != TPM2_ALG_ECC) {
    return Status(Code::kUnsupported, "AK must be an RSA or ECC key");
  }
  return Status::Ok();
}

std::string KeyAlgorithmText(const TPMT_PUBLIC& key) {
  char hex[16];
  if (key.type == TPM2_ALG_RSA) return "RSA " + std::to_string(key.parameters.rsaDetail.keyBits);
  if (key.type != TPM2_ALG_ECC) {
    std::snprintf(hex, sizeof hex, "0x%04x", key.type);
    return std::string("algorithm ") + hex;
  }
  switch (key.parameters.eccDetail.curveID) {
    case TPM2_ECC_NIST_P256:
      return "ECC NIST P-256";
    case TPM2_ECC_NIST_P384:
      return "ECC NIST P-384";
    case TPM2_ECC_NIST_P521:
      return "ECC NIST P-521";
    case TPM2_ECC_SM2_P256:
      return "ECC SM2 P-256";
    default:
      std::snprintf(hex, sizeof hex, "0x%04x", key.parameters.eccDetail.curveID);
      return std::string("ECC curve ") + hex;
  }
}

Status CheckStorageParent(const TPMT_PUBLIC& parent) {
  const TPMA_OBJECT a = parent.objectAttributes;
  if (parent.type != TPM2_ALG_RSA && parent.type != TPM2_ALG_ECC) {
    return Status(Code::kInvalidArgument, "storage parent must be an RSA or ECC key");
  }
  if (!(a & TPMA_OBJECT_RESTRICTED)) {
    return Status(Code::kInvalidArgument, AttrFail("storage parent", "restricted", true));
  }
  if (!(a & TPMA_OBJECT_DECRYPT)) {
    return Status(Code::kInvalidArgument, AttrFail("storage parent", "decrypt", true));
  }
  if (a & TPMA_OBJECT_SIGN_ENCRYPT) {
    return Status(Code::kInvalidArgument, AttrFail("storage parent", "sign", false));
  }
  const TPMT_SYM_DEF_OBJECT& sym = parent.type == TPM2_ALG_RSA
                                       ? parent.parameters.rsaDetail.symmetric
                                       : parent.parameters.eccDetail.symmetric;
  if (sym.algorithm != TPM2_ALG_AES || sym.mode.aes != TPM2_ALG_CFB ||
      (sym.keyBits.aes != 128 && sym.keyBits.aes != 192 && sym.keyBits.aes != 256)) {
    return Status(Code::kInvalidArgument, "storage parent: symmetric must be AES-CFB");
  }
  auto ds = DigestSize(parent.nameAlg);
  if (!ds) return ds.error().WithContext("storage parent nameAlg");
  return Status::Ok();
}

}  // namespace tpmma::tpm
