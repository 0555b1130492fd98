// SPDX-License-Identifier: GPL-2.0-or-later
// Software TPM2_Rewrap: move a duplicate from the MA key to a new parent (the new TPM's
// SRK). Only the outer layer is touched; an inner wrapper passes through unopened.
#pragma once

#include <openssl/evp.h>
#include <tss2/tss2_tpm2_types.h>

#include "common/status.h"

namespace tpmma::tpm {

struct Rewrapped {
  TPM2B_PRIVATE duplicate{};
  TPM2B_ENCRYPTED_SECRET encrypted_seed{};
};

// ma_private/ma_public: the MA storage key the object was duplicated to. object_public:
// the duplicated object (the MRK); its Name binds the outer wrapper. new_parent must pass
// CheckStorageParent (RSA or ECC). Errors: kIntegrityFailure if the duplicate was not
// made for this MA key and object, kInvalidArgument for an unsuitable new parent.
Result<Rewrapped> Rewrap(EVP_PKEY* ma_private, const TPMT_PUBLIC& ma_public,
                         const TPM2B_PUBLIC& object_public, const TPM2B_PRIVATE& duplicate,
                         const TPM2B_ENCRYPTED_SECRET& encrypted_seed,
                         const TPM2B_PUBLIC& new_parent);

}  // namespace tpmma::tpm
