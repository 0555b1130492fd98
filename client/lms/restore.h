// SPDX-License-Identifier: GPL-2.0-or-later
// lms restore (docs/protocol.md, Download): bring a store's keys back from a package the MA
// re-wraps for this TPM's SRK, into the store the backup came from or a new one.
//
//   std::optional<ApprovalNeeded> approval;
//   auto r = Restore(*lms, settings, {.recovery_code = ask}, &approval);
//   if (!r && approval) ... tell the user which helpdesk approval to ask for ...
//
// Nothing in store.json or keys/ changes until the MRK imported and every key in the
// package loaded under it; store.json is written last.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "client/lms/keystore.h"
#include "client/lms/operations.h"
#include "client/lms/remote.h"
#include "client/ma/ma_client.h"
#include "common/bytes.h"
#include "common/status.h"

namespace tpmma::lms {

struct RestoreOptions {
  std::string package_id;     // empty: the newest one (own, or from `from_platform`)
  std::string from_platform;  // restore a package of this platform (helpdesk-approved)
  // Asked only for a recovery-code package whose inner key cannot be unsealed from this TPM
  // (after a clear, or on another TPM). The code is checked against the package's verifier
  // before the TPM sees anything: a wrong code is kPermissionDenied, "wrong recovery code".
  // An escrow package never asks: its inner key comes from the MA with a Download a
  // helpdesk approved, else the restore is kPermissionDenied (ApprovalNeeded says which).
  std::function<Result<SecureString>()> recovery_code;
  // For tests: sees (and may change) what the MA sent before anything is checked.
  std::function<void(ma::DownloadedPackage&)> after_download;
  // Build a new key store from the package (the disk was replaced too, so there is no store
  // to restore into): only where the store is not initialised (kAlreadyExists otherwise),
  // and only with package_id or from_platform (a new TPM has no package of its own). The
  // package's signature is checked with the key the MA says it verified it with at Upload
  // (DownloadedPackage::signing_key_public; refused when the MA does not say), and the
  // MRK must be bound to the MA's current key (kConflict otherwise). The inner key comes
  // from the recovery code or the MA's escrow, never from a sealed copy (there is none).
  // Writes keys/ (the MRK under a new id, every child as in the package), ma.json (the
  // source platform's signing key as a known signer) and store.json last; a failure before
  // that leaves no store.json, and the next attempt (or lms init) sets aside the key
  // files it left.
  bool new_store = false;
};

// Where a restore got the package's inner wrapper key.
enum class InnerKeySource {
  kSealed,        // this TPM's sealed copy (the store's SRK is still there)
  kRecoveryCode,  // derived from the recovery code, checked against the verifier
  kEscrow,        // released by the MA with a Download a helpdesk approved
};
// "sealed" | "recovery-code" | "escrow" (lms restore --json: inner_key_source).
std::string_view InnerKeySourceName(InnerKeySource source);

// What a restore did with one key of the package.
enum class KeyOutcome {
  kUpdated,  // the store had it: its blobs are the restored ones now
  kAdded,    // a new store entry
};
// "updated" | "added" (lms restore --json: keys[].outcome).
std::string_view KeyOutcomeName(KeyOutcome outcome);

struct RestoredKey {
  KeyRecord key;
  KeyOutcome outcome = KeyOutcome::kAdded;
};
struct RestoreResult {
  std::string package_id;
  std::string source_platform_id;
  std::string platform_id;
  int64_t package_created_at = 0;
  bool used_recovery_code = false;
  InnerKeySource inner_key_source = InnerKeySource::kSealed;
  CustodyMode custody = CustodyMode::kRecoveryCode;  // the package's custody
  bool srk_changed = false;       // restored under a new SRK (cleared or other TPM)
  std::vector<RestoredKey> keys;  // every child in the package
  size_t kept = 0;         // keys in the store that the package does not have (made after it)
  bool new_store = false;  // RestoreOptions::new_store: the store was built from the package
  // A new store: where the key files of an earlier attempt that did not finish went.
  std::optional<std::string> retired_to;
  // An escrow package made before the MA's escrow key was replaced: the MA still released
  // its inner key, but the store pins the MA's current escrow key for its next backups.
  std::optional<EscrowKeyRotation> escrow_key_rotated;
};

// A restore that failed for want of a helpdesk approval (`ma-admin approve --old OLD --new
// NEW`): the facts the advice names. The Status says what happened; the CLI words the
// advice (client/lms/cli_restore.cc).
struct ApprovalNeeded {
  enum class Why {
    // kNotFound: the MA has no package of this platform; the store's keys were last
    // backed up by `source_platform_id`.
    kNoOwnBackup,
    // kNotFound: no package of `source_platform_id` this platform may restore.
    kNoApprovedPackage,
    // kPermissionDenied: the MA does not re-wrap `package_id` for this platform;
    // `source_platform_id` is the --from asked for (empty: not known before the Download).
    kDownloadRefused,
    // kPermissionDenied: the MA did not release the escrowed inner key of `package_id`.
    kEscrowNotReleased,
  };
  Why why = Why::kDownloadRefused;
  std::string platform_id;         // this platform: NEW
  std::string source_platform_id;  // OLD
  std::string package_id;
};

// `approval_needed` (optional) is set when the restore failed for want of a helpdesk
// approval; it is left alone otherwise.
Result<RestoreResult> Restore(Lms& lms, const MaSettings& settings, const RestoreOptions& options,
                              std::optional<ApprovalNeeded>* approval_needed = nullptr);

}  // namespace tpmma::lms
