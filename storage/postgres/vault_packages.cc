// SPDX-License-Identifier: GPL-2.0-or-later
// PostgresVault: vaulted packages, their bodies and key rows, and the package query.
#include <variant>

#include "storage/package_columns.h"
#include "storage/page_token.h"
#include "storage/postgres/rows.h"
#include "storage/postgres_vault.h"

namespace tpmma::storage {

using postgres::AppendAuditLocked;
using postgres::Command;
using postgres::kCustodyModes;
using postgres::kHashSize;
using postgres::Params;
using postgres::ParseEnum;
using postgres::PlatformExists;
using postgres::Query;
using postgres::Rows;
using postgres::ToStatus;
using postgres::Write;

namespace {

constexpr std::string_view kPackageColumns =
    "pk, package_id, source_platform_id, format_version, created_at, uploaded_at, sha256, size, "
    "custody, signing_key, wrap_key_id";

Result<PackageDescriptor> ReadDescriptor(const Rows& r, int i) {
  PackageDescriptor d;
  d.package_id = r.Text(i, 1);
  d.source_platform_id = r.Text(i, 2);
  d.format_version = r.Text(i, 3);
  d.created_at = r.Int(i, 4);
  d.uploaded_at = r.Int(i, 5);
  d.sha256 = r.Blob(i, 6);
  d.size = r.Int(i, 7);
  TPMMA_ASSIGN_OR_RETURN(d.custody, ParseEnum(r.Text(i, 8), kCustodyModes, "custody mode"));
  d.signing_key = r.Blob(i, 9);
  if (!r.IsNull(i, 10)) d.wrap_key_id = r.Text(i, 10);
  return d;
}

Result<std::vector<PackageKey>> ReadKeys(PGconn* c, int64_t pk) {
  TPMMA_ASSIGN_OR_RETURN(Rows r, Query(c, "read package keys",
                                       "SELECT key_id, label, usage FROM package_keys "
                                       "WHERE package_pk = $1 ORDER BY ordinal",
                                       Params(pk)));
  std::vector<PackageKey> out;
  for (int i = 0; i < r.size(); ++i)
    out.push_back(PackageKey{r.Text(i, 0), r.Text(i, 1), r.Text(i, 2)});
  return out;
}

// The descriptor and its internal pk.
Result<std::pair<PackageDescriptor, int64_t>> GetDescriptorLocked(PGconn* c,
                                                                  std::string_view package_id) {
  TPMMA_ASSIGN_OR_RETURN(
      Rows r, Query(c, "read package",
                    Cat("SELECT ", kPackageColumns, " FROM packages WHERE package_id = $1"),
                    Params(package_id)));
  if (r.empty()) return Error(Code::kNotFound, Cat("package ", package_id, " not found"));
  TPMMA_ASSIGN_OR_RETURN(PackageDescriptor d, ReadDescriptor(r, 0));
  const int64_t pk = r.Int(0, 0);
  TPMMA_ASSIGN_OR_RETURN(d.keys, ReadKeys(c, pk));
  d.key_count = static_cast<int64_t>(d.keys.size());
  return std::make_pair(std::move(d), pk);
}

// Same id stored already: the same digest is kAlreadyStored, another kConflict.
Result<PutOutcome> StoredAlready(PGconn* c, const PackageDescriptor& d, const Bytes& stored,
                                 const AuditEvent& audit) {
  if (stored != d.sha256) {
    return Error(Code::kConflict,
                 Cat("package ", d.package_id, " is already stored with different content"));
  }
  TPMMA_RETURN_IF_ERROR(AppendAuditLocked(c, audit));
  return PutOutcome::kAlreadyStored;
}

Result<std::optional<Bytes>> StoredDigest(PGconn* c, std::string_view package_id) {
  TPMMA_ASSIGN_OR_RETURN(
      Rows r, Query(c, "check existing package",
                    "SELECT sha256 FROM packages WHERE package_id = $1", Params(package_id)));
  if (r.empty()) return std::nullopt;
  return r.Blob(0, 0);
}

}  // namespace

// --- Packages

Result<PutOutcome> PostgresVault::PutPackage(const Package& package, const AuditEvent& audit) {
  const PackageDescriptor& d = package.descriptor;
  if (d.package_id.empty()) return Error(Code::kInvalidArgument, "package id is empty");
  // The caller has hashed the body already (as SqliteVault, the digest is not recomputed).
  if (d.sha256.size() != kHashSize) {
    return Error(Code::kInvalidArgument, "package sha256 must be the 32-byte SHA-256 of the body");
  }
  return Write(*writes_, "put package", [&](PGconn* c) -> Result<PutOutcome> {
    TPMMA_ASSIGN_OR_RETURN(std::optional<Bytes> stored, StoredDigest(c, d.package_id));
    if (stored) return StoredAlready(c, d, *stored, audit);
    TPMMA_ASSIGN_OR_RETURN(bool platform_exists, PlatformExists(c, d.source_platform_id));
    if (!platform_exists) {
      return Error(Code::kNotFound, Cat("source platform ", d.source_platform_id, " of package ",
                                        d.package_id, " not found"));
    }
    // Another instance may be storing the same id right now: ON CONFLICT waits for it, and
    // if it committed, the row is read again (READ COMMITTED: a new snapshot per statement).
    TPMMA_ASSIGN_OR_RETURN(
        Rows ins, Query(c, "insert package",
                        "INSERT INTO packages (package_id, source_platform_id, format_version, "
                        "created_at, uploaded_at, sha256, size, custody, signing_key, "
                        "wrap_key_id, wrap_duplicate, wrap_seed) "
                        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) "
                        "ON CONFLICT (package_id) DO NOTHING RETURNING pk",
                        Params(d.package_id, d.source_platform_id, d.format_version, d.created_at,
                               d.uploaded_at, d.sha256, package.body.size(), ToString(d.custody),
                               d.signing_key, WrapKeyColumn(d), WrapDuplicateColumn(package),
                               WrapSeedColumn(package))));
    if (ins.empty()) {
      TPMMA_ASSIGN_OR_RETURN(stored, StoredDigest(c, d.package_id));
      if (!stored) return Error(Code::kUnavailable, "package row vanished while storing it");
      return StoredAlready(c, d, *stored, audit);
    }
    const int64_t pk = ins.Int(0, 0);
    TPMMA_RETURN_IF_ERROR(Command(c, "insert package body",
                                  "INSERT INTO package_bodies (package_pk, body) VALUES ($1, $2)",
                                  Params(pk, package.body)));
    for (size_t i = 0; i < d.keys.size(); ++i) {
      TPMMA_RETURN_IF_ERROR(
          Command(c, "insert package key",
                  "INSERT INTO package_keys (package_pk, ordinal, key_id, label, "
                  "usage) VALUES ($1, $2, $3, $4, $5)",
                  Params(pk, i, d.keys[i].key_id, d.keys[i].label, d.keys[i].usage)));
    }
    TPMMA_RETURN_IF_ERROR(AppendAuditLocked(c, audit));
    return PutOutcome::kStored;
  });
}

