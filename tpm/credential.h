// SPDX-License-Identifier: GPL-2.0-or-later
// Software TPM2_MakeCredential: the MA encrypts a challenge secret so that only the TPM
// holding both the EK and a loaded key with the given Name (the AK) can recover it.
#pragma once

#include <tss2/tss2_tpm2_types.h>

#include "common/bytes.h"
#include "common/status.h"

namespace tpmma::tpm {

struct Credential {
  TPM2B_ID_OBJECT id_object{};
  TPM2B_ENCRYPTED_SECRET encrypted_secret{};
};

// secret: 1..digest-size bytes of the EK's nameAlg. ak_name: the AK Name as computed by
// the MA itself (ComputeName), never one the client claims.
Result<Credential> MakeCredential(const TPM2B_PUBLIC& ek, ByteView ak_name, ByteView secret);

// tpm2-tools' credential file (tpm2_makecredential -o / tpm2_activatecredential -i):
// 0xBADCC0DE, version 1, marshalled TPM2B_ID_OBJECT, marshalled TPM2B_ENCRYPTED_SECRET.
Result<Bytes> CredentialFile(const Credential& credential);

}  // namespace tpmma::tpm
