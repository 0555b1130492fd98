// SPDX-License-Identifier: GPL-2.0-or-later
// Reading the key files the MA holds (the storage key, the escrow key), with the same checks
// for each: private keys readable by their owner only, certificates that certify exactly the
// key they sit next to, TPM blobs that unmarshal. `what` names the key in every message
// ("MA", "escrow").
#pragma once

#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

#include "common/bytes.h"
#include "common/env.h"
#include "common/openssl.h"
#include "common/status.h"
#include "tpm/esys/esys.h"

namespace tpmma::server {

// An unencrypted PEM private key; kPermissionDenied (with the chmod to run) for a file any
// group/other permission bit is set on: such a key opens packages, so that is a
// configuration error, not a warning.
Result<EvpPkeyPtr> ReadPrivateKeyFile(const std::string& path, std::string_view what, Env* env);

// A new EC P-256 key pair: the private PEM at `private_path` (0600) and the public PEM at
// `public_path` (0644). kAlreadyExists if either file exists (`why_not_replace` says why a
// key of this kind must never be replaced silently).
Status CreateKeyPairFiles(const std::string& private_path, const std::string& public_path,
                          std::string_view why_not_replace, Env* env);

// A PEM public key (or a private key's public half) at `path`.
Result<EvpPkeyPtr> ReadPublicKeyFile(const std::string& path, Env* env);

// The PEM certificate at `path` as DER, after checking it certifies `key`.
Result<Bytes> ReadCertificateFor(const std::string& path, const EVP_PKEY* key,
                                 std::string_view key_path, std::string_view what, Env* env);

// TPM2B_PUBLIC and TPM2B_PRIVATE as tpm2_import -u/-r write them.
Result<esys::KeyBlob> ReadTpmKeyBlob(const std::string& public_path,
                                     const std::string& private_path, std::string_view what,
                                     Env* env);

// A key loaded into its TPM under a persistent parent, with the context it lives in. The
// Name the TPM reports must be the one computed from the public file.
struct LoadedTpmKey {
  std::unique_ptr<esys::Tpm> tpm;
  esys::Object key;  // declared after tpm: flushed before the context goes
};
Result<LoadedTpmKey> LoadTpmKey(const std::string& tcti, uint32_t parent_handle,
                                const esys::KeyBlob& blob, std::string_view what);

// A key the MA keeps loaded in a TPM of its own (the MA key, the escrow key) that outlives
// that TPM's restarts. A command that fails because the TPM could not be reached, or no
// longer holds the key (transient objects are gone after a TPM reset), reopens the TPM,
// reloads the key and runs once more; if the TPM is still away the caller gets kUnavailable
// and the next command tries again. One command at a time (one ESAPI context).
class TpmKeySlot {
 public:
  using Command = std::function<Status(esys::Tpm& tpm, const esys::Object& key)>;
  static Result<std::unique_ptr<TpmKeySlot>> Load(std::string tcti, uint32_t parent_handle,
                                                  esys::KeyBlob blob, std::string what);
  // The key's Name as its TPM reported it at the first load (checked against its public file).
  const Bytes& name() const { return name_; }
  Status Run(const Command& command);

 private:
  TpmKeySlot(std::string tcti, uint32_t parent, esys::KeyBlob blob, std::string what)
      : tcti_(std::move(tcti)), parent_(parent), blob_(std::move(blob)), what_(std::move(what)) {}
  Status Reload();

  const std::string tcti_;
  const uint32_t parent_;
  const esys::KeyBlob blob_;
  const std::string what_;
  Bytes name_;
  std::mutex mu_;
  std::optional<LoadedTpmKey> loaded_;  // empty after a reload that failed
};

}  // namespace tpmma::server
