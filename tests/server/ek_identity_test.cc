// SPDX-License-Identifier: GPL-2.0-or-later
// One TPM, one platform (issue 12), on the domain functions with a real swtpm and SQLite
// vault: the swtpm's own EK key under public areas that are not a TCG EK template (other
// attributes, empty authPolicy, nameAlg SHA-384) is refused at Begin; under an encoding the
// administrator allowed (trust.ek_templates) it is still the same platform's key, so it is
// refused while that platform is enrolled and stays refused after that platform is revoked,
// although the real TPM activates the credential; EK certificates with NV padding (0x00,
// 0xFF) are accepted and stored without it, other trailing bytes refused; platforms stored
// without an EK key id get it at start-up.
#include <gtest/gtest.h>

#include "server/ek_identity.h"
#include "server/ma_key.h"
#include "server/ma_operations.h"
#include "storage/sqlite_vault.h"
#include "tests/server/ma_platform_fixture.h"

namespace tpmma::server {
namespace {

using testing::TempDir;

class EkIdentityTest : public MaPlatformTest {
 protected:
  void SetUp() override {
    MaPlatformTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    auto ek = tpm_->CreateEk();
    ASSERT_OK(ek);
    ek_ = std::move(*ek);
    auto info = tpm_->ReadPublic(ek_);
    ASSERT_OK(info);
    ek_info_ = *info;
    auto cert = tpm_->ReadEkCertificate();
    ASSERT_OK(cert);
    cert_ = *cert;
    auto ak = tpm_->CreateAk(ek_, esys::KeyAlg::kRsa2048);
    ASSERT_OK(ak);
    ak_blob_ = *ak;
    ak_pub_ = *tpm::Marshal(ak->public_area);
  }

  // The swtpm's EK public area, changed by `edit`; its key (unique) stays the TPM's.
  template <typename F>
  Bytes Reencoded(F edit) {
    TPM2B_PUBLIC p = ek_info_.public_area;
    edit(p.publicArea);
    return *tpm::Marshal(p);
  }

  Status BeginWith(MaCalls& c, const Bytes& ek_public, const Bytes& cert, Begun* out,
                   std::string* platform = nullptr) {
    BeginRequest r{ek_public, cert, {intermediate_}, ak_pub_};
    BeginResult got;
    TPMMA_RETURN_IF_ERROR(c.Begin(r, &got));
    out->challenge_id = got.challenge_id;
    out->blob = *tpm::Unmarshal<TPM2B_ID_OBJECT>(got.credential_blob);
    out->secret = *tpm::Unmarshal<TPM2B_ENCRYPTED_SECRET>(got.encrypted_secret);
    if (platform != nullptr) *platform = got.platform_id;
    return Status::Ok();
  }

  // Begin with these bytes, activate the credential on the real TPM, Complete.
  Status Enrol(MaCalls& c, const Bytes& ek_public, const Bytes& cert, std::string* platform) {
    Begun b;
    TPMMA_RETURN_IF_ERROR(BeginWith(c, ek_public, cert, &b));
    TPMMA_ASSIGN_OR_RETURN(esys::Object ak, tpm_->Load(ek_, ak_blob_));
    TPMMA_ASSIGN_OR_RETURN(SecureBytes secret, tpm_->ActivateCredential(ak, ek_, b.blob, b.secret));
    std::string token;
    return Complete(c, b.challenge_id, Proof(secret, b.challenge_id), nullptr, nullptr, &token,
                    platform);
  }

