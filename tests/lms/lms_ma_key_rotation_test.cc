// SPDX-License-Identifier: GPL-2.0-or-later
// The MA storage key rotated under live endpoints (issue #16; docs/operations.md, "MA key
// lifecycle"), with the real ma-server, ma-admin and lms on swtpm (lms_ma_fixture.h). Store A's
// MRK follows the MA, store L's is bound to the MA key (--mrk-policy fixed); both back up to
// ma-1. `ma-admin ma-key rotate` makes ma-2 current and keeps ma-1 retiring. A's next backup
// goes to ma-2 with no re-init; L's still goes to ma-1 (its TPM allows nothing else) and the MA
// re-enciphers it to ma-2 at Upload. Packages held by either key restore on a new board, the
// restored keys sign with their old public keys, and the audit chain verifies.
#include <gtest/gtest.h>

#include "tests/lms/lms_ma_fixture.h"
#include "tests/support/postgres.h"
#include "tests/support/tabrmd.h"
#include "tpm/esys/esys.h"

namespace tpmma::lms {
namespace {

json Admin(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {MA_ADMIN_PATH};
  argv.insert(argv.end(), args.begin(), args.end());
  argv.push_back("--json");
  Ran r = Exec(argv);
  EXPECT_EQ(r.exit_code, 0) << r.all();
  return ParseJson(r);
}

// Which MA key holds the package's outer wrap, as the vault records it.
std::string WrapKeyOf(const std::string& state, const std::string& package) {
  return Admin({"packages", "show", package, "--dir", state})["package"].value("wrap_key_id", "");
}

// The restored store's `label` key: its public key is the old store's, and it signs.
void ExpectSignsAsBefore(const std::string& old_store, Swtpm* old_tpm, const std::string& store,
                         Swtpm* t, const std::string& label) {
  auto before = lms::Lms::Open({.store_dir = old_store, .tcti = old_tpm->tcti(), .env = nullptr});
  auto after = lms::Lms::Open({.store_dir = store, .tcti = t->tcti(), .env = nullptr});
  ASSERT_TRUE(before.has_value() && after.has_value());
  auto old_pem = (*before)->PublicKey(label, PublicFormat::kPem);
  auto new_pem = (*after)->PublicKey(label, PublicFormat::kPem);
  ASSERT_TRUE(old_pem.has_value() && new_pem.has_value()) << label;
  EXPECT_EQ(*old_pem, *new_pem) << label;
  const Bytes digest(32, 0x3c);
  auto sig = (*after)->Sign(label, digest);
  ASSERT_TRUE(sig.has_value()) << label << ": " << sig.error().ToString();
  BioPtr bio(BIO_new_mem_buf(old_pem->data(), static_cast<int>(old_pem->size())));
  EvpPkeyPtr key(PEM_read_bio_PUBKEY(bio.get(), nullptr, nullptr, nullptr));
  ASSERT_TRUE(key);
  EvpPkeyCtxPtr ctx(EVP_PKEY_CTX_new(key.get(), nullptr));
  ASSERT_EQ(EVP_PKEY_verify_init(ctx.get()), 1);
  EXPECT_EQ(EVP_PKEY_verify(ctx.get(), sig->data(), sig->size(), digest.data(), digest.size()), 1)
      << label;
}

// One MA the drill runs against: its vault and where its retiring key's secret lives.
struct DrillVariant {
  MaInstance* ma = nullptr;
  bool postgres = false;                 // its backups are pg_dump's, which ma-admin does not see
  std::vector<std::string> rotate_args;  // e.g. TPM custody of the new key
  std::string ma1_secret;                // the file `retire ma-1` destroys
};

class KeyRotationTest : public LmsMaTest {
 protected:
  // The MA's flags for a store on `t`, at the MA's current address (a restart moves it).
  std::vector<std::string> Flags(Swtpm* t) const {
    return {"--ma",         ma_->url(),          "--ma-ca",
            ma_->ca_file(), "--ek-intermediate", t->IntermediateCaCertPath()};
  }
  std::string State() const { return ma_->state_dir(); }
  void Restart() {
    ma_->Stop();
    std::string why;
    ASSERT_TRUE(ma_->Restart(&why)) << why;
  }
  void RunDrill(const DrillVariant& v);

