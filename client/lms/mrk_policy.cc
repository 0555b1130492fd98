// SPDX-License-Identifier: GPL-2.0-or-later
#include "client/lms/mrk_policy.h"

#include <algorithm>

#include "tpm/approval.h"
#include "tpm/esys/templates.h"
#include "tpm/marshal.h"
#include "tpm/policy.h"

namespace tpmma::lms {

Result<esys::KeyBlob> CreateMrkFor(esys::Tpm& tpm, const esys::Object& srk, const InitOptions& o,
                                   const Bytes& ma_name) {
  if (o.policy_key_public.empty()) return tpm.CreateMrk(srk, ma_name, o.mrk_alg);
  TPMMA_ASSIGN_OR_RETURN(tpm::Approval a,
                         tpm::ApprovalFromWire(o.policy_key_public, o.ma_key_approval, ma_name));
  TPMMA_ASSIGN_OR_RETURN(Bytes policy_name, tpm::PolicyKeyName(a));
  return tpm.CreateMrkFollowingMa(srk, policy_name, o.mrk_alg);
}

Result<esys::Duplicated> DuplicateMrkFor(esys::Tpm& tpm, const StoreState& state,
                                         const esys::Object& mrk, const SecureBytes& inner) {
  TPMMA_ASSIGN_OR_RETURN(TPM2B_PUBLIC ma_public, tpm::Unmarshal<TPM2B_PUBLIC>(state.ma_key_public));
  if (state.policy_key_public.empty()) {
    return tpm.Duplicate(mrk, ma_public, esys::InnerWrap::kGiven, inner);
  }
  // An MRK that follows the MA: the MA's approval of its key, checked here, then by the TPM.
  TPMMA_ASSIGN_OR_RETURN(
      tpm::Approval approval,
      tpm::ApprovalFromWire(state.policy_key_public, state.ma_key_approval, state.ma_key_name));
  return tpm.DuplicateAuthorized(mrk, ma_public, approval, esys::InnerWrap::kGiven, inner);
}

Status CheckMrkPolicyFor(FetchedMaKey& ma_key, ByteView auth_policy,
                         const std::string& package_id) {
  TPMMA_ASSIGN_OR_RETURN(TPM2B_DIGEST bound, esys::DuplicationSelectPolicy(ma_key.name));
  if (std::ranges::equal(tpm::Tpm2bView(bound), auth_policy)) {
    ma_key.policy_key.clear();
    ma_key.approval.clear();
    return Status::Ok();
  }
  if (!ma_key.policy_key.empty()) {
    TPMMA_ASSIGN_OR_RETURN(tpm::Approval a,
                           tpm::ApprovalFromWire(ma_key.policy_key, ma_key.approval, ma_key.name));
    TPMMA_ASSIGN_OR_RETURN(Bytes name, tpm::PolicyKeyName(a));
    TPMMA_ASSIGN_OR_RETURN(TPM2B_DIGEST follow,
                           tpm::AuthorizePolicy(name, tpm::DuplicationPolicyRef()));
    if (std::ranges::equal(tpm::Tpm2bView(follow), auth_policy)) return Status::Ok();
  }
  return Status(Code::kConflict,
                "the MRK in package " + package_id + " is not bound to the MA's current key (" +
                    ma_key.key_id + ", Name " + HexEncode(ma_key.name) +
                    ") nor follows its policy-signing key: its authPolicy names neither, so a "
                    "new store could not back it up; nothing was restored");
}

}  // namespace tpmma::lms
