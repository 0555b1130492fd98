// SPDX-License-Identifier: GPL-2.0-or-later
//
// The TPM-backed EVP_PKEY is a key of a small OpenSSL 3 provider, "tpmma-tpm", built into
// this file: a key manager for RSA and EC keys whose key data is a loaded TPM object plus
// its public key, and RSA / ECDSA signature implementations that send the digest to the
// TPM. Public-key work (verify, export of the public half, parameters) is delegated to an
// ordinary OpenSSL public key made from the TPM public area.
//
// Why a provider and not RSA_METHOD / EC_KEY_METHOD (what this file used to be): xmlsec1
// 1.2.37 (Debian 12) built for OpenSSL 3 asks keys for parameters with
// EVP_PKEY_get_bn_param, and OpenSSL answers that for a legacy (method-based) key from a
// fixed translation table:
//   - ECDSA signing reads the curve order ("order", xmlSecOpenSSLSignatureEcdsaSignatureHalfLen)
//     to size r and s; the legacy table has no entry for it, so signing failed;
//   - xmlsec takes an RSA key as able to sign only if the private exponent ("d") reads
//     back (its RSA key-data getType), else the key is public-only and xmlsec reports
//     "key is not found". A method-based RSA key has no d.
// A provider key answers get_params itself: "order" is public, and for "d" it reports the
// value 0. No RSA key has d = 0, so nothing can mistake it for an exponent; it only says
// "this key has a private half" (it does, in the TPM). Nothing can use it either: the
// private half never leaves the provider (export of anything private is refused, so
// PEM_write_PrivateKey and EVP_PKEY_todata(KEYPAIR) fail), and every private operation
// is the TPM's.
//
// Isolation: the provider lives in its own OSSL_LIB_CTX (with the default provider beside
// it for encoders), never in the default context, so no unrelated fetch of "RSA" or
// "ECDSA" elsewhere in the process can land on it. A key from that context still works
// with APIs given the default context (xmlsec, EVP_DigestSignInit(..., NULL libctx)):
// OpenSSL first tries the default provider's signature, cannot export the key to it (we
// refuse the private half), and then uses the signature of the key's own provider.
#include "tpm/esys/tpm_pkey.h"

#include <openssl/core_dispatch.h>
#include <openssl/core_names.h>
#include <openssl/ecdsa.h>
#include <openssl/err.h>
#include <openssl/params.h>
#include <openssl/provider.h>
#include <openssl/rsa.h>

#include <cstring>
#include <memory>
#include <new>
#include <string>

#include "tpm/public.h"

