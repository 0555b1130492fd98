// SPDX-License-Identifier: GPL-2.0-or-later
// The Vault on PostgreSQL (issue #14): several MA instances share one database, so every
// decision that must be taken once (a challenge consumed, an approval used, the next audit
// record) is taken inside the database, under a row lock, in the call's own transaction.
//
// Threading: a fixed pool of connections; a call borrows one for its transaction. Each call
// is one transaction committed before it returns (synchronous_commit on), so "OK" means
// durable as in SqliteVault. No group commit yet: PostgreSQL shares WAL flushes between
// concurrent committers itself, and correctness came first (storage/README.md).
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "storage/vault.h"
#include "storage/vault_copy.h"

namespace tpmma::storage {

namespace postgres {  // storage/postgres/
class ConnPool;
class GroupCommit;
}  // namespace postgres

struct PostgresVaultOptions {
  // Connections shared by the calling threads. 0 counts as 1.
  size_t connections = 4;
  // How long a call waits for a row lock another instance holds before kUnavailable.
  int lock_timeout_ms = 5000;
  // Group commit (storage/postgres/group_commit.h): at most this many write calls queued at
  // the same time share one transaction, its WAL flush and its hold on the audit head. 1:
  // one transaction per call.
  size_t max_batch = 64;
  // The password (read from a password file by the caller), added to the conninfo's
  // parameters; empty: the conninfo's own, PGPASSWORD or PGPASSFILE. Never printed.
  std::string password;
};

// What PostgresVault::ImportIntoEmpty wrote, read back inside its transaction.
struct PostgresImportReport {
  CopyCounts counts;       // rows per table in the target (count(*)), CopyTables() order
  AuditChainReport chain;  // the target's CheckAuditChain
  Bytes head_hash;         // the target's audit_head: the hash of record chain.last_seq
};

class PostgresVault final : public Vault {
 public:
  // The schema version this build writes (table schema_version).
  static int SchemaVersion();

  // `conninfo`: a libpq connection string or postgresql:// URL (a password in it, in
  // PGPASSWORD or in a password file is never printed). Migrates the database forward
  // (one instance at a time: an advisory lock). kVersionTooNew if it is newer than this
  // build, kInvalidArgument if it holds another program's tables, kPermissionDenied if the
  // role may not create the schema, kUnavailable if the server cannot be reached.
  static Result<std::unique_ptr<PostgresVault>> Open(const std::string& conninfo,
                                                     PostgresVaultOptions options = {});
  // Whether `conninfo` itself carries a password (the server refuses one: passwords belong in
  // a password file). kInvalidArgument if it does not parse.
  static Result<bool> ConnInfoHasPassword(const std::string& conninfo);
  // Host, port, database and user of `conninfo`, for messages; never the password.
  static Result<std::string> DescribeConnInfo(const std::string& conninfo);

  // A whole vault copied in (`ma-admin vault migrate`): in ONE transaction on the database
  // `conninfo` names, which must hold no tables (kAlreadyExists for a vault, however new:
  // its vault id and genesis are write-once), creates the schema without a vault id or
  // genesis, runs `source` (which writes every table of CopyTables() into the sink it is
  // given: ids, times, audit seqs and hashes as the source stored them), moves audit_head to
  // the last record, and before COMMIT checks that each table holds the rows it was given
  // and that the chain verifies (CheckAuditChain) and ends at the last record given.
  // Anything failing rolls all of it back: the database is left as empty as it was.
  static Result<PostgresImportReport> ImportIntoEmpty(
      const std::string& conninfo, const PostgresVaultOptions& options,
      const std::function<Status(CopySink&)>& source);

  ~PostgresVault() override;
  PostgresVault(const PostgresVault&) = delete;
  PostgresVault& operator=(const PostgresVault&) = delete;

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

  // Durable, as AppendAudit: the deferred path of this backend appends synchronously (the
  // Vault default), so FlushDeferredAudit has nothing to wait for.
  Result<int64_t> AppendAudit(const AuditEvent& event) override;
  Result<AuditPage> ListAudit(const AuditFilter& filter) override;
  Result<AuditRecord> GetAuditRecord(int64_t seq) override;
  Result<AuditHead> GetAuditHead() override;
  Result<AuditChainReport> CheckAuditChain() override;
  Status ArchiveAudit(int64_t through_seq, ByteView archive_sha256,
                      const AuditEvent& audit) override;
  Result<std::vector<AuditSegment>> ListAuditSegments() override;

  Status IntegrityCheck() override;

  // Group commit's batches; nothing deferred (reads' audit records are appended durably).
  VaultStats Stats() const override;

 private:
  PostgresVault(std::unique_ptr<postgres::ConnPool> pool, size_t max_batch);

  std::unique_ptr<postgres::ConnPool> pool_;
  std::unique_ptr<postgres::GroupCommit> writes_;  // every write call goes through it
};

}  // namespace tpmma::storage
