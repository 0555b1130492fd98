// SPDX-License-Identifier: GPL-2.0-or-later
// Row helpers shared by more than one group of SqliteVault methods: stored enum names, the
// audit append every state change makes in its own transaction, platform existence.
// Writes run on the writer thread inside its open transaction; reads on a leased read
// connection. Internal to storage/.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

#include "common/status.h"
#include "storage/sqlite/stmt.h"
#include "storage/vault.h"

namespace tpmma::storage::sqlite {

inline constexpr size_t kHashSize = kAuditHashSize;
inline constexpr size_t kMaxAuditField = 1024;

template <typename E, size_t N>
Result<E> ParseEnum(std::string_view text, const E (&values)[N], std::string_view what) {
  for (E v : values) {
    if (ToString(v) == text) return v;
  }
  return Error(Code::kCorruption, Cat("unknown ", what, " '", text, "' in vault"));
}

inline constexpr PlatformState kPlatformStates[] = {PlatformState::kActive,
                                                    PlatformState::kRevoked};
inline constexpr ChallengeKind kChallengeKinds[] = {ChallengeKind::kAuthenticate,
                                                    ChallengeKind::kDownloadNonce};
inline constexpr CustodyMode kCustodyModes[] = {CustodyMode::kRecoveryCode, CustodyMode::kEscrow};
inline constexpr ApprovalState kApprovalStates[] = {ApprovalState::kPending, ApprovalState::kActive,
                                                    ApprovalState::kUsed, ApprovalState::kRevoked};
inline constexpr OperatorRole kOperatorRoles[] = {OperatorRole::kHelpdesk, OperatorRole::kAuditor,
                                                  OperatorRole::kAdmin};

// The log is for short facts; a big field is a bug (or a secret being dumped into it).
Status CheckAuditEvent(const AuditEvent& e);
// Appends to the hash chain inside the open transaction; returns the record's seq.
Result<int64_t> AppendAuditLocked(sqlite3* db, const AuditEvent& e);
Status MaybeAudit(sqlite3* db, const std::optional<AuditEvent>& audit);

// PRAGMA integrity_check and foreign_key_check: kCorruption naming the findings. Inside a
// read transaction the caller holds (vault_open.cc).
Status IntegrityFindings(sqlite3* db);

Result<bool> PlatformExists(sqlite3* db, std::string_view id);

// The platforms columns ReadPlatform reads, in its order (unqualified: no other table the
// vault joins them with has these names).
inline constexpr std::string_view kPlatformColumns =
    "id, ek_public, ek_certificate, ak_public, ak_name, signing_key_public, state, created_at, "
    "last_seen_at, ek_key_id, pending, srk_public, srk_certified_at";
inline constexpr int kPlatformColumnCount = 13;
// A platform from columns 0..12 of `s` (kPlatformColumns).
Result<Platform> ReadPlatform(const Stmt& s);
// Replaces the platform's inventory row with `inventory` (reported at `now`); nothing
// if it is absent. Inside the open write transaction; the caller has checked it.
Status PutInventoryLocked(sqlite3* db, std::string_view platform_id,
                          const std::optional<PlatformInventory>& inventory, int64_t now);

}  // namespace tpmma::storage::sqlite
