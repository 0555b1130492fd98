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

}  // namespace tpmma::tpm
