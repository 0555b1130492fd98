// SPDX-License-Identifier: GPL-2.0-or-later
#include "storage/sqlite_vault.h"

#include <fcntl.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <concepts>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <deque>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <variant>
#include <vector>

#include <openssl/evp.h>

#include "common/openssl.h"
#include "common/text.h"

namespace tpmma::storage {
namespace {

// g++ 12 has no <format>; a tiny concatenation helper keeps messages readable.
void AppendPiece(std::string& out, std::string_view s) {
  out += s;
}
void AppendPiece(std::string& out, const char* s) {
  out += s;
}
void AppendPiece(std::string& out, const std::string& s) {
  out += s;
}
template <std::integral T>
void AppendPiece(std::string& out, T v) {
  out += std::to_string(v);
}
template <typename... Args>
std::string Cat(const Args&... args) {
  std::string out;
  (AppendPiece(out, args), ...);
  return out;
}
// ---------------------------------------------------------------------------------------
// Schema. Migration i takes user_version i to i+1; append, never edit a released entry.

constexpr std::string_view kMigrations[] = {
    // 0 → 1: the initial schema.
    R"sql(
CREATE TABLE platforms (
  id                 TEXT PRIMARY KEY,
  ek_public          BLOB NOT NULL,
  ek_certificate     BLOB NOT NULL,
  ak_public          BLOB NOT NULL,
  ak_name            BLOB NOT NULL,
  signing_key_public BLOB,
  state              TEXT NOT NULL CHECK (state IN ('active', 'revoked')),
  created_at         INTEGER NOT NULL,
  last_seen_at       INTEGER NOT NULL
) STRICT;

CREATE TABLE challenges (
  id              TEXT PRIMARY KEY,
  kind            TEXT NOT NULL CHECK (kind IN ('authenticate', 'download-nonce')),
  platform_id     TEXT NOT NULL,
  expected_hash   BLOB NOT NULL,
  nonce           BLOB NOT NULL,
  associated_data BLOB NOT NULL,
  created_at      INTEGER NOT NULL,
  expires_at      INTEGER NOT NULL,
  used_at         INTEGER
) STRICT;
CREATE INDEX challenges_expiry ON challenges (expires_at);

CREATE TABLE sessions (
  token_hash  BLOB PRIMARY KEY,
  platform_id TEXT NOT NULL REFERENCES platforms (id),
  created_at  INTEGER NOT NULL,
  expires_at  INTEGER NOT NULL
) STRICT;
CREATE INDEX sessions_platform ON sessions (platform_id);
CREATE INDEX sessions_expiry ON sessions (expires_at);

CREATE TABLE packages (
  pk                 INTEGER PRIMARY KEY,
  package_id         TEXT NOT NULL UNIQUE,
  source_platform_id TEXT NOT NULL REFERENCES platforms (id),
  format_version     TEXT NOT NULL,
  created_at         INTEGER NOT NULL,
  uploaded_at        INTEGER NOT NULL,
  sha256             BLOB NOT NULL,
  size               INTEGER NOT NULL,
  custody            TEXT NOT NULL CHECK (custody IN ('recovery-code', 'escrow'))
) STRICT;
CREATE INDEX packages_source ON packages (source_platform_id, pk);

CREATE TABLE package_bodies (
  package_pk INTEGER PRIMARY KEY REFERENCES packages (pk) ON DELETE CASCADE,
  body       BLOB NOT NULL
) STRICT;

CREATE TABLE package_keys (
  package_pk INTEGER NOT NULL REFERENCES packages (pk) ON DELETE CASCADE,
  ordinal    INTEGER NOT NULL,
  key_id     TEXT NOT NULL,
  label      TEXT NOT NULL,
  usage      TEXT NOT NULL,
  PRIMARY KEY (package_pk, ordinal)
) STRICT;

CREATE TABLE approvals (
  id              INTEGER PRIMARY KEY,
  old_platform_id TEXT NOT NULL,
  new_platform_id TEXT NOT NULL,
  all_packages    INTEGER NOT NULL CHECK (all_packages IN (0, 1)),
  reason          TEXT NOT NULL,
  created_by      TEXT NOT NULL,
  created_at      INTEGER NOT NULL,
  expires_at      INTEGER NOT NULL,
  confirmed_by    TEXT,
  state           TEXT NOT NULL CHECK (state IN ('pending', 'active', 'used', 'revoked')),
  used_at         INTEGER
) STRICT;
CREATE INDEX approvals_new ON approvals (new_platform_id, state);

CREATE TABLE approval_packages (
  approval_id INTEGER NOT NULL REFERENCES approvals (id) ON DELETE CASCADE,
  package_id  TEXT NOT NULL,
  PRIMARY KEY (approval_id, package_id)
) STRICT;

CREATE TABLE operators (
  name             TEXT PRIMARY KEY,
  role             TEXT NOT NULL CHECK (role IN ('helpdesk', 'auditor', 'admin')),
  cert_fingerprint TEXT NOT NULL UNIQUE,
  created_at       INTEGER NOT NULL,
  revoked_at       INTEGER
) STRICT;

CREATE TABLE audit_log (
  seq       INTEGER PRIMARY KEY,
  time      INTEGER NOT NULL,
  actor     TEXT NOT NULL,
  action    TEXT NOT NULL,
  object    TEXT NOT NULL,
  outcome   TEXT NOT NULL,
  detail    TEXT NOT NULL,
  prev_hash BLOB NOT NULL,
  hash      BLOB NOT NULL
) STRICT;
CREATE INDEX audit_time ON audit_log (time);
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
  BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
  BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
)sql",
    // 2: the key each package's signature was verified with at upload (TPM2B_PUBLIC), so a
    // later signing key of the platform does not orphan older packages. NULL: older rows.
    R"sql(
ALTER TABLE packages ADD COLUMN signing_key BLOB;
)sql",
};

constexpr int kSchemaVersion = static_cast<int>(std::size(kMigrations));
constexpr size_t kHashSize = 32;
constexpr size_t kDefaultPageSize = 100;
constexpr size_t kMaxPageSize = 1000;
constexpr size_t kMaxAuditField = 1024;

// ---------------------------------------------------------------------------------------
// SQLite plumbing

// Messages name the statement's purpose and SQLite's own text (which names tables and
// columns, never bound values).
Status SqliteError(sqlite3* db, int rc, std::string_view purpose) {
  Code code = Code::kIoError;
  switch (rc & 0xff) {
    case SQLITE_CONSTRAINT:
      code = Code::kConflict;
      break;
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
      code = Code::kCorruption;
      break;
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      code = Code::kUnavailable;
      break;
    default:
      break;
  }
  std::string msg = Cat(purpose, ": ", sqlite3_errstr(rc));
  if (db != nullptr) {
    const char* detail = sqlite3_errmsg(db);
    if (detail != nullptr && std::strcmp(detail, sqlite3_errstr(rc)) != 0) {
      msg += Cat(" (", detail, ")");
    }
  }
  return Status(code, std::move(msg));
}

// Prepared statements, kept per connection and keyed by their text. Parsing SQL was most of
// what a small write or read cost (profile of the writer under read-audit load: SQLite's
// parser and its mallocs were ~45% of the thread), so Stmt::Prepare borrows a statement
// from its connection's cache and gives it back, reset, when done. A connection is used by
// one thread at a time (the writer thread, or the holder of a read lease), so a cache needs
// no lock; the registry from connection to cache is read-mostly (shared lock).
class StmtCache {
 public:
  struct Entry {
    sqlite3_stmt* stmt = nullptr;
    bool in_use = false;
  };
  // Distinct statements per connection: ~40 fixed ones plus the filter combinations of
  // QueryPackages and ListAudit. Beyond this, statements are prepared and finalized per use.
  static constexpr size_t kMaxEntries = 160;

  StmtCache() = default;
  StmtCache(const StmtCache&) = delete;
  StmtCache& operator=(const StmtCache&) = delete;
  ~StmtCache() {
    for (auto& [sql, e] : map_) sqlite3_finalize(e.stmt);
  }

  // The idle cached statement for `sql`, now in use; nullptr if there is none (not cached
  // yet, or in use by an enclosing Stmt of the same text).
  Entry* Take(std::string_view sql) {
    auto it = map_.find(sql);
    if (it == map_.end() || it->second.in_use) return nullptr;
    it->second.in_use = true;
    return &it->second;
  }
  // Keeps a freshly prepared statement (in use) if `sql` is new and there is room.
  Entry* Adopt(std::string_view sql, sqlite3_stmt* stmt) {
    if (map_.size() >= kMaxEntries || map_.contains(sql)) return nullptr;
    Entry& e = map_[std::string(sql)];  // node-based: the address stays valid
    e.stmt = stmt;
    e.in_use = true;
    return &e;
  }

 private:
  struct Hash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>()(s); }
  };
  std::unordered_map<std::string, Entry, Hash, std::equal_to<>> map_;
};

std::shared_mutex g_caches_mu;
std::unordered_map<sqlite3*, std::unique_ptr<StmtCache>> g_caches;  // guarded by g_caches_mu

void AttachStmtCache(sqlite3* db) {
  std::unique_lock lock(g_caches_mu);
  g_caches[db] = std::make_unique<StmtCache>();
}

// Finalizes the connection's cached statements (before it is closed: SQLite keeps a
// connection with live statements open as a zombie, and it would never checkpoint).
void DropStmtCache(sqlite3* db) {
  std::unique_ptr<StmtCache> cache;
  {
    std::unique_lock lock(g_caches_mu);
    auto it = g_caches.find(db);
    if (it == g_caches.end()) return;
    cache = std::move(it->second);
    g_caches.erase(it);
  }
}

StmtCache* CacheOf(sqlite3* db) {
  std::shared_lock lock(g_caches_mu);
  auto it = g_caches.find(db);
  return it == g_caches.end() ? nullptr : it->second.get();
}

// Finalizes an uncached statement; resets a cached one and gives it back to its cache.
struct StmtRelease {
  StmtCache::Entry* entry = nullptr;
  void operator()(sqlite3_stmt* s) const {
    if (entry == nullptr) {
      sqlite3_finalize(s);
      return;
    }
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    entry->in_use = false;
  }
};
using StmtPtr = std::unique_ptr<sqlite3_stmt, StmtRelease>;

// Non-null even for empty values: SQLite binds a null pointer as NULL, not as ''.
const char kEmpty[1] = {0};

