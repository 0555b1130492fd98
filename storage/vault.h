// SPDX-License-Identifier: GPL-2.0-or-later
// The vault: everything the MA must remember, behind one interface so that the embedded
// SQLite backend and a later PostgreSQL one are interchangeable (tests/storage/ holds the
// suite every backend must pass).
//
// Rules every implementation keeps:
// - Each call is one transaction: it is either fully done and durable when it returns
//   OK, or not done at all. Calls that change state take an AuditEvent that is appended
//   to the hash-chained audit log in that same transaction, so the log never misses a
//   committed change and never records one that did not commit. The server never needs
//   raw transactions.
// - Secrets are never stored: challenges keep the hash of the expected proof, sessions
//   the hash of the token. Error messages never carry bound values.
// - Times are Unix seconds passed in by the caller (the server reads its Env clock), so
//   tests can move time without sleeping.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/bytes.h"
#include "common/status.h"
#include "storage/vault_stats.h"

namespace tpmma::storage {

// ---------------------------------------------------------------------------------------
// Audit log

// What the caller supplies; the vault assigns seq and the chain hashes.
struct AuditEvent {
  int64_t time = 0;
  std::string actor;    // platform id, "operator:<name>" or "system"
  std::string action;   // operation name, e.g. "Upload", "ApproveRestore"
  std::string object;   // package id, platform id, approval id, ...
  std::string outcome;  // "ok" or a CodeName(), e.g. "Conflict"
  std::string detail;   // short, human; NEVER secrets
  // Each text field is at most 1024 bytes (kInvalidArgument otherwise).
};

struct AuditRecord {
  int64_t seq = 0;  // 1, 2, 3, ... without gaps
  AuditEvent event;
  Bytes prev_hash;  // 32 zero bytes for seq 1
  Bytes hash;       // AuditRecordHash(seq, event, prev_hash)
};

// SHA-256 over a length-prefixed, domain-separated encoding of (seq, time, actor, action,
// object, outcome, detail, prev_hash). Shared by every backend and by `ma-admin audit
// verify`, so that a chain exported from one backend verifies with the other.
Result<Bytes> AuditRecordHash(int64_t seq, const AuditEvent& event, ByteView prev_hash);
// Audit.* actions are the vault's own (genesis, archive): kInvalidArgument for a caller's
// record that would pretend to be one. Every backend's AppendAudit checks it.
Status CheckCallerAuditAction(const AuditEvent& event);
inline constexpr size_t kAuditHashSize = 32;  // SHA-256; seq 1's prev_hash is this many zeros

struct AuditFilter {
  std::optional<std::string> actor;
  std::optional<std::string> action;
  std::optional<std::string> object;
  std::optional<int64_t> time_from;  // inclusive
  std::optional<int64_t> time_to;    // exclusive
  size_t page_size = 100;            // 0 → 100, capped at 1000
  std::string page_token;            // from the previous page; empty for the first
};

struct AuditPage {
  std::vector<AuditRecord> records;  // ascending seq
  std::string next_page_token;       // empty when there are no more
};

// The action of the record every log starts with (actor "system", object the hex of the
// vault id). A vault made before schema 6 has it after its older records: its detail then
// says how many came before ("after N record(s) ..."), and those are not anchored by it.
inline constexpr std::string_view kAuditGenesisAction = "Audit.Genesis";
// The action of the record ArchiveAudit appends; object: the last archived seq.
inline constexpr std::string_view kAuditArchiveAction = "Audit.Archive";

// The log's head, for signed checkpoints (server/audit_checkpoint.h).
struct AuditHead {
  Bytes vault_id;  // 16 random bytes, fixed when the vault (or schema 6) was made
  int64_t seq = 0;
  Bytes hash;
  int64_t time = 0;
};

// A stretch of the log removed by ArchiveAudit after it was written to an archive file.
struct AuditSegment {
  int64_t first_seq = 0;
  int64_t last_seq = 0;
  Bytes last_hash;  // the hash of record last_seq: the prev_hash of record last_seq + 1
  int64_t archived_at = 0;
  Bytes archive_sha256;
};

// What CheckAuditChain verified.
struct AuditChainReport {
  Bytes vault_id;
  int64_t first_seq = 0;         // first record still in the vault
  int64_t last_seq = 0;          // the head
  int64_t genesis_seq = 0;       // 0: archived
  int64_t archived_through = 0;  // 0: nothing archived
};

// ---------------------------------------------------------------------------------------
// Platforms (one TPM each)

// kPending: enrolled under the "approve-first" policy and not yet accepted by an operator
// (AcceptPlatform); it gets no session.
enum class PlatformState { kActive, kRevoked, kPending };

struct Platform {
  std::string id;  // hex of the EK Name
  Bytes ek_public;
  Bytes ek_certificate;  // DER
  // SHA-256 of the EK key's SubjectPublicKeyInfo (server/ek_identity.h): the same for every
  // encoding of the same key. Empty: not known (rows from before schema 3, until backfilled).
  Bytes ek_key_id;
  Bytes ak_public;
  Bytes ak_name;
  std::optional<Bytes> signing_key_public;  // package-signing key, once known
  // The SRK (TPM2B_PUBLIC) the AK certified at the latest Authenticate that sent one, and
  // when: the parent a Download re-wraps to, for the helpdesk to see before it approves a
  // restore to this platform. An upsert without one keeps the stored pair.
  std::optional<Bytes> srk_public;
  int64_t srk_certified_at = 0;
  PlatformState state = PlatformState::kActive;
  int64_t created_at = 0;
  int64_t last_seen_at = 0;
};

// A platform an administrator registered before it first authenticates (the "registered"
// enrollment policy): by the SHA-256 of its EK key's SubjectPublicKeyInfo (the platform's
// ek_key_id) or of its DER EK certificate.
enum class RegistrationKind { kEkKeyId, kEkCertSha256 };

struct PlatformRegistration {
  RegistrationKind kind = RegistrationKind::kEkKeyId;
  Bytes digest;  // 32 bytes
  std::string label;
  int64_t created_at = 0;
};

struct PlatformPage {
  std::vector<Platform> platforms;  // ascending id
  std::string next_page_token;
};

// What a platform last said about itself in Authenticate Complete (issue #12), so that a
// person can find "Alice's laptop". Informational only: identity is always the EK. An empty
// field was not reported. Each field is at most kMaxInventoryField characters of valid UTF-8 with
// no control characters (CheckPlatformInventory).
struct PlatformInventory {
  std::string hostname;
  std::string os_name;  // os-release PRETTY_NAME
  std::string kernel_release;
  std::string system_vendor;  // DMI
  std::string product_name;
  std::string serial_number;
  std::string asset_tag;
  std::string machine_id;
  std::string tpm_manufacturer;
  std::string tpm_vendor;
  std::string tpm_firmware;
  std::string owner_label;
  int64_t reported_at = 0;  // set by the vault from AuthCompletion::now
};

inline constexpr size_t kMaxInventoryField = 256;

// The fields by their wire names (wsdl/migration.wsdl PlatformInventory), in wire order:
// for validation messages and printing.
std::vector<std::pair<std::string_view, const std::string*>> InventoryFields(
    const PlatformInventory& inventory);
// kInvalidArgument naming the field (its wire name): too long, invalid UTF-8 or a control
// character (C0, DEL, C1).
Status CheckPlatformInventory(const PlatformInventory& inventory);
// The same check for one value.
Status CheckInventoryText(std::string_view field, std::string_view value);

// A platform with its latest inventory, if it reported one.
struct PlatformSummary {
  Platform platform;
  std::optional<PlatformInventory> inventory;
};

// A platform as a compliance view sees it: its summary and its backups.
struct PlatformBackups {
  PlatformSummary summary;
  int64_t package_count = 0;
  int64_t last_uploaded_at = 0;  // 0: never backed up
};

struct PlatformBackupsPage {
  std::vector<PlatformBackups> platforms;  // ascending id
  std::string next_page_token;
};

// ---------------------------------------------------------------------------------------
// Challenges and sessions

enum class ChallengeKind { kAuthenticate, kDownloadNonce };

struct Challenge {
  std::string id;
  ChallengeKind kind = ChallengeKind::kAuthenticate;
  std::string platform_id;
  Bytes expected_hash;    // SHA-256 of the expected proof/secret, never the secret
  Bytes nonce;            // e.g. the qualifying data the AK must certify over
  Bytes associated_data;  // opaque to the vault: the AK public, a package id, ...
  int64_t created_at = 0;
  int64_t expires_at = 0;
};

struct Session {
  Bytes token_hash;  // SHA-256 of the token; the token itself is never stored
  std::string platform_id;
  int64_t created_at = 0;
  int64_t expires_at = 0;
};

// Authenticate's Complete step (docs/protocol.md, "Authenticate") as one transaction.
struct AuthCompletion {
  std::string challenge_id;
  Bytes proof_hash;  // SHA-256 of what the platform sent; compared in constant time
  int64_t now = 0;
  // Written only after the proof matched, so an unproven AK never replaces a proven one.
  // created_at/state of an existing row are kept; a revoked platform stays revoked.
  // One TPM, one platform: with platform.ek_key_id set, another platform with the same
  // ek_key_id refuses it (kPermissionDenied), revoked or not.
  Platform platform;
  Session session;  // platform_id must equal platform.id and the challenge's platform
  AuditEvent audit;
  // The "approve-first" policy: a platform not yet stored is stored as kPending, with
  // pending_audit instead of audit and no session, and the call returns kPermissionDenied
  // with pending_message. A stored pending platform gets the same refusal under any policy.
  // Stored as the platform's latest inventory (with reported_at = now) whenever the
  // platform row is written: on success and when a new platform is stored pending (so an
  // operator can tell which machine to accept). Refused (kInvalidArgument) unless it passes
  // CheckPlatformInventory. Absent: the stored inventory is kept as it was.
  std::optional<PlatformInventory> inventory;
  bool enroll_pending = false;
  AuditEvent pending_audit;
  std::string pending_message;  // empty: "platform <id> awaits an operator's acceptance"
};

// What every backend checks of a completion before it touches its tables
// (kInvalidArgument): session and platform name the same platform, the proof hash is
// SHA-256 sized, the inventory passes CheckPlatformInventory.
Status CheckAuthCompletion(const AuthCompletion& completion);

// ---------------------------------------------------------------------------------------
// Packages

enum class CustodyMode { kRecoveryCode, kEscrow };

// A package's outer wrap: the MRK's TPM2B_PRIVATE and TPM2B_ENCRYPTED_SECRET as one of the
// MA's storage keys opens them (docs/operations.md, "MA key lifecycle").
struct OuterWrap {
  Bytes duplicate;
  Bytes encrypted_seed;
  bool operator==(const OuterWrap&) const = default;
};

struct PackageKey {
  std::string key_id;
  std::string label;
  std::string usage;
};

struct PackageDescriptor {
  std::string package_id;  // UUID from the package
  std::string source_platform_id;
  std::string format_version;
  int64_t created_at = 0;  // as stated in the package
  int64_t uploaded_at = 0;
  Bytes sha256;      // SHA-256 of the body (32 bytes); the caller's, on Put
  int64_t size = 0;  // of the body; computed by the vault on Put
  CustodyMode custody = CustodyMode::kRecoveryCode;
  // TPM2B_PUBLIC of the key the server verified the signature with at upload; empty for
  // packages stored before schema 2 (then the platform's current key is the only one known).
  Bytes signing_key;
  std::vector<PackageKey> keys;  // in package order; empty from a query without with_keys
  int64_t key_count = 0;         // filled by the vault whether or not `keys` is
  // The MA storage key that holds the outer wrap; empty for packages stored before schema 8
  // (the MA's key of the time, until ma-server or ma-admin records it).
  std::string wrap_key_id;
};

struct Package {
  PackageDescriptor descriptor;
  Bytes body;  // the signed XML Migration Package
  // The outer wrap once re-enciphered to another storage key than the platform wrapped it to
  // (the document is never changed: its signature must keep verifying); nullopt: the
  // document's own.
  std::optional<OuterWrap> rewrap;
};

// How many packages a storage key holds the outer wrap of ("" : not recorded).
struct WrapCount {
  std::string key_id;
  int64_t packages = 0;
};

// One package's outer wrap moved to another storage key (ma-admin ma-key reencipher).
struct WrapUpdate {
  std::string package_id;
  std::string from_key_id;
  std::string to_key_id;
  OuterWrap wrap;
};

enum class PutOutcome { kStored, kAlreadyStored };

struct PackageQuery {
  std::optional<std::string> source_platform_id;
  std::optional<int64_t> created_after;       // exclusive
  std::optional<int64_t> created_before;      // exclusive
  std::optional<std::string> label_contains;  // case-sensitive substring of any key label
  // Own packages, plus those an active, unexpired approval at `now` grants to it.
  std::optional<std::string> visible_to_platform;
  int64_t now = 0;  // for visible_to_platform
  // false: descriptors carry key_count but no keys (a listing that shows counts need not
  // read every key row).
  bool with_keys = true;
  size_t page_size = 100;  // 0 → 100, capped at 1000
  std::string page_token;
};

struct PackagePage {
  std::vector<PackageDescriptor> packages;  // in upload order
  std::string next_page_token;
};

// ---------------------------------------------------------------------------------------
// Approvals (helpdesk: "packages of OLD may be restored to NEW")

enum class ApprovalState { kPending, kActive, kUsed, kRevoked };

struct ApprovalRequest {
  std::string old_platform_id;
  std::string new_platform_id;
  bool all_packages = true;
  std::vector<std::string> package_ids;  // when !all_packages; must be non-empty then
  std::string reason;
  std::string created_by;  // operator name
  int64_t created_at = 0;
  int64_t expires_at = 0;
  // Two-person rule: the approval stays pending until a different operator confirms it.
  bool require_confirmation = false;
};

struct Approval {
  int64_t id = 0;
  std::string old_platform_id;
  std::string new_platform_id;
  bool all_packages = true;
  std::vector<std::string> package_ids;
  std::string reason;
  std::string created_by;
  int64_t created_at = 0;
  int64_t expires_at = 0;
  std::optional<std::string> confirmed_by;
  ApprovalState state = ApprovalState::kPending;
  std::optional<int64_t> used_at;
};

// ---------------------------------------------------------------------------------------
// Operators

enum class OperatorRole { kHelpdesk, kAuditor, kAdmin };

struct Operator {
  std::string name;
  OperatorRole role = OperatorRole::kHelpdesk;
  std::string cert_fingerprint;  // SHA-256 of the DER certificate, lower-case hex
  int64_t created_at = 0;
  std::optional<int64_t> revoked_at;
};

// Stable names, as stored and as printed by ma-admin.
std::string_view ToString(PlatformState v);
std::string_view ToString(ChallengeKind v);
std::string_view ToString(RegistrationKind v);
std::string_view ToString(CustodyMode v);
std::string_view ToString(ApprovalState v);
std::string_view ToString(OperatorRole v);

// ---------------------------------------------------------------------------------------

class Vault {
 public:
  virtual ~Vault() = default;

