// SPDX-License-Identifier: GPL-2.0-or-later
#include "server/ma_key.h"

#include <sys/stat.h>

#include <openssl/pem.h>
#include <openssl/sha.h>

#include "common/openssl.h"
#include "tpm/marshal.h"
#include "tpm/public.h"

namespace tpmma::server {
namespace {

constexpr size_t kMaxPemBytes = 64 * 1024;

class SoftwareMaKey final : public MaKeyCustody {
 public:
  SoftwareMaKey(std::string key_id, EvpPkeyPtr key, TPM2B_PUBLIC pub, Bytes pub_bytes, Bytes name,
                Bytes cert)
      : key_id_(std::move(key_id)),
        key_(std::move(key)),
        public_(pub),
        public_bytes_(std::move(pub_bytes)),
        name_(std::move(name)),
        cert_(std::move(cert)) {}

  const std::string& key_id() const override { return key_id_; }
  const Bytes& public_bytes() const override { return public_bytes_; }
  const TPM2B_PUBLIC& public_area() const override { return public_; }
  const Bytes& name() const override { return name_; }
  const Bytes& certificate_der() const override { return cert_; }

  Result<tpm::Rewrapped> Rewrap(const TPM2B_PUBLIC& object_public, const TPM2B_PRIVATE& duplicate,
                                const TPM2B_ENCRYPTED_SECRET& encrypted_seed,
                                const TPM2B_PUBLIC& new_parent) override {
    // EVP_PKEY decryption is thread-safe for a fully built key, so no lock is needed.
    return tpm::Rewrap(key_.get(), public_.publicArea, object_public, duplicate, encrypted_seed,
                       new_parent);
  }

 private:
  std::string key_id_;
  EvpPkeyPtr key_;
  TPM2B_PUBLIC public_;
  Bytes public_bytes_;
  Bytes name_;
  Bytes cert_;
};

// Refuses a key file that anyone but its owner could read: the MA key opens every
// package's outer wrapper, so a world-readable copy is a configuration error, not a warning.
Status CheckKeyFileMode(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    return Status(Code::kIoError, "cannot stat MA private key " + path);
  }
  if ((st.st_mode & 077) != 0) {
    char mode[8];
    std::snprintf(mode, sizeof(mode), "%04o", static_cast<unsigned>(st.st_mode & 07777));
    return Status(Code::kPermissionDenied, "MA private key " + path +
                                               " is accessible by group or others (mode " + mode +
                                               "); run: chmod 600 " + path);
  }
  return Status::Ok();
}

}  // namespace

Result<std::unique_ptr<MaKeyCustody>> LoadSoftwareMaKey(const std::string& key_id,
                                                        const std::string& private_key_path,
                                                        const std::string& certificate_path,
                                                        Env* env) {
  TPMMA_RETURN_IF_ERROR(CheckKeyFileMode(private_key_path));
  EvpPkeyPtr key;
  {
    TPMMA_ASSIGN_OR_RETURN(Bytes pem_plain, env->ReadFile(private_key_path, kMaxPemBytes));
    SecureBytes pem(pem_plain.begin(), pem_plain.end());
    Wipe(pem_plain.data(), pem_plain.size());
    BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
    if (!bio) return Error(OpensslError("BIO_new_mem_buf"));
    key.reset(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
    if (!key) {
      return Error(Code::kInvalidArgument,
                   "MA private key " + private_key_path + " is not an unencrypted PEM private key");
    }
  }
  if (EVP_PKEY_get_base_id(key.get()) != EVP_PKEY_RSA || EVP_PKEY_get_bits(key.get()) != 2048) {
    return Error(Code::kUnsupported, "MA private key " + private_key_path + " must be RSA-2048");
  }
  TPMMA_ASSIGN_OR_RETURN(Bytes cert_pem, env->ReadFile(certificate_path, kMaxPemBytes));
  BioPtr cbio(BIO_new_mem_buf(cert_pem.data(), static_cast<int>(cert_pem.size())));
  if (!cbio) return Error(OpensslError("BIO_new_mem_buf"));
  X509Ptr cert(PEM_read_bio_X509(cbio.get(), nullptr, nullptr, nullptr));
  if (!cert) {
    return Error(Code::kInvalidArgument,
                 "MA certificate " + certificate_path + " is not a PEM X.509 certificate");
  }
  if (EVP_PKEY_eq(X509_get0_pubkey(cert.get()), key.get()) != 1) {
    return Error(Code::kInvalidArgument, "MA certificate " + certificate_path +
                                             " does not certify the key in " + private_key_path);
  }
  int der_len = i2d_X509(cert.get(), nullptr);
  if (der_len <= 0) return Error(OpensslError("i2d_X509"));
  Bytes der(static_cast<size_t>(der_len));
  unsigned char* p = der.data();
  if (i2d_X509(cert.get(), &p) != der_len) return Error(OpensslError("i2d_X509"));

  TPMMA_ASSIGN_OR_RETURN(TPM2B_PUBLIC pub, tpm::MaStoragePublic(key.get()));
  TPMMA_ASSIGN_OR_RETURN(Bytes pub_bytes, tpm::Marshal(pub));
  TPMMA_ASSIGN_OR_RETURN(Bytes name, tpm::ComputeName(pub.publicArea));
  return std::make_unique<SoftwareMaKey>(key_id, std::move(key), pub, std::move(pub_bytes),
                                         std::move(name), std::move(der));
}

Result<Bytes> DuplicationSelectPolicyDigest(ByteView ma_name) {
  if (ma_name.size() < 2) return Error(Code::kInvalidArgument, "MA Name too short");
  Bytes data(SHA256_DIGEST_LENGTH, 0);  // policyDigest of a fresh session
  const uint32_t cc = TPM2_CC_PolicyDuplicationSelect;
  for (int shift = 24; shift >= 0; shift -= 8) data.push_back(static_cast<uint8_t>(cc >> shift));
  data.insert(data.end(), ma_name.begin(), ma_name.end());
  data.push_back(0x00);  // includeObject = NO
  Bytes digest(SHA256_DIGEST_LENGTH);
  if (SHA256(data.data(), data.size(), digest.data()) == nullptr) {
    return Error(OpensslError("SHA256"));
  }
  return digest;
}

}  // namespace tpmma::server