class Stmt {
 public:
  static Result<Stmt> Prepare(sqlite3* db, std::string_view purpose, std::string_view sql) {
    StmtCache* cache = CacheOf(db);
    if (cache != nullptr) {
      if (StmtCache::Entry* e = cache->Take(sql)) {
        return Stmt(db, purpose, StmtPtr(e->stmt, StmtRelease{e}));
      }
    }
    sqlite3_stmt* raw = nullptr;
    int rc = sqlite3_prepare_v3(db, sql.data(), static_cast<int>(sql.size()),
                                cache != nullptr ? SQLITE_PREPARE_PERSISTENT : 0, &raw, nullptr);
    StmtPtr stmt(raw);
    if (rc != SQLITE_OK) return Error(SqliteError(db, rc, Cat("prepare ", purpose)));
    if (cache != nullptr) {
      if (StmtCache::Entry* e = cache->Adopt(sql, raw)) {
        stmt.release();
        stmt = StmtPtr(raw, StmtRelease{e});
      }
    }
    return Stmt(db, purpose, std::move(stmt));
  }

  template <typename... Args>
  Stmt& Bind(const Args&... args) {
    int i = 1;
    (BindOne(i++, args), ...);
    return *this;
  }

  template <std::integral T>
  void BindOne(int i, T v) {
    Check(sqlite3_bind_int64(stmt_.get(), i, static_cast<sqlite3_int64>(v)));
  }
  void BindOne(int i, std::string_view v) {
    Check(sqlite3_bind_text64(stmt_.get(), i, v.empty() ? kEmpty : v.data(), v.size(),
                              SQLITE_TRANSIENT, SQLITE_UTF8));
  }
  void BindOne(int i, const std::string& v) { BindOne(i, std::string_view(v)); }
  void BindOne(int i, const char* v) { BindOne(i, std::string_view(v)); }
  void BindOne(int i, ByteView v) {
    Check(sqlite3_bind_blob64(stmt_.get(), i,
                              v.empty() ? static_cast<const void*>(kEmpty) : v.data(), v.size(),
                              SQLITE_TRANSIENT));
  }
  void BindOne(int i, const Bytes& v) { BindOne(i, ByteView(v)); }
  void BindOne(int i, std::nullopt_t) { Check(sqlite3_bind_null(stmt_.get(), i)); }
  template <typename T>
  void BindOne(int i, const std::optional<T>& v) {
    if (v) {
      BindOne(i, *v);
    } else {
      BindOne(i, std::nullopt);
    }
  }
  void BindOne(int i, const std::variant<int64_t, std::string>& v) {
    std::visit([&](const auto& x) { BindOne(i, x); }, v);
  }

  // true: a row is ready; false: done.
  Result<bool> Step() {
    if (!bind_error_.ok()) return Error(bind_error_);
    int rc = sqlite3_step(stmt_.get());
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    return Error(SqliteError(db_, rc, purpose_));
  }
  // For statements that return no rows.
  Status Run() {
    auto r = Step();
    if (!r) return r.error();
    return Status();
  }
  void Reset() {
    sqlite3_reset(stmt_.get());
    sqlite3_clear_bindings(stmt_.get());
  }

  int64_t Int(int c) const { return sqlite3_column_int64(stmt_.get(), c); }
  bool IsNull(int c) const { return sqlite3_column_type(stmt_.get(), c) == SQLITE_NULL; }
  std::string Text(int c) const {
    const auto* p = reinterpret_cast<const char*>(sqlite3_column_text(stmt_.get(), c));
    int n = sqlite3_column_bytes(stmt_.get(), c);
    return p == nullptr ? std::string() : std::string(p, static_cast<size_t>(n));
  }
  Bytes Blob(int c) const {
    const auto* p = static_cast<const uint8_t*>(sqlite3_column_blob(stmt_.get(), c));
    int n = sqlite3_column_bytes(stmt_.get(), c);
    return p == nullptr ? Bytes() : Bytes(p, p + n);
  }
  std::optional<int64_t> OptInt(int c) const {
    return IsNull(c) ? std::nullopt : std::optional<int64_t>(Int(c));
  }

 private:
  Stmt(sqlite3* db, std::string_view purpose, StmtPtr stmt)
      : db_(db), purpose_(purpose), stmt_(std::move(stmt)) {}
  void Check(int rc) {
    if (rc != SQLITE_OK && bind_error_.ok()) {
      bind_error_ = SqliteError(db_, rc, Cat("bind ", purpose_));
    }
  }

  sqlite3* db_;
  std::string purpose_;
  StmtPtr stmt_;
  Status bind_error_;
};

Status Exec(sqlite3* db, std::string_view purpose, const std::string& sql) {
  if (sql.find(';') == std::string::npos) {
    // One statement (BEGIN, SAVEPOINT, COMMIT, ...): from the connection's cache.
    TPMMA_ASSIGN_OR_RETURN(Stmt s, Stmt::Prepare(db, purpose, sql));
    while (true) {
      TPMMA_ASSIGN_OR_RETURN(bool row, s.Step());
      if (!row) return Status();
    }
  }
  int rc = sqlite3_exec(db, sql.c_str(), nullptr, nullptr, nullptr);
  if (rc != SQLITE_OK) return SqliteError(db, rc, purpose);
  return Status();
}

void RollbackIfOpen(sqlite3* db) {
  // A failed statement may already have rolled the transaction back (SQLITE_FULL, IOERR).
  if (sqlite3_get_autocommit(db) == 0) sqlite3_exec(db, "ROLLBACK", nullptr, nullptr, nullptr);
}

// Runs f() in a transaction: committed if f succeeds, rolled back otherwise. Writers use
// BEGIN IMMEDIATE so that the write lock is taken up front (no deadlock upgrading a read
// lock when another process writes), readers a deferred BEGIN for a consistent snapshot.
template <typename F>
auto InTxn(sqlite3* db, bool write, std::string_view purpose, F&& f) -> decltype(f()) {
  if (Status s = Exec(db, Cat("begin ", purpose), write ? "BEGIN IMMEDIATE" : "BEGIN"); !s.ok()) {
    return Error(std::move(s));
  }
  auto r = f();
  if (!r.has_value()) {
    RollbackIfOpen(db);
    return r;
  }
  if (Status s = Exec(db, Cat("commit ", purpose), "COMMIT"); !s.ok()) {
    RollbackIfOpen(db);
    return Error(std::move(s));
  }
  return r;
}

Status ToStatus(const Result<void>& r) {
  return r.has_value() ? Status() : r.error();
}

Status Fault(const SqliteVaultOptions& options, std::string_view step) {
  return options.fault_hook(step);
}

size_t ClampPageSize(size_t n) {
  if (n == 0) return kDefaultPageSize;
  return std::min(n, kMaxPageSize);
}

// Page tokens are opaque to callers: hex of "<kind>:<last key>".
std::string MakePageToken(char kind, std::string_view last) {
  std::string raw = std::string(1, kind) + ":" + std::string(last);
  return HexEncode(View(raw));
}

Result<std::string> ParsePageToken(char kind, std::string_view token) {
  auto raw = HexDecode(token);
  if (!raw || raw->size() < 2 || (*raw)[0] != static_cast<uint8_t>(kind) || (*raw)[1] != ':') {
    return Error(Code::kInvalidArgument, "page token was not issued by this vault");
  }
  return std::string(raw->begin() + 2, raw->end());
}

Result<int64_t> ParseIntPageToken(char kind, std::string_view token) {
  if (token.empty()) return 0;
  TPMMA_ASSIGN_OR_RETURN(std::string s, ParsePageToken(kind, token));
  int64_t v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size() || v < 0) {
    return Error(Code::kInvalidArgument, "page token was not issued by this vault");
  }
  return v;
}

Result<Bytes> Sha256(ByteView data) {
  Bytes digest(EVP_MAX_MD_SIZE);
  unsigned int len = 0;
  if (EVP_Digest(data.data(), data.size(), digest.data(), &len, EVP_sha256(), nullptr) != 1) {
    return Error(OpensslError("EVP_Digest(SHA-256) of package body"));
  }
  digest.resize(len);
  return digest;
}

template <typename E, size_t N>
Result<E> ParseEnum(std::string_view text, const E (&values)[N], std::string_view what) {
  for (E v : values) {
    if (ToString(v) == text) return v;
  }
  return Error(Code::kCorruption, Cat("unknown ", what, " '", text, "' in vault"));
}

constexpr PlatformState kPlatformStates[] = {PlatformState::kActive, PlatformState::kRevoked};
constexpr ChallengeKind kChallengeKinds[] = {ChallengeKind::kAuthenticate,
                                             ChallengeKind::kDownloadNonce};
constexpr CustodyMode kCustodyModes[] = {CustodyMode::kRecoveryCode, CustodyMode::kEscrow};
constexpr ApprovalState kApprovalStates[] = {ApprovalState::kPending, ApprovalState::kActive,
                                             ApprovalState::kUsed, ApprovalState::kRevoked};
constexpr OperatorRole kOperatorRoles[] = {OperatorRole::kHelpdesk, OperatorRole::kAuditor,
                                           OperatorRole::kAdmin};

// ---------------------------------------------------------------------------------------
// Row helpers. Writes run on the writer thread inside its open transaction; reads on a
// leased read connection.

// The log is for short facts; a big field is a bug (or a secret being dumped into it).
Status CheckAuditEvent(const AuditEvent& e) {
  for (const std::string* field : {&e.actor, &e.action, &e.object, &e.outcome, &e.detail}) {
    if (field->size() > kMaxAuditField) {
      return Status(Code::kInvalidArgument,
                    Cat("audit field longer than ", kMaxAuditField, " bytes"));
    }
  }
  return Status();
}

Result<int64_t> AppendAuditLocked(sqlite3* db, const AuditEvent& e) {
  TPMMA_RETURN_IF_ERROR(CheckAuditEvent(e));
  TPMMA_ASSIGN_OR_RETURN(
      Stmt last, Stmt::Prepare(db, "read audit chain head",
                               "SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1"));
  TPMMA_ASSIGN_OR_RETURN(bool has_last, last.Step());
  int64_t seq = has_last ? last.Int(0) + 1 : 1;
  Bytes prev = has_last ? last.Blob(1) : Bytes(kHashSize, 0);
  TPMMA_ASSIGN_OR_RETURN(Bytes hash, AuditRecordHash(seq, e, prev));
  TPMMA_ASSIGN_OR_RETURN(
      Stmt ins, Stmt::Prepare(db, "append audit record",
                              "INSERT INTO audit_log (seq, time, actor, action, object, outcome, "
                              "detail, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"));
  ins.Bind(seq, e.time, e.actor, e.action, e.object, e.outcome, e.detail, prev, hash);
  TPMMA_RETURN_IF_ERROR(ins.Run());
  return seq;
}

