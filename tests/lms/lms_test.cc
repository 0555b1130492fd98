// SPDX-License-Identifier: GPL-2.0-or-later
// lms, the real binary, on swtpm: init -> keygen (each type) -> sign (verified by the
// openssl CLI with `lms pubkey`) -> encrypt/decrypt -> unseal; a key made by tpm2_create
// under the MRK registered with import-tpm2 and used; the refusals (second init, --force
// over keys never backed up, unknown key, wrong key type, bad usage, a cleared TPM). The
// library parts that need no TPM (recovery code, store files) are tested directly.
//
// One shared store on swtpm instance 0 is built once (RSA key creation is the slow part);
// tests that change a store use their own store directory.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <fstream>
#include <regex>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "client/lms/custody.h"
#include "client/lms/keystore.h"
#include "client/lms/ma_connection.h"
#include "client/lms/operations.h"
#include "common/env.h"
#include "common/openssl.h"
#include "tests/support/swtpm.h"
#include "tpm/escrow.h"
#include "tpm/marshal.h"
#include "tpm/public.h"

namespace tpmma::lms {
namespace {

using nlohmann::json;
using tpmma::testing::CommandResult;
using tpmma::testing::RunCommand;
using tpmma::testing::Slurp;
using tpmma::testing::Spit;
using tpmma::testing::Swtpm;
using tpmma::testing::TempDir;

uint32_t Mode(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 ? (st.st_mode & 0777) : 0;
}

json ParseJson(const CommandResult& r) {
  json j = json::parse(r.output, nullptr, false);
  EXPECT_FALSE(j.is_discarded()) << "not JSON: " << r.output;
  return j;
}

// Runs lms against one store and TPM.
struct LmsRunner {
  std::string store;
  std::string tcti;
  CommandResult operator()(std::vector<std::string> args) const {
    std::vector<std::string> argv = {LMS_PATH, "--store", store, "--tcti", tcti};
    argv.insert(argv.end(), args.begin(), args.end());
    // These tests run many stores on one shared TPM, so their MRKs cannot all sit at the
    // default handle; the handle has tests of its own (lms_apps_test, the drill).
    if (!args.empty() && args[0] == "init" &&
        std::find(args.begin(), args.end(), "--mrk-handle") == args.end()) {
      argv.insert(argv.end(), {"--mrk-handle", "none"});
    }
    return RunCommand(argv);
  }
  json Json(std::vector<std::string> args) const {
    args.push_back("--json");
    CommandResult r = (*this)(args);
    json j = ParseJson(r);
    EXPECT_EQ(r.exit_code, 0) << r.output;
    EXPECT_EQ(j.value("ok", false), true) << r.output;
    return j;
  }
};

#define EXPECT_FAILS_WITH(result, exit, substring)                \
  do {                                                            \
    CommandResult r_ = (result);                                  \
    EXPECT_EQ(r_.exit_code, exit) << r_.output;                   \
    EXPECT_NE(r_.output.find(substring), std::string::npos)       \
        << "output lacks '" << (substring) << "': " << r_.output; \
  } while (0)

// The MA storage key's TPM2B_PUBLIC, as GetMAKey publishes it.
std::string WriteMaKeyPublic(const std::string& path) {
  EvpPkeyPtr ma(EVP_RSA_gen(2048));
  auto pub = tpm::MaStoragePublic(ma.get());
  auto bytes = pub ? tpm::Marshal(*pub) : Result<Bytes>(Error(pub.error()));
  if (!bytes) return "";
  Spit(path, ToString(*bytes));
  return path;
}

struct World {
  Swtpm* swtpm = nullptr;
  TempDir dir;
  LmsRunner lms;
  std::string ma_pub;
  json init;  // lms init --json
  std::string recovery_code;
  std::string mrk_id;
  std::map<std::string, std::string> ids;  // label -> id
  std::string sealed_data = "disk unlock secret\x01\x02";
};

std::string BuildWorld(World& w) {
  std::string why;
  w.swtpm = testing::SharedSwtpm(0, &why);
  if (w.swtpm == nullptr) return why;
  w.lms = {w.dir.File("store"), w.swtpm->tcti()};
  w.ma_pub = WriteMaKeyPublic(w.dir.File("ma.pub"));
  if (w.ma_pub.empty()) return "cannot make the MA key public";
  CommandResult r = w.lms({"init", "--ma-key-public", w.ma_pub, "--json"});
  if (r.exit_code != 0) return "lms init: " + r.output;
  w.init = json::parse(r.output, nullptr, false);
  if (w.init.is_discarded()) return "lms init --json: " + r.output;
  w.recovery_code = w.init.value("recovery_code", "");
  w.mrk_id = w.init["mrk"].value("id", "");
  Spit(w.dir.File("seal.bin"), w.sealed_data);
  const std::vector<std::vector<std::string>> keygens = {
      {"--type", "ecc-sign", "--label", "vpn"},
      {"--type", "rsa-sign", "--label", "code signing"},
      {"--type", "rsa-decrypt", "--label", "mail"},
      {"--type", "sealed", "--label", "disk", "--data", w.dir.File("seal.bin")}};
  for (auto args : keygens) {
    args.insert(args.begin(), "keygen");
    args.push_back("--json");
    r = w.lms(args);
    json j = json::parse(r.output, nullptr, false);
    if (r.exit_code != 0 || j.is_discarded()) return "lms keygen: " + r.output;
    w.ids[j["key"]["label"]] = j["key"]["id"];
  }
  return "";
}

const World* GetWorld(std::string* err, bool* skip) {
  return testing::BuildOnce(&BuildWorld, err, skip);
}

class LmsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string err;
    bool skip = false;
    w_ = GetWorld(&err, &skip);
    if (skip) GTEST_SKIP() << "swtpm not available: " << err;
    ASSERT_NE(w_, nullptr) << err;
  }
  std::string File(const std::string& name) const { return dir_.File(name); }
  const LmsRunner& lms() const { return w_->lms; }
  std::string Id(const std::string& label) const { return w_->ids.at(label); }

