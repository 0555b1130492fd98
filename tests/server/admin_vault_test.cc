// SPDX-License-Identifier: GPL-2.0-or-later
// ma-admin vault backup / restore / migrate, run as the real binary against a state
// directory made by `ma-admin init` and filled through the Vault; migrate into a throw-away
// PostgreSQL cluster (tests/support/postgres.h), skipped without one.
#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <thread>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "server/admin_init.h"
#include "server/config.h"
#include "storage/postgres_vault.h"
#include "storage/sqlite_backup.h"
#include "storage/sqlite_vault.h"
#include "tests/server/tls_client.h"
#include "tests/storage/vault_fill.h"
#include "tests/support/ma_process.h"
#include "tests/support/postgres.h"
#include "tests/support/testutil.h"

namespace tpmma::server {
namespace {

using nlohmann::json;
using tpmma::testing::CommandResult;
using tpmma::testing::PostgresCluster;
using tpmma::testing::RunCommand;
using tpmma::testing::TempDir;

class AdminVaultTest : public ::testing::Test {
 protected:
  void SetUp() override {
    InitOptions o;
    o.dir = dir_;
    o.listen_port = 0;
    auto report = InitMaState(o, Env::Default());
    ASSERT_TRUE(report.has_value()) << report.error().ToString();
    auto cfg = LoadConfig(dir_ + "/config.toml");
    ASSERT_TRUE(cfg.has_value());
    vault_path_ = cfg->vault_path;
    auto vault = storage::SqliteVault::Open(vault_path_);
    ASSERT_TRUE(vault.has_value());
    ASSERT_NO_FATAL_FAILURE(storage::testing::FillVault(**vault));
  }

  CommandResult Admin(std::vector<std::string> args) {
    args.insert(args.begin(), MA_ADMIN_PATH);
    args.push_back("--dir");
    args.push_back(dir_);
    return RunCommand(args);
  }
  json AdminJson(std::vector<std::string> args) {
    args.insert(args.begin(), "--json");
    CommandResult r = Admin(args);
    EXPECT_EQ(r.exit_code, 0) << r.output;
    return json::parse(r.output, nullptr, false);
  }
  static bool Has(const CommandResult& r, std::string_view words) {
    return r.output.find(words) != std::string::npos;
  }
  // The config pointed at PostgreSQL instead of vault.db.
  void UsePostgres(const std::string& url) {
    std::string toml = testing::Slurp(dir_ + "/config.toml");
    auto at = toml.find("[vault]\n");
    ASSERT_NE(at, std::string::npos) << toml;
    toml.insert(at + 8, "url = \"" + url + "\"\n");
    testing::Spit(dir_ + "/config.toml", toml);
  }

