// SPDX-License-Identifier: GPL-2.0-or-later
// lms against the real ma-server (made by the real `ma-admin init`, TLS, SQLite) on swtpm:
//
//   TPM A: init (MA key fetched with GetMAKey) -> keygen (each type) + a tpm2_create key
//          registered with import-tpm2 -> sign/encrypt/unseal -> authenticate -> backup ->
//          query -> tpm2_clear -> restore with the recovery code -> the same public keys,
//          old and new signatures verify (openssl) with the public keys exported before,
//          old ciphertexts decrypt, sealed data unseals; the refusals on the way (no code,
//          wrong code, tampered package, MA unreachable with agent-mode retries) leave the
//          store as it was.
//   TPM B: an MRK with 100 children backed up, cleared, restored: all 100 come back.
//   TPM C: the board swap: A's store (the disk) on another TPM: refused until a helpdesk
//          approval (ma-admin approve), then restored from A's package.
//   Escrow custody (B, then C): init --custody escrow (no code), backup (package custody
//          Escrow), tpm2_clear, restore refused until the helpdesk approves X -> X, then
//          restored with the inner key the MA releases; the same on another board. After
//          `ma-admin escrow rotate` (an MA of its own) the next backup re-pins the store to
//          the new escrow key; a package escrowed to the retired one still restores.
//   A new disk too (`restore --new-store`): B's package into an empty store on C (refused
//          until approved, then every key of each type back on an ECC SRK; the store backs
//          up and restores as usual); on the same board from its own package (a wrong code
//          or a package the MA does not vouch for leaves no store.json; leftovers of an
//          unfinished attempt set aside); an escrow package into a new store on C.
//
// DISABLED_BackupAndRestoreOf100KeysTiming measures backup and restore for
// docs/benchmarks.md (issue #4 section) (run with --gtest_also_run_disabled_tests).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <spawn.h>
#include <sys/wait.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include <nlohmann/json.hpp>

#include <openssl/pem.h>

#include "client/lms/custody.h"
#include "client/lms/keystore.h"
#include "client/lms/operations.h"
#include "client/lms/remote.h"
#include "client/ma/platform.h"
#include "common/env.h"
#include "common/openssl.h"
#include "schema/package.h"
#include "schema/package_xml.h"
#include "tests/support/ma_process.h"
#include "tests/support/swtpm.h"
#include "tests/support/testutil.h"
#include "tpm/marshal.h"
#include "tpm/public.h"

extern char** environ;

namespace tpmma::lms {
namespace {

using nlohmann::json;
using tpmma::testing::MaInstance;
using tpmma::testing::RunCommand;
using tpmma::testing::Slurp;
using tpmma::testing::Spit;
using tpmma::testing::Swtpm;
using tpmma::testing::TempDir;

// A command's exit code, stdout and stderr apart; stdin from `input` (or /dev/null).
struct Ran {
  int exit_code = -1;
  std::string out, err;
  std::string all() const { return out + err; }
};

Ran Exec(const std::vector<std::string>& argv, const std::string* input = nullptr) {
  TempDir io;
  const std::string in = io.File("in"), out = io.File("out"), err = io.File("err");
  Spit(in, input != nullptr ? *input : std::string());
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, in.c_str(), O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 1, out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  posix_spawn_file_actions_addopen(&fa, 2, err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSID);  // no controlling terminal
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = -1;
  Ran r;
  if (posix_spawn(&pid, args[0], &fa, &attr, args.data(), environ) == 0) {
    int status = 0;
    ::waitpid(pid, &status, 0);
    r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  r.out = Slurp(out);
  r.err = Slurp(err);
  return r;
}

json ParseJson(const Ran& r) {
  json j = json::parse(r.out, nullptr, false);
  EXPECT_FALSE(j.is_discarded()) << "not JSON: " << r.out << r.err;
  return j;
}

// lms against one store and TPM, with `ma_flags` after the arguments (empty: the MA
// settings recorded in the store's config.json).
struct Lms {
  std::string store, tcti;
  std::vector<std::string> ma_flags;
  Ran operator()(std::vector<std::string> args, const std::string* input = nullptr) const {
    std::vector<std::string> argv = {LMS_PATH, "--store", store, "--tcti", tcti};
    argv.insert(argv.end(), args.begin(), args.end());
    argv.insert(argv.end(), ma_flags.begin(), ma_flags.end());
    return Exec(argv, input);
  }
  json Json(std::vector<std::string> args, const std::string* input = nullptr) const {
    args.push_back("--json");
    Ran r = (*this)(args, input);
    json j = ParseJson(r);
    EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
    EXPECT_EQ(j.value("ok", false), true) << r.out << r.err;
    return j;
  }
};

#define EXPECT_FAILS_WITH(result, exit, substring)               \
  do {                                                           \
    Ran r_ = (result);                                           \
    EXPECT_EQ(r_.exit_code, exit) << r_.all();                   \
    EXPECT_NE(r_.all().find(substring), std::string::npos)       \
        << "output lacks '" << (substring) << "': " << r_.all(); \
  } while (0)

// store.json and keys/*.json as they are now (ma.json, which any authentication updates,
// and the lock file are not "the keys").
std::map<std::string, std::string> Snapshot(const std::string& store) {
  std::map<std::string, std::string> out;
  out["store.json"] = Slurp(store + "/store.json");
  for (const auto& e : std::filesystem::directory_iterator(store + "/keys")) {
    out["keys/" + e.path().filename().string()] = Slurp(e.path().string());
  }
  return out;
}

bool OpensslVerifies(const std::string& pem, const std::string& sig, const std::string& file) {
  auto r = RunCommand({"openssl", "dgst", "-sha256", "-verify", pem, "-signature", sig, file});
  return r.exit_code == 0 && r.output.find("Verified OK") != std::string::npos;
}

struct World {
  Swtpm* a = nullptr;
  Swtpm* b = nullptr;
  Swtpm* c = nullptr;
  TempDir dir;
  std::unique_ptr<MaInstance> ma;
  std::vector<std::string> ma_flags_a, ma_flags_b, ma_flags_c;
  Lms lms_a;
  std::string code_a;
  std::string mrk_a;
  std::map<std::string, std::string> ids;  // label -> id in store A
  std::string sealed_data = "disk unlock secret\x01\x02";
  std::string platform_a;
  std::string package_a;
};

std::string File(const World& w, const std::string& name) {
  return w.dir.File(name);
}

std::string BuildWorld(World& w) {
  std::string why;
  w.a = testing::SharedSwtpm(0, &why);
  if (w.a != nullptr) w.b = testing::SharedSwtpm(1, &why);
  if (w.b != nullptr) w.c = testing::SharedSwtpm(2, &why);
  if (w.c == nullptr) return "swtpm: " + why;
  // Each swtpm has its own CA, and their root files share a name: one bundle holds all three.
  const std::string roots = File(w, "ek-roots.pem");
  Spit(roots,
       Slurp(w.a->RootCaCertPath()) + Slurp(w.b->RootCaCertPath()) + Slurp(w.c->RootCaCertPath()));
  w.ma = MaInstance::Start({MA_ADMIN_PATH, MA_SERVER_PATH}, w.dir.path(), {roots}, &why);
  if (w.ma == nullptr) return "ma-server: " + why;
  auto flags = [&](Swtpm* t) {
    return std::vector<std::string>{
        "--ma",          w.ma->url(),         "--ma-ca",
        w.ma->ca_file(), "--ek-intermediate", t->IntermediateCaCertPath()};
  };
  w.ma_flags_a = flags(w.a);
  w.ma_flags_b = flags(w.b);
  w.ma_flags_c = flags(w.c);
  w.lms_a = {File(w, "store-a"), w.a->tcti(), {}};

  // init with the MA key fetched from the MA; the MA settings are recorded in the store.
  std::vector<std::string> init_args = {"init", "--json"};
  init_args.insert(init_args.end(), w.ma_flags_a.begin(), w.ma_flags_a.end());
  Ran r = w.lms_a(init_args);
  if (r.exit_code != 0) return "lms init: " + r.all();
  json init = json::parse(r.out, nullptr, false);
  if (init.is_discarded()) return "lms init --json: " + r.all();
  w.code_a = init.value("recovery_code", "");
  w.mrk_a = init["mrk"].value("id", "");
  Spit(File(w, "seal.bin"), w.sealed_data);
  const std::vector<std::vector<std::string>> keygens = {
      {"--type", "ecc-sign", "--label", "vpn"},
      {"--type", "rsa-sign", "--label", "code signing"},
      {"--type", "rsa-decrypt", "--label", "mail"},
      {"--type", "sealed", "--label", "disk", "--data", File(w, "seal.bin")}};
  for (auto args : keygens) {
    args.insert(args.begin(), "keygen");
    args.push_back("--json");
    r = w.lms_a(args);
    json j = json::parse(r.out, nullptr, false);
    if (r.exit_code != 0 || j.is_discarded()) return "lms keygen: " + r.all();
    w.ids[j["key"]["label"]] = j["key"]["id"];
  }

  // A key made by tpm2_create under the MRK, registered with import-tpm2.
  json mrk = json::parse(Slurp(w.lms_a.store + "/keys/" + w.mrk_a + ".json"));
  Spit(File(w, "mrk.pub"), ToString(*Base64Decode(mrk["public"].get<std::string>())));
  Spit(File(w, "mrk.priv"), ToString(*Base64Decode(mrk["private"].get<std::string>())));
  auto t = w.a->Tools({"tpm2_load", "-C", "0x81000001", "-u", File(w, "mrk.pub"), "-r",
                       File(w, "mrk.priv"), "-c", File(w, "mrk.ctx")});
  if (t.exit_code != 0) return "tpm2_load: " + t.output;
  t = w.a->Tools({"tpm2_create", "-C", File(w, "mrk.ctx"), "-G", "ecc256:ecdsa-sha256", "-a",
                  "fixedparent|sensitivedataorigin|userwithauth|sign|encryptedduplication", "-u",
                  File(w, "t.pub"), "-r", File(w, "t.priv")});
  if (t.exit_code != 0) return "tpm2_create: " + t.output;
  r = w.lms_a({"import-tpm2", "--public", File(w, "t.pub"), "--private", File(w, "t.priv"),
               "--label", "from tpm2-tools", "--json"});
  if (r.exit_code != 0) return "lms import-tpm2: " + r.all();
  w.ids["from tpm2-tools"] = json::parse(r.out)["key"]["id"];
  return "";
}

World* GetWorld(std::string* err, bool* skip) {
  return testing::BuildOnce(&BuildWorld, err, skip);
}

class LmsMaTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string err;
    bool skip = false;
    w_ = GetWorld(&err, &skip);
    if (skip) GTEST_SKIP() << "swtpm not available: " << err;
    ASSERT_NE(w_, nullptr) << err;
  }
  std::string F(const std::string& name) const { return dir_.File(name); }
  const Lms& a() const { return w_->lms_a; }
  std::string Id(const std::string& label) const { return w_->ids.at(label); }

