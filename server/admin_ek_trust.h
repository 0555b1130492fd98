// SPDX-License-Identifier: GPL-2.0-or-later
// `ma-admin ek-trust add|list|remove` and `ma-admin ek check`: the MA's EK trust
// (server/ek_trust.h) on its state directory.
//
//   DIR/trust/ek-roots/<sha256>.pem          trusted roots (trust.ek_roots): the only anchors
//   DIR/trust/ek-intermediates/<sha256>.pem  the intermediate pool (trust.ek_intermediates):
//                                            untrusted helpers the MA completes chains with
//
// Both are directories named in config.toml, so ma-server reads them like any other file it
// is configured with, at start: restart it after a change. A state directory made before the
// pool existed gets trust.ek_intermediates added to config.toml by the first
// `ek-trust add --intermediate`. Every change is audited.
#pragma once

#include <string>
#include <vector>

#include "common/status.h"
#include "server/admin_commands.h"

namespace tpmma::server {

enum class EkTrustKind { kRoot, kIntermediate };

// Refuses garbage, more than one certificate, a non-CA certificate, one expired or not yet
// valid, a root that is not self-signed and an intermediate that is.
Status EkTrustAdd(const AdminContext& ctx, const std::string& state_dir, const std::string& file,
                  EkTrustKind kind);
// Every root and intermediate the config names (managed or not): kind, subject, fingerprint,
// notAfter, file.
Status EkTrustList(const AdminContext& ctx, const std::string& state_dir);
// `fingerprint`: the SHA-256 (hex, or a unique prefix of at least 8 digits) `list` shows.
// Only certificates under DIR/trust/ are removed; others are named with their config key.
Status EkTrustRemove(const AdminContext& ctx, const std::string& state_dir,
                     const std::string& fingerprint);

// Whether `cert_file` (PEM or DER) chains with the MA's current trust plus `chain_files`
// (what an endpoint would send): the path, subject by subject, and the anchor; or the
// refusal ma-server would give (kUnauthenticated). Only the chain: not the EK public.
Status EkCheck(const AdminContext& ctx, const std::string& state_dir, const std::string& cert_file,
               const std::vector<std::string>& chain_files);

}  // namespace tpmma::server
