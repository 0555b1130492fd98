// SPDX-License-Identifier: GPL-2.0-or-later
// PostgresVault: the audit log: appends, listing, chain verification, archiving.
#include "storage/page_token.h"
#include "storage/postgres/audit_chain.h"
#include "storage/postgres/rows.h"
#include "storage/postgres_vault.h"

namespace tpmma::storage {

using postgres::AppendAuditLocked;
using postgres::Command;
using postgres::kAuditColumns;
using postgres::kHashSize;
using postgres::Params;
using postgres::Query;
using postgres::ReadAuditRecord;
using postgres::Rows;
using postgres::ToStatus;
using postgres::Write;

namespace {}  // namespace

Result<int64_t> PostgresVault::AppendAudit(const AuditEvent& event) {
  TPMMA_RETURN_IF_ERROR(CheckCallerAuditAction(event));
  return Write(*writes_, "append audit",
               [&](PGconn* c) -> Result<int64_t> { return AppendAuditLocked(c, event); });
}

Result<AuditPage> PostgresVault::ListAudit(const AuditFilter& f) {
  TPMMA_ASSIGN_OR_RETURN(int64_t after_seq, ParseIntPageToken('a', f.page_token));
  const size_t n = ClampPageSize(f.page_size);
  std::string sql = Cat("SELECT ", kAuditColumns, " FROM audit_log WHERE seq > $1");
  Params params(after_seq);
  auto add = [&](std::string_view clause, const auto& value) {
    sql += Cat(" AND ", clause, " $", params.size() + 1);
    params.Add(value);
  };
  if (f.actor) add("actor =", *f.actor);
  if (f.action) add("action =", *f.action);
  if (f.object) add("object =", *f.object);
  if (f.time_from) add("time >=", *f.time_from);
  if (f.time_to) add("time <", *f.time_to);
  // By seq, never by time: times are the callers' and need not grow with the chain.
  sql += Cat(" ORDER BY seq LIMIT $", params.size() + 1);
  params.Add(static_cast<int64_t>(n + 1));
  return postgres::Read(*pool_, [&](PGconn* c) -> Result<AuditPage> {
    TPMMA_ASSIGN_OR_RETURN(Rows r, Query(c, "list audit log", sql, params));
    AuditPage page;
    for (int i = 0; i < r.size(); ++i) {
      if (page.records.size() == n) {
        page.next_page_token = MakePageToken('a', std::to_string(page.records.back().seq));
        break;
      }
      page.records.push_back(ReadAuditRecord(r, i));
    }
    return page;
  });
}

Result<AuditRecord> PostgresVault::GetAuditRecord(int64_t seq) {
  return postgres::Read(*pool_, [&](PGconn* c) -> Result<AuditRecord> {
    TPMMA_ASSIGN_OR_RETURN(
        Rows r,
        Query(c, "read audit record",
              Cat("SELECT ", kAuditColumns, " FROM audit_log WHERE seq = $1"), Params(seq)));
    if (r.empty())
      return Error(Code::kNotFound, Cat("no audit record with seq ", seq, " in the vault"));
    return ReadAuditRecord(r, 0);
  });
}

Result<AuditHead> PostgresVault::GetAuditHead() {
  return postgres::Snapshot(*pool_, "read audit head", [&](PGconn* c) -> Result<AuditHead> {
    AuditHead head;
    TPMMA_ASSIGN_OR_RETURN(head.vault_id, postgres::ReadVaultId(c));
    // The head row, not max(seq): it is what the next append will continue from.
    TPMMA_ASSIGN_OR_RETURN(Rows r, Query(c, "read audit chain head",
                                         "SELECT h.seq, h.hash, l.time FROM audit_head h "
                                         "LEFT JOIN audit_log l ON l.seq = h.seq WHERE h.id"));
    if (r.size() != 1 || r.Int(0, 0) == 0) {
      return Error(Code::kCorruption, "the audit log is empty (no genesis record)");
    }
    if (r.IsNull(0, 2)) {
      return Error(Code::kCorruption, "the audit chain head names a record that is not in the log");
    }
    head.seq = r.Int(0, 0);
    head.hash = r.Blob(0, 1);
    head.time = r.Int(0, 2);
    return head;
  });
}

Result<AuditChainReport> PostgresVault::CheckAuditChain() {
  return postgres::Snapshot(
      *pool_, "verify audit chain",
      [&](PGconn* c) -> Result<AuditChainReport> { return postgres::CheckAuditChainLocked(c); });
}

namespace {

// Holding the head lock: the bounds, and the hash the live log will continue from.
Result<AuditSegment> SegmentToArchive(PGconn* c, int64_t through_seq) {
  TPMMA_ASSIGN_OR_RETURN(
      Rows h, Query(c, "lock audit chain head", "SELECT seq FROM audit_head WHERE id FOR UPDATE"));
  if (h.size() != 1) return Error(Code::kCorruption, "audit_head has no row");
  const int64_t head = h.Int(0, 0);
  TPMMA_ASSIGN_OR_RETURN(std::vector<AuditSegment> segments, postgres::ReadSegments(c));
  const int64_t first = segments.empty() ? 1 : segments.back().last_seq + 1;
  if (through_seq < first || through_seq >= head) {
    return Error(Code::kInvalidArgument,
                 Cat("can archive records ", first, "..", head - 1, " only (the head, seq ", head,
                     ", stays); asked for up to seq ", through_seq));
  }
  TPMMA_ASSIGN_OR_RETURN(
      Rows r, Query(c, "read archived record's hash", "SELECT hash FROM audit_log WHERE seq = $1",
                    Params(through_seq)));
  if (r.empty()) return Error(Code::kCorruption, Cat("audit record ", through_seq, " is missing"));
  AuditSegment seg;
  seg.first_seq = first;
  seg.last_seq = through_seq;
  seg.last_hash = r.Blob(0, 0);
  return seg;
}

}  // namespace

Status PostgresVault::ArchiveAudit(int64_t through_seq, ByteView archive_sha256,
                                   const AuditEvent& audit) {
  if (archive_sha256.size() != kHashSize || audit.action != kAuditArchiveAction ||
      audit.object != std::to_string(through_seq)) {
    return Status(
        Code::kInvalidArgument,
        "ArchiveAudit needs the archive's SHA-256 and an Audit.Archive event naming the seq");
  }
  return ToStatus(Write(*writes_, "archive audit records", [&](PGconn* c) -> Result<void> {
    TPMMA_ASSIGN_OR_RETURN(AuditSegment seg, SegmentToArchive(c, through_seq));
    TPMMA_RETURN_IF_ERROR(
        Command(c, "record audit segment",
                "INSERT INTO audit_segments (last_seq, first_seq, last_hash, "
                "archived_at, archive_sha256) VALUES ($1, $2, $3, $4, $5)",
                Params(seg.last_seq, seg.first_seq, seg.last_hash, audit.time, archive_sha256)));
    TPMMA_RETURN_IF_ERROR(Command(c, "delete archived audit records",
                                  "DELETE FROM audit_log WHERE seq <= $1", Params(through_seq)));
    TPMMA_RETURN_IF_ERROR(AppendAuditLocked(c, audit));
    return {};
  }));
}

Result<std::vector<AuditSegment>> PostgresVault::ListAuditSegments() {
  return postgres::Read(*pool_, [&](PGconn* c) { return postgres::ReadSegments(c); });
}

}  // namespace tpmma::storage
