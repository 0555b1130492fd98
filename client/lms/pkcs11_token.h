// SPDX-License-Identifier: GPL-2.0-or-later
// The store's tpm2-pkcs11 token (issue #11; docs/applications.md): a token whose primary
// object is the persistent MRK, so that PKCS#11 programs (ssh -I, pkcs11-tool, p11-kit) use
// the store's application keys, and the token keeps working after a restore on a new TPM.
// The token's database lives in <store>/pkcs11 (what TPM2_PKCS11_STORE must name) and is
// written by tpm2-pkcs11's own code, driven by pkcs11/tpmma-pkcs11-token (see its README for
// why that program and not tpm2_ptool). PINs reach it on stdin only.
#pragma once

#include <optional>
#include <string>

#include "client/lms/keystore.h"
#include "client/lms/operations.h"
#include "common/bytes.h"
#include "common/status.h"

namespace tpmma::lms {

inline constexpr const char* kPkcs11Dir = "pkcs11";
inline constexpr const char* kPkcs11Db = "tpm2_pkcs11.sqlite3";  // tpm2-pkcs11's name for it

std::string Pkcs11StorePath(const KeyStore& store);  // <store>/pkcs11

struct Pkcs11Pins {
  SecureString so_pin;
  SecureString user_pin;
};

// Makes the token `label` on the MRK (at the store's mrk_handle, which must hold it).
Status Pkcs11Init(Lms& lms, const std::string& label, const Pkcs11Pins& pins);

// Links key `id_or_label` (an application key) into token `label` with CKA_ID `id_hex`
// (empty: the next free one) and CKA_LABEL the key's label. Returns the CKA_ID used.
Result<std::string> Pkcs11Link(Lms& lms, const std::string& label, std::string_view id_or_label,
                               const std::string& id_hex, const SecureString& user_pin);

// The token database's bytes, if the store has one (what a backup carries).
Result<std::optional<Bytes>> ReadPkcs11Db(const KeyStore& store);
// Writes it back (a restore into a store without one).
Status WritePkcs11Db(KeyStore& store, ByteView db);

}  // namespace tpmma::lms