namespace tpmma::esys {

namespace {

constexpr char kProviderName[] = "tpmma-tpm";
constexpr char kPropertyDefinition[] = "tpmma.tpm=yes";
constexpr char kPropertyQuery[] = "tpmma.tpm=yes";
// Import-only parameter carrying the address of a std::unique_ptr<TpmKey> to move from.
constexpr char kKeyParam[] = "tpmma-tpm-key";

constexpr size_t kSha256Size = 32;

// ------------------------------------------------------------------ key data

struct TpmKey {
  // A Tpm of our own on the key's shared context (Tpm::Of), so that the EVP_PKEY keeps
  // signing after the caller's Tpm is gone.
  std::unique_ptr<Tpm> tpm;
  Object key;             // the loaded TPM signing key (flushed with this struct)
  EvpPkeyPtr public_key;  // the same key's public half as a plain OpenSSL key
  bool rsa = false;
};

using TpmKeyHolder = std::unique_ptr<TpmKey>;

void RaiseError(const char* what) {
  ERR_raise_data(ERR_LIB_USER, ERR_R_OPERATION_FAIL, "%s", what);
}

void RaiseTpmError(const Status& s) {
  // The message names the Esys call and what went wrong; it never contains key material.
  ERR_raise_data(ERR_LIB_USER, ERR_R_OPERATION_FAIL, "TPM signing failed: %s",
                 s.ToString().c_str());
}

void* KmNew(void* /*provctx*/) {
  return new (std::nothrow) TpmKey();
}

void KmFree(void* keydata) {
  delete static_cast<TpmKey*>(keydata);
}

int KmHas(const void* keydata, int /*selection*/) {
  // Public key, parameters and a private half (in the TPM): all present once imported.
  const auto* k = static_cast<const TpmKey*>(keydata);
  return k != nullptr && k->public_key ? 1 : 0;
}

int KmImport(void* keydata, int /*selection*/, const OSSL_PARAM params[]) {
  // Only MakeTpmSigningKey creates keys here: there is no way to import key material,
  // and nothing converts a software key into one of ours.
  auto* k = static_cast<TpmKey*>(keydata);
  const OSSL_PARAM* p = OSSL_PARAM_locate_const(params, kKeyParam);
  if (k == nullptr || p == nullptr || p->data_type != OSSL_PARAM_OCTET_STRING ||
      p->data_size != sizeof(TpmKeyHolder*)) {
    return 0;
  }
  TpmKeyHolder* holder = nullptr;
  std::memcpy(&holder, p->data, sizeof(holder));
  if (holder == nullptr || !*holder) return 0;
  *k = std::move(**holder);
  holder->reset();
  return 1;
}

const OSSL_PARAM* KmImportTypes(int /*selection*/) {
  static const OSSL_PARAM kTypes[] = {OSSL_PARAM_octet_string(kKeyParam, nullptr, 0),
                                      OSSL_PARAM_END};
  return kTypes;
}

int KmExport(void* keydata, int selection, OSSL_CALLBACK* cb, void* cbarg) {
  auto* k = static_cast<TpmKey*>(keydata);
  // The private half is in the TPM; refusing here is also what makes OpenSSL pick our
  // signature implementation rather than a software one (see the file comment).
  if (k == nullptr || !k->public_key || (selection & OSSL_KEYMGMT_SELECT_PRIVATE_KEY) != 0) {
    return 0;
  }
  OSSL_PARAM* params = nullptr;
  if (EVP_PKEY_todata(k->public_key.get(), EVP_PKEY_PUBLIC_KEY, &params) != 1) return 0;
  const int ok = cb(params, cbarg);
  OSSL_PARAM_free(params);
  return ok;
}

const OSSL_PARAM* KmRsaExportTypes(int selection) {
  static const OSSL_PARAM kTypes[] = {OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_N, nullptr, 0),
                                      OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_E, nullptr, 0),
                                      OSSL_PARAM_END};
  return (selection & OSSL_KEYMGMT_SELECT_PRIVATE_KEY) != 0 ? nullptr : kTypes;
}

const OSSL_PARAM* KmEcExportTypes(int selection) {
  static const OSSL_PARAM kTypes[] = {
      OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, nullptr, 0),
      OSSL_PARAM_octet_string(OSSL_PKEY_PARAM_PUB_KEY, nullptr, 0), OSSL_PARAM_END};
  return (selection & OSSL_KEYMGMT_SELECT_PRIVATE_KEY) != 0 ? nullptr : kTypes;
}

int KmGetParams(void* keydata, OSSL_PARAM params[]) {
  auto* k = static_cast<TpmKey*>(keydata);
  if (k == nullptr || !k->public_key) return 0;
  // Sizes, public values and curve parameters (including "order") as OpenSSL's own
  // public key has them.
  if (EVP_PKEY_get_params(k->public_key.get(), params) != 1) return 0;
  if (k->rsa) {
    // "d": present, not readable (see the file comment). 0 is no RSA private exponent.
    OSSL_PARAM* d = OSSL_PARAM_locate(params, OSSL_PKEY_PARAM_RSA_D);
    if (d != nullptr) {
      BignumPtr zero(BN_new());
      if (!zero || OSSL_PARAM_set_BN(d, zero.get()) != 1) return 0;
    }
  }
  return 1;
}

