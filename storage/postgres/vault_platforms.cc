// SPDX-License-Identifier: GPL-2.0-or-later
// PostgresVault: platforms, registrations, challenges, sessions and the Authenticate
// transaction. Rows a decision depends on are read FOR UPDATE, so that another instance's
// transaction on the same row waits and then sees the outcome (READ COMMITTED re-reads it).
#include "storage/page_token.h"
#include "storage/postgres/rows.h"
#include "storage/postgres_vault.h"

namespace tpmma::storage {

using postgres::AppendAuditLocked;
using postgres::Command;
using postgres::kChallengeKinds;
using postgres::kHashSize;
using postgres::kPlatformColumns;
using postgres::MaybeAudit;
using postgres::Params;
using postgres::ParseEnum;
using postgres::PlatformExists;
using postgres::PutInventoryLocked;
using postgres::Query;
using postgres::ReadPlatform;
using postgres::Rows;
using postgres::ToStatus;
using postgres::Write;

namespace {

// for_update: FOR NO KEY UPDATE, which excludes other writers of the row but not the
// foreign-key checks of uploads for the platform (they take KEY SHARE).
Result<Platform> GetPlatformLocked(PGconn* c, std::string_view id, bool for_update) {
  TPMMA_ASSIGN_OR_RETURN(Rows r,
                         Query(c, "read platform",
                               Cat("SELECT ", kPlatformColumns, " FROM platforms WHERE id = $1",
                                   for_update ? " FOR NO KEY UPDATE" : ""),
                               Params(id)));
  if (r.empty()) return Error(Code::kNotFound, Cat("platform ", id, " not found"));
  return ReadPlatform(r, 0);
}

Result<Platform> UpsertPlatformLocked(PGconn* c, const Platform& p) {
  if (p.id.empty()) return Error(Code::kInvalidArgument, "platform id is empty");
  std::optional<Bytes> key_id;
  if (!p.ek_key_id.empty()) key_id = p.ek_key_id;
  TPMMA_ASSIGN_OR_RETURN(
      Rows r,
      Query(
          c, "upsert platform",
          Cat("INSERT INTO platforms (id, ek_public, ek_certificate, ak_public, ak_name, "
              "signing_key_public, state, created_at, last_seen_at, ek_key_id, srk_public, "
              "srk_certified_at) "
              "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) "
              "ON CONFLICT (id) DO UPDATE SET ek_public = excluded.ek_public, "
              "ek_key_id = COALESCE(excluded.ek_key_id, platforms.ek_key_id), "
              "ek_certificate = excluded.ek_certificate, ak_public = excluded.ak_public, "
              "ak_name = excluded.ak_name, signing_key_public = "
              "COALESCE(excluded.signing_key_public, platforms.signing_key_public), "
              "srk_certified_at = CASE WHEN excluded.srk_public IS NULL THEN "
              "platforms.srk_certified_at ELSE excluded.srk_certified_at END, "
              "srk_public = COALESCE(excluded.srk_public, platforms.srk_public), "
              "last_seen_at = excluded.last_seen_at RETURNING ",
              kPlatformColumns),
          Params(p.id, p.ek_public, p.ek_certificate, p.ak_public, p.ak_name, p.signing_key_public,
                 ToString(p.state), p.created_at, p.last_seen_at, key_id, p.srk_public,
                 p.srk_public ? std::optional<int64_t>(p.srk_certified_at) : std::nullopt)));
  return ReadPlatform(r, 0);
}

// One TPM, one platform: another platform holding the same EK key refuses `p`. Two
// instances enrolling the same key under two EK publics at once must not both see "none":
// a transaction-scoped advisory lock on the key serialises them.
Result<std::optional<std::string>> SameEkKeyRefusal(PGconn* c, const Platform& p) {
  if (p.ek_key_id.empty()) return std::nullopt;
  uint64_t key = 0;
  for (size_t i = 0; i < 8 && i < p.ek_key_id.size(); ++i) key = (key << 8) | p.ek_key_id[i];
  TPMMA_RETURN_IF_ERROR(Query(c, "lock EK key", "SELECT pg_advisory_xact_lock($1)",
                              Params(static_cast<int64_t>(key))));
  TPMMA_ASSIGN_OR_RETURN(Rows r,
                         Query(c, "platforms by EK key",
                               "SELECT id, state FROM platforms WHERE ek_key_id = $1 AND id <> $2 "
                               "ORDER BY state = 'revoked' DESC, id LIMIT 1",
                               Params(p.ek_key_id, p.id)));
  if (r.empty()) return std::nullopt;
  if (r.Text(0, 1) == ToString(PlatformState::kRevoked)) {
    return Cat("the EK key of platform ", p.id, " is that of revoked platform ", r.Text(0, 0),
               " under another EK public");
  }
  return Cat("the EK key of platform ", p.id, " is already enrolled as platform ", r.Text(0, 0),
             " (one TPM, one platform)");
}

// The row, refused as ConsumeChallenge refuses it (unknown, used, other kind, expired).
// `lock`: FOR UPDATE, so that of concurrent consumers in any instance one holds the row and
// the others wait and then read it with used_at set.
Result<Challenge> ReadChallenge(PGconn* c, std::string_view id, ChallengeKind kind, int64_t now,
                                bool lock) {
  TPMMA_ASSIGN_OR_RETURN(
      Rows r, Query(c, "read challenge",
                    Cat("SELECT kind, platform_id, expected_hash, nonce, associated_data, "
                        "created_at, expires_at, used_at FROM challenges WHERE id = $1",
                        lock ? " FOR UPDATE" : ""),
                    Params(View(id))));
  if (r.empty()) return Error(Code::kNotFound, "challenge not found");
  Challenge ch;
  ch.id = std::string(id);
  TPMMA_ASSIGN_OR_RETURN(ch.kind, ParseEnum(r.Text(0, 0), kChallengeKinds, "challenge kind"));
  ch.platform_id = r.Text(0, 1);
  ch.expected_hash = r.Blob(0, 2);
  ch.nonce = r.Blob(0, 3);
  ch.associated_data = r.Blob(0, 4);
  ch.created_at = r.Int(0, 5);
  ch.expires_at = r.Int(0, 6);
  if (!r.IsNull(0, 7)) return Error(Code::kUnauthenticated, "challenge already used");
  if (ch.kind != kind) {
    return Error(Code::kUnauthenticated,
                 Cat("challenge is for ", ToString(ch.kind), ", not ", ToString(kind)));
  }
  if (now >= ch.expires_at) return Error(Code::kExpired, "challenge expired");
  return ch;
}

Result<Challenge> ConsumeChallengeLocked(PGconn* c, std::string_view id, ChallengeKind kind,
                                         int64_t now) {
  TPMMA_ASSIGN_OR_RETURN(Challenge ch, ReadChallenge(c, id, kind, now, /*lock=*/true));
  TPMMA_ASSIGN_OR_RETURN(
      int64_t n, Command(c, "mark challenge used",
                         "UPDATE challenges SET used_at = $1 WHERE id = $2 AND used_at IS NULL",
                         Params(now, View(id))));
  // Cannot be 0 under the row lock; checked anyway so that a replay never succeeds.
  if (n != 1) return Error(Code::kUnauthenticated, "challenge already used");
  return ch;
}

Status InsertSessionLocked(PGconn* c, const Session& session) {
  if (session.token_hash.size() != kHashSize) {
    return Status(Code::kInvalidArgument, "session token hash must be 32 bytes (SHA-256)");
  }
  TPMMA_ASSIGN_OR_RETURN(bool exists, PlatformExists(c, session.platform_id));
  if (!exists) {
    return Status(Code::kNotFound, Cat("platform ", session.platform_id, " not found for session"));
  }
  auto r = Command(
      c, "insert session",
      "INSERT INTO sessions (token_hash, platform_id, created_at, expires_at) "
      "VALUES ($1, $2, $3, $4)",
      Params(session.token_hash, session.platform_id, session.created_at, session.expires_at));
  if (!r && r.error().code() == Code::kConflict) {
    return Status(Code::kAlreadyExists, "session already exists");
  }
  return r ? Status() : r.error();
}

}  // namespace

// --- Platforms

Result<Platform> PostgresVault::UpsertPlatform(const Platform& platform,
                                               const std::optional<AuditEvent>& audit) {
  return Write(*writes_, "upsert platform", [&](PGconn* c) -> Result<Platform> {
    TPMMA_ASSIGN_OR_RETURN(Platform p, UpsertPlatformLocked(c, platform));
    TPMMA_RETURN_IF_ERROR(MaybeAudit(c, audit));
    return p;
  });
}

Result<Platform> PostgresVault::GetPlatform(std::string_view id) {
  return postgres::Read(
      *pool_, [&](PGconn* c) -> Result<Platform> { return GetPlatformLocked(c, id, false); });
}

Result<PlatformPage> PostgresVault::ListPlatforms(size_t page_size, std::string_view page_token) {
  std::string after;
  if (!page_token.empty()) {
    TPMMA_ASSIGN_OR_RETURN(after, ParsePageToken('f', page_token));
  }
  const size_t n = ClampPageSize(page_size);
  return postgres::Read(*pool_, [&](PGconn* c) -> Result<PlatformPage> {
    TPMMA_ASSIGN_OR_RETURN(Rows r, Query(c, "list platforms",
                                         Cat("SELECT ", kPlatformColumns,
                                             " FROM platforms WHERE id > $1 ORDER BY id LIMIT $2"),
                                         Params(after, n + 1)));
    PlatformPage page;
    for (int i = 0; i < r.size(); ++i) {
      if (page.platforms.size() == n) {
        page.next_page_token = MakePageToken('f', page.platforms.back().id);
        break;
      }
      TPMMA_ASSIGN_OR_RETURN(Platform p, ReadPlatform(r, i));
      page.platforms.push_back(std::move(p));
    }
    return page;
  });
}

Status PostgresVault::RevokePlatform(std::string_view id, const AuditEvent& audit) {
  return ToStatus(Write(*writes_, "revoke platform", [&](PGconn* c) -> Result<void> {
    TPMMA_ASSIGN_OR_RETURN(
        int64_t n, Command(c, "revoke platform",
                           "UPDATE platforms SET state = 'revoked' WHERE id = $1", Params(id)));
    if (n == 0) return Error(Code::kNotFound, Cat("platform ", id, " not found"));
    TPMMA_RETURN_IF_ERROR(Command(c, "end sessions of revoked platform",
                                  "DELETE FROM sessions WHERE platform_id = $1", Params(id)));
    TPMMA_RETURN_IF_ERROR(AppendAuditLocked(c, audit));
    return {};
  }));
}

Status PostgresVault::AcceptPlatform(std::string_view id, const AuditEvent& audit) {
  return ToStatus(Write(*writes_, "accept platform", [&](PGconn* c) -> Result<void> {
    TPMMA_ASSIGN_OR_RETURN(Platform p, GetPlatformLocked(c, id, true));
    if (p.state != PlatformState::kPending) {
      return Error(Code::kConflict,
                   Cat("platform ", id, " is ", ToString(p.state), ", not pending"));
    }
    TPMMA_RETURN_IF_ERROR(Command(
        c, "accept platform", "UPDATE platforms SET state = 'active' WHERE id = $1", Params(id)));
    TPMMA_RETURN_IF_ERROR(AppendAuditLocked(c, audit));
    return {};
  }));
}

// --- Registrations

namespace {

constexpr RegistrationKind kRegistrationKinds[] = {RegistrationKind::kEkKeyId,
                                                   RegistrationKind::kEkCertSha256};

Result<PlatformRegistration> ReadRegistration(const Rows& r, int i) {
  PlatformRegistration reg;
  TPMMA_ASSIGN_OR_RETURN(reg.kind,
                         ParseEnum(r.Text(i, 0), kRegistrationKinds, "registration kind"));
  reg.digest = r.Blob(i, 1);
  reg.label = r.Text(i, 2);
  reg.created_at = r.Int(i, 3);
  return reg;
}

}  // namespace

Result<size_t> PostgresVault::RegisterPlatforms(const std::vector<PlatformRegistration>& regs,
                                                const AuditEvent& audit) {
  for (const PlatformRegistration& r : regs) {
    if (r.digest.size() != kHashSize) {
      return Error(Code::kInvalidArgument, "a registration digest must be 32 bytes (SHA-256)");
    }
  }
  return Write(*writes_, "register platforms", [&](PGconn* c) -> Result<size_t> {
    size_t added = 0;
    for (const PlatformRegistration& r : regs) {
      TPMMA_ASSIGN_OR_RETURN(
          int64_t n, Command(c, "register platform",
                             "INSERT INTO platform_registrations (kind, digest, label, created_at) "
                             "VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                             Params(ToString(r.kind), r.digest, r.label, r.created_at)));
      added += static_cast<size_t>(n);
    }
    TPMMA_RETURN_IF_ERROR(AppendAuditLocked(c, audit));
    return added;
  });
}

Result<PlatformRegistration> PostgresVault::FindRegistration(ByteView ek_key_id,
                                                             ByteView ek_cert_sha256) {
  return postgres::Read(*pool_, [&](PGconn* c) -> Result<PlatformRegistration> {
    const std::pair<RegistrationKind, ByteView> wanted[] = {
        {RegistrationKind::kEkKeyId, ek_key_id}, {RegistrationKind::kEkCertSha256, ek_cert_sha256}};
    for (const auto& [kind, digest] : wanted) {
      if (digest.empty()) continue;
      TPMMA_ASSIGN_OR_RETURN(
          Rows r, Query(c, "find registration",
                        "SELECT kind, digest, label, created_at FROM platform_registrations "
                        "WHERE kind = $1 AND digest = $2",
                        Params(ToString(kind), digest)));
      if (!r.empty()) return ReadRegistration(r, 0);
    }
    return Error(Code::kNotFound, "not registered");
  });
}

Result<std::vector<PlatformRegistration>> PostgresVault::ListRegistrations() {
  return postgres::Read(*pool_, [&](PGconn* c) -> Result<std::vector<PlatformRegistration>> {
    TPMMA_ASSIGN_OR_RETURN(
        Rows r, Query(c, "list registrations",
                      "SELECT kind, digest, label, created_at FROM platform_registrations "
                      "ORDER BY kind, digest"));
    std::vector<PlatformRegistration> out;
    for (int i = 0; i < r.size(); ++i) {
      TPMMA_ASSIGN_OR_RETURN(PlatformRegistration reg, ReadRegistration(r, i));
      out.push_back(std::move(reg));
    }
    return out;
  });
}

// --- Challenges and sessions

Status PostgresVault::CreateChallenge(const Challenge& ch, const std::optional<AuditEvent>& audit) {
  if (ch.id.empty()) return Status(Code::kInvalidArgument, "challenge id is empty");
  if (ch.expected_hash.size() != kHashSize) {
    return Status(Code::kInvalidArgument, "challenge expected hash must be 32 bytes (SHA-256)");
  }
  return ToStatus(Write(*writes_, "create challenge", [&](PGconn* c) -> Result<void> {
    auto r = Command(c, "insert challenge",
                     "INSERT INTO challenges (id, kind, platform_id, expected_hash, nonce, "
                     "associated_data, created_at, expires_at) "
                     "VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                     Params(View(ch.id), ToString(ch.kind), ch.platform_id, ch.expected_hash,
                            ch.nonce, ch.associated_data, ch.created_at, ch.expires_at));
    if (!r && r.error().code() == Code::kConflict) {
      return Error(Code::kAlreadyExists, "challenge id already exists");
    }
    if (!r) return Error(r.error());
    TPMMA_RETURN_IF_ERROR(MaybeAudit(c, audit));
    return {};
  }));
}

Result<Challenge> PostgresVault::ConsumeChallenge(std::string_view id, ChallengeKind kind,
                                                  int64_t now) {
  return Write(*writes_, "consume challenge", [&](PGconn* c) -> Result<Challenge> {
    return ConsumeChallengeLocked(c, id, kind, now);
  });
}

Result<Challenge> PostgresVault::CompleteAuthentication(const AuthCompletion& a) {
  TPMMA_RETURN_IF_ERROR(CheckAuthCompletion(a));
  struct Outcome {
    Challenge challenge;
    Code refused = Code::kOk;
    std::string message;
  };
  // A refusal is still committed: the challenge must stay burnt.
  auto r = Write(*writes_, "complete authentication", [&](PGconn* c) -> Result<Outcome> {
    TPMMA_ASSIGN_OR_RETURN(
        Challenge ch,
        ConsumeChallengeLocked(c, a.challenge_id, ChallengeKind::kAuthenticate, a.now));
    if (ch.platform_id != a.platform.id) {
      return Outcome{std::move(ch), Code::kUnauthenticated,
                     "challenge was issued to another platform"};
    }
    if (!ConstantTimeEqual(a.proof_hash, ch.expected_hash)) {
      return Outcome{std::move(ch), Code::kUnauthenticated, "proof does not match the challenge"};
    }
    // Locked: a revocation or acceptance by another instance waits for this transaction.
    auto existing = GetPlatformLocked(c, a.platform.id, true);
    if (existing && existing->state == PlatformState::kRevoked) {
      return Outcome{std::move(ch), Code::kPermissionDenied,
                     Cat("platform ", a.platform.id, " is revoked")};
    }
    if (!existing && existing.error().code() != Code::kNotFound) return Error(existing.error());
    TPMMA_ASSIGN_OR_RETURN(std::optional<std::string> same_key, SameEkKeyRefusal(c, a.platform));
    if (same_key) return Outcome{std::move(ch), Code::kPermissionDenied, std::move(*same_key)};
    const bool pending = existing ? existing->state == PlatformState::kPending : a.enroll_pending;
    if (pending) {
      if (!existing) {
        Platform p = a.platform;
        p.state = PlatformState::kPending;
        TPMMA_RETURN_IF_ERROR(UpsertPlatformLocked(c, p));
        TPMMA_RETURN_IF_ERROR(PutInventoryLocked(c, p.id, a.inventory, a.now));
        TPMMA_RETURN_IF_ERROR(AppendAuditLocked(c, a.pending_audit));
      }
      std::string msg = a.pending_message.empty()
                            ? Cat("platform ", a.platform.id, " awaits an operator's acceptance")
                            : a.pending_message;
      return Outcome{std::move(ch), Code::kPermissionDenied, std::move(msg)};
    }
    TPMMA_RETURN_IF_ERROR(UpsertPlatformLocked(c, a.platform));
    TPMMA_RETURN_IF_ERROR(PutInventoryLocked(c, a.platform.id, a.inventory, a.now));
    TPMMA_RETURN_IF_ERROR(InsertSessionLocked(c, a.session));
    TPMMA_RETURN_IF_ERROR(AppendAuditLocked(c, a.audit));
    return Outcome{std::move(ch), Code::kOk, {}};
  });
  if (!r) return Error(r.error());
  if (r->refused != Code::kOk) return Error(r->refused, std::move(r->message));
  return std::move(r->challenge);
}

Status PostgresVault::CreateSession(const Session& session,
                                    const std::optional<AuditEvent>& audit) {
  return ToStatus(Write(*writes_, "create session", [&](PGconn* c) -> Result<void> {
    TPMMA_RETURN_IF_ERROR(InsertSessionLocked(c, session));
    TPMMA_RETURN_IF_ERROR(MaybeAudit(c, audit));
    return {};
  }));
}

Result<Challenge> PostgresVault::GetChallenge(std::string_view id, ChallengeKind kind,
                                              int64_t now) {
  return postgres::Read(*pool_, [&](PGconn* c) { return ReadChallenge(c, id, kind, now, false); });
}

Result<Session> PostgresVault::GetSession(ByteView token_hash, int64_t now) {
  return postgres::Read(*pool_, [&](PGconn* c) -> Result<Session> {
    TPMMA_ASSIGN_OR_RETURN(Rows r, Query(c, "read session",
                                         "SELECT platform_id, created_at, expires_at FROM sessions "
                                         "WHERE token_hash = $1",
                                         Params(token_hash)));
    if (r.empty()) return Error(Code::kNotFound, "session not found");
    Session out{Bytes(token_hash.begin(), token_hash.end()), r.Text(0, 0), r.Int(0, 1),
                r.Int(0, 2)};
    if (now >= out.expires_at) return Error(Code::kExpired, "session expired");
    return out;
  });
}

Result<std::vector<Session>> PostgresVault::ListSessions(std::string_view platform_id, int64_t now,
                                                         size_t limit) {
  return postgres::Read(*pool_, [&](PGconn* c) -> Result<std::vector<Session>> {
    TPMMA_ASSIGN_OR_RETURN(
        Rows r, Query(c, "list sessions",
                      "SELECT token_hash, created_at, expires_at FROM sessions "
                      "WHERE platform_id = $1 AND expires_at > $2 "
                      "ORDER BY created_at DESC, token_hash LIMIT $3",
                      Params(platform_id, now, static_cast<int64_t>(ClampPageSize(limit)))));
    std::vector<Session> out;
    for (int i = 0; i < r.size(); ++i) {
      out.push_back(Session{r.Blob(i, 0), std::string(platform_id), r.Int(i, 1), r.Int(i, 2)});
    }
    return out;
  });
}

Status PostgresVault::DeleteSession(ByteView token_hash, const std::optional<AuditEvent>& audit) {
  return ToStatus(Write(*writes_, "delete session", [&](PGconn* c) -> Result<void> {
    TPMMA_ASSIGN_OR_RETURN(
        int64_t n, Command(c, "delete session", "DELETE FROM sessions WHERE token_hash = $1",
                           Params(token_hash)));
    if (n == 0) return Error(Code::kNotFound, "session not found");
    TPMMA_RETURN_IF_ERROR(MaybeAudit(c, audit));
    return {};
  }));
}

Result<int64_t> PostgresVault::PurgeExpired(int64_t now) {
  return Write(*writes_, "purge expired", [&](PGconn* c) -> Result<int64_t> {
    TPMMA_ASSIGN_OR_RETURN(
        int64_t sessions,
        Command(c, "purge sessions", "DELETE FROM sessions WHERE expires_at <= $1", Params(now)));
    TPMMA_ASSIGN_OR_RETURN(
        int64_t challenges,
        Command(c, "purge challenges",
                "DELETE FROM challenges WHERE expires_at <= $1 OR used_at IS NOT NULL",
                Params(now)));
    return sessions + challenges;
  });
}

}  // namespace tpmma::storage
