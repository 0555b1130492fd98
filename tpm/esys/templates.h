// SPDX-License-Identifier: GPL-2.0-or-later
// Public-area templates for every key lms creates. Kept apart from the ESAPI calls so that
// the MA side and tests can rebuild the exact bytes (hence Names) a client will produce.
#pragma once

#include <tss2/tss2_tpm2_types.h>

#include "common/bytes.h"
#include "common/status.h"
#include "tpm/policy.h"

namespace tpmma::esys {

enum class KeyAlg { kRsa2048, kEccP256 };

// Kinds of keys lms keeps under its MRK.
enum class ChildType {
  kEccSign,     // ECC P-256, ECDSA-SHA256
  kRsaSign,     // RSA-2048, RSASSA-PKCS1-v1_5-SHA256
  kRsaDecrypt,  // RSA-2048, OAEP-SHA256
  kSealed,      // keyed-hash object holding caller data (at most 128 bytes)
  // Keys for applications (OpenSSL, PKCS#11, SSH): no scheme in the key, so the application
  // picks one per operation (TLS 1.3 wants RSA-PSS, ssh wants PKCS#1 v1.5, tpm2_ptool link
  // refuses a fixed scheme).
  kEccApp,  // ECC P-256, sign
  kRsaApp,  // RSA-2048, sign and decrypt (ssh's CKM_RSA_PKCS is done as TPM2_RSA_Decrypt)
};

const char* KeyAlgName(KeyAlg alg);
const char* ChildTypeName(ChildType type);

inline constexpr TPMA_OBJECT kSrkAttributes =
    TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT | TPMA_OBJECT_SENSITIVEDATAORIGIN |
    TPMA_OBJECT_USERWITHAUTH | TPMA_OBJECT_NODA | TPMA_OBJECT_RESTRICTED | TPMA_OBJECT_DECRYPT;

// docs/protocol.md, "Keys on the platform": duplicable (fixedTPM and fixedParent clear), only
// through its authPolicy, and only with an inner wrapper (encryptedDuplication) so the MA alone
// cannot open it.
inline constexpr TPMA_OBJECT kMrkAttributes =
    TPMA_OBJECT_USERWITHAUTH | TPMA_OBJECT_SENSITIVEDATAORIGIN | TPMA_OBJECT_RESTRICTED |
    TPMA_OBJECT_DECRYPT | TPMA_OBJECT_ENCRYPTEDDUPLICATION | TPMA_OBJECT_NODA;

inline constexpr TPMA_OBJECT kAkAttributes =
    TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT | TPMA_OBJECT_SENSITIVEDATAORIGIN |
    TPMA_OBJECT_USERWITHAUTH | TPMA_OBJECT_RESTRICTED | TPMA_OBJECT_SIGN_ENCRYPT;

// PolicySecret(TPM_RH_ENDORSEMENT), the authPolicy of the TCG default EK templates.
inline constexpr uint8_t kEkPolicy[32] = {
    0x83, 0x71, 0x97, 0x67, 0x44, 0x84, 0xb3, 0xf8, 0x1a, 0x90, 0xcc, 0x8d, 0x46, 0xa5, 0xd7, 0x24,
    0xfd, 0x52, 0xd7, 0x6e, 0x06, 0x52, 0x0b, 0x64, 0xf2, 0xa1, 0xda, 0x1b, 0x33, 0x14, 0x69, 0xaa};

// Storage primary as `tpm2_createprimary -C o -G rsa2048:aes128cfb|ecc256:aes128cfb
// -a fixedtpm|fixedparent|sensitivedataorigin|userwithauth|noda|restricted|decrypt`.
TPM2B_PUBLIC SrkTemplate(KeyAlg alg);

// TCG EK Credential Profile template L-1 (RSA-2048), as `tpm2_createek -G rsa`: the TPM
// derives the same key every time, the one the EK certificate certifies.
TPM2B_PUBLIC EkRsaTemplate();

// Restricted signing key as `tpm2_createak -G rsa -s rsassa -g sha256` / `-G ecc -s ecdsa`.
TPM2B_PUBLIC AkTemplate(KeyAlg alg);

// MRK: storage key with kMrkAttributes and the given authPolicy.
TPM2B_PUBLIC MrkTemplate(KeyAlg alg, const TPM2B_DIGEST& policy);

// Child of an MRK: fixedParent set, fixedTPM clear, encryptedDuplication as the MRK's
// (the TPM refuses anything else under a parent that is not fixedTPM).
TPM2B_PUBLIC ChildTemplate(ChildType type, bool encrypted_duplication);

// The MRK's authPolicy: tpm::DuplicationSelectPolicy (tpm/policy.h), under the name lms
// has always called it by.
inline Result<TPM2B_DIGEST> DuplicationSelectPolicy(ByteView new_parent_name) {
  return tpm::DuplicationSelectPolicy(new_parent_name);
}

}  // namespace tpmma::esys