  // --- Platforms
  // Inserts, or updates the keys/certificate/last_seen_at of an existing platform (its
  // created_at and state are kept). Returns the stored row.
  virtual Result<Platform> UpsertPlatform(const Platform& platform,
                                          const std::optional<AuditEvent>& audit) = 0;
  virtual Result<Platform> GetPlatform(std::string_view id) = 0;
  virtual Result<PlatformPage> ListPlatforms(size_t page_size, std::string_view page_token) = 0;
  // The latest inventory of a platform. kNotFound if the platform is unknown or never
  // reported one.
  virtual Result<PlatformInventory> GetPlatformInventory(std::string_view id) = 0;
  // Platforms whose hostname, serial number, asset tag, owner label or machine id contains
  // `text` (ASCII case-insensitive), or whose id starts with it (case-insensitive), by id;
  // at most `limit` (0 → 100, capped at 1000). Empty text: kInvalidArgument.
  virtual Result<std::vector<PlatformSummary>> FindPlatforms(std::string_view text,
                                                             size_t limit) = 0;
  // Every platform with its inventory, package count and latest upload, by id, paged
  // (page_size 0 → 100, capped at 1000): one query per page, for a fleet's compliance view.
  virtual Result<PlatformBackupsPage> ListPlatformBackups(size_t page_size,
                                                          std::string_view page_token) = 0;
  // Marks revoked and ends its sessions. kNotFound.
  virtual Status RevokePlatform(std::string_view id, const AuditEvent& audit) = 0;
  // A pending platform becomes active. kNotFound; kConflict if it is not pending.
  virtual Status AcceptPlatform(std::string_view id, const AuditEvent& audit) = 0;

