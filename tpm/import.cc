// SPDX-License-Identifier: GPL-2.0-or-later
#include "tpm/import.h"

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/rand.h>

#include <cstring>
#include <memory>

#include "common/bytes.h"
#include "common/openssl.h"
#include "tpm/marshal.h"
#include "tpm/public.h"
#include "tpm/wrap.h"

namespace tpmma::tpm {

namespace {

struct BnFree {
  void operator()(BIGNUM* b) const { BN_clear_free(b); }
};

// The marshalled TPM2B_SENSITIVE of an RSA key: its first prime.
Result<SecureBytes> RsaSensitive(const EVP_PKEY* rsa, const TPMT_PUBLIC& object) {
  BIGNUM* raw = nullptr;
  if (EVP_PKEY_get_bn_param(rsa, OSSL_PKEY_PARAM_RSA_FACTOR1, &raw) != 1) {
    return Error(OpensslError("EVP_PKEY_get_bn_param(rsa-factor1)"));
  }
  std::unique_ptr<BIGNUM, BnFree> p(raw);
  const int prime_bytes = object.parameters.rsaDetail.keyBits / 16;
  TPM2B_SENSITIVE s{};
  s.sensitiveArea.sensitiveType = TPM2_ALG_RSA;
  if (prime_bytes <= 0 ||
      prime_bytes > static_cast<int>(sizeof(s.sensitiveArea.sensitive.rsa.buffer)) ||
      BN_bn2binpad(p.get(), s.sensitiveArea.sensitive.rsa.buffer, prime_bytes) != prime_bytes) {
    return Error(Code::kInvalidArgument, "the RSA key's prime does not fit its public area");
  }
  s.sensitiveArea.sensitive.rsa.size = static_cast<uint16_t>(prime_bytes);
  // A storage key (restricted|decrypt) needs a seedValue of its nameAlg's size: the TPM derives
  // its children's protection from it (TPM_RC_SIZE otherwise). Random, as tpm2_import makes it.
  const int seed_bytes = EVP_MD_get_size(EVP_sha256());
  if (object.nameAlg != TPM2_ALG_SHA256)
    return Error(Code::kUnsupported, "nameAlg must be SHA-256");
  if (RAND_bytes(s.sensitiveArea.seedValue.buffer, seed_bytes) != 1) {
    return Error(OpensslError("RAND_bytes"));
  }
  s.sensitiveArea.seedValue.size = static_cast<uint16_t>(seed_bytes);
  auto bytes = Marshal(s);
  Wipe(&s, sizeof s);
  if (!bytes) return Error(bytes.error());
  SecureBytes out(bytes->begin(), bytes->end());
  Wipe(bytes->data(), bytes->size());
  return out;
}

}  // namespace

Result<Importable> WrapRsaKeyForImport(const TPMT_PUBLIC& parent, const TPM2B_PUBLIC& object,
                                       const EVP_PKEY* rsa) {
  if (object.publicArea.type != TPM2_ALG_RSA) {
    return Error(Code::kInvalidArgument, "only RSA keys are imported this way");
  }
  TPMMA_RETURN_IF_ERROR(CheckStorageParent(parent));
  TPMMA_ASSIGN_OR_RETURN(SecureBytes sensitive, RsaSensitive(rsa, object.publicArea));
  TPMMA_ASSIGN_OR_RETURN(Bytes name, ComputeName(object.publicArea));
  TPMMA_ASSIGN_OR_RETURN(Seed seed, CreateSeed(parent, kDuplicateLabel));
  TPMMA_ASSIGN_OR_RETURN(Bytes body, OuterWrap(parent, seed.seed, name, sensitive));
  Importable out;
  if (body.size() > sizeof(out.duplicate.buffer) ||
      seed.encrypted.size() > sizeof(out.encrypted_seed.secret)) {
    return Error(Code::kLimitExceeded, "the wrapped key does not fit a TPM2B_PRIVATE");
  }
  out.duplicate.size = static_cast<uint16_t>(body.size());
  std::memcpy(out.duplicate.buffer, body.data(), body.size());
  out.encrypted_seed.size = static_cast<uint16_t>(seed.encrypted.size());
  std::memcpy(out.encrypted_seed.secret, seed.encrypted.data(), seed.encrypted.size());
  return out;
}

}  // namespace tpmma::tpm
