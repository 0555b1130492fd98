// SPDX-License-Identifier: GPL-2.0-or-later
// The audit log's anchor inside the database: the genesis record, the archived segments and
// the chain check over all of it, including the head row and the append-only triggers.
// Internal to storage/; each runs inside a transaction the caller holds.
#pragma once

#include <libpq-fe.h>

#include <cstdint>
#include <vector>

#include "common/status.h"
#include "storage/vault.h"

namespace tpmma::storage::postgres {

// Appends the genesis record (migration 1): seq 1 of a new vault.
Status AppendGenesisLocked(PGconn* c, int64_t now);

Result<Bytes> ReadVaultId(PGconn* c);
Result<std::vector<AuditSegment>> ReadSegments(PGconn* c);

// kCorruption naming the first finding (see Vault::CheckAuditChain). In a snapshot.
Result<AuditChainReport> CheckAuditChainLocked(PGconn* c);

// Each append-only trigger present, enabled and calling its function, each function with
// the text migration 1 gave it, and no other trigger on the guarded tables.
Status CheckAuditTriggers(PGconn* c);

}  // namespace tpmma::storage::postgres
