// SPDX-License-Identifier: GPL-2.0-or-later
// TPM 2.0 key derivation (Part 1, 11.4.10), on OpenSSL's KDF implementations.
#pragma once

#include <string_view>

#include <tss2/tss2_tpm2_types.h>

#include "common/bytes.h"
#include "common/status.h"

namespace tpmma::tpm {

// KDFa: SP800-108 counter-mode HMAC, K(i) = HMAC(key, [i]32 || label || 0x00 || contextU ||
// contextV || [bits]32). `label` without its terminating NUL. bits must be a multiple of 8.
Result<SecureBytes> KDFa(TPMI_ALG_HASH hash, ByteView key, std::string_view label,
                         ByteView context_u, ByteView context_v, size_t bits);

// KDFe: SP800-56A concatenation KDF, K(i) = H([i]32 || Z || label || 0x00 || partyU || partyV).
Result<SecureBytes> KDFe(TPMI_ALG_HASH hash, ByteView z, std::string_view label, ByteView party_u,
                         ByteView party_v, size_t bits);

}  // namespace tpmma::tpm
