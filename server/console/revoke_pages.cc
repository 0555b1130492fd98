// SPDX-License-Identifier: GPL-2.0-or-later
// Revoking a platform (a stolen laptop): admin only, and confirmed twice, by a page that says
// what revoking does and by typing the machine's hostname, since it cannot be undone.
#include <algorithm>
#include <cctype>

#include <fmt/format.h>

#include "server/console/pages.h"

namespace tpmma::server::console {

namespace {

// What the operator types to confirm: the hostname, or the id's first 16 digits when the
// platform never reported one.
std::string ConfirmWord(const storage::PlatformSummary& s) {
  if (s.inventory && !s.inventory->hostname.empty()) return s.inventory->hostname;
  return s.platform.id.substr(0, 16);
}

bool SameWord(std::string_view typed, std::string_view word) {
  while (!typed.empty() && typed.front() == ' ') typed.remove_prefix(1);
  while (!typed.empty() && typed.back() == ' ') typed.remove_suffix(1);
  return std::equal(typed.begin(), typed.end(), word.begin(), word.end(), [](char a, char b) {
    return std::tolower(static_cast<unsigned char>(a)) ==
           std::tolower(static_cast<unsigned char>(b));
  });
}

Status MayRevoke(const PageRequest& r) {
  if (r.MayRevokePlatforms()) return Status::Ok();
  return Status(Code::kPermissionDenied,
                fmt::format("role {} may not revoke platforms", storage::ToString(r.me.role)));
}

}  // namespace

Result<Page> RevokePlatformPage(const PageRequest& r) {
  TPMMA_RETURN_IF_ERROR(MayRevoke(r));
  const std::string id = r.form.Get("id");
  if (id.empty()) return Error(Code::kInvalidArgument, "which platform? (id= is missing)");
  OperatorCall call = r.Call();
  TPMMA_ASSIGN_OR_RETURN(storage::PlatformSummary s, r.ops->GetPlatform(id, &call));
  if (s.platform.state == storage::PlatformState::kRevoked) {
    return Error(Code::kConflict, "this platform is already revoked");
  }
  Page page{.title = "Revoke " + ConfirmWord(s) + "?", .template_name = "revoke.mustache"};
  page.data = PlatformRow(s);
  page.data.set("confirm_word", ConfirmWord(s));
  page.data.set("csrf", r.csrf);
  return page;
}

Result<Page> RevokePlatform(const PageRequest& r) {
  // The role first, so that a helpdesk operator learns that, not a missing field.
  TPMMA_RETURN_IF_ERROR(MayRevoke(r));
  TPMMA_ASSIGN_OR_RETURN(std::string id, FormRequired(r.form, "id", "the platform"));
  TPMMA_ASSIGN_OR_RETURN(std::string reason, FormRequired(r.form, "reason", "a reason"));
  OperatorCall call = r.Call();
  TPMMA_ASSIGN_OR_RETURN(storage::PlatformSummary s, r.ops->GetPlatform(id, &call));
  if (!SameWord(r.form.Get("confirm"), ConfirmWord(s))) {
    return Error(Code::kInvalidArgument,
                 fmt::format("not revoked: type \"{}\" to confirm", ConfirmWord(s)));
  }
  call = r.Call();
  TPMMA_RETURN_IF_ERROR(r.ops->RevokePlatform(id, reason, &call));
  return Page{.redirect = fmt::format("/console/platform?id={}&revoked=1", id)};
}

}  // namespace tpmma::server::console
