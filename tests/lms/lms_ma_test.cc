// SPDX-License-Identifier: GPL-2.0-or-later
// lms against the real ma-server on swtpm (fixture: lms_ma_fixture.h): backup and restore.
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
//   The command line: help, usage errors and missing MA settings said in words.
//
// DISABLED_BackupAndRestoreOf100KeysTiming measures backup and restore for
// docs/benchmarks.md (issue #4 section) (run with --gtest_also_run_disabled_tests).
#include <gtest/gtest.h>

#include "tests/lms/lms_ma_fixture.h"

namespace tpmma::lms {
namespace {

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
  EXPECT_EQ(q["packages"][0]["access"], "own");
  EXPECT_EQ(q["packages"][0]["keys"], 5);
  EXPECT_EQ(q["packages"][0]["last_backup"], true);
  r = a()({"query"});
  EXPECT_NE(r.out.find("* " + package), std::string::npos) << r.out;

  // The owner clears the TPM: the SRK, and every key under it, is gone.
  auto cleared = w_->a->Tools({"tpm2_clear", "-c", "p"});
  ASSERT_EQ(cleared.exit_code, 0) << cleared.output;
  EXPECT_FAILS_WITH(a()({"sign", "vpn", "--in", doc}), 1, "lms restore");
  // lms status says so, and exits 1 (it said 0: a monitoring check saw a healthy endpoint).
  Ran status = a()({"status", "--json"});
  EXPECT_EQ(status.exit_code, 1) << status.all();
  json st = ParseJson(status);
  EXPECT_EQ(st["tpm"]["srk_matches_store"], false) << st.dump();
  EXPECT_EQ(st["code"], "Conflict") << st.dump();
  EXPECT_NE(st.value("message", "").find("run lms restore"), std::string::npos) << st.dump();
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
    o.after_download = [](ma::DownloadedPackage& p) {
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
  ma::DownloadedPackage got;
  {
    auto ma =
        ma::MaClient::Create({.url = w_->ma->url(), .ca_file = w_->ma->ca_file(), .timeout_s = 30});
    ASSERT_TRUE(ma.has_value()) << ma.error().ToString();
    auto der = RunCommand({"openssl", "x509", "-in", w_->b->IntermediateCaCertPath(), "-outform",
                           "DER", "-out", F("intermediate.der")});
    ASSERT_EQ(der.exit_code, 0) << der.output;
    auto tpm = esys::Tpm::Open(w_->b->tcti());
    ASSERT_TRUE(tpm.has_value());
    auto srk = (*tpm)->GetOrCreateSrk(esys::KeyAlg::kRsa2048);
    ASSERT_TRUE(srk.has_value());
    auto ak = ma::CreateAttestationKey(**tpm, esys::KeyAlg::kEccP256);
    ASSERT_TRUE(ak.has_value());
    ma::AuthenticateOptions o;
    o.ek_intermediates = {ToBytes(Slurp(F("intermediate.der")))};
    auto session = ma::Authenticate(**ma, **tpm, *ak, nullptr, o);
    ASSERT_TRUE(session.has_value()) << session.error().ToString();
    const std::string token(session->session.token.begin(), session->session.token.end());
    auto d = ma::DownloadTo(**ma, **tpm, token, package, *srk, *ak);
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
  EXPECT_EQ(q["packages"][0]["access"], "approved");
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
  // The approval is used up; a second restore is told so (it was "none is active").
  r = c({"restore", "--package", w_->package_a, "--recovery-code-file", F("code"), "--json"});
  EXPECT_EQ(r.exit_code, 1) << r.all();
  EXPECT_NE(ParseJson(r).value("message", "").find("was already used at"), std::string::npos)
      << r.out;
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
    own |= p["access"] == "own" && p["package_id"] == up["package_id"];
  EXPECT_TRUE(own) << q.dump();
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
  // Settings an authenticate succeeded with are kept: the next command needs no flags.
  const Lms kept{F("kept"), w_->a->tcti(), {}};
  EXPECT_FAILS_WITH(kept({"authenticate"}), 1, "no MA given");
  std::vector<std::string> with_flags = {"authenticate"};
  with_flags.insert(with_flags.end(), w_->ma_flags_a.begin(), w_->ma_flags_a.end());
  kept.Json(with_flags);
  EXPECT_EQ(kept.Json({"authenticate"}).value("ma_url", ""), w_->ma->url());
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
