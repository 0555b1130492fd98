// SPDX-License-Identifier: GPL-2.0-or-later
// Reading the key files the MA holds (the storage key, the escrow key), with the same checks
// for each: private keys readable by their owner only, certificates that certify exactly the
// key they sit next to, TPM blobs that unmarshal. `what` names the key in every message
// ("MA", "escrow").
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "tpm/esys/esys.h"
#include "common/bytes.h"
#include "common/env.h"
#include "common/openssl.h"
#include "common/status.h"

namespace tpmma::server {

// An unencrypted PEM private key; kPermissionDenied (with the chmod to run) for a file any
// group/other permission bit is set on: such a key opens packages, so that is a
// configuration error, not a warning.
Result<EvpPkeyPtr> ReadPrivateKeyFile(const std::string& path, std::string_view what, Env* env);

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

}  // namespace tpmma::server
