// SPDX-License-Identifier: GPL-2.0-or-later
// A platform's certified SRK (storage::Platform::srk_public, which Authenticate Complete
// stores once the AK's TPM2_Certify of it verifies) as the helpdesk reads it: the console's
// review of a restore and `ma-admin platforms show`.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "common/status.h"
#include "storage/vault.h"

namespace tpmma::server {

struct SrkView {
  std::string algorithm;  // "ECC NIST P-256", "RSA 2048" (tpm::KeyAlgorithmText)
  std::string name_hex;   // the TPM Name, nameAlg first: what `lms init` prints as the SRK
  int64_t certified_at = 0;
};

// nullopt: the platform never sent a certified SRK (an lms from before it did).
Result<std::optional<SrkView>> ViewSrk(const storage::Platform& p);

// One line: "ECC NIST P-256, Name 000b…, certified by the platform's AK at <UTC>", or what
// is missing and why.
std::string SrkText(const storage::Platform& p);

}  // namespace tpmma::server