  // --- Registrations (the "registered" enrollment policy)
  // All or nothing, one audit event for the lot. A digest already registered with the same
  // kind is kept as it was (its label too). Returns how many were new. kInvalidArgument for
  // a digest that is not 32 bytes.
  virtual Result<size_t> RegisterPlatforms(const std::vector<PlatformRegistration>& registrations,
                                           const AuditEvent& audit) = 0;
  // The registration of either digest (an empty one is not looked up), EK key id first.
  // kNotFound if neither is registered.
  virtual Result<PlatformRegistration> FindRegistration(ByteView ek_key_id,
                                                        ByteView ek_cert_sha256) = 0;
  // Every registration, by kind then digest.
  virtual Result<std::vector<PlatformRegistration>> ListRegistrations() = 0;

  // --- Challenges
  // kAlreadyExists if the id is taken.
  virtual Status CreateChallenge(const Challenge& challenge,
                                 const std::optional<AuditEvent>& audit) = 0;
  // Marks the challenge used and returns it, atomically: of any number of concurrent
  // callers exactly one gets it. kNotFound (unknown id), kUnauthenticated (already used
  // or of another kind), kExpired (now >= expires_at).
  virtual Result<Challenge> ConsumeChallenge(std::string_view id, ChallengeKind kind,
                                             int64_t now) = 0;
  // The challenge as ConsumeChallenge would return it, with the same refusals, but left
  // unused: what an instance that did not issue it needs to check the answer before
  // CompleteAuthentication consumes it (several instances on one vault, issue #14).
  virtual Result<Challenge> GetChallenge(std::string_view id, ChallengeKind kind, int64_t now) = 0;
  // Consumes the authenticate challenge, checks the proof hash, upserts the platform,
  // creates the session and appends the audit event, in one transaction. A wrong proof or
  // a challenge issued to another platform still burns the challenge (committed) and
  // returns kUnauthenticated; a revoked platform gets kPermissionDenied (also burnt).
  // Refusals append no audit row: the caller records them with AppendAudit.
  // Returns the consumed challenge.
  virtual Result<Challenge> CompleteAuthentication(const AuthCompletion& completion) = 0;

