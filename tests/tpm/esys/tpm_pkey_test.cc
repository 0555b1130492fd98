// SPDX-License-Identifier: GPL-2.0-or-later
// The TPM-backed EVP_PKEY (tpm/esys/tpm_pkey.h) on swtpm: Migration Packages signed by
// an RSA-2048 and an ECDSA-P256 TPM key through schema::SignPackage, with no help from
// the caller, verify with schema::PackageReader and with the xmlsec1 CLI; the key
// behaves as an ordinary OpenSSL key for public-key work and never gives up a private half.
#include <gtest/gtest.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/provider.h>
#include <openssl/x509.h>

#include <memory>
#include <string>
#include <vector>

#include "common/openssl.h"
#include "schema/package.h"
#include "schema/package_xml.h"
#include "tests/support/status_testing.h"
#include "tests/support/swtpm.h"
#include "tpm/esys/esys.h"
#include "tpm/esys/tpm_pkey.h"
#include "tpm/public.h"

namespace tpmma::esys {
namespace {

using tpmma::testing::RunCommand;
using tpmma::testing::Swtpm;
using tpmma::testing::TempDir;

// Made once per binary: an ECC SRK (fast), an ECC MRK, and one signing child of each kind.
struct World {
  Swtpm* swtpm = nullptr;
  KeyBlob mrk;
  KeyBlob ecc;
  KeyBlob rsa;
};

std::string BuildWorld(World& w) {
  std::string error;
  if ((w.swtpm = testing::SharedSwtpm(0, &error)) == nullptr) return error;
  auto build = [&]() -> Status {
    TPMMA_ASSIGN_OR_RETURN(auto tpm, Tpm::Open(w.swtpm->tcti()));
    TPMMA_ASSIGN_OR_RETURN(Object srk, tpm->GetOrCreateSrk(KeyAlg::kEccP256));
    // Any Name will do as the MRK's duplication target here.
    EvpPkeyPtr ma(EVP_EC_gen("P-256"));
    TPMMA_ASSIGN_OR_RETURN(TPM2B_PUBLIC ma_pub, tpm::PublicFromEvp(ma.get(), {}));
    TPMMA_ASSIGN_OR_RETURN(Bytes ma_name, tpm::ComputeName(ma_pub.publicArea));
    TPMMA_ASSIGN_OR_RETURN(w.mrk, tpm->CreateMrk(srk, ma_name, KeyAlg::kEccP256));
    TPMMA_ASSIGN_OR_RETURN(Object mrk, tpm->Load(srk, w.mrk));
    TPMMA_ASSIGN_OR_RETURN(w.ecc, tpm->CreateChild(mrk, ChildType::kEccSign));
    TPMMA_ASSIGN_OR_RETURN(w.rsa, tpm->CreateChild(mrk, ChildType::kRsaSign));
    return Status::Ok();
  };
  Status s = build();
  return s.ok() ? "" : s.ToString();
}

const World* GetWorld(std::string* err, bool* skip) {
  return testing::BuildOnce(&BuildWorld, err, skip);
}

schema::MigrationPackage SamplePackage() {
  schema::MigrationPackage p;
  p.package_id = "3f1c2a9e-7b4d-4e2f-9a1b-0c8d7e6f5a4b";
  p.source_platform_id = "000b" + std::string(64, 'a');
  p.creation_time = 1795334400;
  p.mrk.public_area = Bytes(280, 3);
  p.mrk.duplicate = Bytes(150, 4);
  p.mrk.encrypted_seed = Bytes(258, 5);
  schema::ChildKey child;
  child.key_id = "00000000-0000-4000-8000-000000000001";
  child.label = "vpn key";
  child.public_area = Bytes(90, 1);
  child.private_area = Bytes(126, 2);
  p.child_keys = {child};
  schema::RecoveryCodeCustody rc;
  rc.salt = Bytes(16, 9);
  rc.n = 1 << 15;
  rc.r = 8;
  rc.p = 1;
  p.custody = rc;
  return p;
}

std::string PublicPem(EVP_PKEY* key) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (PEM_write_bio_PUBKEY(bio.get(), key) != 1) return "";
  char* data = nullptr;
  long len = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<size_t>(len));
}

Bytes Der(EVP_PKEY* key) {
  const int len = i2d_PUBKEY(key, nullptr);
  if (len <= 0) return {};
  Bytes out(static_cast<size_t>(len));
  unsigned char* p = out.data();
  i2d_PUBKEY(key, &p);
  return out;
}

