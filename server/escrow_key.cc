// SPDX-License-Identifier: GPL-2.0-or-later
#include "server/escrow_key.h"

#include "common/openssl.h"
#include "server/key_files.h"
#include "tpm/escrow.h"
#include "tpm/marshal.h"
#include "tpm/public.h"

namespace tpmma::server {
namespace {

struct Published {
  Bytes public_bytes;
  Bytes name_tpm2b;
  Bytes certificate;
};

Result<Published> Publish(const TPM2B_PUBLIC& pub, Bytes certificate) {
  Published p;
  TPMMA_ASSIGN_OR_RETURN(p.public_bytes, tpm::Marshal(pub));
  TPMMA_ASSIGN_OR_RETURN(TPM2B_NAME name, tpm::ComputeTpm2bName(pub.publicArea));
  TPMMA_ASSIGN_OR_RETURN(p.name_tpm2b, tpm::Marshal(name));
  p.certificate = std::move(certificate);
  return p;
}

class PublishedEscrowKey : public EscrowKeyCustody {
 public:
  PublishedEscrowKey(std::string key_id, Published p)
      : key_id_(std::move(key_id)), published_(std::move(p)) {}
  const std::string& key_id() const override { return key_id_; }
  const Bytes& public_bytes() const override { return published_.public_bytes; }
  const Bytes& name_tpm2b() const override { return published_.name_tpm2b; }
  const Bytes& certificate_der() const override { return published_.certificate; }

 private:
  std::string key_id_;
  Published published_;
};

class SoftwareEscrowKey final : public PublishedEscrowKey {
 public:
  SoftwareEscrowKey(std::string key_id, Published p, EvpPkeyPtr key)
      : PublishedEscrowKey(std::move(key_id), std::move(p)), key_(std::move(key)) {}
  // EVP_PKEY decryption is thread-safe for a fully built key.
  Result<SecureBytes> Decrypt(ByteView ciphertext) override {
    return tpm::EscrowDecrypt(key_.get(), ciphertext);
  }

 private:
  EvpPkeyPtr key_;
};

class TpmEscrowKey final : public PublishedEscrowKey {
 public:
  TpmEscrowKey(std::string key_id, Published p, std::unique_ptr<TpmKeySlot> slot)
      : PublishedEscrowKey(std::move(key_id), std::move(p)), slot_(std::move(slot)) {}
  Result<SecureBytes> Decrypt(ByteView ciphertext) override {
    SecureBytes plain;
    Status s = slot_->Run([&](esys::Tpm& tpm, const esys::Object& key) -> Status {
      TPMMA_ASSIGN_OR_RETURN(plain, tpm.RsaDecryptOaep(key, ciphertext, tpm::EscrowOaepLabel()));
      return Status::Ok();
    });
    if (s.code() == Code::kUnavailable) return Error(s);
    // The same answer as the software custody: which check failed is not the caller's business.
    if (!s.ok()) {
      return Error(Code::kIntegrityFailure,
                   "escrowed inner key does not decrypt with the escrow key");
    }
    return plain;
  }

 private:
  std::unique_ptr<TpmKeySlot> slot_;
};

}  // namespace

Result<std::unique_ptr<EscrowKeyCustody>> LoadSoftwareEscrowKey(const std::string& key_id,
                                                                const std::string& private_key_path,
                                                                const std::string& certificate_path,
                                                                Env* env) {
  TPMMA_ASSIGN_OR_RETURN(EvpPkeyPtr key, ReadPrivateKeyFile(private_key_path, "escrow", env));
  if (EVP_PKEY_get_base_id(key.get()) != EVP_PKEY_RSA || EVP_PKEY_get_bits(key.get()) < 2048) {
    return Error(Code::kUnsupported,
                 "escrow private key " + private_key_path + " must be RSA, 2048 bits or more");
  }
  TPMMA_ASSIGN_OR_RETURN(
      Bytes der, ReadCertificateFor(certificate_path, key.get(), private_key_path, "escrow", env));
  TPMMA_ASSIGN_OR_RETURN(TPM2B_PUBLIC pub, tpm::EscrowPublicFromEvp(key.get()));
  TPMMA_ASSIGN_OR_RETURN(Published p, Publish(pub, std::move(der)));
  return std::make_unique<SoftwareEscrowKey>(key_id, std::move(p), std::move(key));
}

Result<std::unique_ptr<EscrowKeyCustody>> LoadTpmEscrowKey(const TpmEscrowKeyOptions& o, Env* env) {
  TPMMA_ASSIGN_OR_RETURN(esys::KeyBlob blob,
                         ReadTpmKeyBlob(o.public_path, o.private_path, "escrow", env));
  TPMMA_RETURN_IF_ERROR(tpm::CheckEscrowKey(blob.public_area.publicArea)
                            .WithContext("escrow TPM key " + o.public_path));
  TPMMA_ASSIGN_OR_RETURN(EvpPkeyPtr tpm_key, tpm::PublicToEvp(blob.public_area.publicArea));
  TPMMA_ASSIGN_OR_RETURN(Bytes der, ReadCertificateFor(o.certificate_path, tpm_key.get(),
                                                       o.public_path, "escrow", env));
  TPMMA_ASSIGN_OR_RETURN(Published p, Publish(blob.public_area, std::move(der)));
  TPMMA_ASSIGN_OR_RETURN(std::unique_ptr<TpmKeySlot> slot,
                         TpmKeySlot::Load(o.tcti, o.parent_handle, std::move(blob), "escrow"));
  return std::make_unique<TpmEscrowKey>(o.key_id, std::move(p), std::move(slot));
}

Result<std::unique_ptr<EscrowKeyCustody>> LoadEscrowKey(const TpmKeyConfig& k, Env* env) {
  auto key = k.custody == "tpm"
                 ? LoadTpmEscrowKey({.key_id = k.key_id,
                                     .tcti = k.tpm_tcti,
                                     .parent_handle = k.tpm_parent,
                                     .public_path = k.tpm_public,
                                     .private_path = k.tpm_private,
                                     .certificate_path = k.certificate},
                                    env)
                 : LoadSoftwareEscrowKey(k.key_id, k.private_key, k.certificate, env);
  if (!key) {
    return Error(key.error().WithContext(
        "escrow key " + k.key_id +
        (k.custody == "tpm" ? " (tpm_*: TPM-resident)" : " (private_key/certificate)")));
  }
  return key;
}

}  // namespace tpmma::server