  // --- Sessions
  virtual Status CreateSession(const Session& session, const std::optional<AuditEvent>& audit) = 0;
  // kNotFound, or kExpired when now >= expires_at.
  virtual Result<Session> GetSession(ByteView token_hash, int64_t now) = 0;
  virtual Status DeleteSession(ByteView token_hash, const std::optional<AuditEvent>& audit) = 0;
  // The platform's sessions that have not expired at `now`, newest first, at most
  // `limit` (0 → 100, capped at 1000); what a helpdesk sees of them. Unknown platform: empty.
  virtual Result<std::vector<Session>> ListSessions(std::string_view platform_id, int64_t now,
                                                    size_t limit) = 0;
  // Removes expired sessions and expired or used challenges; returns how many rows.
  virtual Result<int64_t> PurgeExpired(int64_t now) = 0;

  // --- Packages
  // Takes descriptor.sha256 from the caller, who has hashed the body already (the server
  // does, once, for its reply); it must be 32 bytes (kInvalidArgument otherwise) and the
  // vault does not re-hash the body. size is the body's (the caller's value is ignored).
  // Same id and same digest → kAlreadyStored (nothing written but the audit event); same
  // id and a different digest → kConflict. The source platform must exist (kNotFound).
  virtual Result<PutOutcome> PutPackage(const Package& package, const AuditEvent& audit) = 0;
  virtual Result<Package> GetPackage(std::string_view package_id) = 0;
  virtual Result<PackageDescriptor> GetPackageDescriptor(std::string_view package_id) = 0;
  // Row, key rows and body are gone, and not readable from the file, once this returns.
  virtual Status DeletePackage(std::string_view package_id, const AuditEvent& audit) = 0;
  // kInvalidArgument for a page token this backend did not issue.
  virtual Result<PackagePage> QueryPackages(const PackageQuery& query) = 0;

