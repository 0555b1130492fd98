// SPDX-License-Identifier: GPL-2.0-or-later
// The compliance view: which platforms have no backup in N days, never backed up, or are
// revoked; as a page and as CSV. One vault query per 1,000 platforms
// (Vault::ListPlatformBackups), each audited as Operator.ListPlatformBackups.
#include <vector>

#include <fmt/format.h>

#include "server/console/pages.h"

namespace tpmma::server::console {

namespace {

constexpr size_t kPage = 1000;
constexpr size_t kMaxPlatforms = 50'000;  // beyond: the first 50,000 and a note saying so

enum class Finding { kStale, kNever, kRevoked };

struct Report {
  int64_t days = 30;
  size_t total = 0;
  bool truncated = false;
  std::vector<std::pair<Finding, storage::PlatformBackups>> findings;
};

Result<int64_t> Days(const Form& form) {
  if (form.Get("days").empty()) return 30;
  TPMMA_ASSIGN_OR_RETURN(int64_t n, FormNumber(form, "days"));
  if (n < 1 || n > 3650) return Error(Code::kInvalidArgument, "days must be from 1 to 3650");
  return n;
}

Result<Report> Build(const PageRequest& r) {
  Report report;
  TPMMA_ASSIGN_OR_RETURN(report.days, Days(r.form));
  const int64_t cutoff = r.env->NowUnixSeconds() - report.days * 86400;
  std::string token;
  do {
    OperatorCall call = r.Call();
    TPMMA_ASSIGN_OR_RETURN(storage::PlatformBackupsPage page,
                           r.ops->ListPlatformBackups(kPage, token, &call));
    for (storage::PlatformBackups& b : page.platforms) {
      ++report.total;
      if (b.summary.platform.state == storage::PlatformState::kRevoked) {
        report.findings.emplace_back(Finding::kRevoked, std::move(b));
      } else if (b.package_count == 0) {
        report.findings.emplace_back(Finding::kNever, std::move(b));
      } else if (b.last_uploaded_at < cutoff) {
        report.findings.emplace_back(Finding::kStale, std::move(b));
      }
    }
    token = page.next_page_token;
    if (!token.empty() && report.total >= kMaxPlatforms) report.truncated = true;
  } while (!token.empty() && !report.truncated);
  return report;
}

std::string_view FindingName(Finding f) {
  switch (f) {
    case Finding::kStale:
      return "no-recent-backup";
    case Finding::kNever:
      return "never-backed-up";
    case Finding::kRevoked:
      return "revoked";
  }
  return "";
}

// A spreadsheet runs a cell that starts with = + - @ (or a tab or CR) as a formula; a
// hostname is what the platform said about itself, so such a cell gets a leading quote
// (OWASP "CSV injection"). Then RFC 4180 quoting.
std::string Cell(const std::string& v) {
  std::string out = v;
  if (!out.empty() && std::string_view("=+-@\t\r").find(out.front()) != std::string_view::npos) {
    out.insert(out.begin(), '\'');
  }
  std::string quoted = "\"";
  for (char c : out) quoted += c == '"' ? std::string("\"\"") : std::string(1, c);
  return quoted + "\"";
}

}  // namespace

Result<Page> CompliancePage(const PageRequest& r) {
  TPMMA_ASSIGN_OR_RETURN(Report report, Build(r));
  Page page{.title = "Compliance", .template_name = "compliance.mustache"};
  mu::data& d = page.data;
  d.set("days", std::to_string(report.days));
  d.set("total", std::to_string(report.total));
  d.set("truncated", report.truncated);
  mu::data sections = List();
  struct Kind {
    Finding finding;
    std::string heading;
    std::string table_id;
  };
  const Kind kinds[] = {
      {Finding::kStale, "No backup in the last " + std::to_string(report.days) + " days", "stale"},
      {Finding::kNever, "Never backed up", "never"},
      {Finding::kRevoked, "Revoked", "revoked"},
  };
  for (const auto& [kind, heading, table_id] : kinds) {
    mu::data rows = List();
    size_t count = 0;
    for (const auto& [f, b] : report.findings) {
      if (f != kind) continue;
      mu::data row = PlatformRow(b.summary);
      row.set("last_backup", b.last_uploaded_at == 0 ? "never" : Time(b.last_uploaded_at));
      row.set("packages", std::to_string(b.package_count));
      rows.push_back(row);
      ++count;
    }
    mu::data section;
    section.set("heading", heading);
    section.set("table_id", table_id);
    section.set("count", std::to_string(count));
    section.set("rows", rows);
    section.set("has_rows", count > 0);
    sections.push_back(section);
    d.set(table_id + "_count", std::to_string(count));
  }
  d.set("sections", sections);
  return page;
}

Result<Page> ComplianceCsv(const PageRequest& r) {
  TPMMA_ASSIGN_OR_RETURN(Report report, Build(r));
  std::string csv =
      "finding,platform_id,hostname,owner,serial_number,state,enrolled,last_seen,last_backup,"
      "packages\r\n";
  for (const auto& [f, b] : report.findings) {
    const storage::PlatformInventory none;
    const storage::PlatformInventory& i = b.summary.inventory ? *b.summary.inventory : none;
    const storage::Platform& p = b.summary.platform;
    csv += fmt::format("{},{},{},{},{},{},{},{},{},{}\r\n", FindingName(f), Cell(p.id),
                       Cell(i.hostname), Cell(i.owner_label), Cell(i.serial_number),
                       storage::ToString(p.state), Time(p.created_at), Time(p.last_seen_at),
                       b.last_uploaded_at == 0 ? "" : Time(b.last_uploaded_at), b.package_count);
  }
  return Page{.raw_type = "text/csv; charset=utf-8",
              .raw_body = std::move(csv),
              .filename = fmt::format("tpm-ma-compliance-{}d.csv", report.days)};
}

}  // namespace tpmma::server::console