Status MaybeAudit(sqlite3* db, const std::optional<AuditEvent>& audit) {
  if (audit) TPMMA_RETURN_IF_ERROR(AppendAuditLocked(db, *audit));
  return Status();
}

constexpr std::string_view kPlatformColumns =
    "id, ek_public, ek_certificate, ak_public, ak_name, signing_key_public, state, created_at, "
    "last_seen_at";

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
  return p;
}

Result<Platform> GetPlatformLocked(sqlite3* db, std::string_view id) {
  TPMMA_ASSIGN_OR_RETURN(
      Stmt s, Stmt::Prepare(db, "read platform",
                            Cat("SELECT ", kPlatformColumns, " FROM platforms WHERE id = ?")));
  s.Bind(id);
  TPMMA_ASSIGN_OR_RETURN(bool found, s.Step());
  if (!found) return Error(Code::kNotFound, Cat("platform ", id, " not found"));
  return ReadPlatform(s);
}

Result<Platform> UpsertPlatformLocked(sqlite3* db, const Platform& p) {
  if (p.id.empty()) return Error(Code::kInvalidArgument, "platform id is empty");
  TPMMA_ASSIGN_OR_RETURN(
      Stmt s,
      Stmt::Prepare(
          db, "upsert platform",
          "INSERT INTO platforms (id, ek_public, ek_certificate, ak_public, ak_name, "
          "signing_key_public, state, created_at, last_seen_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
          "ON CONFLICT (id) DO UPDATE SET ek_public = excluded.ek_public, "
          "ek_certificate = excluded.ek_certificate, ak_public = excluded.ak_public, "
          "ak_name = excluded.ak_name, "
          "signing_key_public = COALESCE(excluded.signing_key_public, signing_key_public), "
          "last_seen_at = excluded.last_seen_at"));
  s.Bind(p.id, p.ek_public, p.ek_certificate, p.ak_public, p.ak_name, p.signing_key_public,
         ToString(p.state), p.created_at, p.last_seen_at);
  TPMMA_RETURN_IF_ERROR(s.Run());
  return GetPlatformLocked(db, p.id);
}

Result<bool> PlatformExists(sqlite3* db, std::string_view id) {
  TPMMA_ASSIGN_OR_RETURN(
      Stmt s, Stmt::Prepare(db, "check platform exists", "SELECT 1 FROM platforms WHERE id = ?"));
  s.Bind(id);
  return s.Step();
}

Result<Challenge> ConsumeChallengeLocked(sqlite3* db, std::string_view id, ChallengeKind kind,
                                         int64_t now) {
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

constexpr std::string_view kPackageColumns =
    "pk, package_id, source_platform_id, format_version, created_at, uploaded_at, sha256, size, "
    "custody, signing_key";

Result<PackageDescriptor> ReadDescriptor(const Stmt& s) {
  PackageDescriptor d;
  d.package_id = s.Text(1);
  d.source_platform_id = s.Text(2);
  d.format_version = s.Text(3);
  d.created_at = s.Int(4);
  d.uploaded_at = s.Int(5);
  d.sha256 = s.Blob(6);
  d.size = s.Int(7);
  TPMMA_ASSIGN_OR_RETURN(d.custody, ParseEnum(s.Text(8), kCustodyModes, "custody mode"));
  d.signing_key = s.Blob(9);
  return d;
}

Result<std::vector<PackageKey>> ReadKeys(Stmt& keys, int64_t pk) {
  keys.Reset();
  keys.Bind(pk);
  std::vector<PackageKey> out;
  while (true) {
    TPMMA_ASSIGN_OR_RETURN(bool row, keys.Step());
    if (!row) break;
    out.push_back(PackageKey{keys.Text(0), keys.Text(1), keys.Text(2)});
  }
  return out;
}

Result<Stmt> PrepareKeysStmt(sqlite3* db) {
  return Stmt::Prepare(db, "read package keys",
                       "SELECT key_id, label, usage FROM package_keys WHERE package_pk = ? "
                       "ORDER BY ordinal");
}

// Returns the descriptor and its internal pk.
Result<std::pair<PackageDescriptor, int64_t>> GetDescriptorLocked(sqlite3* db,
                                                                  std::string_view package_id) {
  TPMMA_ASSIGN_OR_RETURN(Stmt s, Stmt::Prepare(db, "read package",
                                               Cat("SELECT ", kPackageColumns,
                                                   " FROM packages WHERE package_id = ?")));
  s.Bind(package_id);
  TPMMA_ASSIGN_OR_RETURN(bool found, s.Step());
  if (!found) return Error(Code::kNotFound, Cat("package ", package_id, " not found"));
  TPMMA_ASSIGN_OR_RETURN(PackageDescriptor d, ReadDescriptor(s));
  int64_t pk = s.Int(0);
  TPMMA_ASSIGN_OR_RETURN(Stmt keys, PrepareKeysStmt(db));
  TPMMA_ASSIGN_OR_RETURN(d.keys, ReadKeys(keys, pk));
  d.key_count = static_cast<int64_t>(d.keys.size());
  return std::make_pair(std::move(d), pk);
}

constexpr std::string_view kApprovalColumns =
    "id, old_platform_id, new_platform_id, all_packages, reason, created_by, created_at, "
    "expires_at, confirmed_by, state, used_at";

Result<Approval> GetApprovalLocked(sqlite3* db, int64_t id) {
  TPMMA_ASSIGN_OR_RETURN(
      Stmt s, Stmt::Prepare(db, "read approval",
                            Cat("SELECT ", kApprovalColumns, " FROM approvals WHERE id = ?")));
  s.Bind(id);
  TPMMA_ASSIGN_OR_RETURN(bool found, s.Step());
  if (!found) return Error(Code::kNotFound, Cat("approval ", id, " not found"));
  Approval a;
  a.id = s.Int(0);
  a.old_platform_id = s.Text(1);
  a.new_platform_id = s.Text(2);
  a.all_packages = s.Int(3) != 0;
  a.reason = s.Text(4);
  a.created_by = s.Text(5);
  a.created_at = s.Int(6);
  a.expires_at = s.Int(7);
  if (!s.IsNull(8)) a.confirmed_by = s.Text(8);
  TPMMA_ASSIGN_OR_RETURN(a.state, ParseEnum(s.Text(9), kApprovalStates, "approval state"));
  a.used_at = s.OptInt(10);
  TPMMA_ASSIGN_OR_RETURN(
      Stmt p, Stmt::Prepare(db, "read approval packages",
                            "SELECT package_id FROM approval_packages WHERE approval_id = ? "
                            "ORDER BY package_id"));
  p.Bind(id);
  while (true) {
    TPMMA_ASSIGN_OR_RETURN(bool row, p.Step());
    if (!row) break;
    a.package_ids.push_back(p.Text(0));
  }
  return a;
}

Status SetApprovalState(sqlite3* db, int64_t id, ApprovalState state,
                        std::optional<std::string_view> confirmed_by,
                        std::optional<int64_t> used_at) {
  TPMMA_ASSIGN_OR_RETURN(Stmt s, Stmt::Prepare(db, "update approval",
                                               "UPDATE approvals SET state = ?, "
                                               "confirmed_by = COALESCE(?, confirmed_by), "
                                               "used_at = COALESCE(?, used_at) WHERE id = ?"));
  s.Bind(ToString(state), confirmed_by, used_at, id);
  return s.Run();
}

constexpr std::string_view kOperatorColumns =
    "name, role, cert_fingerprint, created_at, revoked_at";

Result<Operator> ReadOperator(const Stmt& s) {
  Operator op;
  op.name = s.Text(0);
  TPMMA_ASSIGN_OR_RETURN(op.role, ParseEnum(s.Text(1), kOperatorRoles, "operator role"));
  op.cert_fingerprint = s.Text(2);
  op.created_at = s.Int(3);
  op.revoked_at = s.OptInt(4);
  return op;
}

Result<Operator> GetOperatorWhere(sqlite3* db, std::string_view column, std::string_view value) {
  TPMMA_ASSIGN_OR_RETURN(Stmt s, Stmt::Prepare(db, "read operator",
                                               Cat("SELECT ", kOperatorColumns,
                                                   " FROM operators WHERE ", column, " = ?")));
  s.Bind(value);
  TPMMA_ASSIGN_OR_RETURN(bool found, s.Step());
  if (!found) return Error(Code::kNotFound, "operator not found");
  return ReadOperator(s);
}

Status VerifyAuditChainLocked(sqlite3* db) {
  TPMMA_ASSIGN_OR_RETURN(Stmt s,
                         Stmt::Prepare(db, "read audit log",
                                       "SELECT seq, time, actor, action, object, outcome, detail, "
                                       "prev_hash, hash FROM audit_log ORDER BY seq"));
  int64_t expected_seq = 1;
  Bytes prev(kHashSize, 0);
  while (true) {
    TPMMA_ASSIGN_OR_RETURN(bool row, s.Step());
    if (!row) break;
    int64_t seq = s.Int(0);
    if (seq != expected_seq) {
      return Status(Code::kCorruption, Cat("audit chain broken at seq ", expected_seq,
                                           ": record missing (next present is seq ", seq, ")"));
    }
    AuditEvent e{s.Int(1), s.Text(2), s.Text(3), s.Text(4), s.Text(5), s.Text(6)};
    Bytes prev_hash = s.Blob(7);
    Bytes hash = s.Blob(8);
    if (prev_hash != prev) {
      return Status(Code::kCorruption, Cat("audit chain broken at seq ", seq,
                                           ": prev_hash does not match the hash of seq ", seq - 1));
    }
    TPMMA_ASSIGN_OR_RETURN(Bytes computed, AuditRecordHash(seq, e, prev_hash));
    if (computed != hash) {
      return Status(Code::kCorruption,
                    Cat("audit chain broken at seq ", seq, ": record was altered"));
    }
    prev = std::move(hash);
    ++expected_seq;
  }
  return Status();
}

Result<int64_t> ReadPragmaInt(sqlite3* db, std::string_view pragma) {
  TPMMA_ASSIGN_OR_RETURN(Stmt s,
                         Stmt::Prepare(db, Cat("read PRAGMA ", pragma), Cat("PRAGMA ", pragma)));
  TPMMA_ASSIGN_OR_RETURN(bool row, s.Step());
  if (!row) return Error(Code::kInternal, Cat("PRAGMA ", pragma, " returned no row"));
  return s.Int(0);
}

// Refuses files that are not ours before anything is written to them.
Status CheckIdentity(sqlite3* db, const std::string& path) {
  auto app_id = ReadPragmaInt(db, "application_id");
  if (!app_id) {
    if (app_id.error().code() == Code::kCorruption) {
      return Status(Code::kCorruption,
                    Cat(path, " is not a SQLite database: ", app_id.error().message()));
    }
    return app_id.error();
  }
  if (*app_id == SqliteVault::kApplicationId) return Status();
  if (*app_id != 0) {
    return Status(Code::kInvalidArgument,
                  Cat(path, " is not a tpm-ma vault (SQLite application_id ",
                      Hex32(static_cast<uint32_t>(*app_id)), ", expected ",
                      Hex32(static_cast<uint32_t>(SqliteVault::kApplicationId)), ")"));
  }
  TPMMA_ASSIGN_OR_RETURN(int64_t objects, [&]() -> Result<int64_t> {
    TPMMA_ASSIGN_OR_RETURN(
        Stmt s, Stmt::Prepare(db, "count schema objects", "SELECT count(*) FROM sqlite_schema"));
    TPMMA_RETURN_IF_ERROR(s.Step());
    return s.Int(0);
  }());
  TPMMA_ASSIGN_OR_RETURN(int64_t version, ReadPragmaInt(db, "user_version"));
  if (objects != 0 || version != 0) {
    return Status(Code::kInvalidArgument, Cat(path,
                                              " is a SQLite database of another program (no tpm-ma "
                                              "application_id); refusing to use it as a vault"));
  }
  return Status();
}

Status Migrate(sqlite3* db, const std::string& path) {
  while (true) {
    auto step = InTxn(db, true, "schema migration", [&]() -> Result<bool> {
      // Re-read inside the write lock: another process may have migrated meanwhile.
      TPMMA_ASSIGN_OR_RETURN(int64_t version, ReadPragmaInt(db, "user_version"));
      if (version > kSchemaVersion) {
        return Error(Code::kVersionTooNew, Cat("vault ", path, " has schema version ", version,
                                               ", newer than this build supports (", kSchemaVersion,
                                               "); upgrade tpm-ma"));
      }
      if (version == kSchemaVersion) return false;
      TPMMA_RETURN_IF_ERROR(Exec(db, Cat("schema migration ", version, " to ", version + 1),
                                 std::string(kMigrations[version])));
      TPMMA_RETURN_IF_ERROR(Exec(db, "set application_id",
                                 Cat("PRAGMA application_id = ", SqliteVault::kApplicationId)));
      TPMMA_RETURN_IF_ERROR(
          Exec(db, "set user_version", Cat("PRAGMA user_version = ", version + 1)));
      return true;
    });
    if (!step) return step.error();
    if (!*step) return Status();
  }
}

}  // namespace

