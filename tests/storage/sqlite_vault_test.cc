// SPDX-License-Identifier: GPL-2.0-or-later
// SqliteVault: the shared conformance suite (with and without group commit), plus what
// only a file-backed vault has: crash safety, file identity and versions, tampering with
// the file, permissions. Group commit: sqlite_group_commit_test.cc; deferred audit records:
// sqlite_deferred_audit_test.cc; the writer on its own: sqlite_writer_test.cc.
#include "tests/storage/sqlite_test_support.h"

namespace tpmma::storage::testing {
namespace {

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
  EXPECT_EQ(raw.Count("SELECT count(*) FROM audit_log"), kGenesisRecords + 1);
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
  EXPECT_EQ(raw.Count("SELECT count(*) FROM audit_log"), 4);  // the genesis record and 3
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
  // The missing record is the finding named first; the missing trigger is one too
  // (sqlite_audit_anchor_test.cc).
  s = v->IntegrityCheck();
  EXPECT_EQ(s.code(), Code::kCorruption);
  EXPECT_NE(s.message().find("seq 2"), std::string::npos) << s.message();
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

// Migration 7 on a vault that schema 6 wrote: its platforms are kept, with no SRK until they
// next authenticate with one.
TEST_F(SqliteVaultTest, Schema6PlatformsGainAnEmptySrk) {
  {
    auto v = OpenOrDie(Path());
    ASSERT_TRUE(v->UpsertPlatform(MakePlatform("p-six"), std::nullopt).has_value());
  }
  {
    RawDb raw(Path());
    for (const char* sql :
         {"DROP INDEX packages_by_wrap_key",  // migration 8's
          "ALTER TABLE packages DROP COLUMN wrap_key_id",
          "ALTER TABLE packages DROP COLUMN wrap_duplicate",
          "ALTER TABLE packages DROP COLUMN wrap_seed",
          "ALTER TABLE platforms DROP COLUMN srk_public",
          "ALTER TABLE platforms DROP COLUMN srk_certified_at", "PRAGMA user_version = 6"}) {
      ASSERT_EQ(raw.Exec(sql), "") << sql;
    }
  }
  auto v = OpenOrDie(Path());
  auto p = v->GetPlatform("p-six");
  ASSERT_TRUE(p.has_value()) << p.error().ToString();
  EXPECT_FALSE(p->srk_public.has_value());
  EXPECT_EQ(p->srk_certified_at, 0);
  Platform again = MakePlatform("p-six");
  again.srk_public = ToBytes("srk");
  again.srk_certified_at = 1234;
  p = v->UpsertPlatform(again, std::nullopt);
  ASSERT_TRUE(p.has_value()) << p.error().ToString();
  EXPECT_EQ(p->srk_public, ToBytes("srk"));
  EXPECT_EQ(p->srk_certified_at, 1234);
  RawDb raw(Path());
  EXPECT_EQ(raw.Count("PRAGMA user_version"), SqliteVault::SchemaVersion());
}

}  // namespace
}  // namespace tpmma::storage::testing
