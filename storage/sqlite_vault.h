// SPDX-License-Identifier: GPL-2.0-or-later
// The embedded default Vault: one SQLite file (WAL, synchronous=FULL).
//
// Threading: one connection, guarded by one mutex, for reads and writes alike. Every
// call holds the mutex for its whole transaction, which also makes the audit chain
// (read last hash, append) race-free. Durable commits are fsync-bound (~3-4k/s here),
// so the lock is not the bottleneck; the server's single writer thread with group
// commit is where throughput comes from later. Other processes (ma-admin) may open the
// same file: BEGIN IMMEDIATE plus busy_timeout serialises writers across processes.
#pragma once

#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

#include "storage/vault.h"

struct sqlite3;

namespace tpmma::storage {

struct SqliteVaultOptions {
  // How long a writer waits for another process's write lock before kUnavailable.
  int busy_timeout_ms = 5000;
  // Test hook, called between the rows of multi-row writes (e.g. "package_key" after each
  // key row) inside the open transaction; tests crash the process there.
  std::function<void(std::string_view step)> fault_hook;
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
  ~SqliteVault() override;
  SqliteVault(const SqliteVault&) = delete;
  SqliteVault& operator=(const SqliteVault&) = delete;

  Result<Platform> UpsertPlatform(const Platform& platform,
                                  const std::optional<AuditEvent>& audit) override;
  Result<Platform> GetPlatform(std::string_view id) override;
  Result<PlatformPage> ListPlatforms(size_t page_size, std::string_view page_token) override;
  Status RevokePlatform(std::string_view id, const AuditEvent& audit) override;

  Status CreateChallenge(const Challenge& challenge,
                         const std::optional<AuditEvent>& audit) override;
  Result<Challenge> ConsumeChallenge(std::string_view id, ChallengeKind kind, int64_t now) override;
  Result<Challenge> CompleteAuthentication(const AuthCompletion& completion) override;

  Status CreateSession(const Session& session, const std::optional<AuditEvent>& audit) override;
  Result<Session> GetSession(ByteView token_hash, int64_t now) override;
  Status DeleteSession(ByteView token_hash, const std::optional<AuditEvent>& audit) override;
  Result<int64_t> PurgeExpired(int64_t now) override;

  Result<PutOutcome> PutPackage(const Package& package, const AuditEvent& audit) override;
  Result<Package> GetPackage(std::string_view package_id) override;
  Result<PackageDescriptor> GetPackageDescriptor(std::string_view package_id) override;
  Status DeletePackage(std::string_view package_id, const AuditEvent& audit) override;
  Result<PackagePage> QueryPackages(const PackageQuery& query) override;

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
  Result<AuditPage> ListAudit(const AuditFilter& filter) override;
  Status VerifyAuditChain() override;

  Status IntegrityCheck() override;

 private:
  struct DbCloser {
    void operator()(sqlite3* db) const;
  };
  using DbPtr = std::unique_ptr<sqlite3, DbCloser>;

  SqliteVault(DbPtr db, SqliteVaultOptions options);

  std::mutex mu_;
  DbPtr db_;
  SqliteVaultOptions options_;
};

}  // namespace tpmma::storage