  MaInstance* ma_ = nullptr;

  // A new board (TPM C, an empty disk) restores `package` of `from` under a fresh approval.
  void RestoreOnNewBoard(const std::string& store, const std::string& from,
                         const std::string& package, const std::string& code_file) {
    const Lms c{store, w_->c->tcti(), Flags(w_->c)};
    const std::string platform_c = c.Json({"authenticate"}).value("platform_id", "");
    ASSERT_FALSE(platform_c.empty());
    Admin({"approve", "--old", from, "--new", platform_c, "--reason", "board swap drill",
           "--expires", "1h", "--dir", State()});
    json r = c.Json({"restore", "--new-store", "--from", from, "--package", package,
                     "--recovery-code-file", code_file});
    EXPECT_EQ(r["package_id"], package) << r.dump();
  }
};

void KeyRotationTest::RunDrill(const DrillVariant& v) {
  ma_ = v.ma;
  std::string why;
  // Before: A (follows the MA) and L (bound to ma-1) back up to ma-1.
  const Lms a{F("follow"), w_->a->tcti(), Flags(w_->a)};
  json a_init = a.Json({"init"});
  EXPECT_EQ(a_init["mrk_policy"], "follow") << a_init.dump();
  Spit(F("code-a"), a_init.value("recovery_code", ""));
  a.Json({"keygen", "--type", "ecc-sign", "--label", "vpn"});
  json a1 = a.Json({"backup"});
  const std::string platform_a = a1.value("platform_id", "");
  const std::string p1 = a1.value("package_id", "");
  ASSERT_FALSE(p1.empty()) << a1.dump();
  const Lms l{F("legacy"), w_->b->tcti(), Flags(w_->b)};
  json l_init = l.Json({"init", "--mrk-policy", "fixed"});
  Spit(F("code-l"), l_init.value("recovery_code", ""));
  l.Json({"keygen", "--type", "ecc-sign", "--label", "legacy vpn"});
  json l1 = l.Json({"backup"});
  const std::string platform_l = l1.value("platform_id", "");
  EXPECT_EQ(WrapKeyOf(State(), p1), "ma-1");
  EXPECT_EQ(WrapKeyOf(State(), l1.value("package_id", "")), "ma-1");
  const json ma_key_before = json::parse(Slurp(a.store + "/store.json"))["ma_key"];

  // The rotation: ma-2 current, ma-1 retiring; the server restarted on it.
  std::vector<std::string> rotate = {"ma-key", "rotate", "--dir", State()};
  rotate.insert(rotate.end(), v.rotate_args.begin(), v.rotate_args.end());
  json rotated = Admin(rotate);
  EXPECT_EQ(rotated["ma_key_id"], "ma-2") << rotated.dump();
  EXPECT_EQ(rotated["retiring"], json::array({"ma-1"})) << rotated.dump();
  ASSERT_NO_FATAL_FAILURE(Restart());

  // A's next backup goes to ma-2: no re-init, the store now pins ma-2.
  const Lms a2{a.store, w_->a->tcti(), Flags(w_->a)};
  a2.Json({"keygen", "--type", "ecc-sign", "--label", "after rotation"});
  json a2_up = a2.Json({"backup"});
  const std::string p2 = a2_up.value("package_id", "");
  EXPECT_EQ(a2_up["ma_key_moved"]["to"], "ma-2") << a2_up.dump();
  EXPECT_EQ(WrapKeyOf(State(), p2), "ma-2");
  const json ma_key_after = json::parse(Slurp(a.store + "/store.json"))["ma_key"];
  EXPECT_NE(ma_key_after["name"], ma_key_before["name"]);
  EXPECT_NE(ma_key_after["approval"], ma_key_before["approval"]);
  // L can only duplicate to ma-1; the MA takes it and re-enciphers it to ma-2 at once.
  const Lms l2{l.store, w_->b->tcti(), Flags(w_->b)};
  l2.Json({"keygen", "--type", "ecc-sign", "--label", "legacy after"});
  json l2_up = l2.Json({"backup"});
  const std::string pl2 = l2_up.value("package_id", "");
  EXPECT_TRUE(l2_up["ma_key_moved"].is_null()) << l2_up.dump();
  EXPECT_EQ(WrapKeyOf(State(), pl2), "ma-2");
  EXPECT_EQ(WrapKeyOf(State(), p1), "ma-1");  // not re-enciphered yet

  // Another MA (its own storage and policy-signing keys) is not followed: A's TPM would
  // refuse its approval, and lms refuses first, with nothing uploaded or changed.
  TempDir other_dir;
  auto other = MaInstance::Start({MA_ADMIN_PATH, MA_SERVER_PATH}, other_dir.path(),
                                 {File(*w_, "ek-roots.pem")}, &why);
  ASSERT_NE(other, nullptr) << why;
  const auto before = Snapshot(a.store);
  const Lms stray{a.store,
                  w_->a->tcti(),
                  {"--ma", other->url(), "--ma-ca", other->ca_file(), "--ek-intermediate",
                   w_->a->IntermediateCaCertPath()}};
  Ran refused = stray({"backup", "--full", "--json"});
  EXPECT_EQ(refused.exit_code, 1) << refused.all();
  EXPECT_EQ(ParseJson(refused)["code"], "IntegrityFailure") << refused.out;
  EXPECT_NE(refused.out.find("the one this store's MRK follows"), std::string::npos) << refused.out;
  EXPECT_EQ(Snapshot(a.store), before);

  // A package ma-1 still holds restores on a new board (the MA re-wraps it from ma-1).
  ASSERT_NO_FATAL_FAILURE(RestoreOnNewBoard(F("new-1"), platform_a, p1, F("code-a")));
  ASSERT_NO_FATAL_FAILURE(ExpectSignsAsBefore(a.store, w_->a, F("new-1"), w_->c, "vpn"));

  // Re-encipherment: refused before a vault backup; killed after its first batch, it leaves
  // that batch done and the rest on ma-1; run again, it finishes.
  EXPECT_FAILS_WITH(
      Exec({MA_ADMIN_PATH, "ma-key", "reencipher", "--dir", State()}), 1,
      v.postgres ? "this vault is PostgreSQL" : "no vault backup since the last MA key rotation");
  EXPECT_FAILS_WITH(Exec({MA_ADMIN_PATH, "ma-key", "retire", "ma-1", "--dir", State()}), 1,
                    "still wrapped to ma-1");
  std::vector<std::string> reencipher = {MA_ADMIN_PATH, "ma-key", "reencipher", "--batch",
                                         "1",           "--dir",  State()};
  if (v.postgres) {
    reencipher.push_back("--i-have-a-backup");  // pg_dump, in a real runbook
  } else {
    Admin({"vault", "backup", "--out", F("vault-after-rotation.db"), "--dir", State()});
  }
  EXPECT_EQ(Admin({"ma-key", "status", "--dir", State()})["keys"][1]["packages"], 2);
  setenv("TPMMA_REENCIPHER_KILL_AFTER_BATCHES", "1", 1);
  Ran killed = Exec(reencipher);
  unsetenv("TPMMA_REENCIPHER_KILL_AFTER_BATCHES");
  EXPECT_EQ(killed.exit_code, -1) << killed.all();  // died of SIGKILL
  json status = Admin({"ma-key", "status", "--dir", State()});
  EXPECT_EQ(status["keys"][0]["packages"], 3) << status.dump();  // p2, pl2 and one moved
  EXPECT_EQ(status["keys"][1]["packages"], 1) << status.dump();
  reencipher.erase(reencipher.begin());
  json resumed = Admin(reencipher);
  EXPECT_EQ(resumed["moved"], 1) << resumed.dump();
  EXPECT_EQ(WrapKeyOf(State(), p1), "ma-2");
  // Download works on either side of the job: these are on ma-2 now.
  ASSERT_NO_FATAL_FAILURE(RestoreOnNewBoard(F("new-2"), platform_a, p2, F("code-a")));
  ASSERT_NO_FATAL_FAILURE(ExpectSignsAsBefore(a.store, w_->a, F("new-2"), w_->c, "after rotation"));
  ASSERT_NO_FATAL_FAILURE(RestoreOnNewBoard(F("new-l"), platform_l, pl2, F("code-l")));
  ASSERT_NO_FATAL_FAILURE(ExpectSignsAsBefore(l.store, w_->b, F("new-l"), w_->c, "legacy after"));

  // Retirement: refused while L's MRK is bound to ma-1; once L is decommissioned, ma-1 is
  // destroyed, and A's first package (re-enciphered) still restores.
  status = Admin({"ma-key", "status", "--dir", State()});
  EXPECT_EQ(status["keys"][1]["bound_platforms"], json::array({platform_l})) << status.dump();
  EXPECT_FAILS_WITH(Exec({MA_ADMIN_PATH, "ma-key", "retire", "ma-1", "--dir", State()}), 1,
                    "MRKs bound to ma-1");
  Admin({"platforms", "revoke", platform_l, "--reason", "decommissioned", "--dir", State()});
  const std::string ma1_key = v.ma1_secret.empty() ? State() + "/ma/ma-key.pem" : v.ma1_secret;
  ASSERT_TRUE(std::filesystem::exists(ma1_key));
  json retired = Admin({"ma-key", "retire", "ma-1", "--dir", State()});
  EXPECT_EQ(retired["retired"], "ma-1") << retired.dump();
  EXPECT_FALSE(std::filesystem::exists(ma1_key));
  EXPECT_EQ(Admin({"ma-key", "status", "--dir", State()})["keys"].size(), 1u);
  ASSERT_NO_FATAL_FAILURE(Restart());
  ASSERT_NO_FATAL_FAILURE(RestoreOnNewBoard(F("new-3"), platform_a, p1, F("code-a")));
  ASSERT_NO_FATAL_FAILURE(ExpectSignsAsBefore(a.store, w_->a, F("new-3"), w_->c, "vpn"));
  EXPECT_EQ(Admin({"audit", "verify", "--dir", State()}).value("ok", false), true);
}

TEST_F(KeyRotationTest, EndpointsFollowARotationAndEveryPackageStillRestores) {
  RunDrill({.ma = w_->ma.get(), .postgres = false, .rotate_args = {}, .ma1_secret = {}});
}

// The MA's keys in a TPM of its own (behind tpm2-abrmd, as /dev/tpmrm0 would be: each key
// keeps its own context open): ma-1 imported with tpm2_import as docs/operations.md says, the
// policy-signing key by `policy-key import-tpm` (its PEM then offline), ma-2 by `ma-key rotate
// --custody tpm`, approved by TPM2_Sign; re-encipherment is TPM2_Rewrap there.
TEST_F(KeyRotationTest, TheSameDrillWithTheMaKeysInTheMasTpm) {
  std::string why;
  if (!testing::ResourceManager::Available(&why)) GTEST_SKIP() << why;
  Swtpm* hsm = testing::SharedSwtpm(3, &why);
  ASSERT_NE(hsm, nullptr) << why;
  auto rm = testing::ResourceManager::Start(*hsm, &why);
  ASSERT_NE(rm, nullptr) << why;
  {
    auto tpm = esys::Tpm::Open(rm->tcti());
    ASSERT_TRUE(tpm.has_value()) << tpm.error().ToString();
    ASSERT_TRUE((*tpm)->GetOrCreateSrk(esys::KeyAlg::kRsa2048).has_value());
  }
  TempDir d;
  auto ma = MaInstance::Start({MA_ADMIN_PATH, MA_SERVER_PATH}, d.path(),
                              {File(*w_, "ek-roots.pem")}, &why);
  ASSERT_NE(ma, nullptr) << why;
  const std::string ma_dir = ma->state_dir() + "/ma/";
  auto imported = rm->Tools({"tpm2_import", "-C", "0x81000001", "-G", "rsa", "-i",
                             ma_dir + "ma-key.pem", "-a", "restricted|decrypt|userwithauth", "-u",
                             ma_dir + "ma-tpm.pub", "-r", ma_dir + "ma-tpm.priv"});
  ASSERT_EQ(imported.exit_code, 0) << imported.output;
  std::string config = Slurp(ma->config_path());
  const std::string software =
      "custody = \"software\"\nkey_id = \"ma-1\"\nprivate_key = \"ma/ma-key.pem\"\n";
  ASSERT_NE(config.find(software), std::string::npos) << config;
  config.replace(config.find(software), software.size(),
                 "custody = \"tpm\"\nkey_id = \"ma-1\"\ntpm_private = \"ma/ma-tpm.priv\"\n"
                 "tpm_public = \"ma/ma-tpm.pub\"\ntpm_tcti = \"" +
                     rm->tcti() + "\"\n");
  Spit(ma->config_path(), config);
  // The policy-signing key into the TPM too; its PEM goes offline (here: aside).
  json moved =
      Admin({"policy-key", "import-tpm", "--tpm-tcti", rm->tcti(), "--dir", ma->state_dir()});
  EXPECT_NE(moved.value("tpm_private", ""), "") << moved.dump();
  const std::string pem = ma->state_dir() + "/policy/policy-key.pem";
  std::filesystem::rename(pem, d.File("policy-key.pem.offline"));
  ma->Stop();
  ASSERT_TRUE(ma->Restart(&why)) << why;
  RunDrill({.ma = ma.get(),
            .postgres = false,
            .rotate_args = {"--custody", "tpm", "--tpm-tcti", rm->tcti()},
            .ma1_secret = ma_dir + "ma-tpm.priv"});
  const std::string rotated = Slurp(ma->config_path());
  EXPECT_NE(rotated.find("tpm_private = \"ma/ma-2-tpm.priv\""), std::string::npos) << rotated;
  EXPECT_NE(rotated.find("tpm_private = \"policy/policy-key-tpm.priv\""), std::string::npos)
      << rotated;
  EXPECT_FALSE(std::filesystem::exists(pem));  // the approval of ma-2 came from the TPM
  ma->Stop();  // its TPM contexts close before the resource manager goes
}

// Re-encipherment stops at the first package it cannot move, names it, and changes nothing of
// that batch: here a package whose stored document no longer verifies.
TEST_F(KeyRotationTest, ReencipherStopsAtAPackageThatFailsAndNamesIt) {
  std::string why;
  TempDir d;
  auto ma = MaInstance::Start({MA_ADMIN_PATH, MA_SERVER_PATH}, d.path(),
                              {File(*w_, "ek-roots.pem")}, &why);
  ASSERT_NE(ma, nullptr) << why;
  ma_ = ma.get();
  const Lms a{F("stop-a"), w_->a->tcti(), Flags(w_->a)};
  a.Json({"init"});
  a.Json({"keygen", "--type", "ecc-sign", "--label", "vpn"});
  const std::string package = a.Json({"backup"}).value("package_id", "");
  Admin({"ma-key", "rotate", "--dir", State()});
  // The stored document damaged behind the vault's back (one byte of a label).
  auto r = RunCommand(
      {"sqlite3", ma->vault_path(),
       "UPDATE package_bodies SET body = CAST(replace(CAST(body AS TEXT), '>vpn<', "
       "'>vpm<') AS BLOB) WHERE package_pk = (SELECT pk FROM packages WHERE package_id = '" +
           package + "')"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  Ran stopped =
      Exec({MA_ADMIN_PATH, "ma-key", "reencipher", "--i-have-a-backup", "--dir", State()});
  EXPECT_EQ(stopped.exit_code, 1) << stopped.all();
  EXPECT_NE(stopped.all().find("re-encipherment stopped at package " + package + " (on ma-1)"),
            std::string::npos)
      << stopped.all();
  EXPECT_EQ(WrapKeyOf(State(), package), "ma-1");  // nothing moved
}

TEST_F(KeyRotationTest, TheSameDrillOnPostgres) {
  auto cluster = testing::PostgresCluster::Shared();
  ASSERT_TRUE(cluster.has_value()) << cluster.error().ToString();
  if (*cluster == nullptr) GTEST_SKIP() << testing::PostgresCluster::SkipReason();
  ASSERT_TRUE((*cluster)->DropDatabase("rotation").ok());
  ASSERT_TRUE((*cluster)->CreateDatabase("rotation").ok());
  std::string why;
  TempDir d;
  auto ma =
      MaInstance::Start({MA_ADMIN_PATH, MA_SERVER_PATH}, d.path(), {File(*w_, "ek-roots.pem")},
                        &why, {}, (*cluster)->ConnInfo("rotation"));
  ASSERT_NE(ma, nullptr) << why;
  RunDrill({.ma = ma.get(), .postgres = true, .rotate_args = {}, .ma1_secret = {}});
  auto rows = (*cluster)->QueryValue(
      "rotation",
      "SELECT count(*) FROM packages WHERE wrap_key_id = 'ma-2' AND wrap_seed IS NOT NULL");
  ASSERT_TRUE(rows.has_value()) << rows.error().ToString();
  EXPECT_EQ(*rows, "3");  // p1 and l1 by the job, pl2 at Upload
}

// What following the MA costs a backup (docs/benchmarks.md, issue #16): `lms backup --full` of
// a store whose MRK follows the MA (GetMAKey first, then TPM2_VerifySignature of the approval,
// PolicyAuthorize, Duplicate) against one bound to the MA key (PolicyDuplicationSelect), both
// on TPM A with 3 children, alternated; medians of 9 and their ratio. Not a pass/fail test.
TEST_F(KeyRotationTest, DISABLED_BackupCostFollowingVersusBound) {
  ma_ = w_->ma.get();
  std::vector<Lms> stores = {{F("bench-follow"), w_->a->tcti(), Flags(w_->a)},
                             {F("bench-fixed"), w_->a->tcti(), Flags(w_->a)}};
  stores[0].Json({"init", "--mrk-policy", "follow"});
  stores[1].Json({"init", "--mrk-policy", "fixed"});
  for (const Lms& l : stores) {
    for (int i = 0; i < 3; ++i)
      l.Json({"keygen", "--type", "ecc-sign", "--label", "k" + std::to_string(i)});
    l.Json({"backup"});  // warm: authenticated, signing key certified
  }
  std::vector<double> ms[2];
  for (int run = 0; run < 9; ++run) {
    for (int k = 0; k < 2; ++k) {
      const auto t0 = std::chrono::steady_clock::now();
      stores[k].Json({"backup", "--full"});
      ms[k].push_back(
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    }
  }
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  };
  std::printf(
      "backup --full, 3 children: following %.0f ms, bound %.0f ms (medians of 9), ratio %.2f\n",
      median(ms[0]), median(ms[1]), median(ms[0]) / median(ms[1]));
}

}  // namespace
}  // namespace tpmma::lms
