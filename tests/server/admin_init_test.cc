// SPDX-License-Identifier: GPL-2.0-or-later
#include "server/admin_init.h"

#include <sys/stat.h>

#include <gtest/gtest.h>

#include "server/config.h"
#include "server/pki.h"
#include "storage/sqlite_vault.h"
#include "tests/support/testutil.h"

namespace tpmma::server {
namespace {

using tpmma::testing::RunCommand;
using tpmma::testing::TempDir;

uint32_t Mode(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return 0xffffffff;
  return st.st_mode & 0777;
}

class AdminInitTest : public ::testing::Test {
 protected:
  InitOptions Options() {
    InitOptions o;
    o.dir = tmp_.File("ma");
    o.listen_port = 9443;
    return o;
  }
  TempDir tmp_;
};

TEST_F(AdminInitTest, CreatesAWorkingStateDirectoryWithSafePermissions) {
  auto report = InitMaState(Options(), Env::Default());
  ASSERT_TRUE(report.has_value()) << report.error().ToString();
  const std::string dir = tmp_.File("ma");
  EXPECT_EQ(report->url, "https://127.0.0.1:9443/");
  EXPECT_EQ(report->ma_name_hex.size(), 68u);  // 000b || SHA-256
  EXPECT_EQ(report->ma_name_hex.substr(0, 4), "000b");

  EXPECT_EQ(Mode(dir), 0700u);
  for (const char* secret : {"/ca/ca-key.pem", "/ma/ma-key.pem", "/escrow/escrow-key.pem",
                             "/tls/server-key.pem", "/config.toml", "/vault.db"}) {
    EXPECT_EQ(Mode(dir + secret), 0600u) << secret;
  }
  for (const char* pub :
       {"/ca/ca-cert.pem", "/ma/ma-cert.pem", "/escrow/escrow-cert.pem", "/tls/server-cert.pem"}) {
    EXPECT_EQ(Mode(dir + pub), 0644u) << pub;
  }

  // An independent tool agrees that the CA issued both certificates.
  for (const char* leaf : {"/tls/server-cert.pem", "/ma/ma-cert.pem", "/escrow/escrow-cert.pem"}) {
    auto r = RunCommand({"openssl", "verify", "-CAfile", dir + "/ca/ca-cert.pem", dir + leaf});
    EXPECT_EQ(r.exit_code, 0) << r.output;
  }
  auto tls = RunCommand({"openssl", "x509", "-in", dir + "/tls/server-cert.pem", "-noout", "-ext",
                         "subjectAltName,extendedKeyUsage"});
  EXPECT_NE(tls.output.find("IP Address:127.0.0.1"), std::string::npos) << tls.output;
  EXPECT_NE(tls.output.find("TLS Web Server Authentication"), std::string::npos) << tls.output;

  // The MA certificate certifies the MA key, not some other key.
  auto key_pub = RunCommand({"openssl", "pkey", "-in", dir + "/ma/ma-key.pem", "-pubout"});
  auto cert_pub =
      RunCommand({"openssl", "x509", "-in", dir + "/ma/ma-cert.pem", "-noout", "-pubkey"});
  EXPECT_EQ(key_pub.output, cert_pub.output);
  // The escrow key is a key of its own (docs/operations.md: the MA key alone opens no package).
  auto escrow_pub =
      RunCommand({"openssl", "pkey", "-in", dir + "/escrow/escrow-key.pem", "-pubout"});
  EXPECT_EQ(escrow_pub.exit_code, 0) << escrow_pub.output;
  EXPECT_NE(escrow_pub.output, key_pub.output);
  EXPECT_EQ(report->escrow_key_id, "escrow-1");

  auto vault = storage::SqliteVault::Open(dir + "/vault.db");
  ASSERT_TRUE(vault.has_value()) << vault.error().ToString();
  auto audit = (*vault)->ListAudit({});
  ASSERT_TRUE(audit.has_value());
  ASSERT_EQ(audit->records.size(), 2u);
  EXPECT_EQ(audit->records[0].event.action, storage::kAuditGenesisAction);
  EXPECT_EQ(audit->records[1].event.action, "InitMA");
  EXPECT_TRUE((*vault)->IntegrityCheck().ok());
  // The audit checkpoint key: its own file, owner-only, named in the config.
  EXPECT_EQ(Mode(dir + "/audit/checkpoint-key.pem"), 0600u);
  EXPECT_EQ(Mode(dir + "/audit/checkpoint-pub.pem"), 0644u);

  auto cfg = LoadConfig(dir + "/config.toml");
  ASSERT_TRUE(cfg.has_value()) << cfg.error().ToString();
  EXPECT_EQ(cfg->listen_port, 9443);
  EXPECT_EQ(cfg->ma.private_key, dir + "/ma/ma-key.pem");  // resolved against the file's dir
  EXPECT_EQ(cfg->vault_path, dir + "/vault.db");
  EXPECT_EQ(cfg->audit_checkpoint_key, dir + "/audit/checkpoint-key.pem");
  EXPECT_EQ(cfg->audit_checkpoint_dir, dir + "/audit/checkpoints");
  EXPECT_EQ(cfg->escrow.custody, "software");
  EXPECT_EQ(cfg->escrow.private_key, dir + "/escrow/escrow-key.pem");
}

TEST_F(AdminInitTest, RefusesToOverwriteAnExistingMa) {
  ASSERT_TRUE(InitMaState(Options(), Env::Default()).has_value());
  auto key_before = tpmma::testing::ReadFileOrDie(tmp_.File("ma/ma/ma-key.pem"));
  auto again = InitMaState(Options(), Env::Default());
  ASSERT_FALSE(again.has_value());
  EXPECT_EQ(again.error().code(), Code::kAlreadyExists);
  EXPECT_NE(again.error().message().find("not empty"), std::string::npos);
  EXPECT_EQ(tpmma::testing::ReadFileOrDie(tmp_.File("ma/ma/ma-key.pem")), key_before);
}

TEST_F(AdminInitTest, CopiesEkRootsAndRefusesNonCertificates) {
  // A real root from our own PKI helper stands in for a manufacturer root.
  auto key = GenerateKey(KeyType::kEcP256);
  ASSERT_TRUE(key.has_value());
  auto cert = IssueCertificate({.common_name = "Test EK Root",
                                .profile = CertProfile::kCa,
                                .dns_names = {},
                                .ip_addresses = {},
                                .valid_days = 30},
                               key->get(), key->get(), nullptr);
  ASSERT_TRUE(cert.has_value());
  tpmma::testing::WriteFileOrDie(tmp_.File("root.pem"), View(*CertificateToPem(cert->get())));
  tpmma::testing::WriteFileOrDie(tmp_.File("junk.pem"), View("not a certificate"));

  // A second vendor's root with the same file name must not replace the first.
  ::mkdir(tmp_.File("vendor2").c_str(), 0700);
  auto key2 = GenerateKey(KeyType::kEcP256);
  ASSERT_TRUE(key2.has_value());
  auto cert2 = IssueCertificate({.common_name = "Second EK Root",
                                 .profile = CertProfile::kCa,
                                 .dns_names = {},
                                 .ip_addresses = {},
                                 .valid_days = 30},
                                key2->get(), key2->get(), nullptr);
  ASSERT_TRUE(cert2.has_value());
  tpmma::testing::WriteFileOrDie(tmp_.File("vendor2/root.pem"),
                                 View(*CertificateToPem(cert2->get())));

  InitOptions o = Options();
  o.ek_root_files = {tmp_.File("root.pem"), tmp_.File("vendor2/root.pem")};
  ASSERT_TRUE(InitMaState(o, Env::Default()).has_value());
  EXPECT_EQ(tpmma::testing::ReadFileOrDie(tmp_.File("ma/trust/ek-roots/1-root.pem")),
            tpmma::testing::ReadFileOrDie(tmp_.File("root.pem")));
  EXPECT_EQ(tpmma::testing::ReadFileOrDie(tmp_.File("ma/trust/ek-roots/2-root.pem")),
            tpmma::testing::ReadFileOrDie(tmp_.File("vendor2/root.pem")));

  o.dir = tmp_.File("ma2");
  o.ek_root_files = {tmp_.File("junk.pem")};
  auto bad = InitMaState(o, Env::Default());
  ASSERT_FALSE(bad.has_value());
  EXPECT_EQ(bad.error().code(), Code::kCryptoError);
  EXPECT_FALSE(Env::Default()->FileExists(tmp_.File("ma2/config.toml")));  // not an MA
}

TEST_F(AdminInitTest, CliPrintsWhereToPointClientsAndUsesExitCodes) {
  auto ok =
      RunCommand({MA_ADMIN_PATH, "init", "--dir", tmp_.File("cli"), "--listen", "127.0.0.1:8555"});
  EXPECT_EQ(ok.exit_code, 0) << ok.output;
  EXPECT_NE(ok.output.find("https://127.0.0.1:8555/"), std::string::npos) << ok.output;
  EXPECT_NE(ok.output.find("ca-cert.pem"), std::string::npos);
  EXPECT_EQ(ok.output.find("PRIVATE KEY"), std::string::npos);  // no secret on stdout

  auto again = RunCommand({MA_ADMIN_PATH, "--json", "init", "--dir", tmp_.File("cli")});
  EXPECT_EQ(again.exit_code, 1);
  EXPECT_NE(again.output.find("\"code\":\"AlreadyExists\""), std::string::npos) << again.output;

  auto usage = RunCommand({MA_ADMIN_PATH, "init", "--dir", tmp_.File("x"), "--listen", "nope"});
  EXPECT_EQ(usage.exit_code, 2) << usage.output;
  auto missing = RunCommand({MA_ADMIN_PATH, "init"});
  EXPECT_EQ(missing.exit_code, 2) << missing.output;
}

}  // namespace
}  // namespace tpmma::server
