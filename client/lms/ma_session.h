// SPDX-License-Identifier: GPL-2.0-or-later
// What backup (remote.cc) and restore (restore.cc) share, internal to client/lms: an
// authenticated session with the MA (DESIGN 4.1) and the small checks around it. The public
// face of both is remote.h.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "client/lms/keystore.h"
#include "client/lms/operations.h"
#include "client/lms/remote.h"
#include "client/ma/ma_client.h"
#include "client/ma/platform.h"
#include "tpm/esys/esys.h"
#include "common/status.h"
#include "schema/package.h"

namespace tpmma::lms {

// An authenticated session with the MA, and what it took.
struct Session {
  std::unique_ptr<client::MaClient> ma;
  client::PlatformSession platform;
  esys::KeyBlob ak;
  bool new_ak = false;
  std::string_view token() const {
    return std::string_view(platform.session.token.data(), platform.session.token.size());
  }
  const std::string& platform_id() const { return platform.session.platform_id; }
};

// Authenticate with the AK kept in ma.json (a new one after a TPM clear) and, for backups,
// the package-signing key kept there too. Writes ma.json on success.
Result<Session> OpenSession(Lms& lms, const MaSettings& s, bool with_signing_key);

// Every page of a Query, newest first.
Result<std::vector<client::PackageDescriptor>> QueryAll(Session& s, const MaSettings& ma,
                                                        const client::QueryFilter& filter);

// The MA's answer in plain words, naming the MA and what it was asked `doing`.
Status MaFailure(const Status& s, const MaSettings& ma, std::string_view doing);

// GetMAKey(key_id) checked for `role` (client::VerifyMaKey).
Result<FetchedMaKey> GetCheckedMaKey(client::MaClient& client, const MaSettings& ma,
                                     std::string_view key_id, client::MaKeyRole role);

// Which escrow key the MA takes at Upload now, for a store (or a package) escrowed to
// `pinned_key_id` (DESIGN 4.4). `ma-admin escrow rotate` replaces the MA's escrow key: the MA
// still releases what was escrowed to the old one but refuses an upload escrowed to it. One
// GetMAServiceInfo round trip while the MA still lists the pinned key (std::nullopt: keep
// it); else the escrow key it lists instead, fetched and checked as `lms init` does
// (FetchEscrowKey). kUnsupported when the MA no longer offers escrow custody.
Result<std::optional<FetchedMaKey>> ReplacedEscrowKey(client::MaClient& client,
                                                      const MaSettings& ma,
                                                      std::string_view pinned_key_id);

// The store's MRK record; kCorruption when store.json names none or another kind of key.
Result<KeyRecord> FindMrk(const StoreState& state, const std::vector<KeyRecord>& keys);

// The package usage of an lms key type.
package::KeyUsage UsageOf(KeyType t);

}  // namespace tpmma::lms
