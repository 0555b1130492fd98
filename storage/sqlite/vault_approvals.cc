// SPDX-License-Identifier: GPL-2.0-or-later
// SqliteVault: restore approvals (with the two-person rule) and operators.
#include "storage/sqlite/read_pool.h"
#include "storage/sqlite/rows.h"
#include "storage/sqlite/txn.h"
#include "storage/sqlite/writer.h"
#include "storage/sqlite_vault.h"

namespace tpmma::storage {

using sqlite::AppendAuditLocked;
using sqlite::InTxn;
using sqlite::kApprovalStates;
using sqlite::kHashSize;
using sqlite::kOperatorRoles;
using sqlite::ParseEnum;
using sqlite::Stmt;
using sqlite::ToStatus;
using sqlite::Write;

namespace {

constexpr std::string_view kApprovalColumns =
    "id, old_platform_id, new_platform_id, all_packages, reason, created_by, created_at, "
    "expires_at, confirmed_by, state, used_at";

Result<Approval> GetApprovalLocked(sqlite3* db, int64_t id) {
  TPMMA_ASSIGN_OR_RETURN(
      Stmt s, Stmt::Prepare(db, "read approval",
                            Cat("SELECT ", kApprovalColumns, " FROM approvals WHERE id = ?")));
  s.Bind(id);
  TPMMA_ASSIGN_OR_RETURN(bool found, s.Step());
  if (!found) return Error(Code::kNotFound, Cat("approval ", id, " not found"));
  Approval a;
  a.id = s.Int(0);
  a.old_platform_id = s.Text(1);
  a.new_platform_id = s.Text(2);
  a.all_packages = s.Int(3) != 0;
  a.reason = s.Text(4);
  a.created_by = s.Text(5);
  a.created_at = s.Int(6);
  a.expires_at = s.Int(7);
  if (!s.IsNull(8)) a.confirmed_by = s.Text(8);
  TPMMA_ASSIGN_OR_RETURN(a.state, ParseEnum(s.Text(9), kApprovalStates, "approval state"));
  a.used_at = s.OptInt(10);
  TPMMA_ASSIGN_OR_RETURN(
      Stmt p, Stmt::Prepare(db, "read approval packages",
                            "SELECT package_id FROM approval_packages WHERE approval_id = ? "
                            "ORDER BY package_id"));
  p.Bind(id);
  while (true) {
    TPMMA_ASSIGN_OR_RETURN(bool row, p.Step());
    if (!row) break;
    a.package_ids.push_back(p.Text(0));
  }
  return a;
}

Status SetApprovalState(sqlite3* db, int64_t id, ApprovalState state,
                        std::optional<std::string_view> confirmed_by,
                        std::optional<int64_t> used_at) {
  TPMMA_ASSIGN_OR_RETURN(Stmt s, Stmt::Prepare(db, "update approval",
                                               "UPDATE approvals SET state = ?, "
                                               "confirmed_by = COALESCE(?, confirmed_by), "
                                               "used_at = COALESCE(?, used_at) WHERE id = ?"));
  s.Bind(ToString(state), confirmed_by, used_at, id);
  return s.Run();
}

constexpr std::string_view kOperatorColumns =
    "name, role, cert_fingerprint, created_at, revoked_at";

Result<Operator> ReadOperator(const Stmt& s) {
  Operator op;
  op.name = s.Text(0);
  TPMMA_ASSIGN_OR_RETURN(op.role, ParseEnum(s.Text(1), kOperatorRoles, "operator role"));
  op.cert_fingerprint = s.Text(2);
  op.created_at = s.Int(3);
  op.revoked_at = s.OptInt(4);
  return op;
}

Result<Operator> GetOperatorWhere(sqlite3* db, std::string_view column, std::string_view value) {
  TPMMA_ASSIGN_OR_RETURN(Stmt s, Stmt::Prepare(db, "read operator",
                                               Cat("SELECT ", kOperatorColumns,
                                                   " FROM operators WHERE ", column, " = ?")));
  s.Bind(value);
  TPMMA_ASSIGN_OR_RETURN(bool found, s.Step());
  if (!found) return Error(Code::kNotFound, "operator not found");
  return ReadOperator(s);
}

// A platform restores its own packages without an approval, except that an escrowed inner
// key (docs/protocol.md, "Inner-key custody") is released only under one: after a TPM clear
// the platform has no copy of its own. So a same-platform approval must cover an escrow
// package.
Status CheckSamePlatformApproval(sqlite3* db, const ApprovalRequest& r) {
  TPMMA_ASSIGN_OR_RETURN(int64_t escrowed, [&]() -> Result<int64_t> {
    TPMMA_ASSIGN_OR_RETURN(
        Stmt c, Stmt::Prepare(db, "count escrow packages",
                              "SELECT count(*) FROM packages WHERE source_platform_id = ? "
                              "AND custody = 'escrow'"));
    c.Bind(r.old_platform_id);
    TPMMA_RETURN_IF_ERROR(c.Step());
    int64_t n = c.Int(0);
    if (r.all_packages || n == 0) return n;
    n = 0;
    TPMMA_ASSIGN_OR_RETURN(Stmt one,
                           Stmt::Prepare(db, "escrow package",
                                         "SELECT count(*) FROM packages WHERE package_id = ? "
                                         "AND source_platform_id = ? AND custody = 'escrow'"));
    for (const std::string& pkg : r.package_ids) {
      one.Reset();
      one.Bind(pkg, r.old_platform_id);
      TPMMA_RETURN_IF_ERROR(one.Step());
      n += one.Int(0);
    }
    return n;
  }());
  if (escrowed == 0) {
    return Status(Code::kInvalidArgument,
                  "old and new platform are the same: a platform restores its own packages "
                  "without an approval (a same-platform approval only releases escrowed inner "
                  "keys, and none of the selected packages is in escrow custody)");
  }
  return Status();
}

}  // namespace

// --- Approvals

Result<Approval> SqliteVault::CreateApproval(const ApprovalRequest& r, const AuditEvent& audit) {
  if (r.old_platform_id.empty() || r.new_platform_id.empty()) {
    return Error(Code::kInvalidArgument, "approval needs an old and a new platform");
  }
  if (!r.all_packages && r.package_ids.empty()) {
    return Error(Code::kInvalidArgument, "approval lists no packages");
  }
  if (r.expires_at <= r.created_at) {
    return Error(Code::kInvalidArgument, "approval expires before it is created");
  }
  if (r.created_by.empty()) return Error(Code::kInvalidArgument, "approval has no operator");
  return Write(*writer_, "create approval", [&](sqlite3* db) -> Result<Approval> {
    if (r.old_platform_id == r.new_platform_id) {
      TPMMA_RETURN_IF_ERROR(CheckSamePlatformApproval(db, r));
    }
    TPMMA_ASSIGN_OR_RETURN(
        Stmt s, Stmt::Prepare(db, "insert approval",
                              "INSERT INTO approvals (old_platform_id, new_platform_id, "
                              "all_packages, reason, created_by, created_at, expires_at, state) "
                              "VALUES (?, ?, ?, ?, ?, ?, ?, ?)"));
    s.Bind(r.old_platform_id, r.new_platform_id, r.all_packages ? 1 : 0, r.reason, r.created_by,
           r.created_at, r.expires_at,
           ToString(r.require_confirmation ? ApprovalState::kPending : ApprovalState::kActive));
    TPMMA_RETURN_IF_ERROR(s.Run());
    int64_t id = sqlite3_last_insert_rowid(db);
    TPMMA_RETURN_IF_ERROR(options_.fault_hook("approval_row"));
    if (!r.all_packages) {
      TPMMA_ASSIGN_OR_RETURN(Stmt p, Stmt::Prepare(db, "insert approval package",
                                                   "INSERT OR IGNORE INTO approval_packages "
                                                   "(approval_id, package_id) VALUES (?, ?)"));
      for (const std::string& pkg : r.package_ids) {
        p.Reset();
        p.Bind(id, pkg);
        TPMMA_RETURN_IF_ERROR(p.Run());
        TPMMA_RETURN_IF_ERROR(options_.fault_hook("approval_package"));
      }
    }
    AuditEvent e = audit;
    if (e.object.empty()) e.object = std::to_string(id);
    TPMMA_RETURN_IF_ERROR(AppendAuditLocked(db, e));
    return GetApprovalLocked(db, id);
  });
}

Result<Approval> SqliteVault::ConfirmApproval(int64_t approval_id, std::string_view operator_name,
                                              int64_t now, const AuditEvent& audit) {
  return Write(*writer_, "confirm approval", [&](sqlite3* db) -> Result<Approval> {
    TPMMA_ASSIGN_OR_RETURN(Approval a, GetApprovalLocked(db, approval_id));
    if (a.state != ApprovalState::kPending) {
      return Error(Code::kConflict,
                   Cat("approval ", approval_id, " is ", ToString(a.state), ", not pending"));
    }
    if (a.created_by == operator_name) {
      return Error(Code::kPermissionDenied,
                   Cat("approval ", approval_id, " must be confirmed by a second operator"));
    }
    if (now >= a.expires_at) {
      return Error(Code::kExpired, Cat("approval ", approval_id, " expired"));
    }
    TPMMA_RETURN_IF_ERROR(
        SetApprovalState(db, approval_id, ApprovalState::kActive, operator_name, std::nullopt));
    TPMMA_RETURN_IF_ERROR(AppendAuditLocked(db, audit));
    return GetApprovalLocked(db, approval_id);
  });
}

Status SqliteVault::RevokeApproval(int64_t approval_id, const AuditEvent& audit) {
  return ToStatus(Write(*writer_, "revoke approval", [&](sqlite3* db) -> Result<void> {
    TPMMA_ASSIGN_OR_RETURN(Approval a, GetApprovalLocked(db, approval_id));
    if (a.state != ApprovalState::kPending && a.state != ApprovalState::kActive) {
      return Error(Code::kConflict,
                   Cat("approval ", approval_id, " is ", ToString(a.state), ", cannot revoke"));
    }
    TPMMA_RETURN_IF_ERROR(
        SetApprovalState(db, approval_id, ApprovalState::kRevoked, std::nullopt, std::nullopt));
    TPMMA_RETURN_IF_ERROR(AppendAuditLocked(db, audit));
    return {};
  }));
}

Result<Approval> SqliteVault::GetApproval(int64_t approval_id) {
  auto conn = readers_->Acquire();
  sqlite3* db = conn.get();
  return InTxn(db, false, "get approval",
               [&]() -> Result<Approval> { return GetApprovalLocked(db, approval_id); });
}

Result<std::vector<Approval>> SqliteVault::ListApprovals(std::string_view new_platform_id) {
  auto conn = readers_->Acquire();
  sqlite3* db = conn.get();
  return InTxn(db, false, "list approvals", [&]() -> Result<std::vector<Approval>> {
    TPMMA_ASSIGN_OR_RETURN(
        Stmt s, Stmt::Prepare(db, "list approvals",
                              "SELECT id FROM approvals WHERE ? = '' OR new_platform_id = ? "
                              "ORDER BY id DESC"));
    s.Bind(new_platform_id, new_platform_id);
    std::vector<Approval> out;
    while (true) {
      TPMMA_ASSIGN_OR_RETURN(bool row, s.Step());
      if (!row) break;
      TPMMA_ASSIGN_OR_RETURN(Approval a, GetApprovalLocked(db, s.Int(0)));
      out.push_back(std::move(a));
    }
    return out;
  });
}

Result<Approval> SqliteVault::FindActiveApproval(std::string_view new_platform_id,
                                                 std::string_view package_id, int64_t now) {
  auto conn = readers_->Acquire();
  sqlite3* db = conn.get();
  return InTxn(db, false, "find active approval", [&]() -> Result<Approval> {
    TPMMA_ASSIGN_OR_RETURN(
        Stmt s, Stmt::Prepare(db, "find active approval",
                              "SELECT a.id FROM approvals a JOIN packages p "
                              "ON p.package_id = ? AND p.source_platform_id = a.old_platform_id "
                              "WHERE a.new_platform_id = ? AND a.state = 'active' "
                              "AND a.expires_at > ? AND (a.all_packages = 1 OR EXISTS "
                              "(SELECT 1 FROM approval_packages ap WHERE ap.approval_id = a.id "
                              "AND ap.package_id = p.package_id)) ORDER BY a.id LIMIT 1"));
    s.Bind(package_id, new_platform_id, now);
    TPMMA_ASSIGN_OR_RETURN(bool found, s.Step());
    if (!found) {
      return Error(Code::kNotFound, Cat("no active approval for platform ", new_platform_id,
                                        " and package ", package_id));
    }
    return GetApprovalLocked(db, s.Int(0));
  });
}

Status SqliteVault::MarkApprovalUsed(int64_t approval_id, int64_t now, const AuditEvent& audit) {
  return ToStatus(Write(*writer_, "mark approval used", [&](sqlite3* db) -> Result<void> {
    TPMMA_ASSIGN_OR_RETURN(Approval a, GetApprovalLocked(db, approval_id));
    if (a.state != ApprovalState::kActive) {
      return Error(Code::kConflict,
                   Cat("approval ", approval_id, " is ", ToString(a.state), ", not active"));
    }
    if (now >= a.expires_at) {
      return Error(Code::kExpired, Cat("approval ", approval_id, " expired"));
    }
    TPMMA_RETURN_IF_ERROR(
        SetApprovalState(db, approval_id, ApprovalState::kUsed, std::nullopt, now));
    TPMMA_RETURN_IF_ERROR(AppendAuditLocked(db, audit));
    return {};
  }));
}

// --- Operators

Status SqliteVault::AddOperator(const Operator& op, const AuditEvent& audit) {
  if (op.name.empty() || op.cert_fingerprint.empty()) {
    return Status(Code::kInvalidArgument, "operator needs a name and a certificate fingerprint");
  }
  return ToStatus(Write(*writer_, "add operator", [&](sqlite3* db) -> Result<void> {
    TPMMA_ASSIGN_OR_RETURN(
        Stmt c, Stmt::Prepare(db, "check operator exists",
                              "SELECT 1 FROM operators WHERE name = ? OR cert_fingerprint = ?"));
    c.Bind(op.name, op.cert_fingerprint);
    TPMMA_ASSIGN_OR_RETURN(bool exists, c.Step());
    if (exists) {
      return Error(Code::kAlreadyExists,
                   Cat("operator ", op.name, " or its certificate is already registered"));
    }
    TPMMA_ASSIGN_OR_RETURN(
        Stmt s, Stmt::Prepare(db, "insert operator",
                              "INSERT INTO operators (name, role, cert_fingerprint, created_at, "
                              "revoked_at) VALUES (?, ?, ?, ?, ?)"));
    s.Bind(op.name, ToString(op.role), op.cert_fingerprint, op.created_at, op.revoked_at);
    TPMMA_RETURN_IF_ERROR(s.Run());
    TPMMA_RETURN_IF_ERROR(AppendAuditLocked(db, audit));
    return {};
  }));
}

Result<Operator> SqliteVault::GetOperator(std::string_view name) {
  auto conn = readers_->Acquire();
  return GetOperatorWhere(conn.get(), "name", name);
}

Result<Operator> SqliteVault::GetOperatorByFingerprint(std::string_view fingerprint) {
  auto conn = readers_->Acquire();
  return GetOperatorWhere(conn.get(), "cert_fingerprint", fingerprint);
}

Result<std::vector<Operator>> SqliteVault::ListOperators() {
  auto conn = readers_->Acquire();
  TPMMA_ASSIGN_OR_RETURN(
      Stmt s, Stmt::Prepare(conn.get(), "list operators",
                            Cat("SELECT ", kOperatorColumns, " FROM operators ORDER BY name")));
  std::vector<Operator> out;
  while (true) {
    TPMMA_ASSIGN_OR_RETURN(bool row, s.Step());
    if (!row) break;
    TPMMA_ASSIGN_OR_RETURN(Operator op, ReadOperator(s));
    out.push_back(std::move(op));
  }
  return out;
}

Status SqliteVault::RevokeOperator(std::string_view name, int64_t now, const AuditEvent& audit) {
  return ToStatus(Write(*writer_, "revoke operator", [&](sqlite3* db) -> Result<void> {
    TPMMA_ASSIGN_OR_RETURN(Operator op, GetOperatorWhere(db, "name", name));
    if (op.revoked_at) {
      return Error(Code::kConflict, Cat("operator ", name, " is already revoked"));
    }
    TPMMA_ASSIGN_OR_RETURN(Stmt s, Stmt::Prepare(db, "revoke operator",
                                                 "UPDATE operators SET revoked_at = ? "
                                                 "WHERE name = ?"));
    s.Bind(now, name);
    TPMMA_RETURN_IF_ERROR(s.Run());
    TPMMA_RETURN_IF_ERROR(AppendAuditLocked(db, audit));
    return {};
  }));
}

}  // namespace tpmma::storage
