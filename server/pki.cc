// SPDX-License-Identifier: GPL-2.0-or-later
#include "server/pki.h"

#include <string_view>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

namespace tpmma::server {
namespace {

using Asn1IntegerPtr =
    std::unique_ptr<ASN1_INTEGER, OpensslDeleter<ASN1_INTEGER, ASN1_INTEGER_free>>;
using X509ExtPtr =
    std::unique_ptr<X509_EXTENSION, OpensslDeleter<X509_EXTENSION, X509_EXTENSION_free>>;

Status AddExtension(X509* cert, X509* issuer, int nid, const std::string& value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  X509ExtPtr ext(X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str()));
  if (!ext || X509_add_ext(cert, ext.get(), -1) != 1) {
    return OpensslError("X509 extension " + std::string(OBJ_nid2sn(nid)));
  }
  return Status::Ok();
}

// Appends only: `const char* + std::string&&` is an insert at the front, which GCC 12
// inlines into a false -Werror=restrict at -O2/-O3 (GCC bug 105329).
std::string JoinSans(const CertRequest& req) {
  std::string out;
  auto add = [&out](std::string_view kind, const std::string& value) {
    if (!out.empty()) out += ',';
    out += kind;
    out += value;
  };
  for (const auto& d : req.dns_names) add("DNS:", d);
  for (const auto& ip : req.ip_addresses) add("IP:", ip);
  return out;
}

Result<std::string> BioToString(BIO* bio) {
  char* data = nullptr;
  long len = BIO_get_mem_data(bio, &data);  // NOLINT: OpenSSL's type
  if (len < 0) return Error(OpensslError("BIO_get_mem_data"));
  return std::string(data, static_cast<size_t>(len));
}

}  // namespace

Result<EvpPkeyPtr> GenerateKey(KeyType type) {
  EVP_PKEY* key = type == KeyType::kRsa2048
                      ? EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", static_cast<size_t>(2048))
                      : EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256");
  if (key == nullptr) return Error(OpensslError("EVP_PKEY_Q_keygen"));
  return EvpPkeyPtr(key);
}