  TempDir tmp_;
  std::string dir_ = tmp_.File("ma");
  std::string vault_path_;
};

TEST_F(AdminVaultTest, BackupIsCheckedPrivateAndNeverOverwrites) {
  const std::string out = tmp_.File("backup.db");
  CommandResult r = Admin({"vault", "backup", "--out", out});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(Has(r, "(checked)")) << r.output;
  EXPECT_TRUE(Has(r, "audit chain:  verified")) << r.output;
  EXPECT_TRUE(Has(r, "MA key ma-1 private key: " + dir_ + "/ma/ma-key.pem")) << r.output;
  EXPECT_TRUE(Has(r, "escrow key")) << r.output;
  struct stat st {};
  ASSERT_EQ(::stat(out.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);

  const Bytes first = testing::ReadFileOrDie(out);
  r = Admin({"vault", "backup", "--out", out});
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(Has(r, "exists")) << r.output;
  EXPECT_EQ(testing::ReadFileOrDie(out), first);

  // Recorded in the live log, after the copy's head.
  json j = AdminJson({"vault", "backup", "--out", tmp_.File("second.db")});
  auto vault = storage::SqliteVault::Open(vault_path_);
  ASSERT_TRUE(vault.has_value());
  auto head = (*vault)->GetAuditHead();
  ASSERT_TRUE(head.has_value());
  auto last = (*vault)->GetAuditRecord(head->seq);
  ASSERT_TRUE(last.has_value());
  EXPECT_EQ(last->event.action, "Vault.Backup");
  EXPECT_EQ(j["head_seq"], head->seq - 1) << j.dump();
}

TEST_F(AdminVaultTest, RestoreRoundTripAndDamagedBackupRefused) {
  const std::string out = tmp_.File("backup.db");
  json backup = AdminJson({"vault", "backup", "--out", out});
  ASSERT_TRUE(backup.contains("head_hash")) << backup.dump();

  CommandResult r = Admin({"vault", "restore", "--from", out});
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(Has(r, "--force")) << r.output;

  // A damaged backup: refused, the vault untouched.
  Bytes bad = testing::ReadFileOrDie(out);
  bad.resize(bad.size() / 2);
  testing::WriteFileOrDie(tmp_.File("bad.db"), bad);
  const Bytes before = testing::ReadFileOrDie(vault_path_);
  r = Admin({"vault", "restore", "--from", tmp_.File("bad.db"), "--force"});
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_EQ(testing::ReadFileOrDie(vault_path_), before);

  json restored = AdminJson({"vault", "restore", "--from", out, "--force"});
  EXPECT_EQ(restored["head_hash"], backup["head_hash"]) << restored.dump();
  EXPECT_EQ(Admin({"audit", "verify"}).exit_code, 0);
  auto vault = storage::SqliteVault::Open(vault_path_);
  ASSERT_TRUE(vault.has_value());
  auto head = (*vault)->GetAuditHead();
  ASSERT_TRUE(head.has_value());
  EXPECT_EQ((*vault)->GetAuditRecord(head->seq)->event.action, "Vault.Restore");
  // The backup was taken before its own Vault.Backup record: the restored log ends there.
  EXPECT_EQ((*vault)->GetAuditRecord(head->seq - 1)->hash,
            *HexDecode(backup["head_hash"].get<std::string>()));
}

TEST_F(AdminVaultTest, APostgresVaultIsBackedUpWithPgDump) {
  UsePostgres("host=/nonexistent dbname=tpmma");
  CommandResult r = Admin({"vault", "backup", "--out", tmp_.File("x.db")});
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(Has(r, "pg_dump")) << r.output;
  r = Admin({"vault", "restore", "--from", tmp_.File("x.db")});
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(Has(r, "pg_restore")) << r.output;
  EXPECT_FALSE(std::filesystem::exists(tmp_.File("x.db")));
}

// The real ma-server answering (and auditing) GetMAKey on one connection meanwhile: the
// backup is taken and checked; restore and migrate refuse the vault it has open.
TEST(AdminVaultServerTest, BackupWhileMaServerWritesAndRestoreRefused) {
  TempDir d;
  std::string why;
  auto ma = testing::MaInstance::Start({MA_ADMIN_PATH, MA_SERVER_PATH}, d.path(), {}, &why);
  ASSERT_NE(ma, nullptr) << why;
  const std::string body =
      "<?xml version=\"1.0\" encoding=\"UTF-8\"?><SOAP-ENV:Envelope "
      "xmlns:SOAP-ENV=\"http://schemas.xmlsoap.org/soap/envelope/\" "
      "xmlns:ma=\"urn:tpm-ma:migration:1\"><SOAP-ENV:Body><ma:GetMAKeyRequest><ma:KeyId>ma-1"
      "</ma:KeyId></ma:GetMAKeyRequest></SOAP-ENV:Body></SOAP-ENV:Envelope>";
  std::atomic<bool> stop{false};
  std::atomic<int> answered{0};
  std::thread load([&] {
    testing::TlsClient c;
    if (!c.Connect(ma->port())) return;
    while (!stop.load()) {
      if (!c.RoundTrip(testing::PostRequest("/", body))) return;
      ++answered;
    }
  });
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (answered.load() < 50 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  const int before = answered.load();
  const std::string out = d.File("live.db");
  CommandResult backup = RunCommand(
      {MA_ADMIN_PATH, "--json", "vault", "backup", "--out", out, "--dir", ma->state_dir()});
  CommandResult restore = RunCommand(
      {MA_ADMIN_PATH, "vault", "restore", "--from", out, "--force", "--dir", ma->state_dir()});
  CommandResult migrate = RunCommand({MA_ADMIN_PATH, "vault", "migrate", "--to",
                                      "host=/nonexistent dbname=x", "--dir", ma->state_dir()});
  stop = true;
  load.join();
  EXPECT_GE(before, 50) << "the server did not answer";
  EXPECT_GT(answered.load(), before);
  EXPECT_EQ(ma->Stop(), 0);

  ASSERT_EQ(backup.exit_code, 0) << backup.output;
  EXPECT_EQ(restore.exit_code, 1) << restore.output;
  EXPECT_NE(restore.output.find("in use"), std::string::npos) << restore.output;
  EXPECT_EQ(migrate.exit_code, 1) << migrate.output;
  EXPECT_NE(migrate.output.find("in use"), std::string::npos) << migrate.output;
  auto copy = storage::CheckSqliteVaultFile(out);
  ASSERT_TRUE(copy.has_value()) << copy.error().ToString();
  EXPECT_GT(copy->chain.last_seq, 10);
}

class AdminMigrateTest : public AdminVaultTest {
 protected:
  void SetUp() override {
    if (std::string why = PostgresCluster::SkipReason(); !why.empty()) GTEST_SKIP() << why;
    auto c = PostgresCluster::Shared();
    ASSERT_TRUE(c.has_value()) << c.error().ToString();
    cluster_ = *c;
    db_ = std::string("cli_") + ::testing::UnitTest::GetInstance()->current_test_info()->name();
    std::transform(db_.begin(), db_.end(), db_.begin(),
                   [](unsigned char ch) { return static_cast<char>(std::tolower(ch)); });
    ASSERT_TRUE(cluster_->DropDatabase(db_).ok());
    ASSERT_TRUE(cluster_->CreateDatabase(db_).ok());
    AdminVaultTest::SetUp();
  }
  PostgresCluster* cluster_ = nullptr;
  std::string db_;
};

TEST_F(AdminMigrateTest, MigrateCopiesTheVaultAndTheMaRunsOnIt) {
  CommandResult r = Admin({"vault", "migrate", "--to", cluster_->ConnInfo(db_)});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(Has(r, "verified on PostgreSQL")) << r.output;
  EXPECT_TRUE(Has(r, "package_bodies")) << r.output;

  auto sqlite = storage::SqliteVault::Open(vault_path_);
  ASSERT_TRUE(sqlite.has_value());
  auto head = (*sqlite)->GetAuditHead();
  ASSERT_TRUE(head.has_value());
  EXPECT_TRUE(Has(r, HexEncode(head->hash))) << r.output;
  sqlite->reset();

  // Migrating twice: the target is a vault now, refused and left as it is.
  const std::string rows = *cluster_->QueryValue(db_, "SELECT count(*) FROM audit_log");
  r = Admin({"vault", "migrate", "--to", cluster_->ConnInfo(db_)});
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(Has(r, "already holds a tpm-ma vault")) << r.output;
  EXPECT_EQ(*cluster_->QueryValue(db_, "SELECT count(*) FROM audit_log"), rows);

  // The MA on PostgreSQL: the same packages, the chain verifies with the same head.
  ASSERT_NO_FATAL_FAILURE(UsePostgres(cluster_->ConnInfo(db_)));
  EXPECT_EQ(Admin({"audit", "verify"}).exit_code, 0);
  json pk = AdminJson({"packages", "list"});
  EXPECT_EQ(pk["packages"].size(), 3u) << pk.dump();
  auto pg = storage::PostgresVault::Open(cluster_->ConnInfo(db_));
  ASSERT_TRUE(pg.has_value());
  auto pg_head = (*pg)->GetAuditHead();
  ASSERT_TRUE(pg_head.has_value());
  EXPECT_EQ(pg_head->seq, head->seq);
  EXPECT_EQ(pg_head->hash, head->hash);
  EXPECT_EQ(pg_head->vault_id, head->vault_id);
}

TEST_F(AdminMigrateTest, PasswordsStayOutOfArgvAndMessages) {
  const std::string secret = "hunter2-" + db_;
  CommandResult r =
      Admin({"vault", "migrate", "--to", cluster_->ConnInfo(db_) + " password=" + secret});
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(Has(r, "must not contain a password")) << r.output;
  EXPECT_FALSE(Has(r, secret)) << r.output;

  const std::string pw = tmp_.File("pw");
  testing::Spit(pw, secret + "\n");
  ::chmod(pw.c_str(), 0644);
  r = Admin({"vault", "migrate", "--to", cluster_->ConnInfo(db_), "--password-file", pw});
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_FALSE(Has(r, secret)) << r.output;
  EXPECT_EQ(*cluster_->QueryValue(
                db_, "SELECT count(*) FROM pg_tables WHERE schemaname = current_schema()"),
            "0");
  ::chmod(pw.c_str(), 0600);
  r = Admin({"vault", "migrate", "--to", cluster_->ConnInfo(db_), "--password-file", pw});
  EXPECT_EQ(r.exit_code, 0) << r.output;  // trust authentication: the password is not asked
  EXPECT_FALSE(Has(r, secret)) << r.output;
}

}  // namespace
}  // namespace tpmma::server
