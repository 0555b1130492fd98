// SPDX-License-Identifier: GPL-2.0-or-later
// Escrow custody of the inner wrapper key (docs/protocol.md, "Inner-key custody": helpdesk convenience): the format
// shared by lms, which encrypts the key into each package, and ma-server, which opens it
// only for a Download under a helpdesk approval.
//
//   plaintext  = inner key (16..32 bytes) || binding (32 bytes)
//   binding    = SHA-256("tpm-ma escrow v1" 0x00 || source platform id 0x00 || MRK Name)
//   ciphertext = RSA-OAEP(SHA-256, MGF1-SHA-256, label "TPM-MA ESCROW" 0x00)(escrow key)
//
// The binding ties the escrowed key to the platform that uploaded the package and to its
// MRK: a copy of someone else's escrow blob, re-signed and uploaded by another platform,
// does not open for that platform. The label ends in a NUL so that a TPM-resident escrow key
// (TPM2_RSA_Decrypt, whose label must be NUL-terminated) decrypts the same bytes.
#pragma once

#include <string_view>

#include <openssl/evp.h>
#include <tss2/tss2_tpm2_types.h>

#include "common/bytes.h"
#include "common/status.h"

namespace tpmma::tpm {

inline constexpr std::string_view kEscrowLabel = "TPM-MA ESCROW";  // + NUL on the wire
inline constexpr size_t kEscrowBindingBytes = 32;

// "TPM-MA ESCROW\0", as both OpenSSL and TPM2_RSA_Decrypt take it.
Bytes EscrowOaepLabel();

// An escrow key's public area: RSA-2048 (or larger), decrypt set; restricted and sign
// clear; symmetric NULL; scheme NULL or OAEP-SHA256. kInvalidArgument saying which is off.
Status CheckEscrowKey(const TPMT_PUBLIC& key);

// The TPM2B_PUBLIC ma-server publishes for a software escrow key: decrypt|userWithAuth,
// nameAlg SHA-256, scheme and symmetric NULL, exponent written out (as tpm2_import -G rsa
// -a "decrypt|userwithauth" writes it), so a TPM-imported copy has the same bytes.
Result<TPM2B_PUBLIC> EscrowPublicFromEvp(const EVP_PKEY* key);

Result<Bytes> EscrowBinding(std::string_view platform_id, ByteView mrk_name);

// lms side: the EncryptedInnerKey for a package of `platform_id` whose MRK has `mrk_name`.
Result<Bytes> EscrowEncrypt(const TPMT_PUBLIC& escrow_key, ByteView inner_key,
                            std::string_view platform_id, ByteView mrk_name);

// MA side, software custody: RSA-OAEP decryption with the escrow label. Any failure is
// kIntegrityFailure without detail (OAEP errors are a padding oracle).
Result<SecureBytes> EscrowDecrypt(EVP_PKEY* escrow_private, ByteView ciphertext);

// MA side, after either custody decrypted: checks the binding in constant time and returns
// the inner key. kIntegrityFailure ("escrowed key was made for another platform or MRK")
// when the binding differs, kMalformed for a plaintext of the wrong size.
Result<SecureBytes> EscrowOpen(const SecureBytes& plaintext, std::string_view platform_id,
                               ByteView mrk_name);

}  // namespace tpmma::tpm