Result<X509Ptr> IssueCertificate(const CertRequest& req, EVP_PKEY* subject_key,
                                 EVP_PKEY* issuer_key, X509* issuer_cert) {
  X509Ptr cert(X509_new());
  if (!cert) return Error(OpensslError("X509_new"));
  // 159-bit random serial: unique without a serial database, positive in DER.
  uint8_t serial_bytes[20];
  if (RAND_bytes(serial_bytes, sizeof serial_bytes) != 1) return Error(OpensslError("RAND_bytes"));
  serial_bytes[0] &= 0x7f;
  BignumPtr serial_bn(BN_bin2bn(serial_bytes, sizeof serial_bytes, nullptr));
  Asn1IntegerPtr serial(serial_bn ? BN_to_ASN1_INTEGER(serial_bn.get(), nullptr) : nullptr);
  X509_NAME* name = X509_get_subject_name(cert.get());
  if (!serial || X509_set_version(cert.get(), X509_VERSION_3) != 1 ||
      X509_set_serialNumber(cert.get(), serial.get()) != 1 ||
      X509_gmtime_adj(X509_getm_notBefore(cert.get()), -300) == nullptr ||
      X509_gmtime_adj(X509_getm_notAfter(cert.get()), 86400L * req.valid_days) == nullptr ||
      X509_NAME_add_entry_by_txt(name, "O", MBSTRING_UTF8,
                                 reinterpret_cast<const unsigned char*>("tpm-ma"), -1, -1,
                                 0) != 1 ||
      X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                                 reinterpret_cast<const unsigned char*>(req.common_name.c_str()),
                                 -1, -1, 0) != 1 ||
      X509_set_issuer_name(cert.get(), issuer_cert ? X509_get_subject_name(issuer_cert) : name) !=
          1 ||
      X509_set_pubkey(cert.get(), subject_key) != 1) {
    return Error(OpensslError("building certificate " + req.common_name));
  }
  X509* issuer = issuer_cert ? issuer_cert : cert.get();
  const bool rsa = EVP_PKEY_is_a(subject_key, "RSA") == 1;
  switch (req.profile) {
    case CertProfile::kCa:
      TPMMA_RETURN_IF_ERROR(
          AddExtension(cert.get(), issuer, NID_basic_constraints, "critical,CA:TRUE,pathlen:0"));
      TPMMA_RETURN_IF_ERROR(
          AddExtension(cert.get(), issuer, NID_key_usage, "critical,keyCertSign,cRLSign"));
      break;
    case CertProfile::kTlsServer:
    case CertProfile::kTlsClient:
      TPMMA_RETURN_IF_ERROR(
          AddExtension(cert.get(), issuer, NID_basic_constraints, "critical,CA:FALSE"));
      TPMMA_RETURN_IF_ERROR(AddExtension(
          cert.get(), issuer, NID_key_usage,
          rsa ? "critical,digitalSignature,keyEncipherment" : "critical,digitalSignature"));
      TPMMA_RETURN_IF_ERROR(
          AddExtension(cert.get(), issuer, NID_ext_key_usage,
                       req.profile == CertProfile::kTlsServer ? "serverAuth" : "clientAuth"));
      break;
    case CertProfile::kMaStorage:
      TPMMA_RETURN_IF_ERROR(
          AddExtension(cert.get(), issuer, NID_basic_constraints, "critical,CA:FALSE"));
      TPMMA_RETURN_IF_ERROR(
          AddExtension(cert.get(), issuer, NID_key_usage, "critical,keyEncipherment"));
      break;
  }
  if (std::string sans = JoinSans(req); !sans.empty()) {
    TPMMA_RETURN_IF_ERROR(AddExtension(cert.get(), issuer, NID_subject_alt_name, sans));
  }
  TPMMA_RETURN_IF_ERROR(AddExtension(cert.get(), issuer, NID_subject_key_identifier, "hash"));
  if (issuer_cert != nullptr) {
    TPMMA_RETURN_IF_ERROR(
        AddExtension(cert.get(), issuer, NID_authority_key_identifier, "keyid:always"));
  }
  if (X509_sign(cert.get(), issuer_key, EVP_sha256()) <= 0) {
    return Error(OpensslError("X509_sign " + req.common_name));
  }
  return cert;
}

Result<SecureString> PrivateKeyToPem(EVP_PKEY* key) {
  BioPtr bio(BIO_new(BIO_s_secmem()));
  if (!bio ||
      PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr) != 1) {
    return Error(OpensslError("PEM_write_bio_PrivateKey"));
  }
  char* data = nullptr;
  long len = BIO_get_mem_data(bio.get(), &data);  // NOLINT: OpenSSL's type
  return SecureString(data, static_cast<size_t>(len));
}

Result<std::string> CertificateToPem(X509* cert) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_X509(bio.get(), cert) != 1) {
    return Error(OpensslError("PEM_write_bio_X509"));
  }
  return BioToString(bio.get());
}

Result<Bytes> CertificateToDer(X509* cert) {
  int len = i2d_X509(cert, nullptr);
  if (len <= 0) return Error(OpensslError("i2d_X509"));
  Bytes der(static_cast<size_t>(len));
  unsigned char* p = der.data();
  if (i2d_X509(cert, &p) != len) return Error(OpensslError("i2d_X509"));
  return der;
}

Result<EvpPkeyPtr> PrivateKeyFromPem(ByteView pem) {
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  EvpPkeyPtr key(bio ? PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr) : nullptr);
  if (!key) return Error(OpensslError("PEM_read_bio_PrivateKey"));
  return key;
}

Result<X509Ptr> CertificateFromPem(ByteView pem) {
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  X509Ptr cert(bio ? PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr) : nullptr);
  if (!cert) return Error(OpensslError("PEM_read_bio_X509"));
  return cert;
}

Result<std::string> CertificateFingerprint(X509* cert) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (X509_digest(cert, EVP_sha256(), md, &len) != 1) return Error(OpensslError("X509_digest"));
  return HexEncode(ByteView(md, len));
}

}  // namespace tpmma::server
