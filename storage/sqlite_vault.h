// SPDX-License-Identifier: GPL-2.0-or-later
// The embedded default Vault: one SQLite file (WAL, synchronous=FULL).
//
// Threading: every state-changing call is handed to one writer thread, which owns the
// only read-write connection and runs queued calls in batches: one transaction and one
// fsync-ed COMMIT per batch (group commit), each call in its own SAVEPOINT so that one
// call's failure never undoes another's. Deferred audit records (AppendAuditDeferred:
// successful reads) ride along in the next batch without their caller waiting for it. A durable
// commit costs an fsync (~3-4k/s here), so sharing it is what lifts write throughput; the caller
// still blocks until the COMMIT holding its call has returned, so "OK" keeps meaning "durable"
// (storage/README.md). Reads use a small pool of read-only connections: WAL readers see the last
// committed state and never wait behind the writer's fsync. Other processes (ma-admin) may open the
// same file: BEGIN IMMEDIATE plus busy_timeout serialises writers across processes.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <type_traits>

#include "storage/vault.h"

namespace tpmma::storage {

namespace sqlite {  // storage/sqlite/
class Writer;
class ReadPool;
}  // namespace sqlite

// Test hook. Called on the writer thread inside the open transaction: between the rows of
// multi-row writes ("package_row", "package_body", "package_key" after each key,
// "approval_row", "approval_package", "before_commit"), after each deferred audit record
// ("deferred_audit") and once per batch just before its COMMIT ("commit"). Tests crash the
// process there, hold the writer, or return a non-OK Status: at a row step that call fails
// (and is rolled back to its savepoint), at "deferred_audit" that record is given up, at
// "commit" the batch fails exactly as if COMMIT had. A hook returning void never fails a step.
class FaultHook {
 public:
  FaultHook() = default;
  template <typename F,
            typename = std::enable_if_t<!std::is_same_v<std::remove_cvref_t<F>, FaultHook> &&
                                        std::is_invocable_v<F&, std::string_view>>>
  FaultHook(F f) {  // NOLINT(google-explicit-constructor): `o.fault_hook = lambda;`
    if constexpr (std::is_void_v<std::invoke_result_t<F&, std::string_view>>) {
      fn_ = [f = std::move(f)](std::string_view step) mutable {
        f(step);
        return Status();
      };
    } else {
      fn_ = std::move(f);
    }
  }
  explicit operator bool() const { return static_cast<bool>(fn_); }
  Status operator()(std::string_view step) const { return fn_ ? fn_(step) : Status(); }

 private:
  std::function<Status(std::string_view)> fn_;
};

struct SqliteVaultOptions {
  // How long a writer waits for another process's write lock before kUnavailable.
  int busy_timeout_ms = 5000;
  // Group commit: at most this many queued calls share one transaction and its fsync.
  // A cap, not a target (the writer never waits to fill a batch): it bounds how long a
  // caller waits for the calls ahead of it in its batch. 0 counts as 1.
  size_t max_batch = 64;
  // false: one transaction and one fsync per call (batches of 1), for benchmarks.
  bool group_commit = true;
  // Read-only connections shared by all reading threads. 0 counts as 1.
  size_t read_connections = 4;
  // AppendAuditDeferred: at most this many records wait for the writer; a caller finding
  // the queue full blocks until there is room (back-pressure). It is also the most a crash
  // can lose beyond the batch being committed. 0 counts as 1.
  size_t max_deferred_audit = 8192;
  // When the writer has only deferred audit records to write, it waits up to this long for
  // more (or for half the queue, a write call, a flush) before committing them: one fsync
  // per interval instead of one per read. A crash loses at most this much more. 0: no wait.
  uint32_t deferred_audit_delay_ms = 10;
  FaultHook fault_hook;
  // The SQLite VFS (registered by name) every connection uses; empty: the default. What
  // the vault's file I/O goes through, so tests can inject disk-full, fsync and read-only
  // faults (tests/storage/sqlite_fault_vfs.h), as LevelDB's Env does.
  std::string vfs;
};

// Counters for tests and benchmarks; monotonic except `queued`.
struct SqliteVaultStats {
  uint64_t calls = 0;          // write calls completed (whatever their outcome)
  uint64_t commits = 0;        // COMMITs that succeeded (one fsync each)
  uint64_t largest_batch = 0;  // most calls that ever shared one transaction
  uint64_t queued = 0;         // write calls waiting for the writer thread right now
  // AppendAuditDeferred records.
  uint64_t deferred_queued = 0;     // waiting for the writer right now (<= max_deferred_audit)
  uint64_t deferred_committed = 0;  // in the chain and durable
  uint64_t deferred_lost = 0;       // given up: their batch failed to commit
  uint64_t deferred_waits = 0;      // callers that found the queue full and had to wait
  uint64_t deferred_blocked = 0;    // callers waiting for room right now
};

class SqliteVault final : public Vault {
 public:
  // The schema version this build writes (PRAGMA user_version).
  static int SchemaVersion();
  // PRAGMA application_id of tpm-ma vault files ("TPMA").
  static constexpr int32_t kApplicationId = 0x54504d41;

  // Creates the file (mode 0600) if missing and migrates it forward. kVersionTooNew if the
  // file is newer than this build, kInvalidArgument if it is another program's SQLite
  // file, kCorruption if it is not SQLite at all.
  static Result<std::unique_ptr<SqliteVault>> Open(const std::string& path,
                                                   SqliteVaultOptions options = {});
  // Runs and commits every call already queued, then stops the writer thread. No call may
  // still be in progress on another thread.
  ~SqliteVault() override;
  SqliteVault(const SqliteVault&) = delete;
  SqliteVault& operator=(const SqliteVault&) = delete;

