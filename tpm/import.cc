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

// `key`'s private part in `s`: an RSA key's first prime, an EC key's private scalar, each as
// long as `object` says.
Status FillPrivate(const EVP_PKEY* key, const TPMT_PUBLIC& object, TPMT_SENSITIVE& s) {
  const bool rsa = object.type == TPM2_ALG_RSA;
  BIGNUM* raw = nullptr;
  const char* param = rsa ? OSSL_PKEY_PARAM_RSA_FACTOR1 : OSSL_PKEY_PARAM_PRIV_KEY;
  if (EVP_PKEY_get_bn_param(key, param, &raw) != 1) {
    return OpensslError(std::string("EVP_PKEY_get_bn_param(") + param + ")");
  }
  std::unique_ptr<BIGNUM, BnFree> value(raw);
  s.sensitiveType = object.type;
  uint8_t* out = rsa ? s.sensitive.rsa.buffer : s.sensitive.ecc.buffer;
  const size_t room = rsa ? sizeof(s.sensitive.rsa.buffer) : sizeof(s.sensitive.ecc.buffer);
  const int bytes = rsa ? object.parameters.rsaDetail.keyBits / 16 : object.unique.ecc.x.size;
  if (bytes <= 0 || static_cast<size_t>(bytes) > room ||
      BN_bn2binpad(value.get(), out, bytes) != bytes) {
    return Status(Code::kInvalidArgument, "the private key does not fit its public area");
  }
  (rsa ? s.sensitive.rsa.size : s.sensitive.ecc.size) = static_cast<uint16_t>(bytes);
  return Status::Ok();
}

// The marshalled TPM2B_SENSITIVE of `key`.
Result<SecureBytes> Sensitive(const EVP_PKEY* key, const TPMT_PUBLIC& object) {
  TPM2B_SENSITIVE s{};
  Status filled = FillPrivate(key, object, s.sensitiveArea);
  // A seedValue of the nameAlg's size: a storage key (restricted|decrypt) derives its
  // children's protection from it (TPM_RC_SIZE otherwise). Random, as tpm2_import makes it.
  if (filled.ok() && object.nameAlg != TPM2_ALG_SHA256) {
    filled = Status(Code::kUnsupported, "nameAlg must be SHA-256");
  }
  if (filled.ok() && RAND_bytes(s.sensitiveArea.seedValue.buffer, 32) != 1) {
    filled = OpensslError("RAND_bytes");
  }
  s.sensitiveArea.seedValue.size = 32;
  auto bytes = filled.ok() ? Marshal(s) : Result<Bytes>(Error(filled));
  Wipe(&s, sizeof s);
  if (!bytes) return Error(bytes.error());
  SecureBytes out(bytes->begin(), bytes->end());
  Wipe(bytes->data(), bytes->size());
  return out;
}

}  // namespace

Result<Importable> WrapKeyForImport(const TPMT_PUBLIC& parent, const TPM2B_PUBLIC& object,
                                    const EVP_PKEY* key) {
  if (object.publicArea.type != TPM2_ALG_RSA && object.publicArea.type != TPM2_ALG_ECC) {
    return Error(Code::kInvalidArgument, "only RSA and ECC keys are imported this way");
  }
  TPMMA_RETURN_IF_ERROR(CheckStorageParent(parent));
  TPMMA_ASSIGN_OR_RETURN(SecureBytes sensitive, Sensitive(key, object.publicArea));
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
