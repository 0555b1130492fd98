// SPDX-License-Identifier: GPL-2.0-or-later
// The SOAP operations of the MA (docs/protocol.md) behind the Endpoint seam: the front
// end hands over a complete HTTP body, this parses it with a hardened gSOAP context from
// memory (SOAP_ENC_PLAIN: the front end owns HTTP), decodes it into ma_operations.h's
// structs, runs the operation there and encodes the reply body. See README.md for the
// path of an Upload and a Download.
#pragma once

#include <memory>

#include "common/env.h"
#include "common/status.h"
#include "server/config.h"
#include "server/endpoint.h"
#include "server/ma_key.h"
#include "server/ma_operations.h"
#include "storage/vault.h"

namespace tpmma::server {

// Opens the vault (SQLite at cfg.vault_path), loads the MA key (software custody) and the
// EK roots. Errors name the config key at fault.
Result<std::unique_ptr<Endpoint>> MakeMaService(const Config& cfg, Env* env,
                                                const MaServiceOptions& options = {});

// With the parts supplied by the caller (tests, other custodies or vault backends).
// `vault` and `custody` must outlive the endpoint.
Result<std::unique_ptr<Endpoint>> MakeMaService(const Config& cfg, Env* env, storage::Vault* vault,
                                                MaKeyCustody* custody,
                                                const MaServiceOptions& options = {});

// Everything MakeMaService loads at start except the vault: the MA key (software or TPM
// custody, the certificate that must certify it, owner-only key files), every escrow key,
// the EK roots and pool, the EK templates and the enrollment policy. ma-server
// --check-config (the unit's ExecStartPre) runs it, so a config that would stop the start
// is refused there, with the same message, instead of in a restart loop.
Status CheckMaServiceConfig(const Config& cfg, Env* env);

}  // namespace tpmma::server
