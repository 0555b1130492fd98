// SPDX-License-Identifier: GPL-2.0-or-later
// The read-only pages: find, platform, audit; and what every page shares.
#include "server/console/pages.h"

#include <algorithm>
#include <charconv>

#include <fmt/format.h>

#include "common/text.h"
#include "server/approvals.h"

namespace tpmma::server::console {

OperatorCall PageRequest::Call() const {
  OperatorCall call;
  call.client_cert_fingerprint = info.client_cert_fingerprint;
  call.peer = info.peer;
  return call;
}

bool PageRequest::MayApprove() const {
  return OperatorOperations::RoleMay(me.role, "Approve");
}

bool PageRequest::MayRevokePlatforms() const {
  return OperatorOperations::RoleMay(me.role, "RevokePlatform");
}

bool PageRequest::MayAudit() const {
  return OperatorOperations::RoleMay(me.role, "ListAudit");
}

Result<int64_t> FormNumber(const Form& form, std::string_view name) {
  const std::string v = form.Get(name);
  int64_t n = 0;
  auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
  if (v.empty() || ec != std::errc() || end != v.data() + v.size()) {
    return Error(Code::kInvalidArgument, fmt::format("{} must be a whole number", name));
  }
  return n;
}

Result<std::string> FormRequired(const Form& form, std::string_view name, std::string_view what) {
  std::string v = form.Get(name);
  if (v.find_first_not_of(' ') == std::string::npos) {
    return Error(Code::kInvalidArgument, fmt::format("{} is required", what));
  }
  return v;
}

std::string Time(int64_t t) {
  return t == 0 ? "-" : Utc(t);
}

std::string OrDash(const std::string& s) {
  return s.empty() ? "-" : s;
}

std::string TpmText(const storage::PlatformInventory& i) {
  std::string out = i.tpm_manufacturer;
  if (!i.tpm_vendor.empty()) out += (out.empty() ? "" : " ") + i.tpm_vendor;
  if (!i.tpm_firmware.empty()) out += (out.empty() ? "firmware " : ", firmware ") + i.tpm_firmware;
  return OrDash(out);
}

mu::data List() {
  return mu::data(mu::data::type::list);
}

mu::data PlatformRow(const storage::PlatformSummary& s) {
  const storage::PlatformInventory none;
  const storage::PlatformInventory& i = s.inventory ? *s.inventory : none;
  mu::data row;
  row.set("id", s.platform.id);
  row.set("hostname", i.hostname.empty() ? "(no hostname reported)" : i.hostname);
  row.set("owner", OrDash(i.owner_label));
  row.set("serial", OrDash(i.serial_number));
  row.set("tpm", TpmText(i));
  row.set("state", std::string(storage::ToString(s.platform.state)));
  row.set("created", Time(s.platform.created_at));
  row.set("last_seen", Time(s.platform.last_seen_at));
  return row;
}

mu::data ApprovalRow(const storage::Approval& a, int64_t now) {
  const std::string status(ApprovalStatusAt(a, now));
  mu::data row;
  row.set("id", std::to_string(a.id));
  row.set("status", status);
  row.set("old", a.old_platform_id);
  row.set("new", a.new_platform_id);
  row.set("reason", a.reason);
  row.set("by", a.created_by);
  row.set("confirmed_by", a.confirmed_by.value_or("-"));
  row.set("expires", Time(a.expires_at));
  row.set("used", a.used_at ? Time(*a.used_at) : "-");
  row.set("pending", status == "pending");
  row.set("open", status == "pending" || status == "active");
  return row;
}

Result<Page> FindPage(const PageRequest& r) {
  Page page{.title = "Find a platform", .template_name = "find.mustache"};
  const std::string q = r.form.Get("q");
  page.data.set("q", q);
  if (q.empty()) return page;
  OperatorCall call = r.Call();
  TPMMA_ASSIGN_OR_RETURN(std::vector<storage::PlatformSummary> found,
                         r.ops->FindPlatforms(q, &call));
  mu::data rows = List();
  for (const auto& s : found) rows.push_back(PlatformRow(s));
  page.data.set("results", rows);
  page.data.set("has_results", !found.empty());
  page.data.set("no_results", found.empty());
  return page;
}

namespace {

mu::data InventoryRows(const storage::PlatformInventory& inventory) {
  mu::data rows = List();
  for (const auto& [name, value] : storage::InventoryFields(inventory)) {
    if (value->empty()) continue;
    mu::data row;
    row.set("name", std::string(name));
    row.set("value", *value);
    rows.push_back(row);
  }
  return rows;
}

}  // namespace

// Every package of `platform`, oldest first (a platform keeps a few; pages of 500).
Result<std::vector<storage::PackageDescriptor>> PackagesOf(const PageRequest& r,
                                                           const std::string& platform) {
  storage::PackageQuery q;
  q.source_platform_id = platform;
  q.with_keys = false;
  q.page_size = 500;
  std::vector<storage::PackageDescriptor> all;
  do {
    OperatorCall call = r.Call();
    TPMMA_ASSIGN_OR_RETURN(storage::PackagePage page, r.ops->ListPackages(q, &call));
    all.insert(all.end(), page.packages.begin(), page.packages.end());
    q.page_token = page.next_page_token;
  } while (!q.page_token.empty());
  return all;
}

namespace {

// What a helpdesk needs of a platform's sessions: is its lms signed in now, since when.
Status AddSessions(const PageRequest& r, const std::string& id, mu::data* d) {
  OperatorCall call = r.Call();
  TPMMA_ASSIGN_OR_RETURN(std::vector<storage::Session> sessions, r.ops->ListSessions(id, &call));
  mu::data rows = List();
  for (const storage::Session& s : sessions) {
    mu::data row;
    row.set("started", Time(s.created_at));
    row.set("ends", Time(s.expires_at));
    rows.push_back(row);
  }
  d->set("sessions", rows);
  d->set("has_sessions", !sessions.empty());
  return Status::Ok();
}

}  // namespace

Result<Page> PlatformPage(const PageRequest& r) {
  const std::string id = r.form.Get("id");
  if (id.empty()) return Error(Code::kInvalidArgument, "which platform? (id= is missing)");
  OperatorCall call = r.Call();
  TPMMA_ASSIGN_OR_RETURN(storage::PlatformSummary s, r.ops->GetPlatform(id, &call));
  TPMMA_ASSIGN_OR_RETURN(std::vector<storage::PackageDescriptor> packages, PackagesOf(r, id));
  call = r.Call();
  TPMMA_ASSIGN_OR_RETURN(std::vector<storage::Approval> approvals, r.ops->ListApprovals("", &call));

  const std::string hostname = s.inventory ? s.inventory->hostname : "";
  Page page{.title = hostname.empty() ? "Platform " + id.substr(0, 16) : hostname,
            .template_name = "platform.mustache"};
  if (r.form.Has("revoked")) page.notice = "Platform revoked: its sessions ended.";
  mu::data& d = page.data;
  d = PlatformRow(s);
  d.set("hostname_raw", hostname);
  d.set("ek_certificate", s.platform.ek_certificate.empty() ? "none (EK public key only)"
                                                            : "present, verified at enrolment");
  d.set("has_inventory", s.inventory.has_value());
  if (s.inventory) {
    d.set("inventory", InventoryRows(*s.inventory));
    d.set("reported", Time(s.inventory->reported_at));
  }
  mu::data rows = List();
  int64_t last_backup = 0;
  for (const auto& p : packages) {
    mu::data row;
    row.set("id", p.package_id);
    row.set("created", Time(p.created_at));
    row.set("uploaded", Time(p.uploaded_at));
    row.set("keys", std::to_string(p.key_count));
    row.set("custody", std::string(storage::ToString(p.custody)));
    rows.push_back(row);
    last_backup = std::max(last_backup, p.uploaded_at);
  }
  d.set("packages", rows);
  d.set("has_packages", !packages.empty());
  d.set("last_backup", last_backup == 0 ? "never" : Time(last_backup));
  mu::data approval_rows = List();
  bool any = false;
  const int64_t now = r.env->NowUnixSeconds();
  for (const auto& a : approvals) {
    if (a.old_platform_id != id && a.new_platform_id != id) continue;
    approval_rows.push_back(ApprovalRow(a, now));
    any = true;
  }
  d.set("approvals", approval_rows);
  d.set("has_approvals", any);
  TPMMA_RETURN_IF_ERROR(AddSessions(r, id, &d));
  const bool revoked = s.platform.state == storage::PlatformState::kRevoked;
  d.set("can_approve", r.MayApprove() && !revoked);
  d.set("can_revoke", r.MayRevokePlatforms() && !revoked);
  d.set("can_audit", r.MayAudit());
  return page;
}

namespace {

std::optional<std::string> Filter(const Form& form, std::string_view name) {
  std::string v = form.Get(name);
  return v.empty() ? std::nullopt : std::optional<std::string>(std::move(v));
}

constexpr const char* kAuditFilters[] = {"actor", "action", "object", "from", "to"};

// from= and to= are days (what <input type=date> sends) or UTC times; a day in to= is
// taken whole, so from=to=one day shows that day.
Result<storage::AuditFilter> AuditFilterOf(const Form& form) {
  storage::AuditFilter f;
  f.actor = Filter(form, "actor");
  f.action = Filter(form, "action");
  f.object = Filter(form, "object");
  if (form.Has("from") && !form.Get("from").empty()) {
    TPMMA_ASSIGN_OR_RETURN(f.time_from, ParseUtc(form.Get("from")));
  }
  if (form.Has("to") && !form.Get("to").empty()) {
    const std::string to = form.Get("to");
    TPMMA_ASSIGN_OR_RETURN(int64_t t, ParseUtc(to));
    f.time_to = to.size() == 10 && to[4] == '-' ? t + 86400 : t;
  }
  if (f.time_from && f.time_to && *f.time_to <= *f.time_from) {
    return Error(Code::kInvalidArgument, "the audit period ends before it starts (from/to)");
  }
  f.page_token = form.Get("page");
  f.page_size = 100;
  return f;
}

}  // namespace

Result<Page> AuditPage(const PageRequest& r) {
  if (!r.MayAudit()) {
    return Error(Code::kPermissionDenied,
                 fmt::format("role {} may not read the audit log", storage::ToString(r.me.role)));
  }
  Page page{.title = "Audit log", .template_name = "audit.mustache"};
  OperatorCall call = r.Call();
  auto verified = r.ops->VerifyAudit(&call);
  if (verified) {
    page.data.set("chain", fmt::format("The hash chain verifies: {} record(s), none changed, "
                                       "removed or inserted.",
                                       *verified));
    page.data.set("chain_class", "chain-ok");
  } else if (verified.error().code() == Code::kCorruption) {
    page.data.set("chain", "The hash chain does NOT verify: " + verified.error().message());
    page.data.set("chain_class", "chain-broken");
  } else {
    return Error(verified.error());
  }
  TPMMA_ASSIGN_OR_RETURN(storage::AuditFilter f, AuditFilterOf(r.form));
  call = r.Call();
  TPMMA_ASSIGN_OR_RETURN(storage::AuditPage records, r.ops->ListAudit(f, &call));
  mu::data rows = List();
  for (const auto& rec : records.records) {
    mu::data row;
    row.set("seq", std::to_string(rec.seq));
    row.set("time", Time(rec.event.time));
    row.set("actor", rec.event.actor);
    row.set("action", rec.event.action);
    row.set("object", rec.event.object);
    row.set("outcome", rec.event.outcome);
    row.set("detail", rec.event.detail);
    rows.push_back(row);
  }
  page.data.set("records", rows);
  for (const char* name : kAuditFilters) page.data.set(name, r.form.Get(name));
  if (!records.next_page_token.empty()) {
    std::string next = "/console/audit?page=" + QueryEscape(records.next_page_token);
    for (const char* name : kAuditFilters) {
      if (r.form.Has(name)) next += fmt::format("&{}={}", name, QueryEscape(r.form.Get(name)));
    }
    page.data.set("next", next);
    page.data.set("page_size", "100");
  }
  return page;
}

}  // namespace tpmma::server::console
