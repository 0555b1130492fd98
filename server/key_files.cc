// SPDX-License-Identifier: GPL-2.0-or-later
#include "server/key_files.h"

#include <spdlog/spdlog.h>

#include <openssl/pem.h>
#include <openssl/x509.h>

#include <cstdio>

#include <fmt/format.h>

#include "common/file_mode.h"
#include "server/pki.h"
#include "tpm/marshal.h"
#include "tpm/public.h"

namespace tpmma::server {
namespace {

constexpr size_t kMaxKeyFile = 64 * 1024;

}  // namespace

Result<EvpPkeyPtr> ReadPrivateKeyFile(const std::string& path, std::string_view what, Env* env) {
  TPMMA_RETURN_IF_ERROR(CheckOwnerOnlyFile(path, what));
  TPMMA_ASSIGN_OR_RETURN(Bytes pem_plain, env->ReadFile(path, kMaxKeyFile));
  SecureBytes pem(pem_plain.begin(), pem_plain.end());
  Wipe(pem_plain.data(), pem_plain.size());
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  if (!bio) return Error(OpensslError("BIO_new_mem_buf"));
  EvpPkeyPtr key(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
  if (!key) {
    return Error(Code::kInvalidArgument, std::string(what) + " private key " + path +
                                             " is not an unencrypted PEM private key");
  }
  return key;
}

Result<Bytes> ReadCertificateFor(const std::string& path, const EVP_PKEY* key,
                                 std::string_view key_path, std::string_view what, Env* env) {
  TPMMA_ASSIGN_OR_RETURN(Bytes cert_pem, env->ReadFile(path, kMaxKeyFile));
  BioPtr bio(BIO_new_mem_buf(cert_pem.data(), static_cast<int>(cert_pem.size())));
  if (!bio) return Error(OpensslError("BIO_new_mem_buf"));
  X509Ptr cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
  if (!cert) {
    return Error(Code::kInvalidArgument,
                 std::string(what) + " certificate " + path + " is not a PEM X.509 certificate");
  }
  if (EVP_PKEY_eq(X509_get0_pubkey(cert.get()), key) != 1) {
    return Error(Code::kInvalidArgument, std::string(what) + " certificate " + path +
                                             " does not certify the key in " +
                                             std::string(key_path));
  }
  int der_len = i2d_X509(cert.get(), nullptr);
  if (der_len <= 0) return Error(OpensslError("i2d_X509"));
  Bytes der(static_cast<size_t>(der_len));
  unsigned char* p = der.data();
  if (i2d_X509(cert.get(), &p) != der_len) return Error(OpensslError("i2d_X509"));
  return der;
}

Result<esys::KeyBlob> ReadTpmKeyBlob(const std::string& public_path,
                                     const std::string& private_path, std::string_view what,
                                     Env* env) {
  TPMMA_ASSIGN_OR_RETURN(Bytes pub_bytes, env->ReadFile(public_path, kMaxKeyFile));
  TPMMA_ASSIGN_OR_RETURN(Bytes priv_bytes, env->ReadFile(private_path, kMaxKeyFile));
  esys::KeyBlob blob;
  auto pub = tpm::Unmarshal<TPM2B_PUBLIC>(pub_bytes);
  if (!pub) {
    return Error(pub.error().WithContext(std::string(what) + " TPM key public " + public_path));
  }
  auto priv = tpm::Unmarshal<TPM2B_PRIVATE>(priv_bytes);
  if (!priv) {
    return Error(priv.error().WithContext(std::string(what) + " TPM key private " + private_path));
  }
  blob.public_area = *pub;
  blob.private_area = *priv;
  return blob;
}

Result<LoadedTpmKey> LoadTpmKey(const std::string& tcti, uint32_t parent_handle,
                                const esys::KeyBlob& blob, std::string_view what) {
  LoadedTpmKey out;
  auto tpm = esys::Tpm::Open(tcti);
  if (!tpm)
    return Error(tpm.error().WithContext("the " + std::string(what) + " key's TPM (" + tcti + ")"));
  out.tpm = std::move(*tpm);
  TPMMA_ASSIGN_OR_RETURN(esys::Object parent, out.tpm->FromPersistent(parent_handle));
  auto key = out.tpm->Load(parent, blob);
  if (!key) {
    return Error(key.error().WithContext("loading the " + std::string(what) + " key into its TPM"));
  }
  out.key = std::move(*key);
  TPMMA_ASSIGN_OR_RETURN(Bytes name, tpm::ComputeName(blob.public_area.publicArea));
  if (out.key.name() != name) {
    return Error(Code::kIntegrityFailure, "the TPM reports another Name for the " +
                                              std::string(what) +
                                              " key than its public file: wrong key files for "
                                              "this TPM?");
  }
  return out;
}

Result<std::unique_ptr<TpmKeySlot>> TpmKeySlot::Load(std::string tcti, uint32_t parent_handle,
                                                     esys::KeyBlob blob, std::string what) {
  std::unique_ptr<TpmKeySlot> slot(
      new TpmKeySlot(std::move(tcti), parent_handle, std::move(blob), std::move(what)));
  TPMMA_RETURN_IF_ERROR(slot->Reload());
  slot->name_ = slot->loaded_->key.name();
  return slot;
}

Status TpmKeySlot::Reload() {
  loaded_.reset();  // flushes the old key first, if the old context still reaches the TPM
  TPMMA_ASSIGN_OR_RETURN(LoadedTpmKey loaded, LoadTpmKey(tcti_, parent_, blob_, what_));
  loaded_.emplace(std::move(loaded));
  return Status::Ok();
}

Status TpmKeySlot::Run(const Command& command) {
  std::lock_guard<std::mutex> lock(mu_);
  if (loaded_) {
    Status s = command(*loaded_->tpm, loaded_->key);
    // Anything else is about the caller's input, which a reload does not change.
    if (s.ok() || (s.code() != Code::kUnavailable && s.code() != Code::kTpmError)) return s;
    spdlog::warn("the {} key's TPM ({}) failed: {}; opening it again and reloading the key", what_,
                 tcti_, s.message());
  }
  Status reloaded = Reload();
  if (!reloaded.ok()) {
    // Where the MA's TPM is and how it failed is for the MA's log, not for the caller.
    spdlog::error("the {} key's TPM ({}) is not available: {}", what_, tcti_, reloaded.message());
    return Error(Code::kUnavailable, "the " + what_ + " key's TPM is not available; retry later");
  }
  return command(*loaded_->tpm, loaded_->key);
}

Status CreateKeyPairFiles(const std::string& private_path, const std::string& public_path,
                          std::string_view why_not_replace, Env* env) {
  if (env->FileExists(private_path) || env->FileExists(public_path)) {
    return Status(Code::kAlreadyExists, fmt::format("{} or {} exists; refusing to replace it ({})",
                                                    private_path, public_path, why_not_replace));
  }
  TPMMA_ASSIGN_OR_RETURN(EvpPkeyPtr key, GenerateKey(KeyType::kEcP256));
  TPMMA_ASSIGN_OR_RETURN(SecureString pem, PrivateKeyToPem(key.get()));
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_PUBKEY(bio.get(), key.get()) != 1) {
    return OpensslError("PEM_write_bio_PUBKEY");
  }
  char* data = nullptr;
  long n = BIO_get_mem_data(bio.get(), &data);
  TPMMA_RETURN_IF_ERROR(
      env->WriteFileAtomic(private_path, View(std::string_view(pem.data(), pem.size())), 0600));
  return env->WriteFileAtomic(public_path, View(std::string_view(data, static_cast<size_t>(n))),
                              0644);
}

Result<EvpPkeyPtr> ReadPublicKeyFile(const std::string& path, Env* env) {
  TPMMA_ASSIGN_OR_RETURN(Bytes pem, env->ReadFile(path, kMaxKeyFile));
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  EvpPkeyPtr key(bio ? PEM_read_bio_PUBKEY(bio.get(), nullptr, nullptr, nullptr) : nullptr);
  if (!key) {
    // A private key file also names its public key: accept it for verifying.
    auto priv = PrivateKeyFromPem(pem);
    if (priv) return priv;
    return Error(Code::kInvalidArgument, fmt::format("{} is not a PEM public key", path));
  }
  return key;
}

}  // namespace tpmma::server
