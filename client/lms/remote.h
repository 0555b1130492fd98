// SPDX-License-Identifier: GPL-2.0-or-later
// What lms does with the Migration Authority (docs/protocol.md): authenticate, back up,
// query, delete, status (restore: restore.h). Built on Lms (operations.h: store and TPM) and
// client/ma (MaClient over HTTPS, the platform's side of Authenticate and Download).
//
//   TPMMA_ASSIGN_OR_RETURN(MaSettings settings, ResolveMaSettings(lms->store(), flags));
//   TPMMA_ASSIGN_OR_RETURN(BackupResult b, Backup(*lms, settings, {}));
//   ... tpm2_clear ...
//   TPMMA_ASSIGN_OR_RETURN(RestoreResult r, Restore(*lms, settings, {...}));  // restore.h
//
// Local state changes only when an operation has succeeded at the MA: a backup marks its
// keys backed up after the MA acknowledged the upload; a restore writes the store after the
// MRK was imported and every key in the package loaded under it. ma.json (platform id, AK,
// package-signing key) is updated after each successful authentication.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "client/lms/keystore.h"
#include "client/lms/operations.h"
#include "client/ma/ma_client.h"
#include "client/ma/platform.h"
#include "common/bytes.h"
#include "common/status.h"

namespace tpmma::lms {

struct MaSettings {
  std::string url;                            // https://host:port
  std::string ca_file;                        // PEM trusted for the MA's TLS certificate
  std::vector<std::string> ek_intermediates;  // EK certificate intermediates (PEM or DER files)
  // The EK certificate itself, for a TPM that keeps none in NV (Intel PTT, AMD fTPM: the
  // vendor serves it); empty: read from the TPM's NV.
  std::string ek_cert;
  // Sent in the platform inventory with every Authenticate Complete (inventory.h).
  std::string owner_label;
  int timeout_s = 30;
  bool connection_per_call = false;  // --ma-connection-per-call; never recorded
};

// Where the MA settings come from: flags, else the environment (LMS_MA_URL, LMS_MA_CA),
// else the store's config.json. kInvalidArgument saying what to give when the URL or the
// CA file is missing.
struct MaFlags {
  std::string url;
  std::string ca_file;
  std::vector<std::string> ek_intermediates;
  std::string ek_cert;
  std::string owner_label;  // --owner-label; refused with control characters
  bool connection_per_call = false;
};
Result<MaSettings> ResolveMaSettings(const KeyStore& store, const MaFlags& flags);

// The MA key's TPM2B_PUBLIC from GetMAKey, checked with ma::VerifyMaKey (Name and
// certificate match the public area), for `lms init`.
struct FetchedMaKey {
  std::string key_id;
  Bytes public_area;  // marshalled TPM2B_PUBLIC
  Bytes name;
  // An MA with a policy-signing key: its TPM2B_PUBLIC and its approval of this key (a
  // marshalled TPMT_SIGNATURE), checked. Empty otherwise.
  Bytes policy_key;
  Bytes approval;
};
Result<FetchedMaKey> FetchMaKey(const MaSettings& settings, std::string_view key_id = {});

// The MA's escrow key (docs/protocol.md, Inner-key custody), for `lms init --custody escrow`. The
// MA must list Escrow among its custody modes (GetMAServiceInfo); the key is `key_id`, else the one
// MAKeyId entry after the first (the storage key) whose public area is an escrow key.
// Checked like FetchMaKey's (ma::VerifyMaKey, role kEscrow: tpm::CheckEscrowKey).
// kUnsupported when the MA offers no escrow custody; kNotFound or kConflict when it lists
// no escrow key or several (then --escrow-key-id chooses).
Result<FetchedMaKey> FetchEscrowKey(const MaSettings& settings, std::string_view key_id = {});

// The EK lms authenticates with (ma::ChooseEk): the certificate given (--ek-cert, as read
// from the file) or the first in NV. A TPM with none in NV and none given: the L-1 EK and
// no certificate, said in one progress line (the MA accepts that only for an EK public an
// administrator registered under the "registered" enrollment policy).
Result<ma::EkChoice> ChooseEkOrNone(const Lms& lms, esys::Tpm& tpm, ByteView given_certificate);

struct AuthenticateResult {
  std::string platform_id;
  int64_t expires_at = 0;
  bool new_ak = false;  // an AK was made (first time, or the old one was gone with a clear)
};
Result<AuthenticateResult> Authenticate(Lms& lms, const MaSettings& settings);

struct BackupOptions {
  bool full = false;  // upload even if nothing changed since the last backup
  // Agent mode: tries when the MA cannot be reached, waiting retry_delay_ms, then twice
  // that, ... between them. Nothing local changes until an upload is acknowledged.
  int attempts = 1;
  int retry_delay_ms = 5000;
};

// An escrow store moved to the MA's new escrow key (after `ma-admin escrow rotate`): its
// packages are escrowed to `to` from now on, and store.json pins it.
struct EscrowKeyRotation {
  std::string from, to;  // escrow key ids
};

struct BackupResult {
  bool uploaded = false;
  std::string reason;  // when not uploaded: why ("nothing changed since ...")
  std::string package_id;
  std::string platform_id;
  std::string digest_hex;
  bool already_stored = false;
  size_t child_keys = 0;
  int64_t created_at = 0;
  int attempts = 0;
  // The MA's escrow key was not the one the store pinned: this package is escrowed to the
  // MA's current key, which the store pins now that the MA has the package.
  std::optional<EscrowKeyRotation> escrow_key_rotated;
  // A store whose MRK follows the MA, after `ma-admin ma-key rotate`: the id of the MA's new
  // storage key, which this package is duplicated to and the store pins from now on.
  std::optional<std::string> ma_key_moved_to;
};
// Whether anything changed since the last backup: a key never backed up, or no backup of
// this store yet.
Result<bool> ChangedSinceLastBackup(Lms& lms);
// An escrow store asks the MA which escrow key is current before it escrows the inner key
// (ReplacedEscrowKey): after a rotation it escrows to the new key, checked as at init, and
// pins it once the upload is acknowledged. kUnsupported when the MA no longer offers escrow
// custody (the store's keys would stop being backed up).
Result<BackupResult> Backup(Lms& lms, const MaSettings& settings, const BackupOptions& options);

struct QueryOptions {
  std::optional<std::string> from_platform;  // only packages of this source platform
};
struct QueryResult {
  std::string platform_id;
  std::vector<ma::PackageDescriptor> packages;  // newest first
};
Result<QueryResult> Query(Lms& lms, const MaSettings& settings, const QueryOptions& options);

// Deletes one of this platform's packages on the MA. If it was the store's last backup,
// the keys count as not backed up again (the next backup uploads).
Status DeletePackage(Lms& lms, const MaSettings& settings, std::string_view package_id);

struct StatusReport {
  std::string store_dir;
  bool initialised = false;
  size_t keys = 0;
  size_t not_backed_up = 0;
  std::optional<int64_t> last_backup_at;
  std::optional<std::string> last_backup_package_id;
  std::optional<CustodyMode> custody;  // initialised stores whose store.json reads
  std::string escrow_key_id;  // escrow custody: the MA escrow key packages are encrypted to
  // "follow" (the MRK follows the MA's key rotations) or "fixed" (bound to one MA key).
  std::string mrk_policy;
  bool tpm_reachable = false;
  bool srk_matches_store = false;
  uint32_t mrk_handle = 0;       // where applications' key files expect the MRK (0: none)
  std::string mrk_handle_state;  // "present" | "empty" | "another object" | "none" | an error
  std::string tpm_error;
  std::string ma_url;
  bool ma_reachable = false;
  std::string ma_service_version;
  std::string ma_error;
  bool enrolled = false;  // the MA accepted this TPM (Authenticate succeeded)
  std::string platform_id;
  std::string enroll_error;
  size_t packages_on_ma = 0;  // this platform's own packages
  std::optional<int64_t> newest_on_ma;
  // What Authenticate reports to the MA (collected when the TPM is reachable, else without
  // the TPM's fields).
  ma::PlatformInventory inventory;
};
// Never fails for an unreachable MA or TPM: the report says so. An MA setting missing is
// reported as ma_error.
StatusReport GetStatus(Lms& lms, const Result<MaSettings>& settings);

}  // namespace tpmma::lms
