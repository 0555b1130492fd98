// SPDX-License-Identifier: GPL-2.0-or-later
// What the lms-against-the-MA tests share (lms_ma_test.cc, lms_ma_escrow_test.cc,
// lms_ma_new_store_test.cc): the real ma-server (made by the real `ma-admin init`, TLS,
// SQLite) and three swtpm instances, built once per test binary; running the lms binary;
// store A, initialised with keys of every kind. Everything here is in an anonymous
// namespace: each test binary has its own World.
#pragma once
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
#include "client/lms/restore.h"
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

inline Ran Exec(const std::vector<std::string>& argv, const std::string* input = nullptr) {
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

inline json ParseJson(const Ran& r) {
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
    // These tests run many stores on one shared TPM, so their MRKs cannot all sit at the
    // default handle; the handle has tests of its own (lms_apps_test, the drill).
    if (!args.empty() && args[0] == "init" &&
        std::find(args.begin(), args.end(), "--mrk-handle") == args.end()) {
      argv.insert(argv.end(), {"--mrk-handle", "none"});
    }
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
inline std::map<std::string, std::string> Snapshot(const std::string& store) {
  std::map<std::string, std::string> out;
  out["store.json"] = Slurp(store + "/store.json");
  for (const auto& e : std::filesystem::directory_iterator(store + "/keys")) {
    out["keys/" + e.path().filename().string()] = Slurp(e.path().string());
  }
  return out;
}

inline bool OpensslVerifies(const std::string& pem, const std::string& sig,
                            const std::string& file) {
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

inline std::string File(const World& w, const std::string& name) {
  return w.dir.File(name);
}

inline std::string BuildWorld(World& w) {
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

inline World* GetWorld(std::string* err, bool* skip) {
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
            .ek_cert = {},
            .owner_label = {},
            .timeout_s = 30};
  }

  // An ECC-MRK store on `t` with `n` children (half ECC signing keys, half sealed data).
  // Escrow custody: the MA's escrow key instead of a recovery code (`code` stays empty).
  std::string MakeStoreWithKeys(Swtpm* t, const std::string& store, int n, std::string* code,
                                CustodyMode custody = CustodyMode::kRecoveryCode) {
    auto key = FetchMaKey(Settings(t));
    if (!key) return key.error().ToString();
    InitOptions o{.ma_key_public = key->public_area,
                  .policy_key_public = key->policy_key,  // follows the MA when it can
                  .ma_key_approval = key->approval,
                  .mrk_alg = esys::KeyAlg::kEccP256,
                  .mrk_handle = 0,  // a shared TPM: see LmsRunner
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
                                              .ek_intermediates = {t->IntermediateCaCertPath()},
                                              .ek_cert = {},
                                              .owner_label = {}});
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

// Every key works: ECC keys sign (verified with their public key), sealed ones unseal.
inline void ExpectEveryKeyWorks(const std::string& store, Swtpm* t, int n) {
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

}  // namespace
}  // namespace tpmma::lms
