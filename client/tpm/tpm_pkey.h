// SPDX-License-Identifier: GPL-2.0-or-later
// An OpenSSL EVP_PKEY whose private-key operation runs in the TPM, so that code written
// for OpenSSL keys (xmlsec signing a Migration Package, TLS client auth) can use a
// TPM-resident signing key without ever seeing it.
#pragma once

#include "client/tpm/esys.h"
#include "common/openssl.h"
#include "common/status.h"

namespace tpmma::esys {

// `key` must be a loaded, unrestricted signing key: ECC P-256 with ECDSA-SHA256 or
// RSA-2048 with RSASSA-SHA256 (ChildType::kEccSign / kRsaSign). The EVP_PKEY takes
// ownership of the loaded object (it stays in one of the TPM's transient slots until the
// last reference to the EVP_PKEY is freed); `tpm` must outlive it.
// Signing: EVP_DigestSign / EVP_PKEY_sign with SHA-256 (ECDSA also accepts longer digests,
// truncated as ECDSA specifies); RSA only PKCS#1 v1.5, not PSS. Public-key operations
// (verify, export) are plain OpenSSL.
Result<EvpPkeyPtr> MakeTpmSigningKey(Tpm& tpm, Object key);

}  // namespace tpmma::esys
