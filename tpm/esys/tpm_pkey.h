// SPDX-License-Identifier: GPL-2.0-or-later
// An OpenSSL EVP_PKEY whose private-key operation runs in the TPM, so that code written
// for OpenSSL keys (xmlsec signing a Migration Package, TLS client auth) can use a
// TPM-resident signing key without ever seeing it.
#pragma once

#include "common/openssl.h"
#include "common/status.h"
#include "tpm/esys/esys.h"

namespace tpmma::esys {

// `key` must be a loaded, unrestricted signing key: ECC P-256 with ECDSA-SHA256 or
// RSA-2048 with RSASSA-SHA256 (ChildType::kEccSign / kRsaSign). The EVP_PKEY takes
// ownership of the loaded object (it stays in one of the TPM's transient slots until the
// last reference to the EVP_PKEY is freed), and shares the ESAPI context with `tpm`, which
// `key` must have been loaded by: the EVP_PKEY may outlive `tpm` and keeps signing (the
// context, and its connection to the TPM, stay open until the last of them is freed). Use
// it from one thread at a time with everything else on that context (esys.h).
//
// The key belongs to a small built-in OpenSSL provider ("tpmma-tpm", in its own library
// context; see tpm_pkey.cc for why) and works wherever an EVP_PKEY does, with no caller
// workaround: schema::SignPackage (xmlsec1 1.2.37 on OpenSSL 3), EVP_DigestSign,
// EVP_PKEY_sign, X509_REQ_sign / X509_sign.
// Signing: SHA-256 (ECDSA also SHA-384/512, truncated to 256 bits as ECDSA specifies);
// RSA only PKCS#1 v1.5, not PSS. Anything else is refused, never made another way.
// Public-key work (verify, i2d_PUBKEY / PEM_write_PUBKEY, EVP_PKEY_todata(PUBLIC_KEY),
// EVP_PKEY_eq) is plain OpenSSL on the public half. The private half is never exported:
// EVP_PKEY_todata(KEYPAIR) and PEM_write_PrivateKey fail. For xmlsec 1.2's "can this
// RSA key sign?" check, EVP_PKEY_get_bn_param(key, "d") answers 0 (no RSA key's d).
Result<EvpPkeyPtr> MakeTpmSigningKey(Tpm& tpm, Object key);

}  // namespace tpmma::esys
