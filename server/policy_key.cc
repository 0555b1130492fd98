// SPDX-License-Identifier: GPL-2.0-or-later
#include "server/policy_key.h"

#include "server/key_files.h"
#include "tpm/marshal.h"
#include "tpm/policy.h"
#include "tpm/public.h"

namespace tpmma::server {

namespace {

constexpr size_t kMaxApprovalFile = 4096;

}  // namespace

Status CreatePolicyKey(const std::string& private_path, const std::string& public_path, Env* env) {
  return CreateKeyPairFiles(private_path, public_path,
                            "every MRK made with PolicyAuthorize names this key: a new one would "
                            "strand them",
                            env);
}

Status WriteApproval(const std::string& private_path, ByteView storage_key_name,
                     const std::string& approval_path, Env* env) {
  TPMMA_ASSIGN_OR_RETURN(EvpPkeyPtr key, ReadPrivateKeyFile(private_path, "policy-signing", env));
  TPMMA_ASSIGN_OR_RETURN(tpm::Approval a, tpm::SignApproval(key.get(), storage_key_name));
  TPMMA_ASSIGN_OR_RETURN(Bytes sig, tpm::Marshal(a.signature));
  return env->WriteFileAtomic(approval_path, sig, 0644);
}

Status WriteApprovalInTpm(const TpmKeyConfig& signer, ByteView storage_key_name,
                          const std::string& approval_path, Env* env) {
  TPMMA_ASSIGN_OR_RETURN(esys::KeyBlob blob, ReadTpmKeyBlob(signer.tpm_public, signer.tpm_private,
                                                            "policy-signing", env));
  TPMMA_ASSIGN_OR_RETURN(LoadedTpmKey key,
                         LoadTpmKey(signer.tpm_tcti, signer.tpm_parent, blob, "policy-signing"));
  TPMMA_ASSIGN_OR_RETURN(TPM2B_DIGEST approved, tpm::DuplicationSelectPolicy(storage_key_name));
  TPMMA_ASSIGN_OR_RETURN(TPM2B_DIGEST a_hash,
                         tpm::AuthorizeAHash(approved, tpm::DuplicationPolicyRef()));
  TPMMA_ASSIGN_OR_RETURN(TPMT_SIGNATURE sig,
                         key.tpm->Sign(key.key, ByteView(a_hash.buffer, a_hash.size)));
  TPMMA_ASSIGN_OR_RETURN(Bytes bytes, tpm::Marshal(sig));
  return env->WriteFileAtomic(approval_path, bytes, 0644);
}

Result<std::optional<tpm::Approval>> LoadApproval(const Config& cfg, ByteView storage_key_name,
                                                  Env* env) {
  if (cfg.policy_public_key.empty()) return std::optional<tpm::Approval>();
  TPMMA_ASSIGN_OR_RETURN(EvpPkeyPtr key, ReadPublicKeyFile(cfg.policy_public_key, env));
  TPMMA_ASSIGN_OR_RETURN(TPM2B_PUBLIC policy_key, tpm::PolicyKeyPublic(key.get()));
  TPMMA_ASSIGN_OR_RETURN(Bytes policy_key_bytes, tpm::Marshal(policy_key));
  TPMMA_ASSIGN_OR_RETURN(Bytes sig, env->ReadFile(cfg.policy_approval, kMaxApprovalFile));
  auto a = tpm::ApprovalFromWire(policy_key_bytes, sig, storage_key_name);
  if (!a && a.error().code() == Code::kMalformed) {
    return Error(Code::kInvalidArgument, "policy.approval " + cfg.policy_approval +
                                             " is not a TPMT_SIGNATURE: " + a.error().message());
  }
  if (!a) {
    return Error(a.error().code(),
                 "policy.approval " + cfg.policy_approval +
                     " does not approve this MA's storage key with policy.public_key "
                     "(`ma-admin policy-key init` and `ma-admin ma-key rotate` write it): " +
                     a.error().message());
  }
  return std::optional<tpm::Approval>(std::move(*a));
}

}  // namespace tpmma::server