  const World* w_ = nullptr;
  TempDir dir_;
};

// ------------------------------------------------------------------ init and keygen

// Two backups in one second tie on every time the MA reports: the later upload (the MA
// lists in upload order) is the newest, whatever the random package ids say.
TEST(LmsQueryOrder, NewestFirstAndASameSecondTieGoesToTheLaterUpload) {
  auto d = [](std::string id, int64_t created, int64_t uploaded) {
    ma::PackageDescriptor p;
    p.package_id = std::move(id);
    p.created_at = created;
    p.uploaded_at = uploaded;
    return p;
  };
  // Upload order: z (t=100), b (t=200), a (t=200, same second), c (created 150, uploaded 300).
  std::vector<ma::PackageDescriptor> list = {d("z", 100, 100), d("b", 200, 200), d("a", 200, 200),
                                             d("c", 150, 300)};
  SortNewestFirst(list);
  std::vector<std::string> ids;
  for (const auto& p : list) ids.push_back(p.package_id);
  EXPECT_EQ(ids, (std::vector<std::string>{"a", "b", "c", "z"}));
  // Same creation time, another upload time: the later upload first.
  list = {d("late", 200, 205), d("early", 200, 201)};
  SortNewestFirst(list);
  EXPECT_EQ(list[0].package_id, "late");
}

TEST_F(LmsTest, InitShowsTheRecoveryCodeOnceAndStoresItNowhere) {
  EXPECT_TRUE(std::regex_match(w_->recovery_code,
                               std::regex("([0-9A-HJKMNP-TV-Z]{4}-){7}[0-9A-HJKMNP-TV-Z]{4}")))
      << w_->recovery_code;
  EXPECT_EQ(w_->init.value("srk_handle", ""), "0x81000001");
  EXPECT_EQ(w_->init.value("custody", ""), "recovery-code");
  EXPECT_EQ(w_->init["mrk"].value("type", ""), "mrk");
  EXPECT_EQ(w_->init["mrk"].value("parent", ""), "srk");
  // Nothing on disk holds the code (with or without dashes).
  std::string canonical = w_->recovery_code;
  std::erase(canonical, '-');
  const std::string store = lms().store;
  for (const std::string& f : {store + "/store.json", store + "/keys/" + w_->mrk_id + ".json"}) {
    const std::string text = Slurp(f);
    EXPECT_FALSE(text.empty()) << f;
    EXPECT_EQ(text.find(w_->recovery_code), std::string::npos) << f;
    EXPECT_EQ(text.find(canonical), std::string::npos) << f;
    EXPECT_EQ(Mode(f), 0600u) << f;
  }
  EXPECT_EQ(Mode(store), 0700u);
  EXPECT_EQ(Mode(store + "/keys"), 0700u);
  // Nor does any later output.
  CommandResult r = lms()({"keys", "--json"});
  EXPECT_EQ(r.output.find(canonical.substr(0, 8)), std::string::npos);
}

