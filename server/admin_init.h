// SPDX-License-Identifier: GPL-2.0-or-later
// `ma-admin init`: creates a fresh MA state directory that `ma-server --config` runs from.
//
//   DIR/                      0700
//     config.toml             0600  (paths inside are relative to DIR)
//     ca/ca-key.pem           0600  MA CA: issues the TLS and MA key certificates
//     ca/ca-cert.pem          0644  what clients trust (`lms --ma-ca`)
//     ca/operator-ca-key.pem  0600  operator CA: issues helpdesk/auditor/admin client certs
//     ca/operator-ca-cert.pem 0644  tls.client_ca: the server accepts operator certs from it
//     ma/ma-key.pem           0600  the MA storage key packages are duplicated to
//     ma/ma-cert.pem          0644
//     escrow/escrow-key.pem   0600  the escrow key (escrow custody, docs/operations.md): a separate
//     escrow/escrow-cert.pem  0644  file from the MA key, so each can have its own custody
//     policy/policy-key.pem   0600  the policy-signing key MRKs that follow the MA name
//     policy/policy-key.pub.pem 0644  (docs/protocol.md, "MRK policies"), and its approval
//     policy/MAKEYID.approval 0644  of the MA key: what ma-server publishes in GetMAKey
//     tls/server-key.pem      0600
//     tls/server-cert.pem     0644
//     trust/ek-roots/         0700  TPM manufacturer roots accepted for EK certificates
//     trust/ek-intermediates/ 0700  intermediate CAs the MA completes EK chains with (never
//                                   anchors; `ma-admin ek-trust add --intermediate`)
//     vault.db                0600  the SQLite vault, schema created, one audit row
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/env.h"
#include "common/status.h"

namespace tpmma::server {

struct InitOptions {
  std::string dir;
  std::string listen_address = "127.0.0.1";
  uint16_t listen_port = 8443;
  std::vector<std::string> tls_dns_names = {"localhost"};
  std::vector<std::string> ek_root_files;  // copied into trust/ek-roots/
  std::string ma_key_id = "ma-1";
  // Offer escrow custody of inner keys (docs/operations.md): an escrow key apart from the MA key.
  bool escrow = true;
  std::string escrow_key_id = "escrow-1";
  // A policy-signing key, so that new MRKs follow the MA through key rotations. false: this
  // MA takes PolicyDuplicationSelect MRKs only (what MAs made before #16 do).
  bool policy_key = true;
};

struct InitReport {
  std::string config_path;
  std::string ca_certificate_path;
  std::string url;  // https://127.0.0.1:8443/
  std::string ma_key_id;
  std::string ma_name_hex;    // Name of the MA key's TPM2B_PUBLIC: what MRK policies bind to
  std::string escrow_key_id;  // empty: no escrow custody offered
};

// Refuses a directory that already holds anything: an existing MA key is what every
// vaulted package is wrapped to, and overwriting it would make them all unrecoverable.
// On failure nothing usable is left behind (the directory is created last-step-wins:
// config.toml is written last, and ma-server refuses to start without it).
Result<InitReport> InitMaState(const InitOptions& opts, Env* env);

}  // namespace tpmma::server
