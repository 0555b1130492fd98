// SPDX-License-Identifier: GPL-2.0-or-later
// Verification of TPM attestations (TPM2_Certify, TPM2_Quote) signed by an AK: the MA uses
// Certify to learn that a new parent key lives in the authenticated TPM, and Quote for
// freshness over an MA nonce.
#pragma once

#include <tss2/tss2_tpm2_types.h>

#include "common/bytes.h"
#include "common/status.h"

namespace tpmma::tpm {

// Verifies `sig` over `signed_data` with the AK public: RSASSA-PKCS1-v1_5, RSA-PSS or
// ECDSA with SHA-256/384 (and SHA-1/512). If the AK has a fixed scheme, the signature must
// use it. kSignatureInvalid on a bad signature.
Status VerifyTpmSignature(const TPMT_PUBLIC& ak, ByteView signed_data, const TPMT_SIGNATURE& sig);

// Signature, magic TPM_GENERATED_VALUE, attestation type and qualifyingData == nonce
// (constant time). `attest` is the marshalled TPMS_ATTEST exactly as signed.
Result<TPMS_ATTEST> VerifyAttest(const TPMT_PUBLIC& ak, ByteView attest, const TPMT_SIGNATURE& sig,
                                 TPMI_ST_ATTEST expected_type, ByteView expected_nonce);

// TPM2_Certify: as VerifyAttest, plus the certified Name must equal the Name of `certified`.
Status VerifyCertify(const TPMT_PUBLIC& ak, ByteView attest, const TPMT_SIGNATURE& sig,
                     ByteView expected_nonce, const TPMT_PUBLIC& certified);

struct QuoteInfo {
  TPML_PCR_SELECTION pcr_select{};
  Bytes pcr_digest;
};

// TPM2_Quote: as VerifyAttest; returns the PCR selection and digest for policy checks.
Result<QuoteInfo> VerifyQuote(const TPMT_PUBLIC& ak, ByteView attest, const TPMT_SIGNATURE& sig,
                              ByteView expected_nonce);

}  // namespace tpmma::tpm
