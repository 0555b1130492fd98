// SPDX-License-Identifier: GPL-2.0-or-later
// The real ma-server on PostgreSQL (issue #14): a throw-away cluster (tests/support/postgres.h),
// `ma-admin init` then `[vault] url` pointing at it; an lms store on swtpm authenticates and
// backs up, and the platform and package are then rows in PostgreSQL, read by ma-admin
// through the same config, with the audit chain verified there.
#include "tests/lms/lms_ma_fixture.h"
#include "tests/server/tls_client.h"
#include "tests/support/postgres.h"

namespace tpmma::lms {
namespace {

using testing::PostgresCluster;

constexpr char kDb[] = "ma_e2e";

TEST(LmsMaPostgresTest, UploadLandsInPostgresAndHealthFollowsTheServer) {
  auto cluster = PostgresCluster::Shared();
  ASSERT_TRUE(cluster.has_value()) << cluster.error().ToString();
  if (*cluster == nullptr) GTEST_SKIP() << PostgresCluster::SkipReason();
  PostgresCluster* pg = *cluster;
  std::string why;
  Swtpm* tpm = testing::SharedSwtpm(0, &why);
  if (tpm == nullptr) GTEST_SKIP() << "swtpm not available: " << why;
  ASSERT_TRUE(pg->DropDatabase(kDb).ok());
  ASSERT_TRUE(pg->CreateDatabase(kDb).ok());

  TempDir dir;
  const std::string roots = dir.File("ek-roots.pem");
  Spit(roots, Slurp(tpm->RootCaCertPath()));
  auto ma = MaInstance::Start({MA_ADMIN_PATH, MA_SERVER_PATH}, dir.path(), {roots}, &why, {},
                              pg->ConnInfo(kDb));
  ASSERT_NE(ma, nullptr) << why;
  Ran check = Exec({MA_SERVER_PATH, "--check-config", "--config", ma->config_path()});
  EXPECT_EQ(check.exit_code, 0) << check.all();

  testing::TlsClient health;
  ASSERT_TRUE(health.Connect(ma->port())) << health.error();
  auto res = health.RoundTrip(testing::GetRequest("/healthz"));
  ASSERT_TRUE(res.has_value()) << health.error();
  EXPECT_EQ(res->status, 200u) << res->body;

  // The MA settings go to init only: the store records them for backup.
  Lms store{dir.File("store"), tpm->tcti(), {}};
  Ran r = store({"init", "--json", "--ma", ma->url(), "--ma-ca", ma->ca_file(), "--ek-intermediate",
                 tpm->IntermediateCaCertPath()});
  ASSERT_EQ(r.exit_code, 0) << r.all();
  r = store({"keygen", "--type", "ecc-sign", "--label", "vpn", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.all();
  json backup = store.Json({"backup"});
  ASSERT_TRUE(backup.value("uploaded", false)) << backup.dump();

  auto packages = pg->QueryValue(kDb, "SELECT count(*) FROM packages");
  ASSERT_TRUE(packages.has_value()) << packages.error().ToString();
  EXPECT_EQ(*packages, "1");
  auto platforms = pg->QueryValue(kDb, "SELECT count(*) FROM platforms");
  ASSERT_TRUE(platforms.has_value());
  EXPECT_EQ(*platforms, "1");
  auto keys = pg->QueryValue(kDb, "SELECT count(*) FROM package_keys");
  ASSERT_TRUE(keys.has_value());
  EXPECT_NE(*keys, "0");

  // ma-admin opens the same backend from the same config: it sees the package, and the
  // chain it verifies is PostgreSQL's.
  Ran list = Exec({MA_ADMIN_PATH, "--json", "packages", "list", "--dir", ma->state_dir()});
  ASSERT_EQ(list.exit_code, 0) << list.all();
  auto id = pg->QueryValue(kDb, "SELECT package_id FROM packages");
  ASSERT_TRUE(id.has_value());
  EXPECT_NE(list.out.find(*id), std::string::npos) << list.out;
  Ran verify = Exec({MA_ADMIN_PATH, "audit", "verify", "--dir", ma->state_dir()});
  EXPECT_EQ(verify.exit_code, 0) << verify.all();
  EXPECT_EQ(ma->Stop(), 0);
}

}  // namespace
}  // namespace tpmma::lms
