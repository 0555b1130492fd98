// SPDX-License-Identifier: GPL-2.0-or-later
// TPM public areas: Names, conversion to and from OpenSSL keys, the MA storage-key
// template, and the attribute checks the server applies to keys a client sends.
#pragma once

#include <openssl/evp.h>
#include <tss2/tss2_tpm2_types.h>

#include <string>

#include "common/bytes.h"
#include "common/openssl.h"
#include "common/status.h"

namespace tpmma::tpm {

// OpenSSL digest for a TPM hash algorithm (SHA-1/256/384/512); kUnsupported otherwise.
Result<const EVP_MD*> HashMd(TPMI_ALG_HASH alg);
Result<size_t> DigestSize(TPMI_ALG_HASH alg);

// Name = nameAlg || H_nameAlg(marshalled TPMT_PUBLIC), as TPM2_ReadPublic reports it.
Result<Bytes> ComputeName(const TPMT_PUBLIC& pub);
Result<TPM2B_NAME> ComputeTpm2bName(const TPMT_PUBLIC& pub);

// The public key of an RSA (any size; exponent 0 means 65537) or ECC (P-256/P-384) area.
Result<EvpPkeyPtr> PublicToEvp(const TPMT_PUBLIC& pub);

struct PublicTemplate {
  TPMA_OBJECT attributes = TPMA_OBJECT_RESTRICTED | TPMA_OBJECT_DECRYPT | TPMA_OBJECT_USERWITHAUTH;
  TPMI_ALG_HASH name_alg = TPM2_ALG_SHA256;
  // Storage keys need AES-128-CFB; TPM2_ALG_NULL for unrestricted keys.
  TPM2_ALG_ID symmetric = TPM2_ALG_AES;
  uint16_t sym_bits = 128;
};

// A TPM2B_PUBLIC for an OpenSSL RSA or EC public key. The RSA exponent is written out
// (65537, not 0) because that is what tpm2_loadexternal does, and the Name hashes it.
Result<TPM2B_PUBLIC> PublicFromEvp(const EVP_PKEY* key, const PublicTemplate& tmpl);

// The MA storage key public: restricted|decrypt|userWithAuth, AES-128-CFB, scheme NULL,
// nameAlg SHA-256; identical bytes (hence Name) to
// `tpm2_loadexternal -G rsa -a "restricted|decrypt|userwithauth" -u ma.pem`.
Result<TPM2B_PUBLIC> MaStoragePublic(const EVP_PKEY* key);

// AK: fixedTPM|fixedParent|sensitiveDataOrigin|restricted|sign set, decrypt clear.
Status CheckAkAttributes(const TPMT_PUBLIC& ak);
// Storage parent: RSA or ECC, restricted|decrypt set, sign clear, AES-CFB symmetric
// (any AES key size), nameAlg a supported hash.
Status CheckStorageParent(const TPMT_PUBLIC& parent);

// The key's algorithm as people name it: "RSA 2048", "ECC NIST P-256"; anything else by its
// TPM algorithm or curve id ("ECC curve 0x0020", "algorithm 0x0008").
std::string KeyAlgorithmText(const TPMT_PUBLIC& key);

}  // namespace tpmma::tpm