  SqliteVaultStats GetStats() const;
  // GetStats() in the backend-neutral shape, with the batch-size histogram.
  VaultStats Stats() const override;

  Result<Platform> UpsertPlatform(const Platform& platform,
                                  const std::optional<AuditEvent>& audit) override;
  Result<Platform> GetPlatform(std::string_view id) override;
  Result<PlatformPage> ListPlatforms(size_t page_size, std::string_view page_token) override;
  Result<PlatformInventory> GetPlatformInventory(std::string_view id) override;
  Result<std::vector<PlatformSummary>> FindPlatforms(std::string_view text, size_t limit) override;
  Result<PlatformBackupsPage> ListPlatformBackups(size_t page_size,
                                                  std::string_view page_token) override;
  Status RevokePlatform(std::string_view id, const AuditEvent& audit) override;
  Status AcceptPlatform(std::string_view id, const AuditEvent& audit) override;
  Result<size_t> RegisterPlatforms(const std::vector<PlatformRegistration>& registrations,
                                   const AuditEvent& audit) override;
  Result<PlatformRegistration> FindRegistration(ByteView ek_key_id,
                                                ByteView ek_cert_sha256) override;
  Result<std::vector<PlatformRegistration>> ListRegistrations() override;

  Status CreateChallenge(const Challenge& challenge,
                         const std::optional<AuditEvent>& audit) override;
  Result<Challenge> ConsumeChallenge(std::string_view id, ChallengeKind kind, int64_t now) override;
  Result<Challenge> GetChallenge(std::string_view id, ChallengeKind kind, int64_t now) override;
  Result<Challenge> CompleteAuthentication(const AuthCompletion& completion) override;

  Status CreateSession(const Session& session, const std::optional<AuditEvent>& audit) override;
  Result<Session> GetSession(ByteView token_hash, int64_t now) override;
  Status DeleteSession(ByteView token_hash, const std::optional<AuditEvent>& audit) override;
  Result<std::vector<Session>> ListSessions(std::string_view platform_id, int64_t now,
                                            size_t limit) override;
  Result<int64_t> PurgeExpired(int64_t now) override;

  Result<PutOutcome> PutPackage(const Package& package, const AuditEvent& audit) override;
  Result<Package> GetPackage(std::string_view package_id) override;
  Result<PackageDescriptor> GetPackageDescriptor(std::string_view package_id) override;
  Status DeletePackage(std::string_view package_id, const AuditEvent& audit) override;
  Result<PackagePage> QueryPackages(const PackageQuery& query) override;
  Result<std::vector<WrapCount>> CountPackagesByWrapKey() override;
  Result<std::vector<std::string>> ListPackagesWrappedTo(std::string_view key_id,
                                                         size_t limit) override;
  Result<int64_t> ReplaceOuterWraps(const std::vector<WrapUpdate>& updates,
                                    const AuditEvent& audit) override;
  Result<int64_t> AssignUnrecordedWraps(std::string_view key_id, const AuditEvent& audit) override;

  Result<Approval> CreateApproval(const ApprovalRequest& request, const AuditEvent& audit) override;
  Result<Approval> ConfirmApproval(int64_t approval_id, std::string_view operator_name, int64_t now,
                                   const AuditEvent& audit) override;
  Status RevokeApproval(int64_t approval_id, const AuditEvent& audit) override;
  Result<Approval> GetApproval(int64_t approval_id) override;
  Result<std::vector<Approval>> ListApprovals(std::string_view new_platform_id) override;
  Result<Approval> FindActiveApproval(std::string_view new_platform_id, std::string_view package_id,
                                      int64_t now) override;
  Status MarkApprovalUsed(int64_t approval_id, int64_t now, const AuditEvent& audit) override;

  Status AddOperator(const Operator& op, const AuditEvent& audit) override;
  Result<Operator> GetOperator(std::string_view name) override;
  Result<Operator> GetOperatorByFingerprint(std::string_view fingerprint) override;
  Result<std::vector<Operator>> ListOperators() override;
  Status RevokeOperator(std::string_view name, int64_t now, const AuditEvent& audit) override;

  Result<int64_t> AppendAudit(const AuditEvent& event) override;
  Status AppendAuditDeferred(const AuditEvent& event) override;
  Status FlushDeferredAudit() override;
  Result<AuditPage> ListAudit(const AuditFilter& filter) override;
  Result<AuditRecord> GetAuditRecord(int64_t seq) override;
  Result<AuditHead> GetAuditHead() override;
  Result<AuditChainReport> CheckAuditChain() override;
  Status ArchiveAudit(int64_t through_seq, ByteView archive_sha256,
                      const AuditEvent& audit) override;
  Result<std::vector<AuditSegment>> ListAuditSegments() override;

  Status IntegrityCheck() override;

 private:
  SqliteVault(SqliteVaultOptions options, std::unique_ptr<sqlite::ReadPool> readers);

  // Declared before the writer and readers, which refer to the hook in it.
  SqliteVaultOptions options_;
  std::unique_ptr<sqlite::ReadPool> readers_;
  std::unique_ptr<sqlite::Writer> writer_;
};

}  // namespace tpmma::storage