const OSSL_PARAM* KmRsaGettableParams(void* /*provctx*/) {
  static const OSSL_PARAM kParams[] = {
      OSSL_PARAM_int(OSSL_PKEY_PARAM_BITS, nullptr),
      OSSL_PARAM_int(OSSL_PKEY_PARAM_SECURITY_BITS, nullptr),
      OSSL_PARAM_int(OSSL_PKEY_PARAM_MAX_SIZE, nullptr),
      OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_DEFAULT_DIGEST, nullptr, 0),
      OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_N, nullptr, 0),
      OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_E, nullptr, 0),
      OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_D, nullptr, 0),
      OSSL_PARAM_END};
  return kParams;
}

const OSSL_PARAM* KmEcGettableParams(void* /*provctx*/) {
  static const OSSL_PARAM kParams[] = {
      OSSL_PARAM_int(OSSL_PKEY_PARAM_BITS, nullptr),
      OSSL_PARAM_int(OSSL_PKEY_PARAM_SECURITY_BITS, nullptr),
      OSSL_PARAM_int(OSSL_PKEY_PARAM_MAX_SIZE, nullptr),
      OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_DEFAULT_DIGEST, nullptr, 0),
      OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, nullptr, 0),
      OSSL_PARAM_octet_string(OSSL_PKEY_PARAM_PUB_KEY, nullptr, 0),
      OSSL_PARAM_octet_string(OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY, nullptr, 0),
      OSSL_PARAM_BN(OSSL_PKEY_PARAM_EC_ORDER, nullptr, 0),
      OSSL_PARAM_END};
  return kParams;
}

int KmMatch(const void* keydata1, const void* keydata2, int /*selection*/) {
  const auto* a = static_cast<const TpmKey*>(keydata1);
  const auto* b = static_cast<const TpmKey*>(keydata2);
  return a != nullptr && b != nullptr && a->public_key && b->public_key &&
                 EVP_PKEY_eq(a->public_key.get(), b->public_key.get()) == 1
             ? 1
             : 0;
}

const char* KmRsaOperationName(int /*operation_id*/) {
  return "RSA";
}

const char* KmEcOperationName(int operation_id) {
  return operation_id == OSSL_OP_SIGNATURE ? "ECDSA" : nullptr;
}

template <typename F>
void (*Fn(F* f))(void) {
  return reinterpret_cast<void (*)(void)>(f);
}

// ------------------------------------------------------------------ signatures

struct EvpMdFree {
  void operator()(EVP_MD* md) const { EVP_MD_free(md); }
};
using EvpMdPtr = std::unique_ptr<EVP_MD, EvpMdFree>;

struct SigCtx {
  bool rsa = false;
  TpmKey* key = nullptr;  // owned by the EVP_PKEY, which the EVP_PKEY_CTX holds
  EvpMdPtr md;            // null: any digest of at least 32 bytes (ECDSA only)
  EvpMdCtxPtr digest;     // digest-sign/verify only
};

// `name` empty means the key's default, SHA-256. RSA signs SHA-256 only (the TPM key's
// scheme); ECDSA also takes longer digests, which it truncates to 256 bits anyway.
int SetDigest(SigCtx* ctx, const char* name) {
  EvpMdPtr md(EVP_MD_fetch(nullptr, name == nullptr || *name == '\0' ? "SHA256" : name, nullptr));
  if (!md) {
    RaiseError("unknown digest for a TPM key");
    return 0;
  }
  const bool ok = ctx->rsa ? EVP_MD_is_a(md.get(), "SHA2-256") != 0
                           : EVP_MD_get_size(md.get()) >= static_cast<int>(kSha256Size);
  if (!ok) {
    RaiseError(ctx->rsa ? "a TPM RSA key signs SHA-256 digests only (PKCS#1 v1.5)"
                        : "a TPM ECDSA key needs a digest of at least 256 bits");
    return 0;
  }
  ctx->md = std::move(md);
  return 1;
}

