// SPDX-License-Identifier: GPL-2.0-or-later
//
// Built on EC_KEY_METHOD / RSA_METHOD, which OpenSSL 3 deprecates in favour of providers.
// They still work: a key with a non-default method is "foreign" and OpenSSL keeps it on the
// legacy code path, where ECDSA_sign and RSA_sign call our callbacks. A provider would be
// several times this code for the same two operations. The suppression is confined to
// this file; nothing else in tpm-ma may use deprecated OpenSSL APIs.
#define OPENSSL_SUPPRESS_DEPRECATED

#include "client/tpm/tpm_pkey.h"

#include <openssl/ec.h>
#include <openssl/ecdsa.h>
#include <openssl/err.h>
#include <openssl/objects.h>
#include <openssl/rsa.h>

#include <cstring>
#include <memory>

#include "tpm/public.h"

namespace tpmma::esys {

namespace {

// Owned by the EC_KEY/RSA through ex_data; freed with it.
struct SignerState {
  Tpm* tpm = nullptr;
  Object key;
};

void FreeState(void* /*parent*/, void* ptr, CRYPTO_EX_DATA* /*ad*/, int /*idx*/, long /*argl*/,
               void* /*argp*/) {
  std::unique_ptr<SignerState> owned(static_cast<SignerState*>(ptr));
}

int EcIndex() {
  static const int index = EC_KEY_get_ex_new_index(0, nullptr, nullptr, nullptr, FreeState);
  return index;
}

int RsaIndex() {
  static const int index = RSA_get_ex_new_index(0, nullptr, nullptr, nullptr, FreeState);
  return index;
}

void RaiseTpmError(const Status& s) {
  // The message names the Esys call and what went wrong; it never contains key material.
  ERR_raise_data(ERR_LIB_USER, ERR_R_OPERATION_FAIL, "TPM signing failed: %s",
                 s.ToString().c_str());
}

ECDSA_SIG* EcSignSig(const unsigned char* dgst, int dlen, const BIGNUM* /*kinv*/,
                     const BIGNUM* /*r*/, EC_KEY* eckey) {
  auto* state = static_cast<SignerState*>(EC_KEY_get_ex_data(eckey, EcIndex()));
  if (state == nullptr || dlen < 32) {
    ERR_raise_data(ERR_LIB_USER, ERR_R_PASSED_INVALID_ARGUMENT,
                   "TPM ECDSA key needs a digest of at least 32 bytes");
    return nullptr;
  }
  // ECDSA on P-256 uses the leftmost 256 bits of any longer digest, so passing the first
  // 32 bytes gives the same signature the TPM's SHA-256 scheme can make.
  auto sig = state->tpm->Sign(state->key, ByteView(dgst, 32));
  if (!sig) {
    RaiseTpmError(sig.error());
    return nullptr;
  }
  const TPMS_SIGNATURE_ECC& ecc = sig->signature.ecdsa;
  BignumPtr r(BN_bin2bn(ecc.signatureR.buffer, ecc.signatureR.size, nullptr));
  BignumPtr s(BN_bin2bn(ecc.signatureS.buffer, ecc.signatureS.size, nullptr));
  ECDSA_SIG* out = ECDSA_SIG_new();
  if (!r || !s || out == nullptr || ECDSA_SIG_set0(out, r.get(), s.get()) != 1) {
    ECDSA_SIG_free(out);
    return nullptr;
  }
  r.release();  // now owned by `out`
  s.release();
  return out;
}

int RsaSign(int type, const unsigned char* m, unsigned int m_length, unsigned char* sigret,
            unsigned int* siglen, const RSA* rsa) {
  auto* state = static_cast<SignerState*>(RSA_get_ex_data(rsa, RsaIndex()));
  if (state == nullptr || type != NID_sha256 || m_length != 32) {
    ERR_raise_data(ERR_LIB_USER, ERR_R_PASSED_INVALID_ARGUMENT,
                   "TPM RSA key signs SHA-256 digests only (PKCS#1 v1.5)");
    return 0;
  }
  auto sig = state->tpm->Sign(state->key, ByteView(m, m_length));
  if (!sig) {
    RaiseTpmError(sig.error());
    return 0;
  }
  const TPM2B_PUBLIC_KEY_RSA& s = sig->signature.rsassa.sig;
  if (s.size > static_cast<unsigned>(RSA_size(rsa))) return 0;
  std::memcpy(sigret, s.buffer, s.size);
  *siglen = s.size;
  return 1;
}

const EC_KEY_METHOD* EcMethod() {
  // Process-lifetime singletons: OpenSSL keys reference them until they are freed.
  static EC_KEY_METHOD* method = [] {
    EC_KEY_METHOD* m = EC_KEY_METHOD_new(EC_KEY_OpenSSL());
    if (m == nullptr) return m;
    int (*sign)(int, const unsigned char*, int, unsigned char*, unsigned int*, const BIGNUM*,
                const BIGNUM*, EC_KEY*) = nullptr;
    int (*setup)(EC_KEY*, BN_CTX*, BIGNUM**, BIGNUM**) = nullptr;
    ECDSA_SIG* (*sign_sig)(const unsigned char*, int, const BIGNUM*, const BIGNUM*, EC_KEY*) =
        nullptr;
    EC_KEY_METHOD_get_sign(m, &sign, &setup, &sign_sig);
    // The default `sign` DER-encodes what sign_sig returns; there is no k to set up.
    EC_KEY_METHOD_set_sign(m, sign, nullptr, EcSignSig);
    return m;
  }();
  return method;
}

const RSA_METHOD* RsaMethod() {
  static RSA_METHOD* method = [] {
    RSA_METHOD* m = RSA_meth_dup(RSA_PKCS1_OpenSSL());
    if (m == nullptr) return m;
    RSA_meth_set1_name(m, "tpm-ma TPM RSA");
    RSA_meth_set_sign(m, RsaSign);
    return m;
  }();
  return method;
}

struct EcKeyFree {
  void operator()(EC_KEY* k) const { EC_KEY_free(k); }
};
struct RsaFree {
  void operator()(RSA* k) const { RSA_free(k); }
};

}  // namespace

Result<EvpPkeyPtr> MakeTpmSigningKey(Tpm& tpm, Object key) {
  const TPMT_PUBLIC& pub = key.public_area().publicArea;
  const bool sign = (pub.objectAttributes & TPMA_OBJECT_SIGN_ENCRYPT) != 0;
  const bool restricted = (pub.objectAttributes & TPMA_OBJECT_RESTRICTED) != 0;
  const bool ecdsa = pub.type == TPM2_ALG_ECC &&
                     pub.parameters.eccDetail.curveID == TPM2_ECC_NIST_P256 &&
                     pub.parameters.eccDetail.scheme.scheme == TPM2_ALG_ECDSA &&
                     pub.parameters.eccDetail.scheme.details.ecdsa.hashAlg == TPM2_ALG_SHA256;
  const bool rsassa = pub.type == TPM2_ALG_RSA &&
                      pub.parameters.rsaDetail.scheme.scheme == TPM2_ALG_RSASSA &&
                      pub.parameters.rsaDetail.scheme.details.rsassa.hashAlg == TPM2_ALG_SHA256;
  if (!key || !sign || restricted || !(ecdsa || rsassa)) {
    return Error(Code::kInvalidArgument,
                 "a TPM-backed OpenSSL key needs a loaded unrestricted ECDSA-P256-SHA256 or "
                 "RSASSA-SHA256 signing key");
  }
  TPMMA_ASSIGN_OR_RETURN(EvpPkeyPtr plain, tpm::PublicToEvp(pub));
  auto state = std::make_unique<SignerState>();
  state->tpm = &tpm;
  state->key = std::move(key);
  EvpPkeyPtr out(EVP_PKEY_new());
  if (!out) return Error(OpensslError("EVP_PKEY_new"));
  if (ecdsa) {
    std::unique_ptr<EC_KEY, EcKeyFree> ec(EVP_PKEY_get1_EC_KEY(plain.get()));
    if (!ec || EcMethod() == nullptr || EC_KEY_set_method(ec.get(), EcMethod()) != 1 ||
        EC_KEY_set_ex_data(ec.get(), EcIndex(), state.get()) != 1) {
      return Error(OpensslError("EC_KEY_set_method"));
    }
    state.release();  // owned by `ec` (FreeState)
    if (EVP_PKEY_assign_EC_KEY(out.get(), ec.get()) != 1) {
      return Error(OpensslError("EVP_PKEY_assign_EC_KEY"));
    }
    ec.release();  // owned by `out`
  } else {
    std::unique_ptr<RSA, RsaFree> rsa(EVP_PKEY_get1_RSA(plain.get()));
    if (!rsa || RsaMethod() == nullptr || RSA_set_method(rsa.get(), RsaMethod()) != 1 ||
        RSA_set_ex_data(rsa.get(), RsaIndex(), state.get()) != 1) {
      return Error(OpensslError("RSA_set_method"));
    }
    state.release();  // owned by `rsa` (FreeState)
    if (EVP_PKEY_assign_RSA(out.get(), rsa.get()) != 1) {
      return Error(OpensslError("EVP_PKEY_assign_RSA"));
    }
    rsa.release();  // owned by `out`
  }
  return out;
}

}  // namespace tpmma::esys