  // --- Outer wraps (MA key rotation, docs/operations.md "MA key lifecycle")
  virtual Result<std::vector<WrapCount>> CountPackagesByWrapKey() = 0;
  // Up to `limit` ids of the packages whose outer wrap `key_id` holds, oldest upload first.
  virtual Result<std::vector<std::string>> ListPackagesWrappedTo(std::string_view key_id,
                                                                 size_t limit) = 0;
  // Each update in one transaction with `audit`: a package whose wrap is no longer held by
  // its from_key_id (moved by another job meanwhile) or that was deleted is left alone.
  // How many moved.
  virtual Result<int64_t> ReplaceOuterWraps(const std::vector<WrapUpdate>& updates,
                                            const AuditEvent& audit) = 0;
  // Packages whose wrap key is not recorded get `key_id`, with `audit` if there were any;
  // how many.
  virtual Result<int64_t> AssignUnrecordedWraps(std::string_view key_id,
                                                const AuditEvent& audit) = 0;

  // --- Approvals
  // Active at once, or pending if request.require_confirmation. An empty audit.object is
  // filled in with the new approval's id (the caller cannot know it beforehand).
  virtual Result<Approval> CreateApproval(const ApprovalRequest& request,
                                          const AuditEvent& audit) = 0;
  // pending → active. kPermissionDenied if `operator_name` created it, kExpired, kConflict
  // if not pending.
  virtual Result<Approval> ConfirmApproval(int64_t approval_id, std::string_view operator_name,
                                           int64_t now, const AuditEvent& audit) = 0;
  // pending/active → revoked; kConflict otherwise.
  virtual Status RevokeApproval(int64_t approval_id, const AuditEvent& audit) = 0;
  virtual Result<Approval> GetApproval(int64_t approval_id) = 0;
  // Approvals naming `new_platform_id` (all of them if empty), newest first.
  virtual Result<std::vector<Approval>> ListApprovals(std::string_view new_platform_id) = 0;
  // An active, unexpired approval letting `new_platform_id` download `package_id` (whose
  // source must be the approval's old platform). kNotFound if none.
  virtual Result<Approval> FindActiveApproval(std::string_view new_platform_id,
                                              std::string_view package_id, int64_t now) = 0;
  // active → used. kConflict if not active, kExpired if past expires_at.
  virtual Status MarkApprovalUsed(int64_t approval_id, int64_t now, const AuditEvent& audit) = 0;