TEST_F(LmsTest, KeysListsEveryKeyWithItsParentAndBackupState) {
  json j = lms().Json({"keys"});
  ASSERT_TRUE(j["keys"].is_array());
  ASSERT_EQ(j["keys"].size(), 5u) << j.dump();
  std::map<std::string, json> by_label;
  for (const json& k : j["keys"]) by_label[k["label"]] = k;
  EXPECT_EQ(by_label["mrk"]["type"], "mrk");
  EXPECT_EQ(by_label["mrk"]["parent"], "srk");
  const std::map<std::string, std::string> types = {{"vpn", "ecc-sign"},
                                                    {"code signing", "rsa-sign"},
                                                    {"mail", "rsa-decrypt"},
                                                    {"disk", "sealed"}};
  for (const auto& [label, type] : types) {
    const json& k = by_label[label];
    EXPECT_EQ(k["type"], type) << label;
    EXPECT_EQ(k["parent"], w_->mrk_id) << label;
    EXPECT_EQ(k["migratable"], true) << label;
    EXPECT_EQ(k["backed_up"], false) << label;
    EXPECT_EQ(k["id"], Id(label));
  }
  // The text table has a header and one line per key, ids first.
  CommandResult r = lms()({"keys"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("BACKED UP"), std::string::npos);
  EXPECT_NE(r.output.find(Id("vpn") + "  ecc-sign"), std::string::npos) << r.output;
}

// ------------------------------------------------------------------ using the keys

TEST_F(LmsTest, SignaturesVerifyWithOpensslFromLmsPubkey) {
  Spit(File("doc.txt"), "the quarterly report\n");
  Spit(File("other.txt"), "the quarterly report, edited\n");
  for (const std::string label : {"vpn", "code signing"}) {
    const std::string pem = File("pub.pem"), sig = File("sig.bin");
    ASSERT_EQ(lms()({"pubkey", Id(label), "--out", pem}).exit_code, 0);
    // By label as well as by id.
    CommandResult r = lms()({"sign", label, "--in", File("doc.txt"), "--out", sig});
    ASSERT_EQ(r.exit_code, 0) << r.output;
    r = RunCommand(
        {"openssl", "dgst", "-sha256", "-verify", pem, "-signature", sig, File("doc.txt")});
    EXPECT_EQ(r.exit_code, 0) << label << ": " << r.output;
    EXPECT_NE(r.output.find("Verified OK"), std::string::npos) << r.output;
    r = RunCommand(
        {"openssl", "dgst", "-sha256", "-verify", pem, "-signature", sig, File("other.txt")});
    EXPECT_NE(r.exit_code, 0) << label << ": " << r.output;
    // --json carries the same kind of signature, base64.
    json j = lms().Json({"sign", Id(label), "--in", File("doc.txt")});
    EXPECT_EQ(j["algorithm"], label == "vpn" ? "ecdsa-sha256" : "rsassa-pkcs1v15-sha256");
    auto der = Base64Decode(j.value("signature", ""));
    ASSERT_TRUE(der.has_value());
    Spit(sig, ToString(*der));
    r = RunCommand(
        {"openssl", "dgst", "-sha256", "-verify", pem, "-signature", sig, File("doc.txt")});
    EXPECT_EQ(r.exit_code, 0) << r.output;
  }
}

TEST_F(LmsTest, PubkeyInOpensshFormat) {
  for (const std::string label : {"vpn", "code signing"}) {
    CommandResult r = lms()({"pubkey", Id(label), "--format", "openssh"});
    ASSERT_EQ(r.exit_code, 0) << r.output;
    EXPECT_EQ(r.output.rfind(label == "vpn" ? "ecdsa-sha2-nistp256 AAAA" : "ssh-rsa AAAA", 0), 0u)
        << r.output;
    // Same key as the PEM: ssh-keygen converts it back.
    if (RunCommand({"ssh-keygen", "-?"}).exit_code == 127) continue;
    Spit(File("key.ssh"), r.output);
    CommandResult conv = RunCommand({"ssh-keygen", "-e", "-m", "PKCS8", "-f", File("key.ssh")});
    ASSERT_EQ(conv.exit_code, 0) << conv.output;
    CommandResult pem = lms()({"pubkey", Id(label)});
    EXPECT_EQ(conv.output, pem.output);
  }
  EXPECT_FAILS_WITH(lms()({"pubkey", Id("mail"), "--format", "openssh"}), 1, "rsa-decrypt");
  EXPECT_FAILS_WITH(lms()({"pubkey", Id("disk")}), 1, "sealed");
}

TEST_F(LmsTest, EncryptThenDecryptInTheTpm) {
  const std::string message = "wrapped mail key 0123456789";
  Spit(File("msg"), message);
  CommandResult r = lms()({"encrypt", "mail", "--in", File("msg"), "--out", File("ct")});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(Slurp(File("ct")).size(), 256u);
  r = lms()({"decrypt", Id("mail"), "--in", File("ct"), "--out", File("pt")});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(Slurp(File("pt")), message);
  EXPECT_EQ(Mode(File("pt")), 0600u);
  // To stdout, raw.
  r = lms()({"decrypt", Id("mail"), "--in", File("ct")});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_EQ(r.output, message);
  // A ciphertext made by OpenSSL alone with the PEM decrypts too.
  ASSERT_EQ(lms()({"pubkey", Id("mail"), "--out", File("mail.pem")}).exit_code, 0);
  r = RunCommand({"openssl", "pkeyutl", "-encrypt", "-pubin", "-inkey", File("mail.pem"), "-in",
                  File("msg"), "-out", File("ct2"), "-pkeyopt", "rsa_padding_mode:oaep", "-pkeyopt",
                  "rsa_oaep_md:sha256", "-pkeyopt", "rsa_mgf1_md:sha256"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  json j = lms().Json({"decrypt", Id("mail"), "--in", File("ct2")});
  EXPECT_EQ(j.value("plaintext", ""), Base64Encode(View(message)));
  // A damaged ciphertext is refused by the TPM, in words.
  std::string bad = Slurp(File("ct"));
  bad[100] ^= 1;
  Spit(File("bad"), bad);
  r = lms()({"decrypt", Id("mail"), "--in", File("bad")});
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("Esys_RSA_Decrypt"), std::string::npos) << r.output;
}

TEST_F(LmsTest, UnsealGivesBackTheData) {
  CommandResult r = lms()({"unseal", "disk"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output, w_->sealed_data);
  json j = lms().Json({"unseal", Id("disk")});
  EXPECT_EQ(j.value("data", ""), Base64Encode(View(w_->sealed_data)));
  // Sealed data from stdin.
  r = RunCommand({"sh", "-c",
                  "printf 'from stdin' | \"$0\" --store \"$1\" --tcti \"$2\" keygen --type sealed "
                  "--label piped --json",
                  LMS_PATH, lms().store, lms().tcti});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = lms()({"unseal", "piped"});
  EXPECT_EQ(r.output, "from stdin");
}

TEST_F(LmsTest, InnerKeySealedAtInitIsTheRecoveryCodesKey) {
  // What an unattended backup unseals is exactly what the recovery code derives.
  auto l = Lms::Open({.store_dir = lms().store, .tcti = lms().tcti, .env = nullptr});
  ASSERT_TRUE(l.has_value()) << l.error().ToString();
  auto state = (*l)->State();
  ASSERT_TRUE(state.has_value()) << state.error().ToString();
  auto sealed = (*l)->UnsealInnerKey();
  ASSERT_TRUE(sealed.has_value()) << sealed.error().ToString();
  auto derived = DeriveInnerKey(w_->recovery_code, state->custody);
  ASSERT_TRUE(derived.has_value()) << derived.error().ToString();
  EXPECT_EQ(*sealed, *derived);
  EXPECT_EQ(sealed->size(), kInnerKeyBytes);
}

// ------------------------------------------------------------------ tpm2-tools interop

TEST_F(LmsTest, KeyMadeWithTpm2CreateUnderTheMrkIsRegisteredAndUsed) {
  const std::string store = lms().store;
  json mrk = json::parse(Slurp(store + "/keys/" + w_->mrk_id + ".json"));
  Spit(File("mrk.pub"), ToString(*Base64Decode(mrk["public"].get<std::string>())));
  Spit(File("mrk.priv"), ToString(*Base64Decode(mrk["private"].get<std::string>())));
  const Swtpm& t = *w_->swtpm;
  CommandResult r = t.Tools({"tpm2_load", "-C", "0x81000001", "-u", File("mrk.pub"), "-r",
                             File("mrk.priv"), "-c", File("mrk.ctx")});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  // The attributes a child of an encryptedDuplication MRK must have.
  r = t.Tools({"tpm2_create", "-C", File("mrk.ctx"), "-G", "ecc256:ecdsa-sha256", "-a",
               "fixedparent|sensitivedataorigin|userwithauth|sign|encryptedduplication", "-u",
               File("t.pub"), "-r", File("t.priv")});
  ASSERT_EQ(r.exit_code, 0) << r.output;

  json j = lms().Json({"import-tpm2", "--public", File("t.pub"), "--private", File("t.priv"),
                       "--label", "from tpm2-tools"});
  EXPECT_EQ(j["key"]["type"], "ecc-sign");
  EXPECT_EQ(j["key"]["origin"], "tpm2-tools");
  EXPECT_EQ(j["key"]["parent"], w_->mrk_id);
  const std::string id = j["key"]["id"];
  Spit(File("doc"), "signed by a tpm2-tools key");
  ASSERT_EQ(lms()({"sign", id, "--in", File("doc"), "--out", File("sig")}).exit_code, 0);
  ASSERT_EQ(lms()({"pubkey", id, "--out", File("pub.pem")}).exit_code, 0);
  r = RunCommand({"openssl", "dgst", "-sha256", "-verify", File("pub.pem"), "-signature",
                  File("sig"), File("doc")});
  EXPECT_EQ(r.exit_code, 0) << r.output;
  // The public key lms prints is the one tpm2-tools sees.
  r = t.Tools({"tpm2_print", "-t", "TPM2B_PUBLIC", "-f", "pem", File("t.pub")});
  if (r.exit_code == 0) {
    EXPECT_EQ(r.output, Slurp(File("pub.pem")));
  }

  // Registered once only.
  EXPECT_FAILS_WITH(lms()({"import-tpm2", "--public", File("t.pub"), "--private", File("t.priv"),
                           "--label", "again"}),
                    1, "already registered");
  // A key of the right kind under another duplicable storage key is not the MRK's: refused.
  r = t.Tools({"tpm2_create", "-C", "0x81000001", "-G", "ecc256:aes128cfb", "-a",
               "restricted|decrypt|userwithauth|sensitivedataorigin|encryptedduplication", "-u",
               File("o.pub"), "-r", File("o.priv")});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = t.Tools({"tpm2_load", "-C", "0x81000001", "-u", File("o.pub"), "-r", File("o.priv"), "-c",
               File("o.ctx")});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = t.Tools({"tpm2_create", "-C", File("o.ctx"), "-G", "ecc256:ecdsa-sha256", "-a",
               "fixedparent|sensitivedataorigin|userwithauth|sign|encryptedduplication", "-u",
               File("s.pub"), "-r", File("s.priv")});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_FAILS_WITH(lms()({"import-tpm2", "--public", File("s.pub"), "--private", File("s.priv"),
                           "--label", "foreign"}),
                    1, "does not load under this store's MRK");
  // A key the MRK could never have as a child (fixedTPM, as tpm2-tools make by default).
  r = t.Tools({"tpm2_create", "-C", "0x81000001", "-G", "ecc256:ecdsa-sha256", "-u", File("f.pub"),
               "-r", File("f.priv")});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_FAILS_WITH(lms()({"import-tpm2", "--public", File("f.pub"), "--private", File("f.priv"),
                           "--label", "fixed"}),
                    1, "attributes the MRK forbids");
  // Not a kind of key lms uses: refused before the TPM is asked.
  r = t.Tools({"tpm2_create", "-C", File("mrk.ctx"), "-G", "ecc256:ecdh-sha256", "-a",
               "fixedparent|sensitivedataorigin|userwithauth|decrypt|encryptedduplication", "-u",
               File("x.pub"), "-r", File("x.priv")});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_FAILS_WITH(lms()({"import-tpm2", "--public", File("x.pub"), "--private", File("x.priv"),
                           "--label", "ecdh"}),
                    1, "not a kind of key lms keeps");
}

// ------------------------------------------------------------------ refusals

TEST_F(LmsTest, SecondInitIsRefusedAndChangesNothing) {
  const std::string before = Slurp(lms().store + "/store.json");
  CommandResult r = lms()({"init", "--ma-key-public", w_->ma_pub});
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("already initialised"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("--force"), std::string::npos) << r.output;
  // --force over keys never backed up: refused too, naming the way forward.
  r = lms()({"init", "--ma-key-public", w_->ma_pub, "--force", "--json"});
  EXPECT_EQ(r.exit_code, 1) << r.output;
  json j = ParseJson(r);
  EXPECT_EQ(j["ok"], false);
  EXPECT_EQ(j["code"], "Conflict");
  EXPECT_NE(j.value("message", "").find("never backed up"), std::string::npos) << r.output;
  EXPECT_NE(j.value("message", "").find("--discard-unbacked-keys"), std::string::npos);
  EXPECT_EQ(Slurp(lms().store + "/store.json"), before);
  EXPECT_FALSE(Env::Default()->FileExists(lms().store + "/retired"));
}

TEST_F(LmsTest, UnknownKeyIsRefused) {
  Spit(File("doc"), "x");
  EXPECT_FAILS_WITH(lms()({"sign", "00000000-0000-4000-8000-000000000000", "--in", File("doc")}), 1,
                    "no key");
  CommandResult r = lms()({"unseal", "no such label", "--json"});
  EXPECT_EQ(r.exit_code, 1);
  json j = ParseJson(r);
  EXPECT_EQ(j["code"], "NotFound");
  EXPECT_NE(j.value("message", "").find("no such label"), std::string::npos);
}

TEST_F(LmsTest, WrongKeyTypeForTheOperationIsRefused) {
  Spit(File("doc"), "x");
  EXPECT_FAILS_WITH(lms()({"sign", "mail", "--in", File("doc")}), 1,
                    "sign needs a key of type ecc-sign or rsa-sign");
  EXPECT_FAILS_WITH(lms()({"sign", "mrk", "--in", File("doc")}), 1, "has type mrk");
  EXPECT_FAILS_WITH(lms()({"decrypt", "vpn", "--in", File("doc")}), 1,
                    "decrypt needs a key of type rsa-decrypt");
  EXPECT_FAILS_WITH(lms()({"encrypt", "code signing", "--in", File("doc")}), 1,
                    "encrypt needs a key of type rsa-decrypt");
  EXPECT_FAILS_WITH(lms()({"unseal", "vpn"}), 1, "unseal needs a key of type sealed");
  CommandResult r = lms()({"unseal", "vpn", "--json"});
  EXPECT_EQ(ParseJson(r)["code"], "InvalidArgument");
}

TEST_F(LmsTest, BadUsageExitsTwoAndHelpExitsZero) {
  EXPECT_EQ(lms()({}).exit_code, 2);
  EXPECT_EQ(lms()({"frobnicate"}).exit_code, 2);
  EXPECT_EQ(lms()({"sign", "vpn"}).exit_code, 2);  // --in missing
  EXPECT_EQ(lms()({"keygen", "--type", "dsa", "--label", "x"}).exit_code, 2);
  EXPECT_EQ(lms()({"keys", "--no-such-option"}).exit_code, 2);
  for (const char* cmd : {"init", "keygen", "keys", "pubkey", "sign", "encrypt", "decrypt",
                          "unseal", "import-tpm2"}) {
    CommandResult r = lms()({cmd, "--help"});
    EXPECT_EQ(r.exit_code, 0) << cmd << ": " << r.output;
    EXPECT_NE(r.output.find("Usage:"), std::string::npos) << cmd;
  }
  CommandResult r = lms()({"--help"});
  EXPECT_NE(r.output.find("Exit codes: 0 success, 1 the operation failed"), std::string::npos);
  // Labels: unique, not UUID-shaped.
  EXPECT_FAILS_WITH(lms()({"keygen", "--type", "ecc-sign", "--label", "vpn"}), 1,
                    "already a key labelled 'vpn'");
  EXPECT_FAILS_WITH(
      lms()({"keygen", "--type", "ecc-sign", "--label", "00000000-0000-4000-8000-000000000001"}), 1,
      "cannot look like a key id");
  EXPECT_FAILS_WITH(lms()({"keygen", "--type", "ecc-sign", "--label", "x", "--data", "f"}), 1,
                    "only for --type sealed");
}

TEST_F(LmsTest, UninitialisedStoreAndUnreachableTpmAreSaidInWords) {
  LmsRunner empty{File("nothing-here"), lms().tcti};
  EXPECT_FAILS_WITH(empty({"keys"}), 1, "not initialised (run `lms init` first)");
  LmsRunner no_tpm{lms().store, "swtpm:host=127.0.0.1,port=1"};
  Spit(File("doc"), "x");
  EXPECT_FAILS_WITH(no_tpm({"sign", "vpn", "--in", File("doc")}), 1, "cannot reach the TPM");
  EXPECT_FAILS_WITH(lms()({"init", "--ma-key-public", File("doc")}), 1, "not a TPM2B_PUBLIC");
  EXPECT_FALSE(Env::Default()->FileExists(lms().store + "/retired"));
}

TEST_F(LmsTest, ForceSetsTheOldStoreAsideNeverDeletingIt) {
  // Its own store (ECC MRK: fast), on the same TPM and SRK.
  LmsRunner other{File("other"), lms().tcti};
  json first = other.Json({"init", "--ma-key-public", w_->ma_pub, "--mrk-alg", "ecc-p256"});
  json k = other.Json({"keygen", "--type", "ecc-sign", "--label", "a"});
  const std::string old_mrk = first["mrk"]["id"];
  // Keys never backed up: --force alone is refused, --discard-unbacked-keys goes ahead.
  EXPECT_FAILS_WITH(other({"init", "--ma-key-public", w_->ma_pub, "--force"}), 1,
                    "2 key(s), the MRK among them, were never backed up");
  json second = other.Json({"init", "--ma-key-public", w_->ma_pub, "--mrk-alg", "ecc-p256",
                            "--force", "--discard-unbacked-keys"});
  const std::string retired = second.value("retired_to", "");
  ASSERT_FALSE(retired.empty());
  EXPECT_TRUE(Env::Default()->FileExists(retired + "/store.json"));
  EXPECT_TRUE(Env::Default()->FileExists(retired + "/keys/" + old_mrk + ".json"));
  EXPECT_TRUE(
      Env::Default()->FileExists(retired + "/keys/" + k["key"]["id"].get<std::string>() + ".json"));
  EXPECT_NE(second["mrk"]["id"], old_mrk);
  EXPECT_NE(second["recovery_code"], first["recovery_code"]);
  EXPECT_EQ(other.Json({"keys"})["keys"].size(), 1u);

  // Once every key is backed up (as lms backup records it), --force alone is enough.
  KeyStore store(File("other"), Env::Default());
  auto keys = store.ListKeys();
  ASSERT_TRUE(keys.has_value());
  for (KeyRecord key : *keys) {
    key.backed_up_at = 1795334400;
    ASSERT_TRUE(store.PutKey(key).ok());
  }
  json third =
      other.Json({"init", "--ma-key-public", w_->ma_pub, "--mrk-alg", "ecc-p256", "--force"});
  EXPECT_FALSE(third.value("retired_to", "").empty());
}

TEST_F(LmsTest, ClearedTpmIsRecognisedNotMisused) {
  // Instance 1, so that the shared store's SRK survives.
  std::string why;
  Swtpm* t = testing::SharedSwtpm(1, &why);
  ASSERT_NE(t, nullptr) << why;
  LmsRunner l{File("cleared"), t->tcti()};
  l.Json({"init", "--ma-key-public", w_->ma_pub, "--mrk-alg", "ecc-p256"});
  l.Json({"keygen", "--type", "ecc-sign", "--label", "a"});
  CommandResult r = t->Tools({"tpm2_clear", "-c", "p"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  Spit(File("doc"), "x");
  EXPECT_FAILS_WITH(l({"sign", "a", "--in", File("doc")}), 1, "restored from a backup");
  // A new SRK made by someone else at the same handle is not taken for ours either.
  r = t->Tools({"tpm2_createprimary", "-C", "o", "-G", "ecc256:aes128cfb", "-a",
                "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|noda|restricted|decrypt",
                "-c", File("p.ctx")});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = t->Tools({"tpm2_evictcontrol", "-C", "o", "-c", File("p.ctx"), "0x81000001"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_FAILS_WITH(l({"sign", "a", "--in", File("doc")}), 1, "is not the one the key store");
}

TEST_F(LmsTest, EscrowInitShowsNoCodeAndSealsARandomInnerKeyForTheEscrowKey) {
  // The MA escrow key as ma-server publishes it (software key); its own store, ECC MRK.
  EvpPkeyPtr escrow_key(EVP_RSA_gen(2048));
  ASSERT_TRUE(escrow_key);
  auto escrow_pub = tpm::EscrowPublicFromEvp(escrow_key.get());
  ASSERT_TRUE(escrow_pub.has_value()) << escrow_pub.error().ToString();
  auto escrow_bytes = tpm::Marshal(*escrow_pub);
  ASSERT_TRUE(escrow_bytes.has_value());
  const Bytes ma_public = ToBytes(Slurp(w_->ma_pub));
  const std::string dir = File("escrow");
  auto l = Lms::Open({.store_dir = dir, .tcti = lms().tcti, .env = nullptr});
  ASSERT_TRUE(l.has_value()) << l.error().ToString();

  // A key that is no escrow key (the MA storage key: restricted) is refused before the
  // store or the TPM change.
  InitOptions o{.ma_key_public = ma_public,
                .policy_key_public = {},
                .ma_key_approval = {},
                .mrk_alg = esys::KeyAlg::kEccP256,
                .mrk_handle = 0,  // a shared TPM: see LmsRunner
                .custody = CustodyMode::kEscrow,
                .escrow_key_id = "escrow-1",
                .escrow_public = ma_public};
  auto refused = (*l)->Init(o);
  ASSERT_FALSE(refused.has_value());
  EXPECT_EQ(refused.error().code(), Code::kInvalidArgument) << refused.error().ToString();
  EXPECT_NE(refused.error().message().find("escrow key"), std::string::npos);
  EXPECT_FALSE(Env::Default()->FileExists(dir + "/store.json"));

  o.escrow_public = *escrow_bytes;
  auto init = (*l)->Init(o);
  ASSERT_TRUE(init.has_value()) << init.error().ToString();
  EXPECT_TRUE(init->recovery_code.empty());
  EXPECT_EQ(init->state.custody.mode, CustodyMode::kEscrow);
  EXPECT_EQ(init->state.custody.escrow_key_id, "escrow-1");
  EXPECT_EQ(init->state.custody.escrow_public, *escrow_bytes);

  // store.json: the escrow key and the sealed inner key, nothing of a recovery code.
  json custody = json::parse(Slurp(dir + "/store.json"))["custody"];
  EXPECT_EQ(custody.value("mode", ""), "escrow") << custody.dump();
  EXPECT_EQ(custody.value("escrow_key_id", ""), "escrow-1");
  EXPECT_EQ(custody.value("escrow_public", ""), Base64Encode(*escrow_bytes));
  EXPECT_FALSE(custody.value("sealed_public", "").empty());
  EXPECT_FALSE(custody.value("sealed_private", "").empty());
  for (const char* field : {"kdf", "salt", "n", "r", "p", "verifier"}) {
    EXPECT_FALSE(custody.contains(field)) << field << ": " << custody.dump();
  }

  // The sealed inner key is 16 random bytes, and what a backup escrows of it opens with the
  // escrow private key for this platform and MRK only (tpm/escrow.h: the MA's half).
  auto inner = (*l)->UnsealInnerKey();
  ASSERT_TRUE(inner.has_value()) << inner.error().ToString();
  EXPECT_EQ(inner->size(), kInnerKeyBytes);
  EXPECT_NE(*inner, SecureBytes(kInnerKeyBytes, 0));
  auto mrk = (*l)->Find(init->state.mrk_id);
  ASSERT_TRUE(mrk.has_value());
  auto mrk_pub = tpm::Unmarshal<TPM2B_PUBLIC>(mrk->public_area);
  ASSERT_TRUE(mrk_pub.has_value());
  auto mrk_name = tpm::ComputeName(mrk_pub->publicArea);
  ASSERT_TRUE(mrk_name.has_value());
  EXPECT_EQ(*mrk_name, mrk->name);
  const std::string platform(68, 'a');
  auto escrowed = tpm::EscrowEncrypt(escrow_pub->publicArea, *inner, platform, *mrk_name);
  ASSERT_TRUE(escrowed.has_value()) << escrowed.error().ToString();
  auto plain = tpm::EscrowDecrypt(escrow_key.get(), *escrowed);
  ASSERT_TRUE(plain.has_value()) << plain.error().ToString();
  auto opened = tpm::EscrowOpen(*plain, platform, *mrk_name);
  ASSERT_TRUE(opened.has_value()) << opened.error().ToString();
  EXPECT_EQ(*opened, *inner);
  EXPECT_FALSE(tpm::EscrowOpen(*plain, std::string(68, 'b'), *mrk_name).has_value());
  l->reset();

  // status names the custody (the MA is not configured: exit 1, the report printed anyway).
  LmsRunner runner{dir, lms().tcti};
  CommandResult r = runner({"status", "--json"});
  EXPECT_EQ(r.exit_code, 1) << r.output;
  json st = ParseJson(r);
  EXPECT_EQ(st["store"]["custody"], "escrow") << r.output;
  EXPECT_EQ(st["store"]["escrow_key_id"], "escrow-1") << r.output;
  r = runner({"status"});
  EXPECT_NE(r.output.find("custody      escrow (MA escrow key escrow-1)"), std::string::npos)
      << r.output;
  json shared = ParseJson(lms()({"status", "--json"}));
  EXPECT_EQ(shared["store"]["custody"], "recovery-code");
}

TEST_F(LmsTest, EscrowInitNeedsTheMa) {
  LmsRunner fresh{File("fresh"), lms().tcti};
  EXPECT_FAILS_WITH(fresh({"init", "--ma-key-public", w_->ma_pub, "--custody", "escrow"}), 1,
                    "--custody escrow needs the MA");
  EXPECT_FAILS_WITH(fresh({"init", "--ma-key-public", w_->ma_pub, "--escrow-key-id", "x"}), 1,
                    "only for --custody escrow");
  EXPECT_EQ(fresh({"init", "--ma-key-public", w_->ma_pub, "--custody", "vault"}).exit_code, 2);
  EXPECT_FALSE(Env::Default()->FileExists(File("fresh") + "/store.json"));
}

// ------------------------------------------------------------------ library, no TPM

TEST(RecoveryCode, TypedFormsNormaliseAndAWrongCodeIsRefused) {
  auto made = MakeRecoveryCustody();
  ASSERT_TRUE(made.has_value()) << made.error().ToString();
  const std::string code(made->recovery_code.begin(), made->recovery_code.end());
  auto key = DeriveInnerKey(code, made->custody);
  ASSERT_TRUE(key.has_value()) << key.error().ToString();
  EXPECT_EQ(*key, made->inner_key);
  EXPECT_EQ(key->size(), kInnerKeyBytes);
  EXPECT_EQ(made->custody.verifier.size(), kVerifierBytes);
  // Lower case, no dashes, spaces, O for 0 and l for 1 all read the same.
  std::string typed;
  for (char c : code) {
    if (c == '-') {
      typed += ' ';
    } else if (c == '0') {
      typed += 'o';
    } else if (c == '1') {
      typed += 'l';
    } else {
      typed += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    }
  }
  auto again = DeriveInnerKey(typed, made->custody);
  ASSERT_TRUE(again.has_value()) << again.error().ToString();
  EXPECT_EQ(*again, made->inner_key);
  // One character off: the verifier says so.
  std::string wrong = code;
  wrong[0] = wrong[0] == 'A' ? 'B' : 'A';
  auto refused = DeriveInnerKey(wrong, made->custody);
  ASSERT_FALSE(refused.has_value());
  EXPECT_EQ(refused.error().code(), Code::kPermissionDenied);
  EXPECT_EQ(DeriveInnerKey("ABCD-EFGH", made->custody).error().code(), Code::kInvalidArgument);
  EXPECT_EQ(DeriveInnerKey(std::string(31, 'A') + "U", made->custody).error().code(),
            Code::kInvalidArgument);
  // Two inits never share a code or salt.
  auto other = MakeRecoveryCustody();
  ASSERT_TRUE(other.has_value());
  EXPECT_NE(other->recovery_code, made->recovery_code);
  EXPECT_NE(other->custody.salt, made->custody.salt);
}

TEST(KeyStoreFiles, RoundTripAndDamageIsReported) {
  TempDir dir;
  KeyStore store(dir.File("s"), Env::Default());
  ASSERT_TRUE(store.CreateLayout().ok());
  EXPECT_FALSE(store.Initialized());
  EXPECT_EQ(store.ReadState().error().code(), Code::kNotFound);
  KeyRecord k;
  k.id = "3f1c2a9e-7b4d-4e2f-9a1b-0c8d7e6f5a4b";
  k.label = "ü label";
  k.type = KeyType::kRsaDecrypt;
  k.parent = "00000000-0000-4000-8000-000000000001";
  k.origin = "lms";
  k.created = 1795334400;
  k.backed_up_at = 1795334500;
  k.public_area = Bytes{1, 2, 3};
  k.private_area = Bytes{4, 5};
  k.name = Bytes{0, 0x0b, 9};
  ASSERT_TRUE(store.PutKey(k).ok());
  auto got = store.GetKey(k.id);
  ASSERT_TRUE(got.has_value()) << got.error().ToString();
  EXPECT_EQ(*got, k);
  EXPECT_EQ(*store.FindKey("ü label"), k);
  EXPECT_EQ(*store.FindKey("3F1C2A9E-7B4D-4E2F-9A1B-0C8D7E6F5A4B"), k);
  EXPECT_EQ(store.FindKey("nope").error().code(), Code::kNotFound);

  StoreState s;
  s.initialized_at = 1;
  s.srk_handle = 0x81000001;
  s.srk_alg = "rsa2048";
  s.srk_name = Bytes{0, 0x0b};
  s.mrk_id = k.parent;
  s.ma_key_public = Bytes{7};
  s.ma_key_name = Bytes{8};
  s.custody.salt = Bytes(16, 1);
  s.custody.n = 32768;
  s.custody.r = 8;
  s.custody.p = 1;
  s.custody.verifier = Bytes(32, 2);
  s.custody.sealed_public = Bytes{3};
  s.custody.sealed_private = Bytes{4};
  s.last_backup_package_id = "x";
  ASSERT_TRUE(store.WriteState(s).ok());
  EXPECT_TRUE(store.Initialized());
  EXPECT_EQ(*store.ReadState(), s);

  // Damage names the file; a newer format is refused as such.
  const std::string key_file = dir.File("s/keys/" + k.id + ".json");
  Spit(key_file, "{\"format\": 1, \"id\": 5}");
  auto bad = store.GetKey(k.id);
  ASSERT_FALSE(bad.has_value());
  EXPECT_EQ(bad.error().code(), Code::kCorruption);
  EXPECT_NE(bad.error().message().find(key_file), std::string::npos);
  Spit(key_file, "not json");
  EXPECT_EQ(store.ListKeys().error().code(), Code::kCorruption);
  Spit(dir.File("s/store.json"), "{\"format\": 2}");
  EXPECT_EQ(store.ReadState().error().code(), Code::kVersionTooNew);
  // Leftovers of an interrupted atomic write are not keys.
  ASSERT_TRUE(store.PutKey(k).ok());
  Spit(dir.File("s/keys/" + k.id + ".json.tmp123"), "partial");
  EXPECT_EQ(store.ListKeys()->size(), 1u);
}

TEST(KeyStoreFiles, EscrowCustodyRoundTripsAndRecoveryCodeFilesReadAsBefore) {
  StoreState s;
  s.initialized_at = 1;
  s.srk_handle = 0x81000001;
  s.srk_alg = "rsa2048";
  s.srk_name = Bytes{0, 0x0b};
  s.mrk_id = "00000000-0000-4000-8000-000000000001";
  s.ma_key_public = Bytes{7};
  s.ma_key_name = Bytes{8};
  s.custody.mode = CustodyMode::kEscrow;
  s.custody.escrow_key_id = "ma-escrow-2026";
  s.custody.escrow_public = Bytes{9, 9, 9};
  s.custody.sealed_public = Bytes{3};
  s.custody.sealed_private = Bytes{4};
  const std::string text = StoreStateToJson(s);
  json j = json::parse(text);
  EXPECT_EQ(j["custody"], json({{"mode", "escrow"},
                                {"escrow_key_id", "ma-escrow-2026"},
                                {"escrow_public", Base64Encode(Bytes{9, 9, 9})},
                                {"sealed_public", Base64Encode(Bytes{3})},
                                {"sealed_private", Base64Encode(Bytes{4})}}))
      << text;
  auto back = StoreStateFromJson(text, "store.json");
  ASSERT_TRUE(back.has_value()) << back.error().ToString();
  EXPECT_EQ(*back, s);

  // Escrow custody without its key is damage; a mode lms does not know is refused as such.
  json damaged = j;
  damaged["custody"].erase("escrow_public");
  EXPECT_EQ(StoreStateFromJson(damaged.dump(), "store.json").error().code(), Code::kCorruption);
  damaged = j;
  damaged["custody"]["escrow_key_id"] = "";
  EXPECT_EQ(StoreStateFromJson(damaged.dump(), "store.json").error().code(), Code::kCorruption);
  damaged = j;
  damaged["custody"]["mode"] = "vault";
  EXPECT_EQ(StoreStateFromJson(damaged.dump(), "store.json").error().code(), Code::kUnsupported);

  // A store.json as lms wrote it before escrow custody existed reads as recovery-code custody.
  const std::string old = R"({
  "custody": {"kdf": "scrypt", "mode": "recovery-code", "n": 32768, "p": 1, "r": 8,
              "salt": "AQEBAQEBAQEBAQEBAQEBAQ==", "sealed_private": "BA==", "sealed_public": "Aw==",
              "verifier": "AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI="},
  "format": 1, "initialized_at": 1, "last_backup_at": null, "last_backup_package_id": null,
  "ma_key": {"name": "08", "public": "Bw=="}, "mrk_id": "00000000-0000-4000-8000-000000000001",
  "srk": {"alg": "rsa2048", "handle": 2164260865, "name": "000b"}})";
  auto read = StoreStateFromJson(old, "store.json");
  ASSERT_TRUE(read.has_value()) << read.error().ToString();
  EXPECT_EQ(read->custody.mode, CustodyMode::kRecoveryCode);
  EXPECT_EQ(read->custody.salt, Bytes(16, 1));
  EXPECT_EQ(read->custody.n, 32768u);
  EXPECT_EQ(read->custody.verifier, Bytes(32, 2));
  EXPECT_TRUE(read->custody.escrow_key_id.empty());
  EXPECT_EQ(json::parse(StoreStateToJson(*read)), json::parse(old));  // written back the same
}

}  // namespace
}  // namespace tpmma::lms
