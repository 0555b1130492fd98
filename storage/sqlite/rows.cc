// SPDX-License-Identifier: GPL-2.0-or-later
#include "storage/sqlite/rows.h"

namespace tpmma::storage::sqlite {

Status CheckAuditEvent(const AuditEvent& e) {
  for (const std::string* field : {&e.actor, &e.action, &e.object, &e.outcome, &e.detail}) {
    if (field->size() > kMaxAuditField) {
      return Status(Code::kInvalidArgument,
                    Cat("audit field longer than ", kMaxAuditField, " bytes"));
    }
  }
  return Status();
}

Result<int64_t> AppendAuditLocked(sqlite3* db, const AuditEvent& e) {
  TPMMA_RETURN_IF_ERROR(CheckAuditEvent(e));
  TPMMA_ASSIGN_OR_RETURN(
      Stmt last, Stmt::Prepare(db, "read audit chain head",
                               "SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1"));
  TPMMA_ASSIGN_OR_RETURN(bool has_last, last.Step());
  int64_t seq = has_last ? last.Int(0) + 1 : 1;
  Bytes prev = has_last ? last.Blob(1) : Bytes(kHashSize, 0);
  TPMMA_ASSIGN_OR_RETURN(Bytes hash, AuditRecordHash(seq, e, prev));
  TPMMA_ASSIGN_OR_RETURN(
      Stmt ins, Stmt::Prepare(db, "append audit record",
                              "INSERT INTO audit_log (seq, time, actor, action, object, outcome, "
                              "detail, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"));
  ins.Bind(seq, e.time, e.actor, e.action, e.object, e.outcome, e.detail, prev, hash);
  TPMMA_RETURN_IF_ERROR(ins.Run());
  return seq;
}

Status MaybeAudit(sqlite3* db, const std::optional<AuditEvent>& audit) {
  if (audit) TPMMA_RETURN_IF_ERROR(AppendAuditLocked(db, *audit));
  return Status();
}

Result<bool> PlatformExists(sqlite3* db, std::string_view id) {
  TPMMA_ASSIGN_OR_RETURN(
      Stmt s, Stmt::Prepare(db, "check platform exists", "SELECT 1 FROM platforms WHERE id = ?"));
  s.Bind(id);
  return s.Step();
}

}  // namespace tpmma::storage::sqlite
