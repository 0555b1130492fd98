// SPDX-License-Identifier: GPL-2.0-or-later
// The TPM-resident MA key: the MA's RSA key imported into a TPM of its own with tpm2_import
// (swtpm 1, the "HSM"), TPM2_Rewrap of a real MRK duplicate made by another TPM (swtpm 0),
// and TPM2_Import of the result back on swtpm 0.
#include <sys/stat.h>

#include <gtest/gtest.h>

#include "server/escrow_key.h"
#include "server/ma_key.h"
#include "server/ma_key_tpm.h"
#include "tests/support/status_testing.h"
#include "tests/support/swtpm.h"
#include "tests/support/testutil.h"
#include "tpm/escrow.h"
#include "tpm/esys/esys.h"
#include "tpm/marshal.h"

namespace tpmma::server {
namespace {

using testing::RunCommand;
using testing::Swtpm;
using testing::TempDir;

class TpmMaKeyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    platform_ = testing::SharedSwtpm(0, &why);
    if (platform_ == nullptr) GTEST_SKIP() << why;
    hsm_ = testing::SharedSwtpm(1, &why);
    ASSERT_NE(hsm_, nullptr) << why;
    auto r = RunCommand({"openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                         key_, "-out", cert_, "-subj", "/CN=tpm-ma test MA", "-days", "2"});
    ASSERT_EQ(r.exit_code, 0) << r.output;
    ::chmod(key_.c_str(), 0600);
    // The HSM's storage parent, then the MA key imported under it.
    {
      auto tpm = esys::Tpm::Open(hsm_->tcti());
      ASSERT_OK(tpm);
      ASSERT_OK((*tpm)->GetOrCreateSrk(esys::KeyAlg::kRsa2048));
    }
    r = hsm_->Tools({"tpm2_import", "-C", "0x81000001", "-G", "rsa", "-i", key_, "-a",
                     "restricted|decrypt|userwithauth", "-u", pub_, "-r", priv_});
    ASSERT_EQ(r.exit_code, 0) << r.output;
  }

  TpmMaKeyOptions Options() {
    return {.key_id = "ma-hsm",
            .tcti = hsm_->tcti(),
            .parent_handle = 0x81000001,
            .public_path = pub_,
            .private_path = priv_,
            .certificate_path = cert_};
  }

  TempDir dir_;
  Swtpm* platform_ = nullptr;
  Swtpm* hsm_ = nullptr;
  std::string key_ = dir_.File("ma.key"), cert_ = dir_.File("ma.crt");
  std::string pub_ = dir_.File("ma-tpm.pub"), priv_ = dir_.File("ma-tpm.priv");
};

TEST_F(TpmMaKeyTest, RewrapInTheMaTpmImportsOnThePlatform) {
  auto soft = LoadSoftwareMaKey("ma-hsm", key_, cert_, Env::Default());
  ASSERT_OK(soft);
  auto hsm = LoadTpmMaKey(Options(), Env::Default());
  ASSERT_OK(hsm);
  // Same key, same published bytes: MRKs bound to the software key stay valid.
  EXPECT_EQ((*hsm)->public_bytes(), (*soft)->public_bytes());
  EXPECT_EQ((*hsm)->name(), (*soft)->name());
  EXPECT_EQ((*hsm)->certificate_der(), (*soft)->certificate_der());

  auto tpm = esys::Tpm::Open(platform_->tcti());
  ASSERT_OK(tpm);
  auto srk = (*tpm)->GetOrCreateSrk(esys::KeyAlg::kRsa2048);
  ASSERT_OK(srk);
  auto srk_info = (*tpm)->ReadPublic(*srk);
  ASSERT_OK(srk_info);
  auto mrk_blob = (*tpm)->CreateMrk(*srk, (*hsm)->name(), esys::KeyAlg::kRsa2048);
  ASSERT_OK(mrk_blob);
  auto mrk = (*tpm)->Load(*srk, *mrk_blob);
  ASSERT_OK(mrk);
  auto dup = (*tpm)->Duplicate(*mrk, (*hsm)->public_area(), esys::InnerWrap::kTpmGenerated);
  ASSERT_OK(dup);
  const Bytes mrk_name = mrk->name();
  mrk->reset();

  auto rw = (*hsm)->Rewrap(mrk_blob->public_area, dup->duplicate, dup->encrypted_seed,
                           srk_info->public_area);
  ASSERT_OK(rw);
  auto imported = (*tpm)->Import(*srk, mrk_blob->public_area, rw->duplicate, rw->encrypted_seed,
                                 dup->inner_key);
  ASSERT_OK(imported);
  auto loaded = (*tpm)->Load(*srk, {mrk_blob->public_area, *imported});
  ASSERT_OK(loaded);
  EXPECT_EQ(loaded->name(), mrk_name);
  loaded->reset();

  // The software custody re-wraps the same duplicate to the same effect.
  auto rw_soft = (*soft)->Rewrap(mrk_blob->public_area, dup->duplicate, dup->encrypted_seed,
                                 srk_info->public_area);
  ASSERT_OK(rw_soft);
  EXPECT_TRUE((*tpm)
                  ->Import(*srk, mrk_blob->public_area, rw_soft->duplicate, rw_soft->encrypted_seed,
                           dup->inner_key)
                  .has_value());

  // A damaged duplicate is refused by the MA's TPM, and the custody keeps working.
  TPM2B_PRIVATE bad = dup->duplicate;
  bad.buffer[bad.size - 3] ^= 1;
  auto refused =
      (*hsm)->Rewrap(mrk_blob->public_area, bad, dup->encrypted_seed, srk_info->public_area);
  ASSERT_FALSE(refused.has_value());
  EXPECT_EQ(refused.error().code(), Code::kIntegrityFailure) << refused.error().ToString();
  EXPECT_TRUE((*hsm)
                  ->Rewrap(mrk_blob->public_area, dup->duplicate, dup->encrypted_seed,
                           srk_info->public_area)
                  .has_value());
  // A new parent that is not a storage key is refused before the TPM sees it.
  TPM2B_PUBLIC not_storage = srk_info->public_area;
  not_storage.publicArea.objectAttributes &= ~TPMA_OBJECT_RESTRICTED;
  auto np = (*hsm)->Rewrap(mrk_blob->public_area, dup->duplicate, dup->encrypted_seed, not_storage);
  ASSERT_FALSE(np.has_value());
  EXPECT_EQ(np.error().code(), Code::kInvalidArgument) << np.error().ToString();
}

TEST_F(TpmMaKeyTest, RefusesMismatchedFiles) {
  // A certificate for another key.
  const std::string other = dir_.File("other.crt");
  auto r = RunCommand({"openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                       dir_.File("other.key"), "-out", other, "-subj", "/CN=other", "-days", "2"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto o = Options();
  o.certificate_path = other;
  auto bad_cert = LoadTpmMaKey(o, Env::Default());
  ASSERT_FALSE(bad_cert.has_value());
  EXPECT_EQ(bad_cert.error().code(), Code::kInvalidArgument);
  EXPECT_NE(bad_cert.error().message().find("does not certify"), std::string::npos);

  o = Options();
  o.public_path = dir_.File("missing.pub");
  EXPECT_FALSE(LoadTpmMaKey(o, Env::Default()).has_value());

  o = Options();
  o.tcti = "swtpm:host=127.0.0.1,port=1";
  auto unreachable = LoadTpmMaKey(o, Env::Default());
  ASSERT_FALSE(unreachable.has_value());
  EXPECT_EQ(unreachable.error().code(), Code::kUnavailable) << unreachable.error().ToString();
}

// The escrow key in a TPM (escrow.custody = "tpm"): imported with tpm2_import as the
// operations guide says, it opens what lms escrowed to the software key's public, exactly
// as the software custody does, and refuses a flipped bit the same way.
TEST_F(TpmMaKeyTest, EscrowKeyInATpmDecryptsWhatTheSoftwareKeyPublishes) {
  const std::string ekey = dir_.File("escrow.key"), ecert = dir_.File("escrow.crt");
  const std::string epub = dir_.File("escrow-tpm.pub"), epriv = dir_.File("escrow-tpm.priv");
  auto r = RunCommand({"openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ekey,
                       "-out", ecert, "-subj", "/CN=tpm-ma test escrow", "-days", "2"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  ::chmod(ekey.c_str(), 0600);
  r = hsm_->Tools({"tpm2_import", "-C", "0x81000001", "-G", "rsa", "-i", ekey, "-a",
                   "decrypt|userwithauth", "-u", epub, "-r", epriv});
  ASSERT_EQ(r.exit_code, 0) << r.output;

  auto soft = LoadSoftwareEscrowKey("escrow-1", ekey, ecert, Env::Default());
  ASSERT_OK(soft);
  auto in_tpm = LoadTpmEscrowKey({.key_id = "escrow-1",
                                  .tcti = hsm_->tcti(),
                                  .parent_handle = 0x81000001,
                                  .public_path = epub,
                                  .private_path = epriv,
                                  .certificate_path = ecert},
                                 Env::Default());
  ASSERT_OK(in_tpm);
  // tpm2_import writes the same TPM2B_PUBLIC the software custody publishes.
  EXPECT_EQ((*in_tpm)->public_bytes(), (*soft)->public_bytes());

  auto pub = tpm::Unmarshal<TPM2B_PUBLIC>((*soft)->public_bytes());
  ASSERT_OK(pub);
  const Bytes inner(16, 0x42), mrk_name = {0x00, 0x0b, 9, 9, 9};
  auto ct = tpm::EscrowEncrypt(pub->publicArea, inner, "platform-a", mrk_name);
  ASSERT_OK(ct);
  for (EscrowKeyCustody* k : {soft->get(), in_tpm->get()}) {
    auto plain = k->Decrypt(*ct);
    ASSERT_OK(plain);
    auto opened = tpm::EscrowOpen(*plain, "platform-a", mrk_name);
    ASSERT_OK(opened);
    EXPECT_EQ(Bytes(opened->begin(), opened->end()), inner);
    Bytes flipped = *ct;
    flipped[7] ^= 0x10;
    auto bad = k->Decrypt(flipped);
    ASSERT_FALSE(bad.has_value());
    EXPECT_EQ(bad.error().code(), Code::kIntegrityFailure) << bad.error().ToString();
  }
  // A storage key is no escrow key: refused at load, naming the file.
  auto wrong = LoadTpmEscrowKey({.key_id = "escrow-1",
                                 .tcti = hsm_->tcti(),
                                 .parent_handle = 0x81000001,
                                 .public_path = pub_,
                                 .private_path = priv_,
                                 .certificate_path = cert_},
                                Env::Default());
  ASSERT_FALSE(wrong.has_value());
  EXPECT_NE(wrong.error().message().find(pub_), std::string::npos) << wrong.error().ToString();
}

}  // namespace
}  // namespace tpmma::server
