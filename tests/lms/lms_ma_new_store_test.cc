// SPDX-License-Identifier: GPL-2.0-or-later
// lms against the real ma-server on swtpm (fixture: lms_ma_fixture.h): a new disk too
// (`restore --new-store`). B's package into an empty store on C (refused until approved,
// then every key of each type back on an ECC SRK; the store backs up and restores as
// usual); on the same board from its own package (a wrong code or a package the MA does not
// vouch for leaves no store.json; leftovers of an unfinished attempt set aside). The escrow
// package into a new store is in lms_ma_escrow_test.cc.
#include <gtest/gtest.h>

#include "tests/lms/lms_ma_fixture.h"

namespace tpmma::lms {
namespace {

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
  // An application's PKCS#11 token store on the old disk (its bytes are lms's cargo only;
  // the drill shows a real token working after a swap): the package carries it.
  std::string token_db(40000, '\0');
  for (size_t i = 0; i < token_db.size(); i += 61) token_db[i] = static_cast<char>(i * 7);
  std::filesystem::create_directories(old_b.store + "/pkcs11");
  Spit(old_b.store + "/pkcs11/tpm2_pkcs11.sqlite3", token_db);
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
  EXPECT_EQ(Slurp(fresh + "/pkcs11/tpm2_pkcs11.sqlite3"), token_db);
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
  auto restore = [&](std::function<void(ma::DownloadedPackage&)> change) -> Result<RestoreResult> {
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
  auto refused = restore([](ma::DownloadedPackage& p) { p.signing_key_public.clear(); });
  ASSERT_FALSE(refused.has_value());
  EXPECT_NE(refused.error().message().find("the MA did not say which key signed package " +
                                           package + "; cannot restore into a new store"),
            std::string::npos)
      << refused.error().ToString();
  refused = restore([](ma::DownloadedPackage& p) {
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

}  // namespace
}  // namespace tpmma::lms
