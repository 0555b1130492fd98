// SPDX-License-Identifier: GPL-2.0-or-later
// The SRK a platform's AK certifies in Authenticate Complete (issue #15: the helpdesk sees the
// new TPM's certified SRK before it approves a restore to it), on the domain functions with a
// real SQLite vault and swtpm: stored with the time when it verifies, kept by a Complete
// without one; refused, with nothing stored, when certified over another nonce, when the
// public area is not the one certified, or when the key is no storage key.
#include <functional>

#include <gtest/gtest.h>

#include "tests/server/ma_platform_fixture.h"

namespace tpmma::server {
namespace {

class SrkCertificationTest : public MaPlatformTest {
 protected:
  void SetUp() override {
    MaPlatformTest::SetUp();
    if (IsSkipped()) return;
    ASSERT_OK_AND_ASSIGN(m_, MakeInProcessMa(cfg_, &env_));
    auto srk = tpm_->GetOrCreateSrk(esys::KeyAlg::kEccP256);
    ASSERT_OK(srk);
    srk_ = std::move(*srk);
    auto info = tpm_->ReadPublic(srk_);
    ASSERT_OK(info);
    srk_public_ = info->marshalled;
  }

  // What the test sends as the SRK, given the AK and the challenge's nonce.
  using MakeProof =
      std::function<std::optional<CertifiedKeyProof>(const esys::Object& ak, const Bytes& nonce)>;

  // Begin + ActivateCredential + Complete with the proof `make` returns.
  Status Authenticate(const MakeProof& make, std::string* platform) {
    AuthOnlyCalls c(m_.ops.get());
    Activated a;
    TPMMA_RETURN_IF_ERROR(Activate(c, &ak_blob_, &ak_pub_, &a));
    CompleteRequest r;
    r.challenge_id = a.begun.challenge_id;
    r.proof = a.proof;
    r.srk = make(a.ak, a.begun.nonce);
    CompleteResult got;
    TPMMA_RETURN_IF_ERROR(c.Complete(r, &got));
    *platform = got.platform_id;
    return Status::Ok();
  }

  // `key` certified by the AK over `nonce`, sent as `public_area` (its own if empty).
  CertifiedKeyProof Certified(const esys::Object& key, const esys::Object& ak, const Bytes& nonce,
                              Bytes public_area = {}) {
    auto cert = tpm_->Certify(key, ak, nonce);
    EXPECT_TRUE(cert.has_value());
    if (public_area.empty()) public_area = tpm_->ReadPublic(key)->marshalled;
    return CertifiedKeyProof{public_area, Tpm2bAttest(cert->attest), cert->signature};
  }

  MakeProof TheSrk() {
    return
        [this](const esys::Object& ak, const Bytes& nonce) { return Certified(srk_, ak, nonce); };
  }

  std::string LastCompleteDetail() {
    storage::AuditFilter f;
    f.action = "Authenticate.Complete";
    auto page = m_.vault->ListAudit(f);
    EXPECT_TRUE(page.has_value());
    return page && !page->records.empty() ? page->records.back().event.detail : "";
  }

  void ExpectNoPlatform() {
    auto page = m_.vault->ListPlatforms(10, "");
    ASSERT_OK(page);
    EXPECT_TRUE(page->platforms.empty());  // the platform's first Complete: nothing enrolled
  }

  InProcessMa m_;
  esys::KeyBlob ak_blob_;
  Bytes ak_pub_;
  esys::Object srk_;
  Bytes srk_public_;
};

TEST_F(SrkCertificationTest, TheCertifiedSrkIsStoredWithItsTimeAndKeptWithoutANewOne) {
  std::string platform;
  ASSERT_OK(Authenticate(TheSrk(), &platform));
  ASSERT_OK_AND_ASSIGN(storage::Platform p, m_.vault->GetPlatform(platform));
  EXPECT_EQ(p.srk_public, srk_public_);
  EXPECT_EQ(p.srk_certified_at, env_.NowUnixSeconds());
  EXPECT_EQ(LastCompleteDetail(), "session opened; SRK certified");

  // An older lms sends none: the MA keeps what it verified, and when.
  const int64_t certified_at = p.srk_certified_at;
  env_.offset += 3600;
  ASSERT_OK(Authenticate([](const auto&, const auto&) { return std::nullopt; }, &platform));
  ASSERT_OK_AND_ASSIGN(p, m_.vault->GetPlatform(platform));
  EXPECT_EQ(p.srk_public, srk_public_);
  EXPECT_EQ(p.srk_certified_at, certified_at);
  EXPECT_EQ(p.last_seen_at, env_.NowUnixSeconds());
  EXPECT_EQ(LastCompleteDetail(), "session opened");
}

TEST_F(SrkCertificationTest, AnSrkCertifiedOverAnotherNonceIsRefusedAndNothingIsStored) {
  std::string platform;
  Status s = Authenticate(
      [this](const esys::Object& ak, const Bytes&) { return Certified(srk_, ak, Bytes(32, 0x42)); },
      &platform);
  EXPECT_EQ(s.code(), Code::kInvalidArgument) << s.ToString();
  EXPECT_NE(s.message().find("StorageRootKey certification"), std::string::npos) << s.message();
  ExpectNoPlatform();
}

TEST_F(SrkCertificationTest, APublicAreaOtherThanTheOneCertifiedIsRefused) {
  // The AK certifies the SRK; the platform sends another key's public area with it.
  auto other = tpm_->Create(srk_, SigningTemplate());
  ASSERT_OK(other);
  const Bytes other_public = *tpm::Marshal(other->public_area);
  std::string platform;
  Status s =
      Authenticate([&](const esys::Object& ak,
                       const Bytes& nonce) { return Certified(srk_, ak, nonce, other_public); },
                   &platform);
  EXPECT_NE(s.code(), Code::kOk);
  EXPECT_NE(s.message().find("StorageRootKey certification"), std::string::npos) << s.message();
  ExpectNoPlatform();
}

TEST_F(SrkCertificationTest, ASigningKeyPassedOffAsTheSrkIsRefused) {
  auto blob = tpm_->Create(srk_, SigningTemplate());
  ASSERT_OK(blob);
  auto key = tpm_->Load(srk_, *blob);
  ASSERT_OK(key);
  std::string platform;
  Status s = Authenticate(
      [&](const esys::Object& ak, const Bytes& nonce) { return Certified(*key, ak, nonce); },
      &platform);
  EXPECT_EQ(s.code(), Code::kInvalidArgument) << s.ToString();
  EXPECT_NE(s.message().find("StorageRootKey is not a storage key"), std::string::npos)
      << s.message();
  ExpectNoPlatform();
}

}  // namespace
}  // namespace tpmma::server
