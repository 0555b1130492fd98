// SPDX-License-Identifier: GPL-2.0-or-later
// Each call forwarded as it is; only its outcome is looked at.
#include "storage/counting_vault.h"

namespace tpmma::storage {

VaultStats CountingVault::Stats() const {
  VaultStats s = inner_->Stats();
  s.errors = errors();
  return s;
}

Result<Platform> CountingVault::UpsertPlatform(const Platform& platform,
                                               const std::optional<AuditEvent>& audit) {
  return Count(inner_->UpsertPlatform(platform, audit));
}

Result<Platform> CountingVault::GetPlatform(std::string_view id) {
  return Count(inner_->GetPlatform(id));
}

Result<PlatformPage> CountingVault::ListPlatforms(size_t page_size, std::string_view page_token) {
  return Count(inner_->ListPlatforms(page_size, page_token));
}

Result<PlatformInventory> CountingVault::GetPlatformInventory(std::string_view id) {
  return Count(inner_->GetPlatformInventory(id));
}

Result<PlatformBackupsPage> CountingVault::ListPlatformBackups(size_t page_size,
                                                               std::string_view page_token) {
  return Count(inner_->ListPlatformBackups(page_size, page_token));
}

Result<std::vector<PlatformSummary>> CountingVault::FindPlatforms(std::string_view text,
                                                                  size_t limit) {
  return Count(inner_->FindPlatforms(text, limit));
}

Status CountingVault::RevokePlatform(std::string_view id, const AuditEvent& audit) {
  return Count(inner_->RevokePlatform(id, audit));
}

Status CountingVault::AcceptPlatform(std::string_view id, const AuditEvent& audit) {
  return Count(inner_->AcceptPlatform(id, audit));
}

Result<size_t> CountingVault::RegisterPlatforms(
    const std::vector<PlatformRegistration>& registrations, const AuditEvent& audit) {
  return Count(inner_->RegisterPlatforms(registrations, audit));
}

Result<PlatformRegistration> CountingVault::FindRegistration(ByteView ek_key_id,
                                                             ByteView ek_cert_sha256) {
  return Count(inner_->FindRegistration(ek_key_id, ek_cert_sha256));
}

Result<std::vector<PlatformRegistration>> CountingVault::ListRegistrations() {
  return Count(inner_->ListRegistrations());
}

Status CountingVault::CreateChallenge(const Challenge& challenge,
                                      const std::optional<AuditEvent>& audit) {
  return Count(inner_->CreateChallenge(challenge, audit));
}

Result<Challenge> CountingVault::GetChallenge(std::string_view id, ChallengeKind kind,
                                              int64_t now) {
  return Count(inner_->GetChallenge(id, kind, now));
}

Result<Challenge> CountingVault::ConsumeChallenge(std::string_view id, ChallengeKind kind,
                                                  int64_t now) {
  return Count(inner_->ConsumeChallenge(id, kind, now));
}

Result<Challenge> CountingVault::CompleteAuthentication(const AuthCompletion& completion) {
  return Count(inner_->CompleteAuthentication(completion));
}

Status CountingVault::CreateSession(const Session& session,
                                    const std::optional<AuditEvent>& audit) {
  return Count(inner_->CreateSession(session, audit));
}

Result<Session> CountingVault::GetSession(ByteView token_hash, int64_t now) {
  return Count(inner_->GetSession(token_hash, now));
}

Status CountingVault::DeleteSession(ByteView token_hash, const std::optional<AuditEvent>& audit) {
  return Count(inner_->DeleteSession(token_hash, audit));
}

Result<std::vector<Session>> CountingVault::ListSessions(std::string_view platform_id, int64_t now,
                                                         size_t limit) {
  return Count(inner_->ListSessions(platform_id, now, limit));
}

Result<int64_t> CountingVault::PurgeExpired(int64_t now) {
  return Count(inner_->PurgeExpired(now));
}

Result<PutOutcome> CountingVault::PutPackage(const Package& package, const AuditEvent& audit) {
  return Count(inner_->PutPackage(package, audit));
}

Result<Package> CountingVault::GetPackage(std::string_view package_id) {
  return Count(inner_->GetPackage(package_id));
}

Result<std::vector<WrapCount>> CountingVault::CountPackagesByWrapKey() {
  return Count(inner_->CountPackagesByWrapKey());
}

Result<std::vector<std::string>> CountingVault::ListPackagesWrappedTo(std::string_view key_id,
                                                                      size_t limit) {
  return Count(inner_->ListPackagesWrappedTo(key_id, limit));
}

Result<int64_t> CountingVault::ReplaceOuterWraps(const std::vector<WrapUpdate>& updates,
                                                 const AuditEvent& audit) {
  return Count(inner_->ReplaceOuterWraps(updates, audit));
}

Result<int64_t> CountingVault::AssignUnrecordedWraps(std::string_view key_id,
                                                     const AuditEvent& audit) {
  return Count(inner_->AssignUnrecordedWraps(key_id, audit));
}

Result<PackageDescriptor> CountingVault::GetPackageDescriptor(std::string_view package_id) {
  return Count(inner_->GetPackageDescriptor(package_id));
}

Status CountingVault::DeletePackage(std::string_view package_id, const AuditEvent& audit) {
  return Count(inner_->DeletePackage(package_id, audit));
}

Result<PackagePage> CountingVault::QueryPackages(const PackageQuery& query) {
  return Count(inner_->QueryPackages(query));
}

Result<Approval> CountingVault::CreateApproval(const ApprovalRequest& request,
                                               const AuditEvent& audit) {
  return Count(inner_->CreateApproval(request, audit));
}

Result<Approval> CountingVault::ConfirmApproval(int64_t approval_id, std::string_view operator_name,
                                                int64_t now, const AuditEvent& audit) {
  return Count(inner_->ConfirmApproval(approval_id, operator_name, now, audit));
}

Status CountingVault::RevokeApproval(int64_t approval_id, const AuditEvent& audit) {
  return Count(inner_->RevokeApproval(approval_id, audit));
}

Result<Approval> CountingVault::GetApproval(int64_t approval_id) {
  return Count(inner_->GetApproval(approval_id));
}

Result<std::vector<Approval>> CountingVault::ListApprovals(std::string_view new_platform_id) {
  return Count(inner_->ListApprovals(new_platform_id));
}

Result<Approval> CountingVault::FindActiveApproval(std::string_view new_platform_id,
                                                   std::string_view package_id, int64_t now) {
  return Count(inner_->FindActiveApproval(new_platform_id, package_id, now));
}

Status CountingVault::MarkApprovalUsed(int64_t approval_id, int64_t now, const AuditEvent& audit) {
  return Count(inner_->MarkApprovalUsed(approval_id, now, audit));
}

Status CountingVault::AddOperator(const Operator& op, const AuditEvent& audit) {
  return Count(inner_->AddOperator(op, audit));
}

Result<Operator> CountingVault::GetOperator(std::string_view name) {
  return Count(inner_->GetOperator(name));
}

Result<Operator> CountingVault::GetOperatorByFingerprint(std::string_view fingerprint) {
  return Count(inner_->GetOperatorByFingerprint(fingerprint));
}

Result<std::vector<Operator>> CountingVault::ListOperators() {
  return Count(inner_->ListOperators());
}

Status CountingVault::RevokeOperator(std::string_view name, int64_t now, const AuditEvent& audit) {
  return Count(inner_->RevokeOperator(name, now, audit));
}

Result<int64_t> CountingVault::AppendAudit(const AuditEvent& event) {
  return Count(inner_->AppendAudit(event));
}

Status CountingVault::AppendAuditDeferred(const AuditEvent& event) {
  return Count(inner_->AppendAuditDeferred(event));
}

Status CountingVault::FlushDeferredAudit() {
  return Count(inner_->FlushDeferredAudit());
}

Result<AuditPage> CountingVault::ListAudit(const AuditFilter& filter) {
  return Count(inner_->ListAudit(filter));
}

Result<AuditRecord> CountingVault::GetAuditRecord(int64_t seq) {
  return Count(inner_->GetAuditRecord(seq));
}

Result<AuditHead> CountingVault::GetAuditHead() {
  return Count(inner_->GetAuditHead());
}

Result<AuditChainReport> CountingVault::CheckAuditChain() {
  return Count(inner_->CheckAuditChain());
}

Status CountingVault::ArchiveAudit(int64_t through_seq, ByteView archive_sha256,
                                   const AuditEvent& audit) {
  return Count(inner_->ArchiveAudit(through_seq, archive_sha256, audit));
}

Result<std::vector<AuditSegment>> CountingVault::ListAuditSegments() {
  return Count(inner_->ListAuditSegments());
}

Status CountingVault::IntegrityCheck() {
  return Count(inner_->IntegrityCheck());
}

}  // namespace tpmma::storage
