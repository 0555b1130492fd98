// SPDX-License-Identifier: GPL-2.0-or-later
// SqliteVault: the shared conformance suite (with and without group commit), plus what
// only a file-backed vault has (crash safety, file identity and versions, tampering with
// the file, permissions) and the writer thread's batching (group commit).
#include "storage/sqlite_vault.h"

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

#include "tests/storage/vault_test.h"

namespace tpmma::storage::testing {
namespace {

constexpr int64_t kNow = 1'800'000'000;

std::string DbPath(const std::string& dir) {
  return dir + "/vault.db";
}

VaultBackend SqliteBackend(std::string name, SqliteVaultOptions options) {
  return VaultBackend{std::move(name),
                      [options](const std::string& dir) -> Result<std::unique_ptr<Vault>> {
                        auto v = SqliteVault::Open(DbPath(dir), options);
                        if (!v) return Error(v.error());
                        return std::unique_ptr<Vault>(std::move(*v));
                      }};
}

SqliteVaultOptions Unbatched() {
  SqliteVaultOptions o;
  o.group_commit = false;
  return o;
}

// Group commit must not change what any call does: the suite runs with and without it.
INSTANTIATE_TEST_SUITE_P(Sqlite, VaultTest,
                         ::testing::Values(SqliteBackend("Sqlite", {}),
                                           SqliteBackend("SqliteUnbatched", Unbatched())),
                         BackendName);

AuditEvent Audit(std::string action, std::string object = "obj") {
  return AuditEvent{kNow, "system", std::move(action), std::move(object), "ok", "test"};
}

Platform MakePlatform(const std::string& id) {
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

Package MakePackage(const std::string& id, const std::string& platform, int nkeys,
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

std::unique_ptr<SqliteVault> OpenOrDie(const std::string& path, SqliteVaultOptions o = {}) {
  auto v = SqliteVault::Open(path, std::move(o));
  EXPECT_TRUE(v.has_value()) << v.error().ToString();
  return v ? std::move(*v) : nullptr;
}

class SqliteVaultTest : public ::testing::Test {
 protected:
  std::string Path() const { return DbPath(dir_.path()); }
  tpmma::testing::TempDir dir_;
};

TEST_F(SqliteVaultTest, CrashInTheMiddleOfPutPackageLeavesNothing) {
  {
    auto v = OpenOrDie(Path());
    ASSERT_TRUE(v);
    ASSERT_OK(v->UpsertPlatform(MakePlatform("p"), std::nullopt));
    ASSERT_OK(v->PutPackage(MakePackage("before", "p", 2, "<a/>"), Audit("Upload")));
  }
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    // Child: no gtest assertions here, only exit codes.
    SqliteVaultOptions o;
    int keys = 0;
    o.fault_hook = [&keys](std::string_view step) {
      if (step == "package_key" && ++keys == 1) ::raise(SIGKILL);
    };
    auto v = SqliteVault::Open(DbPath(dir_.path()), std::move(o));
    if (!v) ::_exit(2);
    (void)(*v)->PutPackage(MakePackage("crash", "p", 10, "<crash/>"), Audit("Upload"));
    ::_exit(3);  // the hook should have killed us
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFSIGNALED(status)) << "child exited with " << WEXITSTATUS(status);
  EXPECT_EQ(WTERMSIG(status), SIGKILL);

  auto v = OpenOrDie(Path());
  ASSERT_TRUE(v);
  EXPECT_CODE(v->GetPackage("crash"), Code::kNotFound);
  ASSERT_OK(v->GetPackage("before"));
  ASSERT_OK(v->IntegrityCheck());
  v.reset();
  RawDb raw(Path());
  EXPECT_EQ(raw.Count("SELECT count(*) FROM packages"), 1);
  EXPECT_EQ(raw.Count("SELECT count(*) FROM package_keys"), 2);
  EXPECT_EQ(raw.Count("SELECT count(*) FROM package_bodies"), 1);
  EXPECT_EQ(raw.Count("SELECT count(*) FROM package_keys WHERE package_pk NOT IN "
                      "(SELECT pk FROM packages)"),
            0);
  EXPECT_EQ(raw.Count("SELECT count(*) FROM audit_log"), 1);
}

TEST_F(SqliteVaultTest, FaultHookSeesEveryRow) {
  std::vector<std::string> steps;
  SqliteVaultOptions o;
  o.fault_hook = [&steps](std::string_view s) { steps.emplace_back(s); };
  auto v = OpenOrDie(Path(), std::move(o));
  ASSERT_TRUE(v);
  ASSERT_OK(v->UpsertPlatform(MakePlatform("p"), std::nullopt));
  ASSERT_OK(v->PutPackage(MakePackage("x", "p", 3, "<x/>"), Audit("Upload")));
  // Each call is its own batch here (they run one after the other): "commit" ends each.
  EXPECT_EQ(steps,
            (std::vector<std::string>{"commit", "package_row", "package_body", "package_key",
                                      "package_key", "package_key", "before_commit", "commit"}));
}

TEST_F(SqliteVaultTest, NewerSchemaVersionIsRefused) {
  ASSERT_TRUE(OpenOrDie(Path()));
  {
    RawDb raw(Path());
    ASSERT_EQ(raw.Exec("PRAGMA user_version = 99"), "");
  }
  auto v = SqliteVault::Open(Path());
  ASSERT_FALSE(v.has_value());
  EXPECT_EQ(v.error().code(), Code::kVersionTooNew);
  EXPECT_NE(v.error().message().find("99"), std::string::npos) << v.error().message();
  EXPECT_NE(v.error().message().find("(" + std::to_string(SqliteVault::SchemaVersion()) + ")"),
            std::string::npos)
      << v.error().message();
}

TEST_F(SqliteVaultTest, ForeignFilesAreRefused) {
  std::string other = dir_.File("other.db");
  {
    RawDb raw(other);
    ASSERT_EQ(raw.Exec("CREATE TABLE t (x)"), "");
  }
  auto v = SqliteVault::Open(other);
  ASSERT_FALSE(v.has_value());
  EXPECT_EQ(v.error().code(), Code::kInvalidArgument) << v.error().ToString();

  std::string tagged = dir_.File("tagged.db");
  {
    RawDb raw(tagged);
    ASSERT_EQ(raw.Exec("PRAGMA application_id = 1234"), "");
  }
  v = SqliteVault::Open(tagged);
  ASSERT_FALSE(v.has_value());
  EXPECT_EQ(v.error().code(), Code::kInvalidArgument) << v.error().ToString();

  std::string junk = dir_.File("junk.db");
  tpmma::testing::WriteFileOrDie(junk, View(std::string(4096, 'x')));
  v = SqliteVault::Open(junk);
  ASSERT_FALSE(v.has_value());
  EXPECT_EQ(v.error().code(), Code::kCorruption) << v.error().ToString();
  // Refusing must not have modified them.
  RawDb raw(other);
  EXPECT_EQ(raw.Count("PRAGMA application_id"), 0);
  EXPECT_EQ(raw.Count("PRAGMA user_version"), 0);
}

TEST_F(SqliteVaultTest, FileIsPrivateAndConfigured) {
  ::umask(022);
  auto v = OpenOrDie(Path());
  ASSERT_TRUE(v);
  ASSERT_OK(v->AppendAudit(Audit("x")));
  struct stat st {};
  ASSERT_EQ(::stat(Path().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  if (::stat((Path() + "-wal").c_str(), &st) == 0) {
    EXPECT_EQ(st.st_mode & 0777, 0600u);
  }
  RawDb raw(Path());
  EXPECT_EQ(raw.Count("PRAGMA application_id"), SqliteVault::kApplicationId);
  EXPECT_EQ(raw.Count("PRAGMA user_version"), SqliteVault::SchemaVersion());
  sqlite3_stmt* s = nullptr;
  ASSERT_EQ(sqlite3_prepare_v2(raw.db, "PRAGMA journal_mode", -1, &s, nullptr), SQLITE_OK);
  ASSERT_EQ(sqlite3_step(s), SQLITE_ROW);
  EXPECT_STREQ(reinterpret_cast<const char*>(sqlite3_column_text(s, 0)), "wal");
  sqlite3_finalize(s);
}

void AppendSome(SqliteVault& v, int n) {
  for (int i = 0; i < n; ++i) {
    ASSERT_OK(v.AppendAudit(Audit("Op" + std::to_string(i))));
  }
}

TEST_F(SqliteVaultTest, AuditRowsCannotBeUpdatedOrDeleted) {
  {
    auto v = OpenOrDie(Path());
    ASSERT_TRUE(v);
    AppendSome(*v, 3);
  }
  RawDb raw(Path());
  EXPECT_NE(raw.Exec("UPDATE audit_log SET detail = 'x' WHERE seq = 2").find("append-only"),
            std::string::npos);
  EXPECT_NE(raw.Exec("DELETE FROM audit_log WHERE seq = 2").find("append-only"), std::string::npos);
  EXPECT_EQ(raw.Count("SELECT count(*) FROM audit_log"), 3);
}

TEST_F(SqliteVaultTest, EditedAuditRowIsDetectedBySeq) {
  {
    auto v = OpenOrDie(Path());
    ASSERT_TRUE(v);
    AppendSome(*v, 5);
    ASSERT_OK(v->VerifyAuditChain());
  }
  {
    RawDb raw(Path());
    ASSERT_EQ(raw.Exec("DROP TRIGGER audit_log_no_update"), "");
    ASSERT_EQ(raw.Exec("UPDATE audit_log SET detail = 'nothing happened' WHERE seq = 3"), "");
  }
  auto v = OpenOrDie(Path());
  ASSERT_TRUE(v);
  Status s = v->VerifyAuditChain();
  EXPECT_EQ(s.code(), Code::kCorruption);
  EXPECT_NE(s.message().find("seq 3"), std::string::npos) << s.message();
  EXPECT_EQ(v->IntegrityCheck().code(), Code::kCorruption);
}

TEST_F(SqliteVaultTest, DeletedAuditRowIsDetectedBySeq) {
  {
    auto v = OpenOrDie(Path());
    ASSERT_TRUE(v);
    AppendSome(*v, 5);
  }
  {
    RawDb raw(Path());
    ASSERT_EQ(raw.Exec("DROP TRIGGER audit_log_no_delete"), "");
    ASSERT_EQ(raw.Exec("DELETE FROM audit_log WHERE seq = 2"), "");
  }
  auto v = OpenOrDie(Path());
  ASSERT_TRUE(v);
  Status s = v->VerifyAuditChain();
  EXPECT_EQ(s.code(), Code::kCorruption);
  EXPECT_NE(s.message().find("seq 2"), std::string::npos) << s.message();
  s = v->IntegrityCheck();
  EXPECT_EQ(s.code(), Code::kCorruption);
  EXPECT_NE(s.message().find("trigger"), std::string::npos) << s.message();
}

bool FileContains(const std::string& path, std::string_view needle) {
  if (!std::filesystem::exists(path)) return false;
  Bytes data = tpmma::testing::ReadFileOrDie(path);
  return std::search(data.begin(), data.end(), needle.begin(), needle.end()) != data.end();
}

TEST_F(SqliteVaultTest, DeletedPackageIsNotReadableFromTheFiles) {
  const std::string marker = "SECRET-MARKER-7f3a9c";
  std::string body = "<Package>";
  for (int i = 0; i < 200; ++i) body += marker;  // spans overflow pages
  body += "</Package>";
  auto v = OpenOrDie(Path());
  ASSERT_TRUE(v);
  ASSERT_OK(v->UpsertPlatform(MakePlatform("p"), std::nullopt));
  ASSERT_OK(v->PutPackage(MakePackage("gone", "p", 3, body), Audit("Upload")));
  ASSERT_OK(v->PutPackage(MakePackage("kept", "p", 1, "<kept/>"), Audit("Upload")));
  EXPECT_TRUE(FileContains(Path(), marker) || FileContains(Path() + "-wal", marker));
  ASSERT_OK(v->DeletePackage("gone", Audit("Delete")));
  EXPECT_FALSE(FileContains(Path(), marker));
  EXPECT_FALSE(FileContains(Path() + "-wal", marker));
  ASSERT_OK(v->GetPackage("kept"));
  ASSERT_OK(v->IntegrityCheck());
}

TEST_F(SqliteVaultTest, MigratingTwiceIsANoOp) {
  ASSERT_TRUE(OpenOrDie(Path()));
  ASSERT_TRUE(OpenOrDie(Path()));
  RawDb raw(Path());
  EXPECT_EQ(raw.Count("PRAGMA user_version"), SqliteVault::SchemaVersion());
}

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
void ExpectValue(const Result<T>& r, const T& want) {
  ASSERT_TRUE(r.has_value()) << r.error().ToString();
  EXPECT_EQ(*r, want);
}

// Spins (yielding) until `n` calls wait in the writer's queue: then the next batch holds
// exactly them. Bounded by the ctest timeout, not by a sleep.
void WaitQueued(const SqliteVault& v, uint64_t n) {
  while (v.GetStats().queued < n) std::this_thread::yield();
}

// Runs each of `calls` on its own thread while the writer is held at the next commit, so
// that they all land in one batch; returns once they have all returned.
void RunAsOneBatch(SqliteVault& v, ScriptedHook& hook, std::vector<std::function<void()>> calls) {
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

TEST_F(SqliteVaultTest, ConcurrentWritersShareCommits) {
  ScriptedHook hook;
  SqliteVaultOptions o;
  o.fault_hook = hook.Hook();
  auto v = OpenOrDie(Path(), std::move(o));
  ASSERT_TRUE(v);
  ASSERT_OK(v->UpsertPlatform(MakePlatform("p"), std::nullopt));

  // Deterministic: 16 calls queued behind a held commit go into one transaction.
  constexpr int kThreads = 16;
  SqliteVaultStats before = v->GetStats();
  std::vector<Result<PutOutcome>> results(kThreads, Error(Code::kInternal, "not run"));
  std::vector<std::function<void()>> calls;
  for (int t = 0; t < kThreads; ++t) {
    calls.emplace_back([&, t] {
      std::string id = "b" + std::to_string(t);
      results[t] = v->PutPackage(MakePackage(id, "p", 2, "<" + id + "/>"), Audit("Upload", id));
    });
  }
  RunAsOneBatch(*v, hook, std::move(calls));
  SqliteVaultStats after = v->GetStats();
  EXPECT_EQ(after.calls - before.calls, uint64_t{kThreads + 1});
  EXPECT_EQ(after.commits - before.commits, 2u);  // the held call's batch, then all 16
  EXPECT_GE(after.largest_batch, uint64_t{kThreads});
  for (int t = 0; t < kThreads; ++t) {
    ASSERT_OK(results[t]);
    EXPECT_EQ(*results[t], PutOutcome::kStored);
    auto got = v->GetPackage("b" + std::to_string(t));
    ASSERT_OK(got);
    EXPECT_EQ(got->body, ToBytes("<b" + std::to_string(t) + "/>"));
    EXPECT_EQ(got->descriptor.keys.size(), 2u);
  }

  // Free-running: 16 threads, mixed calls, every result right and the chain intact.
  constexpr int kOps = 30;
  before = v->GetStats();
  std::atomic<int> failures{0};
  std::latch start(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      start.arrive_and_wait();
      for (int i = 0; i < kOps; ++i) {
        std::string id = "t" + std::to_string(t) + "-" + std::to_string(i);
        bool ok = false;
        if (i % 3 == 0) {
          auto r = v->PutPackage(MakePackage(id, "p", 1, "<" + id + "/>"), Audit("Upload", id));
          ok = r.has_value() && *r == PutOutcome::kStored;
        } else if (i % 3 == 1) {
          auto r = v->AppendAudit(Audit("Ping", id));
          ok = r.has_value() && *r > 0;
        } else {  // the one just stored again: idempotent
          std::string prev = "t" + std::to_string(t) + "-" + std::to_string(i - 2);
          auto r =
              v->PutPackage(MakePackage(prev, "p", 1, "<" + prev + "/>"), Audit("Upload", prev));
          ok = r.has_value() && *r == PutOutcome::kAlreadyStored;
        }
        if (!ok) ++failures;
      }
    });
  }
  for (auto& th : threads) th.join();
  after = v->GetStats();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(after.calls - before.calls, uint64_t{kThreads * kOps});
  EXPECT_LE(after.commits - before.commits, after.calls - before.calls);
  EXPECT_LT(after.commits, after.calls) << "no two calls ever shared a commit";
  for (int t = 0; t < kThreads; ++t) {
    for (int i = 0; i < kOps; i += 3) {
      std::string id = "t" + std::to_string(t) + "-" + std::to_string(i);
      auto got = v->GetPackage(id);
      ASSERT_OK(got);
      EXPECT_EQ(got->body, ToBytes("<" + id + "/>"));
    }
  }
  ASSERT_OK(v->VerifyAuditChain());
  ASSERT_OK(v->IntegrityCheck());
  std::cout << "[ stats    ] calls " << after.calls << ", commits " << after.commits
            << ", largest batch " << after.largest_batch << "\n";
}

TEST_F(SqliteVaultTest, FailingCallsInABatchLeaveTheirNeighboursAlone) {
  ScriptedHook hook;
  SqliteVaultOptions o;
  o.fault_hook = hook.Hook();
  auto v = OpenOrDie(Path(), std::move(o));
  ASSERT_TRUE(v);
  ASSERT_OK(v->UpsertPlatform(MakePlatform("p"), std::nullopt));
  ASSERT_OK(v->PutPackage(MakePackage("dup", "p", 2, "<dup/>"), Audit("Upload", "dup")));
  ASSERT_OK(v->CreateChallenge(
      Challenge{"c1", ChallengeKind::kAuthenticate, "p", Bytes(32, 7), {}, {}, kNow, kNow + 60},
      std::nullopt));
  hook.FailPackageWithKeys(5);  // only "bad" has 5 keys: it fails after writing rows

  constexpr int kGood = 4;
  std::vector<Result<PutOutcome>> good(kGood, Error(Code::kInternal, "not run"));
  Result<PutOutcome> conflict = Error(Code::kInternal, "not run");
  Result<PutOutcome> bad = Error(Code::kInternal, "not run");
  Result<PutOutcome> ghost = Error(Code::kInternal, "not run");
  std::vector<Result<Challenge>> consumed(2, Error(Code::kInternal, "not run"));
  Status session(Code::kInternal, "not run");
  std::vector<std::function<void()>> calls;
  for (int i = 0; i < kGood; ++i) {
    calls.emplace_back([&, i] {
      std::string id = "g" + std::to_string(i);
      good[i] = v->PutPackage(MakePackage(id, "p", 2, "<" + id + "/>"), Audit("Upload", id));
    });
  }
  calls.emplace_back([&] {
    conflict = v->PutPackage(MakePackage("dup", "p", 2, "<other/>"), Audit("Upload", "dup"));
  });
  calls.emplace_back(
      [&] { bad = v->PutPackage(MakePackage("bad", "p", 5, "<bad/>"), Audit("Upload", "bad")); });
  calls.emplace_back([&] {
    ghost = v->PutPackage(MakePackage("ghost", "nobody", 1, "<g/>"), Audit("Upload", "ghost"));
  });
  for (int i = 0; i < 2; ++i) {
    calls.emplace_back(
        [&, i] { consumed[i] = v->ConsumeChallenge("c1", ChallengeKind::kAuthenticate, kNow); });
  }
  calls.emplace_back([&] {
    session = v->CreateSession(Session{Bytes(32, 9), "p", kNow, kNow + 60}, Audit("Login", "p"));
  });
  SqliteVaultStats before = v->GetStats();
  RunAsOneBatch(*v, hook, std::move(calls));
  EXPECT_EQ(v->GetStats().commits - before.commits, 2u) << "the calls did not share a batch";

  for (int i = 0; i < kGood; ++i) ExpectValue(good[i], PutOutcome::kStored);
  EXPECT_CODE(conflict, Code::kConflict);
  EXPECT_CODE(bad, Code::kIoError);
  EXPECT_CODE(ghost, Code::kNotFound);
  EXPECT_EQ(consumed[0].has_value() + consumed[1].has_value(), 1) << "exactly one consumer wins";
  EXPECT_CODE(consumed[0].has_value() ? consumed[1] : consumed[0], Code::kUnauthenticated);
  ASSERT_OK(session);

  v.reset();  // what survives is what is in the file
  v = OpenOrDie(Path());
  ASSERT_TRUE(v);
  for (int i = 0; i < kGood; ++i) ASSERT_OK(v->GetPackage("g" + std::to_string(i)));
  auto dup = v->GetPackage("dup");
  ASSERT_OK(dup);
  EXPECT_EQ(dup->body, ToBytes("<dup/>"));
  EXPECT_CODE(v->GetPackage("bad"), Code::kNotFound);
  ASSERT_OK(v->GetSession(Bytes(32, 9), kNow));
  EXPECT_CODE(v->ConsumeChallenge("c1", ChallengeKind::kAuthenticate, kNow),
              Code::kUnauthenticated);
  ASSERT_OK(v->VerifyAuditChain());
  ASSERT_OK(v->IntegrityCheck());
  v.reset();
  RawDb raw(Path());
  EXPECT_EQ(raw.Count("SELECT count(*) FROM packages"), 1 + kGood);
  EXPECT_EQ(raw.Count("SELECT count(*) FROM package_keys"), 2 * (1 + kGood));  // none of bad's
  EXPECT_EQ(raw.Count("SELECT count(*) FROM package_bodies"), 1 + kGood);
  // dup + the held call + the good uploads + the login; refusals leave no row.
  EXPECT_EQ(raw.Count("SELECT count(*) FROM audit_log"), 1 + 1 + kGood + 1);
}

TEST_F(SqliteVaultTest, CommitFailureFailsEveryCallInTheBatch) {
  ScriptedHook hook;
  SqliteVaultOptions o;
  o.fault_hook = hook.Hook();
  auto v = OpenOrDie(Path(), std::move(o));
  ASSERT_TRUE(v);
  ASSERT_OK(v->UpsertPlatform(MakePlatform("p"), std::nullopt));
  ASSERT_OK(v->PutPackage(MakePackage("dup", "p", 1, "<dup/>"), Audit("Upload", "dup")));
  ASSERT_OK(v->CreateChallenge(
      Challenge{"c1", ChallengeKind::kAuthenticate, "p", Bytes(32, 7), {}, {}, kNow, kNow + 60},
      std::nullopt));
  // The next commit is the held call's; the one after it, the batch's, fails.
  hook.FailCommit(hook.commits_seen() + 2);

  std::vector<Result<PutOutcome>> puts(3, Error(Code::kInternal, "not run"));
  Result<Challenge> consumed = Error(Code::kInternal, "not run");
  Result<int64_t> appended = Error(Code::kInternal, "not run");
  std::vector<std::function<void()>> calls;
  for (int i = 0; i < 2; ++i) {
    calls.emplace_back([&, i] {
      std::string id = "x" + std::to_string(i);
      puts[i] = v->PutPackage(MakePackage(id, "p", 2, "<" + id + "/>"), Audit("Upload", id));
    });
  }
  calls.emplace_back([&] {  // a refusal, but one that rests on state that never committed
    puts[2] = v->PutPackage(MakePackage("dup", "p", 1, "<other/>"), Audit("Upload", "dup"));
  });
  calls.emplace_back(
      [&] { consumed = v->ConsumeChallenge("c1", ChallengeKind::kAuthenticate, kNow); });
  calls.emplace_back([&] { appended = v->AppendAudit(Audit("Ping")); });
  SqliteVaultStats before = v->GetStats();
  RunAsOneBatch(*v, hook, std::move(calls));
  EXPECT_EQ(v->GetStats().commits - before.commits, 1u);  // only the held call's

  for (const auto& r : puts) {
    ASSERT_FALSE(r.has_value());
    EXPECT_EQ(r.error().code(), Code::kIoError);
    EXPECT_NE(r.error().message().find("injected COMMIT failure"), std::string::npos)
        << r.error().message();
  }
  EXPECT_CODE(consumed, Code::kIoError);
  EXPECT_CODE(appended, Code::kIoError);

  // Nothing of the batch is there; the challenge is still unused; the chain goes on.
  EXPECT_CODE(v->GetPackage("x0"), Code::kNotFound);
  EXPECT_CODE(v->GetPackage("x1"), Code::kNotFound);
  auto audit = v->AppendAudit(Audit("After"));
  ASSERT_OK(audit);
  EXPECT_EQ(*audit, 3);  // dup's upload, the held call, this one
  ASSERT_OK(v->ConsumeChallenge("c1", ChallengeKind::kAuthenticate, kNow));
  ASSERT_OK(v->PutPackage(MakePackage("x0", "p", 2, "<x0/>"), Audit("Upload", "x0")));
  ASSERT_OK(v->VerifyAuditChain());
  ASSERT_OK(v->IntegrityCheck());
}

TEST_F(SqliteVaultTest, ReadsProceedWhileTheWriterIsInsideABatch) {
  ScriptedHook hook;
  SqliteVaultOptions o;
  o.fault_hook = hook.Hook();
  auto v = OpenOrDie(Path(), std::move(o));
  ASSERT_TRUE(v);
  ASSERT_OK(v->UpsertPlatform(MakePlatform("p"), std::nullopt));
  ASSERT_OK(v->PutPackage(MakePackage("old", "p", 1, "<old/>"), Audit("Upload", "old")));

  // The writer stops inside its transaction, rows written, before COMMIT.
  hook.HoldCommit(hook.commits_seen() + 1);
  std::atomic<bool> returned{false};
  Result<PutOutcome> put = Error(Code::kInternal, "not run");
  std::thread writer([&] {
    put = v->PutPackage(MakePackage("new", "p", 1, "<new/>"), Audit("Upload", "new"));
    returned = true;
  });
  hook.WaitHeld();

  // Run the reads elsewhere so that a regression (reads queued behind the writer) fails
  // the test instead of hanging it; the wait is a hang guard, not a delay.
  auto reads = std::async(std::launch::async, [&] {
    std::vector<std::thread> readers;
    std::atomic<int> bad{0};
    for (int t = 0; t < 8; ++t) {  // more readers than read connections
      readers.emplace_back([&] {
        if (!v->GetPackage("old").has_value()) ++bad;
        // Uncommitted rows are invisible to readers.
        auto fresh = v->GetPackage("new");
        if (fresh.has_value() || fresh.error().code() != Code::kNotFound) ++bad;
        auto page = v->QueryPackages(PackageQuery{});
        if (!page.has_value() || page->packages.size() != 1) ++bad;
        if (!v->GetPlatform("p").has_value()) ++bad;
        if (!v->VerifyAuditChain().ok()) ++bad;
      });
    }
    for (auto& r : readers) r.join();
    return bad.load();
  });
  bool finished = reads.wait_for(std::chrono::seconds(60)) == std::future_status::ready;
  EXPECT_TRUE(finished) << "reads waited for the writer's transaction";
  // A call must not return before the COMMIT holding it has.
  EXPECT_FALSE(returned.load());
  hook.Release();
  writer.join();
  if (finished) {
    EXPECT_EQ(reads.get(), 0);
  }
  EXPECT_TRUE(returned.load());
  ExpectValue(put, PutOutcome::kStored);
  ASSERT_OK(v->GetPackage("new"));
}

// ---------------------------------------------------------------------------------------
// Deferred audit records (AppendAuditDeferred: successful reads).

int64_t CountAudit(Vault& v, const std::string& action) {
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

TEST_F(SqliteVaultTest, DeferredAuditRecordsJoinTheChainInBatches) {
  auto v = OpenOrDie(Path());
  ASSERT_TRUE(v);
  ASSERT_OK(v->UpsertPlatform(MakePlatform("p"), std::nullopt));
  // A burst of reads from 8 threads, with durable writes in between.
  constexpr int kThreads = 8, kReads = 150;
  SqliteVaultStats before = v->GetStats();
  std::latch start(kThreads);
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      start.arrive_and_wait();
      for (int i = 0; i < kReads; ++i) {
        if (!v->AppendAuditDeferred(Audit("GetMAKey", "t" + std::to_string(t))).ok()) ++failures;
        if (i % 50 == 0) {
          std::string id = "w" + std::to_string(t) + "-" + std::to_string(i);
          if (!v->PutPackage(MakePackage(id, "p", 1, "<" + id + "/>"), Audit("Upload", id))) {
            ++failures;
          }
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
  ASSERT_OK(v->FlushDeferredAudit());
  SqliteVaultStats after = v->GetStats();
  EXPECT_EQ(after.deferred_committed - before.deferred_committed, uint64_t{kThreads * kReads});
  EXPECT_EQ(after.deferred_lost, 0u);
  EXPECT_EQ(after.deferred_queued, 0u);
  // Far fewer commits than records: they rode along in shared batches.
  EXPECT_LT(after.commits - before.commits, uint64_t{kThreads * kReads / 4});
  EXPECT_EQ(CountAudit(*v, "GetMAKey"), kThreads * kReads);
  EXPECT_EQ(CountAudit(*v, "Upload"), kThreads * 3);
  ASSERT_OK(v->VerifyAuditChain());
  ASSERT_OK(v->IntegrityCheck());
  // Reopened: they are in the file, not only in the writer's memory.
  v.reset();
  v = OpenOrDie(Path());
  ASSERT_TRUE(v);
  EXPECT_EQ(CountAudit(*v, "GetMAKey"), kThreads * kReads);
  ASSERT_OK(v->VerifyAuditChain());
}

TEST_F(SqliteVaultTest, DeferredAuditWaitsForMoreButNotForAFlush) {
  SqliteVaultOptions o;
  o.deferred_audit_delay_ms = 60'000;  // only a flush (or a full batch) ends the wait
  auto v = OpenOrDie(Path(), std::move(o));
  ASSERT_TRUE(v);
  SqliteVaultStats before = v->GetStats();
  for (int i = 0; i < 20; ++i) ASSERT_OK(v->AppendAuditDeferred(Audit("Query")));
  ASSERT_OK(v->FlushDeferredAudit());
  SqliteVaultStats after = v->GetStats();
  EXPECT_EQ(after.deferred_committed - before.deferred_committed, 20u);
  EXPECT_EQ(after.commits - before.commits, 1u) << "20 records, one commit";
  EXPECT_EQ(CountAudit(*v, "Query"), 20);
  // A durable call does not wait for the delay either, and takes queued records along.
  for (int i = 0; i < 5; ++i) ASSERT_OK(v->AppendAuditDeferred(Audit("Query")));
  auto seq = v->AppendAudit(Audit("Refused"));
  ASSERT_OK(seq);
  EXPECT_EQ(*seq, 26);  // after the 5 queued before it
  EXPECT_EQ(CountAudit(*v, "Query"), 25);
  ASSERT_OK(v->VerifyAuditChain());
}

TEST_F(SqliteVaultTest, FullDeferredQueueAppliesBackPressureInsteadOfGrowing) {
  ScriptedHook hook;
  SqliteVaultOptions o;
  o.fault_hook = hook.Hook();
  o.max_deferred_audit = 4;
  o.deferred_audit_delay_ms = 0;
  auto v = OpenOrDie(Path(), std::move(o));
  ASSERT_TRUE(v);
  // Park the writer inside a batch: nothing leaves the queue.
  hook.HoldCommit(hook.commits_seen() + 1);
  std::thread holder([&] { ASSERT_OK(v->AppendAudit(Audit("Hold"))); });
  hook.WaitHeld();
  for (int i = 0; i < 4; ++i) ASSERT_OK(v->AppendAuditDeferred(Audit("Read")));
  EXPECT_EQ(v->GetStats().deferred_queued, 4u);
  // The fifth waits for room rather than growing the queue.
  std::atomic<bool> fifth_returned{false};
  std::thread fifth([&] {
    EXPECT_TRUE(v->AppendAuditDeferred(Audit("Read")).ok());
    fifth_returned = true;
  });
  // Bounded, so that a regression (the queue growing) fails here instead of hanging.
  auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (v->GetStats().deferred_blocked < 1 && !fifth_returned.load() &&
         std::chrono::steady_clock::now() < give_up) {
    std::this_thread::yield();
  }
  EXPECT_FALSE(fifth_returned.load()) << "the fifth record did not wait for room";
  EXPECT_EQ(v->GetStats().deferred_queued, 4u);
  EXPECT_EQ(v->GetStats().deferred_waits, 1u);
  hook.Release();
  holder.join();
  fifth.join();
  EXPECT_TRUE(fifth_returned.load());
  ASSERT_OK(v->FlushDeferredAudit());
  EXPECT_EQ(CountAudit(*v, "Read"), 5);
  EXPECT_EQ(v->GetStats().deferred_blocked, 0u);
  ASSERT_OK(v->VerifyAuditChain());
}

TEST_F(SqliteVaultTest, FailedDeferredRecordsAreCountedLostAndTheChainStaysWhole) {
  ScriptedHook hook;
  SqliteVaultOptions o;
  o.fault_hook = hook.Hook();
  o.deferred_audit_delay_ms = 0;
  auto v = OpenOrDie(Path(), std::move(o));
  ASSERT_TRUE(v);
  ASSERT_OK(v->AppendAudit(Audit("Before")));
  // A record that fails on its own is given up; durable calls beside it are not affected.
  hook.FailDeferred(true);
  ASSERT_OK(v->AppendAuditDeferred(Audit("Lost")));
  ASSERT_OK(v->FlushDeferredAudit());
  hook.FailDeferred(false);
  EXPECT_EQ(v->GetStats().deferred_lost, 1u);
  // A batch whose COMMIT fails loses its deferred records (and fails its durable calls).
  hook.HoldCommit(hook.commits_seen() + 1);
  std::thread holder([&] { ASSERT_OK(v->AppendAudit(Audit("Hold"))); });
  hook.WaitHeld();
  for (int i = 0; i < 3; ++i) ASSERT_OK(v->AppendAuditDeferred(Audit("Lost")));
  hook.FailCommit(hook.commits_seen() + 1);
  std::thread failing([&] { EXPECT_CODE(v->AppendAudit(Audit("Failed")), Code::kIoError); });
  while (v->GetStats().queued < 1) std::this_thread::yield();
  hook.Release();
  holder.join();
  failing.join();
  ASSERT_OK(v->FlushDeferredAudit());
  EXPECT_EQ(v->GetStats().deferred_lost, 4u);
  // And then everything works again.
  ASSERT_OK(v->AppendAuditDeferred(Audit("Kept")));
  ASSERT_OK(v->FlushDeferredAudit());
  EXPECT_EQ(CountAudit(*v, "Lost"), 0);
  EXPECT_EQ(CountAudit(*v, "Failed"), 0);
  EXPECT_EQ(CountAudit(*v, "Kept"), 1);
  ASSERT_OK(v->VerifyAuditChain());
  ASSERT_OK(v->IntegrityCheck());
}

TEST_F(SqliteVaultTest, DeferredAuditIsValidatedAtOnceAndDrainedOnClose) {
  SqliteVaultOptions o;
  o.deferred_audit_delay_ms = 60'000;
  auto v = OpenOrDie(Path(), o);
  ASSERT_TRUE(v);
  AuditEvent big = Audit("Read");
  big.detail = std::string(2000, 'x');
  EXPECT_CODE(v->AppendAuditDeferred(big), Code::kInvalidArgument);
  for (int i = 0; i < 10; ++i) ASSERT_OK(v->AppendAuditDeferred(Audit("Read")));
  v.reset();  // no flush: closing commits what is queued
  // The last connection closed cleanly (cached statements finalized): WAL checkpointed away.
  EXPECT_FALSE(std::filesystem::exists(Path() + "-wal"));
  v = OpenOrDie(Path(), o);
  ASSERT_TRUE(v);
  EXPECT_EQ(CountAudit(*v, "Read"), 10);
  ASSERT_OK(v->VerifyAuditChain());
}

TEST_F(SqliteVaultTest, WithoutGroupCommitEveryCallCommitsAlone) {
  SqliteVaultOptions o;
  o.group_commit = false;
  auto v = OpenOrDie(Path(), std::move(o));
  ASSERT_TRUE(v);
  constexpr int kThreads = 16;
  std::latch start(kThreads);
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      start.arrive_and_wait();
      for (int i = 0; i < 5; ++i) {
        if (!v->AppendAudit(Audit("Ping")).has_value()) ++failures;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
  SqliteVaultStats s = v->GetStats();
  EXPECT_EQ(s.calls, uint64_t{kThreads * 5});
  EXPECT_EQ(s.commits, s.calls);
  EXPECT_EQ(s.largest_batch, 1u);
  ASSERT_OK(v->VerifyAuditChain());
}

TEST_F(SqliteVaultTest, CrashInTheMiddleOfABatchLeavesNoneOfIt) {
  {
    auto v = OpenOrDie(Path());
    ASSERT_TRUE(v);
    ASSERT_OK(v->UpsertPlatform(MakePlatform("p"), std::nullopt));
    ASSERT_OK(v->PutPackage(MakePackage("before", "p", 2, "<a/>"), Audit("Upload")));
  }
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    // Child: no gtest assertions here, only exit codes. Three uploads share a batch; the
    // second one's first key row kills the process, after the first upload's rows.
    ScriptedHook hook;
    int keys = 0;
    SqliteVaultOptions o;
    FaultHook scripted = hook.Hook();
    o.fault_hook = [&](std::string_view step) {
      if (step == "package_key" && ++keys == 3) ::raise(SIGKILL);
      return scripted(step);
    };
    auto v = SqliteVault::Open(DbPath(dir_.path()), std::move(o));
    if (!v) ::_exit(2);
    SqliteVault& vault = **v;
    hook.HoldCommit(1);
    std::thread holder([&] { (void)vault.AppendAudit(Audit("Hold")); });
    hook.WaitHeld();
    std::vector<std::thread> uploads;
    for (int i = 0; i < 3; ++i) {
      uploads.emplace_back([&, i] {
        std::string id = "crash" + std::to_string(i);
        (void)vault.PutPackage(MakePackage(id, "p", 2, "<" + id + "/>"), Audit("Upload"));
      });
    }
    WaitQueued(vault, 3);
    hook.Release();
    holder.join();
    for (auto& t : uploads) t.join();
    ::_exit(3);  // the hook should have killed us
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFSIGNALED(status)) << "child exited with " << WEXITSTATUS(status);
  EXPECT_EQ(WTERMSIG(status), SIGKILL);

  auto v = OpenOrDie(Path());
  ASSERT_TRUE(v);
  for (int i = 0; i < 3; ++i)
    EXPECT_CODE(v->GetPackage("crash" + std::to_string(i)), Code::kNotFound);
  ASSERT_OK(v->GetPackage("before"));
  ASSERT_OK(v->IntegrityCheck());
  v.reset();
  RawDb raw(Path());
  EXPECT_EQ(raw.Count("SELECT count(*) FROM packages"), 1);
  EXPECT_EQ(raw.Count("SELECT count(*) FROM package_keys"), 2);
  EXPECT_EQ(raw.Count("SELECT count(*) FROM audit_log"), 2);  // "before" and the held call
}

// Not a test: durable PutPackage throughput with and without group commit. Run by hand:
//   build/tests/storage/storage_test --gtest_also_run_disabled_tests
//       --gtest_filter='*BenchmarkDurablePutPackage*'
// TPMMA_BENCH_OPS (default 6000) uploads per run; 8 KB bodies; median of 3 runs. The
// file lives under $TMPDIR: put it on the disk you mean to measure (not tmpfs).
TEST_F(SqliteVaultTest, DISABLED_BenchmarkDurablePutPackage) {
  int total_ops = 6000;
  if (const char* e = std::getenv("TPMMA_BENCH_OPS")) total_ops = std::atoi(e);
  Bytes body(8192);
  for (size_t i = 0; i < body.size(); ++i) body[i] = static_cast<uint8_t>('a' + (i * 7919) % 26);
  auto run_once = [&](bool group_commit, int nthreads, int run) -> std::pair<double, double> {
    SqliteVaultOptions o;
    o.group_commit = group_commit;
    auto v = OpenOrDie(dir_.File("bench-" + std::to_string(group_commit) + "-" +
                                 std::to_string(nthreads) + "-" + std::to_string(run) + ".db"),
                       std::move(o));
    EXPECT_TRUE(v);
    if (!v) return {0, 0};
    EXPECT_TRUE(v->UpsertPlatform(MakePlatform("p"), std::nullopt).has_value());
    SqliteVaultStats before = v->GetStats();
    int per_thread = total_ops / nthreads;
    std::vector<std::vector<Package>> work(nthreads);
    for (int t = 0; t < nthreads; ++t) {
      for (int i = 0; i < per_thread; ++i) {
        Package p = MakePackage("t" + std::to_string(t) + "-" + std::to_string(i), "p", 2, "");
        p.body = body;
        p.body[0] = static_cast<uint8_t>(t);
        work[t].push_back(std::move(p));
      }
    }
    std::atomic<int> failures{0};
    std::latch start(nthreads + 1);
    std::vector<std::thread> threads;
    for (int t = 0; t < nthreads; ++t) {
      threads.emplace_back([&, t] {
        start.arrive_and_wait();
        for (const Package& p : work[t]) {
          if (!v->PutPackage(p, Audit("Upload", p.descriptor.package_id)).has_value()) {
            ++failures;
          }
        }
      });
    }
    start.arrive_and_wait();
    auto t0 = std::chrono::steady_clock::now();
    for (auto& th : threads) th.join();
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    EXPECT_EQ(failures.load(), 0);
    SqliteVaultStats after = v->GetStats();
    double ops = static_cast<double>(per_thread) * nthreads;
    return {ops / secs, ops / static_cast<double>(after.commits - before.commits)};
  };
  std::printf("durable PutPackage, 8 KB bodies, %d uploads per run, median of 3\n", total_ops);
  std::printf("%8s %16s %12s %16s %12s %8s\n", "threads", "unbatched ops/s", "calls/commit",
              "batched ops/s", "calls/commit", "speedup");
  for (int nthreads : {8, 32, 64}) {
    double median[2][2];
    for (bool group_commit : {false, true}) {
      std::vector<std::pair<double, double>> runs;
      for (int run = 0; run < 3; ++run) runs.push_back(run_once(group_commit, nthreads, run));
      std::sort(runs.begin(), runs.end());
      median[group_commit][0] = runs[1].first;
      median[group_commit][1] = runs[1].second;
    }
    std::printf("%8d %16.0f %12.1f %16.0f %12.1f %7.1fx\n", nthreads, median[0][0], median[0][1],
                median[1][0], median[1][1], median[1][0] / median[0][0]);
  }
}

}  // namespace
}  // namespace tpmma::storage::testing
