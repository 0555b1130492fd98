// SPDX-License-Identifier: GPL-2.0-or-later
// What the SQLite backend's test files share: fixtures' data, raw access to the file, the
// SqliteVaultTest fixture and a scripted FaultHook that holds or fails the writer.
#pragma once

#include <signal.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <future>
#include <iostream>
#include <latch>
#include <mutex>
#include <thread>
#include <vector>

#include "storage/sqlite_vault.h"
#include "tests/storage/vault_test.h"
#include "tests/support/testutil.h"

namespace tpmma::storage::testing {

inline constexpr int64_t kNow = 1'800'000'000;

using ::tpmma::testing::Sha256Of;

inline std::string DbPath(const std::string& dir) {
  return dir + "/vault.db";
}

inline AuditEvent Audit(std::string action, std::string object = "obj") {
  return AuditEvent{kNow, "system", std::move(action), std::move(object), "ok", "test"};
}

inline Platform MakePlatform(const std::string& id) {
  Platform p;
  p.id = id;
  p.ek_public = ToBytes("ek");
  p.ek_certificate = ToBytes("cert");
  p.ak_public = ToBytes("ak");
  p.ak_name = ToBytes("akname");
  p.created_at = kNow;
  p.last_seen_at = kNow;
  return p;
}

inline Package MakePackage(const std::string& id, const std::string& platform, int nkeys,
                           const std::string& body) {
  Package p;
  p.descriptor.package_id = id;
  p.descriptor.source_platform_id = platform;
  p.descriptor.format_version = "1.0";
  p.descriptor.created_at = kNow;
  p.descriptor.uploaded_at = kNow;
  for (int i = 0; i < nkeys; ++i) {
    p.descriptor.keys.push_back({"k" + std::to_string(i), "label" + std::to_string(i), "sign"});
  }
  p.body = ToBytes(body);
  p.descriptor.sha256 = Sha256Of(p.body);
  return p;
}

// Raw access to the file, as an attacker or a careless admin with the sqlite3 CLI has.
struct RawDb {
  explicit RawDb(const std::string& path) { EXPECT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK); }
  ~RawDb() { sqlite3_close(db); }
  // Returns SQLite's error message, empty on success.
  std::string Exec(const std::string& sql) {
    char* err = nullptr;
    int rc = sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &err);
    std::string msg = err ? err : (rc == SQLITE_OK ? "" : sqlite3_errstr(rc));
    sqlite3_free(err);
    return msg;
  }
  int64_t Count(const std::string& sql) {
    sqlite3_stmt* s = nullptr;
    EXPECT_EQ(sqlite3_prepare_v2(db, sql.c_str(), -1, &s, nullptr), SQLITE_OK) << sql;
    int64_t n = -1;
    if (sqlite3_step(s) == SQLITE_ROW) n = sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    return n;
  }
  sqlite3* db = nullptr;
};

inline std::unique_ptr<SqliteVault> OpenOrDie(const std::string& path, SqliteVaultOptions o = {}) {
  auto v = SqliteVault::Open(path, std::move(o));
  EXPECT_TRUE(v.has_value()) << v.error().ToString();
  return v ? std::move(*v) : nullptr;
}

class SqliteVaultTest : public ::testing::Test {
 protected:
  std::string Path() const { return DbPath(dir_.path()); }
  tpmma::testing::TempDir dir_;
};

// ---------------------------------------------------------------------------------------
// Group commit: one writer thread, calls batched into one transaction each in a savepoint.

// A scripted fault hook: holds the writer thread at the Nth "commit" step until released,
// fails the Mth one, and can fail the call whose package has a given number of keys.
class ScriptedHook {
 public:
  // The hook to put in SqliteVaultOptions; `this` must outlive the vault.
  FaultHook Hook() {
    return [this](std::string_view step) -> Status { return OnStep(step); };
  }
  // Commit steps are counted from 1 over the vault's life.
  void HoldCommit(int n) {
    std::lock_guard l(mu_);
    hold_at_ = n;
    released_ = false;
  }
  void FailCommit(int n) {
    std::lock_guard l(mu_);
    fail_at_ = n;
  }
  void FailPackageWithKeys(int keys) {
    std::lock_guard l(mu_);
    fail_keys_ = keys;
  }
  // Fails every "deferred_audit" step (one per deferred record appended) while on.
  void FailDeferred(bool on) {
    std::lock_guard l(mu_);
    fail_deferred_ = on;
  }
  int commits_seen() {
    std::lock_guard l(mu_);
    return commits_;
  }
  // Waits until the writer is parked at the held commit step.
  void WaitHeld() {
    std::unique_lock l(mu_);
    cv_.wait(l, [&] { return held_; });
  }
  void Release() {
    {
      std::lock_guard l(mu_);
      released_ = true;
    }
    cv_.notify_all();
  }

 private:
  Status OnStep(std::string_view step) {
    std::unique_lock l(mu_);
    if (step == "package_row") keys_ = 0;
    if (step == "package_key" && ++keys_ == fail_keys_) {
      return Status(Code::kIoError, "injected failure after the rows were written");
    }
    if (step == "deferred_audit" && fail_deferred_) {
      return Status(Code::kIoError, "injected failure of a deferred audit record");
    }
    if (step != "commit") return Status();
    ++commits_;
    if (commits_ == hold_at_) {
      held_ = true;
      cv_.notify_all();
      cv_.wait(l, [&] { return released_; });
      held_ = false;
    }
    if (commits_ == fail_at_) return Status(Code::kIoError, "injected COMMIT failure");
    return Status();
  }

  std::mutex mu_;
  std::condition_variable cv_;
  int commits_ = 0;
  int hold_at_ = -1;
  int fail_at_ = -1;
  int fail_keys_ = -1;
  int keys_ = 0;
  bool held_ = false;
  bool released_ = false;
  bool fail_deferred_ = false;
};

template <typename T>
inline void ExpectValue(const Result<T>& r, const T& want) {
  ASSERT_TRUE(r.has_value()) << r.error().ToString();
  EXPECT_EQ(*r, want);
}

// Spins (yielding) until `n` calls wait in the writer's queue: then the next batch holds
// exactly them. Bounded by the ctest timeout, not by a sleep.
inline void WaitQueued(const SqliteVault& v, uint64_t n) {
  while (v.GetStats().queued < n) std::this_thread::yield();
}

// Runs each of `calls` on its own thread while the writer is held at the next commit, so
// that they all land in one batch; returns once they have all returned.
inline void RunAsOneBatch(SqliteVault& v, ScriptedHook& hook,
                          std::vector<std::function<void()>> calls) {
  hook.HoldCommit(hook.commits_seen() + 1);
  std::thread holder([&] { ASSERT_OK(v.AppendAudit(Audit("Hold"))); });
  hook.WaitHeld();
  std::vector<std::thread> threads;
  for (auto& call : calls) threads.emplace_back(call);
  WaitQueued(v, calls.size());
  hook.Release();
  holder.join();
  for (auto& t : threads) t.join();
}

inline int64_t CountAudit(Vault& v, const std::string& action) {
  AuditFilter f;
  f.action = action;
  f.page_size = 1000;
  int64_t n = 0;
  while (true) {
    auto page = v.ListAudit(f);
    EXPECT_TRUE(page.has_value());
    if (!page) return -1;
    n += static_cast<int64_t>(page->records.size());
    if (page->next_page_token.empty()) return n;
    f.page_token = page->next_page_token;
  }
}

}  // namespace tpmma::storage::testing
