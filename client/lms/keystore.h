// SPDX-License-Identifier: GPL-2.0-or-later
// The lms key store: a directory (default /var/lib/tpm-ma) holding what the endpoint needs
// to use and back up its TPM keys. Nothing in it is secret in the clear: private blobs are
// TPM2B_PRIVATEs, encrypted by the TPM under their parent, and the recovery code is never
// stored. Every write is atomic (Env::WriteFileAtomic: temp file, fsync, rename, fsync dir).
//
//   <store>/store.json         StoreState: SRK, MRK id, MA key, inner-key custody, backups
//   <store>/keys/<uuid>.json   one KeyRecord per key (the MRK included)
//   <store>/config.json        StoreConfig: the MA's URL and CA (optional)
//   <store>/ma.json            MaState: platform id, AK, package-signing key (optional)
//   <store>/retired/<time>/    what `lms init --force` set aside (never deleted by lms)
//   <store>/.lock              flock()ed by commands that change the store
//
// store.json is written last by `lms init`: its presence is what "initialised" means.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/bytes.h"
#include "common/env.h"
#include "common/status.h"

namespace tpmma::lms {

inline constexpr uint32_t kStoreFormat = 1;
inline constexpr const char* kDefaultStoreDir = "/var/lib/tpm-ma";

// The four "lms" kinds carry a fixed scheme (what lms sign/decrypt use); the two "app" kinds
// carry none, so that OpenSSL, PKCS#11 and ssh pick the scheme per operation.
enum class KeyType { kMrk, kEccSign, kRsaSign, kRsaDecrypt, kSealed, kEccApp, kRsaApp };

// "mrk", "ecc-sign", "rsa-sign", "rsa-decrypt", "sealed", "ecc-app", "rsa-app" (CLI and JSON
// names).
std::string_view KeyTypeName(KeyType type);
Result<KeyType> KeyTypeFromName(std::string_view name);

// The default persistent handle of the MRK (issue #11): in the owner's range, clear of the
// SRK handles lms and tpm2-tools use (0x81000001, 0x81000002) and of the EK's (0x81010001).
inline constexpr uint32_t kDefaultMrkHandle = 0x81000100;
// A handle an owner may make a key persistent at (0x81000000..0x817FFFFF).
bool IsPersistentHandle(int64_t handle);

struct KeyRecord {
  std::string id;     // lower-case UUID
  std::string label;  // unique in the store
  KeyType type = KeyType::kEccSign;
  std::string parent;                   // "srk" for the MRK, else the MRK's id
  bool migratable = true;               // travels in a backup (with the MRK)
  std::string origin;                   // "lms" (made by lms) or "tpm2-tools" (lms import-tpm2)
  int64_t created = 0;                  // Unix seconds
  std::optional<int64_t> backed_up_at;  // last backup that carried this key, Unix seconds
  Bytes public_area;                    // TPM2B_PUBLIC, marshalled
  Bytes private_area;                   // TPM2B_PRIVATE under `parent`, marshalled
  Bytes name;                           // the TPM Name of public_area
  Bytes certificate;                    // DER X.509 certificate of this key (empty: none)
  bool operator==(const KeyRecord&) const = default;
};

// Who can give the inner wrapper key back after the TPM lost it.
enum class CustodyMode {
  kRecoveryCode,  // derived from a code shown once at init (high assurance)
  kEscrow,        // random, encrypted to the MA's escrow key in every package (helpdesk)
};

// "recovery-code", "escrow" (CLI and JSON names).
std::string_view CustodyModeName(CustodyMode mode);
Result<CustodyMode> CustodyModeFromName(std::string_view name);

// The store's custody of the inner wrapper key (docs/protocol.md, Inner-key custody).
//
// Recovery code: the inner key is scrypt(code, salt, n, r, p) (first 16 bytes); `verifier`
// (the next 32) lets a restore tell a mistyped code from a wrong TPM.
// Escrow: the inner key is random; every package carries it encrypted to the MA's escrow
// key (`escrow_public`, pinned at init: a backup asks the MA only whether it is still
// current, and takes a new one after a rotation only checked as at init), which the MA
// opens only for a Download a helpdesk approved.
//
// Either way, for unattended backups the inner key is also kept sealed to this TPM
// (fixedTPM under the SRK): useless anywhere else, and gone with the SRK.
struct InnerKeyCustody {
  CustodyMode mode = CustodyMode::kRecoveryCode;
  // kRecoveryCode
  std::string kdf = "scrypt";
  Bytes salt;
  uint64_t n = 0;
  uint32_t r = 0;
  uint32_t p = 0;
  Bytes verifier;
  // kEscrow
  std::string escrow_key_id;
  Bytes escrow_public;  // TPM2B_PUBLIC of the MA's escrow key, as GetMAKey returns it
  // both
  Bytes sealed_public;   // TPM2B_PUBLIC of the sealed inner key (under the SRK)
  Bytes sealed_private;  // TPM2B_PRIVATE
  bool operator==(const InnerKeyCustody&) const = default;
};

struct StoreState {
  uint32_t format = kStoreFormat;
  int64_t initialized_at = 0;
  uint32_t srk_handle = 0;
  std::string srk_alg;  // "rsa2048" | "ecc-p256"
  Bytes srk_name;
  std::string mrk_id;
  // Where the MRK is also kept persistent, so that key files (TSS2 PRIVATE KEY PEMs, the
  // PKCS#11 token) can name it as parent; 0: loaded from its blob only.
  uint32_t mrk_handle = 0;
  Bytes ma_key_public;  // TPM2B_PUBLIC of the MA storage key the MRK duplicates to
  Bytes ma_key_name;
  // An MRK that follows the MA (docs/protocol.md, "MRK policies"): the TPM2B_PUBLIC of the
  // MA's policy-signing key its authPolicy names, and that key's approval of ma_key (a
  // marshalled TPMT_SIGNATURE). Empty: the MRK is bound to ma_key by PolicyDuplicationSelect.
  Bytes policy_key_public;
  Bytes ma_key_approval;
  InnerKeyCustody custody;
  std::optional<int64_t> last_backup_at;
  std::optional<std::string> last_backup_package_id;
  // SHA-256 of the PKCS#11 token store the last backup carried (empty: none), so that a
  // change an application made to the token (a PIN, an object) counts as a change.
  Bytes pkcs11_sha256;
  bool operator==(const StoreState&) const = default;
};

// <store>/config.json: settings chosen at `lms init` (or by an installer) so that later
// commands, the backup timer among them, need no flags. Flags and the environment
// (LMS_MA_URL, LMS_MA_CA) override them. Absent file: all empty.
struct StoreConfig {
  std::string ma_url;                         // https://host:port
  std::string ma_ca;                          // PEM file trusted for the MA's TLS certificate
  std::vector<std::string> ek_intermediates;  // EK certificate intermediates (PEM or DER files)
  std::string ek_cert;      // the EK certificate file, for a TPM that keeps none in NV
  std::string owner_label;  // sent to the MA in the platform inventory (lms --owner-label)
  bool operator==(const StoreConfig&) const = default;
};

// A package-signing key this store has signed backups with, kept so that `lms restore` can
// check a downloaded package's signature (also after the key itself is gone with a clear).
struct KnownSigner {
  std::string platform_id;
  Bytes public_area;  // TPM2B_PUBLIC
  bool operator==(const KnownSigner&) const = default;
};

// <store>/ma.json: what lms keeps of its dealings with the MA. Nothing secret: TPM blobs
// encrypted by their parents, and public values. Absent file: all empty.
struct MaState {
  std::string platform_id;  // hex of the EK Name, from the last Authenticate
  int64_t authenticated_at = 0;
  Bytes ak_public;       // TPM2B_PUBLIC of the AK (under the EK)
  Bytes ak_private;      // TPM2B_PRIVATE; no longer loads after a TPM clear
  Bytes ak_srk_name;     // the SRK's Name when the AK was made (a clear changes it)
  Bytes signing_public;  // the package-signing key (fixedTPM, under the SRK)
  Bytes signing_private;
  std::vector<KnownSigner> signers;  // oldest first, at most kMaxKnownSigners
  bool operator==(const MaState&) const = default;
};
inline constexpr size_t kMaxKnownSigners = 32;

class KeyStore {
 public:
  // Opens (does not create) the directory. Creating it is Init's job (CreateLayout).
  KeyStore(std::string dir, Env* env);
  KeyStore(KeyStore&&) noexcept;
  KeyStore& operator=(KeyStore&&) noexcept;
  ~KeyStore();