class TpmPkeyTest : public ::testing::TestWithParam<ChildType> {
 protected:
  void SetUp() override {
    std::string err;
    bool skip = false;
    w_ = GetWorld(&err, &skip);
    if (skip) GTEST_SKIP() << "swtpm not available: " << err;
    ASSERT_NE(w_, nullptr) << err;
    auto tpm = Tpm::Open(w_->swtpm->tcti());
    ASSERT_TRUE(tpm.has_value()) << tpm.error().ToString();
    tpm_ = std::move(*tpm);
    ASSERT_OK_AND_ASSIGN(Object srk, tpm_->GetOrCreateSrk(KeyAlg::kEccP256));
    ASSERT_OK_AND_ASSIGN(Object mrk, tpm_->Load(srk, w_->mrk));
    const KeyBlob& blob = rsa() ? w_->rsa : w_->ecc;
    ASSERT_OK_AND_ASSIGN(Object key, tpm_->Load(mrk, blob));
    ASSERT_OK_AND_ASSIGN(public_, tpm::PublicToEvp(blob.public_area.publicArea));
    ASSERT_OK_AND_ASSIGN(pkey_, MakeTpmSigningKey(*tpm_, std::move(key)));
  }
  void TearDown() override {
    pkey_.reset();  // flushes its object, so that the check below sees none
    if (tpm_) {
      auto handles = tpm_->TransientHandles();
      ASSERT_TRUE(handles.has_value());
      EXPECT_TRUE(handles->empty()) << handles->size() << " transient objects left";
    }
    tpm_.reset();
  }
  bool rsa() const { return GetParam() == ChildType::kRsaSign; }

  const World* w_ = nullptr;
  std::unique_ptr<Tpm> tpm_;
  EvpPkeyPtr public_;  // the same key, made from the TPM public area alone
  EvpPkeyPtr pkey_;    // TPM-backed
  TempDir dir_;
};

TEST_P(TpmPkeyTest, SignsMigrationPackageVerifiedByReaderAndXmlsecCli) {
  const schema::MigrationPackage model = SamplePackage();
  // No caller workaround: the key as MakeTpmSigningKey returns it.
  ASSERT_OK_AND_ASSIGN(Bytes signed_bytes, schema::SignPackage(model, pkey_.get()));
  const std::string xml(signed_bytes.begin(), signed_bytes.end());
  EXPECT_NE(xml.find(rsa() ? "xmldsig-more#rsa-sha256" : "xmldsig-more#ecdsa-sha256"),
            std::string::npos);

  ASSERT_OK_AND_ASSIGN(auto reader, schema::PackageReader::Open(signed_bytes));
  ASSERT_OK_AND_ASSIGN(schema::MigrationPackage read, reader.Verify(public_.get()));
  EXPECT_EQ(read, model);
  // Another key of the same kind does not verify it.
  EvpPkeyPtr other(rsa() ? EVP_RSA_gen(2048) : EVP_EC_gen("P-256"));
  EXPECT_FALSE(reader.Verify(other.get()).has_value());

  if (RunCommand({"xmlsec1", "--version"}).exit_code != 0) GTEST_SKIP() << "no xmlsec1 CLI";
  const std::string pem = dir_.File("pub.pem");
  testing::WriteFileOrDie(pem, View(PublicPem(public_.get())));
  const std::string doc = dir_.File("signed.xml");
  testing::WriteFileOrDie(doc, signed_bytes);
  auto r = RunCommand({"xmlsec1", "--verify", "--pubkey-pem", pem, doc});
  EXPECT_EQ(r.exit_code, 0) << r.output;
  std::string tampered = xml;
  const size_t at = tampered.find(">vpn key<");
  ASSERT_NE(at, std::string::npos);
  tampered.replace(at, 9, ">vpn kez<");
  testing::WriteFileOrDie(doc, View(tampered));
  r = RunCommand({"xmlsec1", "--verify", "--pubkey-pem", pem, doc});
  EXPECT_NE(r.exit_code, 0) << r.output;
}