// ---------------------------------------------------------------------------------------
// The writer thread and the read connections.

namespace internal {

struct DbCloser {
  void operator()(sqlite3* db) const {
    DropStmtCache(db);
    sqlite3_close_v2(db);
  }
};
using DbPtr = std::unique_ptr<sqlite3, DbCloser>;

// A non-owning, non-allocating callable reference: enough because a caller blocks until
// the writer is done with its closure.
template <typename Sig>
class FunctionRef;
template <typename R, typename... A>
class FunctionRef<R(A...)> {
 public:
  // Constrained so that copying a FunctionRef copies it instead of wrapping it.
  template <typename F,
            typename = std::enable_if_t<!std::is_same_v<std::remove_cvref_t<F>, FunctionRef>>>
  FunctionRef(F& f)  // NOLINT(google-explicit-constructor)
      : obj_(&f), call_([](void* obj, A... a) -> R { return (*static_cast<F*>(obj))(a...); }) {}
  R operator()(A... a) const { return call_(obj_, a...); }

 private:
  void* obj_;
  R (*call_)(void*, A...);
};

// Owns the only read-write connection. Calls queue up while the thread is busy (mostly
// in fsync); it then takes up to max_batch of them into one transaction, each inside its
// own SAVEPOINT, and commits once. Deferred audit records (AppendAuditDeferred) wait in a
// second, bounded queue that nobody blocks on; each batch appends those queued so far
// (at most kMaxDeferredPerBatch) before its calls, and counts them committed or lost.
class SqliteWriter {
 public:
  // One queued call; lives on the caller's stack until Complete() has run.
  struct Op {
    Op(std::string_view purpose_in, FunctionRef<Status(sqlite3*)> run_in, bool checkpoint)
        : purpose(purpose_in), run(run_in), checkpoint_after(checkpoint) {}
    std::string_view purpose;
    FunctionRef<Status(sqlite3*)> run;
    bool checkpoint_after;
    Status status;  // the call's own outcome; written by the writer thread only

    std::mutex mu;
    std::condition_variable cv;
    bool done = false;    // guarded by mu
    Status final_status;  // guarded by mu; what the caller gets
  };

  // Bounds how long the calls sharing a batch with deferred records wait for them.
  static constexpr size_t kMaxDeferredPerBatch = 1024;

  SqliteWriter(DbPtr db, size_t max_batch, size_t max_deferred,
               std::chrono::milliseconds deferred_delay, const FaultHook* hook)
      : db_(std::move(db)),
        max_batch_(std::max<size_t>(max_batch, 1)),
        max_deferred_(std::max<size_t>(max_deferred, 1)),
        // Half the queue, so that writers rarely find it full while we wait.
        deferred_eager_(std::max<size_t>(std::min(max_deferred_ / 2, kMaxDeferredPerBatch), 1)),
        deferred_delay_(deferred_delay),
        hook_(hook) {
    thread_ = std::thread([this] { Loop(); });
  }
  ~SqliteWriter() { Stop(); }
  SqliteWriter(const SqliteWriter&) = delete;
  SqliteWriter& operator=(const SqliteWriter&) = delete;

  // Runs everything already queued, then joins the thread. Idempotent.
  void Stop() {
    {
      std::lock_guard lock(mu_);
      stopping_ = true;
    }
    cv_.notify_one();
    space_cv_.notify_all();
    if (thread_.joinable()) thread_.join();
  }

  // Blocks until the call ran and the COMMIT that holds it returned (or failed).
  Status Run(std::string_view purpose, FunctionRef<Status(sqlite3*)> run, bool checkpoint_after) {
    Op op(purpose, run, checkpoint_after);
    {
      std::lock_guard lock(mu_);
      if (stopping_) return Status(Code::kUnavailable, "vault is shutting down");
      queue_.push_back(&op);
      queued_.store(queue_.size(), std::memory_order_relaxed);
    }
    cv_.notify_one();
    std::unique_lock lock(op.mu);
    op.cv.wait(lock, [&] { return op.done; });
    return std::move(op.final_status);
  }

  // Queues an audit record for the next batch; blocks only while the queue is full.
  Status Defer(AuditEvent event) {
    bool wake = false;
    {
      std::unique_lock lock(mu_);
      if (!stopping_ && deferred_.size() >= max_deferred_) {
        deferred_waits_.fetch_add(1, std::memory_order_relaxed);
        deferred_blocked_.fetch_add(1, std::memory_order_relaxed);
        space_cv_.wait(lock, [&] { return stopping_ || deferred_.size() < max_deferred_; });
        deferred_blocked_.fetch_sub(1, std::memory_order_relaxed);
      }
      if (stopping_) return Status(Code::kUnavailable, "vault is shutting down");
      deferred_.push_back(std::move(event));
      ++deferred_enqueued_;
      deferred_queued_.store(deferred_.size(), std::memory_order_relaxed);
      // The writer needs waking only to start its wait for more (first record) or to end
      // it early (enough for a batch); a wake-up per read would cost a context switch each.
      wake = deferred_.size() == 1 || deferred_.size() == deferred_eager_;
    }
    if (wake) cv_.notify_one();
    return Status();
  }

  // Waits until every record deferred before this call is committed or lost.
  void FlushDeferred() {
    std::unique_lock lock(mu_);
    const uint64_t target = deferred_enqueued_;
    ++flushers_;
    cv_.notify_one();  // no point in waiting for more records now
    done_cv_.wait(lock, [&] { return deferred_done_ >= target || exited_; });
    --flushers_;
  }

  SqliteVaultStats Stats() const {
    SqliteVaultStats s;
    s.calls = calls_.load(std::memory_order_relaxed);
    s.commits = commits_.load(std::memory_order_relaxed);
    s.largest_batch = largest_batch_.load(std::memory_order_relaxed);
    s.queued = queued_.load(std::memory_order_relaxed);
    s.deferred_queued = deferred_queued_.load(std::memory_order_relaxed);
    s.deferred_committed = deferred_committed_.load(std::memory_order_relaxed);
    s.deferred_lost = deferred_lost_.load(std::memory_order_relaxed);
    s.deferred_waits = deferred_waits_.load(std::memory_order_relaxed);
    s.deferred_blocked = deferred_blocked_.load(std::memory_order_relaxed);
    return s;
  }

 private:
  void Loop() {
    std::vector<Op*> batch;
    std::vector<AuditEvent> deferred;
    std::unique_lock lock(mu_);
    while (true) {
      cv_.wait(lock, [&] { return stopping_ || !queue_.empty() || !deferred_.empty(); });
      if (queue_.empty() && deferred_.empty()) {
        // Stopping, and everything queued has been run.
        exited_ = true;
        done_cv_.notify_all();
        return;
      }
      if (queue_.empty() && deferred_delay_.count() > 0) {
        // Only deferred records: nobody waits for them, so let them gather for a moment
        // (one fsync per delay rather than one per read). Ends early for a call that
        // waits, for a full batch, a flush, or shutdown.
        cv_.wait_for(lock, deferred_delay_, [&] {
          return stopping_ || !queue_.empty() || deferred_.size() >= deferred_eager_ ||
                 flushers_ > 0;
        });
      }
      while (!queue_.empty() && batch.size() < max_batch_) {
        batch.push_back(queue_.front());
        queue_.pop_front();
      }
      while (!deferred_.empty() && deferred.size() < kMaxDeferredPerBatch) {
        deferred.push_back(std::move(deferred_.front()));
        deferred_.pop_front();
      }
      queued_.store(queue_.size(), std::memory_order_relaxed);
      deferred_queued_.store(deferred_.size(), std::memory_order_relaxed);
      lock.unlock();
      if (!deferred.empty()) space_cv_.notify_all();
      if (batch.size() > largest_batch_.load(std::memory_order_relaxed)) {
        largest_batch_.store(batch.size(), std::memory_order_relaxed);
      }
      const size_t taken = deferred.size();
      RunBatch(std::move(batch), deferred);
      batch.clear();
      deferred.clear();
      lock.lock();
      deferred_done_ += taken;
      done_cv_.notify_all();
    }
  }

