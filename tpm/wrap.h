// SPDX-License-Identifier: GPL-2.0-or-later
// Secret sharing with a TPM parent key (the "seed") and the outer wrapper that protects
// duplicates and credentials (TPM 2.0 Part 1, 22.3 and 24). Same construction for
// TPM2_Duplicate/Import/Rewrap (label "DUPLICATE") and MakeCredential (label "IDENTITY").
#pragma once

#include <string_view>

#include <openssl/evp.h>
#include <tss2/tss2_tpm2_types.h>

#include "common/bytes.h"
#include "common/status.h"

namespace tpmma::tpm {

inline constexpr std::string_view kDuplicateLabel = "DUPLICATE";
inline constexpr std::string_view kIdentityLabel = "IDENTITY";

struct Seed {
  SecureBytes seed;
  Bytes encrypted;  // the body of a TPM2B_ENCRYPTED_SECRET (no size prefix)
};

// RSA parent: random nameAlg-size seed, RSA-OAEP(nameAlg, label || 0x00).
// ECC parent: ephemeral ECDH on the parent's curve, seed = KDFe(nameAlg, Zx, label,
// ephemeral x, parent x), encrypted = marshalled TPMS_ECC_POINT of the ephemeral key.
Result<Seed> CreateSeed(const TPMT_PUBLIC& parent, std::string_view label);

// Inverse of CreateSeed with the parent's private key (RSA or EC EVP_PKEY).
Result<SecureBytes> RecoverSeed(EVP_PKEY* parent_private, const TPMT_PUBLIC& parent,
                                ByteView encrypted, std::string_view label);

// Body of a TPM2B_PRIVATE / TPM2B_ID_OBJECT: TPM2B_DIGEST(outerHMAC) || AES-CFB(inner),
// symKey = KDFa(nameAlg, seed, "STORAGE", name, "", symBits), IV 0,
// HMAC key = KDFa(nameAlg, seed, "INTEGRITY", "", "", digestBits), HMAC over ciphertext || name.
Result<Bytes> OuterWrap(const TPMT_PUBLIC& parent, ByteView seed, ByteView name, ByteView inner);

// Checks the HMAC in constant time (kIntegrityFailure on mismatch: wrong parent, wrong
// Name, or a damaged blob) and returns the decrypted inner payload.
Result<SecureBytes> OuterUnwrap(const TPMT_PUBLIC& parent, ByteView seed, ByteView name,
                                ByteView body);

// RSA-OAEP padding with `md` for both the hash and MGF1, and label || 0x00 (the TPM's
// convention: "DUPLICATE\0", "IDENTITY\0", the escrow label).
Status SetOaepParameters(EVP_PKEY_CTX* ctx, const EVP_MD* md, std::string_view label);

}  // namespace tpmma::tpm
