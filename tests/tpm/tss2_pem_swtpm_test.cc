// SPDX-License-Identifier: GPL-2.0-or-later
// tpm/tss2_pem.h against the real producers and consumers of TSS2 PRIVATE KEY files, on swtpm:
// tpm2_encodeobject (tpm2-tools) writes, we read; we write from tpm2_create's -u/-r files, and
// unmodified OpenSSL 3 with Debian's tpm2-openssl provider signs with the key, the signature
// verifying under the public key. Parent: a persistent storage primary at 0x81000001.
#include <gtest/gtest.h>
#include <openssl/bio.h>
#include <openssl/pem.h>

#include <string>
#include <vector>

#include "common/openssl.h"
#include "tests/support/status_testing.h"
#include "tests/support/swtpm.h"
#include "tpm/marshal.h"
#include "tpm/public.h"
#include "tpm/tss2_pem.h"

namespace tpmma::tpm {
namespace {

using tpmma::testing::CommandResult;
using tpmma::testing::ReadFileOrDie;
using tpmma::testing::RunCommand;
using tpmma::testing::Slurp;
using tpmma::testing::Spit;
using tpmma::testing::Swtpm;

constexpr uint32_t kSrkHandle = 0x81000001;
constexpr const char* kSrk = "0x81000001";
constexpr const char* kSrkAttrs =
    "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|noda|restricted|decrypt";
constexpr const char* kChildAttrs = "fixedtpm|fixedparent|sensitivedataorigin|userwithauth";

struct Key {
  std::string name;  // "ecc" or "rsa"
  std::string pub, priv;
};

struct World {
  Swtpm* tpm = nullptr;
  std::vector<Key> keys;
};

bool Ok(const Swtpm* t, const std::vector<std::string>& argv, std::string* err) {
  CommandResult r = t->Tools(argv);
  if (r.exit_code != 0) {
    *err = argv[0] + " failed (" + std::to_string(r.exit_code) + "): " + r.output;
    return false;
  }
  return true;
}

std::string BuildWorld(World& w) {
  std::string error;
  if ((w.tpm = testing::SharedSwtpm(0, &error)) == nullptr) return error;
  const Swtpm* t = w.tpm;
  const std::string srk_ctx = t->File("srk.ctx");
  if (!Ok(t,
          {"tpm2_createprimary", "-C", "o", "-g", "sha256", "-G", "rsa2048:aes128cfb", "-a",
           kSrkAttrs, "-c", srk_ctx},
          &error) ||
      !Ok(t, {"tpm2_evictcontrol", "-C", "o", "-c", srk_ctx, kSrk}, &error)) {
    return error;
  }
  struct {
    const char* name;
    const char* alg;
    const char* usage;
  } const specs[] = {{"ecc", "ecc256", "|sign"}, {"rsa", "rsa2048", "|sign|decrypt"}};
  for (const auto& s : specs) {
    Key k{s.name, t->File(std::string(s.name) + ".pub"), t->File(std::string(s.name) + ".priv")};
    if (!Ok(t,
            {"tpm2_create", "-C", kSrk, "-G", s.alg, "-a", std::string(kChildAttrs) + s.usage, "-u",
             k.pub, "-r", k.priv},
            &error)) {
      return error;
    }
    w.keys.push_back(k);
  }
  return "";
}

class Tss2PemSwtpmTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string err;
    bool skip = false;
    w_ = testing::BuildOnce(&BuildWorld, &err, &skip);
    if (skip) GTEST_SKIP() << "swtpm not available: " << err;
    ASSERT_NE(w_, nullptr) << err;
  }

  // openssl with the tpm2 provider on this TPM; stdin from /dev/null, no controlling terminal
  // (so a password prompt cannot wait for a human); then flush what the provider left loaded
  // (no resource manager: swtpm holds three objects).
  CommandResult Openssl(std::vector<std::string> args) const {
    std::vector<std::string> argv = {"setsid",
                                     "-w",
                                     "sh",
                                     "-c",
                                     "exec \"$@\" </dev/null",
                                     "sh",
                                     "env",
                                     "TPM2OPENSSL_TCTI=" + w_->tpm->tcti(),
                                     "openssl"};
    argv.insert(argv.end(), args.begin(), args.end());
    CommandResult r = RunCommand(argv);
    w_->tpm->Tools({"tpm2_flushcontext", "-t"});
    FlushSessions();
    return r;
  }

  // tpm2_encodeobject (5.4) leaves its session loaded; Swtpm::Tools flushes only objects, and
  // swtpm holds three sessions.
  void FlushSessions() const {
    w_->tpm->ToolsNoFlush({"tpm2_flushcontext", "-l"});
    w_->tpm->ToolsNoFlush({"tpm2_flushcontext", "-s"});
  }

  std::string File(const std::string& name) const { return w_->tpm->File(name); }

  const World* w_ = nullptr;
};