int SigSetCtxParams(void* vctx, const OSSL_PARAM params[]) {
  auto* ctx = static_cast<SigCtx*>(vctx);
  if (ctx == nullptr) return 0;
  if (params == nullptr) return 1;
  if (const OSSL_PARAM* p = OSSL_PARAM_locate_const(params, OSSL_SIGNATURE_PARAM_DIGEST)) {
    const char* name = nullptr;
    if (OSSL_PARAM_get_utf8_string_ptr(p, &name) != 1 || SetDigest(ctx, name) != 1) return 0;
  }
  if (const OSSL_PARAM* p = OSSL_PARAM_locate_const(params, OSSL_SIGNATURE_PARAM_PAD_MODE)) {
    // PKCS#1 v1.5 is the only padding the TPM key's RSASSA scheme makes.
    int mode = 0;
    const char* text = nullptr;
    const bool pkcs1 =
        ctx->rsa &&
        ((p->data_type == OSSL_PARAM_INTEGER && OSSL_PARAM_get_int(p, &mode) == 1 &&
          mode == RSA_PKCS1_PADDING) ||
         (p->data_type == OSSL_PARAM_UTF8_STRING && OSSL_PARAM_get_utf8_string_ptr(p, &text) == 1 &&
          std::strcmp(text, OSSL_PKEY_RSA_PAD_MODE_PKCSV15) == 0));
    if (!pkcs1) {
      RaiseError("a TPM RSA key signs with PKCS#1 v1.5 padding only");
      return 0;
    }
  }
  return 1;
}

const OSSL_PARAM* SigSettableCtxParams(void* /*ctx*/, void* /*provctx*/) {
  static const OSSL_PARAM kParams[] = {
      OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_DIGEST, nullptr, 0),
      OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_PAD_MODE, nullptr, 0), OSSL_PARAM_END};
  return kParams;
}

// DER AlgorithmIdentifiers, for X.509 and CMS signing with the TPM key.
constexpr uint8_t kSha256WithRsa[] = {0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86,
                                      0xf7, 0x0d, 0x01, 0x01, 0x0b, 0x05, 0x00};
constexpr uint8_t kEcdsaWithSha256[] = {0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86,
                                        0x48, 0xce, 0x3d, 0x04, 0x03, 0x02};
constexpr uint8_t kEcdsaWithSha384[] = {0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86,
                                        0x48, 0xce, 0x3d, 0x04, 0x03, 0x03};
constexpr uint8_t kEcdsaWithSha512[] = {0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86,
                                        0x48, 0xce, 0x3d, 0x04, 0x03, 0x04};

int SigGetCtxParams(void* vctx, OSSL_PARAM params[]) {
  auto* ctx = static_cast<SigCtx*>(vctx);
  if (ctx == nullptr) return 0;
  const EVP_MD* md = ctx->md.get();
  if (OSSL_PARAM* p = OSSL_PARAM_locate(params, OSSL_SIGNATURE_PARAM_DIGEST)) {
    if (md == nullptr || OSSL_PARAM_set_utf8_string(p, EVP_MD_get0_name(md)) != 1) return 0;
  }
  if (OSSL_PARAM* p = OSSL_PARAM_locate(params, OSSL_SIGNATURE_PARAM_ALGORITHM_ID)) {
    ByteView id;
    if (md == nullptr) {
      return 0;
    } else if (ctx->rsa) {
      id = kSha256WithRsa;
    } else if (EVP_MD_is_a(md, "SHA2-256")) {
      id = kEcdsaWithSha256;
    } else if (EVP_MD_is_a(md, "SHA2-384")) {
      id = kEcdsaWithSha384;
    } else if (EVP_MD_is_a(md, "SHA2-512")) {
      id = kEcdsaWithSha512;
    } else {
      return 0;
    }
    if (OSSL_PARAM_set_octet_string(p, id.data(), id.size()) != 1) return 0;
  }
  return 1;
}

const OSSL_PARAM* SigGettableCtxParams(void* /*ctx*/, void* /*provctx*/) {
  static const OSSL_PARAM kParams[] = {
      OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_DIGEST, nullptr, 0),
      OSSL_PARAM_octet_string(OSSL_SIGNATURE_PARAM_ALGORITHM_ID, nullptr, 0), OSSL_PARAM_END};
  return kParams;
}

void* SigNewRsa(void* /*provctx*/, const char* /*propq*/) {
  auto* ctx = new (std::nothrow) SigCtx();
  if (ctx != nullptr) ctx->rsa = true;
  return ctx;
}

