// SPDX-License-Identifier: GPL-2.0-or-later
// lms against the real ma-server on swtpm (fixture: lms_ma_fixture.h): escrow custody.
//
//   B, then C: init --custody escrow (no code), backup (package custody Escrow), tpm2_clear,
//   restore refused until the helpdesk approves X -> X, then restored with the inner key the
//   MA releases; the same on another board. After `ma-admin escrow rotate` (an MA of its
//   own) the next backup re-pins the store to the new escrow key; a package escrowed to the
//   retired one still restores. An escrow package into a new store on another board.
#include <gtest/gtest.h>

#include "tests/lms/lms_ma_fixture.h"

namespace tpmma::lms {
namespace {

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
  EXPECT_EQ(q["packages"][0]["custody"], "escrow");
  {
    auto l = lms::Lms::Open({.store_dir = store, .tcti = w_->b->tcti(), .env = nullptr});
    ASSERT_TRUE(l.has_value());
    // The package as signed: Escrow custody to the store's escrow key, 2048-bit RSA-OAEP.
    std::optional<schema::Custody> seen;
    RestoreOptions o;
    o.package_id = package;
    o.after_download = [&](ma::DownloadedPackage& p) {
      EXPECT_TRUE(p.escrowed_inner_key.empty());  // nothing released without an approval
      auto m = (*l)->store().ReadMaState();
      ASSERT_TRUE(m.has_value());
      auto pub = tpm::Unmarshal<TPM2B_PUBLIC>(m->signing_public);
      ASSERT_TRUE(pub.has_value());
      auto key = tpm::PublicToEvp(pub->publicArea);
      ASSERT_TRUE(key.has_value());
      auto reader = schema::PackageReader::Open(p.document);
      ASSERT_TRUE(reader.has_value());
      auto model = reader->Verify(key->get());
      ASSERT_TRUE(model.has_value()) << model.error().ToString();
      seen = model->custody;
    };
    // Same SRK: the sealed inner key opens the package, no approval needed.
    auto restored = Restore(**l, Settings(w_->b), o);
    ASSERT_TRUE(restored.has_value()) << restored.error().ToString();
    ASSERT_TRUE(seen.has_value());
    const auto* escrow = std::get_if<schema::EscrowCustody>(&*seen);
    ASSERT_NE(escrow, nullptr);
    EXPECT_EQ(escrow->escrow_key_id, escrow_id);
    EXPECT_EQ(escrow->algorithm, schema::EscrowAlgorithm::kRsaOaepSha256);
    EXPECT_EQ(escrow->encrypted_inner_key.size(), 256u);
    EXPECT_EQ(CustodyModeName(restored->custody), "escrow");
    EXPECT_EQ(InnerKeySourceName(restored->inner_key_source), "sealed");
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
  EXPECT_EQ(q["packages"][0]["custody"], "escrow");
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

  // An escrow store on TPM B, pinned to escrow-1; package P1 escrowed to it. Its MRK is bound
  // to the MA key (fixed): pointed at another MA below, a following MRK would be refused
  // first for that MA's policy-signing key (lms_ma_key_rotation_test.cc).
  const std::string store = F("rotate-store");
  Lms b{store, w_->b->tcti(), flags()};
  json init =
      b.Json({"init", "--custody", "escrow", "--mrk-alg", "ecc-p256", "--mrk-policy", "fixed"});
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
                            .ek_cert = {},
                            .owner_label = {},
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
    std::optional<schema::Custody> seen;
    RestoreOptions o;
    o.package_id = up2.value("package_id", "");
    o.after_download = [&](ma::DownloadedPackage& p) {
      auto m = (*l)->store().ReadMaState();
      ASSERT_TRUE(m.has_value());
      auto pub = tpm::Unmarshal<TPM2B_PUBLIC>(m->signing_public);
      ASSERT_TRUE(pub.has_value());
      auto key = tpm::PublicToEvp(pub->publicArea);
      ASSERT_TRUE(key.has_value());
      auto reader = schema::PackageReader::Open(p.document);
      ASSERT_TRUE(reader.has_value());
      auto model = reader->Verify(key->get());
      ASSERT_TRUE(model.has_value()) << model.error().ToString();
      seen = model->custody;
    };
    auto restored = Restore(**l, settings, o);
    ASSERT_TRUE(restored.has_value()) << restored.error().ToString();
    ASSERT_TRUE(seen.has_value());
    const auto* escrow = std::get_if<schema::EscrowCustody>(&*seen);
    ASSERT_NE(escrow, nullptr);
    EXPECT_EQ(escrow->escrow_key_id, "escrow-2");
    EXPECT_EQ(InnerKeySourceName(restored->inner_key_source), "sealed");
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

// ------------------------------------------------------------------ escrow, a new disk too

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

}  // namespace
}  // namespace tpmma::lms
