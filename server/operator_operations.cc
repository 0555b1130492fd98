// SPDX-License-Identifier: GPL-2.0-or-later
#include "server/operator_operations.h"

#include <algorithm>
#include <initializer_list>
#include <optional>
#include <utility>

#include <fmt/format.h>

#include "common/text.h"

namespace tpmma::server {

using storage::OperatorRole;

namespace {

constexpr size_t kMaxPage = 500;

enum Roles : unsigned {
  kHelpdesk = 1,
  kAuditor = 2,
  kAdmin = 4,
  kAnyRole = 7,
  kAdminOnly = kAdmin,
  kHelpdeskOrAdmin = kHelpdesk | kAdmin,
  kAuditorOrAdmin = kAuditor | kAdmin,
};

// Who may call what: one table, for Authorize and for pages that offer only what the
// caller's role may do (RoleMay).
struct OpRoles {
  std::string_view op;
  unsigned roles;
};
constexpr OpRoles kOpRoles[] = {
    {"WhoAmI", kAnyRole},
    {"Console", kAnyRole},
    {"ListPlatforms", kAnyRole},
    {"FindPlatforms", kAnyRole},
    {"GetPlatform", kAnyRole},
    {"ListPlatformBackups", kAnyRole},
    {"ListSessions", kAnyRole},
    {"ListPackages", kAnyRole},
    {"ListApprovals", kAnyRole},
    {"Approve", kHelpdeskOrAdmin},
    {"ConfirmApproval", kHelpdeskOrAdmin},
    {"RevokeApproval", kHelpdeskOrAdmin},
    {"RevokePlatform", kAdminOnly},
    {"ListAudit", kAuditorOrAdmin},
    {"VerifyAudit", kAuditorOrAdmin},
};

// An operation not in the table is no one's.
unsigned RolesOf(std::string_view op) {
  for (const OpRoles& o : kOpRoles) {
    if (o.op == op) return o.roles;
  }
  return 0;
}

unsigned Bit(OperatorRole r) {
  switch (r) {
    case OperatorRole::kHelpdesk:
      return kHelpdesk;
    case OperatorRole::kAuditor:
      return kAuditor;
    case OperatorRole::kAdmin:
      return kAdmin;
  }
  return 0;
}

std::string Clip(std::string_view s) {
  return std::string(s.substr(0, 256));
}

constexpr size_t kMaxAuditField = 1000;

// Identifiers from the request (platform, package ids, filters, page tokens) hold no
// control character: refused with the field's name before anything uses them (finding 4).
Status CheckIds(std::initializer_list<std::pair<std::string_view, std::string_view>> fields) {
  for (const auto& [name, value] : fields) {
    if (HasControlCharacter(value)) {
      return Status(Code::kSchemaViolation, std::string(name) + " holds a control character");
    }
  }
  return Status::Ok();
}

std::string_view Opt(const std::optional<std::string>& v) {
  return v ? std::string_view(*v) : std::string_view();
}

}  // namespace

size_t OperatorOperations::PageSize(int requested) {
  return requested <= 0 ? 100 : std::min(static_cast<size_t>(requested), kMaxPage);
}

// The peer first (finding 9: an anonymous caller is otherwise untraceable), then the
// detail (a reason the operator typed). Every text field escaped and clipped (ForAudit):
// an object or reason from the request never reaches the vault raw (finding 4).
storage::AuditEvent OperatorOperations::Event(const OperatorCall& call, std::string detail,
                                              std::string outcome) const {
  std::string text = ForAudit(detail, 256);
  if (!call.peer.empty()) {
    text = "peer " + ForAudit(call.peer, 64) + (text.empty() ? "" : ": " + text);
  }
  return storage::AuditEvent{.time = env_->NowUnixSeconds(),
                             .actor = ForAudit(call.actor, kMaxAuditField),
                             .action = ForAudit("Operator." + call.op, kMaxAuditField),
                             .object = ForAudit(call.object, kMaxAuditField),
                             .outcome = std::move(outcome),
                             .detail = std::move(text)};
}

bool OperatorOperations::RoleMay(OperatorRole role, std::string_view op) {
  return (Bit(role) & RolesOf(op)) != 0;
}

Result<storage::Operator> OperatorOperations::Authorize(OperatorCall* call, const char* op,
                                                        std::string object) {
  call->op = op;
  call->object = Clip(object);
  call->audited = false;
  if (call->client_cert_fingerprint.empty()) {
    call->actor = "anonymous";
    return Error(Code::kUnauthenticated,
                 "operator operations need an operator TLS client certificate "
                 "(ma-admin operator issue)");
  }
  auto me = vault_->GetOperatorByFingerprint(call->client_cert_fingerprint);
  if (!me && me.error().code() == Code::kNotFound) {
    call->actor = "anonymous";
    return Error(Code::kUnauthenticated, "this client certificate belongs to no operator");
  }
  if (!me) return Error(me.error());
  call->actor = "operator:" + me->name;
  if (me->revoked_at) {
    return Error(Code::kPermissionDenied, "operator " + me->name + " has been revoked");
  }
  if (!RoleMay(me->role, op)) {
    return Error(Code::kPermissionDenied,
                 fmt::format("role {} may not call {}", storage::ToString(me->role), op));
  }
  return me;
}

Status OperatorOperations::Finish(OperatorCall* call, Status s) {
  if (call->audited) return s;
  if (!s.ok() && limiter_ != nullptr && IsAnonymousActor(call->actor)) {
    // No operator: counted per peer, only the first few of a window each get a row.
    const int64_t now = env_->NowUnixSeconds();
    RefusalLimiter::Decision d = limiter_->Admit(PeerAddress(call->peer), now);
    for (const RefusalSummary& r : d.summaries) (void)vault_->AppendAudit(SummaryEvent(r, now));
    if (!d.record) return s;
  }
  // Reads and refusals: one row, outcome included; never the request's secrets (none).
  auto row = vault_->AppendAudit(
      Event(*call, s.ok() ? "" : s.message(), s.ok() ? "ok" : std::string(CodeName(s.code()))));
  if (!row && s.ok()) return row.error();  // no audit row, no answer
  return s;
}

Result<storage::Operator> OperatorOperations::WhoAmI(OperatorCall* call) {
  return Finish(call, Authorize(call, "WhoAmI", ""));
}

Result<storage::Operator> OperatorOperations::Identify(OperatorCall* call) {
  auto me = Authorize(call, "Console", "");
  if (!me) return Error(Finish(call, me.error()));
  return me;
}

Result<storage::PlatformPage> OperatorOperations::ListPlatforms(size_t page_size,
                                                                const std::string& page_token,
                                                                OperatorCall* call) {
  auto run = [&]() -> Result<storage::PlatformPage> {
    TPMMA_RETURN_IF_ERROR(Authorize(call, "ListPlatforms", ""));
    TPMMA_RETURN_IF_ERROR(CheckIds({{"PageToken", page_token}}));
    return vault_->ListPlatforms(page_size, page_token);
  };
  return Finish(call, run());
}

Result<std::vector<storage::PlatformSummary>> OperatorOperations::FindPlatforms(
    const std::string& text, OperatorCall* call) {
  auto run = [&]() -> Result<std::vector<storage::PlatformSummary>> {
    TPMMA_RETURN_IF_ERROR(Authorize(call, "FindPlatforms", text));
    TPMMA_RETURN_IF_ERROR(CheckIds({{"Text", text}}));
    return vault_->FindPlatforms(text, 100);
  };
  return Finish(call, run());
}

Result<storage::PlatformSummary> OperatorOperations::GetPlatform(const std::string& platform_id,
                                                                 OperatorCall* call) {
  auto run = [&]() -> Result<storage::PlatformSummary> {
    TPMMA_RETURN_IF_ERROR(Authorize(call, "GetPlatform", platform_id));
    TPMMA_RETURN_IF_ERROR(CheckIds({{"PlatformId", platform_id}}));
    storage::PlatformSummary out;
    TPMMA_ASSIGN_OR_RETURN(out.platform, vault_->GetPlatform(platform_id));
    auto inventory = vault_->GetPlatformInventory(platform_id);
    if (inventory) {
      out.inventory = std::move(*inventory);
    } else if (inventory.error().code() != Code::kNotFound) {
      return Error(inventory.error());
    }
    return out;
  };
  return Finish(call, run());
}

Result<storage::PlatformBackupsPage> OperatorOperations::ListPlatformBackups(
    size_t page_size, const std::string& page_token, OperatorCall* call) {
  auto run = [&]() -> Result<storage::PlatformBackupsPage> {
    TPMMA_RETURN_IF_ERROR(Authorize(call, "ListPlatformBackups", ""));
    TPMMA_RETURN_IF_ERROR(CheckIds({{"PageToken", page_token}}));
    return vault_->ListPlatformBackups(page_size, page_token);
  };
  return Finish(call, run());
}

Result<std::vector<storage::Session>> OperatorOperations::ListSessions(
    const std::string& platform_id, OperatorCall* call) {
  auto run = [&]() -> Result<std::vector<storage::Session>> {
    TPMMA_RETURN_IF_ERROR(Authorize(call, "ListSessions", platform_id));
    TPMMA_RETURN_IF_ERROR(CheckIds({{"PlatformId", platform_id}}));
    TPMMA_ASSIGN_OR_RETURN(std::vector<storage::Session> sessions,
                           vault_->ListSessions(platform_id, env_->NowUnixSeconds(), 100));
    // A token's hash is not a secret, but no page needs it.
    for (storage::Session& s : sessions) s.token_hash.clear();
    return sessions;
  };
  return Finish(call, run());
}

Status OperatorOperations::RevokePlatform(const std::string& platform_id, const std::string& reason,
                                          OperatorCall* call) {
  auto run = [&]() -> Status {
    TPMMA_RETURN_IF_ERROR(Authorize(call, "RevokePlatform", platform_id));
    TPMMA_RETURN_IF_ERROR(CheckIds({{"PlatformId", platform_id}}));
    TPMMA_RETURN_IF_ERROR(vault_->RevokePlatform(platform_id, Event(*call, reason)));
    call->audited = true;
    return Status::Ok();
  };
  return Finish(call, run());
}

Result<storage::PackagePage> OperatorOperations::ListPackages(const storage::PackageQuery& query,
                                                              OperatorCall* call) {
  auto run = [&]() -> Result<storage::PackagePage> {
    TPMMA_RETURN_IF_ERROR(Authorize(call, "ListPackages", ""));
    TPMMA_RETURN_IF_ERROR(CheckIds(
        {{"SourcePlatformId", Opt(query.source_platform_id)}, {"PageToken", query.page_token}}));
    return vault_->QueryPackages(query);
  };
  return Finish(call, run());
}

Result<storage::Approval> OperatorOperations::Approve(const ApprovalGrant& req,
                                                      OperatorCall* call) {
  auto run = [&]() -> Result<storage::Approval> {
    TPMMA_ASSIGN_OR_RETURN(storage::Operator me, Authorize(call, "Approve", ""));
    TPMMA_RETURN_IF_ERROR(
        CheckIds({{"OldPlatformId", req.old_platform_id}, {"NewPlatformId", req.new_platform_id}}));
    for (const auto& id : req.package_ids) TPMMA_RETURN_IF_ERROR(CheckIds({{"PackageId", id}}));
    TPMMA_ASSIGN_OR_RETURN(storage::Approval made,
                           GrantApproval(*vault_, rules_, req, me.name, env_->NowUnixSeconds(),
                                         Event(*call, req.reason)));
    call->audited = true;
    return made;
  };
  return Finish(call, run());
}

Result<storage::Approval> OperatorOperations::ConfirmApproval(int64_t approval_id,
                                                              OperatorCall* call) {
  auto run = [&]() -> Result<storage::Approval> {
    TPMMA_ASSIGN_OR_RETURN(storage::Operator me,
                           Authorize(call, "ConfirmApproval", std::to_string(approval_id)));
    TPMMA_ASSIGN_OR_RETURN(storage::Approval a,
                           vault_->ConfirmApproval(approval_id, me.name, env_->NowUnixSeconds(),
                                                   Event(*call, "second operator confirmed")));
    call->audited = true;
    return a;
  };
  return Finish(call, run());
}

Status OperatorOperations::RevokeApproval(int64_t approval_id, const std::string& reason,
                                          OperatorCall* call) {
  auto run = [&]() -> Status {
    TPMMA_RETURN_IF_ERROR(Authorize(call, "RevokeApproval", std::to_string(approval_id)));
    TPMMA_RETURN_IF_ERROR(vault_->RevokeApproval(approval_id, Event(*call, reason)));
    call->audited = true;
    return Status::Ok();
  };
  return Finish(call, run());
}

Result<std::vector<storage::Approval>> OperatorOperations::ListApprovals(
    const std::string& new_platform_id, OperatorCall* call) {
  auto run = [&]() -> Result<std::vector<storage::Approval>> {
    TPMMA_RETURN_IF_ERROR(Authorize(call, "ListApprovals", ""));
    TPMMA_RETURN_IF_ERROR(CheckIds({{"NewPlatformId", new_platform_id}}));
    return vault_->ListApprovals(new_platform_id);
  };
  return Finish(call, run());
}

Result<storage::AuditPage> OperatorOperations::ListAudit(const storage::AuditFilter& filter,
                                                         OperatorCall* call) {
  auto run = [&]() -> Result<storage::AuditPage> {
    TPMMA_RETURN_IF_ERROR(Authorize(call, "ListAudit", ""));
    TPMMA_RETURN_IF_ERROR(CheckIds({{"Actor", Opt(filter.actor)},
                                    {"Action", Opt(filter.action)},
                                    {"Object", Opt(filter.object)},
                                    {"PageToken", filter.page_token}}));
    return vault_->ListAudit(filter);
  };
  return Finish(call, run());
}

Result<int64_t> OperatorOperations::VerifyAudit(OperatorCall* call) {
  auto run = [&]() -> Result<int64_t> {
    TPMMA_RETURN_IF_ERROR(Authorize(call, "VerifyAudit", ""));
    TPMMA_RETURN_IF_ERROR(vault_->VerifyAuditChain());
    storage::AuditFilter f;
    f.page_size = 1000;
    int64_t last = 0;
    do {
      TPMMA_ASSIGN_OR_RETURN(auto page, vault_->ListAudit(f));
      if (!page.records.empty()) last = page.records.back().seq;
      f.page_token = page.next_page_token;
    } while (!f.page_token.empty());
    return last;
  };
  return Finish(call, run());
}

}  // namespace tpmma::server
