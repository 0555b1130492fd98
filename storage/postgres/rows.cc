// SPDX-License-Identifier: GPL-2.0-or-later
#include "storage/postgres/rows.h"
#include "storage/page_token.h"

#include <algorithm>
#include <charconv>

#include "common/bytes.h"

namespace tpmma::storage::postgres {

Status CheckAuditEvent(const AuditEvent& e) {
  for (const std::string* field : {&e.actor, &e.action, &e.object, &e.outcome, &e.detail}) {
    if (field->size() > kMaxAuditField) {
      return Status(Code::kInvalidArgument,
                    Cat("audit field longer than ", kMaxAuditField, " bytes"));
    }
  }
  return Status();
}

Result<int64_t> AppendAuditLocked(PGconn* c, const AuditEvent& e) {
  TPMMA_RETURN_IF_ERROR(CheckAuditEvent(e));
  // The head row always exists (migration 1), so FOR UPDATE always locks something: every
  // appender, in any instance, waits here until the previous one's transaction has ended,
  // and then reads the head that transaction left (READ COMMITTED re-reads a locked row).
  TPMMA_ASSIGN_OR_RETURN(Rows head, Query(c, "lock audit chain head",
                                          "SELECT seq, hash FROM audit_head WHERE id FOR UPDATE"));
  if (head.size() != 1) return Error(Code::kCorruption, "audit_head has no row");
  const int64_t seq = head.Int(0, 0) + 1;
  const Bytes prev = head.Blob(0, 1);
  TPMMA_ASSIGN_OR_RETURN(Bytes hash, AuditRecordHash(seq, e, prev));
  TPMMA_ASSIGN_OR_RETURN(
      int64_t inserted,
      Command(c, "append audit record",
              Cat("INSERT INTO audit_log (", kAuditColumns,
                  ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"),
              Params(seq, e.time, e.actor, e.action, e.object, e.outcome, e.detail, prev, hash)));
  // A trigger returning NULL would drop the row silently.
  if (inserted != 1) return Error(Code::kCorruption, "audit record was not stored");
  TPMMA_ASSIGN_OR_RETURN(int64_t moved, Command(c, "advance audit chain head",
                                                "UPDATE audit_head SET seq = $1, hash = $2 "
                                                "WHERE id AND seq = $3",
                                                Params(seq, hash, seq - 1)));
  if (moved != 1) return Error(Code::kCorruption, "audit chain head did not advance");
  return seq;
}

Status MaybeAudit(PGconn* c, const std::optional<AuditEvent>& audit) {
  if (audit) TPMMA_RETURN_IF_ERROR(AppendAuditLocked(c, *audit));
  return Status();
}

AuditRecord ReadAuditRecord(const Rows& rows, int i) {
  AuditRecord r;
  r.seq = rows.Int(i, 0);
  r.event = AuditEvent{rows.Int(i, 1),  rows.Text(i, 2), rows.Text(i, 3),
                       rows.Text(i, 4), rows.Text(i, 5), rows.Text(i, 6)};
  r.prev_hash = rows.Blob(i, 7);
  r.hash = rows.Blob(i, 8);
  return r;
}

Result<bool> PlatformExists(PGconn* c, std::string_view id) {
  TPMMA_ASSIGN_OR_RETURN(Rows r, Query(c, "check platform exists",
                                       "SELECT 1 FROM platforms WHERE id = $1", Params(id)));
  return !r.empty();
}

Result<Platform> ReadPlatform(const Rows& rows, int i) {
  Platform p;
  p.id = rows.Text(i, 0);
  p.ek_public = rows.Blob(i, 1);
  p.ek_certificate = rows.Blob(i, 2);
  p.ak_public = rows.Blob(i, 3);
  p.ak_name = rows.Blob(i, 4);
  if (!rows.IsNull(i, 5)) p.signing_key_public = rows.Blob(i, 5);
  TPMMA_ASSIGN_OR_RETURN(p.state, ParseEnum(rows.Text(i, 6), kPlatformStates, "platform state"));
  p.created_at = rows.Int(i, 7);
  p.last_seen_at = rows.Int(i, 8);
  p.ek_key_id = rows.Blob(i, 9);
  if (!rows.IsNull(i, 10)) p.srk_public = rows.Blob(i, 10);
  if (!rows.IsNull(i, 11)) p.srk_certified_at = rows.Int(i, 11);
  return p;
}

}  // namespace tpmma::storage::postgres