void* SigNewEcdsa(void* /*provctx*/, const char* /*propq*/) {
  return new (std::nothrow) SigCtx();
}

void SigFree(void* vctx) {
  delete static_cast<SigCtx*>(vctx);
}

void* SigDup(void* vctx) {
  const auto* src = static_cast<const SigCtx*>(vctx);
  auto out = std::unique_ptr<SigCtx>(new (std::nothrow) SigCtx());
  if (src == nullptr || !out) return nullptr;
  out->rsa = src->rsa;
  out->key = src->key;
  if (src->md) {
    if (EVP_MD_up_ref(src->md.get()) != 1) return nullptr;
    out->md.reset(src->md.get());
  }
  if (src->digest) {
    out->digest.reset(EVP_MD_CTX_new());
    if (!out->digest || EVP_MD_CTX_copy_ex(out->digest.get(), src->digest.get()) != 1) {
      return nullptr;
    }
  }
  return out.release();
}

int SigInit(void* vctx, void* provkey, const OSSL_PARAM params[]) {
  auto* ctx = static_cast<SigCtx*>(vctx);
  auto* key = static_cast<TpmKey*>(provkey);
  if (ctx == nullptr || key == nullptr || !key->public_key || key->rsa != ctx->rsa) {
    RaiseError("not a TPM key of this signature's algorithm");
    return 0;
  }
  ctx->key = key;
  ctx->md.reset();
  ctx->digest.reset();
  // RSA has exactly one digest; ECDSA takes what it is given unless a digest is set.
  if (ctx->rsa && SetDigest(ctx, nullptr) != 1) return 0;
  return SigSetCtxParams(ctx, params);
}

size_t MaxSignatureSize(const SigCtx* ctx) {
  const int size = EVP_PKEY_get_size(ctx->key->public_key.get());
  return size > 0 ? static_cast<size_t>(size) : 0;
}

int SigSign(void* vctx, unsigned char* sig, size_t* siglen, size_t sigsize,
            const unsigned char* tbs, size_t tbslen) {
  auto* ctx = static_cast<SigCtx*>(vctx);
  if (ctx == nullptr || ctx->key == nullptr) return 0;
  const size_t max = MaxSignatureSize(ctx);
  if (sig == nullptr) {
    *siglen = max;
    return 1;
  }
  const size_t want = ctx->md ? static_cast<size_t>(EVP_MD_get_size(ctx->md.get())) : tbslen;
  if (tbslen != want || tbslen < kSha256Size || (ctx->rsa && tbslen != kSha256Size)) {
    RaiseError(ctx->rsa ? "a TPM RSA key signs a 32-byte SHA-256 digest"
                        : "a TPM ECDSA key signs a digest of at least 32 bytes");
    return 0;
  }
  // ECDSA on P-256 uses the leftmost 256 bits of any longer digest, so passing the first
  // 32 bytes gives the same signature the TPM's SHA-256 scheme makes.
  auto made = ctx->key->tpm->Sign(ctx->key->key, ByteView(tbs, kSha256Size));
  if (!made) {
    RaiseTpmError(made.error());
    return 0;
  }
  if (ctx->rsa) {
    const TPM2B_PUBLIC_KEY_RSA& s = made->signature.rsassa.sig;
    if (s.size > sigsize) {
      RaiseError("signature buffer too small");
      return 0;
    }
    std::memcpy(sig, s.buffer, s.size);
    *siglen = s.size;
    return 1;
  }
  const TPMS_SIGNATURE_ECC& ecc = made->signature.ecdsa;
  BignumPtr r(BN_bin2bn(ecc.signatureR.buffer, ecc.signatureR.size, nullptr));
  BignumPtr s(BN_bin2bn(ecc.signatureS.buffer, ecc.signatureS.size, nullptr));
  std::unique_ptr<ECDSA_SIG, OpensslDeleter<ECDSA_SIG, ECDSA_SIG_free>> der(ECDSA_SIG_new());
  if (!r || !s || !der || ECDSA_SIG_set0(der.get(), r.get(), s.get()) != 1) return 0;
  r.release();  // now owned by `der`
  s.release();
  const int len = i2d_ECDSA_SIG(der.get(), nullptr);
  if (len <= 0 || static_cast<size_t>(len) > sigsize) {
    RaiseError("signature buffer too small");
    return 0;
  }
  unsigned char* out = sig;
  if (i2d_ECDSA_SIG(der.get(), &out) != len) return 0;
  *siglen = static_cast<size_t>(len);
  return 1;
}

