// SPDX-License-Identifier: GPL-2.0-or-later
#include "server/ma_key_tpm.h"

#include <mutex>

#include "common/openssl.h"
#include "server/key_files.h"
#include "tpm/esys/esys.h"
#include "tpm/marshal.h"
#include "tpm/public.h"

namespace tpmma::server {
namespace {

class TpmMaKey final : public MaKeyCustody {
 public:
  TpmMaKey(std::string key_id, std::unique_ptr<esys::Tpm> tpm, esys::Object key, Bytes pub_bytes,
           Bytes name, Bytes cert)
      : key_id_(std::move(key_id)),
        tpm_(std::move(tpm)),
        key_(std::move(key)),
        public_bytes_(std::move(pub_bytes)),
        name_(std::move(name)),
        cert_(std::move(cert)) {}

  const std::string& key_id() const override { return key_id_; }
  const Bytes& public_bytes() const override { return public_bytes_; }
  const TPM2B_PUBLIC& public_area() const override { return key_.public_area(); }
  const Bytes& name() const override { return name_; }
  const Bytes& certificate_der() const override { return cert_; }

  Result<tpm::Rewrapped> Rewrap(const TPM2B_PUBLIC& object_public, const TPM2B_PRIVATE& duplicate,
                                const TPM2B_ENCRYPTED_SECRET& encrypted_seed,
                                const TPM2B_PUBLIC& new_parent) override {
    // The same refusal the software path gives, before the TPM sees anything.
    TPMMA_RETURN_IF_ERROR(tpm::CheckStorageParent(new_parent.publicArea));
    TPMMA_ASSIGN_OR_RETURN(Bytes object_name, tpm::ComputeName(object_public.publicArea));
    std::lock_guard<std::mutex> lock(mu_);  // one ESAPI context, one command at a time
    TPMMA_ASSIGN_OR_RETURN(esys::Object parent, tpm_->LoadExternal(new_parent));
    return tpm_->Rewrap(key_, parent, duplicate, object_name, encrypted_seed);
  }

 private:
  std::string key_id_;
  std::unique_ptr<esys::Tpm> tpm_;
  esys::Object key_;
  Bytes public_bytes_;
  Bytes name_;
  Bytes cert_;
  std::mutex mu_;
};

}  // namespace

Result<std::unique_ptr<MaKeyCustody>> LoadTpmMaKey(const TpmMaKeyOptions& o, Env* env) {
  TPMMA_ASSIGN_OR_RETURN(esys::KeyBlob blob,
                         ReadTpmKeyBlob(o.public_path, o.private_path, "MA", env));
  // Only a storage key can be the old parent of TPM2_Rewrap; say so before the TPM does.
  TPMMA_RETURN_IF_ERROR(tpm::CheckStorageParent(blob.public_area.publicArea)
                            .WithContext("MA TPM key " + o.public_path));
  TPMMA_ASSIGN_OR_RETURN(EvpPkeyPtr tpm_key, tpm::PublicToEvp(blob.public_area.publicArea));
  TPMMA_ASSIGN_OR_RETURN(
      Bytes der, ReadCertificateFor(o.certificate_path, tpm_key.get(), o.public_path, "MA", env));
  TPMMA_ASSIGN_OR_RETURN(LoadedTpmKey loaded, LoadTpmKey(o.tcti, o.parent_handle, blob, "MA"));
  // GetMAKey publishes exactly these bytes; clients bind MRK policies to their Name.
  TPMMA_ASSIGN_OR_RETURN(Bytes canonical, tpm::Marshal(blob.public_area));
  Bytes name = loaded.key.name();
  return std::make_unique<TpmMaKey>(o.key_id, std::move(loaded.tpm), std::move(loaded.key),
                                    std::move(canonical), std::move(name), std::move(der));
}

}  // namespace tpmma::server
