// SPDX-License-Identifier: GPL-2.0-or-later
// One rule for a restore approval, whoever grants it: `ma-admin approve` on the MA host, the
// operator side's Approve (remote ma-admin) and the helpdesk console all call GrantApproval,
// so a request the server refuses remotely is refused locally too. The rules are [approvals]
// in config.toml (docs/operations.md "Approvals"). Also here: the state an approval shows at
// a given time, and why a platform has no approval to restore a package (what the Download
// Fault says).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "server/config.h"
#include "storage/vault.h"

namespace tpmma::server {

struct ApprovalRules {
  bool two_person = false;        // approvals.two_person: a second operator confirms each
  int64_t max_ttl_s = 7 * 86400;  // approvals.max_ttl_s: the longest validity
};
ApprovalRules ApprovalRulesOf(const Config& cfg);

// What an operator asks for.
struct ApprovalGrant {
  std::string old_platform_id;
  std::string new_platform_id;
  std::vector<std::string> package_ids;  // empty: every package of the old platform
  std::string reason;                    // required: it goes into the audit log
  int64_t validity_s = 24 * 3600;
  bool two_person = false;  // ask for a second operator even when the rules do not
};

// Checks `grant` against `rules` and the vault (both platforms known, the new one not
// revoked, each package from the old platform), then creates the approval with `event`.
Result<storage::Approval> GrantApproval(storage::Vault& vault, const ApprovalRules& rules,
                                        const ApprovalGrant& grant, std::string_view operator_name,
                                        int64_t now, const storage::AuditEvent& event);

// "pending", "active", "used", "revoked" or "expired" (an active one past its expiry).
std::string_view ApprovalStatusAt(const storage::Approval& a, int64_t now);

// Why `platform` has no active approval for package `d` at `now`: none at all, or the
// newest one that would have covered it, with its state ("approval 7 was used at ...").
std::string NoApprovalReason(storage::Vault& vault, std::string_view platform,
                             const storage::PackageDescriptor& d, int64_t now);

}  // namespace tpmma::server
