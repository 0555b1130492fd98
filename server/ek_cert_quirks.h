// SPDX-License-Identifier: GPL-2.0-or-later
// What the MA tolerates in real EK certificates, and what it refuses (issue 12). The rule:
// an encoding is accepted when the issuer's signature can still be verified over the bytes
// of the certificate AS ISSUED; never over a re-encoding. A quirk that keeps OpenSSL from
// reading the certificate at all is tolerated only where a canonical copy can be made for
// reading its fields while the signature is checked over the original TBS bytes.
//
// | Quirk                                    | Source                          | Decision |
// |------------------------------------------|---------------------------------|----------|
// | NV padding (0x00 / 0xFF) after the DER   | NV index larger than the cert   | accepted: trimmed (ek_identity.h) |
// | critical SubjectAltName, directoryName   | TCG EK Credential Profile 2.x:  | accepted: OpenSSL reads it; the     |
// | of TCG attributes 2.23.133.2.1 (manu-    | the TPM's identity is in the    | signature is over the issued bytes  |
// | facturer), .2 (model), .3 (version)      | SAN, the subject is empty       |                                     |
// | empty subject                            | TCG EK Credential Profile 2.x   | accepted: shown "(empty subject)"   |
// | a multi-valued RDN whose SET is not in   | Nuvoton (keylime issues 944,    | accepted: OpenSSL reads it, keeps   |
// | DER order (CN, O, C in one SET in the    | 1775: python-cryptography       | the issued TBS for the signature    |
// | issuer of the EK cert and the subject of | "InvalidSetOrdering" at         | and matches names canonically; a    |
// | its CA)                                  | TbsCertificate::issuer)         | re-encoded (sorted) copy would not  |
// |                                          |                                 | verify, so nothing is re-encoded    |
// | serial number INTEGER with leading zero  | EK certificates of several TPM  | tolerated: OpenSSL 3 refuses it     |
// | bytes (not minimal)                      | vendors (fixed-width serials)   | ("illegal padding"); a copy with    |
// |                                          |                                 | the minimal serial is read, the     |
// |                                          |                                 | issuer's signature is verified over |
// |                                          |                                 | the TBS as issued, the chain to a   |
// |                                          |                                 | trusted root is verified in full    |
// | any other encoding OpenSSL cannot read   |                                 | refused, naming OpenSSL's reason    |
// | indefinite length, bytes after the cert  |                                 | refused (ek_identity.h)             |
// | a re-encoded EK certificate signed with  | (RSA-PSS, EdDSA)                | refused: only digest+RSA/ECDSA      |
// | an algorithm without a plain digest      |                                 | signatures are checked by hand      |
// | an intermediate that needs re-encoding   |                                 | refused: only the EK certificate    |
#pragma once

#include <string>
#include <string_view>

#include <openssl/x509.h>

#include "common/bytes.h"
#include "common/openssl.h"
#include "common/status.h"

namespace tpmma::server {

// An EK certificate as the MA reads it.
struct EkCertificate {
  // For reading fields. When issued_tbs is empty it is the certificate as issued (OpenSSL
  // keeps the issued TBS encoding for the signature check); otherwise a canonical copy whose
  // own signature does not verify.
  X509Ptr cert;
  Bytes issued_tbs;   // the TBSCertificate as issued; only when `cert` is a copy
  std::string quirk;  // what was tolerated, in plain words ("" when nothing was)
};

// `der`: one DER certificate (padding already trimmed). kMalformed, naming `what` and the
// quirk, when it is refused.
Result<EkCertificate> ParseEkCertificate(ByteView der, std::string_view what);

// The issuer's signature over cert.issued_tbs (for a copy) with `issuer_key`.
// kUnauthenticated when it does not verify; kUnsupported for a signature algorithm that has
// no plain digest (RSA-PSS, EdDSA) on a copy.
Status VerifyIssuedSignature(const EkCertificate& cert, EVP_PKEY* issuer_key);

}  // namespace tpmma::server
