// SPDX-License-Identifier: GPL-2.0-or-later
// SqliteVault: the shared conformance suite, plus what only a file-backed vault has
// (crash safety, file identity and versions, tampering with the file, permissions).
#include "storage/sqlite_vault.h"

#include <signal.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>

#include "tests/storage/vault_test.h"

namespace tpmma::storage::testing {
namespace {

constexpr int64_t kNow = 1'800'000'000;

std::string DbPath(const std::string& dir) {
  return dir + "/vault.db";
}

INSTANTIATE_TEST_SUITE_P(Sqlite, VaultTest,
                         ::testing::Values(VaultBackend{
                             "Sqlite",
                             [](const std::string& dir) -> Result<std::unique_ptr<Vault>> {
                               auto v = SqliteVault::Open(DbPath(dir));
                               if (!v) return Error(v.error());
                               return std::unique_ptr<Vault>(std::move(*v));
                             }}),
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
  EXPECT_EQ(steps, (std::vector<std::string>{"package_row", "package_body", "package_key",
                                             "package_key", "package_key", "before_commit"}));
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

}  // namespace
}  // namespace tpmma::storage::testing
