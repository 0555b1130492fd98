// SPDX-License-Identifier: GPL-2.0-or-later
// The MA completes EK chains itself: swtpm's EK certificate is issued by an intermediate
// (swtpm-localca); with only `ma-admin init --ek-root ROOT` lms is refused with the missing
// issuer and the command in words, `ma-admin ek check` says why, and after `ma-admin ek-trust
// add --intermediate` and a restart lms authenticates without sending the intermediate.
#include "tests/lms/lms_ma_fixture.h"
#include "tpm/esys/esys.h"

namespace tpmma::lms {
namespace {

Ran Admin(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {MA_ADMIN_PATH};
  argv.insert(argv.end(), args.begin(), args.end());
  return Exec(argv);
}

std::string SubjectOf(const std::string& pem_file) {
  auto r =
      RunCommand({"openssl", "x509", "-noout", "-subject", "-nameopt", "RFC2253", "-in", pem_file});
  std::string s = r.output.substr(r.output.find('=') + 1);
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
  return s;
}

TEST(LmsMaEkTrustTest, IntermediateGivenOnlyToTheMa) {
  std::string why;
  Swtpm* t = testing::SharedSwtpm(0, &why);
  if (t == nullptr) GTEST_SKIP() << why;
  TempDir dir;
  auto ma =
      MaInstance::Start({MA_ADMIN_PATH, MA_SERVER_PATH}, dir.path(), {t->RootCaCertPath()}, &why);
  ASSERT_NE(ma, nullptr) << why;
  const std::string state = ma->state_dir();
  const std::string inter = t->IntermediateCaCertPath();
  const std::string issuer = SubjectOf(inter);
  ASSERT_FALSE(issuer.empty());
  const std::string ek = dir.File("ek.der");
  {
    auto tpm = esys::Tpm::Open(t->tcti());
    ASSERT_TRUE(tpm.has_value());
    auto cert = (*tpm)->ReadEkCertificate();
    ASSERT_TRUE(cert.has_value());
    Spit(ek, ToString(*cert));
  }
  const Lms lms{dir.File("store"), t->tcti(), {"--ma", ma->url(), "--ma-ca", ma->ca_file()}};

  // Only the root: refused, in words, naming the intermediate and the command.
  Ran r = lms({"authenticate"});
  EXPECT_EQ(r.exit_code, 1) << r.all();
  EXPECT_NE(r.all().find("missing issuer '" + issuer + "'"), std::string::npos) << r.all();
  EXPECT_NE(r.all().find("ma-admin ek-trust add --intermediate FILE"), std::string::npos)
      << r.all();
  r = Admin({"ek", "check", ek, "--dir", state});
  EXPECT_EQ(r.exit_code, 1) << r.all();
  EXPECT_NE(r.all().find("missing issuer '" + issuer + "'"), std::string::npos) << r.all();
  r = Admin({"ek", "check", ek, "--chain", inter, "--dir", state});
  EXPECT_EQ(r.exit_code, 0) << r.all();
  EXPECT_NE(r.out.find("sent"), std::string::npos) << r.out;

  // Refusals: the intermediate as a root, the EK certificate, garbage.
  EXPECT_FAILS_WITH(Admin({"ek-trust", "add", "--root", inter, "--dir", state}), 1,
                    "add it with --intermediate");
  EXPECT_FAILS_WITH(Admin({"ek-trust", "add", "--intermediate", ek, "--dir", state}), 1,
                    "is not a CA certificate");
  Spit(dir.File("junk.pem"), "junk");
  EXPECT_FAILS_WITH(Admin({"ek-trust", "add", "--root", dir.File("junk.pem"), "--dir", state}), 1,
                    "is not an X.509 certificate");
  EXPECT_EQ(Admin({"ek-trust", "add", "--dir", state}).exit_code, 2);

  r = Admin({"ek-trust", "add", "--intermediate", inter, "--dir", state});
  ASSERT_EQ(r.exit_code, 0) << r.all();
  json check = ParseJson(Admin({"--json", "ek", "check", ek, "--dir", state}));
  ASSERT_EQ(check["path"].size(), 3u) << check.dump();
  EXPECT_EQ(check["path"][1]["from"], "pool");
  EXPECT_EQ(check["path"][1]["subject"], issuer);
  EXPECT_EQ(check["anchor"]["from"], "root");
  json list = ParseJson(Admin({"--json", "ek-trust", "list", "--dir", state}));
  std::string fingerprint;
  for (const json& e : list["ek_trust"]) {
    if (e["kind"] == "intermediate") fingerprint = e["fingerprint"];
  }
  ASSERT_EQ(fingerprint.size(), 64u) << list.dump();

  // ma-server reads its EK trust at start; the endpoint sends no intermediate.
  ASSERT_TRUE(ma->Restart(&why)) << why;
  const Lms again{lms.store, t->tcti(), {"--ma", ma->url(), "--ma-ca", ma->ca_file()}};
  json auth = again.Json({"authenticate"});
  EXPECT_FALSE(auth.value("platform_id", "").empty()) << auth.dump();

  // Removed again: refused again after the next start.
  r = Admin({"ek-trust", "remove", fingerprint, "--dir", state});
  ASSERT_EQ(r.exit_code, 0) << r.all();
  ASSERT_TRUE(ma->Restart(&why)) << why;
  const Lms third{lms.store, t->tcti(), {"--ma", ma->url(), "--ma-ca", ma->ca_file()}};
  EXPECT_FAILS_WITH(third({"authenticate"}), 1, "missing issuer '" + issuer + "'");
}

}  // namespace
}  // namespace tpmma::lms
