// SPDX-License-Identifier: GPL-2.0-or-later
// Custody of the inner wrapper key (docs/protocol.md, Inner-key custody), the AES-128 key that
// wraps the MRK duplicate inside the outer wrapper to the MA key, so that the MA key alone cannot
// open a package.
//
// Recovery code (high assurance): the code is shown once at `lms init` and never stored or
// sent; the inner key is derived from it with scrypt.
//
//   code:     160 random bits as 32 Crockford base32 characters in 8 groups of 4
//             ("7K3D-Q9XA-...") — case, dashes and spaces are ignored when typed back,
//             and O/I/L read as 0/1/1.
//   derive:   scrypt(code without dashes, salt, N=2^15, r=8, p=1) -> 48 bytes:
//             [0,16) the inner key, [16,48) the verifier kept in the store and package.
//
// Escrow (helpdesk convenience): the inner key is random (NewEscrowInnerKey) and each
// package carries it encrypted to the MA's escrow key (tpm/escrow.h).
#pragma once

#include <string_view>

#include "client/lms/keystore.h"
#include "common/bytes.h"
#include "common/status.h"

namespace tpmma::lms {

inline constexpr size_t kInnerKeyBytes = 16;
inline constexpr size_t kVerifierBytes = 32;

struct NewCustody {
  SecureString recovery_code;  // to show once
  SecureBytes inner_key;       // to seal under the SRK and wrap duplicates with
  InnerKeyCustody custody;     // salt, parameters, verifier (sealed_* left empty)
};

// A fresh code, salt and the key and verifier derived from them.
Result<NewCustody> MakeRecoveryCustody();

// The canonical form of a typed code (32 characters, no dashes), or kInvalidArgument
// saying what is wrong with it (length, a character that cannot be in a code).
Result<SecureString> NormalizeRecoveryCode(std::string_view typed);

// The inner key for `code` under `custody`. kPermissionDenied ("the recovery code is not
// the one shown at lms init") when the verifier does not match.
Result<SecureBytes> DeriveInnerKey(std::string_view code, const InnerKeyCustody& custody);

// Escrow custody: a fresh random inner key (kInnerKeyBytes), nothing derivable from it
// kept anywhere but the TPM (sealed) and the packages (escrowed).
Result<SecureBytes> NewEscrowInnerKey();

}  // namespace tpmma::lms
