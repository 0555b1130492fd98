// SPDX-License-Identifier: GPL-2.0-or-later
// SqliteVault: vaulted packages, their bodies and key rows, and the package query.
#include "storage/package_columns.h"
#include "storage/page_token.h"
#include "storage/sqlite/read_pool.h"
#include "storage/sqlite/rows.h"
#include "storage/sqlite/txn.h"
#include "storage/sqlite/writer.h"
#include "storage/sqlite_vault.h"

namespace tpmma::storage {

using sqlite::AppendAuditLocked;
using sqlite::InTxn;
using sqlite::kCheckpointAfter;
using sqlite::kCustodyModes;
using sqlite::kHashSize;
using sqlite::ParseEnum;
using sqlite::PlatformExists;
using sqlite::Stmt;
using sqlite::ToStatus;
using sqlite::Write;

namespace {

constexpr std::string_view kPackageColumns =
    "pk, package_id, source_platform_id, format_version, created_at, uploaded_at, sha256, size, "
    "custody, signing_key, wrap_key_id";

Result<PackageDescriptor> ReadDescriptor(const Stmt& s) {
  PackageDescriptor d;
  d.package_id = s.Text(1);
  d.source_platform_id = s.Text(2);
  d.format_version = s.Text(3);
  d.created_at = s.Int(4);
  d.uploaded_at = s.Int(5);
  d.sha256 = s.Blob(6);
  d.size = s.Int(7);
  TPMMA_ASSIGN_OR_RETURN(d.custody, ParseEnum(s.Text(8), kCustodyModes, "custody mode"));
  d.signing_key = s.Blob(9);
  if (!s.IsNull(10)) d.wrap_key_id = s.Text(10);
  return d;
}

Result<std::vector<PackageKey>> ReadKeys(Stmt& keys, int64_t pk) {
  keys.Reset();
  keys.Bind(pk);
  std::vector<PackageKey> out;
  while (true) {
    TPMMA_ASSIGN_OR_RETURN(bool row, keys.Step());
    if (!row) break;
    out.push_back(PackageKey{keys.Text(0), keys.Text(1), keys.Text(2)});
  }
  return out;
}

Result<Stmt> PrepareKeysStmt(sqlite3* db) {
  return Stmt::Prepare(db, "read package keys",
                       "SELECT key_id, label, usage FROM package_keys WHERE package_pk = ? "
                       "ORDER BY ordinal");
}

// Returns the descriptor and its internal pk.
Result<std::pair<PackageDescriptor, int64_t>> GetDescriptorLocked(sqlite3* db,
                                                                  std::string_view package_id) {
  TPMMA_ASSIGN_OR_RETURN(Stmt s, Stmt::Prepare(db, "read package",
                                               Cat("SELECT ", kPackageColumns,
                                                   " FROM packages WHERE package_id = ?")));
  s.Bind(package_id);
  TPMMA_ASSIGN_OR_RETURN(bool found, s.Step());
  if (!found) return Error(Code::kNotFound, Cat("package ", package_id, " not found"));
  TPMMA_ASSIGN_OR_RETURN(PackageDescriptor d, ReadDescriptor(s));
  int64_t pk = s.Int(0);
  TPMMA_ASSIGN_OR_RETURN(Stmt keys, PrepareKeysStmt(db));
  TPMMA_ASSIGN_OR_RETURN(d.keys, ReadKeys(keys, pk));
  d.key_count = static_cast<int64_t>(d.keys.size());
  return std::make_pair(std::move(d), pk);
}

}  // namespace

// --- Packages

Result<PutOutcome> SqliteVault::PutPackage(const Package& package, const AuditEvent& audit) {
  const PackageDescriptor& d = package.descriptor;
  if (d.package_id.empty()) return Error(Code::kInvalidArgument, "package id is empty");
  // The caller has hashed the body already (the server reports the digest to the client):
  // hashing it again here would cost a second pass over every upload.
  if (d.sha256.size() != kHashSize) {
    return Error(Code::kInvalidArgument, "package sha256 must be the 32-byte SHA-256 of the body");
  }
  const Bytes& digest = d.sha256;
  return Write(*writer_, "put package", [&](sqlite3* db) -> Result<PutOutcome> {
    TPMMA_ASSIGN_OR_RETURN(Stmt existing,
                           Stmt::Prepare(db, "check existing package",
                                         "SELECT sha256 FROM packages WHERE package_id = ?"));
    existing.Bind(d.package_id);
    TPMMA_ASSIGN_OR_RETURN(bool found, existing.Step());
    if (found) {
      if (existing.Blob(0) != digest) {
        return Error(Code::kConflict,
                     Cat("package ", d.package_id, " is already stored with different content"));
      }
      TPMMA_RETURN_IF_ERROR(AppendAuditLocked(db, audit));
      return PutOutcome::kAlreadyStored;
    }
    TPMMA_ASSIGN_OR_RETURN(bool platform_exists, PlatformExists(db, d.source_platform_id));
    if (!platform_exists) {
      return Error(Code::kNotFound, Cat("source platform ", d.source_platform_id, " of package ",
                                        d.package_id, " not found"));
    }
    TPMMA_ASSIGN_OR_RETURN(
        Stmt ins, Stmt::Prepare(db, "insert package",
                                "INSERT INTO packages (package_id, source_platform_id, "
                                "format_version, created_at, uploaded_at, sha256, size, custody, "
                                "signing_key, wrap_key_id, wrap_duplicate, wrap_seed) "
                                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"));
    ins.Bind(d.package_id, d.source_platform_id, d.format_version, d.created_at, d.uploaded_at,
             digest, package.body.size(), ToString(d.custody), d.signing_key, WrapKeyColumn(d),
             WrapDuplicateColumn(package), WrapSeedColumn(package));
    TPMMA_RETURN_IF_ERROR(ins.Run());
    int64_t pk = sqlite3_last_insert_rowid(db);
    TPMMA_RETURN_IF_ERROR(options_.fault_hook("package_row"));
    TPMMA_ASSIGN_OR_RETURN(Stmt body, Stmt::Prepare(db, "insert package body",
                                                    "INSERT INTO package_bodies (package_pk, body) "
                                                    "VALUES (?, ?)"));
    body.Bind(pk, package.body);
    TPMMA_RETURN_IF_ERROR(body.Run());
    TPMMA_RETURN_IF_ERROR(options_.fault_hook("package_body"));
    TPMMA_ASSIGN_OR_RETURN(
        Stmt key, Stmt::Prepare(db, "insert package key",
                                "INSERT INTO package_keys (package_pk, ordinal, key_id, label, "
                                "usage) VALUES (?, ?, ?, ?, ?)"));
    for (size_t i = 0; i < d.keys.size(); ++i) {
      key.Reset();
      key.Bind(pk, i, d.keys[i].key_id, d.keys[i].label, d.keys[i].usage);
      TPMMA_RETURN_IF_ERROR(key.Run());
      TPMMA_RETURN_IF_ERROR(options_.fault_hook("package_key"));
    }
    TPMMA_RETURN_IF_ERROR(AppendAuditLocked(db, audit));
    TPMMA_RETURN_IF_ERROR(options_.fault_hook("before_commit"));
    return PutOutcome::kStored;
  });
}

Result<Package> SqliteVault::GetPackage(std::string_view package_id) {
  auto conn = readers_->Acquire();
  sqlite3* db = conn.get();
  return InTxn(db, false, "get package", [&]() -> Result<Package> {
    TPMMA_ASSIGN_OR_RETURN(auto dpk, GetDescriptorLocked(db, package_id));
    TPMMA_ASSIGN_OR_RETURN(Stmt s, Stmt::Prepare(db, "read package body",
                                                 "SELECT b.body, p.wrap_duplicate, p.wrap_seed "
                                                 "FROM package_bodies b JOIN packages p ON "
                                                 "p.pk = b.package_pk WHERE b.package_pk = ?"));
    s.Bind(dpk.second);
    TPMMA_ASSIGN_OR_RETURN(bool found, s.Step());
    if (!found) {
      return Error(Code::kCorruption, Cat("package ", package_id, " has no body"));
    }
    Package p{std::move(dpk.first), s.Blob(0), std::nullopt};
    if (!s.IsNull(1)) p.rewrap = OuterWrap{s.Blob(1), s.Blob(2)};
    return p;
  });
}

Result<PackageDescriptor> SqliteVault::GetPackageDescriptor(std::string_view package_id) {
  auto conn = readers_->Acquire();
  sqlite3* db = conn.get();
  return InTxn(db, false, "get package descriptor", [&]() -> Result<PackageDescriptor> {
    TPMMA_ASSIGN_OR_RETURN(auto dpk, GetDescriptorLocked(db, package_id));
    return std::move(dpk.first);
  });
}

Status SqliteVault::DeletePackage(std::string_view package_id, const AuditEvent& audit) {
  // The body's original frames may still sit in the WAL: the writer checkpoints and
  // truncates it after the COMMIT, before this returns, so the bytes are gone from the
  // files too.
  return ToStatus(
      Write(*writer_, "delete package", kCheckpointAfter, [&](sqlite3* db) -> Result<void> {
        // Keys and body go by ON DELETE CASCADE; secure_delete zeroes the freed space.
        TPMMA_ASSIGN_OR_RETURN(Stmt s, Stmt::Prepare(db, "delete package",
                                                     "DELETE FROM packages WHERE package_id = ?"));
        s.Bind(package_id);
        TPMMA_RETURN_IF_ERROR(s.Run());
        if (sqlite3_changes(db) == 0) {
          return Error(Code::kNotFound, Cat("package ", package_id, " not found"));
        }
        TPMMA_RETURN_IF_ERROR(AppendAuditLocked(db, audit));
        return {};
      }));
}

Result<PackagePage> SqliteVault::QueryPackages(const PackageQuery& q) {
  TPMMA_ASSIGN_OR_RETURN(int64_t after_pk, ParseIntPageToken('p', q.page_token));
  size_t n = ClampPageSize(q.page_size);
  // Column 11: the key count, from package_keys' primary key alone (no key row is decoded).
  std::string sql = Cat("SELECT ", kPackageColumns,
                        ", (SELECT count(*) FROM package_keys k WHERE k.package_pk = p.pk) "
                        "FROM packages p WHERE p.pk > ?");
  std::vector<std::variant<int64_t, std::string>> args{after_pk};
  if (q.source_platform_id) {
    sql += " AND p.source_platform_id = ?";
    args.emplace_back(*q.source_platform_id);
  }
  if (q.created_after) {
    sql += " AND p.created_at > ?";
    args.emplace_back(*q.created_after);
  }
  if (q.created_before) {
    sql += " AND p.created_at < ?";
    args.emplace_back(*q.created_before);
  }
  if (q.label_contains) {
    // instr, not LIKE: a label filter must not be able to smuggle in wildcards.
    sql +=
        " AND EXISTS (SELECT 1 FROM package_keys k WHERE k.package_pk = p.pk "
        "AND instr(k.label, ?) > 0)";
    args.emplace_back(*q.label_contains);
  }
  if (q.visible_to_platform) {
    sql +=
        " AND (p.source_platform_id = ? OR EXISTS (SELECT 1 FROM approvals a "
        "WHERE a.new_platform_id = ? AND a.old_platform_id = p.source_platform_id "
        "AND a.state = 'active' AND a.expires_at > ? AND (a.all_packages = 1 OR EXISTS "
        "(SELECT 1 FROM approval_packages ap WHERE ap.approval_id = a.id "
        "AND ap.package_id = p.package_id))))";
    args.emplace_back(*q.visible_to_platform);
    args.emplace_back(*q.visible_to_platform);
    args.emplace_back(q.now);
  }
  sql += " ORDER BY p.pk LIMIT ?";
  args.emplace_back(static_cast<int64_t>(n + 1));

  auto conn = readers_->Acquire();
  sqlite3* db = conn.get();
  return InTxn(db, false, "query packages", [&]() -> Result<PackagePage> {
    TPMMA_ASSIGN_OR_RETURN(Stmt s, Stmt::Prepare(db, "query packages", sql));
    for (size_t i = 0; i < args.size(); ++i) s.BindOne(static_cast<int>(i + 1), args[i]);
    TPMMA_ASSIGN_OR_RETURN(Stmt keys, PrepareKeysStmt(db));
    PackagePage page;
    int64_t last_pk = 0;
    while (true) {
      TPMMA_ASSIGN_OR_RETURN(bool row, s.Step());
      if (!row) break;
      if (page.packages.size() == n) {
        page.next_page_token = MakePageToken('p', std::to_string(last_pk));
        break;
      }
      TPMMA_ASSIGN_OR_RETURN(PackageDescriptor d, ReadDescriptor(s));
      last_pk = s.Int(0);
      d.key_count = s.Int(11);
      if (q.with_keys) {
        TPMMA_ASSIGN_OR_RETURN(d.keys, ReadKeys(keys, last_pk));
      }
      page.packages.push_back(std::move(d));
    }
    return page;
  });
}

// --- Outer wraps

Result<std::vector<WrapCount>> SqliteVault::CountPackagesByWrapKey() {
  auto conn = readers_->Acquire();
  sqlite3* db = conn.get();
  return InTxn(db, false, "count packages by wrap key", [&]() -> Result<std::vector<WrapCount>> {
    TPMMA_ASSIGN_OR_RETURN(Stmt s, Stmt::Prepare(db, "count packages by wrap key",
                                                 "SELECT coalesce(wrap_key_id, ''), count(*) "
                                                 "FROM packages GROUP BY 1 ORDER BY 1"));
    std::vector<WrapCount> out;
    while (true) {
      TPMMA_ASSIGN_OR_RETURN(bool row, s.Step());
      if (!row) break;
      out.push_back({s.Text(0), s.Int(1)});
    }
    return out;
  });
}

Result<std::vector<std::string>> SqliteVault::ListPackagesWrappedTo(std::string_view key_id,
                                                                    size_t limit) {
  auto conn = readers_->Acquire();
  sqlite3* db = conn.get();
  return InTxn(db, false, "list packages by wrap key", [&]() -> Result<std::vector<std::string>> {
    TPMMA_ASSIGN_OR_RETURN(Stmt s, Stmt::Prepare(db, "list packages by wrap key",
                                                 "SELECT package_id FROM packages WHERE "
                                                 "wrap_key_id = ? ORDER BY pk LIMIT ?"));
    s.Bind(key_id, static_cast<int64_t>(limit));
    std::vector<std::string> out;
    while (true) {
      TPMMA_ASSIGN_OR_RETURN(bool row, s.Step());
      if (!row) break;
      out.push_back(s.Text(0));
    }
    return out;
  });
}

Result<int64_t> SqliteVault::ReplaceOuterWraps(const std::vector<WrapUpdate>& updates,
                                               const AuditEvent& audit) {
  return Write(*writer_, "replace outer wraps", [&](sqlite3* db) -> Result<int64_t> {
    TPMMA_ASSIGN_OR_RETURN(Stmt s,
                           Stmt::Prepare(db, "replace outer wrap",
                                         "UPDATE packages SET wrap_key_id = ?, wrap_duplicate = ?, "
                                         "wrap_seed = ? WHERE package_id = ? AND wrap_key_id = ?"));
    int64_t moved = 0;
    for (const WrapUpdate& u : updates) {
      s.Reset();
      s.Bind(u.to_key_id, u.wrap.duplicate, u.wrap.encrypted_seed, u.package_id, u.from_key_id);
      TPMMA_RETURN_IF_ERROR(s.Run());
      moved += sqlite3_changes(db);
      TPMMA_RETURN_IF_ERROR(options_.fault_hook("outer_wrap"));
    }
    TPMMA_RETURN_IF_ERROR(AppendAuditLocked(db, audit));
    return moved;
  });
}

Result<int64_t> SqliteVault::AssignUnrecordedWraps(std::string_view key_id,
                                                   const AuditEvent& audit) {
  if (key_id.empty()) return Error(Code::kInvalidArgument, "wrap key id is empty");
  return Write(*writer_, "record wrap keys", [&](sqlite3* db) -> Result<int64_t> {
    TPMMA_ASSIGN_OR_RETURN(Stmt s, Stmt::Prepare(db, "record wrap keys",
                                                 "UPDATE packages SET wrap_key_id = ? WHERE "
                                                 "wrap_key_id IS NULL"));
    s.Bind(key_id);
    TPMMA_RETURN_IF_ERROR(s.Run());
    const int64_t n = sqlite3_changes(db);
    if (n > 0) TPMMA_RETURN_IF_ERROR(AppendAuditLocked(db, audit));
    return n;
  });
}

}  // namespace tpmma::storage
