// SPDX-License-Identifier: GPL-2.0-or-later
#include "client/lms/restore_apps.h"

#include "client/lms/app_data.h"
#include "client/lms/mrk_handle.h"
#include "client/lms/pkcs11_token.h"

namespace tpmma::lms {

Result<uint32_t> ChooseMrkHandle(Lms& lms, const StoreState* state,
                                 const schema::MigrationPackage& model, ByteView mrk_name) {
  uint32_t handle = state != nullptr ? state->mrk_handle : 0;
  if (handle == 0) {
    auto recorded = MrkHandleOf(model.mrk.application_data);
    if (!recorded) return Error(recorded.error());
    handle = *recorded;
  }
  if (handle == 0) return 0u;
  TPMMA_ASSIGN_OR_RETURN(esys::Tpm * tpm, lms.OpenForMa());
  Status free = CheckMrkHandleFree(*tpm, handle, mrk_name);
  if (!free.ok()) {
    return Error(free.WithContext(
        "the restored MRK must go back to " + HandleText(handle) +
        ", where this store's key files (TSS2 PEMs, the PKCS#11 token) look for it; nothing "
        "was changed"));
  }
  return handle;
}

Status PersistRestoredMrk(Lms& lms, const TPM2B_PUBLIC& mrk_public,
                          const TPM2B_PRIVATE& mrk_private, ByteView mrk_name, uint32_t handle) {
  if (handle == 0) return Status::Ok();
  TPMMA_ASSIGN_OR_RETURN(esys::Tpm * tpm, lms.OpenForMa());
  lms.Progress("making the MRK persistent at " + HandleText(handle) + " for applications");
  esys::KeyBlob blob{.public_area = mrk_public, .private_area = mrk_private};
  TPMMA_ASSIGN_OR_RETURN(esys::Object mrk, tpm->Load(lms.current_srk(), blob));
  return PersistMrk(*tpm, mrk, mrk_name, handle);
}

void RestoreKeyAppData(const schema::ChildKey& from, KeyRecord& to) {
  Bytes cert = CertificateOf(from.application_data);
  if (!cert.empty()) to.certificate = std::move(cert);
}

Status RestorePkcs11Store(KeyStore& store, const schema::MigrationPackage& model) {
  TPMMA_ASSIGN_OR_RETURN(std::optional<Bytes> packed, Pkcs11StoreOf(model.mrk.application_data));
  if (!packed) return Status::Ok();
  TPMMA_ASSIGN_OR_RETURN(std::optional<Bytes> existing, ReadPkcs11Db(store));
  if (existing) return Status::Ok();
  return WritePkcs11Db(store, *packed);
}

}  // namespace tpmma::lms
