// SPDX-License-Identifier: GPL-2.0-or-later
// PostgresVault: the platforms' self-reported inventory and finding a platform by what a
// person knows of it (hostname, serial, owner, an id prefix).
#include <algorithm>
#include <cctype>

#include "storage/page_token.h"
#include "storage/postgres/rows.h"
#include "storage/postgres_vault.h"

namespace tpmma::storage {
namespace {

using postgres::Command;
using postgres::Params;
using postgres::Query;
using postgres::Rows;

// In the order of InventoryFields (the wire order).
constexpr std::string_view kInventoryColumnList =
    "hostname, os_name, kernel_release, system_vendor, product_name, serial_number, asset_tag, "
    "machine_id, tpm_manufacturer, tpm_vendor, tpm_firmware, owner_label, reported_at";
constexpr int kInventoryValues = 12;

PlatformInventory ReadInventory(const Rows& r, int row, int first) {
  PlatformInventory inv;
  std::string* fields[] = {&inv.hostname,      &inv.os_name,      &inv.kernel_release,
                           &inv.system_vendor, &inv.product_name, &inv.serial_number,
                           &inv.asset_tag,     &inv.machine_id,   &inv.tpm_manufacturer,
                           &inv.tpm_vendor,    &inv.tpm_firmware, &inv.owner_label};
  static_assert(std::size(fields) == kInventoryValues);
  for (int k = 0; k < kInventoryValues; ++k) *fields[k] = r.Text(row, first + k);
  inv.reported_at = r.Int(row, first + kInventoryValues);
  return inv;
}

std::optional<std::string> Nullable(const std::string& v) {
  if (v.empty()) return std::nullopt;
  return v;
}

// SQLite's lower() folds ASCII only; so does this, whatever the database's locale.
std::string AsciiLower(std::string_view column) {
  return Cat("translate(", column, ", 'ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz')");
}

}  // namespace

namespace postgres {

Status PutInventoryLocked(PGconn* c, std::string_view platform_id,
                          const std::optional<PlatformInventory>& inventory, int64_t now) {
  if (!inventory) return Status();
  const PlatformInventory& i = *inventory;
  std::string updates;
  for (std::string_view col :
       {"hostname", "os_name", "kernel_release", "system_vendor", "product_name", "serial_number",
        "asset_tag", "machine_id", "tpm_manufacturer", "tpm_vendor", "tpm_firmware", "owner_label",
        "reported_at"}) {
    updates += Cat(updates.empty() ? "" : ", ", col, " = excluded.", col);
  }
  auto r = Command(
      c, "store platform inventory",
      Cat("INSERT INTO platform_inventory (platform_id, ", kInventoryColumnList,
          ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) "
          "ON CONFLICT (platform_id) DO UPDATE SET ",
          updates),
      Params(platform_id, Nullable(i.hostname), Nullable(i.os_name), Nullable(i.kernel_release),
             Nullable(i.system_vendor), Nullable(i.product_name), Nullable(i.serial_number),
             Nullable(i.asset_tag), Nullable(i.machine_id), Nullable(i.tpm_manufacturer),
             Nullable(i.tpm_vendor), Nullable(i.tpm_firmware), Nullable(i.owner_label), now));
  return r ? Status() : r.error();
}

}  // namespace postgres

Result<PlatformInventory> PostgresVault::GetPlatformInventory(std::string_view id) {
  return postgres::Read(*pool_, [&](PGconn* c) -> Result<PlatformInventory> {
    TPMMA_ASSIGN_OR_RETURN(Rows r, Query(c, "read platform inventory",
                                         Cat("SELECT ", kInventoryColumnList,
                                             " FROM platform_inventory WHERE platform_id = $1"),
                                         Params(id)));
    if (r.empty()) return Error(Code::kNotFound, Cat("no inventory for platform ", id));
    return ReadInventory(r, 0, 0);
  });
}

Result<std::vector<PlatformSummary>> PostgresVault::FindPlatforms(std::string_view text,
                                                                  size_t limit) {
  if (text.empty()) return Error(Code::kInvalidArgument, "search text is empty");
  std::string needle(text);
  std::transform(needle.begin(), needle.end(), needle.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  std::string where = "left(id, length($1)) = $1";
  for (std::string_view col :
       {"hostname", "serial_number", "asset_tag", "owner_label", "machine_id"}) {
    where += Cat(" OR strpos(", AsciiLower(col), ", $1) > 0");
  }
  return postgres::Read(*pool_, [&](PGconn* c) -> Result<std::vector<PlatformSummary>> {
    TPMMA_ASSIGN_OR_RETURN(
        Rows r,
        Query(c, "find platforms",
              Cat("SELECT ", postgres::kPlatformColumns, ", platform_id, ", kInventoryColumnList,
                  " FROM platforms LEFT JOIN platform_inventory ON platform_id = id "
                  "WHERE ",
                  where, " ORDER BY id LIMIT $2"),
              Params(needle, static_cast<int64_t>(ClampPageSize(limit)))));
    std::vector<PlatformSummary> out;
    constexpr int kInventoryFirst = postgres::kPlatformColumnCount + 1;
    for (int i = 0; i < r.size(); ++i) {
      PlatformSummary m;
      TPMMA_ASSIGN_OR_RETURN(m.platform, postgres::ReadPlatform(r, i));
      if (!r.IsNull(i, postgres::kPlatformColumnCount)) {
        m.inventory = ReadInventory(r, i, kInventoryFirst);
      }
      out.push_back(std::move(m));
    }
    return out;
  });
}

Result<PlatformBackupsPage> PostgresVault::ListPlatformBackups(size_t page_size,
                                                               std::string_view page_token) {
  std::string after;
  if (!page_token.empty()) {
    TPMMA_ASSIGN_OR_RETURN(after, ParsePageToken('b', page_token));
  }
  const size_t n = ClampPageSize(page_size);
  return postgres::Read(*pool_, [&](PGconn* c) -> Result<PlatformBackupsPage> {
    TPMMA_ASSIGN_OR_RETURN(
        Rows r,
        Query(c, "list platform backups",
              Cat("SELECT ", postgres::kPlatformColumns, ", platform_id, ", kInventoryColumnList,
                  ", (SELECT count(*) FROM packages WHERE source_platform_id = id)"
                  ", (SELECT coalesce(max(uploaded_at), 0) FROM packages "
                  "WHERE source_platform_id = id)"
                  " FROM platforms LEFT JOIN platform_inventory ON platform_id = id"
                  " WHERE id > $1 ORDER BY id LIMIT $2"),
              Params(after, static_cast<int64_t>(n + 1))));
    PlatformBackupsPage page;
    constexpr int kInventoryFirst = postgres::kPlatformColumnCount + 1;
    constexpr int kCounts = kInventoryFirst + 13;  // after the 13 inventory columns
    for (int i = 0; i < r.size(); ++i) {
      if (page.platforms.size() == n) {
        page.next_page_token = MakePageToken('b', page.platforms.back().summary.platform.id);
        break;
      }
      PlatformBackups b;
      TPMMA_ASSIGN_OR_RETURN(b.summary.platform, postgres::ReadPlatform(r, i));
      if (!r.IsNull(i, postgres::kPlatformColumnCount)) {
        b.summary.inventory = ReadInventory(r, i, kInventoryFirst);
      }
      b.package_count = r.Int(i, kCounts);
      b.last_uploaded_at = r.Int(i, kCounts + 1);
      page.platforms.push_back(std::move(b));
    }
    return page;
  });
}

}  // namespace tpmma::storage