Result<Package> PostgresVault::GetPackage(std::string_view package_id) {
  return postgres::Snapshot(*pool_, "get package", [&](PGconn* c) -> Result<Package> {
    TPMMA_ASSIGN_OR_RETURN(auto dpk, GetDescriptorLocked(c, package_id));
    TPMMA_ASSIGN_OR_RETURN(
        Rows r, Query(c, "read package body",
                      "SELECT b.body, p.wrap_duplicate, p.wrap_seed FROM package_bodies b "
                      "JOIN packages p ON p.pk = b.package_pk WHERE b.package_pk = $1",
                      Params(dpk.second)));
    if (r.empty()) return Error(Code::kCorruption, Cat("package ", package_id, " has no body"));
    Package p{std::move(dpk.first), r.Blob(0, 0), std::nullopt};
    if (!r.IsNull(0, 1)) p.rewrap = OuterWrap{r.Blob(0, 1), r.Blob(0, 2)};
    return p;
  });
}

Result<PackageDescriptor> PostgresVault::GetPackageDescriptor(std::string_view package_id) {
  return postgres::Snapshot(*pool_, "get package descriptor",
                            [&](PGconn* c) -> Result<PackageDescriptor> {
                              TPMMA_ASSIGN_OR_RETURN(auto dpk, GetDescriptorLocked(c, package_id));
                              return std::move(dpk.first);
                            });
}

