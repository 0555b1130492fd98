// SPDX-License-Identifier: GPL-2.0-or-later
// EK certificates from every place a real TPM keeps them (issue #12):
//   EccEkEndToEnd: a swtpm whose only EK certificate is the ECC one (swtpm_setup keeps it in
//     the high range: H-3, NIST P-384, nameAlg SHA-384, 0x01c00016; the RSA index is
//     removed): lms authenticates with that ECC EK (the platform id is its Name, 000c...),
//     backs up, and after tpm2_clear restores against the real ma-server.
//   HighRangeCertificateIsFound: with the RSA and H-3 indices removed, no certificate is
//     found (the error names the indices); with one only at H-2's index, ChooseEk picks H-2;
//     --ek-cert's key picks H-3; credential activation with the H-1, H-2, H-3 and L-2 EKs
//     works.
#include "tests/lms/lms_ma_fixture.h"
#include "tpm/credential.h"
#include "tpm/ek_templates.h"
#include "tpm/esys/esys.h"

namespace tpmma::lms {
namespace {

TEST(LmsMaEccEkTest, EccEkEndToEnd) {
  std::string why;
  Swtpm* t = testing::SharedSwtpm(0, &why);
  if (t == nullptr) GTEST_SKIP() << why;
  TempDir dir;
  auto ma =
      MaInstance::Start({MA_ADMIN_PATH, MA_SERVER_PATH}, dir.path(), {t->RootCaCertPath()}, &why);
  ASSERT_NE(ma, nullptr) << why;
  auto nv = t->Tools({"tpm2_nvundefine", "0x01c00002", "-C", "p"});
  ASSERT_EQ(nv.exit_code, 0) << nv.output;
  std::string ecc_ek_name;
  {
    auto tpm = esys::Tpm::Open(t->tcti());
    ASSERT_TRUE(tpm.has_value());
    auto ek = (*tpm)->CreateEk(tpm::TcgEkTemplate("H-3"));
    ASSERT_TRUE(ek.has_value()) << ek.error().ToString();
    EXPECT_EQ(ek->public_area().publicArea.type, TPM2_ALG_ECC);
    ecc_ek_name = HexEncode(ek->name());
  }
  const std::vector<std::string> flags = {
      "--ma",        ma->url(),           "--ma-ca",
      ma->ca_file(), "--ek-intermediate", t->IntermediateCaCertPath()};
  std::vector<std::string> init = {"init", "--json"};
  init.insert(init.end(), flags.begin(), flags.end());
  const Lms l{dir.File("store"), t->tcti(), {}};
  Ran r = l(init);
  ASSERT_EQ(r.exit_code, 0) << r.all();
  const std::string code = ParseJson(r).value("recovery_code", "");
  ASSERT_FALSE(code.empty());
  Spit(dir.File("code"), code + "\n");
  r = l({"keygen", "--type", "ecc-sign", "--label", "vpn", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.all();
  ASSERT_EQ(l({"pubkey", "vpn", "--out", dir.File("vpn.pem")}).exit_code, 0);
  Spit(dir.File("doc"), "signed with a key backed up under an ECC EK\n");

  json auth = l.Json({"authenticate"});
  const std::string platform = auth.value("platform_id", "");
  EXPECT_EQ(platform.substr(0, 4), "000c") << auth.dump();  // SHA-384 Name
  EXPECT_EQ(platform, ecc_ek_name);

  r = l({"backup"});
  ASSERT_EQ(r.exit_code, 0) << r.all();
  auto cleared = t->Tools({"tpm2_clear", "-c", "p"});
  ASSERT_EQ(cleared.exit_code, 0) << cleared.output;
  r = l({"restore", "--recovery-code-file", dir.File("code"), "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.all();
  json restored = ParseJson(r);
  EXPECT_EQ(restored["source_platform_id"], platform);
  EXPECT_EQ(restored["srk_changed"], true);
  EXPECT_EQ(l({"pubkey", "vpn"}).out, Slurp(dir.File("vpn.pem")));
  r = l({"sign", "vpn", "--in", dir.File("doc"), "--out", dir.File("doc.sig")});
  ASSERT_EQ(r.exit_code, 0) << r.all();
  EXPECT_TRUE(OpensslVerifies(dir.File("vpn.pem"), dir.File("doc.sig"), dir.File("doc")));
  EXPECT_EQ(json::parse(Slurp(l.store + "/ma.json"))["platform_id"], platform);
}

// The AK made under `ek`, a credential for it made as the MA makes it, activated.
void ExpectActivates(esys::Tpm& tpm, const tpm::EkTemplate& tmpl) {
  SCOPED_TRACE(tmpl.name);
  auto ek = tpm.CreateEk(tmpl);
  ASSERT_TRUE(ek.has_value()) << ek.error().ToString();
  auto blob = tpm.CreateAk(*ek, esys::KeyAlg::kEccP256);
  ASSERT_TRUE(blob.has_value()) << blob.error().ToString();
  auto ak = tpm.Load(*ek, *blob);
  ASSERT_TRUE(ak.has_value()) << ak.error().ToString();
  const Bytes secret(16, 0x5a);
  auto cred = tpm::MakeCredential(ek->public_area(), ak->name(), secret);
  ASSERT_TRUE(cred.has_value()) << cred.error().ToString();
  auto got = tpm.ActivateCredential(*ak, *ek, cred->id_object, cred->encrypted_secret);
  ASSERT_TRUE(got.has_value()) << got.error().ToString();
  EXPECT_EQ(Bytes(got->begin(), got->end()), secret);
}

TEST(LmsMaEccEkTest, HighRangeCertificateIsFound) {
  std::string why;
  Swtpm* t = testing::SharedSwtpm(1, &why);
  if (t == nullptr) GTEST_SKIP() << why;
  TempDir dir;
  // swtpm's ECC certificate (H-3) moves to H-2's index (ChooseEk does not check the key: the MA
  // does).
  auto nv = t->Tools({"tpm2_nvread", "0x01c00016", "-C", "o", "-o", dir.File("ecc.der")});
  ASSERT_EQ(nv.exit_code, 0) << nv.output;
  for (const char* index : {"0x01c00002", "0x01c00016"}) {
    nv = t->Tools({"tpm2_nvundefine", index, "-C", "p"});
    ASSERT_EQ(nv.exit_code, 0) << nv.output;
  }
  const std::string cert = Slurp(dir.File("ecc.der"));
  {
    auto tpm = esys::Tpm::Open(t->tcti());
    ASSERT_TRUE(tpm.has_value());
    auto none = ma::ChooseEk(**tpm);
    ASSERT_FALSE(none.has_value());
    EXPECT_NE(none.error().message().find("no EK certificate in any of the TCG NV indices "
                                          "(0x01c00002, 0x01c0000a, 0x01c00012, 0x01c00014"),
              std::string::npos)
        << none.error().ToString();
    EXPECT_NE(none.error().message().find("--ek-cert FILE"), std::string::npos);
  }
  nv = t->Tools({"tpm2_nvdefine", "0x01c00014", "-C", "o", "-s", std::to_string(cert.size()), "-a",
                 "ownerread|ownerwrite|authread|authwrite|no_da"});
  ASSERT_EQ(nv.exit_code, 0) << nv.output;
  nv = t->Tools({"tpm2_nvwrite", "0x01c00014", "-C", "o", "-i", dir.File("ecc.der")});
  ASSERT_EQ(nv.exit_code, 0) << nv.output;

  auto tpm = esys::Tpm::Open(t->tcti());
  ASSERT_TRUE(tpm.has_value());
  auto chosen = ma::ChooseEk(**tpm);
  ASSERT_TRUE(chosen.has_value()) << chosen.error().ToString();
  ASSERT_NE(chosen->ek_template, nullptr);
  EXPECT_EQ(chosen->ek_template->name, "H-2");
  EXPECT_EQ(ToString(chosen->certificate), cert);
  // The given certificate (swtpm's H-3 one) is matched to the H-3 EK by its key.
  auto given = ma::ChooseEk(**tpm, ToBytes(cert));
  ASSERT_TRUE(given.has_value()) << given.error().ToString();
  EXPECT_EQ(given->ek_template->name, "H-3");
  ExpectActivates(**tpm, tpm::TcgEkTemplate("H-2"));
  ExpectActivates(**tpm, tpm::TcgEkTemplate("H-1"));
  ExpectActivates(**tpm, tpm::TcgEkTemplate("H-3"));
  ExpectActivates(**tpm, tpm::TcgEkTemplate("L-2"));
}

}  // namespace
}  // namespace tpmma::lms
