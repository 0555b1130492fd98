// SPDX-License-Identifier: GPL-2.0-or-later
// Key files that applications use (issue #11), through a TPM clear and a restore: the MRK's
// persistent handle, a TSS2 PRIVATE KEY PEM used by unmodified OpenSSL (tpm2-openssl), a
// certificate kept with its key, and the refusals a user can meet on the way. The MRK handle
// needs a TPM of its own: this binary's stores live on board C, which nothing else here uses.
// Last, because it removes board C's EK certificate from NV: enrolling with --ek-cert FILE
// (issue #12).
#include "tests/lms/lms_ma_fixture.h"
#include "tests/support/tabrmd.h"

namespace tpmma::lms {
namespace {

using testing::CommandResult;

constexpr const char* kHandle = "0x81000100";

class LmsAppsTest : public LmsMaTest {
 protected:
  // Runs OpenSSL with the tpm2 provider against board C (no lms connection open then).
  CommandResult Openssl(std::vector<std::string> args) const {
    std::vector<std::string> argv = {"env", "TPM2OPENSSL_TCTI=" + w_->c->tcti(), "openssl"};
    argv.insert(argv.end(), args.begin(), args.end());
    return RunCommand(argv);
  }
  CommandResult SignWithPem(const std::string& pem, const std::string& sig) const {
    return Openssl({"pkeyutl", "-provider", "tpm2", "-provider", "default", "-sign", "-inkey", pem,
                    "-in", F("msg.sha256"), "-out", sig});
  }
  bool Verifies(const std::string& sig) const {
    auto r = RunCommand({"openssl", "pkeyutl", "-verify", "-pubin", "-inkey", F("tls.pub"), "-in",
                         F("msg.sha256"), "-sigfile", sig});
    return r.exit_code == 0;
  }
  std::string PersistentHandles() const {
    return w_->c->Tools({"tpm2_getcap", "handles-persistent"}).output;
  }
};

TEST_F(LmsAppsTest, PemFileAndCertificateWorkAgainAfterAClearAndRestore) {
  const Lms c{F("store-c"), w_->c->tcti(), w_->ma_flags_c};
  std::vector<std::string> init = {"init", "--mrk-handle", kHandle};
  json made = c.Json(init);
  const std::string code = made.value("recovery_code", "");
  ASSERT_FALSE(code.empty());
  EXPECT_NE(PersistentHandles().find(kHandle), std::string::npos) << PersistentHandles();
  json st = ParseJson(c({"status", "--json"}));
  EXPECT_EQ(st["tpm"]["mrk_handle"], kHandle) << st.dump();
  EXPECT_EQ(st["tpm"]["mrk_handle_state"], "present") << st.dump();

  // Another store on the same TPM cannot take the handle; nothing of it is written.
  const Lms other{F("store-other"), w_->c->tcti(), w_->ma_flags_c};
  EXPECT_FAILS_WITH(other(init), 1, "holds another object");
  EXPECT_FALSE(std::filesystem::exists(other.store + "/store.json"));

  // An application key as a PEM, used by OpenSSL; its certificate kept with it.
  c.Json({"keygen", "--type", "ecc-app", "--label", "tls", "--pem-out", F("tls.pem")});
  ASSERT_EQ(c({"export", "tls", "--out", F("tls-export.pem")}).exit_code, 0);
  EXPECT_EQ(Slurp(F("tls-export.pem")), Slurp(F("tls.pem")));
  ASSERT_EQ(c({"pubkey", "tls", "--out", F("tls.pub")}).exit_code, 0);
  const std::string pem = Slurp(F("tls.pem"));
  EXPECT_NE(pem.find("BEGIN TSS2 PRIVATE KEY"), std::string::npos);
  Spit(F("msg"), "signed by OpenSSL with a TPM key file\n");
  ASSERT_EQ(RunCommand({"openssl", "dgst", "-sha256", "-binary", "-out", F("msg.sha256"), F("msg")})
                .exit_code,
            0);
  CommandResult r = SignWithPem(F("tls.pem"), F("a.sig"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(Verifies(F("a.sig")));
  r = Openssl({"req", "-new", "-x509", "-provider", "tpm2", "-provider", "default", "-key",
               F("tls.pem"), "-subj", "/CN=tls.example", "-days", "30", "-out", F("tls.crt")});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  c.Json({"cert", "tls", "--set", F("tls.crt")});
  json keys = c.Json({"keys"});
  bool shown = false;
  for (const json& k : keys["keys"]) {
    if (k["label"] == "tls") shown = k["certificate"].value("subject", "") == "CN=tls.example";
  }
  EXPECT_TRUE(shown) << keys.dump();
  // A certificate for another key is refused.
  RunCommand({"openssl", "req", "-new", "-x509", "-newkey", "ec", "-pkeyopt",
              "ec_paramgen_curve:P-256", "-nodes", "-keyout", F("sw.key"), "-subj", "/CN=sw",
              "-out", F("sw.crt")});
  EXPECT_FAILS_WITH(c({"cert", "tls", "--set", F("sw.crt")}), 1, "certificate is for another key");
  // A key file whose parent is not the MRK (the SRK) is refused.
  auto t = w_->c->Tools(
      {"tpm2_create", "-C", "0x81000001", "-G", "ecc256", "-u", F("s.pub"), "-r", F("s.priv")});
  ASSERT_EQ(t.exit_code, 0) << t.output;
  t = w_->c->Tools({"tpm2_encodeobject", "-C", "0x81000001", "-u", F("s.pub"), "-r", F("s.priv"),
                    "-p", "-o", F("s.pem")});
  ASSERT_EQ(t.exit_code, 0) << t.output;
  EXPECT_FAILS_WITH(c({"import", "--pem", F("s.pem"), "--label", "srk child"}), 1,
                    "not this store's MRK");

  ASSERT_TRUE(c.Json({"backup"}).value("uploaded", false));
  // A change an application makes to the token store is a change the timer backs up.
  std::filesystem::create_directories(c.store + "/pkcs11");
  Spit(c.store + "/pkcs11/tpm2_pkcs11.sqlite3", "a token store, as tpm2-pkcs11 left it");
  EXPECT_TRUE(c.Json({"backup", "--if-changed"}).value("uploaded", false));
  EXPECT_FALSE(c.Json({"backup", "--if-changed"}).value("uploaded", true));

  // The TPM is cleared: the key file no longer works, and lms says to restore.
  t = w_->c->Tools({"tpm2_clear", "-c", "p"});
  ASSERT_EQ(t.exit_code, 0) << t.output;
  EXPECT_NE(SignWithPem(F("tls.pem"), F("x.sig")).exit_code, 0);
  EXPECT_FAILS_WITH(c({"export", "tls"}), 1, "restore");

  // Something else at the handle: the restore is refused, in words, and changes nothing.
  t = w_->c->Tools({"tpm2_createprimary", "-C", "o", "-c", F("other.ctx")});
  ASSERT_EQ(t.exit_code, 0) << t.output;
  t = w_->c->Tools({"tpm2_evictcontrol", "-C", "o", "-c", F("other.ctx"), kHandle});
  ASSERT_EQ(t.exit_code, 0) << t.output;
  Spit(F("code"), code);
  auto before = Snapshot(c.store);
  EXPECT_FAILS_WITH(c({"restore", "--recovery-code-file", F("code")}), 1, "holds another object");
  EXPECT_EQ(Snapshot(c.store), before);
  t = w_->c->Tools({"tpm2_evictcontrol", "-C", "o", "-c", kHandle});
  ASSERT_EQ(t.exit_code, 0) << t.output;

  // The restore puts the MRK back at its handle: the same file works unchanged.
  c.Json({"restore", "--recovery-code-file", F("code")});
  EXPECT_NE(PersistentHandles().find(kHandle), std::string::npos) << PersistentHandles();
  EXPECT_EQ(Slurp(F("tls.pem")), pem);
  r = SignWithPem(F("tls.pem"), F("b.sig"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(Verifies(F("b.sig")));
  ASSERT_EQ(c({"export", "tls", "--out", F("again.pem"), "--cert-out", F("again.crt")}).exit_code,
            0);
  EXPECT_EQ(Slurp(F("again.pem")), pem);
  EXPECT_EQ(Slurp(F("again.crt")), Slurp(F("tls.crt")));

  // A re-initialised store takes the handle over from its own old MRK (and only from it).
  std::vector<std::string> reinit = {"init", "--mrk-handle", kHandle, "--force"};
  c.Json(reinit);
  st = ParseJson(c({"status", "--json"}));
  EXPECT_EQ(st["tpm"]["mrk_handle_state"], "present") << st.dump();
  EXPECT_NE(SignWithPem(F("tls.pem"), F("c.sig")).exit_code, 0);  // the old MRK's key
}

// The PKCS#11 token on the MRK and what it refuses. tpm2-pkcs11 needs a resource manager,
// so board C is reached through a tpm2-abrmd here (lms too: swtpm serves one connection).
TEST_F(LmsAppsTest, Pkcs11TokenTakesApplicationKeysAndSaysWhatItRefuses) {
  std::string why;
  if (!testing::ResourceManager::Available(&why)) GTEST_SKIP() << why;
  auto rm = testing::ResourceManager::Start(*w_->c, &why);
  ASSERT_NE(rm, nullptr) << why;
  const Lms p{F("store-p11"), rm->tcti(), w_->ma_flags_c};
  p.Json({"init", "--mrk-handle", "0x81000101"});
  p.Json({"keygen", "--type", "rsa-app", "--label", "ssh"});
  p.Json({"keygen", "--type", "ecc-sign", "--label", "fixed scheme"});
  Spit(F("so.pin"), "so-secret-1\n");
  Spit(F("user.pin"), "user-secret-1\n");
  Spit(F("wrong.pin"), "not-the-pin\n");
  Spit(F("short.pin"), "123\n");
  EXPECT_FAILS_WITH(p({"pkcs11", "link", "ssh", "--user-pin-file", F("user.pin")}), 1,
                    "lms pkcs11 init");
  EXPECT_FAILS_WITH(
      p({"pkcs11", "init", "--so-pin-file", F("so.pin"), "--user-pin-file", F("short.pin")}), 1,
      "4 to 64 characters");
  Ran r = p({"pkcs11", "init", "--so-pin-file", F("so.pin"), "--user-pin-file", F("user.pin")});
  ASSERT_EQ(r.exit_code, 0) << r.all();
  EXPECT_EQ(r.all().find("user-secret-1"), std::string::npos);
  EXPECT_FAILS_WITH(p({"pkcs11", "link", "fixed scheme", "--user-pin-file", F("user.pin")}), 1,
                    "application keys only");
  EXPECT_FAILS_WITH(p({"pkcs11", "link", "ssh", "--user-pin-file", F("wrong.pin")}), 1,
                    "wrong user PIN");
  json linked = p.Json({"pkcs11", "link", "ssh", "--user-pin-file", F("user.pin")});
  EXPECT_EQ(linked.value("id", "").size(), 16u) << linked.dump();
  // ssh sees the key: the same public key lms gives.
  auto listed = RunCommand({"env", "TPM2_PKCS11_STORE=" + p.store + "/pkcs11",
                            "TPM2_PKCS11_TCTI=" + rm->tcti(), "ssh-keygen", "-D",
                            "/usr/lib/x86_64-linux-gnu/libtpm2_pkcs11.so.1"});
  ASSERT_EQ(listed.exit_code, 0) << listed.output;
  Ran pub = p({"pubkey", "ssh", "--format", "openssh"});
  ASSERT_EQ(pub.exit_code, 0) << pub.all();
  const std::string blob = pub.out.substr(0, pub.out.rfind(' '));
  EXPECT_NE(listed.output.find(blob), std::string::npos) << listed.output << "\n" << blob;
  // The token store is part of what the next backup carries.
  EXPECT_TRUE(p.Json({"backup", "--if-changed"}).value("uploaded", false));
}

// Issue #12: a TPM that keeps no EK certificate in NV (firmware TPMs) enrolls with
// --ek-cert FILE, which the store keeps. Board C's certificate is read out and its NV indices
// (RSA and ECC) removed (the platform hierarchy may; this binary alone uses board C, and this test
// is last).
TEST_F(LmsAppsTest, EkCertificateFromAFileForATpmWithoutOneInNv) {
  auto t = w_->c->Tools({"tpm2_nvread", "0x01c00002", "-C", "o", "-o", F("ek.der")});
  ASSERT_EQ(t.exit_code, 0) << t.output;
  // swtpm keeps an ECC EK certificate too (H-3, 0x01c00016), which lms would use instead.
  for (const char* index : {"0x01c00002", "0x01c00016"}) {
    t = w_->c->Tools({"tpm2_nvundefine", index, "-C", "p"});
    ASSERT_EQ(t.exit_code, 0) << t.output;
  }
  const Lms l{F("store-ekcert"), w_->c->tcti(), w_->ma_flags_c};
  // Without one lms sends none, and the MA (policy open) says what to give.
  EXPECT_FAILS_WITH(l({"authenticate"}), 1, "sent no EK certificate");
  EXPECT_FAILS_WITH(l({"authenticate"}), 1, "--ek-cert FILE");
  Ran r = l({"authenticate", "--ek-cert", F("ek.der"), "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.all();
  const std::string platform = ParseJson(r).value("platform_id", "");
  EXPECT_EQ(json::parse(Slurp(l.store + "/config.json")).value("ek_cert", ""), F("ek.der"));
  // Kept: the next command needs no flag, and it is the same platform.
  const Lms again{l.store, w_->c->tcti(), {}};
  EXPECT_EQ(again.Json({"authenticate"}).value("platform_id", ""), platform);
  // Another TPM's certificate does not pass for this one.
  auto other = w_->a->Tools({"tpm2_nvread", "0x01c00002", "-C", "o", "-o", F("other.der")});
  ASSERT_EQ(other.exit_code, 0) << other.output;
  EXPECT_FAILS_WITH(l({"authenticate", "--ek-cert", F("other.der")}), 1, "EK");
}

}  // namespace
}  // namespace tpmma::lms
