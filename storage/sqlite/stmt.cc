// SPDX-License-Identifier: GPL-2.0-or-later
#include "storage/sqlite/stmt.h"

#include <cstring>
#include <functional>
#include <mutex>
#include <shared_mutex>
#include <unordered_map>

namespace tpmma::storage::sqlite {

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

struct StmtCacheEntry {
  sqlite3_stmt* stmt = nullptr;
  bool in_use = false;
};

namespace {

// Prepared statements, kept per connection and keyed by their text. Parsing SQL was most of
// what a small write or read cost (profile of the writer under read-audit load: SQLite's
// parser and its mallocs were ~45% of the thread), so Stmt::Prepare borrows a statement
// from its connection's cache and gives it back, reset, when done. A connection is used by
// one thread at a time (the writer thread, or the holder of a read lease), so a cache needs
// no lock; the registry from connection to cache is read-mostly (shared lock).
class StmtCache {
 public:
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
  StmtCacheEntry* Take(std::string_view sql) {
    auto it = map_.find(sql);
    if (it == map_.end() || it->second.in_use) return nullptr;
    it->second.in_use = true;
    return &it->second;
  }
  // Keeps a freshly prepared statement (in use) if `sql` is new and there is room.
  StmtCacheEntry* Adopt(std::string_view sql, sqlite3_stmt* stmt) {
    if (map_.size() >= kMaxEntries || map_.contains(sql)) return nullptr;
    StmtCacheEntry& e = map_[std::string(sql)];  // node-based: the address stays valid
    e.stmt = stmt;
    e.in_use = true;
    return &e;
  }

 private:
  struct Hash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>()(s); }
  };
  std::unordered_map<std::string, StmtCacheEntry, Hash, std::equal_to<>> map_;
};

std::shared_mutex g_caches_mu;
std::unordered_map<sqlite3*, std::unique_ptr<StmtCache>> g_caches;  // guarded by g_caches_mu

void DropStmtCache(sqlite3* db) {
  std::unique_ptr<StmtCache> cache;  // destroyed (statements finalized) outside the lock
  std::unique_lock lock(g_caches_mu);
  auto it = g_caches.find(db);
  if (it == g_caches.end()) return;
  cache = std::move(it->second);
  g_caches.erase(it);
  lock.unlock();
}

StmtCache* CacheOf(sqlite3* db) {
  std::shared_lock lock(g_caches_mu);
  auto it = g_caches.find(db);
  return it == g_caches.end() ? nullptr : it->second.get();
}

// Non-null even for empty values: SQLite binds a null pointer as NULL, not as ''.
const char kEmpty[1] = {0};

}  // namespace

void AttachStmtCache(sqlite3* db) {
  std::unique_lock lock(g_caches_mu);
  g_caches[db] = std::make_unique<StmtCache>();
}

void DbCloser::operator()(sqlite3* db) const {
  DropStmtCache(db);
  sqlite3_close_v2(db);
}

void StmtRelease::operator()(sqlite3_stmt* s) const {
  if (entry == nullptr) {
    sqlite3_finalize(s);
    return;
  }
  sqlite3_reset(s);
  sqlite3_clear_bindings(s);
  entry->in_use = false;
}

Result<Stmt> Stmt::Prepare(sqlite3* db, std::string_view purpose, std::string_view sql) {
  StmtCache* cache = CacheOf(db);
  if (cache != nullptr) {
    if (StmtCacheEntry* e = cache->Take(sql)) {
      return Stmt(db, purpose, StmtPtr(e->stmt, StmtRelease{e}));
    }
  }
  sqlite3_stmt* raw = nullptr;
  int rc = sqlite3_prepare_v3(db, sql.data(), static_cast<int>(sql.size()),
                              cache != nullptr ? SQLITE_PREPARE_PERSISTENT : 0, &raw, nullptr);
  StmtPtr stmt(raw);
  if (rc != SQLITE_OK) return Error(SqliteError(db, rc, Cat("prepare ", purpose)));
  if (cache != nullptr) {
    if (StmtCacheEntry* e = cache->Adopt(sql, raw)) {
      stmt.release();
      stmt = StmtPtr(raw, StmtRelease{e});
    }
  }
  return Stmt(db, purpose, std::move(stmt));
}

void Stmt::BindOne(int i, std::string_view v) {
  Check(sqlite3_bind_text64(stmt_.get(), i, v.empty() ? kEmpty : v.data(), v.size(),
                            SQLITE_TRANSIENT, SQLITE_UTF8));
}

void Stmt::BindOne(int i, ByteView v) {
  Check(sqlite3_bind_blob64(stmt_.get(), i, v.empty() ? static_cast<const void*>(kEmpty) : v.data(),
                            v.size(), SQLITE_TRANSIENT));
}

Result<bool> Stmt::Step() {
  if (!bind_error_.ok()) return Error(bind_error_);
  int rc = sqlite3_step(stmt_.get());
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  return Error(SqliteError(db_, rc, purpose_));
}

Status Stmt::Run() {
  auto r = Step();
  if (!r) return r.error();
  return Status();
}

void Stmt::Reset() {
  sqlite3_reset(stmt_.get());
  sqlite3_clear_bindings(stmt_.get());
}

std::string Stmt::Text(int c) const {
  const auto* p = reinterpret_cast<const char*>(sqlite3_column_text(stmt_.get(), c));
  int n = sqlite3_column_bytes(stmt_.get(), c);
  return p == nullptr ? std::string() : std::string(p, static_cast<size_t>(n));
}

Bytes Stmt::Blob(int c) const {
  const auto* p = static_cast<const uint8_t*>(sqlite3_column_blob(stmt_.get(), c));
  int n = sqlite3_column_bytes(stmt_.get(), c);
  return p == nullptr ? Bytes() : Bytes(p, p + n);
}

Status Exec(sqlite3* db, std::string_view purpose, const std::string& sql) {
  if (sql.find(';') == std::string::npos) {
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

}  // namespace tpmma::storage::sqlite
