// SPDX-License-Identifier: GPL-2.0-or-later
// A TPM without an EK certificate (issue #12): its own swtpm with the EK certificate NV
// indices removed, its own ma-server, the real lms and ma-admin. lms sends no certificate and
// says so; under the enrollment policy "open" the MA refuses it saying what to do; under
// "registered" a registration by EK certificate hash does not admit it, and one by the EK
// public that `lms ek public` wrote does: authenticate and a backup.
#include <fstream>
#include <sstream>

#include "tests/lms/lms_ma_fixture.h"
#include "tpm/esys/esys.h"

namespace tpmma::lms {
namespace {

Ran Admin(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {MA_ADMIN_PATH};
  argv.insert(argv.end(), args.begin(), args.end());
  return Exec(argv);
}

// [enrollment] policy in the MA's config.toml.
void SetPolicy(const std::string& config, const std::string& from, const std::string& to) {
  std::string text = Slurp(config);
  const std::string old_line = "policy = \"" + from + "\"";
  const size_t at = text.find(old_line);
  ASSERT_NE(at, std::string::npos) << text;
  text.replace(at, old_line.size(), "policy = \"" + to + "\"");
  Spit(config, text);
}

TEST(LmsMaNoEkCertTest, EnrollsOnlyByARegisteredEkPublic) {
  std::string why;
  auto t = testing::Swtpm::Start(&why);
  if (t == nullptr) GTEST_SKIP() << why;
  TempDir dir;
  auto ma =
      MaInstance::Start({MA_ADMIN_PATH, MA_SERVER_PATH}, dir.path(), {t->RootCaCertPath()}, &why);
  ASSERT_NE(ma, nullptr) << why;
  // The RSA certificate kept aside (to register by its hash below), then both removed.
  auto nv = t->Tools({"tpm2_nvread", "0x01c00002", "-C", "o", "-o", dir.File("ek.der")});
  ASSERT_EQ(nv.exit_code, 0) << nv.output;
  for (const char* index : {"0x01c00002", "0x01c00016"}) {
    nv = t->Tools({"tpm2_nvundefine", index, "-C", "p"});
    ASSERT_EQ(nv.exit_code, 0) << nv.output;
  }
  const Lms l{dir.File("store"), t->tcti(), {"--ma", ma->url(), "--ma-ca", ma->ca_file()}};

  // open: lms says it sends none; the MA's fault is shown as it is.
  Ran r = l({"authenticate"});
  EXPECT_EQ(r.exit_code, 1) << r.all();
  EXPECT_NE(r.err.find("this TPM has no EK certificate in NV and none is configured"),
            std::string::npos)
      << r.all();
  for (const char* hint : {"sent no EK certificate", "enrollment policy \"open\"", "lms ek fetch",
                           "ma-admin platforms register --ek-public FILE"}) {
    EXPECT_NE(r.all().find(hint), std::string::npos) << hint << ": " << r.all();
  }

  // The EK public for the administrator, as tpm2_readpublic -o writes it.
  json pub = l.Json({"ek", "public", "--out", dir.File("ek.pub")});
  EXPECT_EQ(pub.value("ek_template", ""), "L-1");
  EXPECT_EQ(pub.value("has_certificate", true), false);
  const std::string key_id = pub.value("ek_key_id", "");
  ASSERT_EQ(key_id.size(), 64u);
  auto made = t->Tools(
      {"tpm2_createek", "-c", dir.File("ek.ctx"), "-G", "rsa", "-u", dir.File("ek-tools.pub")});
  ASSERT_EQ(made.exit_code, 0) << made.output;
  EXPECT_EQ(Slurp(dir.File("ek.pub")), Slurp(dir.File("ek-tools.pub")));
  t->Tools({"tpm2_flushcontext", "-t"});

  SetPolicy(ma->config_path(), "open", "registered");
  ASSERT_TRUE(ma->Restart(&why)) << why;
  const Lms l2{l.store, t->tcti(), {"--ma", ma->url(), "--ma-ca", ma->ca_file()}};
  const std::string state = ma->state_dir();
  // By certificate hash: cannot admit a TPM that sends none.
  r = Admin({"platforms", "register", "--ek-cert", dir.File("ek.der"), "--dir", state});
  ASSERT_EQ(r.exit_code, 0) << r.all();
  EXPECT_FAILS_WITH(l2({"authenticate"}), 1, "a registration by EK certificate cannot admit");
  // By EK public: admitted, end to end.
  r = Admin({"platforms", "register", "--ek-public", dir.File("ek.pub"), "--dir", state});
  ASSERT_EQ(r.exit_code, 0) << r.all();
  r = Admin({"platforms", "registrations", "--dir", state});
  EXPECT_NE(r.out.find(key_id), std::string::npos) << r.all();  // lms and the MA agree
  json auth = l2.Json({"authenticate"});
  EXPECT_FALSE(auth.value("platform_id", "").empty()) << auth.dump();
  ASSERT_EQ(l2.Json({"init"}).value("ok", false), true);
  json backup = l2.Json({"backup"});
  EXPECT_FALSE(backup.value("package_id", "").empty()) << backup.dump();
}

}  // namespace
}  // namespace tpmma::lms
