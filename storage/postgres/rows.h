// SPDX-License-Identifier: GPL-2.0-or-later
// What more than one group of PostgresVault methods needs: running a call on a pooled
// connection (Write, Snapshot, Read), stored enum names, page tokens, the audit append every
// state change makes in its own transaction, platform rows. Internal to storage/.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "common/status.h"
#include "storage/postgres/connection.h"
#include "storage/postgres/group_commit.h"
#include "storage/postgres/query.h"
#include "storage/vault.h"

namespace tpmma::storage::postgres {

inline constexpr size_t kHashSize = kAuditHashSize;
inline constexpr size_t kMaxAuditField = 1024;

// f(PGconn*) in a READ COMMITTED write transaction on a pooled connection, shared with the
// write calls queued at the same time (group_commit.h): f's statements run in a savepoint of
// their own, and its result comes back once the transaction holding it has committed.
template <typename F>
auto Write(GroupCommit& writes, std::string_view purpose, F&& f) -> decltype(f(nullptr)) {
  std::optional<decltype(f(nullptr))> out;
  Status s = writes.Run(purpose, [&](PGconn* c) {
    out.emplace(f(c));
    return out->has_value() ? Status() : out->error();
  });
  if (!s.ok()) return Error(std::move(s));
  return std::move(*out);
}

// f(PGconn*) in a read-only snapshot (several statements that must agree).
template <typename F>
auto Snapshot(ConnPool& pool, std::string_view purpose, F&& f) -> decltype(f(nullptr)) {
  auto lease = pool.Acquire();
  if (!lease) return Error(lease.error());
  PGconn* c = lease->get();
  return InTxn(
      c, TxnKind::kSnapshot, purpose, [&] { return f(c); }, &pool);
}

// f(PGconn*) for a single statement (its own snapshot). Reads change nothing, so one that
// failed because the server had closed the connection is run again on a new one.
template <typename F>
auto Read(ConnPool& pool, F&& f) -> decltype(f(nullptr)) {
  auto lease = pool.Acquire();
  if (!lease) return Error(lease.error());
  PGconn* c = lease->get();
  auto r = f(c);
  if (r.has_value() || PQstatus(c) == CONNECTION_OK) return r;
  if (Status s = pool.Remake(c); !s.ok()) return Error(std::move(s));
  return f(c);
}

template <typename E, size_t N>
Result<E> ParseEnum(std::string_view text, const E (&values)[N], std::string_view what) {
  for (E v : values) {
    if (ToString(v) == text) return v;
  }
  return Error(Code::kCorruption, Cat("unknown ", what, " '", text, "' in vault"));
}

// Unlike SQLite's schema, 'pending' is a state of its own (its CHECK could be written so).
inline constexpr PlatformState kPlatformStates[] = {PlatformState::kActive, PlatformState::kRevoked,
                                                    PlatformState::kPending};
inline constexpr ChallengeKind kChallengeKinds[] = {ChallengeKind::kAuthenticate,
                                                    ChallengeKind::kDownloadNonce};
inline constexpr CustodyMode kCustodyModes[] = {CustodyMode::kRecoveryCode, CustodyMode::kEscrow};
inline constexpr ApprovalState kApprovalStates[] = {ApprovalState::kPending, ApprovalState::kActive,
                                                    ApprovalState::kUsed, ApprovalState::kRevoked};
inline constexpr OperatorRole kOperatorRoles[] = {OperatorRole::kHelpdesk, OperatorRole::kAuditor,
                                                  OperatorRole::kAdmin};

// The log is for short facts; a big field is a bug (or a secret being dumped into it).
Status CheckAuditEvent(const AuditEvent& e);
// Appends to the hash chain inside the open transaction, holding the head row's lock until
// the transaction ends; returns the record's seq.
Result<int64_t> AppendAuditLocked(PGconn* c, const AuditEvent& e);
Status MaybeAudit(PGconn* c, const std::optional<AuditEvent>& audit);
AuditRecord ReadAuditRecord(const Rows& rows, int row);
inline constexpr std::string_view kAuditColumns =
    "seq, time, actor, action, object, outcome, detail, prev_hash, hash";

Result<bool> PlatformExists(PGconn* c, std::string_view id);

// The platforms columns ReadPlatform reads, in its order.
inline constexpr std::string_view kPlatformColumns =
    "id, ek_public, ek_certificate, ak_public, ak_name, signing_key_public, state, created_at, "
    "last_seen_at, ek_key_id, srk_public, srk_certified_at";
inline constexpr int kPlatformColumnCount = 12;
Result<Platform> ReadPlatform(const Rows& rows, int row);
// Replaces the platform's inventory row (reported at `now`); nothing if it is absent.
Status PutInventoryLocked(PGconn* c, std::string_view platform_id,
                          const std::optional<PlatformInventory>& inventory, int64_t now);

}  // namespace tpmma::storage::postgres
