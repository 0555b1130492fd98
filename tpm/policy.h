// SPDX-License-Identifier: GPL-2.0-or-later
// Policy digests computed in software, the same bytes a TPM trial session makes: lms puts
// them into the MRK's authPolicy, the MA checks every MRK it is sent against them.
#pragma once

#include <tss2/tss2_tpm2_types.h>

#include "common/bytes.h"
#include "common/status.h"

namespace tpmma::tpm {

// TPM2_PolicyDuplicationSelect(newParentName, includeObject = NO) from an empty policy:
// SHA-256(0^32 || TPM_CC_PolicyDuplicationSelect || newParentName || NO). includeObject
// must be NO: the MRK's Name hashes its authPolicy, so the policy cannot name the MRK.
// `new_parent_name` must be a SHA-256 Name (nameAlg 000b and a 32-byte digest, 34 bytes):
// the MA key's Name; anything else is kInvalidArgument, since a digest bound to a
// malformed Name would make an MRK that can never be duplicated.
Result<TPM2B_DIGEST> DuplicationSelectPolicy(ByteView new_parent_name);

// MRKs that follow the MA's key rotations (docs/protocol.md, "MRK policies"): authPolicy =
// TPM2_PolicyAuthorize(keySign = Name of the MA's policy-signing key, policyRef) from an empty
// policy, SHA-256(SHA-256(0^32 || TPM_CC_PolicyAuthorize || keySignName) || policyRef). The
// MA then approves each storage key by signing DuplicationSelectPolicy(its Name); an MRK
// duplicates to whichever key holds such a signature. `policy_key_name` must be a SHA-256
// Name; `policy_ref` at most 64 bytes (TPM2B_NONCE).
Result<TPM2B_DIGEST> AuthorizePolicy(ByteView policy_key_name, ByteView policy_ref);

// What the policy-signing key signs (and TPM2_VerifySignature checks) to approve
// `approved_policy`: aHash = SHA-256(approvedPolicy || policyRef), raw bytes, no sizes.
Result<TPM2B_DIGEST> AuthorizeAHash(const TPM2B_DIGEST& approved_policy, ByteView policy_ref);

// The policyRef of every tpm-ma MRK and approval: "tpm-ma duplicate" (16 bytes, no NUL).
ByteView DuplicationPolicyRef();

}  // namespace tpmma::tpm