  // --- Operators
  // kAlreadyExists for a taken name or fingerprint.
  virtual Status AddOperator(const Operator& op, const AuditEvent& audit) = 0;
  virtual Result<Operator> GetOperator(std::string_view name) = 0;
  // Returns revoked operators too; the caller checks revoked_at.
  virtual Result<Operator> GetOperatorByFingerprint(std::string_view fingerprint) = 0;
  virtual Result<std::vector<Operator>> ListOperators() = 0;
  // kNotFound; kConflict if already revoked.
  virtual Status RevokeOperator(std::string_view name, int64_t now, const AuditEvent& audit) = 0;

  // --- Audit
  // For events with no state change of their own (a refused request, a login). Returns seq
  // once the record is durable.
  virtual Result<int64_t> AppendAudit(const AuditEvent& event) = 0;
  // For records of calls that changed nothing (successful reads), where paying an fsync
  // per call would cap the service at the disk's commit rate. The record is validated
  // (kInvalidArgument, as AppendAudit) and queued; it is appended to the same hash chain,
  // in queue order, with the next commit, and this returns WITHOUT waiting for it. A crash
  // can lose the records still queued or in the batch being committed, never more, and
  // never a state change's record (those are written by the state change's own call).
  // The queue is bounded: when it is full this blocks until the writer has taken records
  // out of it (back-pressure), so a read flood slows to the commit rate instead of growing
  // memory. kUnavailable once the vault is shutting down. The default appends durably.
  virtual Status AppendAuditDeferred(const AuditEvent& event) {
    auto seq = AppendAudit(event);
    return seq ? Status() : seq.error();
  }
  // Returns once every record queued by AppendAuditDeferred before this call has been
  // committed or given up (see the backend's stats). For tests, shutdown and ma-admin.
  virtual Status FlushDeferredAudit() { return Status(); }
  virtual Result<AuditPage> ListAudit(const AuditFilter& filter) = 0;
  // kNotFound for a seq not (or no longer: archived) in the vault.
  virtual Result<AuditRecord> GetAuditRecord(int64_t seq) = 0;
  virtual Result<AuditHead> GetAuditHead() = 0;
  // kCorruption naming the first finding: an edited, inserted or deleted record, a log
  // with no genesis record (emptied) or two, a segment gap, an archive not on record in
  // the log, or an append-only trigger missing or changed. What it cannot see (a cut
  // tail, a re-chained log) needs a signed checkpoint: docs/reliability.md.
  virtual Result<AuditChainReport> CheckAuditChain() = 0;
  Status VerifyAuditChain() {
    auto r = CheckAuditChain();
    return r ? Status() : r.error();
  }
  // Retention: removes records up to `through_seq` (which the caller has written, with a
  // checkpoint, to an archive file whose SHA-256 is `archive_sha256`), records the segment
  // and appends `audit` (action kAuditArchiveAction, object the seq), in one transaction.
  // kInvalidArgument unless archived_through < through_seq < the head's seq.
  virtual Status ArchiveAudit(int64_t through_seq, ByteView archive_sha256,
                              const AuditEvent& audit) = 0;
  virtual Result<std::vector<AuditSegment>> ListAuditSegments() = 0;

  // --- Maintenance
  // Backend self-check plus VerifyAuditChain; kCorruption on any finding.
  virtual Status IntegrityCheck() = 0;

  // What the backend counted (storage/vault_stats.h), for metrics; never blocks on the
  // database. The default: nothing counted.
  virtual VaultStats Stats() const { return {}; }
};

}  // namespace tpmma::storage