  esys::Object ek_;
  esys::PublicInfo ek_info_;
  Bytes cert_;
  esys::KeyBlob ak_blob_;
  Bytes ak_pub_;
};

TEST_F(EkIdentityTest, TheSameKeyUnderANonTemplatePublicAreaIsRefused) {
  auto ops = MakeInProcessMa(cfg_, &env_);
  ASSERT_OK(ops);
  AuthOnlyCalls c(ops->ops.get());
  struct Case {
    const char* what;
    Bytes ek_public;
    std::string expected;
  } cases[] = {
      {"changed attributes",
       Reencoded([](TPMT_PUBLIC& p) { p.objectAttributes |= TPMA_OBJECT_USERWITHAUTH; }),
       "objectAttributes 0x000300f2 (expected 0x000300b2)"},
      {"empty authPolicy", Reencoded([](TPMT_PUBLIC& p) { p.authPolicy.size = 0; }),
       "authPolicy empty (expected 837197674484b3f8...)"},
      {"nameAlg SHA-384", Reencoded([](TPMT_PUBLIC& p) { p.nameAlg = TPM2_ALG_SHA384; }),
       "nameAlg SHA-384 (expected SHA-256)"},
  };
  for (const Case& k : cases) {
    Begun b;
    Status s = BeginWith(c, k.ek_public, cert_, &b);
    EXPECT_EQ(s.code(), Code::kUnauthenticated) << k.what << ": " << s.ToString();
    EXPECT_NE(s.message().find("EK public is not a TCG EK template"), std::string::npos)
        << s.message();
    EXPECT_NE(s.message().find(k.expected), std::string::npos) << k.what << ": " << s.message();
  }
  std::string platform;
  ASSERT_OK(Enrol(c, ek_info_.marshalled, cert_, &platform));  // the template itself: fine
  EXPECT_EQ(platform, HexEncode(ek_info_.name));
}

// trust.ek_templates allows one more encoding; the key is what counts for revocation.
TEST_F(EkIdentityTest, ARevokedKeyStaysRevokedUnderAnotherEncoding) {
  const Bytes other =
      Reencoded([](TPMT_PUBLIC& p) { p.objectAttributes |= TPMA_OBJECT_USERWITHAUTH; });
  Config cfg = cfg_;
  cfg.ek_templates = {dir_.File("site-ek.pub")};
  testing::WriteFileOrDie(cfg.ek_templates[0], other);  // unique included: it is not compared
  auto ops = MakeInProcessMa(cfg, &env_);
  ASSERT_OK(ops);
  AuthOnlyCalls c(ops->ops.get());
  std::string first, second;
  ASSERT_OK(Enrol(c, ek_info_.marshalled, cert_, &first));
  Status s = Enrol(c, other, cert_, &second);
  EXPECT_EQ(s.code(), Code::kPermissionDenied) << s.ToString();
  EXPECT_NE(s.message().find("already enrolled as platform " + first), std::string::npos)
      << s.message();

  ASSERT_OK(ops->vault->RevokePlatform(
      first, storage::AuditEvent{env_.NowUnixSeconds(), "operator:t", "RevokePlatform", first, "ok",
                                 "stolen"}));
  s = Enrol(c, ek_info_.marshalled, cert_, &second);
  EXPECT_EQ(s.code(), Code::kPermissionDenied) << s.ToString();
  // The other encoding has another Name, hence another platform id; the TPM still activates
  // the credential made for it, and the MA still refuses it.
  Begun b;
  std::string other_id;
  ASSERT_OK(BeginWith(c, other, cert_, &b, &other_id));
  EXPECT_NE(other_id, first);
  s = Enrol(c, other, cert_, &second);
  EXPECT_EQ(s.code(), Code::kPermissionDenied) << s.ToString();
  EXPECT_NE(s.message().find("is that of revoked platform " + first), std::string::npos)
      << s.message();
  auto never = ops->vault->GetPlatform(other_id);
  ASSERT_FALSE(never.has_value());
  EXPECT_EQ(never.error().code(), Code::kNotFound);
}

TEST_F(EkIdentityTest, EkCertificateWithNvPaddingIsAcceptedOtherTrailingBytesRefused) {
  auto ops = MakeInProcessMa(cfg_, &env_);
  ASSERT_OK(ops);
  AuthOnlyCalls c(ops->ops.get());
  for (uint8_t pad : {0x00, 0xff}) {
    Bytes padded = cert_;
    padded.resize(cert_.size() + 200, pad);
    std::string platform;
    ASSERT_OK(Enrol(c, ek_info_.marshalled, padded, &platform));
    auto stored = ops->vault->GetPlatform(platform);
    ASSERT_OK(stored);
    EXPECT_EQ(stored->ek_certificate, cert_);  // kept without the padding
  }
  for (Bytes tail : {Bytes{0x00, 0x01}, Bytes{0x30, 0x00}, Bytes{0xff, 0xfe, 0xff}}) {
    Bytes bad = cert_;
    bad.insert(bad.end(), tail.begin(), tail.end());
    Begun b;
    Status s = BeginWith(c, ek_info_.marshalled, bad, &b);
    EXPECT_EQ(s.code(), Code::kMalformed) << s.ToString();
    EXPECT_NE(s.message().find("not NV padding"), std::string::npos) << s.message();
  }
  Begun b;
  Bytes cut(cert_.begin(), cert_.end() - 1);
  EXPECT_CODE(BeginWith(c, ek_info_.marshalled, cut, &b), Code::kMalformed);
}

// Rows from before schema 3 have no EK key id; ma-server fills it in at start-up.
TEST_F(EkIdentityTest, PlatformsStoredWithoutAnEkKeyIdGetItAtStartUp) {
  {
    auto vault = storage::SqliteVault::Open(cfg_.vault_path);
    ASSERT_OK(vault);
    storage::Platform p;
    p.id = HexEncode(ek_info_.name);
    p.ek_public = ek_info_.marshalled;
    p.ek_certificate = cert_;
    p.ak_public = ak_pub_;
    ASSERT_OK((*vault)->UpsertPlatform(p, std::nullopt));
  }
  auto ops = MakeInProcessMa(cfg_, &env_);
  ASSERT_OK(ops);
  auto stored = ops->vault->GetPlatform(HexEncode(ek_info_.name));
  ASSERT_OK(stored);
  auto id = EkKeyId(ek_info_.public_area.publicArea);
  ASSERT_OK(id);
  EXPECT_EQ(stored->ek_key_id, *id);
}

}  // namespace
}  // namespace tpmma::server
