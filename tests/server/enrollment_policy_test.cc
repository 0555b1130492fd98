// SPDX-License-Identifier: GPL-2.0-or-later
// The enrollment policy ([enrollment] policy, server/auth.h EnrollmentPolicy) on the domain
// functions with a real SQLite vault and the swtpm platform: "open" unchanged, "registered"
// (by EK public, by EK certificate, by CSV import; unregistered refused), "approve-first"
// (pending, refused until `ma-admin platforms accept`, then a session), and the CSV import's
// refusals (all or nothing, every bad line named). ma-admin's functions run in process.
#include <gtest/gtest.h>

#include "server/admin_enrollment.h"
#include "server/ek_identity.h"
#include "server/ma_key.h"
#include "server/ma_operations.h"
#include "storage/sqlite_vault.h"
#include "tests/server/ma_platform_fixture.h"

namespace tpmma::server {
namespace {

class EnrollmentPolicyTest : public MaPlatformTest {
 protected:
  void Start(const std::string& policy) {
    m_.ops.reset();  // a second Start (another policy) on the same vault file: ops first
    m_.vault.reset();
    CloseAdminOut();
    cfg_.enrollment_policy = policy;
    ASSERT_OK_AND_ASSIGN(m_, MakeInProcessMa(cfg_, &env_));
    admin_.vault = m_.vault.get();
    admin_.env = &env_;
    admin_.actor = "admin:test";
    admin_.out = std::tmpfile();
  }
  void TearDown() override { CloseAdminOut(); }
  // The tmpfile Start opened; never AdminContext's default, stdout (gtest reports there).
  void CloseAdminOut() {
    if (admin_.out != nullptr && admin_.out != stdout) std::fclose(admin_.out);
    admin_.out = nullptr;
  }

  // Begin + ActivateCredential + Complete (no package-signing key).
  Status Authenticate(std::string* token, std::string* platform) {
    AuthOnlyCalls c(m_.ops.get());
    Activated a;
    TPMMA_RETURN_IF_ERROR(Activate(c, &ak_blob_, &ak_pub_, &a));
    return Complete(c, a.begun.challenge_id, a.proof, nullptr, nullptr, token, platform);
  }

  std::string WriteEkPublic() {
    auto ek = tpm_->CreateEk();
    EXPECT_TRUE(ek.has_value());
    auto info = tpm_->ReadPublic(*ek);
    EXPECT_TRUE(info.has_value());
    const std::string path = dir_.File("ek.pub");
    testing::WriteFileOrDie(path, info->marshalled);
    return path;
  }
  Bytes EkKeyIdOfSwtpm() {
    auto ek = tpm_->CreateEk();
    auto info = tpm_->ReadPublic(*ek);
    auto pub = tpm::Unmarshal<TPM2B_PUBLIC>(info->marshalled);
    return *EkKeyId(pub->publicArea);
  }

