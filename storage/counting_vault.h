// SPDX-License-Identifier: GPL-2.0-or-later
// A Vault that forwards every call to another and counts the calls that failed because the
// vault did (kIoError, kCorruption, kUnavailable), as opposed to refusing the caller
// (kNotFound, kConflict, ...). One place for that count whatever the backend, so that
// VaultStats::errors means the same on SQLite and PostgreSQL (ma-server's GET /metrics).
#pragma once

#include <atomic>
#include <cstdint>

#include "storage/vault.h"

namespace tpmma::storage {

// Whether `code` says the vault failed (the errors CountingVault counts).
constexpr bool IsVaultFailure(Code code) {
  return code == Code::kIoError || code == Code::kCorruption || code == Code::kUnavailable;
}

class CountingVault final : public Vault {
 public:
  // `inner` must outlive this.
  explicit CountingVault(Vault* inner) : inner_(inner) {}
  CountingVault(const CountingVault&) = delete;
  CountingVault& operator=(const CountingVault&) = delete;

  uint64_t errors() const { return errors_.load(std::memory_order_relaxed); }
  // The inner vault's stats with `errors` filled in.
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
  Status Count(Status s) {
    if (IsVaultFailure(s.code())) errors_.fetch_add(1, std::memory_order_relaxed);
    return s;
  }
  template <typename T>
  Result<T> Count(Result<T> r) {
    if (!r.has_value() && IsVaultFailure(r.error().code())) {
      errors_.fetch_add(1, std::memory_order_relaxed);
    }
    return r;
  }

  Vault* const inner_;
  std::atomic<uint64_t> errors_{0};
};

}  // namespace tpmma::storage
