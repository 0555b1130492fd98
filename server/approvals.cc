// SPDX-License-Identifier: GPL-2.0-or-later
#include "server/approvals.h"

#include <algorithm>

#include <fmt/format.h>

#include "common/text.h"

namespace tpmma::server {

ApprovalRules ApprovalRulesOf(const Config& cfg) {
  return {.two_person = cfg.approvals_two_person, .max_ttl_s = cfg.approvals_max_ttl_s};
}

Result<storage::Approval> GrantApproval(storage::Vault& vault, const ApprovalRules& rules,
                                        const ApprovalGrant& g, std::string_view operator_name,
                                        int64_t now, const storage::AuditEvent& event) {
  if (g.reason.empty()) {
    return Error(Code::kInvalidArgument, "an approval needs a reason (it goes in the audit log)");
  }
  if (g.validity_s <= 0 || g.validity_s > rules.max_ttl_s) {
    return Error(Code::kInvalidArgument,
                 fmt::format("an approval is valid for 1 s up to approvals.max_ttl_s = {} s "
                             "({} days); {} s was asked for",
                             rules.max_ttl_s, rules.max_ttl_s / 86400, g.validity_s));
  }
  // Both platforms must be known: an approval for a typo would wait forever.
  if (auto old_p = vault.GetPlatform(g.old_platform_id); !old_p) return Error(old_p.error());
  TPMMA_ASSIGN_OR_RETURN(storage::Platform new_p, vault.GetPlatform(g.new_platform_id));
  if (new_p.state == storage::PlatformState::kRevoked) {
    return Error(Code::kPermissionDenied, "the new platform is revoked");
  }
  for (const auto& id : g.package_ids) {
    TPMMA_ASSIGN_OR_RETURN(storage::PackageDescriptor d, vault.GetPackageDescriptor(id));
    if (d.source_platform_id != g.old_platform_id) {
      return Error(Code::kInvalidArgument, "package " + id + " is not from the old platform");
    }
  }
  storage::ApprovalRequest req{.old_platform_id = g.old_platform_id,
                               .new_platform_id = g.new_platform_id,
                               .all_packages = g.package_ids.empty(),
                               .package_ids = g.package_ids,
                               .reason = g.reason,
                               .created_by = std::string(operator_name),
                               .created_at = now,
                               .expires_at = now + g.validity_s,
                               .require_confirmation = rules.two_person || g.two_person};
  return vault.CreateApproval(req, event);
}

std::string_view ApprovalStatusAt(const storage::Approval& a, int64_t now) {
  switch (a.state) {
    case storage::ApprovalState::kUsed:
      return "used";
    case storage::ApprovalState::kRevoked:
      return "revoked";
    case storage::ApprovalState::kPending:
      return a.expires_at <= now ? "expired" : "pending";
    case storage::ApprovalState::kActive:
      break;
  }
  return a.expires_at <= now ? "expired" : "active";
}

std::string NoApprovalReason(storage::Vault& vault, std::string_view platform,
                             const storage::PackageDescriptor& d, int64_t now) {
  constexpr std::string_view kNone =
      "restore to another platform needs a helpdesk approval (none was granted for this "
      "platform and package)";
  auto list = vault.ListApprovals(platform);
  if (!list) return std::string(kNone);
  const storage::Approval* newest = nullptr;
  for (const auto& a : *list) {
    const bool covers =
        a.old_platform_id == d.source_platform_id &&
        (a.all_packages || std::ranges::find(a.package_ids, d.package_id) != a.package_ids.end());
    if (covers && (newest == nullptr || a.created_at >= newest->created_at)) newest = &a;
  }
  if (newest == nullptr) return std::string(kNone);
  const std::string_view status = ApprovalStatusAt(*newest, now);
  std::string what;
  if (status == "used") {
    what = "was already used" + (newest->used_at ? " at " + Utc(*newest->used_at) : "") +
           " (an approval restores once)";
  } else if (status == "expired") {
    what = "expired at " + Utc(newest->expires_at);
  } else if (status == "revoked") {
    what = "was revoked";
  } else {
    what = "waits for a second operator's confirmation";
  }
  return fmt::format(
      "restore to another platform needs a helpdesk approval: approval {} {}; "
      "ask the helpdesk for a new one",
      newest->id, what);
}

}  // namespace tpmma::server
