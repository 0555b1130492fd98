// SPDX-License-Identifier: GPL-2.0-or-later
// SqliteVault: platforms, challenges, sessions and the Authenticate transaction.
#include "storage/page_token.h"
#include "storage/sqlite/read_pool.h"
#include "storage/sqlite/rows.h"
#include "storage/sqlite/txn.h"
#include "storage/sqlite/writer.h"
#include "storage/sqlite_vault.h"

namespace tpmma::storage {

using sqlite::AppendAuditLocked;
using sqlite::kChallengeKinds;
using sqlite::kHashSize;
using sqlite::kPlatformStates;
using sqlite::MaybeAudit;
using sqlite::ParseEnum;
using sqlite::PlatformExists;
using sqlite::Stmt;
using sqlite::ToStatus;
using sqlite::Write;

namespace sqlite {

Result<Platform> ReadPlatform(const Stmt& s) {
  Platform p;
  p.id = s.Text(0);
  p.ek_public = s.Blob(1);
  p.ek_certificate = s.Blob(2);
  p.ak_public = s.Blob(3);
  p.ak_name = s.Blob(4);
  if (!s.IsNull(5)) p.signing_key_public = s.Blob(5);
  TPMMA_ASSIGN_OR_RETURN(p.state, ParseEnum(s.Text(6), kPlatformStates, "platform state"));
  p.created_at = s.Int(7);
  p.last_seen_at = s.Int(8);
  if (!s.IsNull(9)) p.ek_key_id = s.Blob(9);
  // Stored as state 'active' + pending = 1 (migration 0004).
  if (p.state == PlatformState::kActive && s.Int(10) != 0) p.state = PlatformState::kPending;
  if (!s.IsNull(11)) p.srk_public = s.Blob(11);
  if (!s.IsNull(12)) p.srk_certified_at = s.Int(12);
  return p;
}

}  // namespace sqlite

namespace {

using sqlite::kPlatformColumns;
using sqlite::PutInventoryLocked;
using sqlite::ReadPlatform;

Result<Platform> GetPlatformLocked(sqlite3* db, std::string_view id) {
  TPMMA_ASSIGN_OR_RETURN(
      Stmt s, Stmt::Prepare(db, "read platform",
                            Cat("SELECT ", kPlatformColumns, " FROM platforms WHERE id = ?")));
  s.Bind(id);
  TPMMA_ASSIGN_OR_RETURN(bool found, s.Step());
  if (!found) return Error(Code::kNotFound, Cat("platform ", id, " not found"));
  return ReadPlatform(s);
}

// NULL with no SRK, so that an upsert without one keeps the stored time too.
std::optional<int64_t> SrkCertifiedAt(const Platform& p) {
  if (!p.srk_public) return std::nullopt;
  return p.srk_certified_at;
}

Result<Platform> UpsertPlatformLocked(sqlite3* db, const Platform& p) {
  if (p.id.empty()) return Error(Code::kInvalidArgument, "platform id is empty");
  TPMMA_ASSIGN_OR_RETURN(
      Stmt s, Stmt::Prepare(
                  db, "upsert platform",
                  "INSERT INTO platforms (id, ek_public, ek_certificate, ak_public, ak_name, "
                  "signing_key_public, state, created_at, last_seen_at, ek_key_id, pending, "
                  "srk_public, srk_certified_at) "
                  "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                  "ON CONFLICT (id) DO UPDATE SET ek_public = excluded.ek_public, "
                  "ek_key_id = COALESCE(excluded.ek_key_id, ek_key_id), "
                  "ek_certificate = excluded.ek_certificate, ak_public = excluded.ak_public, "
                  "ak_name = excluded.ak_name, "
                  "signing_key_public = COALESCE(excluded.signing_key_public, signing_key_public), "
                  "srk_certified_at = CASE WHEN excluded.srk_public IS NULL THEN "
                  "srk_certified_at ELSE excluded.srk_certified_at END, "
                  "srk_public = COALESCE(excluded.srk_public, srk_public), "
                  "last_seen_at = excluded.last_seen_at"));
  std::optional<Bytes> key_id;
  if (!p.ek_key_id.empty()) key_id = p.ek_key_id;
  const bool pending = p.state == PlatformState::kPending;
  const PlatformState stored = pending ? PlatformState::kActive : p.state;
  s.Bind(p.id, p.ek_public, p.ek_certificate, p.ak_public, p.ak_name, p.signing_key_public,
         ToString(stored), p.created_at, p.last_seen_at, key_id, int64_t{pending ? 1 : 0},
         p.srk_public, SrkCertifiedAt(p));
  TPMMA_RETURN_IF_ERROR(s.Run());
  return GetPlatformLocked(db, p.id);
}

// One TPM, one platform: another platform holding the same EK key refuses `p`.
Result<std::optional<std::string>> SameEkKeyRefusal(sqlite3* db, const Platform& p) {
  if (p.ek_key_id.empty()) return std::nullopt;
  TPMMA_ASSIGN_OR_RETURN(
      Stmt s, Stmt::Prepare(db, "platforms by EK key",
                            "SELECT id, state FROM platforms WHERE ek_key_id = ? AND id != ? "
                            "ORDER BY state = 'revoked' DESC, id LIMIT 1"));
  s.Bind(p.ek_key_id, p.id);
  TPMMA_ASSIGN_OR_RETURN(bool found, s.Step());
  if (!found) return std::nullopt;
  if (s.Text(1) == ToString(PlatformState::kRevoked)) {
    return Cat("the EK key of platform ", p.id, " is that of revoked platform ", s.Text(0),
               " under another EK public");
  }
  return Cat("the EK key of platform ", p.id, " is already enrolled as platform ", s.Text(0),
             " (one TPM, one platform)");
}

// The row, refused as ConsumeChallenge refuses it (unknown, used, other kind, expired).
Result<Challenge> ReadChallenge(sqlite3* db, std::string_view id, ChallengeKind kind, int64_t now) {
  TPMMA_ASSIGN_OR_RETURN(
      Stmt s, Stmt::Prepare(db, "read challenge",
                            "SELECT kind, platform_id, expected_hash, nonce, associated_data, "
                            "created_at, expires_at, used_at FROM challenges WHERE id = ?"));
  s.Bind(id);
  TPMMA_ASSIGN_OR_RETURN(bool found, s.Step());
  if (!found) return Error(Code::kNotFound, "challenge not found");
  Challenge c;
  c.id = std::string(id);
  TPMMA_ASSIGN_OR_RETURN(c.kind, ParseEnum(s.Text(0), kChallengeKinds, "challenge kind"));
  c.platform_id = s.Text(1);
  c.expected_hash = s.Blob(2);
  c.nonce = s.Blob(3);
  c.associated_data = s.Blob(4);
  c.created_at = s.Int(5);
  c.expires_at = s.Int(6);
  if (!s.IsNull(7)) return Error(Code::kUnauthenticated, "challenge already used");
  if (c.kind != kind) {
    return Error(Code::kUnauthenticated,
                 Cat("challenge is for ", ToString(c.kind), ", not ", ToString(kind)));
  }
  if (now >= c.expires_at) return Error(Code::kExpired, "challenge expired");
  return c;
}

Result<Challenge> ConsumeChallengeLocked(sqlite3* db, std::string_view id, ChallengeKind kind,
                                         int64_t now) {
  TPMMA_ASSIGN_OR_RETURN(Challenge c, ReadChallenge(db, id, kind, now));
  TPMMA_ASSIGN_OR_RETURN(
      Stmt u, Stmt::Prepare(db, "mark challenge used",
                            "UPDATE challenges SET used_at = ? WHERE id = ? AND used_at IS NULL"));
  u.Bind(now, id);
  TPMMA_RETURN_IF_ERROR(u.Run());
  // Cannot be 0 under the write lock; checked anyway so that a replay never succeeds.
  if (sqlite3_changes(db) != 1) return Error(Code::kUnauthenticated, "challenge already used");
  return c;
}

Status InsertSessionLocked(sqlite3* db, const Session& session) {
  if (session.token_hash.size() != kHashSize) {
    return Status(Code::kInvalidArgument, "session token hash must be 32 bytes (SHA-256)");
  }
  TPMMA_ASSIGN_OR_RETURN(bool exists, PlatformExists(db, session.platform_id));
  if (!exists) {
    return Status(Code::kNotFound, Cat("platform ", session.platform_id, " not found for session"));
  }
  TPMMA_ASSIGN_OR_RETURN(Stmt s,
                         Stmt::Prepare(db, "insert session",
                                       "INSERT INTO sessions (token_hash, platform_id, created_at, "
                                       "expires_at) VALUES (?, ?, ?, ?)"));
  s.Bind(session.token_hash, session.platform_id, session.created_at, session.expires_at);
  Status st = s.Run();
  if (st.code() == Code::kConflict) return Status(Code::kAlreadyExists, "session already exists");
  return st;
}

}  // namespace

// --- Platforms

Result<Platform> SqliteVault::UpsertPlatform(const Platform& platform,
                                             const std::optional<AuditEvent>& audit) {
  return Write(*writer_, "upsert platform", [&](sqlite3* db) -> Result<Platform> {
    TPMMA_ASSIGN_OR_RETURN(Platform p, UpsertPlatformLocked(db, platform));
    TPMMA_RETURN_IF_ERROR(MaybeAudit(db, audit));
    return p;
  });
}

Result<Platform> SqliteVault::GetPlatform(std::string_view id) {
  auto conn = readers_->Acquire();
  return GetPlatformLocked(conn.get(), id);
}

Result<PlatformPage> SqliteVault::ListPlatforms(size_t page_size, std::string_view page_token) {
  std::string after;
  if (!page_token.empty()) {
    TPMMA_ASSIGN_OR_RETURN(after, ParsePageToken('f', page_token));
  }
  size_t n = ClampPageSize(page_size);
  auto conn = readers_->Acquire();
  TPMMA_ASSIGN_OR_RETURN(Stmt s,
                         Stmt::Prepare(conn.get(), "list platforms",
                                       Cat("SELECT ", kPlatformColumns,
                                           " FROM platforms WHERE id > ? ORDER BY id LIMIT ?")));
  s.Bind(after, n + 1);
  PlatformPage page;
  while (true) {
    TPMMA_ASSIGN_OR_RETURN(bool row, s.Step());
    if (!row) break;
    if (page.platforms.size() == n) {
      page.next_page_token = MakePageToken('f', page.platforms.back().id);
      break;
    }
    TPMMA_ASSIGN_OR_RETURN(Platform p, ReadPlatform(s));
    page.platforms.push_back(std::move(p));
  }
  return page;
}

Status SqliteVault::RevokePlatform(std::string_view id, const AuditEvent& audit) {
  return ToStatus(Write(*writer_, "revoke platform", [&](sqlite3* db) -> Result<void> {
    TPMMA_ASSIGN_OR_RETURN(Stmt u, Stmt::Prepare(db, "revoke platform",
                                                 "UPDATE platforms SET state = 'revoked' "
                                                 "WHERE id = ?"));
    u.Bind(id);
    TPMMA_RETURN_IF_ERROR(u.Run());
    if (sqlite3_changes(db) == 0) {
      return Error(Code::kNotFound, Cat("platform ", id, " not found"));
    }
    TPMMA_ASSIGN_OR_RETURN(Stmt d, Stmt::Prepare(db, "end sessions of revoked platform",
                                                 "DELETE FROM sessions WHERE platform_id = ?"));
    d.Bind(id);
    TPMMA_RETURN_IF_ERROR(d.Run());
    TPMMA_RETURN_IF_ERROR(AppendAuditLocked(db, audit));
    return {};
  }));
}

Status SqliteVault::AcceptPlatform(std::string_view id, const AuditEvent& audit) {
  return ToStatus(Write(*writer_, "accept platform", [&](sqlite3* db) -> Result<void> {
    TPMMA_ASSIGN_OR_RETURN(Platform p, GetPlatformLocked(db, id));
    if (p.state != PlatformState::kPending) {
      return Error(Code::kConflict,
                   Cat("platform ", id, " is ", ToString(p.state), ", not pending"));
    }
    TPMMA_ASSIGN_OR_RETURN(Stmt u, Stmt::Prepare(db, "accept platform",
                                                 "UPDATE platforms SET pending = 0 WHERE id = ?"));
    u.Bind(id);
    TPMMA_RETURN_IF_ERROR(u.Run());
    TPMMA_RETURN_IF_ERROR(AppendAuditLocked(db, audit));
    return {};
  }));
}

// --- Registrations

namespace {

constexpr RegistrationKind kRegistrationKinds[] = {RegistrationKind::kEkKeyId,
                                                   RegistrationKind::kEkCertSha256};

Result<PlatformRegistration> ReadRegistration(const Stmt& s) {
  PlatformRegistration r;
  TPMMA_ASSIGN_OR_RETURN(r.kind, ParseEnum(s.Text(0), kRegistrationKinds, "registration kind"));
  r.digest = s.Blob(1);
  r.label = s.Text(2);
  r.created_at = s.Int(3);
  return r;
}

}  // namespace

Result<size_t> SqliteVault::RegisterPlatforms(const std::vector<PlatformRegistration>& regs,
                                              const AuditEvent& audit) {
  for (const PlatformRegistration& r : regs) {
    if (r.digest.size() != kHashSize) {
      return Error(Code::kInvalidArgument, "a registration digest must be 32 bytes (SHA-256)");
    }
  }
  return Write(*writer_, "register platforms", [&](sqlite3* db) -> Result<size_t> {
    size_t added = 0;
    for (const PlatformRegistration& r : regs) {
      TPMMA_ASSIGN_OR_RETURN(
          Stmt s, Stmt::Prepare(db, "register platform",
                                "INSERT INTO platform_registrations (kind, digest, label, "
                                "created_at) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING"));
      s.Bind(ToString(r.kind), r.digest, r.label, r.created_at);
      TPMMA_RETURN_IF_ERROR(s.Run());
      added += static_cast<size_t>(sqlite3_changes(db));
    }
    TPMMA_RETURN_IF_ERROR(AppendAuditLocked(db, audit));
    return added;
  });
}

Result<PlatformRegistration> SqliteVault::FindRegistration(ByteView ek_key_id,
                                                           ByteView ek_cert_sha256) {
  auto conn = readers_->Acquire();
  const std::pair<RegistrationKind, ByteView> wanted[] = {
      {RegistrationKind::kEkKeyId, ek_key_id}, {RegistrationKind::kEkCertSha256, ek_cert_sha256}};
  for (const auto& [kind, digest] : wanted) {
    if (digest.empty()) continue;
    TPMMA_ASSIGN_OR_RETURN(
        Stmt s, Stmt::Prepare(conn.get(), "find registration",
                              "SELECT kind, digest, label, created_at FROM platform_registrations "
                              "WHERE kind = ? AND digest = ?"));
    s.Bind(ToString(kind), digest);
    TPMMA_ASSIGN_OR_RETURN(bool found, s.Step());
    if (found) return ReadRegistration(s);
  }
  return Error(Code::kNotFound, "not registered");
}

Result<std::vector<PlatformRegistration>> SqliteVault::ListRegistrations() {
  auto conn = readers_->Acquire();
  TPMMA_ASSIGN_OR_RETURN(
      Stmt s, Stmt::Prepare(conn.get(), "list registrations",
                            "SELECT kind, digest, label, created_at FROM platform_registrations "
                            "ORDER BY kind, digest"));
  std::vector<PlatformRegistration> out;
  while (true) {
    TPMMA_ASSIGN_OR_RETURN(bool row, s.Step());
    if (!row) break;
    TPMMA_ASSIGN_OR_RETURN(PlatformRegistration r, ReadRegistration(s));
    out.push_back(std::move(r));
  }
  return out;
}

// --- Challenges and sessions

Status SqliteVault::CreateChallenge(const Challenge& c, const std::optional<AuditEvent>& audit) {
  if (c.id.empty()) return Status(Code::kInvalidArgument, "challenge id is empty");
  if (c.expected_hash.size() != kHashSize) {
    return Status(Code::kInvalidArgument, "challenge expected hash must be 32 bytes (SHA-256)");
  }
  return ToStatus(Write(*writer_, "create challenge", [&](sqlite3* db) -> Result<void> {
    TPMMA_ASSIGN_OR_RETURN(
        Stmt s, Stmt::Prepare(db, "insert challenge",
                              "INSERT INTO challenges (id, kind, platform_id, expected_hash, "
                              "nonce, associated_data, created_at, expires_at) "
                              "VALUES (?, ?, ?, ?, ?, ?, ?, ?)"));
    s.Bind(c.id, ToString(c.kind), c.platform_id, c.expected_hash, c.nonce, c.associated_data,
           c.created_at, c.expires_at);
    Status st = s.Run();
    if (st.code() == Code::kConflict) {
      return Error(Code::kAlreadyExists, "challenge id already exists");
    }
    TPMMA_RETURN_IF_ERROR(st);
    TPMMA_RETURN_IF_ERROR(MaybeAudit(db, audit));
    return {};
  }));
}

Result<Challenge> SqliteVault::ConsumeChallenge(std::string_view id, ChallengeKind kind,
                                                int64_t now) {
  return Write(*writer_, "consume challenge", [&](sqlite3* db) -> Result<Challenge> {
    return ConsumeChallengeLocked(db, id, kind, now);
  });
}

Result<Challenge> SqliteVault::CompleteAuthentication(const AuthCompletion& a) {
  TPMMA_RETURN_IF_ERROR(CheckAuthCompletion(a));
  struct Outcome {
    Challenge challenge;
    Code refused = Code::kOk;
    std::string message;
  };
  // A refusal is still committed: the challenge must stay burnt.
  auto r = Write(*writer_, "complete authentication", [&](sqlite3* db) -> Result<Outcome> {
    TPMMA_ASSIGN_OR_RETURN(
        Challenge c,
        ConsumeChallengeLocked(db, a.challenge_id, ChallengeKind::kAuthenticate, a.now));
    if (c.platform_id != a.platform.id) {
      return Outcome{std::move(c), Code::kUnauthenticated,
                     "challenge was issued to another platform"};
    }
    if (!ConstantTimeEqual(a.proof_hash, c.expected_hash)) {
      return Outcome{std::move(c), Code::kUnauthenticated, "proof does not match the challenge"};
    }
    auto existing = GetPlatformLocked(db, a.platform.id);
    if (existing && existing->state == PlatformState::kRevoked) {
      return Outcome{std::move(c), Code::kPermissionDenied,
                     Cat("platform ", a.platform.id, " is revoked")};
    }
    if (!existing && existing.error().code() != Code::kNotFound) return Error(existing.error());
    TPMMA_ASSIGN_OR_RETURN(std::optional<std::string> same_key, SameEkKeyRefusal(db, a.platform));
    if (same_key) return Outcome{std::move(c), Code::kPermissionDenied, std::move(*same_key)};
    const bool pending = existing ? existing->state == PlatformState::kPending : a.enroll_pending;
    if (pending) {
      if (!existing) {
        Platform p = a.platform;
        p.state = PlatformState::kPending;
        TPMMA_RETURN_IF_ERROR(UpsertPlatformLocked(db, p));
        TPMMA_RETURN_IF_ERROR(PutInventoryLocked(db, p.id, a.inventory, a.now));
        TPMMA_RETURN_IF_ERROR(AppendAuditLocked(db, a.pending_audit));
      }
      std::string msg = a.pending_message.empty()
                            ? Cat("platform ", a.platform.id, " awaits an operator's acceptance")
                            : a.pending_message;
      return Outcome{std::move(c), Code::kPermissionDenied, std::move(msg)};
    }
    TPMMA_RETURN_IF_ERROR(UpsertPlatformLocked(db, a.platform));
    TPMMA_RETURN_IF_ERROR(PutInventoryLocked(db, a.platform.id, a.inventory, a.now));
    TPMMA_RETURN_IF_ERROR(InsertSessionLocked(db, a.session));
    TPMMA_RETURN_IF_ERROR(AppendAuditLocked(db, a.audit));
    return Outcome{std::move(c), Code::kOk, {}};
  });
  if (!r) return Error(r.error());
  if (r->refused != Code::kOk) return Error(r->refused, std::move(r->message));
  return std::move(r->challenge);
}

Status SqliteVault::CreateSession(const Session& session, const std::optional<AuditEvent>& audit) {
  return ToStatus(Write(*writer_, "create session", [&](sqlite3* db) -> Result<void> {
    TPMMA_RETURN_IF_ERROR(InsertSessionLocked(db, session));
    TPMMA_RETURN_IF_ERROR(MaybeAudit(db, audit));
    return {};
  }));
}

Result<Challenge> SqliteVault::GetChallenge(std::string_view id, ChallengeKind kind, int64_t now) {
  auto conn = readers_->Acquire();
  return ReadChallenge(conn.get(), id, kind, now);
}

Result<Session> SqliteVault::GetSession(ByteView token_hash, int64_t now) {
  auto conn = readers_->Acquire();
  TPMMA_ASSIGN_OR_RETURN(Stmt s,
                         Stmt::Prepare(conn.get(), "read session",
                                       "SELECT platform_id, created_at, expires_at FROM sessions "
                                       "WHERE token_hash = ?"));
  s.Bind(token_hash);
  TPMMA_ASSIGN_OR_RETURN(bool found, s.Step());
  if (!found) return Error(Code::kNotFound, "session not found");
  Session out{Bytes(token_hash.begin(), token_hash.end()), s.Text(0), s.Int(1), s.Int(2)};
  if (now >= out.expires_at) return Error(Code::kExpired, "session expired");
  return out;
}

Result<std::vector<Session>> SqliteVault::ListSessions(std::string_view platform_id, int64_t now,
                                                       size_t limit) {
  auto conn = readers_->Acquire();
  TPMMA_ASSIGN_OR_RETURN(Stmt s,
                         Stmt::Prepare(conn.get(), "list sessions",
                                       "SELECT token_hash, created_at, expires_at FROM sessions "
                                       "WHERE platform_id = ? AND expires_at > ? "
                                       "ORDER BY created_at DESC, token_hash LIMIT ?"));
  s.Bind(platform_id, now, static_cast<int64_t>(ClampPageSize(limit)));
  std::vector<Session> out;
  while (true) {
    TPMMA_ASSIGN_OR_RETURN(bool row, s.Step());
    if (!row) break;
    out.push_back(Session{s.Blob(0), std::string(platform_id), s.Int(1), s.Int(2)});
  }
  return out;
}

Status SqliteVault::DeleteSession(ByteView token_hash, const std::optional<AuditEvent>& audit) {
  return ToStatus(Write(*writer_, "delete session", [&](sqlite3* db) -> Result<void> {
    TPMMA_ASSIGN_OR_RETURN(
        Stmt s, Stmt::Prepare(db, "delete session", "DELETE FROM sessions WHERE token_hash = ?"));
    s.Bind(token_hash);
    TPMMA_RETURN_IF_ERROR(s.Run());
    if (sqlite3_changes(db) == 0) return Error(Code::kNotFound, "session not found");
    TPMMA_RETURN_IF_ERROR(MaybeAudit(db, audit));
    return {};
  }));
}

Result<int64_t> SqliteVault::PurgeExpired(int64_t now) {
  return Write(*writer_, "purge expired", [&](sqlite3* db) -> Result<int64_t> {
    int64_t total = 0;
    TPMMA_ASSIGN_OR_RETURN(
        Stmt s, Stmt::Prepare(db, "purge sessions", "DELETE FROM sessions WHERE expires_at <= ?"));
    s.Bind(now);
    TPMMA_RETURN_IF_ERROR(s.Run());
    total += sqlite3_changes(db);
    TPMMA_ASSIGN_OR_RETURN(
        Stmt c,
        Stmt::Prepare(db, "purge challenges",
                      "DELETE FROM challenges WHERE expires_at <= ? OR used_at IS NOT NULL"));
    c.Bind(now);
    TPMMA_RETURN_IF_ERROR(c.Run());
    total += sqlite3_changes(db);
    return total;
  });
}

}  // namespace tpmma::storage
