// SPDX-License-Identifier: GPL-2.0-or-later
#include "tpm/esys/templates.h"

#include <cstring>

#include "tpm/ek_templates.h"

namespace tpmma::esys {

namespace {

void SetAes128Cfb(TPMT_SYM_DEF_OBJECT& sym) {
  sym.algorithm = TPM2_ALG_AES;
  sym.keyBits.aes = 128;
  sym.mode.aes = TPM2_ALG_CFB;
}

TPM2B_PUBLIC RsaBase(TPMA_OBJECT attributes) {
  TPM2B_PUBLIC p{};
  p.publicArea.type = TPM2_ALG_RSA;
  p.publicArea.nameAlg = TPM2_ALG_SHA256;
  p.publicArea.objectAttributes = attributes;
  auto& r = p.publicArea.parameters.rsaDetail;
  r.symmetric.algorithm = TPM2_ALG_NULL;
  r.scheme.scheme = TPM2_ALG_NULL;
  r.keyBits = 2048;
  r.exponent = 0;  // 65537; written as 0 as tpm2-tools do, since the Name hashes it
  return p;
}

TPM2B_PUBLIC EccBase(TPMA_OBJECT attributes) {
  TPM2B_PUBLIC p{};
  p.publicArea.type = TPM2_ALG_ECC;
  p.publicArea.nameAlg = TPM2_ALG_SHA256;
  p.publicArea.objectAttributes = attributes;
  auto& e = p.publicArea.parameters.eccDetail;
  e.symmetric.algorithm = TPM2_ALG_NULL;
  e.scheme.scheme = TPM2_ALG_NULL;
  e.curveID = TPM2_ECC_NIST_P256;
  e.kdf.scheme = TPM2_ALG_NULL;
  return p;
}

TPM2B_PUBLIC Storage(KeyAlg alg, TPMA_OBJECT attributes) {
  TPM2B_PUBLIC p = alg == KeyAlg::kRsa2048 ? RsaBase(attributes) : EccBase(attributes);
  if (alg == KeyAlg::kRsa2048) {
    SetAes128Cfb(p.publicArea.parameters.rsaDetail.symmetric);
  } else {
    SetAes128Cfb(p.publicArea.parameters.eccDetail.symmetric);
  }
  return p;
}

}  // namespace

const char* KeyAlgName(KeyAlg alg) {
  return alg == KeyAlg::kRsa2048 ? "rsa2048" : "ecc-p256";
}

const char* ChildTypeName(ChildType type) {
  switch (type) {
    case ChildType::kEccSign:
      return "ecc-p256-sign";
    case ChildType::kRsaSign:
      return "rsa2048-sign";
    case ChildType::kRsaDecrypt:
      return "rsa2048-decrypt";
    case ChildType::kSealed:
      return "sealed-data";
    case ChildType::kEccApp:
      return "ecc-p256-app";
    case ChildType::kRsaApp:
      return "rsa2048-app";
  }
  return "unknown";
}

TPM2B_PUBLIC SrkTemplate(KeyAlg alg) {
  return Storage(alg, kSrkAttributes);
}

TPM2B_PUBLIC EkRsaTemplate() {
  // Template L-1 (tpm/ek_templates.cc) asks for a 256-byte zero unique field; it seeds the
  // key derivation.
  TPM2B_PUBLIC p{};
  p.publicArea = tpm::TcgEkTemplate("L-1").public_area;
  return p;
}

TPM2B_PUBLIC AkTemplate(KeyAlg alg) {
  if (alg == KeyAlg::kRsa2048) {
    TPM2B_PUBLIC p = RsaBase(kAkAttributes);
    auto& scheme = p.publicArea.parameters.rsaDetail.scheme;
    scheme.scheme = TPM2_ALG_RSASSA;
    scheme.details.rsassa.hashAlg = TPM2_ALG_SHA256;
    return p;
  }
  TPM2B_PUBLIC p = EccBase(kAkAttributes);
  auto& scheme = p.publicArea.parameters.eccDetail.scheme;
  scheme.scheme = TPM2_ALG_ECDSA;
  scheme.details.ecdsa.hashAlg = TPM2_ALG_SHA256;
  return p;
}

TPM2B_PUBLIC MrkTemplate(KeyAlg alg, const TPM2B_DIGEST& policy) {
  TPM2B_PUBLIC p = Storage(alg, kMrkAttributes);
  p.publicArea.authPolicy = policy;
  return p;
}

TPM2B_PUBLIC ChildTemplate(ChildType type, bool encrypted_duplication) {
  TPMA_OBJECT attrs = TPMA_OBJECT_FIXEDPARENT | TPMA_OBJECT_USERWITHAUTH;
  if (encrypted_duplication) attrs |= TPMA_OBJECT_ENCRYPTEDDUPLICATION;
  switch (type) {
    case ChildType::kEccSign: {
      TPM2B_PUBLIC p = EccBase(attrs | TPMA_OBJECT_SENSITIVEDATAORIGIN | TPMA_OBJECT_SIGN_ENCRYPT);
      auto& scheme = p.publicArea.parameters.eccDetail.scheme;
      scheme.scheme = TPM2_ALG_ECDSA;
      scheme.details.ecdsa.hashAlg = TPM2_ALG_SHA256;
      return p;
    }
    case ChildType::kRsaSign: {
      TPM2B_PUBLIC p = RsaBase(attrs | TPMA_OBJECT_SENSITIVEDATAORIGIN | TPMA_OBJECT_SIGN_ENCRYPT);
      auto& scheme = p.publicArea.parameters.rsaDetail.scheme;
      scheme.scheme = TPM2_ALG_RSASSA;
      scheme.details.rsassa.hashAlg = TPM2_ALG_SHA256;
      return p;
    }
    case ChildType::kRsaDecrypt: {
      TPM2B_PUBLIC p = RsaBase(attrs | TPMA_OBJECT_SENSITIVEDATAORIGIN | TPMA_OBJECT_DECRYPT);
      auto& scheme = p.publicArea.parameters.rsaDetail.scheme;
      scheme.scheme = TPM2_ALG_OAEP;
      scheme.details.oaep.hashAlg = TPM2_ALG_SHA256;
      return p;
    }
    case ChildType::kEccApp:
      return EccBase(attrs | TPMA_OBJECT_SENSITIVEDATAORIGIN | TPMA_OBJECT_SIGN_ENCRYPT);
    case ChildType::kRsaApp:
      return RsaBase(attrs | TPMA_OBJECT_SENSITIVEDATAORIGIN | TPMA_OBJECT_SIGN_ENCRYPT |
                     TPMA_OBJECT_DECRYPT);
    case ChildType::kSealed: {
      // No sensitiveDataOrigin: the caller supplies the data.
      TPM2B_PUBLIC p{};
      p.publicArea.type = TPM2_ALG_KEYEDHASH;
      p.publicArea.nameAlg = TPM2_ALG_SHA256;
      p.publicArea.objectAttributes = attrs;
      p.publicArea.parameters.keyedHashDetail.scheme.scheme = TPM2_ALG_NULL;
      return p;
    }
  }
  return {};
}

}  // namespace tpmma::esys
