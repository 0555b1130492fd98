// SPDX-License-Identifier: GPL-2.0-or-later
// The audit log's anchor inside the vault: the genesis record, the archived segments and
// the chain check over all of it, including the append-only triggers. Internal to
// storage/; each runs inside a transaction the caller holds.
#pragma once

#include <cstdint>
#include <vector>

#include "common/status.h"
#include "storage/sqlite/stmt.h"
#include "storage/vault.h"

namespace tpmma::storage::sqlite {

// Appends the genesis record (migration 6): at seq 1 for a new vault, after the records
// already there for an older one (its detail counts them).
Status AppendGenesisLocked(sqlite3* db, int64_t now);

Result<Bytes> ReadVaultId(sqlite3* db);
Result<std::vector<AuditSegment>> ReadSegments(sqlite3* db);

// kCorruption naming the first finding (see Vault::CheckAuditChain).
Result<AuditChainReport> CheckAuditChainLocked(sqlite3* db);

// Each append-only trigger present with exactly the text its migration gave it.
Status CheckAuditTriggers(sqlite3* db);

}  // namespace tpmma::storage::sqlite
