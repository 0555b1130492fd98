// SPDX-License-Identifier: GPL-2.0-or-later
#include "server/ma_key_tpm.h"

#include <openssl/pem.h>
#include <openssl/x509.h>

#include <mutex>

#include "client/tpm/esys.h"
#include "common/openssl.h"
#include "tpm/marshal.h"
#include "tpm/public.h"
#include "tpm/tss_error.h"

namespace tpmma::server {
namespace {

constexpr size_t kMaxFile = 64 * 1024;

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
  ~TpmMaKey() override {
    key_.reset();  // flush before the ESAPI context goes
  }

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
    TPMMA_ASSIGN_OR_RETURN(TPM2B_NAME object_name, tpm::ComputeTpm2bName(object_public.publicArea));
    std::lock_guard<std::mutex> lock(mu_);  // one ESAPI context, one command at a time
    TPMMA_ASSIGN_OR_RETURN(esys::Object parent, tpm_->LoadExternal(new_parent));
    TPM2B_PRIVATE* out_dup = nullptr;
    TPM2B_ENCRYPTED_SECRET* out_seed = nullptr;
    TSS2_RC rc =
        Esys_Rewrap(tpm_->context(), key_.handle(), parent.handle(), ESYS_TR_PASSWORD, ESYS_TR_NONE,
                    ESYS_TR_NONE, &duplicate, &object_name, &encrypted_seed, &out_dup, &out_seed);
    esys::EsysPtr<TPM2B_PRIVATE> dup_owner(out_dup);
    esys::EsysPtr<TPM2B_ENCRYPTED_SECRET> seed_owner(out_seed);
    Status st = tpm::CheckRc("Esys_Rewrap", rc);
    // TPM_RC_INTEGRITY (format one, any parameter): the duplicate was not made for this key
    // and object. Same code as the software custody, so callers need not know which ran.
    if (!st.ok() && (rc & 0x80) != 0 && (rc & 0x3f) == (TPM2_RC_INTEGRITY & 0x3f)) {
      return Error(Code::kIntegrityFailure, st.message());
    }
    TPMMA_RETURN_IF_ERROR(st);
    return tpm::Rewrapped{.duplicate = *out_dup, .encrypted_seed = *out_seed};
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
  TPMMA_ASSIGN_OR_RETURN(Bytes pub_bytes, env->ReadFile(o.public_path, kMaxFile));
  TPMMA_ASSIGN_OR_RETURN(Bytes priv_bytes, env->ReadFile(o.private_path, kMaxFile));
  esys::KeyBlob blob;
  {
    auto pub = tpm::Unmarshal<TPM2B_PUBLIC>(pub_bytes);
    if (!pub) return Error(pub.error().WithContext("MA TPM key public " + o.public_path));
    auto priv = tpm::Unmarshal<TPM2B_PRIVATE>(priv_bytes);
    if (!priv) return Error(priv.error().WithContext("MA TPM key private " + o.private_path));
    blob.public_area = *pub;
    blob.private_area = *priv;
  }
  // Only a storage key can be the old parent of TPM2_Rewrap; say so before the TPM does.
  TPMMA_RETURN_IF_ERROR(tpm::CheckStorageParent(blob.public_area.publicArea)
                            .WithContext("MA TPM key " + o.public_path));

  TPMMA_ASSIGN_OR_RETURN(Bytes cert_pem, env->ReadFile(o.certificate_path, kMaxFile));
  BioPtr cbio(BIO_new_mem_buf(cert_pem.data(), static_cast<int>(cert_pem.size())));
  if (!cbio) return Error(OpensslError("BIO_new_mem_buf"));
  X509Ptr cert(PEM_read_bio_X509(cbio.get(), nullptr, nullptr, nullptr));
  if (!cert) {
    return Error(Code::kInvalidArgument,
                 "MA certificate " + o.certificate_path + " is not a PEM X.509 certificate");
  }
  TPMMA_ASSIGN_OR_RETURN(EvpPkeyPtr tpm_key, tpm::PublicToEvp(blob.public_area.publicArea));
  if (EVP_PKEY_eq(X509_get0_pubkey(cert.get()), tpm_key.get()) != 1) {
    return Error(Code::kInvalidArgument, "MA certificate " + o.certificate_path +
                                             " does not certify the key in " + o.public_path);
  }
  int der_len = i2d_X509(cert.get(), nullptr);
  if (der_len <= 0) return Error(OpensslError("i2d_X509"));
  Bytes der(static_cast<size_t>(der_len));
  unsigned char* p = der.data();
  if (i2d_X509(cert.get(), &p) != der_len) return Error(OpensslError("i2d_X509"));

  auto tpm = esys::Tpm::Open(o.tcti);
  if (!tpm) return Error(tpm.error().WithContext("the MA key's TPM (" + o.tcti + ")"));
  TPMMA_ASSIGN_OR_RETURN(esys::Object parent, (*tpm)->FromPersistent(o.parent_handle));
  auto key = (*tpm)->Load(parent, blob);
  if (!key) return Error(key.error().WithContext("loading the MA key into its TPM"));
  // GetMAKey publishes exactly these bytes; clients bind MRK policies to their Name.
  TPMMA_ASSIGN_OR_RETURN(Bytes canonical, tpm::Marshal(blob.public_area));
  TPMMA_ASSIGN_OR_RETURN(Bytes name, tpm::ComputeName(blob.public_area.publicArea));
  if (key->name() != name) {
    return Error(Code::kIntegrityFailure,
                 "the TPM reports another Name for the MA key than its "
                 "public file: wrong key files for this TPM?");
  }
  return std::make_unique<TpmMaKey>(o.key_id, std::move(*tpm), std::move(*key),
                                    std::move(canonical), std::move(name), std::move(der));
}

}  // namespace tpmma::server