int SigVerify(void* vctx, const unsigned char* sig, size_t siglen, const unsigned char* tbs,
              size_t tbslen) {
  // Public-key work needs no TPM: OpenSSL's own implementation with the public half.
  auto* ctx = static_cast<SigCtx*>(vctx);
  if (ctx == nullptr || ctx->key == nullptr) return 0;
  EvpPkeyCtxPtr pctx(EVP_PKEY_CTX_new_from_pkey(nullptr, ctx->key->public_key.get(), nullptr));
  if (!pctx || EVP_PKEY_verify_init(pctx.get()) != 1) return 0;
  if (ctx->rsa && EVP_PKEY_CTX_set_rsa_padding(pctx.get(), RSA_PKCS1_PADDING) != 1) return 0;
  if (ctx->md && EVP_PKEY_CTX_set_signature_md(pctx.get(), ctx->md.get()) != 1) return 0;
  return EVP_PKEY_verify(pctx.get(), sig, siglen, tbs, tbslen) == 1 ? 1 : 0;
}

int SigDigestInit(void* vctx, const char* mdname, void* provkey, const OSSL_PARAM params[]) {
  auto* ctx = static_cast<SigCtx*>(vctx);
  if (SigInit(vctx, provkey, params) != 1 || SetDigest(ctx, mdname) != 1) return 0;
  ctx->digest.reset(EVP_MD_CTX_new());
  return ctx->digest && EVP_DigestInit_ex(ctx->digest.get(), ctx->md.get(), nullptr) == 1 ? 1 : 0;
}

int SigDigestUpdate(void* vctx, const unsigned char* data, size_t len) {
  auto* ctx = static_cast<SigCtx*>(vctx);
  return ctx != nullptr && ctx->digest && EVP_DigestUpdate(ctx->digest.get(), data, len) == 1 ? 1
                                                                                              : 0;
}

// The digest so far, finalised.
bool FinishDigest(SigCtx* ctx, unsigned char* out, unsigned int* len) {
  return ctx != nullptr && ctx->digest && EVP_DigestFinal_ex(ctx->digest.get(), out, len) == 1;
}

int SigDigestSignFinal(void* vctx, unsigned char* sig, size_t* siglen, size_t sigsize) {
  auto* ctx = static_cast<SigCtx*>(vctx);
  if (sig == nullptr) return SigSign(vctx, nullptr, siglen, sigsize, nullptr, 0);
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (!FinishDigest(ctx, digest, &len)) return 0;
  return SigSign(vctx, sig, siglen, sigsize, digest, len);
}

int SigDigestVerifyFinal(void* vctx, const unsigned char* sig, size_t siglen) {
  auto* ctx = static_cast<SigCtx*>(vctx);
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (!FinishDigest(ctx, digest, &len)) return 0;
  return SigVerify(vctx, sig, siglen, digest, len);
}

// ------------------------------------------------------------------ the provider

// RSA and EC keys share every function but the three that name the algorithm and its
// parameters; RSA and ECDSA signatures share every function but the one that makes the
// context.
template <const OSSL_PARAM* (*ExportTypes)(int), const OSSL_PARAM* (*GettableParams)(void*),
          const char* (*OperationName)(int)>
