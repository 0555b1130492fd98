// SPDX-License-Identifier: GPL-2.0-or-later
#include "tpm/approval.h"

#include <openssl/ecdsa.h>

#include <cstring>

#include "common/openssl.h"
#include "tpm/attest.h"
#include "tpm/marshal.h"
#include "tpm/policy.h"
#include "tpm/public.h"

namespace tpmma::tpm {

namespace {

using EcdsaSigPtr = std::unique_ptr<ECDSA_SIG, OpensslDeleter<ECDSA_SIG, ECDSA_SIG_free>>;

// approvedPolicy || policyRef: what the signature covers (its SHA-256 is the aHash).
Bytes SignedMessage(const TPM2B_DIGEST& approved) {
  Bytes m(approved.buffer, approved.buffer + approved.size);
  ByteView ref = DuplicationPolicyRef();
  m.insert(m.end(), ref.begin(), ref.end());
  return m;
}

Status PutBignum(const BIGNUM* n, TPM2B_ECC_PARAMETER& out) {
  if (BN_bn2binpad(n, out.buffer, 32) != 32) return Status(Code::kInternal, "ECDSA value size");
  out.size = 32;
  return Status::Ok();
}

// OpenSSL's signature (PKCS#1 v1.5 bytes, or DER ECDSA) as a TPMT_SIGNATURE.
Result<TPMT_SIGNATURE> AsTpmSignature(const EVP_PKEY* key, ByteView sig) {
  TPMT_SIGNATURE out{};
  if (EVP_PKEY_get_base_id(key) == EVP_PKEY_RSA) {
    out.sigAlg = TPM2_ALG_RSASSA;
    out.signature.rsassa.hash = TPM2_ALG_SHA256;
    if (sig.size() > sizeof out.signature.rsassa.sig.buffer) {
      return Error(Code::kUnsupported, "RSA policy-signing keys are at most 4096 bits");
    }
    out.signature.rsassa.sig.size = static_cast<uint16_t>(sig.size());
    std::memcpy(out.signature.rsassa.sig.buffer, sig.data(), sig.size());
    return out;
  }
  const unsigned char* p = sig.data();
  EcdsaSigPtr ecdsa(d2i_ECDSA_SIG(nullptr, &p, static_cast<long>(sig.size())));
  if (!ecdsa) return Error(OpensslError("d2i_ECDSA_SIG"));
  out.sigAlg = TPM2_ALG_ECDSA;
  out.signature.ecdsa.hash = TPM2_ALG_SHA256;
  TPMMA_RETURN_IF_ERROR(PutBignum(ECDSA_SIG_get0_r(ecdsa.get()), out.signature.ecdsa.signatureR));
  TPMMA_RETURN_IF_ERROR(PutBignum(ECDSA_SIG_get0_s(ecdsa.get()), out.signature.ecdsa.signatureS));
  return out;
}

}  // namespace

Result<TPM2B_PUBLIC> PolicyKeyPublic(const EVP_PKEY* key) {
  const int type = EVP_PKEY_get_base_id(key);
  if (type == EVP_PKEY_EC && EVP_PKEY_get_bits(key) != 256) {
    return Error(Code::kUnsupported, "an EC policy-signing key must be P-256");
  }
  if (type == EVP_PKEY_RSA && EVP_PKEY_get_bits(key) < 2048) {
    return Error(Code::kUnsupported, "an RSA policy-signing key must have 2048 bits or more");
  }
  PublicTemplate t;
  t.attributes = TPMA_OBJECT_SIGN_ENCRYPT | TPMA_OBJECT_USERWITHAUTH;
  t.symmetric = TPM2_ALG_NULL;
  t.sym_bits = 0;
  return PublicFromEvp(key, t);
}

Result<Approval> SignApproval(EVP_PKEY* policy_key, ByteView storage_key_name) {
  Approval a;
  TPMMA_ASSIGN_OR_RETURN(a.policy_key, PolicyKeyPublic(policy_key));
  TPMMA_ASSIGN_OR_RETURN(a.approved_policy, DuplicationSelectPolicy(storage_key_name));
  TPMMA_ASSIGN_OR_RETURN(
      Bytes sig, SignSha256(policy_key, SignedMessage(a.approved_policy), "the approved policy"));
  TPMMA_ASSIGN_OR_RETURN(a.signature, AsTpmSignature(policy_key, sig));
  return a;
}

Status CheckApproval(const Approval& a, ByteView storage_key_name, ByteView policy_key_name) {
  TPMMA_ASSIGN_OR_RETURN(Bytes name, ComputeName(a.policy_key.publicArea));
  if (!ConstantTimeEqual(name, policy_key_name)) {
    return Status(Code::kIntegrityFailure,
                  "the approval is signed by another policy-signing key than the one this MRK "
                  "follows (Name " +
                      HexEncode(name) + ", expected " + HexEncode(policy_key_name) + ")");
  }
  TPMMA_ASSIGN_OR_RETURN(TPM2B_DIGEST expected, DuplicationSelectPolicy(storage_key_name));
  if (a.approved_policy.size != expected.size ||
      !ConstantTimeEqual(ByteView(a.approved_policy.buffer, a.approved_policy.size),
                         ByteView(expected.buffer, expected.size))) {
    return Status(
        Code::kIntegrityFailure,
        "the approved policy is not the duplication to storage key " + HexEncode(storage_key_name));
  }
  Status s =
      VerifyTpmSignature(a.policy_key.publicArea, SignedMessage(a.approved_policy), a.signature);
  if (!s.ok()) {
    return Status(Code::kIntegrityFailure,
                  "the approval's signature does not verify: " + s.message());
  }
  return Status::Ok();
}

Result<Approval> ApprovalFromWire(ByteView policy_key, ByteView signature,
                                  ByteView storage_key_name) {
  auto key = Unmarshal<TPM2B_PUBLIC>(policy_key);
  auto sig = Unmarshal<TPMT_SIGNATURE>(signature);
  if (!key || !sig) {
    return Error(Code::kMalformed,
                 "the policy-signing key or its approval is not a TPM2B_PUBLIC / TPMT_SIGNATURE");
  }
  Approval a;
  a.policy_key = *key;
  a.signature = *sig;
  TPMMA_ASSIGN_OR_RETURN(a.approved_policy, DuplicationSelectPolicy(storage_key_name));
  TPMMA_ASSIGN_OR_RETURN(Bytes name, PolicyKeyName(a));
  TPMMA_RETURN_IF_ERROR(CheckApproval(a, storage_key_name, name));
  return a;
}

Result<Bytes> PolicyKeyName(const Approval& a) {
  return ComputeName(a.policy_key.publicArea);
}

}  // namespace tpmma::tpm
