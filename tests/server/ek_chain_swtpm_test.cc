// SPDX-License-Identifier: GPL-2.0-or-later
// Authenticate (server/auth.h) with a real swtpm EK whose intermediates are given only to the
// MA (trust.ek_intermediates): swtpm's own root -> intermediate -> EK chain, and a chain
// root -> int1 -> int2 -> EK made here over the swtpm EK public; the endpoint sends none.
#include <gtest/gtest.h>

#include <openssl/hmac.h>

#include <string>
#include <vector>

#include "server/auth.h"
#include "server/pki.h"
#include "storage/sqlite_vault.h"
#include "tests/server/ek_test_certs.h"
#include "tests/support/status_testing.h"
#include "tests/support/swtpm.h"
#include "tests/support/testutil.h"
#include "tpm/esys/esys.h"
#include "tpm/marshal.h"
#include "tpm/public.h"

namespace tpmma::server {
namespace {

using testing::Spit;
using testing::TempDir;

using Ca = TestCa;

Ca MakeCa(const TempDir& dir, const std::string& cn, const Ca* issuer) {
  return MakeTestCa(dir, cn, issuer);
}

class EkChainTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    t_ = testing::SharedSwtpm(0, &why);
    if (t_ == nullptr) GTEST_SKIP() << why;
    auto tpm = esys::Tpm::Open(t_->tcti());
    ASSERT_OK(tpm);
    tpm_ = std::move(*tpm);
    ASSERT_OK_AND_ASSIGN(ek_, tpm_->CreateEk());
    ASSERT_OK_AND_ASSIGN(ek_pub_, tpm_->ReadPublic(ek_));
    ASSERT_OK_AND_ASSIGN(ek_cert_, tpm_->ReadEkCertificate());
    ASSERT_OK_AND_ASSIGN(ak_blob_, tpm_->CreateAk(ek_, esys::KeyAlg::kEccP256));
    ASSERT_OK_AND_ASSIGN(vault_, storage::SqliteVault::Open(dir_.File("vault.db")));
  }

  Result<std::unique_ptr<Authenticator>> Auth(std::vector<std::string> roots,
                                              std::vector<std::string> pool) {
    AuthOptions o;
    o.ek_roots = std::move(roots);
    o.ek_intermediates = std::move(pool);
    return Authenticator::Create(o, vault_.get(), Env::Default());
  }

  // Begin with `cert` and no intermediates; then the credential activated and Complete.
  Status Authenticate(Authenticator& auth, const Bytes& cert) {
    BeginRequest r;
    r.ek_public = ek_pub_.marshalled;
    r.ek_certificate = cert;
    TPMMA_ASSIGN_OR_RETURN(r.ak_public, tpm::Marshal(ak_blob_.public_area));
    TPMMA_ASSIGN_OR_RETURN(BeginResult b, auth.Begin(r));
    TPMMA_ASSIGN_OR_RETURN(esys::Object ak, tpm_->Load(ek_, ak_blob_));
    TPMMA_ASSIGN_OR_RETURN(auto blob, tpm::Unmarshal<TPM2B_ID_OBJECT>(b.credential_blob));
    TPMMA_ASSIGN_OR_RETURN(auto secret, tpm::Unmarshal<TPM2B_ENCRYPTED_SECRET>(b.encrypted_secret));
    TPMMA_ASSIGN_OR_RETURN(SecureBytes s, tpm_->ActivateCredential(ak, ek_, blob, secret));
    Bytes proof(32);
    unsigned int len = 0;
    HMAC(EVP_sha256(), s.data(), static_cast<int>(s.size()), b.challenge_id.data(),
         b.challenge_id.size(), proof.data(), &len);
    std::string platform;
    TPMMA_ASSIGN_OR_RETURN(CompleteResult done,
                           auth.Complete({b.challenge_id, proof, {}, {}, {}}, &platform));
    return done.token.empty() ? Status(Code::kInternal, "no token") : Status::Ok();
  }

  // An EK certificate over this TPM's EK public, issued by `issuer`.
  Bytes EkCertFrom(const Ca& issuer) {
    auto key = tpm::PublicToEvp(ek_pub_.public_area.publicArea);
    EXPECT_TRUE(key.has_value());
    TestCa leaf = MakeTestLeaf(dir_, "swtpm EK", key->get(), issuer);
    return *CertificateToDer(leaf.cert.get());
  }

  TempDir dir_;
  testing::Swtpm* t_ = nullptr;
  std::unique_ptr<esys::Tpm> tpm_;
  esys::Object ek_;
  esys::PublicInfo ek_pub_;
  Bytes ek_cert_;
  esys::KeyBlob ak_blob_;
  std::unique_ptr<storage::SqliteVault> vault_;
};

TEST_F(EkChainTest, SwtpmIntermediateOnlyAtTheMa) {
  ASSERT_OK_AND_ASSIGN(auto auth, Auth({t_->RootCaCertPath()}, {t_->IntermediateCaCertPath()}));
  ASSERT_OK(Authenticate(*auth, ek_cert_));
  // Without the pool: refused, naming the intermediate and the command.
  ASSERT_OK_AND_ASSIGN(auto bare, Auth({t_->RootCaCertPath()}, {}));
  Status st = Authenticate(*bare, ek_cert_);
  EXPECT_EQ(st.code(), Code::kUnauthenticated);
  EXPECT_NE(st.message().find("missing issuer '"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("ma-admin ek-trust add --intermediate FILE"), std::string::npos);
}

TEST_F(EkChainTest, TwoIntermediatesOnlyAtTheMa) {
  Ca root = MakeCa(dir_, "Test EK Root", nullptr);
  Ca int1 = MakeCa(dir_, "Test EK Int 1", &root);
  Ca int2 = MakeCa(dir_, "Test EK Int 2", &int1);
  const Bytes cert = EkCertFrom(int2);
  ASSERT_OK_AND_ASSIGN(auto auth, Auth({root.file}, {int1.file, int2.file}));
  ASSERT_OK(Authenticate(*auth, cert));
  ASSERT_OK_AND_ASSIGN(auto half, Auth({root.file}, {int1.file}));
  Status st = Authenticate(*half, cert);
  EXPECT_EQ(st.code(), Code::kUnauthenticated);
  EXPECT_NE(st.message().find("missing issuer 'CN=Test EK Int 2'"), std::string::npos)
      << st.message();
  // The pool is never an anchor: the whole chain in it, a root the MA does not trust.
  ASSERT_OK_AND_ASSIGN(auto pool_only,
                       Auth({t_->RootCaCertPath()}, {int1.file, int2.file, root.file}));
  st = Authenticate(*pool_only, cert);
  EXPECT_EQ(st.code(), Code::kUnauthenticated);
  EXPECT_NE(st.message().find("root 'CN=Test EK Root' is not a trusted EK root"), std::string::npos)
      << st.message();
}

}  // namespace
}  // namespace tpmma::server