Status PostgresVault::DeletePackage(std::string_view package_id, const AuditEvent& audit) {
  // Keys and body go by ON DELETE CASCADE. Unlike SQLite's secure_delete, PostgreSQL leaves
  // the old tuples in the heap until VACUUM and in the WAL (storage/README.md).
  return ToStatus(Write(*writes_, "delete package", [&](PGconn* c) -> Result<void> {
    TPMMA_ASSIGN_OR_RETURN(
        int64_t n, Command(c, "delete package", "DELETE FROM packages WHERE package_id = $1",
                           Params(package_id)));
    if (n == 0) return Error(Code::kNotFound, Cat("package ", package_id, " not found"));
    TPMMA_RETURN_IF_ERROR(AppendAuditLocked(c, audit));
    return {};
  }));
}

namespace {

// The WHERE clause of a package query and its parameters ($1, $2, ... in order).
struct PackageFilter {
  std::string sql;
  Params params;
  std::string Next() { return Cat("$", params.size() + 1); }
};

PackageFilter BuildPackageFilter(const PackageQuery& q, int64_t after_pk, size_t limit) {
  PackageFilter f;
  f.sql = Cat("SELECT ", kPackageColumns,
              ", (SELECT count(*) FROM package_keys k WHERE k.package_pk = p.pk) "
              "FROM packages p WHERE p.pk > ",
              f.Next());
  f.params.Add(after_pk);
  if (q.source_platform_id) {
    f.sql += Cat(" AND p.source_platform_id = ", f.Next());
    f.params.Add(*q.source_platform_id);
  }
  if (q.created_after) {
    f.sql += Cat(" AND p.created_at > ", f.Next());
    f.params.Add(*q.created_after);
  }
  if (q.created_before) {
    f.sql += Cat(" AND p.created_at < ", f.Next());
    f.params.Add(*q.created_before);
  }
  if (q.label_contains) {
    // strpos, not LIKE: a label filter must not be able to smuggle in wildcards.
    f.sql +=
        Cat(" AND EXISTS (SELECT 1 FROM package_keys k WHERE k.package_pk = p.pk "
            "AND strpos(k.label, ",
            f.Next(), ") > 0)");
    f.params.Add(*q.label_contains);
  }
  if (q.visible_to_platform) {
    const std::string platform = f.Next();
    f.params.Add(*q.visible_to_platform);
    const std::string now = f.Next();
    f.params.Add(q.now);
    f.sql += Cat(" AND (p.source_platform_id = ", platform,
                 " OR EXISTS (SELECT 1 FROM approvals a WHERE a.new_platform_id = ", platform,
                 " AND a.old_platform_id = p.source_platform_id AND a.state = 'active' "
                 "AND a.expires_at > ",
                 now,
                 " AND (a.all_packages OR EXISTS (SELECT 1 FROM approval_packages ap "
                 "WHERE ap.approval_id = a.id AND ap.package_id = p.package_id))))");
  }
  f.sql += Cat(" ORDER BY p.pk LIMIT ", f.Next());
  f.params.Add(static_cast<int64_t>(limit));
  return f;
}

}  // namespace

