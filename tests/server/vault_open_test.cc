// SPDX-License-Identifier: GPL-2.0-or-later
// The vault the config names (server/vault_open.h): SQLite by default, PostgreSQL with
// vault.url, the password from an owner-only file and never in a message; and whether it
// answers, as /healthz learns it (server/vault_health.h), on both backends.
#include "server/vault_open.h"

#include <sys/stat.h>

#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include "common/env.h"
#include "server/vault_health.h"
#include "tests/support/postgres.h"
#include "tests/support/testutil.h"

namespace tpmma::server {
namespace {

using std::chrono::milliseconds;
using testing::PostgresCluster;

constexpr char kSecret[] = "s3cret-Pa55word";

void WriteSecret(const std::string& path, mode_t mode) {
  std::string text = std::string(kSecret) + "\n";
  testing::WriteFileOrDie(path,
                          ByteView(reinterpret_cast<const uint8_t*>(text.data()), text.size()));
  ASSERT_EQ(::chmod(path.c_str(), mode), 0);
}

template <typename Pred>
bool Eventually(Pred pred, milliseconds timeout = milliseconds(5000)) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (pred()) return true;
    std::this_thread::sleep_for(milliseconds(20));
  }
  return pred();
}

// The cluster, or a skip message when PostgreSQL is not installed.
PostgresCluster* ClusterOrSkip(std::string* skip) {
  auto cluster = PostgresCluster::Shared();
  EXPECT_TRUE(cluster.has_value()) << cluster.error().ToString();
  if (!cluster || *cluster == nullptr) {
    *skip = cluster ? PostgresCluster::SkipReason() : "cluster failed";
    return nullptr;
  }
  return *cluster;
}

TEST(VaultOpenTest, WithoutUrlTheVaultIsSqliteAtThePath) {
  testing::TempDir dir;
  Config cfg;
  cfg.vault_path = dir.File("vault.db");
  auto vault = OpenVault(cfg, Env::Default());
  ASSERT_TRUE(vault.has_value()) << vault.error().ToString();
  EXPECT_TRUE((*vault)->GetAuditHead().has_value());
  struct stat st {};
  EXPECT_EQ(::stat(cfg.vault_path.c_str(), &st), 0);
  VaultHealth health(vault->get(), {.interval = milliseconds(50), .max_age = milliseconds(500)});
  EXPECT_TRUE(health.Answering());
  std::this_thread::sleep_for(milliseconds(200));
  EXPECT_TRUE(health.Answering());
}

TEST(VaultOpenTest, AUrlWithAPasswordIsRefused) {
  Config cfg;
  cfg.vault_url = std::string("postgresql://ma:") + kSecret + "@127.0.0.1:1/tpmma";
  auto vault = OpenVault(cfg, Env::Default());
  ASSERT_FALSE(vault.has_value());
  EXPECT_EQ(vault.error().code(), Code::kInvalidArgument);
  EXPECT_NE(vault.error().message().find("vault.password_file"), std::string::npos)
      << vault.error().ToString();
  EXPECT_EQ(vault.error().ToString().find(kSecret), std::string::npos);
  cfg.vault_url = std::string("host=127.0.0.1 port=1 dbname=tpmma password=") + kSecret;
  vault = OpenVault(cfg, Env::Default());
  ASSERT_FALSE(vault.has_value());
  EXPECT_EQ(vault.error().code(), Code::kInvalidArgument);
  EXPECT_EQ(vault.error().ToString().find(kSecret), std::string::npos);
}

TEST(VaultOpenTest, APasswordFileOthersCanReadIsRefused) {
  testing::TempDir dir;
  Config cfg;
  cfg.vault_url = "postgresql://ma@127.0.0.1:1/tpmma";
  cfg.vault_password_file = dir.File("vault-password");
  WriteSecret(cfg.vault_password_file, 0644);
  auto vault = OpenVault(cfg, Env::Default());
  ASSERT_FALSE(vault.has_value());
  EXPECT_EQ(vault.error().code(), Code::kPermissionDenied);
  EXPECT_NE(vault.error().message().find("chmod 600"), std::string::npos);
  // Owner-only: read, and the connection to a closed port fails without the password.
  ASSERT_EQ(::chmod(cfg.vault_password_file.c_str(), 0600), 0);
  vault = OpenVault(cfg, Env::Default());
  ASSERT_FALSE(vault.has_value());
  EXPECT_EQ(vault.error().code(), Code::kUnavailable) << vault.error().ToString();
  EXPECT_EQ(vault.error().ToString().find(kSecret), std::string::npos);
  EXPECT_NE(vault.error().ToString().find("vault.url"), std::string::npos);
}

TEST(VaultOpenTest, WithUrlTheVaultIsPostgresAndHealthFollowsIt) {
  std::string skip;
  PostgresCluster* cluster = ClusterOrSkip(&skip);
  if (cluster == nullptr) GTEST_SKIP() << skip;
  ASSERT_TRUE(cluster->DropDatabase("vault_open").ok());
  ASSERT_TRUE(cluster->CreateDatabase("vault_open").ok());
  testing::TempDir dir;
  Config cfg;
  cfg.vault_url = cluster->ConnInfo("vault_open");
  cfg.vault_password_file = dir.File("vault-password");  // trust auth: sent, not needed
  WriteSecret(cfg.vault_password_file, 0600);
  cfg.vault_read_connections = 2;
  ASSERT_TRUE(CheckVaultAnswers(cfg, Env::Default()).ok());
  auto vault = OpenVault(cfg, Env::Default());
  ASSERT_TRUE(vault.has_value()) << vault.error().ToString();
  ASSERT_TRUE((*vault)
                  ->AppendAudit({.time = 1,
                                 .actor = "t",
                                 .action = "Test",
                                 .object = "o",
                                 .outcome = "ok",
                                 .detail = ""})
                  .has_value());
  auto rows = cluster->QueryValue("vault_open", "SELECT count(*) FROM audit_log");
  ASSERT_TRUE(rows.has_value());
  EXPECT_EQ(*rows, "2");  // the genesis record and ours: it is PostgreSQL that holds them
  {
    VaultHealth health(vault->get(), {.interval = milliseconds(50), .max_age = milliseconds(500)});
    EXPECT_TRUE(health.Answering());
    // The database gone (its connections terminated): the next probe fails.
    ASSERT_TRUE(cluster->DropDatabase("vault_open").ok());
    EXPECT_TRUE(Eventually([&] { return !health.Answering(); }));
    ASSERT_TRUE(cluster->CreateDatabase("vault_open").ok());
  }
  // The URL form, with the password file: the password joins the parameters libpq parses
  // from the URL (host is the cluster's socket directory, percent-encoded).
  const std::string kw = cluster->ConnInfo("vault_open");
  const size_t h = kw.find("host='") + 6;
  std::string socket_dir = kw.substr(h, kw.find('\'', h) - h), encoded;
  for (char ch : socket_dir) encoded += ch == '/' ? std::string("%2F") : std::string(1, ch);
  Config by_url = cfg;
  by_url.vault_url = "postgresql://postgres@/vault_open?host=" + encoded + "&port=5432";
  ASSERT_TRUE(CheckVaultAnswers(by_url, Env::Default()).ok()) << by_url.vault_url;
  Config missing;
  missing.vault_url = cluster->ConnInfo("no_such_db");
  EXPECT_FALSE(CheckVaultAnswers(missing, Env::Default()).ok());
}

}  // namespace
}  // namespace tpmma::server
