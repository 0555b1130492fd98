// SPDX-License-Identifier: GPL-2.0-or-later
// The MA's policy-signing key (docs/protocol.md, "MRK policies"; docs/operations.md, "MA key
// lifecycle"): the long-lived root that MRKs made with PolicyAuthorize follow. It signs only
// when a storage key is added, so ma-server never needs its private half: it reads the
// public key and the approval of its storage key ([policy] in config.toml) and publishes
// both in GetMAKey.
#pragma once

#include <optional>
#include <string>

#include "common/bytes.h"
#include "common/env.h"
#include "common/status.h"
#include "server/config.h"
#include "tpm/approval.h"

namespace tpmma::server {

// ma-admin: a new policy-signing key (EC P-256) at `private_path` (0600) and
// `public_path`; refused if either exists (every PolicyAuthorize MRK names this key).
Status CreatePolicyKey(const std::string& private_path, const std::string& public_path,
                       Env* env);

// ma-admin: the key at `private_path` approves the storage key named `storage_key_name`;
// the signature (a marshalled TPMT_SIGNATURE) is written to `approval_path` (0644).
Status WriteApproval(const std::string& private_path, ByteView storage_key_name,
                     const std::string& approval_path, Env* env);

// ma-admin, the policy-signing key in the MA's TPM ([policy] custody = "tpm"): the same
// approval, signed by TPM2_Sign over AuthorizeAHash(approved policy, policyRef).
Status WriteApprovalInTpm(const TpmKeyConfig& signer, ByteView storage_key_name,
                          const std::string& approval_path, Env* env);

// ma-server: [policy]'s public key and approval of the storage key `storage_key_name`,
// checked (tpm::CheckApproval) so that an MA never publishes an approval the endpoints'
// TPMs would refuse. nullopt when [policy] is not configured.
Result<std::optional<tpm::Approval>> LoadApproval(const Config& cfg, ByteView storage_key_name,
                                                  Env* env);

}  // namespace tpmma::server
