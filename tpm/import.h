// SPDX-License-Identifier: GPL-2.0-or-later
// A software key made ready for TPM2_Import under a storage parent, as `tpm2_import` does: its
// sensitive area (an RSA key's prime p, an EC key's private scalar, a random seedValue) in a
// TPM2B_SENSITIVE, with no inner wrapper, under the outer wrapper of a fresh seed shared with
// the parent (tpm/wrap.h). `ma-admin ma-key rotate --custody tpm` puts a new MA storage key
// into the MA's TPM this way, `ma-admin policy-key import-tpm` the policy-signing key; their
// public areas, and so their Names, stay those of the software keys.
#pragma once

#include <openssl/evp.h>
#include <tss2/tss2_tpm2_types.h>

#include "common/status.h"

namespace tpmma::tpm {

struct Importable {
  TPM2B_PRIVATE duplicate{};
  TPM2B_ENCRYPTED_SECRET encrypted_seed{};
};

// `object` must be `key`'s public area (MaStoragePublic, PolicyKeyPublic); `parent` an RSA or
// ECC storage parent. The seed and the sensitive bytes are wiped before return.
Result<Importable> WrapKeyForImport(const TPMT_PUBLIC& parent, const TPM2B_PUBLIC& object,
                                    const EVP_PKEY* key);

}  // namespace tpmma::tpm
