// SPDX-License-Identifier: GPL-2.0-or-later
// The MRK and its duplication to an MA storage key (docs/protocol.md, "Keys on the platform"
// and "MRK policies"): an MRK bound to one MA key by PolicyDuplicationSelect, or one that
// follows the MA's rotations by PolicyAuthorize over the MA policy-signing key's approvals.
#include "tpm/esys/esys.h"

#include "tpm/esys/esys_internal.h"
#include "tpm/esys/templates.h"
#include "tpm/policy.h"
#include "tpm/public.h"

namespace tpmma::esys {

namespace {

using tpm::CheckRc;
using namespace internal;  // NOLINT: this folder's shared helpers (esys_internal.h)

Status CheckInnerWrap(const Object& object, InnerWrap inner, const SecureBytes& given_inner_key) {
  const TPMT_PUBLIC& p = object.public_area().publicArea;
  if (inner == InnerWrap::kNone && (p.objectAttributes & TPMA_OBJECT_ENCRYPTEDDUPLICATION)) {
    return Status(Code::kInvalidArgument,
                  "this key has encryptedDuplication set: it can only be duplicated with an "
                  "inner wrapper key");
  }
  if (inner == InnerWrap::kGiven && given_inner_key.size() != kInnerKeySize) {
    return Status(Code::kInvalidArgument, "the inner wrapper key must be 16 bytes (AES-128), got " +
                                              std::to_string(given_inner_key.size()));
  }
  if (inner != InnerWrap::kGiven && !given_inner_key.empty()) {
    return Status(Code::kInvalidArgument, "an inner key was given but InnerWrap is not kGiven");
  }
  return Status::Ok();
}

}  // namespace

Result<KeyBlob> Tpm::CreateMrk(const Object& srk, ByteView ma_name, KeyAlg alg) {
  TPMMA_ASSIGN_OR_RETURN(TPM2B_DIGEST policy, DuplicationSelectPolicy(ma_name));
  return Create(srk, MrkTemplate(alg, policy));
}

Result<KeyBlob> Tpm::CreateMrkFollowingMa(const Object& srk, ByteView policy_key_name, KeyAlg alg) {
  TPMMA_ASSIGN_OR_RETURN(TPM2B_DIGEST policy,
                         tpm::AuthorizePolicy(policy_key_name, tpm::DuplicationPolicyRef()));
  return Create(srk, MrkTemplate(alg, policy));
}

Result<Handle> Tpm::DuplicationSelectSession(const Object& object, const Object& parent) {
  TPMMA_ASSIGN_OR_RETURN(Handle session, StartPolicySession(TPM2_SE_POLICY));
  TPM2B_NAME object_name{}, parent_name{};
  TPMMA_RETURN_IF_ERROR(FillName(object_name, object.name()));
  TPMMA_RETURN_IF_ERROR(FillName(parent_name, parent.name()));
  TPMMA_RETURN_IF_ERROR(
      CheckRc("Esys_PolicyDuplicationSelect",
              Esys_PolicyDuplicationSelect(ctx_, session.get(), ESYS_TR_NONE, ESYS_TR_NONE,
                                           ESYS_TR_NONE, &object_name, &parent_name, TPM2_NO)));
  return session;
}

Result<Duplicated> Tpm::DuplicateIn(const Object& object, const Object& parent,
                                    const Handle& session, InnerWrap inner,
                                    const SecureBytes& given_inner_key) {
  TPMT_SYM_DEF_OBJECT sym{};
  sym.algorithm = TPM2_ALG_NULL;
  if (inner != InnerWrap::kNone) sym = Aes128Cfb();
  Wiped<TPM2B_DATA> key_in;
  TPMMA_RETURN_IF_ERROR(Fill(key_in.value, given_inner_key, "inner key"));
  TPMMA_ASSIGN_OR_RETURN(ESYS_TR enc, EncSession(TPMA_SESSION_DECRYPT | TPMA_SESSION_ENCRYPT));
  EsysSecretPtr<TPM2B_DATA> key_out;
  EsysPtr<TPM2B_PRIVATE> dup;
  EsysPtr<TPM2B_ENCRYPTED_SECRET> seed;
  TPMMA_RETURN_IF_ERROR(CheckRc(
      "Esys_Duplicate",
      Esys_Duplicate(ctx_, object.handle(), parent.handle(), session.get(), enc, ESYS_TR_NONE,
                     &key_in.value, &sym, Out(key_out), Out(dup), Out(seed))));
  Duplicated out;
  out.duplicate = *dup;
  out.encrypted_seed = *seed;
  if (inner == InnerWrap::kGiven) {
    out.inner_key = given_inner_key;
  } else if (inner == InnerWrap::kTpmGenerated) {
    out.inner_key = SecretFrom(*key_out);
  }
  return out;
}

Result<Duplicated> Tpm::Duplicate(const Object& object, const TPM2B_PUBLIC& new_parent,
                                  InnerWrap inner, const SecureBytes& given_inner_key) {
  TPMMA_RETURN_IF_ERROR(CheckInnerWrap(object, inner, given_inner_key));
  TPMMA_ASSIGN_OR_RETURN(Object parent, LoadExternal(new_parent));
  TPMMA_ASSIGN_OR_RETURN(Handle session, DuplicationSelectSession(object, parent));
  return DuplicateIn(object, parent, session, inner, given_inner_key);
}

Result<TPMT_TK_VERIFIED> Tpm::VerifyApproval(const tpm::Approval& approval) {
  // In the owner hierarchy: in the NULL hierarchy TPM2_VerifySignature returns a NULL
  // ticket, which PolicyAuthorize refuses (../shared/reference/policy-authorize, pitfall 1).
  ESYS_TR tr = ESYS_TR_NONE;
  TPMMA_RETURN_IF_ERROR(
      CheckRc("Esys_LoadExternal(policy-signing key)",
              Esys_LoadExternal(ctx_, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, nullptr,
                                &approval.policy_key, ESYS_TR_RH_OWNER, &tr)));
  TPMMA_ASSIGN_OR_RETURN(Object key,
                         WrapObject(tr, Handle::Kind::kTransient, &approval.policy_key));
  TPMMA_ASSIGN_OR_RETURN(TPM2B_DIGEST ahash, tpm::AuthorizeAHash(approval.approved_policy,
                                                                 tpm::DuplicationPolicyRef()));
  EsysPtr<TPMT_TK_VERIFIED> ticket;
  TPMMA_RETURN_IF_ERROR(
      CheckRc("Esys_VerifySignature(MA approval)",
              Esys_VerifySignature(ctx_, key.handle(), ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
                                   &ahash, &approval.signature, Out(ticket))));
  return *ticket;
}

Result<Duplicated> Tpm::DuplicateAuthorized(const Object& object, const TPM2B_PUBLIC& new_parent,
                                            const tpm::Approval& approval, InnerWrap inner,
                                            const SecureBytes& given_inner_key) {
  TPMMA_RETURN_IF_ERROR(CheckInnerWrap(object, inner, given_inner_key));
  // The ticket first: the policy key's slot is free again before the parent is loaded.
  TPMMA_ASSIGN_OR_RETURN(TPMT_TK_VERIFIED ticket, VerifyApproval(approval));
  TPMMA_ASSIGN_OR_RETURN(Object parent, LoadExternal(new_parent));
  TPMMA_ASSIGN_OR_RETURN(Handle session, DuplicationSelectSession(object, parent));
  TPM2B_NONCE ref{};
  TPMMA_RETURN_IF_ERROR(Fill(ref, tpm::DuplicationPolicyRef(), "policyRef"));
  TPMMA_ASSIGN_OR_RETURN(TPM2B_NAME key_name,
                         tpm::ComputeTpm2bName(approval.policy_key.publicArea));
  TPMMA_RETURN_IF_ERROR(
      CheckRc("Esys_PolicyAuthorize",
              Esys_PolicyAuthorize(ctx_, session.get(), ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
                                   &approval.approved_policy, &ref, &key_name, &ticket)));
  return DuplicateIn(object, parent, session, inner, given_inner_key);
}

}  // namespace tpmma::esys
