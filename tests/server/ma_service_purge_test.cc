// SPDX-License-Identifier: GPL-2.0-or-later
// The MA service's background purge: expired sessions disappear from the vault without any
// request, live ones stay.
#include <sys/stat.h>

#include <chrono>
#include <thread>

#include <gtest/gtest.h>

#include "server/ma_key.h"
#include "server/ma_service.h"
#include "storage/sqlite_vault.h"
#include "tests/support/testutil.h"

namespace tpmma::server {
namespace {

using testing::RunCommand;
using testing::TempDir;

TEST(MaServicePurge, ExpiredSessionsAreDeletedInTheBackground) {
  TempDir dir;
  auto r =
      RunCommand({"openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                  dir.File("ma.key"), "-out", dir.File("ma.crt"), "-subj", "/CN=ma", "-days", "2"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  ::chmod(dir.File("ma.key").c_str(), 0600);
  auto custody = LoadSoftwareMaKey("ma-1", dir.File("ma.key"), dir.File("ma.crt"), Env::Default());
  ASSERT_TRUE(custody.has_value()) << custody.error().ToString();
  auto vault = storage::SqliteVault::Open(dir.File("vault.db"));
  ASSERT_TRUE(vault.has_value());

  const int64_t now = Env::Default()->NowUnixSeconds();
  storage::Platform p;
  p.id = "000b" + std::string(64, 'a');
  p.ek_public = Bytes(10, 1);
  p.ek_certificate = Bytes(10, 2);
  p.ak_public = Bytes(10, 3);
  p.ak_name = Bytes(34, 4);
  p.created_at = p.last_seen_at = now;
  ASSERT_TRUE((*vault)->UpsertPlatform(p, std::nullopt).has_value());
  const Bytes expired(32, 0xee), live(32, 0x11);
  ASSERT_TRUE((*vault)
                  ->CreateSession({.token_hash = expired,
                                   .platform_id = p.id,
                                   .created_at = now - 100,
                                   .expires_at = now - 10},
                                  std::nullopt)
                  .ok());
  ASSERT_TRUE((*vault)
                  ->CreateSession({.token_hash = live,
                                   .platform_id = p.id,
                                   .created_at = now,
                                   .expires_at = now + 3600},
                                  std::nullopt)
                  .ok());
  EXPECT_EQ((*vault)->GetSession(expired, now).error().code(), Code::kExpired);  // still there

  Config cfg;
  cfg.ek_roots = {dir.File("ma.crt")};  // any CA certificate: nothing authenticates here
  cfg.max_body_bytes = 1 << 20;
  MaServiceOptions options;
  options.purge_interval_s = 1;
  auto ep = MakeMaService(cfg, Env::Default(), vault->get(), custody->get(), options);
  ASSERT_TRUE(ep.has_value()) << ep.error().ToString();

  // Wait for the condition (the row gone), not for a fixed time.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  Code code = Code::kExpired;
  while (std::chrono::steady_clock::now() < deadline) {
    code = (*vault)->GetSession(expired, Env::Default()->NowUnixSeconds()).error().code();
    if (code == Code::kNotFound) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(code, Code::kNotFound) << "the expired session was never purged";
  EXPECT_TRUE((*vault)->GetSession(live, Env::Default()->NowUnixSeconds()).has_value());
  ep->reset();  // stops the purge thread before the vault goes
}

}  // namespace
}  // namespace tpmma::server