  void Complete(Op* op, Status status) {
    calls_.fetch_add(1, std::memory_order_relaxed);
    // Notify under the lock: once it sees `done` the caller returns and destroys *op.
    std::lock_guard lock(op->mu);
    op->final_status = std::move(status);
    op->done = true;
    op->cv.notify_one();
  }

  // Runs one call in its own savepoint, so that its failure undoes only its own rows.
  void RunInSavepoint(sqlite3* db, Op& op) {
    op.status = Exec(db, Cat("savepoint ", op.purpose), "SAVEPOINT call");
    if (!op.status.ok()) return;
    op.status = op.run(db);
    if (sqlite3_get_autocommit(db) != 0) return;  // SQLite dropped the transaction; see caller
    if (op.status.ok()) {
      op.status = Exec(db, Cat("release savepoint ", op.purpose), "RELEASE call");
      if (op.status.ok()) return;
    }
    Status undo = Exec(db, Cat("roll back ", op.purpose), "ROLLBACK TO call; RELEASE call");
    // Never commit a call's half-written rows: if they cannot be undone alone, drop the
    // whole transaction (the caller then runs the neighbours again).
    if (!undo.ok()) RollbackIfOpen(db);
  }

  Status AppendDeferred(sqlite3* db, const AuditEvent& e) {
    auto seq = AppendAuditLocked(db, e);
    if (!seq) return seq.error();
    return (*hook_)("deferred_audit");
  }

  // Appends the deferred records inside the open transaction. Fast path: one savepoint for
  // all of them. If one fails, that savepoint is undone and they are appended one savepoint
  // each, so that only a record that fails on its own is given up (erased, counted in
  // *lost). Returns false if SQLite dropped the whole transaction: the record at fault is
  // given up and the caller starts a new transaction for the rest.
  bool RunDeferred(sqlite3* db, std::vector<AuditEvent>& events, uint64_t* lost) {
    if (events.empty()) return true;
    auto give_up = [&](size_t i) {
      events.erase(events.begin() + static_cast<std::ptrdiff_t>(i));
      ++*lost;
    };
    if (Exec(db, "savepoint deferred audit", "SAVEPOINT deferred").ok()) {
      size_t i = 0;
      Status st;
      for (; i < events.size() && st.ok(); ++i) st = AppendDeferred(db, events[i]);
      if (sqlite3_get_autocommit(db) != 0) {
        give_up(i - 1);  // the last one run (events is not empty)
        return false;
      }
      if (st.ok() && Exec(db, "release deferred audit", "RELEASE deferred").ok()) return true;
      if (!Exec(db, "roll back deferred audit", "ROLLBACK TO deferred; RELEASE deferred").ok()) {
        RollbackIfOpen(db);
        *lost += events.size();
        events.clear();
        return false;
      }
    }
    for (size_t i = 0; i < events.size();) {
      Status st = Exec(db, "savepoint deferred audit record", "SAVEPOINT one");
      if (st.ok()) st = AppendDeferred(db, events[i]);
      if (sqlite3_get_autocommit(db) != 0) {
        give_up(i);
        return false;
      }
      if (st.ok()) st = Exec(db, "release deferred audit record", "RELEASE one");
      if (st.ok()) {
        ++i;
        continue;
      }
      if (!Exec(db, "roll back deferred audit record", "ROLLBACK TO one; RELEASE one").ok()) {
        RollbackIfOpen(db);
        give_up(i);
        return false;
      }
      give_up(i);
    }
    return true;
  }

  void RunBatch(std::vector<Op*> pending, std::vector<AuditEvent>& deferred) {
    sqlite3* db = db_.get();
    uint64_t lost = 0;
    auto finish = [&](bool committed) {
      if (committed) {
        deferred_committed_.fetch_add(deferred.size(), std::memory_order_relaxed);
      } else {
        lost += deferred.size();
      }
      deferred_lost_.fetch_add(lost, std::memory_order_relaxed);
    };
    while (!pending.empty() || !deferred.empty()) {
      if (Status s = Exec(db, "begin write batch", "BEGIN IMMEDIATE"); !s.ok()) {
        for (Op* op : pending) Complete(op, s);
        return finish(false);
      }
      // The deferred records first: they were queued before these calls were taken.
      if (!RunDeferred(db, deferred, &lost)) continue;  // transaction gone: again, without it
      size_t next = 0;
      Op* lost_by = nullptr;
      while (next < pending.size() && lost_by == nullptr) {
        Op* op = pending[next++];
        RunInSavepoint(db, *op);
        // Some errors (SQLITE_FULL, IOERR, ...) make SQLite roll back the whole
        // transaction, taking the neighbours' rows with it.
        if (sqlite3_get_autocommit(db) != 0) lost_by = op;
      }
      if (lost_by != nullptr) {
        Complete(lost_by, lost_by->status.ok()
                              ? Status(Code::kIoError,
                                       Cat(lost_by->purpose, ": transaction rolled back by SQLite"))
                              : lost_by->status);
        // Nothing of the others is left, and their answers may rest on rows that are
        // gone: run them again in a new transaction. Each round completes one call.
        std::erase(pending, lost_by);
        continue;
      }
      Status commit = (*hook_)("commit");
      if (commit.ok()) commit = Exec(db, "commit write batch", "COMMIT");
      if (!commit.ok()) {
        RollbackIfOpen(db);
        // Nothing of theirs is durable, and even a refusal may rest on a neighbour's
        // rows that are now gone: every call gets the COMMIT's error.
        for (Op* op : pending) Complete(op, commit);
        return finish(false);
      }
      commits_.fetch_add(1, std::memory_order_relaxed);
      if (std::ranges::any_of(pending, [](const Op* op) { return op->checkpoint_after; })) {
        // Removes deleted bodies' old frames from the WAL file. Best effort: a reader in
        // another process can make it partial (the next delete or the automatic
        // checkpoint finishes the job).
        sqlite3_wal_checkpoint_v2(db, nullptr, SQLITE_CHECKPOINT_TRUNCATE, nullptr, nullptr);
      }
      for (Op* op : pending) Complete(op, op->status);
      return finish(true);
    }
    finish(false);  // every deferred record was given up (nothing left to commit)
  }

  DbPtr db_;  // the writer thread's alone once the thread runs
  const size_t max_batch_;
  const size_t max_deferred_;
  const size_t deferred_eager_;  // this many deferred records end the wait for more
  const std::chrono::milliseconds deferred_delay_;
  const FaultHook* hook_;

  std::mutex mu_;
  std::condition_variable cv_;        // the writer waits for work
  std::condition_variable space_cv_;  // Defer() waits for room in deferred_
  std::condition_variable done_cv_;   // FlushDeferred() waits for deferred_done_
  std::deque<Op*> queue_;             // guarded by mu_
  std::deque<AuditEvent> deferred_;   // guarded by mu_
  uint64_t deferred_enqueued_ = 0;    // guarded by mu_
  uint64_t deferred_done_ = 0;        // guarded by mu_; committed or lost
  bool stopping_ = false;             // guarded by mu_
  bool exited_ = false;               // guarded by mu_
  int flushers_ = 0;                  // guarded by mu_; threads in FlushDeferred()

  std::atomic<uint64_t> calls_{0};
  std::atomic<uint64_t> commits_{0};
  std::atomic<uint64_t> largest_batch_{0};
  std::atomic<uint64_t> queued_{0};
  std::atomic<uint64_t> deferred_queued_{0};
  std::atomic<uint64_t> deferred_committed_{0};
  std::atomic<uint64_t> deferred_lost_{0};
  std::atomic<uint64_t> deferred_waits_{0};
  std::atomic<uint64_t> deferred_blocked_{0};

  std::thread thread_;  // last: starts once everything above exists
};

// Read-only connections. A WAL reader sees the last COMMIT and is never blocked by the
// writer, so reads do not queue behind an fsync; a small pool, because the server's
// worker threads are few and each connection keeps its own page cache (up to 2 MB).
class SqliteReadPool {
 public:
  class Lease {
   public:
    Lease(SqliteReadPool* pool, sqlite3* db) : pool_(pool), db_(db) {}
    ~Lease() { pool_->Release(db_); }
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    sqlite3* get() const { return db_; }

   private:
    SqliteReadPool* pool_;
    sqlite3* db_;
  };

  explicit SqliteReadPool(std::vector<DbPtr> conns) : conns_(std::move(conns)) {
    for (const DbPtr& c : conns_) free_.push_back(c.get());
  }

  Lease Acquire() {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return !free_.empty(); });
    sqlite3* db = free_.back();
    free_.pop_back();
    return Lease(this, db);
  }

 private:
  void Release(sqlite3* db) {
    {
      std::lock_guard lock(mu_);
      free_.push_back(db);
    }
    cv_.notify_one();
  }

  std::vector<DbPtr> conns_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<sqlite3*> free_;  // guarded by mu_
};

}  // namespace internal

