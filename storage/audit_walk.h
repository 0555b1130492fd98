// SPDX-License-Identifier: GPL-2.0-or-later
// The engine-independent part of Vault::CheckAuditChain: what the archived segments and the
// live records, fed in seq order, must show. Each backend reads its own rows and feeds them
// here; its triggers (and PostgreSQL's head row) are its own to check. Internal to storage/.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "storage/vault.h"

namespace tpmma::storage {

// The genesis record's detail: "new vault", or, for a SQLite vault upgraded to schema 6,
// how many records came before it.
std::string AuditGenesisDetail(int64_t earlier_records);

// SQL text with runs of whitespace made one space and the trailing ';' dropped: how a
// trigger's text is compared with what its migration wrote.
std::string CollapseSqlSpace(std::string_view sql);

class AuditChainWalk {
 public:
  enum class Genesis {
    kFirst,         // the genesis record is seq 1 of the log (every PostgreSQL vault)
    kAfterUpgrade,  // or follows exactly the records its detail counts (SQLite schema 6)
  };
  // kCorruption unless the segments are contiguous from seq 1.
  static Result<AuditChainWalk> Start(Bytes vault_id, const std::vector<AuditSegment>& segments,
                                      Genesis genesis);

  // The next live record: the link to the one before, its hash, and what it says.
  Status Add(const AuditRecord& r);
  // The verdict on the whole walk: an empty log, a cut start, an archive the log never
  // recorded.
  Result<AuditChainReport> Finish() const;

  int64_t last_seq() const { return expected_seq_ - 1; }
  const Bytes& last_hash() const { return prev_; }

 private:
  AuditChainWalk() = default;
  Status CheckGenesis(const AuditRecord& r) const;

  Bytes vault_id_;
  Genesis genesis_rule_ = Genesis::kFirst;
  int64_t expected_seq_ = 1;
  Bytes prev_;
  int64_t archived_through_ = 0;
  int64_t first_seq_ = 0;
  int64_t genesis_seq_ = 0;
  bool archive_recorded_ = false;
};

}  // namespace tpmma::storage
