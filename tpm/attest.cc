// SPDX-License-Identifier: GPL-2.0-or-later
#include "tpm/attest.h"

#include <openssl/ecdsa.h>
#include <openssl/err.h>
#include <openssl/rsa.h>

#include <string>

#include "common/openssl.h"
#include "tpm/marshal.h"
#include "tpm/public.h"

namespace tpmma::tpm {

namespace {

using EcdsaSigPtr = std::unique_ptr<ECDSA_SIG, OpensslDeleter<ECDSA_SIG, ECDSA_SIG_free>>;

Status Invalid(std::string msg) {
  return Status(Code::kSignatureInvalid, std::move(msg));
}

// DER ECDSA-Sig-Value from TPM's (r, s).
Result<Bytes> EcdsaDer(const TPMS_SIGNATURE_ECC& ecc) {
  EcdsaSigPtr sig(ECDSA_SIG_new());
  BIGNUM* r = BN_bin2bn(ecc.signatureR.buffer, ecc.signatureR.size, nullptr);
  BIGNUM* s = BN_bin2bn(ecc.signatureS.buffer, ecc.signatureS.size, nullptr);
  if (!sig || !r || !s || ECDSA_SIG_set0(sig.get(), r, s) != 1) {
    BN_free(r);
    BN_free(s);
    return Error(OpensslError("ECDSA_SIG_set0"));
  }
  int len = i2d_ECDSA_SIG(sig.get(), nullptr);
  if (len <= 0) return Error(OpensslError("i2d_ECDSA_SIG"));
  Bytes der(static_cast<size_t>(len));
  uint8_t* p = der.data();
  i2d_ECDSA_SIG(sig.get(), &p);
  return der;
}

}  // namespace

Status VerifyTpmSignature(const TPMT_PUBLIC& ak, ByteView signed_data, const TPMT_SIGNATURE& sig) {
  if (ak.type != TPM2_ALG_RSA && ak.type != TPM2_ALG_ECC) {
    return Status(Code::kUnsupported, "signing key must be RSA or ECC");
  }
  const bool rsa_sig = sig.sigAlg == TPM2_ALG_RSASSA || sig.sigAlg == TPM2_ALG_RSAPSS;
  if ((ak.type == TPM2_ALG_RSA && !rsa_sig) ||
      (ak.type == TPM2_ALG_ECC && sig.sigAlg != TPM2_ALG_ECDSA)) {
    return Invalid("signature algorithm does not fit the signing key type");
  }
  const bool is_rsa = ak.type == TPM2_ALG_RSA;
  const TPM2_ALG_ID fixed_scheme =
      is_rsa ? ak.parameters.rsaDetail.scheme.scheme : ak.parameters.eccDetail.scheme.scheme;
  const TPMU_ASYM_SCHEME& details =
      is_rsa ? ak.parameters.rsaDetail.scheme.details : ak.parameters.eccDetail.scheme.details;
  // A restricted AK signs with its one scheme; anything else was not made by this AK.
  if (fixed_scheme != TPM2_ALG_NULL &&
      (fixed_scheme != sig.sigAlg || details.anySig.hashAlg != sig.signature.any.hashAlg)) {
    return Invalid("signature scheme/hash does not match the AK's fixed scheme");
  }
  auto md = HashMd(sig.signature.any.hashAlg);
  if (!md) return md.error();
  auto key = PublicToEvp(ak);
  if (!key) return key.error();
  Bytes sig_bytes;
  if (rsa_sig) {
    const TPM2B_PUBLIC_KEY_RSA& s = sig.signature.rsassa.sig;  // rsapss has the same layout
    sig_bytes.assign(s.buffer, s.buffer + s.size);
  } else {
    auto der = EcdsaDer(sig.signature.ecdsa);
    if (!der) return der.error();
    sig_bytes = std::move(*der);
  }
  EvpMdCtxPtr ctx(EVP_MD_CTX_new());
  EVP_PKEY_CTX* pctx = nullptr;
  if (!ctx || EVP_DigestVerifyInit(ctx.get(), &pctx, *md, nullptr, key->get()) != 1) {
    return OpensslError("EVP_DigestVerifyInit");
  }
  if (sig.sigAlg == TPM2_ALG_RSAPSS) {
    // TPMs use salt = digest size, some older ones the maximum; AUTO accepts both.
    if (EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) != 1 ||
        EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_AUTO) != 1) {
      return OpensslError("RSA-PSS parameters");
    }
  } else if (sig.sigAlg == TPM2_ALG_RSASSA) {
    if (EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PADDING) != 1) {
      return OpensslError("RSA PKCS#1 parameters");
    }
  }
  int rc = EVP_DigestVerify(ctx.get(), sig_bytes.data(), sig_bytes.size(), signed_data.data(),
                            signed_data.size());
  ERR_clear_error();
  if (rc != 1) return Invalid("TPM signature does not verify with the AK public key");
  return Status::Ok();
}

Result<TPMS_ATTEST> VerifyAttest(const TPMT_PUBLIC& ak, ByteView attest, const TPMT_SIGNATURE& sig,
                                 TPMI_ST_ATTEST expected_type, ByteView expected_nonce) {
  // Signature first: nothing in an unsigned attest is worth parsing or reporting.
  TPMMA_RETURN_IF_ERROR(VerifyTpmSignature(ak, attest, sig));
  TPMMA_ASSIGN_OR_RETURN(TPMS_ATTEST a, Unmarshal<TPMS_ATTEST>(attest));
  if (a.magic != TPM2_GENERATED_VALUE) {
    return Error(Code::kSignatureInvalid, "attestation magic is not TPM_GENERATED_VALUE");
  }
  if (a.type != expected_type) {
    return Error(Code::kInvalidArgument, "attestation has the wrong type for this check");
  }
  if (!ConstantTimeEqual(ByteView(a.extraData.buffer, a.extraData.size), expected_nonce)) {
    return Error(Code::kInvalidArgument, "attestation qualifyingData does not match the MA nonce");
  }
  return a;
}

Status VerifyCertify(const TPMT_PUBLIC& ak, ByteView attest, const TPMT_SIGNATURE& sig,
                     ByteView expected_nonce, const TPMT_PUBLIC& certified) {
  auto a = VerifyAttest(ak, attest, sig, TPM2_ST_ATTEST_CERTIFY, expected_nonce);
  if (!a) return a.error();
  auto name = ComputeName(certified);
  if (!name) return name.error();
  const TPM2B_NAME& got = a->attested.certify.name;
  if (!ConstantTimeEqual(ByteView(got.name, got.size), *name)) {
    return Status(Code::kInvalidArgument,
                  "certified Name does not match the Name of the given public key");
  }
  return Status::Ok();
}

Result<QuoteInfo> VerifyQuote(const TPMT_PUBLIC& ak, ByteView attest, const TPMT_SIGNATURE& sig,
                              ByteView expected_nonce) {
  TPMMA_ASSIGN_OR_RETURN(TPMS_ATTEST a,
                         VerifyAttest(ak, attest, sig, TPM2_ST_ATTEST_QUOTE, expected_nonce));
  QuoteInfo info;
  info.pcr_select = a.attested.quote.pcrSelect;
  info.pcr_digest.assign(a.attested.quote.pcrDigest.buffer,
                         a.attested.quote.pcrDigest.buffer + a.attested.quote.pcrDigest.size);
  return info;
}

}  // namespace tpmma::tpm
