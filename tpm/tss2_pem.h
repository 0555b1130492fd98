// SPDX-License-Identifier: GPL-2.0-or-later
// The `TSS2 PRIVATE KEY` PEM file that tpm2-openssl, tpm2-tss-engine and tpm2_encodeobject
// read and write: a TPM-wrapped key blob plus the handle of the parent to load it under.
//
//   TPMKey ::= SEQUENCE {
//     type       OBJECT IDENTIFIER,            -- 2.23.133.10.1.3 (loadable key) only
//     emptyAuth  [0] EXPLICIT BOOLEAN OPTIONAL, -- absent or FALSE: tpm2-openssl asks for a
//     password parent     INTEGER,                      -- a TPM handle, e.g. 0x81000100 pubkey
//     OCTET STRING,                 -- marshalled TPM2B_PUBLIC, size prefix included privkey OCTET
//     STRING }                -- marshalled TPM2B_PRIVATE, size prefix included
//
// The ASN.1 is OpenSSL's (ASN.1 templates, the same definition as tpm2-openssl's
// src/tpm2-provider-pkey.c). The private blob is encrypted by the parent, so the file is not a
// secret in clear; nothing here logs it anyway.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "common/bytes.h"
#include "common/status.h"

namespace tpmma::tpm {

// Same limits as a Migration Package's TPM2B_PUBLIC / TPM2B_PRIVATE (schema/package.h
// kMaxTpm2bPublic / kMaxTpm2bPrivate; tpm/ does not depend on schema/).
inline constexpr size_t kMaxTss2PemPublic = 1024;
inline constexpr size_t kMaxTss2PemPrivate = 2048;

struct Tss2PrivateKey {
  uint32_t parent = 0;     // TPM handle of the parent, e.g. the MRK at 0x81000100; 0 is refused
  bool empty_auth = true;  // the key's authValue is empty (no password prompt)
  Bytes public_area;       // marshalled TPM2B_PUBLIC (with its 2-byte size prefix)
  Bytes private_area;      // marshalled TPM2B_PRIVATE (with its 2-byte size prefix)
};

// PEM text ("-----BEGIN TSS2 PRIVATE KEY-----" ...). emptyAuth is always written, as
// tpm2-openssl and tpm2_encodeobject do: [0] TRUE (content 0xFF, DER's TRUE; they write 0x01,
// and every reader takes any non-zero) or [0] FALSE. kInvalidArgument when a field would not
// decode.
Result<std::string> EncodeTss2PrivateKeyPem(const Tss2PrivateKey& key);

// The first PEM block of `pem` must be a TSS2 PRIVATE KEY holding exactly one DER TPMKey
// with the loadable-key OID, a 32-bit unsigned non-zero parent, and well-formed TPM2Bs within
// the limits above. Every refusal is kInvalidArgument with a message naming what is wrong.
Result<Tss2PrivateKey> DecodeTss2PrivateKeyPem(std::string_view pem);

}  // namespace tpmma::tpm