// What tpm2_encodeobject writes is what tpm2_create wrote, and we read it back field for field.
TEST_F(Tss2PemSwtpmTest, DecodesTpm2Encodeobject) {
  for (const Key& k : w_->keys) {
    SCOPED_TRACE(k.name);
    // tpm2-tools 5.4 inverts -p (tpm2-tools issue 3458): with -p it writes emptyAuth TRUE.
    for (bool with_p : {true, false}) {
      const std::string pem = File(k.name + (with_p ? "_p" : "_nop") + ".pem");
      std::vector<std::string> argv = {
          "tpm2_encodeobject", "-C", kSrk, "-u", k.pub, "-r", k.priv, "-o", pem};
      if (with_p) argv.push_back("-p");
      CommandResult r = w_->tpm->Tools(argv);
      FlushSessions();
      ASSERT_EQ(r.exit_code, 0) << r.output;
      ASSERT_OK_AND_ASSIGN(Tss2PrivateKey key, DecodeTss2PrivateKeyPem(Slurp(pem)));
      EXPECT_EQ(key.parent, kSrkHandle);
      EXPECT_EQ(key.empty_auth, with_p);
      EXPECT_EQ(key.public_area, ReadFileOrDie(k.pub));  // TPM2B_PUBLIC, size prefix and all
      EXPECT_EQ(key.private_area, ReadFileOrDie(k.priv));
      // Our encoding of the same key differs from tpm2_encodeobject's in one byte at most:
      // emptyAuth TRUE, which tpm2-tools and tpm2-openssl write as 0x01 and we as DER's 0xFF.
      ASSERT_OK_AND_ASSIGN(std::string ours, EncodeTss2PrivateKeyPem(key));
      const std::string ours_file = File(k.name + "_reenc.pem");
      Spit(ours_file, ours);
      CommandResult a = RunCommand({"openssl", "base64", "-d", "-in", pem});
      CommandResult b = RunCommand({"openssl", "base64", "-d", "-in", ours_file});
      ASSERT_EQ(a.exit_code, 0);
      ASSERT_EQ(b.exit_code, 0);
      ASSERT_EQ(a.output.size(), b.output.size());
      size_t differing = 0;
      for (size_t i = 0; i < a.output.size(); ++i) {
        if (a.output[i] == b.output[i]) continue;
        ++differing;
        EXPECT_TRUE(with_p && a.output[i] == '\x01' && b.output[i] == '\xff') << "byte " << i;
      }
      EXPECT_EQ(differing, with_p ? 1u : 0u);
    }
  }
}

// Our PEM from tpm2_create's files works with unmodified OpenSSL + tpm2-openssl.
TEST_F(Tss2PemSwtpmTest, OpensslSignsWithOurPem) {
  Spit(File("msg.txt"), "signed by a TPM key through a PEM written by tpm-ma\n");
  ASSERT_EQ(RunCommand({"openssl", "dgst", "-sha256", "-binary", "-out", File("msg.sha256"),
                        File("msg.txt")})
                .exit_code,
            0);
  for (const Key& k : w_->keys) {
    SCOPED_TRACE(k.name);
    Tss2PrivateKey key{.parent = kSrkHandle,
                       .empty_auth = true,
                       .public_area = ReadFileOrDie(k.pub),
                       .private_area = ReadFileOrDie(k.priv)};
    ASSERT_OK_AND_ASSIGN(std::string pem, EncodeTss2PrivateKeyPem(key));
    const std::string ours = File(k.name + "_ours.pem"), pubout = File(k.name + "_pub.pem"),
                      sig = File(k.name + ".sig");
    Spit(ours, pem);
    CommandResult r = Openssl({"pkey", "-provider", "tpm2", "-provider", "default", "-in", ours,
                               "-pubout", "-out", pubout});
    ASSERT_EQ(r.exit_code, 0) << r.output;
    std::vector<std::string> sign = {
        "pkeyutl", "-provider", "tpm2", "-provider",        "default", "-sign",
        "-inkey",  ours,        "-in",  File("msg.sha256"), "-out",    sig};
    std::vector<std::string> verify = {"openssl",  "pkeyutl", "-verify", "-pubin",
                                       "-inkey",   pubout,    "-in",     File("msg.sha256"),
                                       "-sigfile", sig};
    if (k.name == "rsa") {
      for (auto* v : {&sign, &verify}) v->insert(v->end(), {"-pkeyopt", "digest:sha256"});
    }
    r = Openssl(sign);
    ASSERT_EQ(r.exit_code, 0) << r.output;
    // tpm2-openssl's public key is the one in tpm2_create's TPM2B_PUBLIC.
    ASSERT_OK_AND_ASSIGN(TPM2B_PUBLIC area, Unmarshal<TPM2B_PUBLIC>(key.public_area));
    ASSERT_OK_AND_ASSIGN(EvpPkeyPtr evp, PublicToEvp(area.publicArea));
    BioPtr bio(BIO_new(BIO_s_mem()));
    ASSERT_EQ(PEM_write_bio_PUBKEY(bio.get(), evp.get()), 1);
    char* text = nullptr;
    const long n = BIO_get_mem_data(bio.get(), &text);
    EXPECT_EQ(Slurp(pubout), std::string(text, static_cast<size_t>(n)));
    r = RunCommand(verify);  // plain OpenSSL, no TPM
    EXPECT_EQ(r.exit_code, 0) << r.output;
    EXPECT_NE(r.output.find("Signature Verified Successfully"), std::string::npos) << r.output;

    // The same key with emptyAuth FALSE: tpm2-openssl asks for a password, and with no
    // terminal and stdin at /dev/null that fails.
    key.empty_auth = false;
    ASSERT_OK_AND_ASSIGN(std::string locked, EncodeTss2PrivateKeyPem(key));
    const std::string locked_file = File(k.name + "_locked.pem");
    Spit(locked_file, locked);
    std::vector<std::string> sign_locked = sign;
    for (auto& a : sign_locked) {
      if (a == ours) a = locked_file;
      if (a == sig) a = File(k.name + "_locked.sig");
    }
    r = Openssl(sign_locked);
    EXPECT_NE(r.exit_code, 0) << "signed without the password prompt: " << r.output;
    EXPECT_NE(r.output.find("Enter pass phrase"), std::string::npos) << r.output;
    // ... and given the (empty) password it signs: the refusal above was the prompt.
    sign_locked.insert(sign_locked.end(), {"-passin", "pass:"});
    r = Openssl(sign_locked);
    EXPECT_EQ(r.exit_code, 0) << r.output;
  }
}

}  // namespace
}  // namespace tpmma::tpm