  const std::string& dir() const { return dir_; }
  Env* env() const { return env_; }

  // The directory and keys/ with mode 0700 (parents as needed).
  Status CreateLayout();
  bool Initialized() const;

  // Exclusive advisory lock (flock on <store>/.lock), held until Unlock or destruction.
  // kUnavailable if another lms holds it for longer than `timeout_ms`.
  Status Lock(int timeout_ms = 10000);
  void Unlock();

  // kNotFound "not initialised" when store.json is absent; kCorruption for a damaged
  // file; kVersionTooNew for a newer format.
  Result<StoreState> ReadState() const;
  Status WriteState(const StoreState& state);

  Result<std::vector<KeyRecord>> ListKeys() const;  // sorted by creation time, then id
  Result<KeyRecord> GetKey(std::string_view id) const;
  // A key by UUID or by (unique) label. kNotFound names what was asked for.
  Result<KeyRecord> FindKey(std::string_view id_or_label) const;
  Status PutKey(const KeyRecord& key);

  // config.json and ma.json (empty values when absent; kCorruption when damaged).
  Result<StoreConfig> ReadConfig() const;
  Status WriteConfig(const StoreConfig& config);
  Result<MaState> ReadMaState() const;
  Status WriteMaState(const MaState& state);

  // Moves store.json and every keys/*.json into retired/<YYYYmmddTHHMMSSZ>-<n>/ and
  // returns that directory. Nothing is deleted.
  Result<std::string> Retire();

 private:
  std::string KeyPath(std::string_view id) const;

  std::string dir_;
  Env* env_ = nullptr;
  int lock_fd_ = -1;
};

// JSON forms, exposed for tests.
std::string KeyRecordToJson(const KeyRecord& key);
Result<KeyRecord> KeyRecordFromJson(std::string_view text, std::string_view what);
std::string StoreStateToJson(const StoreState& state);
Result<StoreState> StoreStateFromJson(std::string_view text, std::string_view what);
std::string StoreConfigToJson(const StoreConfig& config);
Result<StoreConfig> StoreConfigFromJson(std::string_view text, std::string_view what);
std::string MaStateToJson(const MaState& state);
Result<MaState> MaStateFromJson(std::string_view text, std::string_view what);

}  // namespace tpmma::lms