  // Keys in a store made with the library (one TPM connection: fast), MA settings for it.
  MaSettings Settings(Swtpm* t) const {
    return {.url = w_->ma->url(),
            .ca_file = w_->ma->ca_file(),
            .ek_intermediates = {t->IntermediateCaCertPath()},
            .timeout_s = 30};
  }

  // An ECC-MRK store on `t` with `n` children (half ECC signing keys, half sealed data).
  // Escrow custody: the MA's escrow key instead of a recovery code (`code` stays empty).
  std::string MakeStoreWithKeys(Swtpm* t, const std::string& store, int n, std::string* code,
                                CustodyMode custody = CustodyMode::kRecoveryCode) {
    auto key = FetchMaKey(Settings(t));
    if (!key) return key.error().ToString();
    InitOptions o{.ma_key_public = key->public_area,
                  .mrk_alg = esys::KeyAlg::kEccP256,
                  .custody = custody,
                  .escrow_key_id = {},
                  .escrow_public = {},
                  .force = false,
                  .discard_unbacked = false};
    if (custody == CustodyMode::kEscrow) {
      auto escrow = FetchEscrowKey(Settings(t));
      if (!escrow) return escrow.error().ToString();
      o.escrow_key_id = escrow->key_id;
      o.escrow_public = escrow->public_area;
    }
    auto l = lms::Lms::Open({.store_dir = store, .tcti = t->tcti(), .env = nullptr});
    if (!l) return l.error().ToString();
    auto init = (*l)->Init(o);
    if (!init) return init.error().ToString();
    *code = std::string(init->recovery_code.begin(), init->recovery_code.end());
    Status saved = (*l)->store().WriteConfig({.ma_url = w_->ma->url(),
                                              .ma_ca = w_->ma->ca_file(),
                                              .ek_intermediates = {t->IntermediateCaCertPath()}});
    if (!saved.ok()) return saved.ToString();
    for (int i = 0; i < n; ++i) {
      const bool sealed = i % 2 == 1;
      const std::string data = "secret number " + std::to_string(i);
      auto k = (*l)->Keygen(sealed ? esys::ChildType::kSealed : esys::ChildType::kEccSign,
                            "key " + std::to_string(i),
                            sealed ? SecureBytes(data.begin(), data.end()) : SecureBytes());
      if (!k) return k.error().ToString();
    }
    return "";
  }