const OSSL_DISPATCH kKeymgmt[] = {
    {OSSL_FUNC_KEYMGMT_NEW, Fn(&KmNew)},
    {OSSL_FUNC_KEYMGMT_FREE, Fn(&KmFree)},
    {OSSL_FUNC_KEYMGMT_HAS, Fn(&KmHas)},
    {OSSL_FUNC_KEYMGMT_MATCH, Fn(&KmMatch)},
    {OSSL_FUNC_KEYMGMT_IMPORT, Fn(&KmImport)},
    {OSSL_FUNC_KEYMGMT_IMPORT_TYPES, Fn(&KmImportTypes)},
    {OSSL_FUNC_KEYMGMT_EXPORT, Fn(&KmExport)},
    {OSSL_FUNC_KEYMGMT_GET_PARAMS, Fn(&KmGetParams)},
    {OSSL_FUNC_KEYMGMT_EXPORT_TYPES, Fn(ExportTypes)},
    {OSSL_FUNC_KEYMGMT_GETTABLE_PARAMS, Fn(GettableParams)},
    {OSSL_FUNC_KEYMGMT_QUERY_OPERATION_NAME, Fn(OperationName)},
    {0, nullptr},
};
const OSSL_DISPATCH* const kRsaKeymgmt =
    kKeymgmt<&KmRsaExportTypes, &KmRsaGettableParams, &KmRsaOperationName>;
const OSSL_DISPATCH* const kEcKeymgmt =
    kKeymgmt<&KmEcExportTypes, &KmEcGettableParams, &KmEcOperationName>;

template <void* (*NewCtx)(void*, const char*)>
const OSSL_DISPATCH kSignature[] = {
    {OSSL_FUNC_SIGNATURE_NEWCTX, Fn(NewCtx)},
    {OSSL_FUNC_SIGNATURE_FREECTX, Fn(&SigFree)},
    {OSSL_FUNC_SIGNATURE_DUPCTX, Fn(&SigDup)},
    {OSSL_FUNC_SIGNATURE_SIGN_INIT, Fn(&SigInit)},
    {OSSL_FUNC_SIGNATURE_SIGN, Fn(&SigSign)},
    {OSSL_FUNC_SIGNATURE_VERIFY_INIT, Fn(&SigInit)},
    {OSSL_FUNC_SIGNATURE_VERIFY, Fn(&SigVerify)},
    {OSSL_FUNC_SIGNATURE_DIGEST_SIGN_INIT, Fn(&SigDigestInit)},
    {OSSL_FUNC_SIGNATURE_DIGEST_SIGN_UPDATE, Fn(&SigDigestUpdate)},
    {OSSL_FUNC_SIGNATURE_DIGEST_SIGN_FINAL, Fn(&SigDigestSignFinal)},
    {OSSL_FUNC_SIGNATURE_DIGEST_VERIFY_INIT, Fn(&SigDigestInit)},
    {OSSL_FUNC_SIGNATURE_DIGEST_VERIFY_UPDATE, Fn(&SigDigestUpdate)},
    {OSSL_FUNC_SIGNATURE_DIGEST_VERIFY_FINAL, Fn(&SigDigestVerifyFinal)},
    {OSSL_FUNC_SIGNATURE_GET_CTX_PARAMS, Fn(&SigGetCtxParams)},
    {OSSL_FUNC_SIGNATURE_GETTABLE_CTX_PARAMS, Fn(&SigGettableCtxParams)},
    {OSSL_FUNC_SIGNATURE_SET_CTX_PARAMS, Fn(&SigSetCtxParams)},
    {OSSL_FUNC_SIGNATURE_SETTABLE_CTX_PARAMS, Fn(&SigSettableCtxParams)},
    {0, nullptr},
};
const OSSL_DISPATCH* const kRsaSignature = kSignature<&SigNewRsa>;
const OSSL_DISPATCH* const kEcdsaSignature = kSignature<&SigNewEcdsa>;

// The names OpenSSL knows these algorithms by, so that EVP_PKEY_get_base_id and
// EVP_PKEY_is_a answer as for any RSA or EC key (xmlsec picks its key class by them).
constexpr char kRsaNames[] = "RSA:rsaEncryption:1.2.840.113549.1.1.1";
constexpr char kEcNames[] = "EC:id-ecPublicKey:1.2.840.10045.2.1";

const OSSL_ALGORITHM kKeymgmts[] = {
    {kRsaNames, kPropertyDefinition, kRsaKeymgmt, "TPM-resident RSA key"},
    {kEcNames, kPropertyDefinition, kEcKeymgmt, "TPM-resident EC key"},
    {nullptr, nullptr, nullptr, nullptr}};

