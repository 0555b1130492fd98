// SPDX-License-Identifier: GPL-2.0-or-later
// What identifies a platform's TPM beyond the Name of the EK public it sends (issue 12,
// "One TPM, one platform"): the EK public must be a TCG EK template or one the administrator
// configured (tpm/ek_templates.h), the EK key itself (not its encoding) is what revocation
// and registration bind to, and the EK certificate is accepted as read from NV, padding
// after its DER length included.
#pragma once

#include <string>
#include <vector>

#include <tss2/tss2_tpm2_types.h>

#include "common/bytes.h"
#include "common/env.h"
#include "common/status.h"
#include "storage/vault.h"
#include "tpm/ek_templates.h"

namespace tpmma::server {

// SHA-256 of the EK's SubjectPublicKeyInfo DER: the same for every public area around the
// same key (attributes, authPolicy, nameAlg do not enter it), and what its certificate
// certifies.
Result<Bytes> EkKeyId(const TPMT_PUBLIC& ek);

// The EK certificate's DER without the NV padding after it: the outer SEQUENCE's length
// (ASN1_get_object) ends the certificate; what follows may only be 0x00 or 0xFF bytes.
// kMalformed for anything else (no SEQUENCE, indefinite or overlong length, other bytes).
Result<Bytes> TrimEkCertificatePadding(ByteView nv_contents);

// trust.ek_templates: each file a TPM2B_PUBLIC (tpm2_createek -u / tpm2_readpublic -o, TSS
// format), checked by tpm::CheckConfiguredEkTemplate; errors name the file.
Result<std::vector<tpm::EkTemplate>> LoadEkTemplates(const std::vector<std::string>& paths,
                                                     Env* env);

// Platforms stored before schema 3 have no ek_key_id: compute it from their EK public so
// that a revoked one stays revoked under any re-encoding. Audited as actor "system". Rows
// whose EK public does not decode are skipped.
Status BackfillEkKeyIds(storage::Vault* vault, Env* env);

}  // namespace tpmma::server
