// SPDX-License-Identifier: GPL-2.0-or-later
// The recovery flow of docs/operations.md as pages: review the old and the new platform side
// by side, grant with a reason and an expiry, and the approvals queue (confirm, revoke).
#include <fmt/format.h>

#include "server/approvals.h"
#include "server/console/pages.h"
#include "server/srk_view.h"

namespace tpmma::server::console {

namespace {

// The platforms `text` names other than `old_id`: a full id, or what FindPlatforms matches
// (after a board swap the new platform usually reports the old one's hostname).
Result<std::vector<storage::PlatformSummary>> NewPlatformCandidates(const PageRequest& r,
                                                                    const std::string& text,
                                                                    const std::string& old_id) {
  OperatorCall call = r.Call();
  TPMMA_ASSIGN_OR_RETURN(std::vector<storage::PlatformSummary> found,
                         r.ops->FindPlatforms(text, &call));
  std::erase_if(found, [&](const auto& s) { return s.platform.id == old_id; });
  for (const auto& s : found) {
    if (s.platform.id == text) return std::vector<storage::PlatformSummary>{s};
  }
  if (found.empty()) {
    return Error(Code::kNotFound,
                 fmt::format("no platform other than the old one matches \"{}\": has the new "
                             "board run `lms authenticate`?",
                             text));
  }
  return found;
}

void AddSideBySide(mu::data& d, const storage::PlatformSummary& old_p,
                   const storage::PlatformSummary& new_p) {
  auto field = [](const storage::PlatformSummary& s, auto get) {
    return s.inventory ? OrDash(get(*s.inventory)) : std::string("-");
  };
  using Inv = storage::PlatformInventory;
  const std::pair<const char*, std::string (*)(const Inv&)> inventory_rows[] = {
      {"Hostname", [](const Inv& i) { return i.hostname; }},
      {"Owner", [](const Inv& i) { return i.owner_label; }},
      {"Serial number", [](const Inv& i) { return i.serial_number; }},
      {"Product",
       [](const Inv& i) {
         return i.system_vendor.empty() || i.product_name.empty()
                    ? i.system_vendor + i.product_name
                    : i.system_vendor + " " + i.product_name;
       }},
      {"TPM", [](const Inv& i) { return TpmText(i); }},
      {"Operating system", [](const Inv& i) { return i.os_name; }},
  };
  mu::data rows = List();
  auto add = [&](const std::string& name, const std::string& o, const std::string& n) {
    mu::data row;
    row.set("name", name);
    row.set("old", o);
    row.set("new", n);
    rows.push_back(row);
  };
  for (const auto& [name, get] : inventory_rows) add(name, field(old_p, get), field(new_p, get));
  add("State", std::string(storage::ToString(old_p.platform.state)),
      std::string(storage::ToString(new_p.platform.state)));
  add("Enrolled", Time(old_p.platform.created_at), Time(new_p.platform.created_at));
  add("Last seen", Time(old_p.platform.last_seen_at), Time(new_p.platform.last_seen_at));
  auto ek = [](const storage::PlatformSummary& s) {
    return s.platform.ek_certificate.empty() ? "EK public key only" : "EK certificate verified";
  };
  add("TPM identity", ek(old_p), ek(new_p));
  // Where the packages will be re-wrapped to: the new board's SRK as its AK certified it.
  add("Storage root key (SRK)", SrkText(old_p.platform), SrkText(new_p.platform));
  add("Platform id", old_p.platform.id, new_p.platform.id);
  d.set("rows", rows);
}

}  // namespace

Result<Page> ReviewPage(const PageRequest& r) {
  if (!r.MayApprove()) {
    return Error(Code::kPermissionDenied,
                 fmt::format("role {} may not approve", storage::ToString(r.me.role)));
  }
  TPMMA_ASSIGN_OR_RETURN(std::string old_id, FormRequired(r.form, "old", "the old platform"));
  TPMMA_ASSIGN_OR_RETURN(std::string text, FormRequired(r.form, "new", "the new platform"));
  TPMMA_ASSIGN_OR_RETURN(std::string reason, FormRequired(r.form, "reason", "a reason"));
  TPMMA_ASSIGN_OR_RETURN(int64_t expires, FormNumber(r.form, "expires"));
  OperatorCall call = r.Call();
  TPMMA_ASSIGN_OR_RETURN(storage::PlatformSummary old_p, r.ops->GetPlatform(old_id, &call));
  TPMMA_ASSIGN_OR_RETURN(auto candidates, NewPlatformCandidates(r, text, old_id));
  if (candidates.size() > 1) {
    Page page{.title = "Which new platform?", .template_name = "candidates.mustache"};
    page.data.set("text", text);
    mu::data rows = List();
    for (const auto& c : candidates) {
      mu::data row = PlatformRow(c);
      row.set("review_link", fmt::format("/console/approve?old={}&new={}&reason={}&expires={}",
                                         old_id, c.platform.id, QueryEscape(reason), expires));
      rows.push_back(row);
    }
    page.data.set("candidates", rows);
    return page;
  }
  const storage::PlatformSummary& new_p = candidates.front();
  TPMMA_ASSIGN_OR_RETURN(std::vector<storage::PackageDescriptor> packages, PackagesOf(r, old_id));
  Page page{.title = "Review the restore", .template_name = "review.mustache"};
  mu::data& d = page.data;
  AddSideBySide(d, old_p, new_p);
  d.set("package_count", std::to_string(packages.size()));
  if (!packages.empty()) d.set("latest", Time(packages.back().created_at));
  d.set("reason", reason);
  d.set("expires", std::to_string(expires));
  d.set("until", Time(r.env->NowUnixSeconds() + expires));
  d.set("two_person", r.ops->approval_rules().two_person);
  d.set("old_id", old_id);
  d.set("new_id", new_p.platform.id);
  d.set("csrf", r.csrf);
  return page;
}

Result<Page> GrantApproval(const PageRequest& r) {
  TPMMA_ASSIGN_OR_RETURN(std::string old_id, FormRequired(r.form, "old", "the old platform"));
  TPMMA_ASSIGN_OR_RETURN(std::string new_id, FormRequired(r.form, "new", "the new platform"));
  TPMMA_ASSIGN_OR_RETURN(std::string reason, FormRequired(r.form, "reason", "a reason"));
  TPMMA_ASSIGN_OR_RETURN(int64_t expires, FormNumber(r.form, "expires"));
  OperatorCall call = r.Call();
  TPMMA_ASSIGN_OR_RETURN(storage::Approval a,
                         r.ops->Approve(ApprovalGrant{.old_platform_id = old_id,
                                                      .new_platform_id = new_id,
                                                      .package_ids = {},
                                                      .reason = reason,
                                                      .validity_s = expires,
                                                      .two_person = false},
                                        &call));
  return Page{.redirect = fmt::format("/console/approvals?granted={}", a.id)};
}

Result<Page> ApprovalsPage(const PageRequest& r) {
  OperatorCall call = r.Call();
  TPMMA_ASSIGN_OR_RETURN(std::vector<storage::Approval> approvals, r.ops->ListApprovals("", &call));
  Page page{.title = "Approvals", .template_name = "approvals.mustache"};
  const int64_t now = r.env->NowUnixSeconds();
  mu::data rows = List();
  // Newest first: the one just granted, or the caller's, is at the top.
  for (auto it = approvals.rbegin(); it != approvals.rend(); ++it) {
    mu::data row = ApprovalRow(*it, now);
    row.set("old_name", it->old_platform_id.substr(0, 16) + "…");
    row.set("new_name", it->new_platform_id.substr(0, 16) + "…");
    rows.push_back(row);
    const std::string id = std::to_string(it->id);
    if (r.form.Get("granted") == id) {
      page.notice = fmt::format(
          "Approval {} granted ({}): the packages of {} may be restored to "
          "{} until {}.",
          id, ApprovalStatusAt(*it, now), it->old_platform_id, it->new_platform_id,
          Time(it->expires_at));
    }
    if (r.form.Get("confirmed") == id) page.notice = "Approval " + id + " confirmed.";
    if (r.form.Get("revoked") == id) page.notice = "Approval " + id + " revoked.";
  }
  page.data.set("approvals", rows);
  page.data.set("has_approvals", !approvals.empty());
  page.data.set("can_act", r.MayApprove());
  page.data.set("csrf", r.csrf);
  return page;
}

Result<Page> ConfirmApproval(const PageRequest& r) {
  TPMMA_ASSIGN_OR_RETURN(int64_t id, FormNumber(r.form, "id"));
  OperatorCall call = r.Call();
  TPMMA_RETURN_IF_ERROR(r.ops->ConfirmApproval(id, &call));
  return Page{.redirect = fmt::format("/console/approvals?confirmed={}", id)};
}

Result<Page> RevokeApproval(const PageRequest& r) {
  TPMMA_ASSIGN_OR_RETURN(int64_t id, FormNumber(r.form, "id"));
  TPMMA_ASSIGN_OR_RETURN(std::string reason, FormRequired(r.form, "reason", "a reason"));
  OperatorCall call = r.Call();
  TPMMA_RETURN_IF_ERROR(r.ops->RevokeApproval(id, reason, &call));
  return Page{.redirect = fmt::format("/console/approvals?revoked={}", id)};
}

}  // namespace tpmma::server::console
