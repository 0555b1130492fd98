// SPDX-License-Identifier: GPL-2.0-or-later
#include "client/lms/mrk_policy.h"

#include <algorithm>

#include "client/lms/ma_connection.h"
#include "tpm/approval.h"
#include "tpm/esys/templates.h"
#include "tpm/marshal.h"
#include "tpm/policy.h"
#include "tpm/public.h"

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

Result<std::optional<FetchedMaKey>> MovedMaKey(ma::MaClient& client, const MaSettings& settings,
                                               const StoreState& state) {
  TPMMA_ASSIGN_OR_RETURN(FetchedMaKey now,
                         GetCheckedMaKey(client, settings, {}, ma::MaKeyRole::kStorage));
  if (now.name == state.ma_key_name) return std::optional<FetchedMaKey>();
  TPMMA_ASSIGN_OR_RETURN(TPM2B_PUBLIC pinned,
                         tpm::Unmarshal<TPM2B_PUBLIC>(state.policy_key_public));
  TPMMA_ASSIGN_OR_RETURN(Bytes pinned_name, tpm::ComputeName(pinned.publicArea));
  if (now.policy_key.empty()) {
    return Error(Code::kConflict,
                 "the MA at " + settings.url + " now duplicates to key " + now.key_id +
                     " but publishes no approval of it: this store's MRK follows the MA's "
                     "policy-signing key and cannot duplicate to a key it has not approved; "
                     "nothing was uploaded");
  }
  // GetCheckedMaKey checked the approval against the key it came with; the TPM would refuse
  // any other key than the one the MRK's policy names, so say so before it does.
  TPMMA_ASSIGN_OR_RETURN(tpm::Approval a,
                         tpm::ApprovalFromWire(now.policy_key, now.approval, now.name));
  TPMMA_ASSIGN_OR_RETURN(Bytes signer, tpm::PolicyKeyName(a));
  if (signer != pinned_name) {
    return Error(Code::kIntegrityFailure,
                 "the MA's new key " + now.key_id + " is approved by policy-signing key " +
                     HexEncode(signer) + ", not by " + HexEncode(pinned_name) +
                     ", the one this store's MRK follows: refusing to duplicate to it; nothing "
                     "was uploaded (ask the MA's operators)");
  }
  return std::optional<FetchedMaKey>(std::move(now));
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

Result<FetchedMaKey> MaKeyForMrk(ma::MaClient& client, const MaSettings& settings,
                                 ByteView auth_policy, const std::string& package_id) {
  TPMMA_ASSIGN_OR_RETURN(FetchedMaKey current,
                         GetCheckedMaKey(client, settings, {}, ma::MaKeyRole::kStorage));
  Status fits = CheckMrkPolicyFor(current, auth_policy, package_id);
  if (fits.ok()) return current;
  if (fits.code() != Code::kConflict) return Error(fits);
  auto info = client.GetMAServiceInfo();
  if (!info) return Error(fits);
  for (const std::string& id : info->retiring_ma_key_ids) {
    TPMMA_ASSIGN_OR_RETURN(FetchedMaKey retiring,
                           GetCheckedMaKey(client, settings, id, ma::MaKeyRole::kStorage));
    retiring.policy_key.clear();  // no approval: only a bound MRK can use a retiring key
    if (CheckMrkPolicyFor(retiring, auth_policy, package_id).ok()) return retiring;
  }
  return Error(fits);
}

}  // namespace tpmma::lms
