// SPDX-License-Identifier: GPL-2.0-or-later
// The small X.509 toolkit ma-admin needs: generate keys, issue certificates from the MA
// CA, write and read PEM. OpenSSL does all the work; this only fixes our profiles.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/bytes.h"
#include "common/openssl.h"
#include "common/status.h"

namespace tpmma::server {

enum class KeyType { kRsa2048, kEcP256 };

Result<EvpPkeyPtr> GenerateKey(KeyType type);

enum class CertProfile {
  kCa,         // basicConstraints CA:TRUE, keyCertSign|cRLSign
  kTlsServer,  // serverAuth, digitalSignature(|keyEncipherment for RSA), SANs
  kTlsClient,  // clientAuth (operators, issue #5)
  kMaStorage,  // keyEncipherment: the key packages are duplicated to
};

struct CertRequest {
  std::string common_name;
  CertProfile profile = CertProfile::kTlsServer;
  std::vector<std::string> dns_names;     // subjectAltName DNS:
  std::vector<std::string> ip_addresses;  // subjectAltName IP:
  int valid_days = 825;
};

// Issues a certificate for `subject_key`, signed by `issuer_key` under `issuer_cert`;
// a null issuer_cert makes it self-signed (the CA).
Result<X509Ptr> IssueCertificate(const CertRequest& req, EVP_PKEY* subject_key,
                                 EVP_PKEY* issuer_key, X509* issuer_cert);

Result<SecureString> PrivateKeyToPem(EVP_PKEY* key);
Result<std::string> CertificateToPem(X509* cert);
Result<Bytes> CertificateToDer(X509* cert);
Result<EvpPkeyPtr> PrivateKeyFromPem(ByteView pem);
Result<X509Ptr> CertificateFromPem(ByteView pem);

// SHA-256 of the DER certificate, lower-case hex (operator identities, log lines).
Result<std::string> CertificateFingerprint(X509* cert);

}  // namespace tpmma::server
