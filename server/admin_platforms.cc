// SPDX-License-Identifier: GPL-2.0-or-later
// ma-admin platforms list / show / find, and naming a platform by what a person knows of it
// (issue #12): a helpdesk knows "Alice's laptop", not the hex of its EK Name.
#include <algorithm>
#include <cctype>
#include <ctime>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "server/admin_commands.h"
#include "server/admin_text.h"
#include "server/srk_view.h"

namespace tpmma::server {

using nlohmann::json;

namespace {

std::string Lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

std::string OrDash(const std::string& s) {
  return s.empty() ? "-" : s;
}

// JSON keys are the storage field names; empty fields are null.
json InventoryJson(const std::optional<storage::PlatformInventory>& inv) {
  if (!inv) return nullptr;
  json j = json::object();
  const std::pair<const char*, const std::string*> fields[] = {
      {"hostname", &inv->hostname},
      {"os_name", &inv->os_name},
      {"kernel_release", &inv->kernel_release},
      {"system_vendor", &inv->system_vendor},
      {"product_name", &inv->product_name},
      {"serial_number", &inv->serial_number},
      {"asset_tag", &inv->asset_tag},
      {"machine_id", &inv->machine_id},
      {"tpm_manufacturer", &inv->tpm_manufacturer},
      {"tpm_vendor", &inv->tpm_vendor},
      {"tpm_firmware", &inv->tpm_firmware},
      {"owner_label", &inv->owner_label}};
  for (const auto& [name, value] : fields) j[name] = value->empty() ? json(nullptr) : json(*value);
  j["reported_at"] = Iso(inv->reported_at);
  return j;
}

json SummaryJson(const storage::PlatformSummary& s) {
  const storage::Platform& p = s.platform;
  return {{"id", p.id},
          {"state", std::string(storage::ToString(p.state))},
          {"created_at", Iso(p.created_at)},
          {"last_seen_at", Iso(p.last_seen_at)},
          {"has_signing_key", p.signing_key_public.has_value()},
          {"inventory", InventoryJson(s.inventory)}};
}

Result<storage::PlatformSummary> Summary(const AdminContext& ctx, storage::Platform p) {
  storage::PlatformSummary s{.platform = std::move(p), .inventory = std::nullopt};
  auto inv = ctx.vault->GetPlatformInventory(s.platform.id);
  if (inv) {
    s.inventory = std::move(*inv);
  } else if (inv.error().code() != Code::kNotFound) {
    return Error(inv.error());
  }
  return s;
}

constexpr std::string_view kRowFormat = "{:<8} {:<24} {:<24} {:<18} {:<21} {}";

void PrintTable(const AdminContext& ctx, const std::vector<storage::PlatformSummary>& all) {
  Line(ctx,
       fmt::format(kRowFormat, "STATE", "HOSTNAME", "OWNER", "SERIAL", "LAST SEEN", "PLATFORM"));
  for (const storage::PlatformSummary& s : all) {
    const storage::PlatformInventory inv = s.inventory.value_or(storage::PlatformInventory{});
    Line(ctx, fmt::format(kRowFormat, storage::ToString(s.platform.state), OrDash(inv.hostname),
                          OrDash(inv.owner_label), OrDash(inv.serial_number),
                          Iso(s.platform.last_seen_at), s.platform.id));
  }
}

Status PrintSummaries(const AdminContext& ctx, const std::vector<storage::PlatformSummary>& all) {
  if (ctx.json) {
    json list = json::array();
    for (const auto& s : all) list.push_back(SummaryJson(s));
    std::fprintf(ctx.out, "%s\n", json{{"ok", true}, {"platforms", list}}.dump(2).c_str());
    return Status::Ok();
  }
  PrintTable(ctx, all);
  Line(ctx, fmt::format("{} platform(s)", all.size()));
  return Status::Ok();
}

// A candidate for ResolvePlatform: the id starts with `text`, or a naming field is it.
bool Names(const storage::PlatformSummary& s, const std::string& lowered) {
  if (s.platform.id.starts_with(lowered)) return true;
  if (!s.inventory) return false;
  const storage::PlatformInventory& i = *s.inventory;
  for (const std::string* v :
       {&i.hostname, &i.serial_number, &i.asset_tag, &i.owner_label, &i.machine_id}) {
    if (!v->empty() && Lower(*v) == lowered) return true;
  }
  return false;
}

}  // namespace

Status ListPlatforms(const AdminContext& ctx) {
  std::vector<storage::PlatformSummary> all;
  std::string token;
  do {
    TPMMA_ASSIGN_OR_RETURN(auto page, ctx.vault->ListPlatforms(500, token));
    for (auto& p : page.platforms) {
      TPMMA_ASSIGN_OR_RETURN(storage::PlatformSummary s, Summary(ctx, std::move(p)));
      all.push_back(std::move(s));
    }
    token = page.next_page_token;
  } while (!token.empty());
  return PrintSummaries(ctx, all);
}

Status FindPlatforms(const AdminContext& ctx, const std::string& text) {
  if (text.empty()) return Status(Code::kInvalidArgument, "find needs some text to look for");
  TPMMA_ASSIGN_OR_RETURN(auto found, ctx.vault->FindPlatforms(text, 1000));
  return PrintSummaries(ctx, found);
}

Status ShowPlatform(const AdminContext& ctx, const std::string& id) {
  TPMMA_ASSIGN_OR_RETURN(storage::Platform p, ctx.vault->GetPlatform(id));
  TPMMA_ASSIGN_OR_RETURN(storage::PlatformSummary s, Summary(ctx, std::move(p)));
  storage::PackageQuery q;
  q.source_platform_id = id;
  q.page_size = 1000;
  TPMMA_ASSIGN_OR_RETURN(auto page, ctx.vault->QueryPackages(q));
  json j = SummaryJson(s);
  TPMMA_ASSIGN_OR_RETURN(std::optional<SrkView> srk, ViewSrk(s.platform));
  j["srk"] = !srk ? json(nullptr)
                  : json{{"algorithm", srk->algorithm},
                         {"name", srk->name_hex},
                         {"certified_at", Iso(srk->certified_at)}};
  j["packages"] = json::array();
  for (const auto& d : page.packages) j["packages"].push_back(d.package_id);
  if (ctx.json) {
    std::fprintf(ctx.out, "%s\n", json{{"ok", true}, {"platform", j}}.dump(2).c_str());
    return Status::Ok();
  }
  Line(ctx, "platform:  " + s.platform.id);
  Line(ctx, "state:     " + j["state"].get<std::string>());
  Line(ctx, "created:   " + Iso(s.platform.created_at));
  Line(ctx, "last seen: " + Iso(s.platform.last_seen_at));
  Line(ctx, "SRK:       " + SrkText(s.platform));
  if (s.inventory) {
    Line(ctx, "inventory: reported " + Iso(s.inventory->reported_at) +
                  " (self-reported by the platform; informational, not identity)");
    for (const auto& [name, value] : storage::InventoryFields(*s.inventory)) {
      if (!value->empty()) Line(ctx, fmt::format("  {:<16} {}", name, *value));
    }
  } else {
    Line(ctx, "inventory: none reported");
  }
  Line(ctx, fmt::format("packages:  {}", page.packages.size()));
  for (const auto& d : page.packages) Line(ctx, "  " + d.package_id);
  return Status::Ok();
}

Result<std::string> ResolvePlatform(const AdminContext& ctx, const std::string& text) {
  if (text.empty()) return Error(Code::kInvalidArgument, "a platform is needed, got nothing");
  auto exact = ctx.vault->GetPlatform(text);
  if (exact) return exact->id;
  if (exact.error().code() != Code::kNotFound) return Error(exact.error());
  TPMMA_ASSIGN_OR_RETURN(auto found, ctx.vault->FindPlatforms(text, 1000));
  const std::string lowered = Lower(text);
  std::erase_if(found, [&](const storage::PlatformSummary& s) { return !Names(s, lowered); });
  if (found.empty()) {
    return Error(Code::kNotFound,
                 fmt::format("no platform is '{}': not an id, id prefix, hostname, serial number, "
                             "asset tag, owner label or machine-id the MA knows (`ma-admin "
                             "platforms find` searches by part of one)",
                             text));
  }
  if (found.size() == 1) return found[0].platform.id;
  std::string msg = fmt::format(
      "'{}' is ambiguous: {} platforms match; name one by its full id:", text, found.size());
  for (const storage::PlatformSummary& s : found) {
    const storage::PlatformInventory inv = s.inventory.value_or(storage::PlatformInventory{});
    msg += fmt::format("\n  {}  hostname {}  serial {}  owner {}  last seen {}", s.platform.id,
                       OrDash(inv.hostname), OrDash(inv.serial_number), OrDash(inv.owner_label),
                       Iso(s.platform.last_seen_at));
  }
  return Error(Code::kInvalidArgument, std::move(msg));
}

}  // namespace tpmma::server
