// SPDX-License-Identifier: GPL-2.0-or-later
#include "server/ma_key.h"

#include "common/openssl.h"
#include "server/key_files.h"
#include "tpm/marshal.h"
#include "tpm/policy.h"
#include "tpm/public.h"

namespace tpmma::server {
namespace {

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

}  // namespace

Result<std::unique_ptr<MaKeyCustody>> LoadSoftwareMaKey(const std::string& key_id,
                                                        const std::string& private_key_path,
                                                        const std::string& certificate_path,
                                                        Env* env) {
  TPMMA_ASSIGN_OR_RETURN(EvpPkeyPtr key, ReadPrivateKeyFile(private_key_path, "MA", env));
  if (EVP_PKEY_get_base_id(key.get()) != EVP_PKEY_RSA || EVP_PKEY_get_bits(key.get()) != 2048) {
    return Error(Code::kUnsupported, "MA private key " + private_key_path + " must be RSA-2048");
  }
  TPMMA_ASSIGN_OR_RETURN(
      Bytes der, ReadCertificateFor(certificate_path, key.get(), private_key_path, "MA", env));
  TPMMA_ASSIGN_OR_RETURN(TPM2B_PUBLIC pub, tpm::MaStoragePublic(key.get()));
  TPMMA_ASSIGN_OR_RETURN(Bytes pub_bytes, tpm::Marshal(pub));
  TPMMA_ASSIGN_OR_RETURN(Bytes name, tpm::ComputeName(pub.publicArea));
  return std::make_unique<SoftwareMaKey>(key_id, std::move(key), pub, std::move(pub_bytes),
                                         std::move(name), std::move(der));
}

Result<Bytes> DuplicationSelectPolicyDigest(ByteView ma_name) {
  TPMMA_ASSIGN_OR_RETURN(TPM2B_DIGEST digest, tpm::DuplicationSelectPolicy(ma_name));
  return Bytes(digest.buffer, digest.buffer + digest.size);
}

}  // namespace tpmma::server
