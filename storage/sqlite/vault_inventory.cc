// SPDX-License-Identifier: GPL-2.0-or-later
// SqliteVault: the platforms' self-reported inventory (migration 0005) and finding a
// platform by what a person knows of it (hostname, serial, owner, an id prefix).
#include <algorithm>
#include <cctype>

#include "storage/page_token.h"
#include "storage/sqlite/read_pool.h"
#include "storage/sqlite/rows.h"
#include "storage/sqlite_vault.h"

namespace tpmma::storage {
namespace {

using sqlite::Stmt;

// In the order of InventoryFields (the wire order).
constexpr std::string_view kInventoryColumnList =
    "hostname, os_name, kernel_release, system_vendor, product_name, serial_number, asset_tag, "
    "machine_id, tpm_manufacturer, tpm_vendor, tpm_firmware, owner_label, reported_at";
constexpr int kInventoryValues = 12;
// In a platform-and-inventory row: the platform's columns, then platform_id (NULL: no
// inventory), then kInventoryColumnList (13 columns), then any counts.
constexpr int kInventoryAt = sqlite::kPlatformColumnCount;

// Columns first..first+12 of `s` (kInventoryColumnList).
PlatformInventory ReadInventory(const Stmt& s, int first) {
  PlatformInventory inv;
  std::string* fields[] = {&inv.hostname,      &inv.os_name,      &inv.kernel_release,
                           &inv.system_vendor, &inv.product_name, &inv.serial_number,
                           &inv.asset_tag,     &inv.machine_id,   &inv.tpm_manufacturer,
                           &inv.tpm_vendor,    &inv.tpm_firmware, &inv.owner_label};
  static_assert(std::size(fields) == kInventoryValues);
  for (int k = 0; k < kInventoryValues; ++k) *fields[k] = s.Text(first + k);
  inv.reported_at = s.Int(first + kInventoryValues);
  return inv;
}

std::optional<std::string> Nullable(const std::string& v) {
  if (v.empty()) return std::nullopt;
  return v;
}

}  // namespace

namespace sqlite {

Status PutInventoryLocked(sqlite3* db, std::string_view platform_id,
                          const std::optional<PlatformInventory>& inventory, int64_t now) {
  if (!inventory) return Status();
  const PlatformInventory& i = *inventory;
  TPMMA_ASSIGN_OR_RETURN(
      Stmt s, Stmt::Prepare(db, "store platform inventory",
                            Cat("INSERT OR REPLACE INTO platform_inventory (platform_id, ",
                                kInventoryColumnList,
                                ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")));
  s.Bind(platform_id, Nullable(i.hostname), Nullable(i.os_name), Nullable(i.kernel_release),
         Nullable(i.system_vendor), Nullable(i.product_name), Nullable(i.serial_number),
         Nullable(i.asset_tag), Nullable(i.machine_id), Nullable(i.tpm_manufacturer),
         Nullable(i.tpm_vendor), Nullable(i.tpm_firmware), Nullable(i.owner_label), now);
  return s.Run();
}

}  // namespace sqlite

Result<PlatformInventory> SqliteVault::GetPlatformInventory(std::string_view id) {
  auto conn = readers_->Acquire();
  TPMMA_ASSIGN_OR_RETURN(Stmt s,
                         Stmt::Prepare(conn.get(), "read platform inventory",
                                       Cat("SELECT ", kInventoryColumnList,
                                           " FROM platform_inventory WHERE platform_id = ?")));
  s.Bind(id);
  TPMMA_ASSIGN_OR_RETURN(bool found, s.Step());
  if (!found) return Error(Code::kNotFound, Cat("no inventory for platform ", id));
  return ReadInventory(s, 0);
}

Result<std::vector<PlatformSummary>> SqliteVault::FindPlatforms(std::string_view text,
                                                                size_t limit) {
  if (text.empty()) return Error(Code::kInvalidArgument, "search text is empty");
  std::string needle(text);
  std::transform(needle.begin(), needle.end(), needle.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  auto conn = readers_->Acquire();
  // lower() and instr() are ASCII-only and byte-wise in SQLite: enough for hostnames,
  // serials and hex ids; a non-ASCII owner label matches case-sensitively.
  TPMMA_ASSIGN_OR_RETURN(
      Stmt s, Stmt::Prepare(
                  conn.get(), "find platforms",
                  Cat("SELECT ", sqlite::kPlatformColumns, ", platform_id, ", kInventoryColumnList,
                      " FROM platforms LEFT JOIN platform_inventory ON platform_id = id "
                      "WHERE substr(id, 1, length(?1)) = ?1 "
                      "OR instr(lower(hostname), ?1) > 0 OR instr(lower(serial_number), ?1) > 0 "
                      "OR instr(lower(asset_tag), ?1) > 0 OR instr(lower(owner_label), ?1) > 0 "
                      "OR instr(lower(machine_id), ?1) > 0 ORDER BY id LIMIT ?2")));
  s.Bind(needle, static_cast<int64_t>(ClampPageSize(limit)));
  std::vector<PlatformSummary> out;
  while (true) {
    TPMMA_ASSIGN_OR_RETURN(bool row, s.Step());
    if (!row) break;
    PlatformSummary m;
    TPMMA_ASSIGN_OR_RETURN(m.platform, sqlite::ReadPlatform(s));
    if (!s.IsNull(kInventoryAt)) m.inventory = ReadInventory(s, kInventoryAt + 1);
    out.push_back(std::move(m));
  }
  return out;
}

Result<PlatformBackupsPage> SqliteVault::ListPlatformBackups(size_t page_size,
                                                             std::string_view page_token) {
  std::string after;
  if (!page_token.empty()) {
    TPMMA_ASSIGN_OR_RETURN(after, ParsePageToken('b', page_token));
  }
  const size_t n = ClampPageSize(page_size);
  auto conn = readers_->Acquire();
  TPMMA_ASSIGN_OR_RETURN(
      Stmt s, Stmt::Prepare(
                  conn.get(), "list platform backups",
                  Cat("SELECT ", sqlite::kPlatformColumns, ", platform_id, ", kInventoryColumnList,
                      ", (SELECT count(*) FROM packages WHERE source_platform_id = id)"
                      ", (SELECT coalesce(max(uploaded_at), 0) FROM packages "
                      "WHERE source_platform_id = id)"
                      " FROM platforms LEFT JOIN platform_inventory ON platform_id = id"
                      " WHERE id > ? ORDER BY id LIMIT ?")));
  s.Bind(after, static_cast<int64_t>(n + 1));
  PlatformBackupsPage page;
  while (true) {
    TPMMA_ASSIGN_OR_RETURN(bool row, s.Step());
    if (!row) break;
    if (page.platforms.size() == n) {
      page.next_page_token = MakePageToken('b', page.platforms.back().summary.platform.id);
      break;
    }
    PlatformBackups b;
    TPMMA_ASSIGN_OR_RETURN(b.summary.platform, sqlite::ReadPlatform(s));
    if (!s.IsNull(kInventoryAt)) b.summary.inventory = ReadInventory(s, kInventoryAt + 1);
    b.package_count = s.Int(kInventoryAt + 1 + 13);
    b.last_uploaded_at = s.Int(kInventoryAt + 1 + 14);
    page.platforms.push_back(std::move(b));
  }
  return page;
}

}  // namespace tpmma::storage
