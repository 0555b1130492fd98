// SPDX-License-Identifier: GPL-2.0-or-later
// Marshal/Unmarshal of the TPM structures tpm-ma moves around, via tss2-mu. Unmarshal
// takes only the canonical encoding, else kMalformed: the whole buffer consumed (a
// structure with a hidden tail is not the structure the signer or the TPM saw), a TPM2B's
// size field equal to its content, no empty TPM2B_PUBLIC, and Marshal of the result giving
// the input back byte for byte (one value, one encoding, one digest; issue #13).
#pragma once

#include <string>

#include <tss2/tss2_tpm2_types.h>

#include "common/bytes.h"
#include "common/status.h"

namespace tpmma::tpm {

// Supported T: TPM2B_PUBLIC, TPMT_PUBLIC, TPM2B_PRIVATE, TPM2B_ENCRYPTED_SECRET,
// TPM2B_ID_OBJECT, TPM2B_NAME, TPM2B_ATTEST, TPMS_ATTEST, TPMT_SIGNATURE, TPM2B_DIGEST,
// TPMS_ECC_POINT, TPM2B_SENSITIVE, TPM2B_DATA. Other types fail to link.
template <typename T>
Result<T> Unmarshal(ByteView data);

template <typename T>
Result<Bytes> Marshal(const T& value);

// The TPMS_ATTEST inside a TPM2B_ATTEST (what Esys_Certify/Esys_Quote return).
Result<TPMS_ATTEST> AttestFromTpm2b(const TPM2B_ATTEST& attest);

// Fills a TPM2B whose array is called `buffer` (TPM2B_DIGEST, TPM2B_PRIVATE, ...) from
// bytes; kLimitExceeded if it does not fit.
template <typename T2B>
Status FillTpm2b(T2B& out, ByteView data) {
  if (data.size() > sizeof(out.buffer)) {
    return Status(Code::kLimitExceeded, "value of " + std::to_string(data.size()) +
                                            " bytes does not fit a TPM2B of " +
                                            std::to_string(sizeof(out.buffer)));
  }
  out.size = static_cast<uint16_t>(data.size());
  for (size_t i = 0; i < data.size(); ++i) out.buffer[i] = data[i];
  return Status::Ok();
}

template <typename T2B>
ByteView Tpm2bView(const T2B& in) {
  return ByteView(in.buffer, in.size);
}

}  // namespace tpmma::tpm