const OSSL_ALGORITHM kSignatures[] = {
    {kRsaNames, kPropertyDefinition, kRsaSignature, "RSASSA-PKCS1-v1_5 in the TPM"},
    {"ECDSA", kPropertyDefinition, kEcdsaSignature, "ECDSA in the TPM"},
    {nullptr, nullptr, nullptr, nullptr}};

const OSSL_ALGORITHM* QueryOperation(void* /*provctx*/, int operation_id, int* no_cache) {
  *no_cache = 0;
  switch (operation_id) {
    case OSSL_OP_KEYMGMT:
      return kKeymgmts;
    case OSSL_OP_SIGNATURE:
      return kSignatures;
    default:
      return nullptr;
  }
}

const OSSL_DISPATCH kProviderDispatch[] = {
    {OSSL_FUNC_PROVIDER_QUERY_OPERATION, Fn(&QueryOperation)}, {0, nullptr}};

int ProviderInit(const OSSL_CORE_HANDLE* /*handle*/, const OSSL_DISPATCH* /*in*/,
                 const OSSL_DISPATCH** out, void** provctx) {
  static int context_tag = 0;
  *out = kProviderDispatch;
  *provctx = &context_tag;
  return 1;
}

// The library context holding the provider (and the default provider, whose encoders
// write the public half as SubjectPublicKeyInfo). Made once; lives as long as the process,
// because keys made in it may too.
Result<OSSL_LIB_CTX*> ProviderContext() {
  static const Result<OSSL_LIB_CTX*> context = []() -> Result<OSSL_LIB_CTX*> {
    OSSL_LIB_CTX* libctx = OSSL_LIB_CTX_new();
    if (libctx == nullptr) return Error(OpensslError("OSSL_LIB_CTX_new"));
    if (OSSL_PROVIDER_add_builtin(libctx, kProviderName, &ProviderInit) != 1 ||
        OSSL_PROVIDER_load(libctx, kProviderName) == nullptr ||
        OSSL_PROVIDER_load(libctx, "default") == nullptr) {
      Status s = OpensslError("OSSL_PROVIDER_load (TPM key provider)");
      OSSL_LIB_CTX_free(libctx);
      return Error(std::move(s));
    }
    return libctx;
  }();
  return context;
}

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
  if (!tpm.Owns(key)) {
    return Error(Code::kInvalidArgument,
                 "the key for a TPM-backed OpenSSL key was loaded by "
                 "another Tpm than the one given");
  }
  TPMMA_ASSIGN_OR_RETURN(OSSL_LIB_CTX * libctx, ProviderContext());
  auto holder = std::make_unique<TpmKey>();
  TPMMA_ASSIGN_OR_RETURN(holder->public_key, tpm::PublicToEvp(pub));
  TPMMA_ASSIGN_OR_RETURN(holder->tpm, Tpm::Of(key));
  holder->key = std::move(key);
  holder->rsa = rsassa;

  EvpPkeyCtxPtr ctx(EVP_PKEY_CTX_new_from_name(libctx, rsassa ? "RSA" : "EC", kPropertyQuery));
  if (!ctx || EVP_PKEY_fromdata_init(ctx.get()) != 1) {
    return Error(OpensslError("EVP_PKEY_fromdata_init (TPM key provider)"));
  }
  TpmKeyHolder* handoff = &holder;  // KmImport moves the key data out of `holder`
  OSSL_PARAM params[] = {OSSL_PARAM_construct_octet_string(kKeyParam, &handoff, sizeof(handoff)),
                         OSSL_PARAM_construct_end()};
  EVP_PKEY* raw = nullptr;
  if (EVP_PKEY_fromdata(ctx.get(), &raw, EVP_PKEY_KEYPAIR, params) != 1 || raw == nullptr) {
    return Error(OpensslError("EVP_PKEY_fromdata (TPM key provider)"));
  }
  return EvpPkeyPtr(raw);
}

}  // namespace tpmma::esys