  World* w_ = nullptr;
  TempDir dir_;
};

// ------------------------------------------------------------------ the whole cycle

TEST_F(LmsMaTest, BackupThenTpmClearThenRestoreBringsEveryKeyBack) {
  const std::string doc = F("doc.txt"), doc2 = F("doc2.txt");
  Spit(doc, "signed before the clear\n");
  Spit(doc2, "signed after the restore\n");
  const std::string message = "wrapped mail key 0123456789";
  Spit(F("msg"), message);

  // Before: public keys exported, a signature with each signing key, a ciphertext.
  for (const std::string label : {"vpn", "code signing", "from tpm2-tools"}) {
    ASSERT_EQ(a()({"pubkey", Id(label), "--out", F(label + ".pem")}).exit_code, 0);
    Ran r = a()({"sign", label, "--in", doc, "--out", F(label + ".sig")});
    ASSERT_EQ(r.exit_code, 0) << r.all();
    ASSERT_TRUE(OpensslVerifies(F(label + ".pem"), F(label + ".sig"), doc)) << label;
  }
  ASSERT_EQ(a()({"pubkey", "mail", "--out", F("mail.pem")}).exit_code, 0);
  ASSERT_EQ(a()({"encrypt", "mail", "--in", F("msg"), "--out", F("ct")}).exit_code, 0);
  ASSERT_EQ(a()({"unseal", "disk"}).out, w_->sealed_data);
  const json keys_before = a().Json({"keys"})["keys"];
  ASSERT_EQ(keys_before.size(), 6u);

  // authenticate: the platform id (hex of the EK Name); the AK kept in ma.json.
  json auth = a().Json({"authenticate"});  // MA settings from the store's config.json
  const std::string platform = auth.value("platform_id", "");
  EXPECT_EQ(platform.size(), 68u) << auth.dump();
  EXPECT_TRUE(auth.value("new_ak", false));
  EXPECT_FALSE(a().Json({"authenticate"}).value("new_ak", true));  // the same AK again
  const std::string ma_json = Slurp(a().store + "/ma.json");
  EXPECT_NE(ma_json.find(platform), std::string::npos);

  // An MA that cannot be reached: agent mode tries 3 times with back-off; the store is as
  // it was.
  auto before = Snapshot(a().store);
  Ran r = a()({"backup", "--if-changed", "--ma", "https://127.0.0.1:1", "--retries", "3",
               "--retry-delay", "0.05"});
  EXPECT_EQ(r.exit_code, 1) << r.all();
  EXPECT_NE(r.err.find("cannot reach the MA at https://127.0.0.1:1"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("tried 3 times; nothing was changed locally"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("attempt 3 of 3"), std::string::npos) << r.err;
  EXPECT_EQ(Snapshot(a().store), before);

  // backup: progress on stderr, the package id on stdout; every key marked backed up.
  r = a()({"backup"});
  ASSERT_EQ(r.exit_code, 0) << r.all();
  EXPECT_NE(r.err.find("lms: uploading package"), std::string::npos) << r.err;
  EXPECT_NE(r.out.find("Backed up the MRK and 5 key(s)"), std::string::npos) << r.out;
  const json keys_after = a().Json({"keys"})["keys"];
  for (const json& k : keys_after) EXPECT_TRUE(k.value("backed_up", false)) << k.dump();
  json state = json::parse(Slurp(a().store + "/store.json"));
  const std::string package = state.value("last_backup_package_id", "");
  ASSERT_FALSE(package.empty());
  w_->platform_a = platform;
  w_->package_a = package;

  // Nothing changed: nothing uploaded (timer mode too) unless --full.
  json again = a().Json({"backup"});
  EXPECT_FALSE(again.value("uploaded", true));
  EXPECT_NE(again.value("reason", "").find("nothing changed"), std::string::npos);
  r = a()({"backup", "--if-changed"});
  EXPECT_EQ(r.exit_code, 0) << r.all();
  EXPECT_NE(r.out.find("nothing changed"), std::string::npos);

  // query lists it as this platform's own, 5 keys, marked as the store's last backup.
  json q = a().Json({"query"});
  ASSERT_EQ(q["packages"].size(), 1u) << q.dump();
  EXPECT_EQ(q["packages"][0]["package_id"], package);
  EXPECT_EQ(q["packages"][0]["access"], "Own");
  EXPECT_EQ(q["packages"][0]["keys"], 5);
  EXPECT_EQ(q["packages"][0]["last_backup"], true);
  r = a()({"query"});
  EXPECT_NE(r.out.find("* " + package), std::string::npos) << r.out;

  // The owner clears the TPM: the SRK, and every key under it, is gone.
  auto cleared = w_->a->Tools({"tpm2_clear", "-c", "p"});
  ASSERT_EQ(cleared.exit_code, 0) << cleared.output;
  EXPECT_FAILS_WITH(a()({"sign", "vpn", "--in", doc}), 1, "lms restore");
  json st = ParseJson(a()({"status", "--json"}));
  EXPECT_EQ(st["tpm"]["srk_matches_store"], false) << st.dump();
  before = Snapshot(a().store);

  // No terminal and no --recovery-code-file: says how to give the code.
  EXPECT_FAILS_WITH(a()({"restore"}), 1, "--recovery-code-file");
  // A wrong code: refused before the TPM is asked; nothing changed.
  std::string wrong = w_->code_a;
  wrong[0] = wrong[0] == 'A' ? 'B' : 'A';
  Spit(F("wrong"), wrong);
  r = a()({"restore", "--recovery-code-file", F("wrong")});
  EXPECT_EQ(r.exit_code, 1) << r.all();
  EXPECT_NE(r.err.find("wrong recovery code"), std::string::npos) << r.err;
  EXPECT_EQ(r.all().find(wrong), std::string::npos);  // never echoed
  EXPECT_EQ(Snapshot(a().store), before);
  // A package changed on the way (one byte of the signed document): refused, nothing changed.
  {
    auto l = lms::Lms::Open({.store_dir = a().store, .tcti = w_->a->tcti(), .env = nullptr});
    ASSERT_TRUE(l.has_value());
    RestoreOptions o;
    const std::string code = w_->code_a;
    o.recovery_code = [code]() -> Result<SecureString> {
      return SecureString(code.begin(), code.end());
    };
    o.after_download = [](client::DownloadedPackage& p) {
      const std::string doc = ToString(p.document);
      size_t at = doc.find("Label>");
      ASSERT_NE(at, std::string::npos);
      p.document[at + 7] ^= 0x01;  // inside a label's text
    };
    auto restored = Restore(**l, Settings(w_->a), o);
    ASSERT_FALSE(restored.has_value());
    EXPECT_EQ(restored.error().code(), Code::kSignatureInvalid) << restored.error().ToString();
    EXPECT_NE(restored.error().message().find("nothing was restored"), std::string::npos);
  }
  EXPECT_EQ(Snapshot(a().store), before);
  // The MA unreachable: a clear message.
  EXPECT_FAILS_WITH(a()({"restore", "--ma", "https://127.0.0.1:1"}), 1,
                    "cannot reach the MA at https://127.0.0.1:1");

  // The right code (typed lower case, from stdin): every key back.
  std::string typed = w_->code_a;
  std::transform(typed.begin(), typed.end(), typed.begin(), ::tolower);
  typed += "\n";
  r = a()({"restore", "--recovery-code-file", "-", "--json"}, &typed);
  ASSERT_EQ(r.exit_code, 0) << r.all();
  json restored = ParseJson(r);
  EXPECT_EQ(restored["package_id"], package);
  EXPECT_EQ(restored["source_platform_id"], platform);
  EXPECT_EQ(restored["used_recovery_code"], true);
  EXPECT_EQ(restored["srk_changed"], true);
  EXPECT_EQ(restored["updated"], 5);
  EXPECT_EQ(restored["added"], 0);
  EXPECT_EQ(r.out.find(w_->code_a), std::string::npos);
  // The AK made before the clear no longer loads: a new one was made and kept.
  const json ak_before = json::parse(ma_json)["ak"];
  const json ak_after = json::parse(Slurp(a().store + "/ma.json"))["ak"];
  EXPECT_NE(ak_after["public"], ak_before["public"]);
  EXPECT_EQ(json::parse(Slurp(a().store + "/ma.json"))["platform_id"], platform);

  // The same public keys; the old signatures verify, new ones verify with the old PEMs.
  const json keys_restored = a().Json({"keys"})["keys"];
  ASSERT_EQ(keys_restored.size(), keys_before.size());
  for (size_t i = 0; i < keys_before.size(); ++i) {
    EXPECT_EQ(keys_restored[i]["id"], keys_before[i]["id"]);
    EXPECT_EQ(keys_restored[i]["name"], keys_before[i]["name"]);  // Name = hash of the public
    EXPECT_EQ(keys_restored[i]["label"], keys_before[i]["label"]);
  }
  for (const std::string label : {"vpn", "code signing", "from tpm2-tools"}) {
    EXPECT_EQ(a()({"pubkey", label}).out, Slurp(F(label + ".pem"))) << label;
    EXPECT_TRUE(OpensslVerifies(F(label + ".pem"), F(label + ".sig"), doc)) << label;
    r = a()({"sign", label, "--in", doc2, "--out", F(label + ".sig2")});
    ASSERT_EQ(r.exit_code, 0) << r.all();
    EXPECT_TRUE(OpensslVerifies(F(label + ".pem"), F(label + ".sig2"), doc2)) << label;
  }
  r = a()({"decrypt", "mail", "--in", F("ct")});
  EXPECT_EQ(r.exit_code, 0) << r.all();
  EXPECT_EQ(r.out, message);
  EXPECT_EQ(a()({"unseal", "disk"}).out, w_->sealed_data);
  // The inner key is sealed to the new SRK: backups run unattended again.
  {
    auto l = lms::Lms::Open({.store_dir = a().store, .tcti = w_->a->tcti(), .env = nullptr});
    ASSERT_TRUE(l.has_value());
    auto inner = (*l)->UnsealInnerKey();
    EXPECT_TRUE(inner.has_value()) << inner.error().ToString();
  }

  // A key made after the restore: the timer's backup uploads it (a new package-signing
  // key, since the old one went with the clear); the MA unreachable changes nothing.
  r = a()({"keygen", "--type", "ecc-sign", "--label", "after the restore"});
  ASSERT_EQ(r.exit_code, 0) << r.all();
  before = Snapshot(a().store);
  r = a()({"backup", "--if-changed", "--ma", "https://127.0.0.1:1", "--retries", "2",
           "--retry-delay", "0.01"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(Snapshot(a().store), before);
  json up = a().Json({"backup", "--if-changed"});
  EXPECT_TRUE(up.value("uploaded", false)) << up.dump();
  EXPECT_EQ(up["child_keys"], 6);
  q = a().Json({"query"});
  EXPECT_EQ(q["packages"].size(), 2u);
  EXPECT_EQ(q["packages"][0]["package_id"], up["package_id"]);  // newest first
  // The restore without a code now: the sealed copy works (same SRK), nothing asked.
  json again_restored = a().Json({"restore"});
  EXPECT_EQ(again_restored["used_recovery_code"], false);
  EXPECT_EQ(again_restored["srk_changed"], false);
  EXPECT_EQ(again_restored["package_id"], up["package_id"]);

  // status: reachable, enrolled, last backup.
  json s = a().Json({"status"});
  EXPECT_EQ(s["ma"]["reachable"], true);
  EXPECT_EQ(s["platform"]["enrolled"], true);
  EXPECT_EQ(s["platform"]["id"], platform);
  EXPECT_EQ(s["platform"]["packages_on_ma"], 2);
  EXPECT_EQ(s["last_backup_package_id"], up["package_id"]);
  EXPECT_EQ(s["tpm"]["srk_matches_store"], true);
  r = a()({"status"});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_NE(r.out.find(platform + " (enrolled)"), std::string::npos) << r.out;

  // delete: the store's last backup gone, its keys count as not backed up.
  json del = a().Json({"delete", up["package_id"].get<std::string>()});
  EXPECT_EQ(del["deleted"], true);
  EXPECT_EQ(a().Json({"query"})["packages"].size(), 1u);
  EXPECT_FALSE(a().Json({"keys"})["keys"][0].value("backed_up", true));
  EXPECT_FAILS_WITH(a()({"delete", up["package_id"].get<std::string>()}), 1, "no package");
}

// ------------------------------------------------------------------ 100 keys

// Every key works: ECC keys sign (verified with their public key), sealed ones unseal.
void ExpectEveryKeyWorks(const std::string& store, Swtpm* t, int n) {
  auto l = lms::Lms::Open({.store_dir = store, .tcti = t->tcti(), .env = nullptr});
  ASSERT_TRUE(l.has_value());
  const Bytes digest(32, 0x5a);
  for (int i = 0; i < n; ++i) {
    const std::string label = "key " + std::to_string(i);
    if (i % 2 == 1) {
      auto data = (*l)->Unseal(label);
      ASSERT_TRUE(data.has_value()) << label << ": " << data.error().ToString();
      EXPECT_EQ(std::string(data->begin(), data->end()), "secret number " + std::to_string(i));
    } else {
      auto sig = (*l)->Sign(label, digest);
      ASSERT_TRUE(sig.has_value()) << label << ": " << sig.error().ToString();
      auto pem = (*l)->PublicKey(label, PublicFormat::kPem);
      ASSERT_TRUE(pem.has_value());
      BioPtr bio(BIO_new_mem_buf(pem->data(), static_cast<int>(pem->size())));
      EvpPkeyPtr key(PEM_read_bio_PUBKEY(bio.get(), nullptr, nullptr, nullptr));
      ASSERT_TRUE(key);
      EvpPkeyCtxPtr ctx(EVP_PKEY_CTX_new(key.get(), nullptr));
      ASSERT_EQ(EVP_PKEY_verify_init(ctx.get()), 1);
      EXPECT_EQ(EVP_PKEY_verify(ctx.get(), sig->data(), sig->size(), digest.data(), digest.size()),
                1)
          << label;
    }
  }
}

TEST_F(LmsMaTest, HundredKeysAllComeBackAfterAClear) {
  const std::string store = F("store-100");
  std::string code;
  ASSERT_EQ(MakeStoreWithKeys(w_->b, store, 100, &code), "");
  const Lms b{store, w_->b->tcti(), {}};
  const json keys_before = b.Json({"keys"})["keys"];
  ASSERT_EQ(keys_before.size(), 101u);

  json up = b.Json({"backup"});
  ASSERT_TRUE(up.value("uploaded", false)) << up.dump();
  EXPECT_EQ(up["child_keys"], 100);
  auto cleared = w_->b->Tools({"tpm2_clear", "-c", "p"});
  ASSERT_EQ(cleared.exit_code, 0) << cleared.output;
  EXPECT_FAILS_WITH(b({"unseal", "key 1"}), 1, "lms restore");

  Spit(F("code"), code);
  json r = b.Json({"restore", "--recovery-code-file", F("code")});
  EXPECT_EQ(r["keys"].size(), 100u);
  EXPECT_EQ(r["updated"], 100);
  const json keys_after = b.Json({"keys"})["keys"];
  ASSERT_EQ(keys_after.size(), keys_before.size());
  for (size_t i = 0; i < keys_before.size(); ++i) {
    EXPECT_EQ(keys_after[i]["id"], keys_before[i]["id"]);
    EXPECT_EQ(keys_after[i]["name"], keys_before[i]["name"]);
  }
  ExpectEveryKeyWorks(store, w_->b, 100);

  // Interop: the MRK duplicate in lms's package, re-wrapped by the MA for this TPM, imports
  // with tpm2_import (inner key from the recovery code), and a child loads and signs with
  // tpm2-tools; the signature verifies with the public key lms printed before the clear.
  const std::string package = up.value("package_id", "");
  client::DownloadedPackage got;
  {
    auto ma = client::MaClient::Create(
        {.url = w_->ma->url(), .ca_file = w_->ma->ca_file(), .timeout_s = 30});
    ASSERT_TRUE(ma.has_value()) << ma.error().ToString();
    auto der = RunCommand({"openssl", "x509", "-in", w_->b->IntermediateCaCertPath(), "-outform",
                           "DER", "-out", F("intermediate.der")});
    ASSERT_EQ(der.exit_code, 0) << der.output;
    auto tpm = esys::Tpm::Open(w_->b->tcti());
    ASSERT_TRUE(tpm.has_value());
    auto srk = (*tpm)->GetOrCreateSrk(esys::KeyAlg::kRsa2048);
    ASSERT_TRUE(srk.has_value());
    auto ak = client::CreateAttestationKey(**tpm, esys::KeyAlg::kEccP256);
    ASSERT_TRUE(ak.has_value());
    client::AuthenticateOptions o;
    o.ek_intermediates = {ToBytes(Slurp(F("intermediate.der")))};
    auto session = client::Authenticate(**ma, **tpm, *ak, nullptr, o);
    ASSERT_TRUE(session.has_value()) << session.error().ToString();
    const std::string token(session->session.token.begin(), session->session.token.end());
    auto d = client::DownloadTo(**ma, **tpm, token, package, *srk, *ak);
    ASSERT_TRUE(d.has_value()) << d.error().ToString();
    got = std::move(*d);
  }  // tpm2-tools need the TPM connection closed
  KeyStore ks(store, Env::Default());
  auto state = ks.ReadState();
  ASSERT_TRUE(state.has_value());
  auto inner = DeriveInnerKey(code, state->custody);
  ASSERT_TRUE(inner.has_value());
  auto mrk = ks.GetKey(state->mrk_id);
  auto child = ks.FindKey("key 0");
  ASSERT_TRUE(mrk.has_value() && child.has_value());
  Spit(F("mrk.pub"), ToString(mrk->public_area));
  Spit(F("dup"), ToString(got.duplicate));
  Spit(F("seed"), ToString(got.encrypted_seed));
  Spit(F("inner"), std::string(inner->begin(), inner->end()));
  Spit(F("c.pub"), ToString(child->public_area));
  Spit(F("c.priv"), ToString(child->private_area));
  Spit(F("msg"), "signed by tpm2-tools\n");
  for (const std::vector<std::string>& cmd : std::vector<std::vector<std::string>>{
           {"tpm2_import", "-C", "0x81000001", "-u", F("mrk.pub"), "-i", F("dup"), "-s", F("seed"),
            "-k", F("inner"), "-r", F("mrk.priv")},
           {"tpm2_load", "-C", "0x81000001", "-u", F("mrk.pub"), "-r", F("mrk.priv"), "-c",
            F("mrk.ctx")},
           {"tpm2_load", "-C", F("mrk.ctx"), "-u", F("c.pub"), "-r", F("c.priv"), "-c", F("c.ctx")},
           {"tpm2_sign", "-c", F("c.ctx"), "-g", "sha256", "-f", "plain", "-o", F("sig"),
            F("msg")}}) {
    auto res = w_->b->Tools(cmd);
    ASSERT_EQ(res.exit_code, 0) << cmd[0] << ": " << res.output;
  }
  Spit(F("key0.pem"), b({"pubkey", "key 0"}).out);
  EXPECT_TRUE(OpensslVerifies(F("key0.pem"), F("sig"), F("msg")));
}

// ------------------------------------------------------------------ a new board

TEST_F(LmsMaTest, AnotherPlatformRestoresOnlyAfterAHelpdeskApproval) {
  // A fresh backup of A, signed with A's current package-signing key (the MA re-checks a
  // package with the platform's latest key before it re-wraps it).
  json up_a = a().Json({"backup", "--full"});
  ASSERT_TRUE(up_a.value("uploaded", false)) << up_a.dump();
  w_->package_a = up_a.value("package_id", "");
  w_->platform_a = up_a.value("platform_id", "");
  // The disk (and so the key store) moves to a board with another TPM.
  const std::string moved = F("moved-store");
  std::filesystem::copy(a().store, moved, std::filesystem::copy_options::recursive);
  const Lms c{moved, w_->c->tcti(), w_->ma_flags_c};
  const std::string vpn_pem = c({"pubkey", "vpn"}).out;
  ASSERT_FALSE(vpn_pem.empty());
  EXPECT_FAILS_WITH(c({"sign", "vpn", "--in", moved + "/store.json"}), 1, "lms restore");

  const std::string platform_c = c.Json({"authenticate"}).value("platform_id", "");
  ASSERT_FALSE(platform_c.empty());
  EXPECT_NE(platform_c, w_->platform_a);
  Spit(F("code"), w_->code_a);
  auto before = Snapshot(moved);

  // Without an approval the MA refuses to re-wrap A's package for C.
  Ran r = c({"restore", "--package", w_->package_a, "--recovery-code-file", F("code"), "--json"});
  EXPECT_EQ(r.exit_code, 1) << r.all();
  json j = ParseJson(r);
  EXPECT_EQ(j["code"], "PermissionDenied") << r.out;
  EXPECT_NE(j.value("message", "").find("does not let this platform"), std::string::npos);
  EXPECT_NE(j.value("message", "").find("helpdesk approval"), std::string::npos);
  // C has no backup of its own; lms names the platform the store's keys came from.
  EXPECT_FAILS_WITH(c({"restore", "--recovery-code-file", F("code")}), 1,
                    "lms restore --from " + w_->platform_a);
  EXPECT_FAILS_WITH(c({"restore", "--from", w_->platform_a, "--recovery-code-file", F("code")}), 1,
                    "ma-admin approve --old " + w_->platform_a);
  EXPECT_EQ(Snapshot(moved), before);

  // The helpdesk approves; C sees A's packages as Approved and restores the newest.
  auto approved = RunCommand({MA_ADMIN_PATH, "approve", "--old", w_->platform_a, "--new",
                              platform_c, "--reason", "ticket 4711: board swap", "--expires", "1h",
                              "--dir", w_->ma->state_dir()});
  ASSERT_EQ(approved.exit_code, 0) << approved.output;
  json q = c.Json({"query", "--from", w_->platform_a});
  ASSERT_FALSE(q["packages"].empty()) << q.dump();
  EXPECT_EQ(q["packages"][0]["access"], "Approved");
  // A mistyped code is caught before the Download, so it does not use the approval up.
  std::string wrong = w_->code_a;
  wrong[0] = wrong[0] == 'A' ? 'B' : 'A';
  Spit(F("wrong-c"), wrong);
  EXPECT_FAILS_WITH(c({"restore", "--from", w_->platform_a, "--recovery-code-file", F("wrong-c")}),
                    1, "an approval for it is still unused");
  json restored = c.Json({"restore", "--from", w_->platform_a, "--recovery-code-file", F("code")});
  EXPECT_EQ(restored["source_platform_id"], w_->platform_a);
  EXPECT_EQ(restored["platform_id"], platform_c);
  EXPECT_EQ(restored["used_recovery_code"], true);
  Spit(F("doc"), "signed on the new board\n");
  Spit(F("vpn.pem"), vpn_pem);
  r = c({"sign", "vpn", "--in", F("doc"), "--out", F("sig")});
  ASSERT_EQ(r.exit_code, 0) << r.all();
  EXPECT_TRUE(OpensslVerifies(F("vpn.pem"), F("sig"), F("doc")));
  EXPECT_EQ(c({"unseal", "disk"}).out, w_->sealed_data);
  // The new board's first backup is its own package.
  json up = c.Json({"backup", "--if-changed"});
  EXPECT_TRUE(up.value("uploaded", false)) << up.dump();
  EXPECT_EQ(up["platform_id"], platform_c);
  q = c.Json({"query"});
  bool own = false;
  for (const json& p : q["packages"])
    own |= p["access"] == "Own" && p["package_id"] == up["package_id"];
  EXPECT_TRUE(own) << q.dump();
}

// ------------------------------------------------------------------ escrow custody
//
// These need ma-server's escrow custody (an escrow key from ma-admin init, EscrowedInnerKey
// in a Download under an approval, same-platform approvals for escrow packages).

TEST_F(LmsMaTest, EscrowCustodyRestoresAfterAClearOnlyUnderAHelpdeskApproval) {
  // TPM B; its own store. Escrow init: the MA's escrow key, no recovery code.
  const std::string store = F("escrow-store");
  Lms b{store, w_->b->tcti(), {}};
  std::vector<std::string> init_args = {"init", "--custody", "escrow", "--mrk-alg", "ecc-p256"};
  init_args.insert(init_args.end(), w_->ma_flags_b.begin(), w_->ma_flags_b.end());
  json init = b.Json(init_args);
  EXPECT_EQ(init.value("custody", ""), "escrow") << init.dump();
  EXPECT_FALSE(init.contains("recovery_code")) << init.dump();
  const std::string escrow_id = init.value("escrow_key_id", "");
  ASSERT_FALSE(escrow_id.empty()) << init.dump();
  json custody = json::parse(Slurp(store + "/store.json"))["custody"];
  EXPECT_EQ(custody["mode"], "escrow");
  EXPECT_EQ(custody["escrow_key_id"], escrow_id);
  EXPECT_FALSE(custody.value("escrow_public", "").empty());
  EXPECT_FALSE(custody.contains("verifier"));
  // Without --json no code either, and the text says what a restore will need.
  {
    const Lms other{F("escrow-text"), w_->b->tcti(), {}};
    std::vector<std::string> args = {"init", "--custody", "escrow", "--mrk-alg", "ecc-p256"};
    args.insert(args.end(), w_->ma_flags_b.begin(), w_->ma_flags_b.end());
    Ran r = other(args);
    ASSERT_EQ(r.exit_code, 0) << r.all();
    EXPECT_EQ(r.out.find("RECOVERY CODE"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("Inner key custody: escrow"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("helpdesk approval"), std::string::npos) << r.out;
  }
  // An escrow key id the MA does not have, or one that is not an escrow key: refused, and
  // nothing made.
  {
    auto storage = FetchMaKey(Settings(w_->b));
    ASSERT_TRUE(storage.has_value()) << storage.error().ToString();
    const Lms none{F("escrow-none"), w_->b->tcti(), {}};
    for (const auto& [id, says] : std::vector<std::pair<std::string, std::string>>{
             {"no-such-key", "no MA key with id no-such-key"},
             {storage->key_id, "not an escrow key"}}) {
      std::vector<std::string> args = {"init", "--custody", "escrow", "--escrow-key-id", id};
      args.insert(args.end(), w_->ma_flags_b.begin(), w_->ma_flags_b.end());
      EXPECT_FAILS_WITH(none(args), 1, says);
    }
    EXPECT_FALSE(Env::Default()->FileExists(F("escrow-none") + "/store.json"));
  }

  // Two keys (as ExpectEveryKeyWorks names them); a signature made before the clear.
  Spit(F("data"), "secret number 1");
  b.Json({"keygen", "--type", "ecc-sign", "--label", "key 0"});
  b.Json({"keygen", "--type", "sealed", "--label", "key 1", "--data", F("data")});
  Spit(F("doc"), "signed before the clear\n");
  ASSERT_EQ(b({"pubkey", "key 0", "--out", F("key0.pem")}).exit_code, 0);
  ASSERT_EQ(b({"sign", "key 0", "--in", F("doc"), "--out", F("sig")}).exit_code, 0);
  ASSERT_TRUE(OpensslVerifies(F("key0.pem"), F("sig"), F("doc")));

  // status names the custody.
  json st = b.Json({"status"});
  EXPECT_EQ(st["store"]["custody"], "escrow") << st.dump();
  EXPECT_EQ(st["store"]["escrow_key_id"], escrow_id) << st.dump();
  EXPECT_NE(b({"status"}).out.find("custody      escrow (MA escrow key " + escrow_id + ")"),
            std::string::npos);

  // backup: the package's custody is Escrow, the inner key encrypted to the escrow key.
  json up = b.Json({"backup"});
  ASSERT_TRUE(up.value("uploaded", false)) << up.dump();
  const std::string package = up.value("package_id", "");
  const std::string platform = up.value("platform_id", "");
  json q = b.Json({"query"});
  ASSERT_FALSE(q["packages"].empty()) << q.dump();
  EXPECT_EQ(q["packages"][0]["package_id"], package);
  EXPECT_EQ(q["packages"][0]["custody"], "Escrow");
  {
    auto l = lms::Lms::Open({.store_dir = store, .tcti = w_->b->tcti(), .env = nullptr});
    ASSERT_TRUE(l.has_value());
    // The package as signed: Escrow custody to the store's escrow key, 2048-bit RSA-OAEP.
    std::optional<package::Custody> seen;
    RestoreOptions o;
    o.package_id = package;
    o.after_download = [&](client::DownloadedPackage& p) {
      EXPECT_TRUE(p.escrowed_inner_key.empty());  // nothing released without an approval
      auto m = (*l)->store().ReadMaState();
      ASSERT_TRUE(m.has_value());
      auto pub = tpm::Unmarshal<TPM2B_PUBLIC>(m->signing_public);
      ASSERT_TRUE(pub.has_value());
      auto key = tpm::PublicToEvp(pub->publicArea);
      ASSERT_TRUE(key.has_value());
      auto reader = package::PackageReader::Open(p.document);
      ASSERT_TRUE(reader.has_value());
      auto model = reader->Verify(key->get());
      ASSERT_TRUE(model.has_value()) << model.error().ToString();
      seen = model->custody;
    };
    // Same SRK: the sealed inner key opens the package, no approval needed.
    auto restored = Restore(**l, Settings(w_->b), o);
    ASSERT_TRUE(restored.has_value()) << restored.error().ToString();
    ASSERT_TRUE(seen.has_value());
    const auto* escrow = std::get_if<package::EscrowCustody>(&*seen);
    ASSERT_NE(escrow, nullptr);
    EXPECT_EQ(escrow->escrow_key_id, escrow_id);
    EXPECT_EQ(escrow->algorithm, package::EscrowAlgorithm::kRsaOaepSha256);
    EXPECT_EQ(escrow->encrypted_inner_key.size(), 256u);
    EXPECT_EQ(restored->custody, "escrow");
    EXPECT_EQ(restored->inner_key_source, "sealed");
    EXPECT_FALSE(restored->used_recovery_code);
  }

  // The TPM is cleared: the sealed copy is gone with the SRK.
  auto cleared = w_->b->Tools({"tpm2_clear", "-c", "p"});
  ASSERT_EQ(cleared.exit_code, 0) << cleared.output;
  EXPECT_FAILS_WITH(b({"unseal", "key 1"}), 1, "lms restore");
  auto before = Snapshot(store);

  // No approval: the MA does not release the escrowed key; lms says whom to ask, never asks
  // for a recovery code, and changes nothing.
  Ran r = b({"restore", "--json"});
  EXPECT_EQ(r.exit_code, 1) << r.all();
  json refused = ParseJson(r);
  EXPECT_EQ(refused["code"], "PermissionDenied") << r.out;
  const std::string message = refused.value("message", "");
  EXPECT_NE(message.find("held in escrow by the MA"), std::string::npos) << message;
  EXPECT_NE(message.find("ask the helpdesk to approve platform " + platform), std::string::npos)
      << message;
  EXPECT_NE(message.find("ma-admin approve --old " + platform + " --new " + platform),
            std::string::npos)
      << message;
  EXPECT_EQ(message.find("recovery code"), std::string::npos) << message;
  EXPECT_EQ(Snapshot(store), before);
  r = b({"restore"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("held in escrow by the MA"), std::string::npos) << r.err;
  EXPECT_EQ(Snapshot(store), before);

  // The helpdesk approves platform X -> X (the same platform after a clear).
  auto approved =
      RunCommand({MA_ADMIN_PATH, "approve", "--old", platform, "--new", platform, "--reason",
                  "ticket 4712: TPM cleared", "--expires", "1h", "--dir", w_->ma->state_dir()});
  ASSERT_EQ(approved.exit_code, 0) << approved.output;

  // Now the MA releases the inner key with the download: no recovery code, every key back.
  r = b({"restore", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.all();
  json restored = ParseJson(r);
  EXPECT_EQ(restored["package_id"], package);
  EXPECT_EQ(restored["custody"], "escrow");
  EXPECT_EQ(restored["inner_key_source"], "escrow");
  EXPECT_EQ(restored["used_recovery_code"], false);
  EXPECT_EQ(restored["srk_changed"], true);
  EXPECT_EQ(restored["updated"], 2);
  ExpectEveryKeyWorks(store, w_->b, 2);
  EXPECT_TRUE(OpensslVerifies(F("key0.pem"), F("sig"), F("doc")));
  EXPECT_EQ(b({"pubkey", "key 0"}).out, Slurp(F("key0.pem")));
  // The store is still in escrow custody, its inner key sealed under the new SRK.
  json after = json::parse(Slurp(store + "/store.json"))["custody"];
  EXPECT_EQ(after["mode"], "escrow");
  EXPECT_EQ(after["escrow_key_id"], escrow_id);
  EXPECT_EQ(after["escrow_public"], custody["escrow_public"]);
  EXPECT_NE(after["sealed_private"], custody["sealed_private"]);
  {
    auto l = lms::Lms::Open({.store_dir = store, .tcti = w_->b->tcti(), .env = nullptr});
    ASSERT_TRUE(l.has_value());
    auto inner = (*l)->UnsealInnerKey();
    ASSERT_TRUE(inner.has_value()) << inner.error().ToString();
    EXPECT_EQ(inner->size(), kInnerKeyBytes);
  }
  // The text form says where the inner key came from.
  r = b({"restore"});
  ASSERT_EQ(r.exit_code, 0) << r.all();
  EXPECT_NE(r.out.find("inner key from this TPM (sealed copy)"), std::string::npos) << r.out;

  // Backups go on, unattended, in escrow custody.
  b.Json({"keygen", "--type", "ecc-sign", "--label", "after the restore"});
  json up2 = b.Json({"backup", "--if-changed"});
  EXPECT_TRUE(up2.value("uploaded", false)) << up2.dump();
  q = b.Json({"query"});
  ASSERT_FALSE(q["packages"].empty());
  EXPECT_EQ(q["packages"][0]["package_id"], up2["package_id"]);
  EXPECT_EQ(q["packages"][0]["custody"], "Escrow");
}

// An MA made with `ma-admin init --no-escrow` offers recovery codes only: `lms init
// --custody escrow` against it is refused in words, and nothing is written.
TEST_F(LmsMaTest, EscrowInitIsRefusedByAnMaWithoutEscrow) {
  std::string why;
  TempDir d;
  auto plain = MaInstance::Start({MA_ADMIN_PATH, MA_SERVER_PATH}, d.path(),
                                 {w_->a->RootCaCertPath()}, &why, {"--no-escrow"});
  ASSERT_NE(plain, nullptr) << why;
  const std::string store = F("escrow-refused");
  const Lms l{store, w_->a->tcti(), {"--ma", plain->url(), "--ma-ca", plain->ca_file()}};
  EXPECT_FAILS_WITH(l({"init", "--custody", "escrow"}), 1, "does not offer escrow custody");
  EXPECT_FALSE(std::filesystem::exists(store + "/store.json"));
  // The same MA is fine for recovery-code custody.
  json ok = l.Json({"init"});
  EXPECT_EQ(ok["custody"], "recovery-code");
  EXPECT_TRUE(std::filesystem::exists(store + "/store.json"));
}

TEST_F(LmsMaTest, EscrowPackageRestoresOnAnotherBoardWithoutACode) {
  // An escrow store on TPM B, backed up; the disk moves to TPM C.
  const std::string store = F("escrow-b");
  std::string code;
  ASSERT_EQ(MakeStoreWithKeys(w_->b, store, 4, &code, CustodyMode::kEscrow), "");
  EXPECT_TRUE(code.empty());
  const Lms b{store, w_->b->tcti(), {}};
  json up = b.Json({"backup"});
  ASSERT_TRUE(up.value("uploaded", false)) << up.dump();
  const std::string platform_b = up.value("platform_id", "");
  const std::string moved = F("escrow-moved");
  std::filesystem::copy(store, moved, std::filesystem::copy_options::recursive);
  const Lms c{moved, w_->c->tcti(), w_->ma_flags_c};
  const std::string platform_c = c.Json({"authenticate"}).value("platform_id", "");
  ASSERT_FALSE(platform_c.empty());
  ASSERT_NE(platform_c, platform_b);

  // Without an approval the MA refuses the download itself.
  // Named: TPM B is shared with earlier tests, whose packages may be as new as this one.
  const std::string package = up.value("package_id", "");
  EXPECT_FAILS_WITH(c({"restore", "--from", platform_b, "--package", package}), 1,
                    "ma-admin approve --old " + platform_b);
  auto approved =
      RunCommand({MA_ADMIN_PATH, "approve", "--old", platform_b, "--new", platform_c, "--reason",
                  "ticket 4713: board swap", "--expires", "1h", "--dir", w_->ma->state_dir()});
  ASSERT_EQ(approved.exit_code, 0) << approved.output;
  json restored = c.Json({"restore", "--from", platform_b, "--package", package});
  EXPECT_EQ(restored["source_platform_id"], platform_b);
  EXPECT_EQ(restored["platform_id"], platform_c);
  EXPECT_EQ(restored["inner_key_source"], "escrow");
  EXPECT_EQ(restored["used_recovery_code"], false);
  EXPECT_EQ(restored["keys"].size(), 4u);
  ExpectEveryKeyWorks(moved, w_->c, 4);
  EXPECT_EQ(json::parse(Slurp(moved + "/store.json"))["custody"]["mode"], "escrow");
  // The new board's own first backup, in escrow custody too.
  json up_c = c.Json({"backup", "--if-changed"});
  EXPECT_TRUE(up_c.value("uploaded", false)) << up_c.dump();
  EXPECT_EQ(up_c["platform_id"], platform_c);
}

// `ma-admin escrow rotate` replaces the MA's escrow key; the old one is retired (it still
// releases what was escrowed to it, but the MA takes uploads escrowed to the current key
// only). An escrow store's next backup escrows to the new key and pins it; a package
// escrowed to the retired key still restores after a clear, and the store keeps the current
// key. On an MA of its own: the shared one stays at escrow-1 for the other tests.
TEST_F(LmsMaTest, EscrowKeyRotationRepinsTheStoreAndOldPackagesStillRestore) {
  std::string why;
  TempDir d;
  auto ma = MaInstance::Start({MA_ADMIN_PATH, MA_SERVER_PATH}, d.path(),
                              {File(*w_, "ek-roots.pem")}, &why);
  ASSERT_NE(ma, nullptr) << why;
  // The port changes with each restart.
  auto flags = [&]() {
    return std::vector<std::string>{
        "--ma",        ma->url(),           "--ma-ca",
        ma->ca_file(), "--ek-intermediate", w_->b->IntermediateCaCertPath()};
  };
  auto rotate = [&](const std::string& key_id) {
    ma->Stop();
    auto r = RunCommand(
        {MA_ADMIN_PATH, "escrow", "rotate", "--dir", ma->state_dir(), "--key-id", key_id});
    EXPECT_EQ(r.exit_code, 0) << r.output;
    std::string error;
    EXPECT_TRUE(ma->Restart(&error)) << error;
  };
  auto pinned = [](const std::string& store) {
    return json::parse(Slurp(store + "/store.json"))["custody"];
  };

  // An escrow store on TPM B, pinned to escrow-1; package P1 escrowed to it.
  const std::string store = F("rotate-store");
  Lms b{store, w_->b->tcti(), flags()};
  json init = b.Json({"init", "--custody", "escrow", "--mrk-alg", "ecc-p256"});
  ASSERT_EQ(init.value("escrow_key_id", ""), "escrow-1") << init.dump();
  const json custody1 = pinned(store);
  Spit(F("data"), "secret number 1");
  b.Json({"keygen", "--type", "ecc-sign", "--label", "key 0"});
  b.Json({"keygen", "--type", "sealed", "--label", "key 1", "--data", F("data")});
  json up1 = b.Json({"backup"});
  ASSERT_TRUE(up1.value("uploaded", false)) << up1.dump();
  EXPECT_TRUE(up1["escrow_key_rotated"].is_null()) << up1.dump();
  const std::string p1 = up1.value("package_id", "");
  const std::string platform = up1.value("platform_id", "");

  // The MA's escrow key becomes escrow-2.
  rotate("escrow-2");
  b.ma_flags = flags();
  const MaSettings settings{.url = ma->url(),
                            .ca_file = ma->ca_file(),
                            .ek_intermediates = {w_->b->IntermediateCaCertPath()},
                            .timeout_s = 30};
  auto escrow2 = FetchEscrowKey(settings);
  ASSERT_TRUE(escrow2.has_value()) << escrow2.error().ToString();
  ASSERT_EQ(escrow2->key_id, "escrow-2");

  // The next backup (nothing changed, so --full) escrows to escrow-2 and pins it.
  json up2 = b.Json({"backup", "--full"});
  ASSERT_TRUE(up2.value("uploaded", false)) << up2.dump();
  EXPECT_EQ(up2["escrow_key_rotated"], json({{"from", "escrow-1"}, {"to", "escrow-2"}}))
      << up2.dump();
  json custody2 = pinned(store);
  EXPECT_EQ(custody2["mode"], "escrow");
  EXPECT_EQ(custody2["escrow_key_id"], "escrow-2");
  EXPECT_EQ(custody2["escrow_public"], Base64Encode(escrow2->public_area));
  EXPECT_NE(custody2["escrow_public"], custody1["escrow_public"]);
  EXPECT_EQ(custody2["sealed_private"], custody1["sealed_private"]);  // the same inner key
  {
    // The package as signed names escrow-2; restoring it (same SRK: the sealed copy) keeps
    // the pin as it is.
    auto l = lms::Lms::Open({.store_dir = store, .tcti = w_->b->tcti(), .env = nullptr});
    ASSERT_TRUE(l.has_value());
    std::optional<package::Custody> seen;
    RestoreOptions o;
    o.package_id = up2.value("package_id", "");
    o.after_download = [&](client::DownloadedPackage& p) {
      auto m = (*l)->store().ReadMaState();
      ASSERT_TRUE(m.has_value());
      auto pub = tpm::Unmarshal<TPM2B_PUBLIC>(m->signing_public);
      ASSERT_TRUE(pub.has_value());
      auto key = tpm::PublicToEvp(pub->publicArea);
      ASSERT_TRUE(key.has_value());
      auto reader = package::PackageReader::Open(p.document);
      ASSERT_TRUE(reader.has_value());
      auto model = reader->Verify(key->get());
      ASSERT_TRUE(model.has_value()) << model.error().ToString();
      seen = model->custody;
    };
    auto restored = Restore(**l, settings, o);
    ASSERT_TRUE(restored.has_value()) << restored.error().ToString();
    ASSERT_TRUE(seen.has_value());
    const auto* escrow = std::get_if<package::EscrowCustody>(&*seen);
    ASSERT_NE(escrow, nullptr);
    EXPECT_EQ(escrow->escrow_key_id, "escrow-2");
    EXPECT_EQ(restored->inner_key_source, "sealed");
    EXPECT_FALSE(restored->escrow_key_rotated.has_value());
  }
  EXPECT_EQ(pinned(store)["escrow_key_id"], "escrow-2");
  // Pinned now: the next backup has nothing to follow.
  json up3 = b.Json({"backup", "--full"});
  ASSERT_TRUE(up3.value("uploaded", false)) << up3.dump();
  EXPECT_TRUE(up3["escrow_key_rotated"].is_null()) << up3.dump();

  // The TPM is cleared; the helpdesk approves the platform to itself; P1, escrowed to the
  // retired escrow-1, still restores with the inner key the MA releases.
  auto cleared = w_->b->Tools({"tpm2_clear", "-c", "p"});
  ASSERT_EQ(cleared.exit_code, 0) << cleared.output;
  auto approved =
      RunCommand({MA_ADMIN_PATH, "approve", "--old", platform, "--new", platform, "--reason",
                  "ticket 4714: TPM cleared", "--expires", "1h", "--dir", ma->state_dir()});
  ASSERT_EQ(approved.exit_code, 0) << approved.output;
  json restored = b.Json({"restore", "--package", p1});
  EXPECT_EQ(restored["package_id"], p1);
  EXPECT_EQ(restored["custody"], "escrow");
  EXPECT_EQ(restored["inner_key_source"], "escrow") << restored.dump();
  EXPECT_EQ(restored["srk_changed"], true);
  EXPECT_EQ(restored["escrow_key_rotated"], json({{"from", "escrow-1"}, {"to", "escrow-2"}}))
      << restored.dump();
  ExpectEveryKeyWorks(store, w_->b, 2);
  // The store still pins the current key, not the package's retired one.
  json custody3 = pinned(store);
  EXPECT_EQ(custody3["escrow_key_id"], "escrow-2");
  EXPECT_EQ(custody3["escrow_public"], custody2["escrow_public"]);
  // In words (the sealed copy works again: no approval needed).
  Ran r = b({"restore", "--package", p1});
  ASSERT_EQ(r.exit_code, 0) << r.all();
  EXPECT_NE(r.out.find("the package is escrowed to escrow-1, which the MA has replaced: the "
                       "store pins its escrow key escrow-2"),
            std::string::npos)
      << r.out;

  // Another rotation, backed up in words: a line on the way and one in the result.
  rotate("escrow-3");
  b.ma_flags = flags();
  r = b({"backup", "--full"});
  ASSERT_EQ(r.exit_code, 0) << r.all();
  EXPECT_NE(r.err.find("the MA's escrow key is now escrow-3, not escrow-2"), std::string::npos)
      << r.err;
  EXPECT_NE(r.out.find("the MA replaced escrow key escrow-2 with escrow-3"), std::string::npos)
      << r.out;
  EXPECT_EQ(pinned(store)["escrow_key_id"], "escrow-3");

  // An MA that offers no escrow custody at all: the backup fails in words, nothing changes.
  TempDir d2;
  auto plain = MaInstance::Start({MA_ADMIN_PATH, MA_SERVER_PATH}, d2.path(),
                                 {File(*w_, "ek-roots.pem")}, &why, {"--no-escrow"});
  ASSERT_NE(plain, nullptr) << why;
  const auto before = Snapshot(store);
  const Lms no_escrow{store,
                      w_->b->tcti(),
                      {"--ma", plain->url(), "--ma-ca", plain->ca_file(), "--ek-intermediate",
                       w_->b->IntermediateCaCertPath()}};
  r = no_escrow({"backup", "--full", "--json"});
  EXPECT_EQ(r.exit_code, 1) << r.all();
  json refused = ParseJson(r);
  EXPECT_EQ(refused["code"], "Unsupported") << r.out;
  const std::string message = refused.value("message", "");
  EXPECT_NE(message.find("no longer offers escrow custody"), std::string::npos) << message;
  EXPECT_NE(message.find("escrow key escrow-3"), std::string::npos) << message;
  EXPECT_EQ(Snapshot(store), before);
}

// ------------------------------------------------------------------ a new disk too
//
// The disk died with the board: nothing of the key store is left, and every key backed up
// is in the MA's vault. `lms restore --new-store` builds a new store from a package, checked
// with the signing key the MA verified it with at Upload.

TEST_F(LmsMaTest, NewDiskAndNewBoardRestoreIntoANewStore) {
  // The old board (TPM B): a store with a key of each type, backed up.
  const Lms old_b{F("old-disk"), w_->b->tcti(), {}};
  std::vector<std::string> init_args = {"init", "--json"};
  init_args.insert(init_args.end(), w_->ma_flags_b.begin(), w_->ma_flags_b.end());
  Ran r = old_b(init_args);
  ASSERT_EQ(r.exit_code, 0) << r.all();
  const std::string code = json::parse(r.out).value("recovery_code", "");
  ASSERT_FALSE(code.empty());
  Spit(F("code"), code);
  Spit(F("seal.bin"), w_->sealed_data);
  for (auto args : std::vector<std::vector<std::string>>{
           {"--type", "ecc-sign", "--label", "vpn"},
           {"--type", "rsa-sign", "--label", "code signing"},
           {"--type", "rsa-decrypt", "--label", "mail"},
           {"--type", "sealed", "--label", "disk", "--data", F("seal.bin")}}) {
    args.insert(args.begin(), "keygen");
    r = old_b(args);
    ASSERT_EQ(r.exit_code, 0) << r.all();
  }
  const std::string message = "wrapped mail key 42";
  Spit(F("doc"), "signed on the old board\n");
  Spit(F("doc2"), "signed on the new board\n");
  Spit(F("msg"), message);
  for (const std::string label : {"vpn", "code signing"}) {
    ASSERT_EQ(old_b({"pubkey", label, "--out", F(label + ".pem")}).exit_code, 0);
    ASSERT_EQ(old_b({"sign", label, "--in", F("doc"), "--out", F(label + ".sig")}).exit_code, 0);
  }
  ASSERT_EQ(old_b({"encrypt", "mail", "--in", F("msg"), "--out", F("ct")}).exit_code, 0);
  const json keys_before = old_b.Json({"keys"})["keys"];
  ASSERT_EQ(keys_before.size(), 5u);
  json up = old_b.Json({"backup"});
  ASSERT_TRUE(up.value("uploaded", false)) << up.dump();
  const std::string platform_b = up.value("platform_id", "");
  const std::string package = up.value("package_id", "");
  const json old_state = json::parse(Slurp(old_b.store + "/store.json"));

  // The new board (TPM C) with an empty disk: it authenticates (that writes ma.json only).
  const std::string fresh = F("new-disk");
  const Lms c{fresh, w_->c->tcti(), w_->ma_flags_c};
  const std::string platform_c = c.Json({"authenticate"}).value("platform_id", "");
  ASSERT_FALSE(platform_c.empty());
  ASSERT_NE(platform_c, platform_b);
  // Without --new-store, restore refuses a store that is not initialised, as before.
  EXPECT_FAILS_WITH(c({"restore", "--from", platform_b}), 1, "is not initialised");
  EXPECT_FAILS_WITH(c({"restore", "--from", platform_b}), 1, "--new-store");
  // A new TPM has no package of its own to pick.
  EXPECT_FAILS_WITH(c({"restore", "--new-store", "--recovery-code-file", F("code")}), 1,
                    "--from OLD");
  // Without an approval the MA refuses to re-wrap B's package for C; no store is left.
  r = c({"restore", "--new-store", "--from", platform_b, "--package", package,
         "--recovery-code-file", F("code"), "--json"});
  EXPECT_EQ(r.exit_code, 1) << r.all();
  EXPECT_EQ(ParseJson(r)["code"], "PermissionDenied") << r.out;
  EXPECT_NE(r.out.find("ma-admin approve --old " + platform_b), std::string::npos) << r.out;
  EXPECT_FALSE(Env::Default()->FileExists(fresh + "/store.json"));
  EXPECT_TRUE(std::filesystem::is_empty(fresh + "/keys"));

  // The helpdesk approves; the new store is built, on an ECC SRK as --srk-alg asks.
  auto approved = RunCommand({MA_ADMIN_PATH, "approve", "--old", platform_b, "--new", platform_c,
                              "--reason", "ticket 4714: board and disk swap", "--expires", "1h",
                              "--dir", w_->ma->state_dir()});
  ASSERT_EQ(approved.exit_code, 0) << approved.output;
  r = c({"restore", "--new-store", "--from", platform_b, "--recovery-code-file", F("code"),
         "--srk-alg", "ecc-p256", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.all();
  json restored = ParseJson(r);
  EXPECT_EQ(restored["new_store"], true);
  EXPECT_EQ(restored["package_id"], package);
  EXPECT_EQ(restored["source_platform_id"], platform_b);
  EXPECT_EQ(restored["platform_id"], platform_c);
  EXPECT_EQ(restored["custody"], "recovery-code");
  EXPECT_EQ(restored["inner_key_source"], "recovery-code");
  EXPECT_EQ(restored["used_recovery_code"], true);
  EXPECT_EQ(restored["added"], 4);
  EXPECT_EQ(restored["updated"], 0);
  EXPECT_TRUE(restored["retired_to"].is_null());
  EXPECT_EQ(r.out.find(code), std::string::npos);

  // The store: the MA settings from the flags, the ECC SRK, the package's custody and the
  // MA key of the old store, B's signing key known (later restores check with it), and
  // another platform's package is not this platform's last backup.
  const json config = json::parse(Slurp(fresh + "/config.json"));
  EXPECT_EQ(config["ma_url"], w_->ma->url());
  const json state = json::parse(Slurp(fresh + "/store.json"));
  EXPECT_EQ(state["srk"]["alg"], "ecc-p256");
  EXPECT_EQ(state["custody"]["mode"], "recovery-code");
  EXPECT_EQ(state["custody"]["verifier"], old_state["custody"]["verifier"]);
  EXPECT_EQ(state["custody"]["salt"], old_state["custody"]["salt"]);
  EXPECT_EQ(state["ma_key"], old_state["ma_key"]);
  EXPECT_TRUE(state["last_backup_package_id"].is_null()) << state.dump();
  const json ma_state = json::parse(Slurp(fresh + "/ma.json"));
  bool signer_b = false;
  for (const json& s : ma_state["signers"]) signer_b |= s["platform_id"] == platform_b;
  EXPECT_TRUE(signer_b) << ma_state.dump();
  // The same keys: children with their ids, labels and types; the MRK under a new id.
  const json keys_after = c.Json({"keys"})["keys"];
  ASSERT_EQ(keys_after.size(), keys_before.size());
  for (const json& k : keys_before) {
    const json* found = nullptr;
    for (const json& n : keys_after) {
      if (n["name"] == k["name"]) found = &n;
    }
    ASSERT_NE(found, nullptr) << k.dump();
    EXPECT_EQ((*found)["label"], k["label"]);
    EXPECT_EQ((*found)["type"], k["type"]);
    EXPECT_EQ((*found)["backed_up"], true);
    EXPECT_EQ((*found)["id"] == k["id"], k["type"] != "mrk") << k.dump();
    if (k["type"] != "mrk") {
      EXPECT_EQ((*found)["parent"], state["mrk_id"]);
    }
  }
  // Every key works with the old board's public keys.
  for (const std::string label : {"vpn", "code signing"}) {
    EXPECT_EQ(c({"pubkey", label}).out, Slurp(F(label + ".pem"))) << label;
    EXPECT_TRUE(OpensslVerifies(F(label + ".pem"), F(label + ".sig"), F("doc"))) << label;
    r = c({"sign", label, "--in", F("doc2"), "--out", F(label + ".sig2")});
    ASSERT_EQ(r.exit_code, 0) << r.all();
    EXPECT_TRUE(OpensslVerifies(F(label + ".pem"), F(label + ".sig2"), F("doc2"))) << label;
  }
  r = c({"decrypt", "mail", "--in", F("ct")});
  EXPECT_EQ(r.exit_code, 0) << r.all();
  EXPECT_EQ(r.out, message);
  EXPECT_EQ(c({"unseal", "disk"}).out, w_->sealed_data);

  // --new-store on an initialised store: refused, nothing changed.
  auto before = Snapshot(fresh);
  EXPECT_FAILS_WITH(
      c({"restore", "--new-store", "--from", platform_b, "--recovery-code-file", F("code")}), 1,
      "already initialised");
  EXPECT_EQ(Snapshot(fresh), before);

  // From now on it is an ordinary store (the MA settings from its config.json): the next
  // backup is C's own first package, in the same custody; a restore of it unseals the
  // inner key from this TPM.
  const Lms c_bare{fresh, w_->c->tcti(), {}};
  json up_c = c_bare.Json({"backup", "--if-changed"});
  EXPECT_TRUE(up_c.value("uploaded", false)) << up_c.dump();
  EXPECT_EQ(up_c["platform_id"], platform_c);
  EXPECT_EQ(up_c["child_keys"], 4);
  EXPECT_EQ(json::parse(Slurp(fresh + "/store.json"))["custody"]["verifier"],
            old_state["custody"]["verifier"]);
  json again = c_bare.Json({"restore"});
  EXPECT_EQ(again["new_store"], false);
  EXPECT_EQ(again["package_id"], up_c["package_id"]);
  EXPECT_EQ(again["inner_key_source"], "sealed");
  EXPECT_EQ(again["updated"], 4);
}

// A new disk on the same board: the store comes back from the platform's own package, no
// approval needed. A wrong recovery code, a package whose signing key the MA does not name,
// or one changed on the way leave no store behind.
TEST_F(LmsMaTest, NewDiskOnTheSameBoardRestoresFromItsOwnPackage) {
  const std::string old_store = F("same-board-old");
  std::string code;
  ASSERT_EQ(MakeStoreWithKeys(w_->b, old_store, 2, &code), "");
  const Lms old_b{old_store, w_->b->tcti(), {}};
  json up = old_b.Json({"backup"});
  ASSERT_TRUE(up.value("uploaded", false)) << up.dump();
  const std::string package = up.value("package_id", "");
  const std::string fresh = F("same-board-new");
  const Lms b{fresh, w_->b->tcti(), w_->ma_flags_b};

  std::string wrong = code;
  wrong[0] = wrong[0] == 'A' ? 'B' : 'A';
  Spit(F("wrong"), wrong);
  Ran r = b({"restore", "--new-store", "--package", package, "--recovery-code-file", F("wrong")});
  EXPECT_EQ(r.exit_code, 1) << r.all();
  EXPECT_NE(r.err.find("wrong recovery code"), std::string::npos) << r.err;
  EXPECT_EQ(r.all().find(wrong), std::string::npos);
  EXPECT_FALSE(Env::Default()->FileExists(fresh + "/store.json"));
  EXPECT_TRUE(std::filesystem::is_empty(fresh + "/keys"));
  // The library, to change what the MA sent.
  auto restore =
      [&](std::function<void(client::DownloadedPackage&)> change) -> Result<RestoreResult> {
    auto l = lms::Lms::Open({.store_dir = fresh, .tcti = w_->b->tcti(), .env = nullptr});
    if (!l) return Error(l.error());
    RestoreOptions o;
    o.new_store = true;
    o.package_id = package;
    o.recovery_code = [code]() -> Result<SecureString> {
      return SecureString(code.begin(), code.end());
    };
    o.after_download = std::move(change);
    return Restore(**l, Settings(w_->b), o);
  };
  auto refused = restore([](client::DownloadedPackage& p) { p.signing_key_public.clear(); });
  ASSERT_FALSE(refused.has_value());
  EXPECT_NE(refused.error().message().find("the MA did not say which key signed package " +
                                           package + "; cannot restore into a new store"),
            std::string::npos)
      << refused.error().ToString();
  refused = restore([](client::DownloadedPackage& p) {
    const std::string doc = ToString(p.document);
    size_t at = doc.find("Label>");
    ASSERT_NE(at, std::string::npos);
    p.document[at + 7] ^= 0x01;  // inside a label's text
  });
  ASSERT_FALSE(refused.has_value());
  EXPECT_EQ(refused.error().code(), Code::kSignatureInvalid) << refused.error().ToString();
  EXPECT_FALSE(Env::Default()->FileExists(fresh + "/store.json"));
  EXPECT_TRUE(std::filesystem::is_empty(fresh + "/keys"));

  // A key file left by an attempt that did not finish is set aside; the right code restores.
  KeyStore old_ks(old_store, Env::Default());
  auto old_state = old_ks.ReadState();
  ASSERT_TRUE(old_state.has_value());
  const std::string leftover = old_state->mrk_id + ".json";
  std::filesystem::copy_file(old_store + "/keys/" + leftover, fresh + "/keys/" + leftover);
  Spit(F("code"), code);
  json restored =
      b.Json({"restore", "--new-store", "--package", package, "--recovery-code-file", F("code")});
  EXPECT_EQ(restored["new_store"], true);
  EXPECT_EQ(restored["source_platform_id"], restored["platform_id"]);  // its own
  EXPECT_EQ(restored["keys"].size(), 2u);
  ASSERT_TRUE(restored["retired_to"].is_string()) << restored.dump();
  EXPECT_TRUE(
      Env::Default()->FileExists(restored["retired_to"].get<std::string>() + "/keys/" + leftover));
  EXPECT_FALSE(Env::Default()->FileExists(fresh + "/keys/" + leftover));
  ExpectEveryKeyWorks(fresh, w_->b, 2);
  // Its own package is its last backup: nothing to upload until something changes.
  EXPECT_EQ(json::parse(Slurp(fresh + "/store.json"))["last_backup_package_id"], package);
  EXPECT_FALSE(b.Json({"backup", "--if-changed"}).value("uploaded", true));
}

TEST_F(LmsMaTest, EscrowPackageRestoresIntoANewStoreOnAnotherBoard) {
  const std::string old_store = F("escrow-old-disk");
  std::string code;
  ASSERT_EQ(MakeStoreWithKeys(w_->b, old_store, 2, &code, CustodyMode::kEscrow), "");
  const Lms old_b{old_store, w_->b->tcti(), {}};
  json up = old_b.Json({"backup"});
  ASSERT_TRUE(up.value("uploaded", false)) << up.dump();
  const std::string platform_b = up.value("platform_id", "");
  const std::string package = up.value("package_id", "");
  const json old_state = json::parse(Slurp(old_store + "/store.json"));

  const std::string fresh = F("escrow-new-disk");
  const Lms c{fresh, w_->c->tcti(), w_->ma_flags_c};
  const std::string platform_c = c.Json({"authenticate"}).value("platform_id", "");
  ASSERT_FALSE(platform_c.empty());
  EXPECT_FAILS_WITH(c({"restore", "--new-store", "--from", platform_b, "--package", package}), 1,
                    "ma-admin approve --old " + platform_b);
  EXPECT_FALSE(Env::Default()->FileExists(fresh + "/store.json"));
  auto approved = RunCommand({MA_ADMIN_PATH, "approve", "--old", platform_b, "--new", platform_c,
                              "--reason", "ticket 4715: board and disk swap", "--expires", "1h",
                              "--dir", w_->ma->state_dir()});
  ASSERT_EQ(approved.exit_code, 0) << approved.output;
  json restored = c.Json({"restore", "--new-store", "--from", platform_b, "--package", package});
  EXPECT_EQ(restored["new_store"], true);
  EXPECT_EQ(restored["custody"], "escrow");
  EXPECT_EQ(restored["inner_key_source"], "escrow");
  EXPECT_EQ(restored["used_recovery_code"], false);
  EXPECT_EQ(restored["keys"].size(), 2u);
  ExpectEveryKeyWorks(fresh, w_->c, 2);
  const json state = json::parse(Slurp(fresh + "/store.json"));
  EXPECT_EQ(state["custody"]["mode"], "escrow");
  EXPECT_EQ(state["custody"]["escrow_key_id"], old_state["custody"]["escrow_key_id"]);
  EXPECT_EQ(state["custody"]["escrow_public"], old_state["custody"]["escrow_public"]);
  // The new board's own first backup, escrowed too.
  json up_c = c.Json({"backup", "--if-changed"});
  EXPECT_TRUE(up_c.value("uploaded", false)) << up_c.dump();
  EXPECT_EQ(up_c["platform_id"], platform_c);
}

// ------------------------------------------------------------------ the command line

TEST_F(LmsMaTest, HelpUsageAndMissingSettingsAreSaidInWords) {
  for (const char* cmd : {"authenticate", "backup", "query", "restore", "delete", "status"}) {
    Ran r = a()({cmd, "--help"});
    EXPECT_EQ(r.exit_code, 0) << cmd << ": " << r.all();
    EXPECT_NE(r.out.find("Usage:"), std::string::npos) << cmd;
  }
  EXPECT_EQ(a()({"backup", "--retries", "0"}).exit_code, 2);
  EXPECT_EQ(a()({"delete"}).exit_code, 2);
  EXPECT_EQ(a()({"restore", "--bogus"}).exit_code, 2);
  EXPECT_FAILS_WITH(a()({"delete", "not-a-package"}), 1, "is not a package id");
  // No MA anywhere (a store without config.json, no flags, no environment).
  const Lms bare{F("bare"), w_->a->tcti(), {}};
  EXPECT_FAILS_WITH(bare({"query"}), 1, "no MA given: use --ma");
  EXPECT_FAILS_WITH(bare({"authenticate", "--ma", w_->ma->url()}), 1, "--ma-ca FILE");
  EXPECT_FAILS_WITH(bare({"restore", "--ma", w_->ma->url(), "--ma-ca", w_->ma->ca_file()}), 1,
                    "is not initialised");
  // status with the MA unreachable: exit 1, and the report says what is wrong.
  Ran r = a()({"status", "--ma", "https://127.0.0.1:1", "--json"});
  EXPECT_EQ(r.exit_code, 1) << r.all();
  json s = ParseJson(r);
  EXPECT_EQ(s["ok"], false);
  EXPECT_EQ(s["ma"]["reachable"], false);
  EXPECT_NE(s.value("message", "").find("the MA cannot be reached"), std::string::npos);
  // init from the MA key file still works, and init --ma refuses a MA it cannot reach.
  const Lms fresh{F("fresh"), w_->a->tcti(), {}};
  EXPECT_FAILS_WITH(fresh({"init", "--ma", "https://127.0.0.1:1", "--ma-ca", w_->ma->ca_file()}), 1,
                    "cannot reach the MA");
  EXPECT_FALSE(Env::Default()->FileExists(F("fresh") + "/store.json"));
}

// ------------------------------------------------------------------ timing

double MedianMs(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

// Backup and restore of an MRK with 100 children on swtpm, in-process (the library the CLI
// uses) and end to end through the lms binary; restore after tpm2_clear, with the recovery
// code. Figures go to docs/benchmarks.md (issue #4 section).
TEST_F(LmsMaTest, DISABLED_BackupAndRestoreOf100KeysTiming) {
  constexpr int kRuns = 5;
  const std::string store = F("bench");
  std::string code;
  ASSERT_EQ(MakeStoreWithKeys(w_->b, store, 100, &code), "");
  Spit(F("code"), code);
  const Lms b{store, w_->b->tcti(), {}};
  using Clock = std::chrono::steady_clock;
  auto ms = [](Clock::time_point t0) {
    return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  };
  std::vector<double> backup_cli, backup_lib, restore_cli, restore_lib, restore_sealed;
  std::vector<std::pair<std::string, Clock::time_point>> phases;  // of the last in-process restore
  Clock::time_point phases_start;
  for (int run = 0; run < kRuns; ++run) {
    auto t0 = Clock::now();
    Ran r = b({"backup", "--full", "--json"});
    backup_cli.push_back(ms(t0));
    ASSERT_EQ(r.exit_code, 0) << r.all();
    {
      auto l = lms::Lms::Open({.store_dir = store, .tcti = w_->b->tcti(), .env = nullptr});
      ASSERT_TRUE(l.has_value());
      t0 = Clock::now();
      auto up = Backup(**l, Settings(w_->b), {.full = true, .attempts = 1, .retry_delay_ms = 0});
      backup_lib.push_back(ms(t0));
      ASSERT_TRUE(up.has_value()) << up.error().ToString();
    }
    // Restore with the sealed inner key (same SRK, nothing cleared).
    t0 = Clock::now();
    r = b({"restore", "--json"});
    restore_sealed.push_back(ms(t0));
    ASSERT_EQ(r.exit_code, 0) << r.all();

    // After tpm2_clear, end to end: the lms binary, the recovery code from a file.
    auto cleared = w_->b->Tools({"tpm2_clear", "-c", "p"});
    ASSERT_EQ(cleared.exit_code, 0) << cleared.output;
    t0 = Clock::now();
    r = b({"restore", "--recovery-code-file", F("code"), "--json"});
    restore_cli.push_back(ms(t0));
    ASSERT_EQ(r.exit_code, 0) << r.all();
    ASSERT_EQ(ParseJson(r)["keys"].size(), 100u);

    // After tpm2_clear, in-process.
    cleared = w_->b->Tools({"tpm2_clear", "-c", "p"});
    ASSERT_EQ(cleared.exit_code, 0) << cleared.output;
    {
      auto l = lms::Lms::Open({.store_dir = store, .tcti = w_->b->tcti(), .env = nullptr});
      ASSERT_TRUE(l.has_value());
      RestoreOptions o;
      o.recovery_code = [code]() -> Result<SecureString> {
        return SecureString(code.begin(), code.end());
      };
      phases.clear();
      (*l)->set_progress(
          [&](std::string_view line) { phases.emplace_back(std::string(line), Clock::now()); });
      t0 = Clock::now();
      auto res = Restore(**l, Settings(w_->b), o);
      restore_lib.push_back(ms(t0));
      phases.emplace_back("(done)", Clock::now());
      phases_start = t0;
      ASSERT_TRUE(res.has_value()) << res.error().ToString();
      ASSERT_EQ(res->keys.size(), 100u);
    }
  }
  ExpectEveryKeyWorks(store, w_->b, 100);
  auto report = [](const char* what, const std::vector<double>& v) {
    std::printf("%-58s median %7.1f ms  (min %6.1f, max %6.1f, n=%zu)\n", what, MedianMs(v),
                *std::min_element(v.begin(), v.end()), *std::max_element(v.begin(), v.end()),
                v.size());
  };
  report("backup, 100 children, lms binary (--full)", backup_cli);
  report("backup, 100 children, in-process", backup_lib);
  report("restore, same SRK (sealed inner key), lms binary", restore_sealed);
  report("restore after tpm2_clear (recovery code), lms binary", restore_cli);
  report("restore after tpm2_clear (recovery code), in-process", restore_lib);
  RecordProperty("restore_after_clear_cli_median_ms", static_cast<int>(MedianMs(restore_cli)));
  std::printf("\nthe last in-process restore after tpm2_clear, step by step:\n");
  Clock::time_point prev = phases_start;
  std::string prev_line = "(start: connect, open the TPM)";
  for (const auto& [line, at] : phases) {
    std::printf("  %7.1f ms  %s\n", std::chrono::duration<double, std::milli>(at - prev).count(),
                prev_line.c_str());
    prev = at;
    prev_line = line;
  }
}

}  // namespace
}  // namespace tpmma::lms