Result<PackagePage> PostgresVault::QueryPackages(const PackageQuery& q) {
  TPMMA_ASSIGN_OR_RETURN(int64_t after_pk, ParseIntPageToken('p', q.page_token));
  const size_t n = ClampPageSize(q.page_size);
  PackageFilter f = BuildPackageFilter(q, after_pk, n + 1);
  return postgres::Snapshot(*pool_, "query packages", [&](PGconn* c) -> Result<PackagePage> {
    TPMMA_ASSIGN_OR_RETURN(Rows r, Query(c, "query packages", f.sql, f.params));
    PackagePage page;
    int64_t last_pk = 0;
    for (int i = 0; i < r.size(); ++i) {
      if (page.packages.size() == n) {
        page.next_page_token = MakePageToken('p', std::to_string(last_pk));
        break;
      }
      TPMMA_ASSIGN_OR_RETURN(PackageDescriptor d, ReadDescriptor(r, i));
      last_pk = r.Int(i, 0);
      d.key_count = r.Int(i, 11);
      if (q.with_keys) {
        TPMMA_ASSIGN_OR_RETURN(d.keys, ReadKeys(c, last_pk));
      }
      page.packages.push_back(std::move(d));
    }
    return page;
  });
}

// --- Outer wraps

Result<std::vector<WrapCount>> PostgresVault::CountPackagesByWrapKey() {
  return postgres::Snapshot(
      *pool_, "count packages by wrap key", [&](PGconn* c) -> Result<std::vector<WrapCount>> {
        TPMMA_ASSIGN_OR_RETURN(Rows r, Query(c, "count packages by wrap key",
                                             "SELECT coalesce(wrap_key_id, ''), count(*) FROM "
                                             "packages GROUP BY 1 ORDER BY 1",
                                             Params()));
        std::vector<WrapCount> out;
        for (int i = 0; i < r.size(); ++i) out.push_back({r.Text(i, 0), r.Int(i, 1)});
        return out;
      });
}

Result<std::vector<std::string>> PostgresVault::ListPackagesWrappedTo(std::string_view key_id,
                                                                      size_t limit) {
  return postgres::Snapshot(
      *pool_, "list packages by wrap key", [&](PGconn* c) -> Result<std::vector<std::string>> {
        TPMMA_ASSIGN_OR_RETURN(Rows r, Query(c, "list packages by wrap key",
                                             "SELECT package_id FROM packages WHERE "
                                             "wrap_key_id = $1 ORDER BY pk LIMIT $2",
                                             Params(key_id, static_cast<int64_t>(limit))));
        std::vector<std::string> out;
        for (int i = 0; i < r.size(); ++i) out.push_back(r.Text(i, 0));
        return out;
      });
}

Result<int64_t> PostgresVault::ReplaceOuterWraps(const std::vector<WrapUpdate>& updates,
                                                 const AuditEvent& audit) {
  return Write(*writes_, "replace outer wraps", [&](PGconn* c) -> Result<int64_t> {
    int64_t moved = 0;
    for (const WrapUpdate& u : updates) {
      TPMMA_ASSIGN_OR_RETURN(int64_t n,
                             Command(c, "replace outer wrap",
                                     "UPDATE packages SET wrap_key_id = $1, wrap_duplicate = $2, "
                                     "wrap_seed = $3 WHERE package_id = $4 AND wrap_key_id = $5",
                                     Params(u.to_key_id, u.wrap.duplicate, u.wrap.encrypted_seed,
                                            u.package_id, u.from_key_id)));
      moved += n;
    }
    TPMMA_RETURN_IF_ERROR(AppendAuditLocked(c, audit));
    return moved;
  });
}

Result<int64_t> PostgresVault::AssignUnrecordedWraps(std::string_view key_id,
                                                     const AuditEvent& audit) {
  if (key_id.empty()) return Error(Code::kInvalidArgument, "wrap key id is empty");
  return Write(*writes_, "record wrap keys", [&](PGconn* c) -> Result<int64_t> {
    TPMMA_ASSIGN_OR_RETURN(int64_t n, Command(c, "record wrap keys",
                                              "UPDATE packages SET wrap_key_id = $1 WHERE "
                                              "wrap_key_id IS NULL",
                                              Params(key_id)));
    if (n > 0) TPMMA_RETURN_IF_ERROR(AppendAuditLocked(c, audit));
    return n;
  });
}

}  // namespace tpmma::storage
