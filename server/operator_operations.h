// SPDX-License-Identifier: GPL-2.0-or-later
// The operator operations (wsdl/operator.wsdl) as plain C++ over the vault's structs:
// who the caller is (an active operator whose TLS client certificate fingerprint the
// front end verified), whether their role may make the call, the call itself, and its
// audit record as "operator:<name>". No gSOAP type here: operator_service.cc decodes,
// calls and encodes.
//
// Roles: any operator may WhoAmI and list platforms, packages and approvals; helpdesk and
// admin approve, confirm and revoke approvals; admin revokes platforms; auditor and admin
// read and verify the audit log. Every call, refused or not, is audited.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/env.h"
#include "common/status.h"
#include "server/approvals.h"
#include "server/refusal_limiter.h"
#include "storage/vault.h"

namespace tpmma::server {

// One call: the caller's certificate in, who and what out (for the request log line).
struct OperatorCall {
  std::string client_cert_fingerprint;  // SHA-256 hex, empty without a certificate
  std::string peer;                     // "192.0.2.1:5000" (RequestInfo), in every audit row
  std::string op;                       // "Approve", ...
  std::string actor = "anonymous";      // "operator:<name>" once known
  std::string object;
  bool audited = false;  // a state change wrote its own record
};

class OperatorOperations {
 public:
  // `limiter` (may be null: every refusal audited) counts refusals of callers that are no
  // operator (no certificate, an unknown one) per peer instead of auditing each (finding 3).
  OperatorOperations(storage::Vault* vault, Env* env, const ApprovalRules& rules,
                     RefusalLimiter* limiter = nullptr)
      : vault_(vault), env_(env), rules_(rules), limiter_(limiter) {}

  // The [approvals] rules Approve applies (a console page says when a second operator
  // must confirm).
  const ApprovalRules& approval_rules() const { return rules_; }

  // Whether `role` may call operation `op` ("Approve", "ListAudit", "RevokePlatform"): the
  // table every call is authorized by, for a page that offers only what its caller may do.
  static bool RoleMay(storage::OperatorRole role, std::string_view op);

  // A requested page size: 0 or less is the default (100), at most 500.
  static size_t PageSize(int requested);

  Result<storage::Operator> WhoAmI(OperatorCall* call);
  // Who the caller is, for a console page that shows what their role may do: like WhoAmI,
  // but a success writes no audit row (the page's own call does); a refusal does.
  Result<storage::Operator> Identify(OperatorCall* call);
  Result<storage::PlatformPage> ListPlatforms(size_t page_size, const std::string& page_token,
                                              OperatorCall* call);
  // Platforms whose hostname, serial, asset tag, owner label or machine id contains `text`,
  // or whose id starts with it (Vault::FindPlatforms), at most 100.
  Result<std::vector<storage::PlatformSummary>> FindPlatforms(const std::string& text,
                                                              OperatorCall* call);
  // One platform and its latest inventory (none if it never reported one).
  Result<storage::PlatformSummary> GetPlatform(const std::string& platform_id, OperatorCall* call);
  // One page of every platform with its backups (Vault::ListPlatformBackups), page_size
  // as PageSize().
  Result<storage::PlatformBackupsPage> ListPlatformBackups(size_t page_size,
                                                           const std::string& page_token,
                                                           OperatorCall* call);
  // The platform's open (unexpired) sessions, newest first, at most 100; token hashes
  // left empty.
  Result<std::vector<storage::Session>> ListSessions(const std::string& platform_id,
                                                     OperatorCall* call);
  Status RevokePlatform(const std::string& platform_id, const std::string& reason,
                        OperatorCall* call);
  Result<storage::PackagePage> ListPackages(const storage::PackageQuery& query, OperatorCall* call);
  Result<storage::Approval> Approve(const ApprovalGrant& grant, OperatorCall* call);
  Result<storage::Approval> ConfirmApproval(int64_t approval_id, OperatorCall* call);
  Status RevokeApproval(int64_t approval_id, const std::string& reason, OperatorCall* call);
  Result<std::vector<storage::Approval>> ListApprovals(const std::string& new_platform_id,
                                                       OperatorCall* call);
  Result<storage::AuditPage> ListAudit(const storage::AuditFilter& filter, OperatorCall* call);
  // The chain checked; the number of the last record.
  Result<int64_t> VerifyAudit(OperatorCall* call);

 private:
  // Who is calling, and may they: fills call->op/actor/object.
  Result<storage::Operator> Authorize(OperatorCall* call, const char* op, std::string object);
  // Audits reads and refusals (state changes audit themselves inside their transaction).
  Status Finish(OperatorCall* call, Status s);
  template <typename T>
  Result<T> Finish(OperatorCall* call, Result<T> r) {
    Status s = Finish(call, r ? Status::Ok() : r.error());
    if (!s.ok()) return Error(std::move(s));
    return r;
  }
  storage::AuditEvent Event(const OperatorCall& call, std::string detail,
                            std::string outcome = "ok") const;

  storage::Vault* vault_;
  Env* env_;
  ApprovalRules rules_;
  RefusalLimiter* limiter_;
};

}  // namespace tpmma::server