TEST_P(TpmPkeyTest, IsAnOrdinaryKeyForPublicWork) {
  EXPECT_EQ(EVP_PKEY_get_base_id(pkey_.get()), rsa() ? EVP_PKEY_RSA : EVP_PKEY_EC);
  EXPECT_EQ(EVP_PKEY_is_a(pkey_.get(), rsa() ? "RSA" : "EC"), 1);
  EXPECT_EQ(EVP_PKEY_get_bits(pkey_.get()), rsa() ? 2048 : 256);
  EXPECT_EQ(EVP_PKEY_get_size(pkey_.get()), EVP_PKEY_get_size(public_.get()));
  // Exports its public half: DER/PEM SubjectPublicKeyInfo and public parameters.
  EXPECT_EQ(Der(pkey_.get()), Der(public_.get()));
  EXPECT_EQ(PublicPem(pkey_.get()), PublicPem(public_.get()));
  OSSL_PARAM* params = nullptr;
  EXPECT_EQ(EVP_PKEY_todata(pkey_.get(), EVP_PKEY_PUBLIC_KEY, &params), 1);
  OSSL_PARAM_free(params);
  EXPECT_EQ(EVP_PKEY_eq(pkey_.get(), public_.get()), 1);
}

TEST_P(TpmPkeyTest, NeverGivesUpAPrivateHalf) {
  OSSL_PARAM* params = nullptr;
  EXPECT_NE(EVP_PKEY_todata(pkey_.get(), EVP_PKEY_KEYPAIR, &params), 1);
  OSSL_PARAM_free(params);
  BioPtr bio(BIO_new(BIO_s_mem()));
  EXPECT_NE(PEM_write_bio_PrivateKey(bio.get(), pkey_.get(), nullptr, nullptr, 0, nullptr, nullptr),
            1);
  if (rsa()) {
    // xmlsec 1.2.x asks for d to decide that the key can sign; it reads back as 0, which no
    // RSA key has, never as a usable exponent.
    BIGNUM* d = nullptr;
    ASSERT_EQ(EVP_PKEY_get_bn_param(pkey_.get(), "d", &d), 1);
    EXPECT_TRUE(BN_is_zero(d));
    BN_free(d);
  } else {
    BIGNUM* order = nullptr;
    ASSERT_EQ(EVP_PKEY_get_bn_param(pkey_.get(), "order", &order), 1);
    EXPECT_EQ(BN_num_bits(order), 256);
    BN_free(order);
    BIGNUM* priv = nullptr;
    EXPECT_NE(EVP_PKEY_get_bn_param(pkey_.get(), "priv", &priv), 1);
    BN_free(priv);
  }
  ERR_clear_error();
}

TEST_P(TpmPkeyTest, SignsWithEvpApisVerifiedByThePublicKey) {
  const Bytes message = ToBytes("proof that the key works");
  std::vector<const EVP_MD*> mds = {EVP_sha256()};
  if (!rsa()) mds.push_back(EVP_sha384());
  for (const EVP_MD* md : mds) {
    EvpMdCtxPtr ctx(EVP_MD_CTX_new());
    ASSERT_EQ(EVP_DigestSignInit(ctx.get(), nullptr, md, nullptr, pkey_.get()), 1);
    size_t len = 0;
    ASSERT_EQ(EVP_DigestSign(ctx.get(), nullptr, &len, message.data(), message.size()), 1);
    Bytes sig(len);
    ASSERT_EQ(EVP_DigestSign(ctx.get(), sig.data(), &len, message.data(), message.size()), 1);
    sig.resize(len);
    EvpMdCtxPtr vctx(EVP_MD_CTX_new());
    ASSERT_EQ(EVP_DigestVerifyInit(vctx.get(), nullptr, md, nullptr, public_.get()), 1);
    EXPECT_EQ(EVP_DigestVerify(vctx.get(), sig.data(), sig.size(), message.data(), message.size()),
              1);
    // Verification through the TPM key itself is public-key work, done in software.
    EvpMdCtxPtr tctx(EVP_MD_CTX_new());
    ASSERT_EQ(EVP_DigestVerifyInit(tctx.get(), nullptr, md, nullptr, pkey_.get()), 1);
    EXPECT_EQ(EVP_DigestVerify(tctx.get(), sig.data(), sig.size(), message.data(), message.size()),
              1);
  }
  // Streaming (update/final) as EVP_DigestSignFinal callers do.
  EvpMdCtxPtr ctx(EVP_MD_CTX_new());
  ASSERT_EQ(EVP_DigestSignInit(ctx.get(), nullptr, EVP_sha256(), nullptr, pkey_.get()), 1);
  ASSERT_EQ(EVP_DigestSignUpdate(ctx.get(), message.data(), 5), 1);
  ASSERT_EQ(EVP_DigestSignUpdate(ctx.get(), message.data() + 5, message.size() - 5), 1);
  size_t len = 0;
  ASSERT_EQ(EVP_DigestSignFinal(ctx.get(), nullptr, &len), 1);
  Bytes sig(len);
  ASSERT_EQ(EVP_DigestSignFinal(ctx.get(), sig.data(), &len), 1);
  sig.resize(len);
  EvpMdCtxPtr vctx(EVP_MD_CTX_new());
  ASSERT_EQ(EVP_DigestVerifyInit(vctx.get(), nullptr, EVP_sha256(), nullptr, public_.get()), 1);
  EXPECT_EQ(EVP_DigestVerify(vctx.get(), sig.data(), sig.size(), message.data(), message.size()),
            1);

  // What the TPM key's scheme cannot make is refused, not silently made differently.
  EvpMdCtxPtr bad(EVP_MD_CTX_new());
  EXPECT_NE(EVP_DigestSignInit(bad.get(), nullptr, EVP_sha1(), nullptr, pkey_.get()), 1);
  if (rsa()) {
    EvpMdCtxPtr pss(EVP_MD_CTX_new());
    EVP_PKEY_CTX* pctx = nullptr;
    ASSERT_EQ(EVP_DigestSignInit(pss.get(), &pctx, EVP_sha256(), nullptr, pkey_.get()), 1);
    EXPECT_LE(EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING), 0);
  }
  ERR_clear_error();
}

