// SPDX-License-Identifier: GPL-2.0-or-later
// The software half of MRKs that follow the MA (docs/protocol.md, "MRK policies"): the MA's
// policy-signing key approves each of its storage keys by signing the PolicyDuplicationSelect
// digest to that key (tpm/policy.h); an MRK whose authPolicy is PolicyAuthorize(that key)
// then duplicates to any approved storage key, and a key rotation needs nothing from the
// endpoint. The MA signs here; lms checks here before its TPM checks again
// (esys::Tpm::DuplicateAuthorized).
#pragma once

#include <openssl/evp.h>
#include <tss2/tss2_tpm2_types.h>

#include "common/bytes.h"
#include "common/status.h"

namespace tpmma::tpm {

// One storage key's approval: the policy-signing key (as a TPM loads it), the approved
// policy and the signature over AuthorizeAHash(approved policy, DuplicationPolicyRef()).
struct Approval {
  TPM2B_PUBLIC policy_key{};
  TPM2B_DIGEST approved_policy{};
  TPMT_SIGNATURE signature{};
};

// The TPM2B_PUBLIC of a policy-signing key (RSA 2048+ or ECC P-256): sign|userWithAuth,
// scheme NULL, symmetric NULL, nameAlg SHA-256, the same bytes (and Name) as
// `tpm2_loadexternal -G rsa|ecc -a "sign|userwithauth" -u key.pem`.
Result<TPM2B_PUBLIC> PolicyKeyPublic(const EVP_PKEY* key);

// The approval of the storage key named `storage_key_name` (a SHA-256 Name), signed by
// `policy_key` (RSASSA-PKCS1-v1_5-SHA256, or ECDSA-SHA256 for an EC key).
Result<Approval> SignApproval(EVP_PKEY* policy_key, ByteView storage_key_name);

// What the TPM will check, in software, plus what it cannot know: the approved policy is
// the PolicyDuplicationSelect to `storage_key_name`, the policy key's Name is
// `policy_key_name` (the one the MRK's policy names), and the signature verifies.
// kIntegrityFailure naming what differs.
Status CheckApproval(const Approval& a, ByteView storage_key_name, ByteView policy_key_name);

// An approval as GetMAKey sends it and lms keeps it (the policy key's marshalled TPM2B_PUBLIC,
// the marshalled TPMT_SIGNATURE) for the storage key `storage_key_name`, checked
// (CheckApproval) against the policy key it comes with: kMalformed if it does not parse.
Result<Approval> ApprovalFromWire(ByteView policy_key, ByteView signature,
                                  ByteView storage_key_name);

// The Name of the policy key an approval is signed with (what a following MRK's policy names).
Result<Bytes> PolicyKeyName(const Approval& a);

}  // namespace tpmma::tpm