namespace {

using internal::DbPtr;

constexpr bool kCheckpointAfter = true;

// Runs f(db) on the writer thread inside the current batch's transaction and returns its
// result once that transaction has committed; the COMMIT's error if it did not.
template <typename F>
auto Write(internal::SqliteWriter& writer, std::string_view purpose, bool checkpoint_after, F&& f)
    -> std::invoke_result_t<F&, sqlite3*> {
  using R = std::invoke_result_t<F&, sqlite3*>;
  std::optional<R> result;
  auto run = [&](sqlite3* db) -> Status {
    result.emplace(f(db));  // may run twice if SQLite drops the transaction; last one counts
    return result->has_value() ? Status() : result->error();
  };
  Status s = writer.Run(purpose, run, checkpoint_after);
  if (!s.ok()) return Error(std::move(s));
  return std::move(*result);
}

template <typename F>
auto Write(internal::SqliteWriter& writer, std::string_view purpose, F&& f) {
  return Write(writer, purpose, false, std::forward<F>(f));
}

// Same configuration on every connection: a tampered file's triggers/views cannot call
// risky functions (trusted_schema=OFF).
Result<DbPtr> OpenConnection(const std::string& path, const SqliteVaultOptions& options,
                             std::string_view pragmas) {
  sqlite3* raw = nullptr;
  int rc =
      sqlite3_open_v2(path.c_str(), &raw, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, nullptr);
  DbPtr db(raw);
  if (rc != SQLITE_OK) {
    return Error(SqliteError(db.get(), rc, Cat("open vault ", path)));
  }
  sqlite3_extended_result_codes(db.get(), 1);
  sqlite3_busy_timeout(db.get(), options.busy_timeout_ms);
  TPMMA_RETURN_IF_ERROR(
      Exec(db.get(), "configure connection",
           Cat("PRAGMA trusted_schema = OFF; PRAGMA foreign_keys = ON; ", pragmas)));
  return db;
}

}  // namespace

// ---------------------------------------------------------------------------------------

int SqliteVault::SchemaVersion() {
  return kSchemaVersion;
}

SqliteVault::SqliteVault(SqliteVaultOptions options,
                         std::unique_ptr<internal::SqliteReadPool> readers)
    : options_(std::move(options)), readers_(std::move(readers)) {}

SqliteVault::~SqliteVault() {
  // Drain first; then close the readers before the writer, so that the read-write
  // connection is the last one and its close checkpoints the WAL into the file.
  if (writer_) writer_->Stop();
  readers_.reset();
  writer_.reset();
}

SqliteVaultStats SqliteVault::GetStats() const {
  return writer_->Stats();
}

Result<std::unique_ptr<SqliteVault>> SqliteVault::Open(const std::string& path,
                                                       SqliteVaultOptions options) {
  // Create the file ourselves so that it is 0600 whatever the umask; SQLite gives the
  // -wal and -shm files the database file's mode.
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd >= 0) {
    ::fchmod(fd, 0600);
    ::close(fd);
  } else if (errno != EEXIST) {
    return Error(Code::kIoError, Cat("cannot create vault ", path, ": ", std::strerror(errno)));
  }
  TPMMA_ASSIGN_OR_RETURN(DbPtr db, OpenConnection(path, options, "PRAGMA secure_delete = ON;"));
  TPMMA_RETURN_IF_ERROR(CheckIdentity(db.get(), path));
  {
    TPMMA_ASSIGN_OR_RETURN(
        Stmt s, Stmt::Prepare(db.get(), "set WAL journal mode", "PRAGMA journal_mode = WAL"));
    TPMMA_ASSIGN_OR_RETURN(bool row, s.Step());
    if (!row || s.Text(0) != "wal") {
      return Error(Code::kIoError, Cat("vault ", path, ": cannot enable WAL mode"));
    }
  }
  // FULL: a commit is on disk (WAL fsynced) before the call returns; DESIGN 7.
  TPMMA_RETURN_IF_ERROR(Exec(db.get(), "set synchronous mode", "PRAGMA synchronous = FULL"));
  TPMMA_RETURN_IF_ERROR(Migrate(db.get(), path));
  // From here on the schema is fixed: statements can be kept.
  AttachStmtCache(db.get());

  // Opened after the migration, so they never hold an outdated schema. query_only: a bug
  // that wrote through a reader would bypass the writer's transaction and audit chain.
  std::vector<DbPtr> readers;
  for (size_t i = 0; i < std::max<size_t>(options.read_connections, 1); ++i) {
    TPMMA_ASSIGN_OR_RETURN(DbPtr r, OpenConnection(path, options, "PRAGMA query_only = ON;"));
    AttachStmtCache(r.get());
    readers.push_back(std::move(r));
  }
  size_t max_batch = options.group_commit ? options.max_batch : 1;
  std::unique_ptr<SqliteVault> vault(new SqliteVault(
      std::move(options), std::make_unique<internal::SqliteReadPool>(std::move(readers))));
  vault->writer_ = std::make_unique<internal::SqliteWriter>(
      std::move(db), max_batch, vault->options_.max_deferred_audit,
      std::chrono::milliseconds(vault->options_.deferred_audit_delay_ms),
      &vault->options_.fault_hook);
  return vault;
}

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
  if (a.session.platform_id != a.platform.id) {
    return Error(Code::kInvalidArgument, "session and platform name different platforms");
  }
  if (a.proof_hash.size() != kHashSize) {
    return Error(Code::kInvalidArgument, "proof hash must be 32 bytes (SHA-256)");
  }
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
    TPMMA_RETURN_IF_ERROR(UpsertPlatformLocked(db, a.platform));
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

// --- Packages

Result<PutOutcome> SqliteVault::PutPackage(const Package& package, const AuditEvent& audit) {
  const PackageDescriptor& d = package.descriptor;
  if (d.package_id.empty()) return Error(Code::kInvalidArgument, "package id is empty");
  TPMMA_ASSIGN_OR_RETURN(Bytes digest, Sha256(package.body));
  return Write(*writer_, "put package", [&](sqlite3* db) -> Result<PutOutcome> {
    TPMMA_ASSIGN_OR_RETURN(Stmt existing,
                           Stmt::Prepare(db, "check existing package",
                                         "SELECT sha256 FROM packages WHERE package_id = ?"));
    existing.Bind(d.package_id);
    TPMMA_ASSIGN_OR_RETURN(bool found, existing.Step());
    if (found) {
      if (existing.Blob(0) != digest) {
        return Error(Code::kConflict,
                     Cat("package ", d.package_id, " is already stored with different content"));
      }
      TPMMA_RETURN_IF_ERROR(AppendAuditLocked(db, audit));
      return PutOutcome::kAlreadyStored;
    }
    TPMMA_ASSIGN_OR_RETURN(bool platform_exists, PlatformExists(db, d.source_platform_id));
    if (!platform_exists) {
      return Error(Code::kNotFound, Cat("source platform ", d.source_platform_id, " of package ",
                                        d.package_id, " not found"));
    }
    TPMMA_ASSIGN_OR_RETURN(
        Stmt ins, Stmt::Prepare(db, "insert package",
                                "INSERT INTO packages (package_id, source_platform_id, "
                                "format_version, created_at, uploaded_at, sha256, size, custody, "
                                "signing_key) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"));
    ins.Bind(d.package_id, d.source_platform_id, d.format_version, d.created_at, d.uploaded_at,
             digest, package.body.size(), ToString(d.custody), d.signing_key);
    TPMMA_RETURN_IF_ERROR(ins.Run());
    int64_t pk = sqlite3_last_insert_rowid(db);
    TPMMA_RETURN_IF_ERROR(Fault(options_, "package_row"));
    TPMMA_ASSIGN_OR_RETURN(Stmt body, Stmt::Prepare(db, "insert package body",
                                                    "INSERT INTO package_bodies (package_pk, body) "
                                                    "VALUES (?, ?)"));
    body.Bind(pk, package.body);
    TPMMA_RETURN_IF_ERROR(body.Run());
    TPMMA_RETURN_IF_ERROR(Fault(options_, "package_body"));
    TPMMA_ASSIGN_OR_RETURN(
        Stmt key, Stmt::Prepare(db, "insert package key",
                                "INSERT INTO package_keys (package_pk, ordinal, key_id, label, "
                                "usage) VALUES (?, ?, ?, ?, ?)"));
    for (size_t i = 0; i < d.keys.size(); ++i) {
      key.Reset();
      key.Bind(pk, i, d.keys[i].key_id, d.keys[i].label, d.keys[i].usage);
      TPMMA_RETURN_IF_ERROR(key.Run());
      TPMMA_RETURN_IF_ERROR(Fault(options_, "package_key"));
    }
    TPMMA_RETURN_IF_ERROR(AppendAuditLocked(db, audit));
    TPMMA_RETURN_IF_ERROR(Fault(options_, "before_commit"));
    return PutOutcome::kStored;
  });
}

Result<Package> SqliteVault::GetPackage(std::string_view package_id) {
  auto conn = readers_->Acquire();
  sqlite3* db = conn.get();
  return InTxn(db, false, "get package", [&]() -> Result<Package> {
    TPMMA_ASSIGN_OR_RETURN(auto dpk, GetDescriptorLocked(db, package_id));
    TPMMA_ASSIGN_OR_RETURN(Stmt s,
                           Stmt::Prepare(db, "read package body",
                                         "SELECT body FROM package_bodies WHERE package_pk = ?"));
    s.Bind(dpk.second);
    TPMMA_ASSIGN_OR_RETURN(bool found, s.Step());
    if (!found) {
      return Error(Code::kCorruption, Cat("package ", package_id, " has no body"));
    }
    return Package{std::move(dpk.first), s.Blob(0)};
  });
}

Result<PackageDescriptor> SqliteVault::GetPackageDescriptor(std::string_view package_id) {
  auto conn = readers_->Acquire();
  sqlite3* db = conn.get();
  return InTxn(db, false, "get package descriptor", [&]() -> Result<PackageDescriptor> {
    TPMMA_ASSIGN_OR_RETURN(auto dpk, GetDescriptorLocked(db, package_id));
    return std::move(dpk.first);
  });
}

Status SqliteVault::DeletePackage(std::string_view package_id, const AuditEvent& audit) {
  // The body's original frames may still sit in the WAL: the writer checkpoints and
  // truncates it after the COMMIT, before this returns, so the bytes are gone from the
  // files too.
  return ToStatus(
      Write(*writer_, "delete package", kCheckpointAfter, [&](sqlite3* db) -> Result<void> {
        // Keys and body go by ON DELETE CASCADE; secure_delete zeroes the freed space.
        TPMMA_ASSIGN_OR_RETURN(Stmt s, Stmt::Prepare(db, "delete package",
                                                     "DELETE FROM packages WHERE package_id = ?"));
        s.Bind(package_id);
        TPMMA_RETURN_IF_ERROR(s.Run());
        if (sqlite3_changes(db) == 0) {
          return Error(Code::kNotFound, Cat("package ", package_id, " not found"));
        }
        TPMMA_RETURN_IF_ERROR(AppendAuditLocked(db, audit));
        return {};
      }));
}

