// SPDX-License-Identifier: GPL-2.0-or-later
// What backup (remote.cc) and restore (restore.cc) share, internal to client/lms: an
// authenticated connection to the MA (docs/protocol.md, Authenticate) and the small checks
// around it. The public faces are remote.h and restore.h.
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
#include "common/status.h"
#include "schema/package.h"
#include "tpm/esys/esys.h"

namespace tpmma::lms {

// A connection to the MA (`client`) with an authenticated session on it (`platform`), and
// the AK it took.
struct MaConnection {
  std::unique_ptr<ma::MaClient> client;
  ma::PlatformSession platform;
  esys::KeyBlob ak;
  bool new_ak = false;
  std::string_view token() const {
    return std::string_view(platform.session.token.data(), platform.session.token.size());
  }
  const std::string& platform_id() const { return platform.session.platform_id; }
};

// Authenticate with the AK kept in ma.json (a new one after a TPM clear) and, for backups,
// the package-signing key kept there too. Writes ma.json on success.
Result<MaConnection> OpenMaConnection(Lms& lms, const MaSettings& s, bool with_signing_key);

// `public_area` (a package-signing key's TPM2B_PUBLIC) among the store's known signers, so
// that later restores check the packages it signed; the oldest is dropped beyond
// kMaxKnownSigners.
void RememberSigner(MaState& m, const std::string& platform_id, const Bytes& public_area);

// Newest first: by creation time, then upload time; a tie (one-second resolution) goes to
// the later upload, which assumes `packages` arrive in the MA's upload order.
void SortNewestFirst(std::vector<ma::PackageDescriptor>& packages);

// Every page of a Query, newest first (SortNewestFirst).
Result<std::vector<ma::PackageDescriptor>> QueryAll(MaConnection& s, const MaSettings& settings,
                                                    const ma::QueryFilter& filter);

// The MA's answer in plain words, naming the MA and what it was asked `doing`.
Status MaFailure(const Status& s, const MaSettings& settings, std::string_view doing);

// GetMAKey(key_id) checked for `role` (ma::VerifyMaKey).
Result<FetchedMaKey> GetCheckedMaKey(ma::MaClient& client, const MaSettings& settings,
                                     std::string_view key_id, ma::MaKeyRole role);

// Which escrow key the MA takes at Upload now, for a store (or a package) escrowed to
// `pinned_key_id` (docs/operations.md, escrow key rotation). `ma-admin escrow rotate` replaces the
// MA's escrow key: the MA still releases what was escrowed to the old one but refuses an upload
// escrowed to it. One GetMAServiceInfo round trip while the MA still lists the pinned key
// (std::nullopt: keep it); else the escrow key it lists instead, fetched and checked as `lms init`
// does (FetchEscrowKey). kUnsupported when the MA no longer offers escrow custody.
Result<std::optional<FetchedMaKey>> ReplacedEscrowKey(ma::MaClient& client,
                                                      const MaSettings& settings,
                                                      std::string_view pinned_key_id);

// The store's MRK record; kCorruption when store.json names none or another kind of key.
Result<KeyRecord> FindMrk(const StoreState& state, const std::vector<KeyRecord>& keys);

// The package usage of an lms key type.
schema::KeyUsage UsageOf(KeyType t);

}  // namespace tpmma::lms
