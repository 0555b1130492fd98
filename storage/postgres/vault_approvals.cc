// SPDX-License-Identifier: GPL-2.0-or-later
// PostgresVault: restore approvals (with the two-person rule) and operators. A state change
// reads the approval FOR UPDATE, so that of two instances using one approval at once, the
// second waits and then finds it used.
#include "storage/postgres/rows.h"
#include "storage/postgres_vault.h"

namespace tpmma::storage {

using postgres::AppendAuditLocked;
using postgres::Command;
using postgres::kApprovalStates;
using postgres::kOperatorRoles;
using postgres::Params;
using postgres::ParseEnum;
using postgres::Query;
using postgres::Rows;
using postgres::ToStatus;
using postgres::Write;

namespace {

constexpr std::string_view kApprovalColumns =
    "id, old_platform_id, new_platform_id, all_packages, reason, created_by, created_at, "
    "expires_at, confirmed_by, state, used_at";

Result<Approval> GetApprovalLocked(PGconn* c, int64_t id, bool for_update = false) {
  TPMMA_ASSIGN_OR_RETURN(Rows r,
                         Query(c, "read approval",
                               Cat("SELECT ", kApprovalColumns, " FROM approvals WHERE id = $1",
                                   for_update ? " FOR UPDATE" : ""),
                               Params(id)));
  if (r.empty()) return Error(Code::kNotFound, Cat("approval ", id, " not found"));
  Approval a;
  a.id = r.Int(0, 0);
  a.old_platform_id = r.Text(0, 1);
  a.new_platform_id = r.Text(0, 2);
  a.all_packages = r.Bool(0, 3);
  a.reason = r.Text(0, 4);
  a.created_by = r.Text(0, 5);
  a.created_at = r.Int(0, 6);
  a.expires_at = r.Int(0, 7);
  if (!r.IsNull(0, 8)) a.confirmed_by = r.Text(0, 8);
  TPMMA_ASSIGN_OR_RETURN(a.state, ParseEnum(r.Text(0, 9), kApprovalStates, "approval state"));
  a.used_at = r.OptInt(0, 10);
  TPMMA_ASSIGN_OR_RETURN(Rows p, Query(c, "read approval packages",
                                       "SELECT package_id FROM approval_packages "
                                       "WHERE approval_id = $1 ORDER BY package_id",
                                       Params(id)));
  for (int i = 0; i < p.size(); ++i) a.package_ids.push_back(p.Text(i, 0));
  return a;
}

// Moves the approval from `from` to `to`; the row is locked already, the WHERE makes sure.
Status SetApprovalState(PGconn* c, int64_t id, ApprovalState from, ApprovalState to,
                        std::optional<std::string_view> confirmed_by,
                        std::optional<int64_t> used_at) {
  TPMMA_ASSIGN_OR_RETURN(int64_t n,
                         Command(c, "update approval",
                                 "UPDATE approvals SET state = $1, "
                                 "confirmed_by = COALESCE($2, confirmed_by), "
                                 "used_at = COALESCE($3, used_at) "
                                 "WHERE id = $4 AND state = $5",
                                 Params(ToString(to), confirmed_by, used_at, id, ToString(from))));
  if (n != 1) return Status(Code::kConflict, Cat("approval ", id, " changed meanwhile"));
  return Status();
}

constexpr std::string_view kOperatorColumns =
    "name, role, cert_fingerprint, created_at, revoked_at";

Result<Operator> ReadOperator(const Rows& r, int i) {
  Operator op;
  op.name = r.Text(i, 0);
  TPMMA_ASSIGN_OR_RETURN(op.role, ParseEnum(r.Text(i, 1), kOperatorRoles, "operator role"));
  op.cert_fingerprint = r.Text(i, 2);
  op.created_at = r.Int(i, 3);
  op.revoked_at = r.OptInt(i, 4);
  return op;
}

Result<Operator> GetOperatorWhere(PGconn* c, std::string_view column, std::string_view value,
                                  bool for_update = false) {
  TPMMA_ASSIGN_OR_RETURN(Rows r, Query(c, "read operator",
                                       Cat("SELECT ", kOperatorColumns, " FROM operators WHERE ",
                                           column, " = $1", for_update ? " FOR UPDATE" : ""),
                                       Params(value)));
  if (r.empty()) return Error(Code::kNotFound, "operator not found");
  return ReadOperator(r, 0);
}

// A platform restores its own packages without an approval, except that an escrowed inner
// key is released only under one (as SqliteVault): a same-platform approval must cover an
// escrow package.
Status CheckSamePlatformApproval(PGconn* c, const ApprovalRequest& r) {
  int64_t escrowed = 0;
  if (r.all_packages) {
    TPMMA_ASSIGN_OR_RETURN(Rows n, Query(c, "count escrow packages",
                                         "SELECT count(*) FROM packages WHERE "
                                         "source_platform_id = $1 AND custody = 'escrow'",
                                         Params(r.old_platform_id)));
    escrowed = n.Int(0, 0);
  } else {
    for (const std::string& pkg : r.package_ids) {
      TPMMA_ASSIGN_OR_RETURN(Rows n, Query(c, "escrow package",
                                           "SELECT count(*) FROM packages WHERE package_id = $1 "
                                           "AND source_platform_id = $2 AND custody = 'escrow'",
                                           Params(pkg, r.old_platform_id)));
      escrowed += n.Int(0, 0);
    }
  }
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

Result<Approval> PostgresVault::CreateApproval(const ApprovalRequest& r, const AuditEvent& audit) {
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
  return Write(*writes_, "create approval", [&](PGconn* c) -> Result<Approval> {
    if (r.old_platform_id == r.new_platform_id) {
      TPMMA_RETURN_IF_ERROR(CheckSamePlatformApproval(c, r));
    }
    TPMMA_ASSIGN_OR_RETURN(
        Rows ins, Query(c, "insert approval",
                        "INSERT INTO approvals (old_platform_id, new_platform_id, all_packages, "
                        "reason, created_by, created_at, expires_at, state) "
                        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
                        Params(r.old_platform_id, r.new_platform_id, r.all_packages, r.reason,
                               r.created_by, r.created_at, r.expires_at,
                               ToString(r.require_confirmation ? ApprovalState::kPending
                                                               : ApprovalState::kActive))));
    const int64_t id = ins.Int(0, 0);
    if (!r.all_packages) {
      for (const std::string& pkg : r.package_ids) {
        TPMMA_RETURN_IF_ERROR(Command(c, "insert approval package",
                                      "INSERT INTO approval_packages (approval_id, package_id) "
                                      "VALUES ($1, $2) ON CONFLICT DO NOTHING",
                                      Params(id, pkg)));
      }
    }
    AuditEvent e = audit;
    if (e.object.empty()) e.object = std::to_string(id);
    TPMMA_RETURN_IF_ERROR(AppendAuditLocked(c, e));
    return GetApprovalLocked(c, id);
  });
}

Result<Approval> PostgresVault::ConfirmApproval(int64_t approval_id, std::string_view operator_name,
                                                int64_t now, const AuditEvent& audit) {
  return Write(*writes_, "confirm approval", [&](PGconn* c) -> Result<Approval> {
    TPMMA_ASSIGN_OR_RETURN(Approval a, GetApprovalLocked(c, approval_id, true));
    if (a.state != ApprovalState::kPending) {
      return Error(Code::kConflict,
                   Cat("approval ", approval_id, " is ", ToString(a.state), ", not pending"));
    }
    if (a.created_by == operator_name) {
      return Error(Code::kPermissionDenied,
                   Cat("approval ", approval_id, " must be confirmed by a second operator"));
    }
    if (now >= a.expires_at)
      return Error(Code::kExpired, Cat("approval ", approval_id, " expired"));
    TPMMA_RETURN_IF_ERROR(SetApprovalState(c, approval_id, ApprovalState::kPending,
                                           ApprovalState::kActive, operator_name, std::nullopt));
    TPMMA_RETURN_IF_ERROR(AppendAuditLocked(c, audit));
    return GetApprovalLocked(c, approval_id);
  });
}

Status PostgresVault::RevokeApproval(int64_t approval_id, const AuditEvent& audit) {
  return ToStatus(Write(*writes_, "revoke approval", [&](PGconn* c) -> Result<void> {
    TPMMA_ASSIGN_OR_RETURN(Approval a, GetApprovalLocked(c, approval_id, true));
    if (a.state != ApprovalState::kPending && a.state != ApprovalState::kActive) {
      return Error(Code::kConflict,
                   Cat("approval ", approval_id, " is ", ToString(a.state), ", cannot revoke"));
    }
    TPMMA_RETURN_IF_ERROR(SetApprovalState(c, approval_id, a.state, ApprovalState::kRevoked,
                                           std::nullopt, std::nullopt));
    TPMMA_RETURN_IF_ERROR(AppendAuditLocked(c, audit));
    return {};
  }));
}

Result<Approval> PostgresVault::GetApproval(int64_t approval_id) {
  return postgres::Snapshot(*pool_, "get approval", [&](PGconn* c) -> Result<Approval> {
    return GetApprovalLocked(c, approval_id);
  });
}

Result<std::vector<Approval>> PostgresVault::ListApprovals(std::string_view new_platform_id) {
  return postgres::Snapshot(
      *pool_, "list approvals", [&](PGconn* c) -> Result<std::vector<Approval>> {
        TPMMA_ASSIGN_OR_RETURN(Rows r, Query(c, "list approvals",
                                             "SELECT id FROM approvals WHERE $1 = '' "
                                             "OR new_platform_id = $1 ORDER BY id DESC",
                                             Params(new_platform_id)));
        std::vector<Approval> out;
        for (int i = 0; i < r.size(); ++i) {
          TPMMA_ASSIGN_OR_RETURN(Approval a, GetApprovalLocked(c, r.Int(i, 0)));
          out.push_back(std::move(a));
        }
        return out;
      });
}

Result<Approval> PostgresVault::FindActiveApproval(std::string_view new_platform_id,
                                                   std::string_view package_id, int64_t now) {
  return postgres::Snapshot(*pool_, "find active approval", [&](PGconn* c) -> Result<Approval> {
    TPMMA_ASSIGN_OR_RETURN(
        Rows r, Query(c, "find active approval",
                      "SELECT a.id FROM approvals a JOIN packages p "
                      "ON p.package_id = $1 AND p.source_platform_id = a.old_platform_id "
                      "WHERE a.new_platform_id = $2 AND a.state = 'active' "
                      "AND a.expires_at > $3 AND (a.all_packages OR EXISTS "
                      "(SELECT 1 FROM approval_packages ap WHERE ap.approval_id = a.id "
                      "AND ap.package_id = p.package_id)) ORDER BY a.id LIMIT 1",
                      Params(package_id, new_platform_id, now)));
    if (r.empty()) {
      return Error(Code::kNotFound, Cat("no active approval for platform ", new_platform_id,
                                        " and package ", package_id));
    }
    return GetApprovalLocked(c, r.Int(0, 0));
  });
}

Status PostgresVault::MarkApprovalUsed(int64_t approval_id, int64_t now, const AuditEvent& audit) {
  return ToStatus(Write(*writes_, "mark approval used", [&](PGconn* c) -> Result<void> {
    TPMMA_ASSIGN_OR_RETURN(Approval a, GetApprovalLocked(c, approval_id, true));
    if (a.state != ApprovalState::kActive) {
      return Error(Code::kConflict,
                   Cat("approval ", approval_id, " is ", ToString(a.state), ", not active"));
    }
    if (now >= a.expires_at)
      return Error(Code::kExpired, Cat("approval ", approval_id, " expired"));
    TPMMA_RETURN_IF_ERROR(SetApprovalState(c, approval_id, ApprovalState::kActive,
                                           ApprovalState::kUsed, std::nullopt, now));
    TPMMA_RETURN_IF_ERROR(AppendAuditLocked(c, audit));
    return {};
  }));
}

// --- Operators

Status PostgresVault::AddOperator(const Operator& op, const AuditEvent& audit) {
  if (op.name.empty() || op.cert_fingerprint.empty()) {
    return Status(Code::kInvalidArgument, "operator needs a name and a certificate fingerprint");
  }
  return ToStatus(Write(*writes_, "add operator", [&](PGconn* c) -> Result<void> {
    // ON CONFLICT: a concurrent AddOperator of the same name in another instance waits for
    // this one and then inserts nothing.
    TPMMA_ASSIGN_OR_RETURN(
        int64_t n, Command(c, "insert operator",
                           "INSERT INTO operators (name, role, cert_fingerprint, "
                           "created_at, revoked_at) VALUES ($1, $2, $3, $4, $5) "
                           "ON CONFLICT DO NOTHING",
                           Params(op.name, ToString(op.role), op.cert_fingerprint, op.created_at,
                                  op.revoked_at)));
    if (n == 0) {
      return Error(Code::kAlreadyExists,
                   Cat("operator ", op.name, " or its certificate is already registered"));
    }
    TPMMA_RETURN_IF_ERROR(AppendAuditLocked(c, audit));
    return {};
  }));
}

Result<Operator> PostgresVault::GetOperator(std::string_view name) {
  return postgres::Read(
      *pool_, [&](PGconn* c) -> Result<Operator> { return GetOperatorWhere(c, "name", name); });
}

Result<Operator> PostgresVault::GetOperatorByFingerprint(std::string_view fingerprint) {
  return postgres::Read(*pool_, [&](PGconn* c) -> Result<Operator> {
    return GetOperatorWhere(c, "cert_fingerprint", fingerprint);
  });
}

Result<std::vector<Operator>> PostgresVault::ListOperators() {
  return postgres::Read(*pool_, [&](PGconn* c) -> Result<std::vector<Operator>> {
    TPMMA_ASSIGN_OR_RETURN(
        Rows r, Query(c, "list operators",
                      Cat("SELECT ", kOperatorColumns, " FROM operators ORDER BY name")));
    std::vector<Operator> out;
    for (int i = 0; i < r.size(); ++i) {
      TPMMA_ASSIGN_OR_RETURN(Operator op, ReadOperator(r, i));
      out.push_back(std::move(op));
    }
    return out;
  });
}

Status PostgresVault::RevokeOperator(std::string_view name, int64_t now, const AuditEvent& audit) {
  return ToStatus(Write(*writes_, "revoke operator", [&](PGconn* c) -> Result<void> {
    TPMMA_ASSIGN_OR_RETURN(Operator op, GetOperatorWhere(c, "name", name, true));
    if (op.revoked_at) return Error(Code::kConflict, Cat("operator ", name, " is already revoked"));
    TPMMA_RETURN_IF_ERROR(Command(c, "revoke operator",
                                  "UPDATE operators SET revoked_at = $1 WHERE name = $2",
                                  Params(now, name)));
    TPMMA_RETURN_IF_ERROR(AppendAuditLocked(c, audit));
    return {};
  }));
}

}  // namespace tpmma::storage