Result<PackagePage> SqliteVault::QueryPackages(const PackageQuery& q) {
  TPMMA_ASSIGN_OR_RETURN(int64_t after_pk, ParseIntPageToken('p', q.page_token));
  size_t n = ClampPageSize(q.page_size);
  // Column 9: the key count, from package_keys' primary key alone (no key row is decoded).
  std::string sql = Cat("SELECT ", kPackageColumns,
                        ", (SELECT count(*) FROM package_keys k WHERE k.package_pk = p.pk) "
                        "FROM packages p WHERE p.pk > ?");
  std::vector<std::variant<int64_t, std::string>> args{after_pk};
  if (q.source_platform_id) {
    sql += " AND p.source_platform_id = ?";
    args.emplace_back(*q.source_platform_id);
  }
  if (q.created_after) {
    sql += " AND p.created_at > ?";
    args.emplace_back(*q.created_after);
  }
  if (q.created_before) {
    sql += " AND p.created_at < ?";
    args.emplace_back(*q.created_before);
  }
  if (q.label_contains) {
    // instr, not LIKE: a label filter must not be able to smuggle in wildcards.
    sql +=
        " AND EXISTS (SELECT 1 FROM package_keys k WHERE k.package_pk = p.pk "
        "AND instr(k.label, ?) > 0)";
    args.emplace_back(*q.label_contains);
  }
  if (q.visible_to_platform) {
    sql +=
        " AND (p.source_platform_id = ? OR EXISTS (SELECT 1 FROM approvals a "
        "WHERE a.new_platform_id = ? AND a.old_platform_id = p.source_platform_id "
        "AND a.state = 'active' AND a.expires_at > ? AND (a.all_packages = 1 OR EXISTS "
        "(SELECT 1 FROM approval_packages ap WHERE ap.approval_id = a.id "
        "AND ap.package_id = p.package_id))))";
    args.emplace_back(*q.visible_to_platform);
    args.emplace_back(*q.visible_to_platform);
    args.emplace_back(q.now);
  }
  sql += " ORDER BY p.pk LIMIT ?";
  args.emplace_back(static_cast<int64_t>(n + 1));

  auto conn = readers_->Acquire();
  sqlite3* db = conn.get();
  return InTxn(db, false, "query packages", [&]() -> Result<PackagePage> {
    TPMMA_ASSIGN_OR_RETURN(Stmt s, Stmt::Prepare(db, "query packages", sql));
    for (size_t i = 0; i < args.size(); ++i) s.BindOne(static_cast<int>(i + 1), args[i]);
    TPMMA_ASSIGN_OR_RETURN(Stmt keys, PrepareKeysStmt(db));
    PackagePage page;
    int64_t last_pk = 0;
    while (true) {
      TPMMA_ASSIGN_OR_RETURN(bool row, s.Step());
      if (!row) break;
      if (page.packages.size() == n) {
        page.next_page_token = MakePageToken('p', std::to_string(last_pk));
        break;
      }
      TPMMA_ASSIGN_OR_RETURN(PackageDescriptor d, ReadDescriptor(s));
      last_pk = s.Int(0);
      d.key_count = s.Int(10);
      if (q.with_keys) {
        TPMMA_ASSIGN_OR_RETURN(d.keys, ReadKeys(keys, last_pk));
      }
      page.packages.push_back(std::move(d));
    }
    return page;
  });
}

// --- Approvals

Result<Approval> SqliteVault::CreateApproval(const ApprovalRequest& r, const AuditEvent& audit) {
  if (r.old_platform_id.empty() || r.new_platform_id.empty()) {
    return Error(Code::kInvalidArgument, "approval needs an old and a new platform");
  }
  if (!r.all_packages && r.package_ids.empty()) {
    return Error(Code::kInvalidArgument, "approval lists no packages");
  }
  if (r.expires_at <= r.created_at) {
    return Error(Code::kInvalidArgument, "approval expires before it is created");
  }
  if (r.created_by.empty()) return Error(Code::kInvalidArgument, "approval has no operator");
  return Write(*writer_, "create approval", [&](sqlite3* db) -> Result<Approval> {
    if (r.old_platform_id == r.new_platform_id) {
      // A platform restores its own packages without an approval, except that an escrowed
      // inner key (DESIGN 4.4) is released only under one: after a TPM clear the platform
      // has no copy of its own. So a same-platform approval must cover an escrow package.
      TPMMA_ASSIGN_OR_RETURN(int64_t escrowed, [&]() -> Result<int64_t> {
        TPMMA_ASSIGN_OR_RETURN(
            Stmt c, Stmt::Prepare(db, "count escrow packages",
                                  "SELECT count(*) FROM packages WHERE source_platform_id = ? "
                                  "AND custody = 'escrow'"));
        c.Bind(r.old_platform_id);
        TPMMA_RETURN_IF_ERROR(c.Step());
        int64_t n = c.Int(0);
        if (r.all_packages || n == 0) return n;
        n = 0;
        TPMMA_ASSIGN_OR_RETURN(Stmt one,
                               Stmt::Prepare(db, "escrow package",
                                             "SELECT count(*) FROM packages WHERE package_id = ? "
                                             "AND source_platform_id = ? AND custody = 'escrow'"));
        for (const std::string& pkg : r.package_ids) {
          one.Reset();
          one.Bind(pkg, r.old_platform_id);
          TPMMA_RETURN_IF_ERROR(one.Step());
          n += one.Int(0);
        }
        return n;
      }());
      if (escrowed == 0) {
        return Error(Code::kInvalidArgument,
                     "old and new platform are the same: a platform restores its own packages "
                     "without an approval (a same-platform approval only releases escrowed inner "
                     "keys, and none of the selected packages is in escrow custody)");
      }
    }
    TPMMA_ASSIGN_OR_RETURN(
        Stmt s, Stmt::Prepare(db, "insert approval",
                              "INSERT INTO approvals (old_platform_id, new_platform_id, "
                              "all_packages, reason, created_by, created_at, expires_at, state) "
                              "VALUES (?, ?, ?, ?, ?, ?, ?, ?)"));
    s.Bind(r.old_platform_id, r.new_platform_id, r.all_packages ? 1 : 0, r.reason, r.created_by,
           r.created_at, r.expires_at,
           ToString(r.require_confirmation ? ApprovalState::kPending : ApprovalState::kActive));
    TPMMA_RETURN_IF_ERROR(s.Run());
    int64_t id = sqlite3_last_insert_rowid(db);
    TPMMA_RETURN_IF_ERROR(Fault(options_, "approval_row"));
    if (!r.all_packages) {
      TPMMA_ASSIGN_OR_RETURN(Stmt p, Stmt::Prepare(db, "insert approval package",
                                                   "INSERT OR IGNORE INTO approval_packages "
                                                   "(approval_id, package_id) VALUES (?, ?)"));
      for (const std::string& pkg : r.package_ids) {
        p.Reset();
        p.Bind(id, pkg);
        TPMMA_RETURN_IF_ERROR(p.Run());
        TPMMA_RETURN_IF_ERROR(Fault(options_, "approval_package"));
      }
    }
    AuditEvent e = audit;
    if (e.object.empty()) e.object = std::to_string(id);
    TPMMA_RETURN_IF_ERROR(AppendAuditLocked(db, e));
    return GetApprovalLocked(db, id);
  });
}

Result<Approval> SqliteVault::ConfirmApproval(int64_t approval_id, std::string_view operator_name,
                                              int64_t now, const AuditEvent& audit) {
  return Write(*writer_, "confirm approval", [&](sqlite3* db) -> Result<Approval> {
    TPMMA_ASSIGN_OR_RETURN(Approval a, GetApprovalLocked(db, approval_id));
    if (a.state != ApprovalState::kPending) {
      return Error(Code::kConflict,
                   Cat("approval ", approval_id, " is ", ToString(a.state), ", not pending"));
    }
    if (a.created_by == operator_name) {
      return Error(Code::kPermissionDenied,
                   Cat("approval ", approval_id, " must be confirmed by a second operator"));
    }
    if (now >= a.expires_at) {
      return Error(Code::kExpired, Cat("approval ", approval_id, " expired"));
    }
    TPMMA_RETURN_IF_ERROR(
        SetApprovalState(db, approval_id, ApprovalState::kActive, operator_name, std::nullopt));
    TPMMA_RETURN_IF_ERROR(AppendAuditLocked(db, audit));
    return GetApprovalLocked(db, approval_id);
  });
}

Status SqliteVault::RevokeApproval(int64_t approval_id, const AuditEvent& audit) {
  return ToStatus(Write(*writer_, "revoke approval", [&](sqlite3* db) -> Result<void> {
    TPMMA_ASSIGN_OR_RETURN(Approval a, GetApprovalLocked(db, approval_id));
    if (a.state != ApprovalState::kPending && a.state != ApprovalState::kActive) {
      return Error(Code::kConflict,
                   Cat("approval ", approval_id, " is ", ToString(a.state), ", cannot revoke"));
    }
    TPMMA_RETURN_IF_ERROR(
        SetApprovalState(db, approval_id, ApprovalState::kRevoked, std::nullopt, std::nullopt));
    TPMMA_RETURN_IF_ERROR(AppendAuditLocked(db, audit));
    return {};
  }));
}

Result<Approval> SqliteVault::GetApproval(int64_t approval_id) {
  auto conn = readers_->Acquire();
  sqlite3* db = conn.get();
  return InTxn(db, false, "get approval",
               [&]() -> Result<Approval> { return GetApprovalLocked(db, approval_id); });
}

Result<std::vector<Approval>> SqliteVault::ListApprovals(std::string_view new_platform_id) {
  auto conn = readers_->Acquire();
  sqlite3* db = conn.get();
  return InTxn(db, false, "list approvals", [&]() -> Result<std::vector<Approval>> {
    TPMMA_ASSIGN_OR_RETURN(
        Stmt s, Stmt::Prepare(db, "list approvals",
                              "SELECT id FROM approvals WHERE ? = '' OR new_platform_id = ? "
                              "ORDER BY id DESC"));
    s.Bind(new_platform_id, new_platform_id);
    std::vector<Approval> out;
    while (true) {
      TPMMA_ASSIGN_OR_RETURN(bool row, s.Step());
      if (!row) break;
      TPMMA_ASSIGN_OR_RETURN(Approval a, GetApprovalLocked(db, s.Int(0)));
      out.push_back(std::move(a));
    }
    return out;
  });
}

