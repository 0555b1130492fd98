// SPDX-License-Identifier: GPL-2.0-or-later
#include "storage/audit_walk.h"

#include "common/text.h"

namespace tpmma::storage {

std::string AuditGenesisDetail(int64_t earlier_records) {
  if (earlier_records == 0) return "new vault";
  return Cat("after ", earlier_records,
             " record(s) written before schema 6; those are chained but not anchored by this "
             "record");
}

std::string CollapseSqlSpace(std::string_view sql) {
  std::string out;
  for (char c : sql) {
    const bool space = c == ' ' || c == '\n' || c == '\t' || c == '\r';
    if (space) {
      if (!out.empty() && out.back() != ' ') out.push_back(' ');
    } else {
      out.push_back(c);
    }
  }
  while (!out.empty() && (out.back() == ' ' || out.back() == ';')) out.pop_back();
  return out;
}

Result<AuditChainWalk> AuditChainWalk::Start(Bytes vault_id,
                                             const std::vector<AuditSegment>& segments,
                                             Genesis genesis) {
  AuditChainWalk w;
  w.vault_id_ = std::move(vault_id);
  w.genesis_rule_ = genesis;
  w.prev_ = Bytes(kAuditHashSize, 0);
  for (const AuditSegment& s : segments) {
    if (s.first_seq != w.expected_seq_ || s.last_seq < s.first_seq ||
        s.last_hash.size() != kAuditHashSize) {
      return Error(Code::kCorruption,
                   Cat("audit chain: archived segment ending at seq ", s.last_seq,
                       " does not continue the one before (expected it to start at seq ",
                       w.expected_seq_, ")"));
    }
    w.expected_seq_ = s.last_seq + 1;
    w.prev_ = s.last_hash;
  }
  w.archived_through_ = w.expected_seq_ - 1;
  return w;
}

Status AuditChainWalk::CheckGenesis(const AuditRecord& r) const {
  if (genesis_seq_ != 0) {
    return Status(Code::kCorruption, Cat("audit chain: a second genesis record at seq ", r.seq));
  }
  if (r.event.actor != "system" || r.event.object != HexEncode(vault_id_)) {
    return Status(Code::kCorruption,
                  Cat("audit chain: the genesis record at seq ", r.seq, " names another vault"));
  }
  const bool placed = genesis_rule_ == Genesis::kFirst
                          ? r.seq == 1 && r.event.detail == AuditGenesisDetail(0)
                          : r.event.detail == AuditGenesisDetail(r.seq - 1);
  if (!placed) {
    return Status(Code::kCorruption, Cat("audit chain: the genesis record is at seq ", r.seq,
                                         ", not where it says it is"));
  }
  return Status();
}

Status AuditChainWalk::Add(const AuditRecord& r) {
  if (r.seq != expected_seq_) {
    return Status(Code::kCorruption, Cat("audit chain broken at seq ", expected_seq_,
                                         ": record missing (next present is seq ", r.seq, ")"));
  }
  if (r.prev_hash != prev_) {
    return Status(Code::kCorruption, Cat("audit chain broken at seq ", r.seq,
                                         ": prev_hash does not match the hash of seq ", r.seq - 1));
  }
  TPMMA_ASSIGN_OR_RETURN(Bytes computed, AuditRecordHash(r.seq, r.event, r.prev_hash));
  if (computed != r.hash) {
    return Status(Code::kCorruption,
                  Cat("audit chain broken at seq ", r.seq, ": record was altered"));
  }
  if (first_seq_ == 0) first_seq_ = r.seq;
  if (r.event.action == kAuditGenesisAction) {
    TPMMA_RETURN_IF_ERROR(CheckGenesis(r));
    genesis_seq_ = r.seq;
  }
  if (r.event.action == kAuditArchiveAction && r.event.actor == "system" &&
      r.event.object == std::to_string(archived_through_)) {
    archive_recorded_ = true;
  }
  prev_ = r.hash;
  ++expected_seq_;
  return Status();
}

Result<AuditChainReport> AuditChainWalk::Finish() const {
  if (first_seq_ == 0) {
    return Error(Code::kCorruption,
                 "audit chain: the log is empty, not even its genesis record is left "
                 "(every record deleted?)");
  }
  if (archived_through_ == 0 && genesis_seq_ == 0) {
    return Error(Code::kCorruption, "audit chain: no genesis record (the log's start was cut)");
  }
  if (archived_through_ != 0 && !archive_recorded_) {
    return Error(Code::kCorruption, Cat("audit chain: records up to seq ", archived_through_,
                                        " are marked archived, but the log has no ",
                                        kAuditArchiveAction, " record for it"));
  }
  return AuditChainReport{vault_id_, first_seq_, last_seq(), genesis_seq_, archived_through_};
}

}  // namespace tpmma::storage
