// SPDX-License-Identifier: GPL-2.0-or-later
// TPM-resident MA key custody: the MA storage key lives in a TPM of the MA's own (an HSM
// role; swtpm in tests) and the re-wrap is TPM2_Rewrap inside it, so the MA host never
// holds the private key. The key is the same RSA key `ma-admin init` made, imported once:
//
//   tpm2_import -C 0x81000001 -G rsa -i ma/ma-key.pem
//               -a "restricted|decrypt|userwithauth" -u ma/ma-tpm.pub -r ma/ma-tpm.priv
//
// (then the PEM can leave the host). Its TPM2B_PUBLIC, hence its Name, is byte-identical to
// the software key's, so every MRK already bound to the MA key stays valid.
#pragma once

#include <memory>
#include <string>

#include "common/env.h"
#include "common/status.h"
#include "server/ma_key.h"

namespace tpmma::server {

struct TpmMaKeyOptions {
  std::string key_id;
  std::string tcti;                     // tpm2-tools syntax, e.g. "swtpm:host=127.0.0.1,port=2321"
  uint32_t parent_handle = 0x81000001;  // persistent storage parent the key was imported under
  std::string public_path;              // TPM2B_PUBLIC (tpm2_import -u)
  std::string private_path;             // TPM2B_PRIVATE (tpm2_import -r)
  std::string certificate_path;         // PEM; must certify the TPM key's public key
};

// Opens the TPM, loads the key under the parent and keeps it loaded (one transient slot)
// for the custody's lifetime. Rewrap calls are serialized (one ESAPI context).
Result<std::unique_ptr<MaKeyCustody>> LoadTpmMaKey(const TpmMaKeyOptions& options, Env* env);

}  // namespace tpmma::server