TEST_P(TpmPkeyTest, SignsCertificateRequest) {
  // X.509 signing asks the signature for its AlgorithmIdentifier.
  std::unique_ptr<X509_REQ, OpensslDeleter<X509_REQ, X509_REQ_free>> req(X509_REQ_new());
  ASSERT_TRUE(req);
  ASSERT_EQ(X509_REQ_set_pubkey(req.get(), public_.get()), 1);
  X509_NAME* name = X509_REQ_get_subject_name(req.get());
  ASSERT_EQ(
      X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                                 reinterpret_cast<const unsigned char*>("endpoint"), -1, -1, 0),
      1);
  ASSERT_GT(X509_REQ_sign(req.get(), pkey_.get(), EVP_sha256()), 0);
  EXPECT_EQ(X509_REQ_verify(req.get(), public_.get()), 1);
}

TEST_P(TpmPkeyTest, SoftwareKeysElsewhereInTheProcessAreUntouched) {
  // The provider lives in its own library context: the default context still hands out
  // the default provider's RSA and ECDSA.
  for (const char* alg : {"RSA", "ECDSA"}) {
    EVP_SIGNATURE* sig = EVP_SIGNATURE_fetch(nullptr, alg, nullptr);
    ASSERT_NE(sig, nullptr);
    EXPECT_STREQ(OSSL_PROVIDER_get0_name(EVP_SIGNATURE_get0_provider(sig)), "default");
    EVP_SIGNATURE_free(sig);
  }
  EvpPkeyPtr soft(rsa() ? EVP_RSA_gen(2048) : EVP_EC_gen("P-256"));
  ASSERT_OK_AND_ASSIGN(Bytes signed_bytes, schema::SignPackage(SamplePackage(), soft.get()));
  ASSERT_OK_AND_ASSIGN(auto reader, schema::PackageReader::Open(signed_bytes));
  EXPECT_TRUE(reader.Verify(soft.get()).has_value());
}

TEST_P(TpmPkeyTest, OutlivesItsTpmSignsAPackageAndIsFlushedWhenFreed) {
  // The EVP_PKEY shares the ESAPI context: the Tpm it was made with can go first.
  tpm_.reset();
  ASSERT_OK_AND_ASSIGN(Bytes signed_bytes, schema::SignPackage(SamplePackage(), pkey_.get()));
  ASSERT_OK_AND_ASSIGN(auto reader, schema::PackageReader::Open(signed_bytes));
  EXPECT_TRUE(reader.Verify(public_.get()).has_value());
  pkey_.reset();  // the last holder: its TPM object is flushed, the connection closed
  // swtpm serves one connection at a time, so this only gets through once it closed;
  // TearDown checks with it that no transient object is left.
  auto tpm = Tpm::Open(w_->swtpm->tcti());
  ASSERT_OK(tpm);
  tpm_ = std::move(*tpm);
}

INSTANTIATE_TEST_SUITE_P(Keys, TpmPkeyTest,
                         ::testing::Values(ChildType::kRsaSign, ChildType::kEccSign),
                         [](const auto& info) {
                           return std::string(info.param == ChildType::kRsaSign ? "Rsa2048"
                                                                                : "EcdsaP256");
                         });

}  // namespace
}  // namespace tpmma::esys