Result<Approval> SqliteVault::FindActiveApproval(std::string_view new_platform_id,
                                                 std::string_view package_id, int64_t now) {
  auto conn = readers_->Acquire();
  sqlite3* db = conn.get();
  return InTxn(db, false, "find active approval", [&]() -> Result<Approval> {
    TPMMA_ASSIGN_OR_RETURN(
        Stmt s, Stmt::Prepare(db, "find active approval",
                              "SELECT a.id FROM approvals a JOIN packages p "
                              "ON p.package_id = ? AND p.source_platform_id = a.old_platform_id "
                              "WHERE a.new_platform_id = ? AND a.state = 'active' "
                              "AND a.expires_at > ? AND (a.all_packages = 1 OR EXISTS "
                              "(SELECT 1 FROM approval_packages ap WHERE ap.approval_id = a.id "
                              "AND ap.package_id = p.package_id)) ORDER BY a.id LIMIT 1"));
    s.Bind(package_id, new_platform_id, now);
    TPMMA_ASSIGN_OR_RETURN(bool found, s.Step());
    if (!found) {
      return Error(Code::kNotFound, Cat("no active approval for platform ", new_platform_id,
                                        " and package ", package_id));
    }
    return GetApprovalLocked(db, s.Int(0));
  });
}

Status SqliteVault::MarkApprovalUsed(int64_t approval_id, int64_t now, const AuditEvent& audit) {
  return ToStatus(Write(*writer_, "mark approval used", [&](sqlite3* db) -> Result<void> {
    TPMMA_ASSIGN_OR_RETURN(Approval a, GetApprovalLocked(db, approval_id));
    if (a.state != ApprovalState::kActive) {
      return Error(Code::kConflict,
                   Cat("approval ", approval_id, " is ", ToString(a.state), ", not active"));
    }
    if (now >= a.expires_at) {
      return Error(Code::kExpired, Cat("approval ", approval_id, " expired"));
    }
    TPMMA_RETURN_IF_ERROR(
        SetApprovalState(db, approval_id, ApprovalState::kUsed, std::nullopt, now));
    TPMMA_RETURN_IF_ERROR(AppendAuditLocked(db, audit));
    return {};
  }));
}

// --- Operators

Status SqliteVault::AddOperator(const Operator& op, const AuditEvent& audit) {
  if (op.name.empty() || op.cert_fingerprint.empty()) {
    return Status(Code::kInvalidArgument, "operator needs a name and a certificate fingerprint");
  }
  return ToStatus(Write(*writer_, "add operator", [&](sqlite3* db) -> Result<void> {
    TPMMA_ASSIGN_OR_RETURN(
        Stmt c, Stmt::Prepare(db, "check operator exists",
                              "SELECT 1 FROM operators WHERE name = ? OR cert_fingerprint = ?"));
    c.Bind(op.name, op.cert_fingerprint);
    TPMMA_ASSIGN_OR_RETURN(bool exists, c.Step());
    if (exists) {
      return Error(Code::kAlreadyExists,
                   Cat("operator ", op.name, " or its certificate is already registered"));
    }
    TPMMA_ASSIGN_OR_RETURN(
        Stmt s, Stmt::Prepare(db, "insert operator",
                              "INSERT INTO operators (name, role, cert_fingerprint, created_at, "
                              "revoked_at) VALUES (?, ?, ?, ?, ?)"));
    s.Bind(op.name, ToString(op.role), op.cert_fingerprint, op.created_at, op.revoked_at);
    TPMMA_RETURN_IF_ERROR(s.Run());
    TPMMA_RETURN_IF_ERROR(AppendAuditLocked(db, audit));
    return {};
  }));
}

Result<Operator> SqliteVault::GetOperator(std::string_view name) {
  auto conn = readers_->Acquire();
  return GetOperatorWhere(conn.get(), "name", name);
}

Result<Operator> SqliteVault::GetOperatorByFingerprint(std::string_view fingerprint) {
  auto conn = readers_->Acquire();
  return GetOperatorWhere(conn.get(), "cert_fingerprint", fingerprint);
}

Result<std::vector<Operator>> SqliteVault::ListOperators() {
  auto conn = readers_->Acquire();
  TPMMA_ASSIGN_OR_RETURN(
      Stmt s, Stmt::Prepare(conn.get(), "list operators",
                            Cat("SELECT ", kOperatorColumns, " FROM operators ORDER BY name")));
  std::vector<Operator> out;
  while (true) {
    TPMMA_ASSIGN_OR_RETURN(bool row, s.Step());
    if (!row) break;
    TPMMA_ASSIGN_OR_RETURN(Operator op, ReadOperator(s));
    out.push_back(std::move(op));
  }
  return out;
}

Status SqliteVault::RevokeOperator(std::string_view name, int64_t now, const AuditEvent& audit) {
  return ToStatus(Write(*writer_, "revoke operator", [&](sqlite3* db) -> Result<void> {
    TPMMA_ASSIGN_OR_RETURN(Operator op, GetOperatorWhere(db, "name", name));
    if (op.revoked_at) {
      return Error(Code::kConflict, Cat("operator ", name, " is already revoked"));
    }
    TPMMA_ASSIGN_OR_RETURN(Stmt s, Stmt::Prepare(db, "revoke operator",
                                                 "UPDATE operators SET revoked_at = ? "
                                                 "WHERE name = ?"));
    s.Bind(now, name);
    TPMMA_RETURN_IF_ERROR(s.Run());
    TPMMA_RETURN_IF_ERROR(AppendAuditLocked(db, audit));
    return {};
  }));
}

// --- Audit

Result<int64_t> SqliteVault::AppendAudit(const AuditEvent& event) {
  return Write(*writer_, "append audit",
               [&](sqlite3* db) -> Result<int64_t> { return AppendAuditLocked(db, event); });
}

Status SqliteVault::AppendAuditDeferred(const AuditEvent& event) {
  TPMMA_RETURN_IF_ERROR(CheckAuditEvent(event));
  return writer_->Defer(event);
}

Status SqliteVault::FlushDeferredAudit() {
  writer_->FlushDeferred();
  return Status();
}

Result<AuditPage> SqliteVault::ListAudit(const AuditFilter& f) {
  TPMMA_ASSIGN_OR_RETURN(int64_t after_seq, ParseIntPageToken('a', f.page_token));
  size_t n = ClampPageSize(f.page_size);
  std::string sql =
      "SELECT seq, time, actor, action, object, outcome, detail, prev_hash, hash "
      "FROM audit_log WHERE seq > ?";
  std::vector<std::variant<int64_t, std::string>> args{after_seq};
  if (f.actor) {
    sql += " AND actor = ?";
    args.emplace_back(*f.actor);
  }
  if (f.action) {
    sql += " AND action = ?";
    args.emplace_back(*f.action);
  }
  if (f.object) {
    sql += " AND object = ?";
    args.emplace_back(*f.object);
  }
  if (f.time_from) {
    sql += " AND time >= ?";
    args.emplace_back(*f.time_from);
  }
  if (f.time_to) {
    sql += " AND time < ?";
    args.emplace_back(*f.time_to);
  }
  sql += " ORDER BY seq LIMIT ?";
  args.emplace_back(static_cast<int64_t>(n + 1));
  auto conn = readers_->Acquire();
  TPMMA_ASSIGN_OR_RETURN(Stmt s, Stmt::Prepare(conn.get(), "list audit log", sql));
  for (size_t i = 0; i < args.size(); ++i) s.BindOne(static_cast<int>(i + 1), args[i]);
  AuditPage page;
  while (true) {
    TPMMA_ASSIGN_OR_RETURN(bool row, s.Step());
    if (!row) break;
    if (page.records.size() == n) {
      page.next_page_token = MakePageToken('a', std::to_string(page.records.back().seq));
      break;
    }
    AuditRecord r;
    r.seq = s.Int(0);
    r.event = AuditEvent{s.Int(1), s.Text(2), s.Text(3), s.Text(4), s.Text(5), s.Text(6)};
    r.prev_hash = s.Blob(7);
    r.hash = s.Blob(8);
    page.records.push_back(std::move(r));
  }
  return page;
}

Status SqliteVault::VerifyAuditChain() {
  auto conn = readers_->Acquire();
  sqlite3* db = conn.get();
  return ToStatus(InTxn(db, false, "verify audit chain", [&]() -> Result<void> {
    TPMMA_RETURN_IF_ERROR(VerifyAuditChainLocked(db));
    return {};
  }));
}

Status SqliteVault::IntegrityCheck() {
  auto conn = readers_->Acquire();
  sqlite3* db = conn.get();
  return ToStatus(InTxn(db, false, "integrity check", [&]() -> Result<void> {
    {
      TPMMA_ASSIGN_OR_RETURN(Stmt s,
                             Stmt::Prepare(db, "integrity check", "PRAGMA integrity_check(20)"));
      std::string findings;
      while (true) {
        TPMMA_ASSIGN_OR_RETURN(bool row, s.Step());
        if (!row) break;
        std::string line = s.Text(0);
        if (line != "ok") findings += (findings.empty() ? "" : "; ") + line;
      }
      if (!findings.empty()) {
        return Error(Code::kCorruption, "SQLite integrity check: " + findings);
      }
    }
    {
      TPMMA_ASSIGN_OR_RETURN(Stmt s,
                             Stmt::Prepare(db, "foreign key check", "PRAGMA foreign_key_check"));
      TPMMA_ASSIGN_OR_RETURN(bool row, s.Step());
      if (row) {
        return Error(Code::kCorruption, Cat("foreign key violation: table ", s.Text(0), " rowid ",
                                            s.Int(1), " references ", s.Text(2)));
      }
    }
    {
      TPMMA_ASSIGN_OR_RETURN(
          Stmt s, Stmt::Prepare(db, "check audit triggers",
                                "SELECT count(*) FROM sqlite_schema WHERE type = 'trigger' AND "
                                "name IN ('audit_log_no_update', 'audit_log_no_delete')"));
      TPMMA_RETURN_IF_ERROR(s.Step());
      if (s.Int(0) != 2) {
        return Error(Code::kCorruption, "audit_log append-only triggers are missing");
      }
    }
    TPMMA_RETURN_IF_ERROR(VerifyAuditChainLocked(db));
    return {};
  }));
}

}  // namespace tpmma::storage
