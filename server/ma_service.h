// SPDX-License-Identifier: GPL-2.0-or-later
// The SOAP operations of the MA (DESIGN 4, docs/protocol.md) behind the Endpoint seam:
// the front end hands over a complete HTTP body, this parses it with a hardened gSOAP
// context from memory (SOAP_ENC_PLAIN: the front end owns HTTP), runs the operation and
// returns the reply body. See README.md for the path of an Upload and a Download.
#pragma once

#include <memory>

#include "common/env.h"
#include "common/status.h"
#include "server/config.h"
#include "server/endpoint.h"
#include "server/ma_key.h"
#include "storage/vault.h"

namespace tpmma::server {

struct MaServiceOptions {
  // Audit successful GetMAKey/GetMAServiceInfo/Query calls too. Every refusal and every
  // state change is audited regardless; reads are many and each audit row is a durable
  // commit, so a deployment chasing read throughput may turn this off (the structured
  // request log still records them).
  bool audit_successful_reads = true;
  // Expired challenges, download nonces and sessions are deleted this often by a
  // background thread (0: never), so those tables stay the size of the live ones.
  uint32_t purge_interval_s = 60;
};

// Opens the vault (SQLite at cfg.vault_path), loads the MA key (software custody) and the
// EK roots. Errors name the config key at fault.
Result<std::unique_ptr<Endpoint>> MakeMaService(const Config& cfg, Env* env,
                                                const MaServiceOptions& options = {});

// With the parts supplied by the caller (tests, other custodies or vault backends).
// `vault` and `custody` must outlive the endpoint.
Result<std::unique_ptr<Endpoint>> MakeMaService(const Config& cfg, Env* env, storage::Vault* vault,
                                                MaKeyCustody* custody,
                                                const MaServiceOptions& options = {});

}  // namespace tpmma::server
