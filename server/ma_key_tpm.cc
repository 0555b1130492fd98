// SPDX-License-Identifier: GPL-2.0-or-later
#include "server/ma_key_tpm.h"

#include "common/openssl.h"
#include "server/key_files.h"
#include "tpm/esys/esys.h"
#include "tpm/marshal.h"
#include "tpm/public.h"

namespace tpmma::server {
namespace {

class TpmMaKey final : public MaKeyCustody {
 public:
  TpmMaKey(std::string key_id, std::unique_ptr<TpmKeySlot> slot, TPM2B_PUBLIC public_area,
           Bytes pub_bytes, Bytes cert)
      : key_id_(std::move(key_id)),
        slot_(std::move(slot)),
        public_area_(public_area),
        public_bytes_(std::move(pub_bytes)),
        cert_(std::move(cert)) {}

  const std::string& key_id() const override { return key_id_; }
  const Bytes& public_bytes() const override { return public_bytes_; }
  const TPM2B_PUBLIC& public_area() const override { return public_area_; }
  const Bytes& name() const override { return slot_->name(); }
  const Bytes& certificate_der() const override { return cert_; }

  Result<tpm::Rewrapped> Rewrap(const TPM2B_PUBLIC& object_public, const TPM2B_PRIVATE& duplicate,
                                const TPM2B_ENCRYPTED_SECRET& encrypted_seed,
                                const TPM2B_PUBLIC& new_parent) override {
    // The same refusal the software path gives, before the TPM sees anything.
    TPMMA_RETURN_IF_ERROR(tpm::CheckStorageParent(new_parent.publicArea));
    TPMMA_ASSIGN_OR_RETURN(Bytes object_name, tpm::ComputeName(object_public.publicArea));
    tpm::Rewrapped out;
    // Rewrap is stateless in the TPM: running it again after a reload is safe.
    TPMMA_RETURN_IF_ERROR(slot_->Run([&](esys::Tpm& tpm, const esys::Object& key) -> Status {
      TPMMA_ASSIGN_OR_RETURN(esys::Object parent, tpm.LoadExternal(new_parent));
      TPMMA_ASSIGN_OR_RETURN(out, tpm.Rewrap(key, parent, duplicate, object_name, encrypted_seed));
      return Status::Ok();
    }));
    return out;
  }

 private:
  std::string key_id_;
  std::unique_ptr<TpmKeySlot> slot_;
  TPM2B_PUBLIC public_area_;
  Bytes public_bytes_;
  Bytes cert_;
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
  // GetMAKey publishes exactly these bytes; clients bind MRK policies to their Name.
  TPMMA_ASSIGN_OR_RETURN(Bytes canonical, tpm::Marshal(blob.public_area));
  const TPM2B_PUBLIC public_area = blob.public_area;
  TPMMA_ASSIGN_OR_RETURN(std::unique_ptr<TpmKeySlot> slot,
                         TpmKeySlot::Load(o.tcti, o.parent_handle, std::move(blob), "MA"));
  return std::make_unique<TpmMaKey>(o.key_id, std::move(slot), public_area, std::move(canonical),
                                    std::move(der));
}

}  // namespace tpmma::server