  InProcessMa m_;
  AdminContext admin_;
  esys::KeyBlob ak_blob_;
  Bytes ak_pub_;
};

TEST_F(EnrollmentPolicyTest, OpenEnrollsAnyTrustedEk) {
  ASSERT_NO_FATAL_FAILURE(Start("open"));
  std::string token, platform;
  ASSERT_OK(Authenticate(&token, &platform));
  EXPECT_EQ(m_.vault->GetPlatform(platform)->state, storage::PlatformState::kActive);
}

TEST_F(EnrollmentPolicyTest, RegisteredRefusesUnregisteredAndTakesARegisteredEkPublic) {
  ASSERT_NO_FATAL_FAILURE(Start("registered"));
  std::string token, platform;
  Status s = Authenticate(&token, &platform);
  EXPECT_EQ(s.code(), Code::kPermissionDenied) << s.ToString();
  EXPECT_NE(s.message().find("enrollment policy \"registered\""), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("ma-admin platforms register"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find(HexEncode(EkKeyIdOfSwtpm())), std::string::npos) << s.message();
  EXPECT_TRUE(token.empty());

  RegisterOptions o;
  o.ek_public = WriteEkPublic();
  o.label = "alice's laptop";
  ASSERT_OK(RegisterPlatforms(admin_, o));
  ASSERT_OK(Authenticate(&token, &platform));
  EXPECT_FALSE(token.empty());
  auto reg = m_.vault->FindRegistration(EkKeyIdOfSwtpm(), {});
  ASSERT_OK(reg);
  EXPECT_EQ(reg->label, "alice's laptop");
}

TEST_F(EnrollmentPolicyTest, RegisteredTakesARegisteredEkCertificate) {
  ASSERT_NO_FATAL_FAILURE(Start("registered"));
  auto cert = tpm_->ReadEkCertificate();
  ASSERT_OK(cert);
  // As read from NV, padding included: the MA hashes the DER without it.
  Bytes padded = *cert;
  padded.insert(padded.end(), 16, 0xff);
  const std::string path = dir_.File("ek.der");
  testing::WriteFileOrDie(path, padded);
  RegisterOptions o;
  o.ek_cert = path;
  ASSERT_OK(RegisterPlatforms(admin_, o));
  std::string token, platform;
  ASSERT_OK(Authenticate(&token, &platform));
}

TEST_F(EnrollmentPolicyTest, RegisteredTakesACsvImport) {
  ASSERT_NO_FATAL_FAILURE(Start("registered"));
  const std::string csv = dir_.File("fleet.csv");
  testing::WriteFileOrDie(csv, ToBytes("ek_key_id,label\n" + std::string(64, 'a') + ",spare\n" +
                                       HexEncode(EkKeyIdOfSwtpm()) + ",bob's laptop\n"));
  RegisterOptions o;
  o.csv = csv;
  ASSERT_OK(RegisterPlatforms(admin_, o));
  EXPECT_EQ(m_.vault->ListRegistrations()->size(), 2u);
  std::string token, platform;
  ASSERT_OK(Authenticate(&token, &platform));
}

TEST_F(EnrollmentPolicyTest, CsvImportIsAllOrNothingAndNamesEveryBadLine) {
  ASSERT_NO_FATAL_FAILURE(Start("registered"));
  const std::string csv = dir_.File("bad.csv");
  const std::string good = std::string(64, 'b');
  testing::WriteFileOrDie(csv, ToBytes(std::string("ek_cert_sha256,ek_key_id,label\n") +  // 1
                                       "," + good + ",fine\n" +                           // 2
                                       "abcd,,too short\n" +                              // 3
                                       good + "," + good + ",both\n" +                    // 4
                                       ",,neither\n" +                                    // 5
                                       "," + good + "\n" +                                // 6
                                       "," + good + ",\"quoted\"\n"));                    // 7
  RegisterOptions o;
  o.csv = csv;
  Status s = RegisterPlatforms(admin_, o);
  EXPECT_EQ(s.code(), Code::kInvalidArgument);
  for (int line : {3, 4, 5, 6, 7}) {
    EXPECT_NE(s.message().find(csv + ":" + std::to_string(line) + ":"), std::string::npos)
        << line << ": " << s.message();
  }
  EXPECT_EQ(s.message().find(csv + ":2:"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("5 bad line(s), nothing registered"), std::string::npos)
      << s.message();
  EXPECT_TRUE(m_.vault->ListRegistrations()->empty());

  EXPECT_FALSE(ParseRegistrationCsv("label\nx\n", "h.csv", 0).has_value());
  EXPECT_FALSE(ParseRegistrationCsv("ek_key_id,colour\n", "h.csv", 0).has_value());
  EXPECT_FALSE(ParseRegistrationCsv("", "h.csv", 0).has_value());
  EXPECT_FALSE(ParseRegistrationCsv("ek_key_id\n", "h.csv", 0).has_value());
  auto ok = ParseRegistrationCsv(
      "# procurement list\nlabel , ek_cert_sha256\r\nx, " + good + "\r\n\n", "h.csv", 7);
  ASSERT_OK(ok);
  ASSERT_EQ(ok->size(), 1u);
  EXPECT_EQ((*ok)[0].kind, storage::RegistrationKind::kEkCertSha256);
  EXPECT_EQ((*ok)[0].label, "x");

  o = RegisterOptions{};
  EXPECT_CODE(RegisterPlatforms(admin_, o), Code::kInvalidArgument);
  o.csv = csv;
  o.label = "x";
  EXPECT_CODE(RegisterPlatforms(admin_, o), Code::kInvalidArgument);
}

TEST_F(EnrollmentPolicyTest, ApproveFirstLeavesAPendingPlatformUntilAccepted) {
  ASSERT_NO_FATAL_FAILURE(Start("approve-first"));
  std::string token, platform;
  Status s = Authenticate(&token, &platform);
  EXPECT_EQ(s.code(), Code::kPermissionDenied) << s.ToString();
  EXPECT_NE(s.message().find("awaits an operator"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("enrollment policy \"approve-first\""), std::string::npos);
  EXPECT_TRUE(token.empty());
  auto page = m_.vault->ListPlatforms(10, "");
  ASSERT_OK(page);
  ASSERT_EQ(page->platforms.size(), 1u);
  const std::string id = page->platforms[0].id;
  EXPECT_EQ(page->platforms[0].state, storage::PlatformState::kPending);
  EXPECT_NE(s.message().find("ma-admin platforms accept " + id), std::string::npos);

  // Still pending on a retry.
  EXPECT_CODE(Authenticate(&token, &platform), Code::kPermissionDenied);
  ASSERT_OK(AcceptPlatform(admin_, id));
  EXPECT_CODE(AcceptPlatform(admin_, id), Code::kConflict);
  ASSERT_OK(Authenticate(&token, &platform));
  EXPECT_EQ(platform, id);
  EXPECT_FALSE(token.empty());

  storage::AuditFilter f;
  f.page_size = 1000;
  auto audit = m_.vault->ListAudit(f);
  ASSERT_OK(audit);
  int pending = 0, accepted = 0;
  for (const auto& r : audit->records) {
    if (r.event.outcome == "pending") ++pending;
    if (r.event.action == "AcceptPlatform" && r.event.object == id) ++accepted;
  }
  EXPECT_EQ(pending, 1);
  EXPECT_EQ(accepted, 1);
}

// A TPM without an EK certificate (wsdl/migration.wsdl, AuthenticateBegin/EKCertificate).
TEST_F(EnrollmentPolicyTest, NoCertificateIsRefusedUnlessRegisteredSayingWhatToDo) {
  send_ek_certificate_ = false;
  for (const char* policy : {"open", "approve-first"}) {
    ASSERT_NO_FATAL_FAILURE(Start(policy));
    std::string token, platform;
    Status s = Authenticate(&token, &platform);
    EXPECT_EQ(s.code(), Code::kPermissionDenied) << s.ToString();
    EXPECT_NE(s.message().find("sent no EK certificate"), std::string::npos) << s.message();
    EXPECT_NE(s.message().find(std::string("enrollment policy \"") + policy), std::string::npos);
    for (const char* hint : {"lms --ek-cert FILE", "lms ek fetch", "policy = registered",
                             "ma-admin platforms register --ek-public FILE"}) {
      EXPECT_NE(s.message().find(hint), std::string::npos) << hint << ": " << s.message();
    }
    EXPECT_TRUE(token.empty());
    auto page = m_.vault->ListPlatforms(10, "");
    ASSERT_OK(page);
    EXPECT_TRUE(page->platforms.empty());
  }
  storage::AuditFilter f;
  f.page_size = 1000;
  auto audit = m_.vault->ListAudit(f);
  ASSERT_OK(audit);
  int refused = 0;
  for (const auto& r : audit->records) {
    if (r.event.action == "Authenticate.Begin" && r.event.outcome != "ok" &&
        r.event.detail.find("sent no EK certificate") != std::string::npos) {
      ++refused;
    }
  }
  EXPECT_EQ(refused, 2);
}

TEST_F(EnrollmentPolicyTest, NoCertificateEnrollsOnlyByARegisteredEkPublic) {
  ASSERT_NO_FATAL_FAILURE(Start("registered"));
  send_ek_certificate_ = false;
  std::string token, platform;
  Status s = Authenticate(&token, &platform);
  EXPECT_EQ(s.code(), Code::kPermissionDenied) << s.ToString();
  EXPECT_NE(s.message().find("EK public is not registered"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find(HexEncode(EkKeyIdOfSwtpm())), std::string::npos) << s.message();

  // A registration by certificate hash cannot admit it.
  auto cert = tpm_->ReadEkCertificate();
  ASSERT_OK(cert);
  auto trimmed = TrimEkCertificatePadding(*cert);
  ASSERT_OK(trimmed);
  testing::WriteFileOrDie(dir_.File("ek.der"), *trimmed);
  RegisterOptions by_cert;
  by_cert.ek_cert = dir_.File("ek.der");
  ASSERT_OK(RegisterPlatforms(admin_, by_cert));
  s = Authenticate(&token, &platform);
  EXPECT_EQ(s.code(), Code::kPermissionDenied) << s.ToString();
  EXPECT_NE(s.message().find("a registration by EK certificate cannot admit"), std::string::npos)
      << s.message();

  RegisterOptions by_public;
  by_public.ek_public = WriteEkPublic();
  ASSERT_OK(RegisterPlatforms(admin_, by_public));
  ASSERT_OK(Authenticate(&token, &platform));
  EXPECT_FALSE(token.empty());
  auto stored = m_.vault->GetPlatform(platform);
  ASSERT_OK(stored);
  EXPECT_TRUE(stored->ek_certificate.empty());
  EXPECT_EQ(stored->ek_key_id, EkKeyIdOfSwtpm());
  storage::AuditFilter f;
  f.page_size = 1000;
  auto audit = m_.vault->ListAudit(f);
  ASSERT_OK(audit);
  bool begun = false;
  for (const auto& r : audit->records) {
    begun |= r.event.action == "Authenticate.Begin" && r.event.outcome == "ok" &&
             r.event.detail.find("no EK certificate: EK public registered") != std::string::npos;
  }
  EXPECT_TRUE(begun);

  // The EK template check still applies without a certificate.
  auto ek = tpm_->CreateEk();
  ASSERT_OK(ek);
  auto info = tpm_->ReadPublic(*ek);
  ASSERT_OK(info);
  TPM2B_PUBLIC odd = info->public_area;
  odd.publicArea.objectAttributes |= TPMA_OBJECT_USERWITHAUTH;
  BeginRequest r;
  r.ek_public = *tpm::Marshal(odd);
  r.ak_public = ak_pub_;
  AuthOnlyCalls c(m_.ops.get());
  BeginResult got;
  Status odd_status = c.Begin(r, &got);
  EXPECT_FALSE(odd_status.ok());
  EXPECT_NE(odd_status.message().find("EK template"), std::string::npos) << odd_status.message();
}

}  // namespace
}  // namespace tpmma::server
