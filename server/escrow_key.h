// SPDX-License-Identifier: GPL-2.0-or-later
// Custody of the escrow key (docs/protocol.md, "Inner-key custody", escrow mode): the RSA key lms encrypts each
// package's inner wrapper key to (tpm/escrow.h). ma-server decrypts with it only for a
// Download made under a helpdesk approval, and to check an escrow blob at Upload.
//
// It is a different key, in a different file, from the MA storage key, and has its own
// custody backend: a stolen MA key opens no package's inner wrapper, a stolen escrow key
// opens no outer wrapper. Backends: a PEM file ("software"), or the same key imported into
// a TPM ("tpm", TPM2_RSA_Decrypt; possibly another TPM than the MA key's):
//
//   tpm2_import -C 0x81000001 -G rsa -i escrow/escrow-key.pem -a "decrypt|userwithauth"
//               -u escrow/escrow-tpm.pub -r escrow/escrow-tpm.priv
#pragma once

#include <memory>
#include <string>

#include <tss2/tss2_tpm2_types.h>

#include "common/bytes.h"
#include "common/env.h"
#include "common/status.h"
#include "server/config.h"

namespace tpmma::server {

class EscrowKeyCustody {
 public:
  virtual ~EscrowKeyCustody() = default;

  virtual const std::string& key_id() const = 0;
  // What GetMAKey(KeyId = key_id) publishes: TPM2B_PUBLIC, its TPM2B_NAME, the certificate.
  virtual const Bytes& public_bytes() const = 0;
  virtual const Bytes& name_tpm2b() const = 0;
  virtual const Bytes& certificate_der() const = 0;

  // RSA-OAEP-SHA256 with the escrow label; kIntegrityFailure (no detail) if it does not
  // decrypt. The caller checks the binding (tpm::EscrowOpen).
  virtual Result<SecureBytes> Decrypt(ByteView ciphertext) = 0;
};

Result<std::unique_ptr<EscrowKeyCustody>> LoadSoftwareEscrowKey(const std::string& key_id,
                                                                const std::string& private_key_path,
                                                                const std::string& certificate_path,
                                                                Env* env);

struct TpmEscrowKeyOptions {
  std::string key_id;
  std::string tcti;
  uint32_t parent_handle = 0x81000001;
  std::string public_path;   // tpm2_import -u
  std::string private_path;  // tpm2_import -r
  std::string certificate_path;
};
Result<std::unique_ptr<EscrowKeyCustody>> LoadTpmEscrowKey(const TpmEscrowKeyOptions& options,
                                                           Env* env);

// Whichever custody `key` names ("software" or "tpm"); errors name the config keys at fault.
Result<std::unique_ptr<EscrowKeyCustody>> LoadEscrowKey(const TpmKeyConfig& key, Env* env);

}  // namespace tpmma::server
