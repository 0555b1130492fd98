// SPDX-License-Identifier: GPL-2.0-or-later
// End to end over the wire: the real ma-server binary (made by the real `ma-admin init`,
// TLS, SQLite file) and a real swtpm, driven through client/ma (the gSOAP proxy over HTTPS)
// and the ESAPI layer; the re-wrapped MRK is imported and used with tpm2-tools, which no one
// here wrote.
#include <openssl/pem.h>
#include <signal.h>

#include <atomic>
#include <mutex>
#include <set>
#include <thread>

#include <gtest/gtest.h>

#include "client/ma/ma_client.h"
#include "client/ma/platform.h"
#include "schema/package_xml.h"
#include "storage/sqlite_vault.h"
#include "tests/support/ma_process.h"
#include "tests/support/status_testing.h"
#include "tests/support/swtpm.h"
#include "tests/support/testutil.h"
#include "tpm/esys/esys.h"
#include "tpm/marshal.h"
#include "tpm/public.h"

namespace tpmma::testing {
namespace {

using ma::MaClient;

#define EXPECT_CODE(expr, code_)                                   \
  do {                                                             \
    ::tpmma::Status s_ = ::tpmma::internal::AsStatus((expr));      \
    EXPECT_EQ(s_.code(), code_) << #expr << ": " << s_.ToString(); \
  } while (0)

std::string PublicPem(const TPMT_PUBLIC& pub) {
  auto key = tpm::PublicToEvp(pub);
  if (!key) return {};
  BioPtr bio(BIO_new(BIO_s_mem()));
  PEM_write_bio_PUBKEY(bio.get(), key->get());
  char* data = nullptr;
  long n = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<size_t>(n));
}

void WriteText(const std::string& path, const std::string& text) {
  WriteFileOrDie(path, ByteView(reinterpret_cast<const uint8_t*>(text.data()), text.size()));
}

class MaE2eTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    sw_ = SharedSwtpm(0, &why);
    if (sw_ == nullptr) GTEST_SKIP() << why;
    ma_ = MaInstance::Start({MA_ADMIN_PATH, MA_SERVER_PATH}, dir_.path(), {sw_->RootCaCertPath()},
                            &why);
    ASSERT_NE(ma_, nullptr) << why;
    intermediate_ = PemCertificateFileToDer(sw_->IntermediateCaCertPath());
    ASSERT_FALSE(intermediate_.empty());
  }

  std::unique_ptr<MaClient> NewClient() {
    auto c = MaClient::Create({.url = ma_->url(), .ca_file = ma_->ca_file(), .timeout_s = 30});
    EXPECT_TRUE(c.has_value()) << c.error().ToString();
    return c ? std::move(*c) : nullptr;
  }

  void OpenTpm() {
    auto tpm = esys::Tpm::Open(sw_->tcti());
    ASSERT_OK(tpm);
    tpm_ = std::move(*tpm);
    auto srk = tpm_->GetOrCreateSrk(esys::KeyAlg::kRsa2048);
    ASSERT_OK(srk);
    srk_ = std::move(*srk);
  }
  // swtpm serves one client at a time: tpm2-tools need the ESAPI connection closed.
  void CloseTpm() {
    srk_ = esys::Object();
    tpm_.reset();
  }

  ma::AuthenticateOptions AuthOptions(bool with_key) {
    ma::AuthenticateOptions o;
    o.ek_intermediates = {intermediate_};
    o.with_signing_key = with_key;
    o.signing_key_type = esys::ChildType::kEccSign;
    return o;
  }

  // A backup as lms makes it: MRK (duplicable only to the MA key) with one ECC signing
  // child, duplicated by the TPM with a TPM-chosen inner key, signed by the session's key.
  struct Backup {
    schema::MigrationPackage model;
    Bytes bytes;
    esys::KeyBlob mrk, child;
    SecureBytes inner_key;
  };
  void MakeBackup(const ma::VerifiedMaKey& ma_key, ma::PlatformSession& session,
                  size_t pad_children, Backup* out) {
    auto mrk_blob = tpm_->CreateMrk(srk_, ma_key.name, esys::KeyAlg::kRsa2048);
    ASSERT_OK(mrk_blob);
    out->mrk = *mrk_blob;
    auto mrk = tpm_->Load(srk_, out->mrk);
    ASSERT_OK(mrk);
    auto child = tpm_->CreateChild(*mrk, esys::ChildType::kEccSign);
    ASSERT_OK(child);
    out->child = *child;
    auto dup = tpm_->Duplicate(*mrk, ma_key.public_area, esys::InnerWrap::kTpmGenerated);
    ASSERT_OK(dup);
    out->inner_key = dup->inner_key;
    FillModel(session.session.platform_id, *dup, pad_children, out);
    auto bytes = schema::SignPackage(out->model, session.signer.get());
    ASSERT_OK(bytes);
    out->bytes = *bytes;
  }
  void FillModel(const std::string& platform, const esys::Duplicated& dup, size_t pad_children,
                 Backup* out) {
    auto& m = out->model;
    m.package_id = *schema::NewUuid();
    m.source_platform_id = platform;
    m.creation_time = ::time(nullptr);
    m.mrk.public_area = *tpm::Marshal(out->mrk.public_area);
    m.mrk.duplicate = *tpm::Marshal(dup.duplicate);
    m.mrk.encrypted_seed = *tpm::Marshal(dup.encrypted_seed);
    schema::RecoveryCodeCustody rc;
    rc.salt = Bytes(16, 7);
    rc.n = 32768;
    rc.r = 8;
    rc.p = 1;
    m.custody = rc;
    schema::ChildKey c;
    c.key_id = *schema::NewUuid();
    c.label = "e2e signing key";
    c.usage = schema::KeyUsage::kSign;
    c.public_area = *tpm::Marshal(out->child.public_area);
    c.private_area = *tpm::Marshal(out->child.private_area);
    m.child_keys.push_back(c);
    for (size_t i = 0; i < pad_children; ++i) {
      c.key_id = *schema::NewUuid();
      c.label = "padding " + std::to_string(i);
      m.child_keys.push_back(c);
    }
  }

  TempDir dir_;
  Swtpm* sw_ = nullptr;
  std::unique_ptr<MaInstance> ma_;
  Bytes intermediate_;
  std::unique_ptr<esys::Tpm> tpm_;
  esys::Object srk_;
};

// Authenticate -> Upload -> Query -> tpm2_clear -> Download to the new SRK -> tpm2_import,
// tpm2_load, and the child key signs with its old public key -> Delete.
TEST_F(MaE2eTest, BackupSurvivesATpmClearThroughTheRealServer) {
  auto client = NewClient();
  ASSERT_NE(client, nullptr);
  auto info = client->GetMAServiceInfo();
  ASSERT_OK(info);
  EXPECT_FALSE(info->operations.empty());
  auto key = client->GetMAKey();
  ASSERT_OK(key);
  auto ma_key = ma::VerifyMaKey(*key);
  ASSERT_OK(ma_key);

  OpenTpm();
  auto ak = ma::CreateAttestationKey(*tpm_);
  ASSERT_OK(ak);
  auto session = ma::Authenticate(*client, *tpm_, *ak, &srk_, AuthOptions(true));
  ASSERT_OK(session);
  const std::string token(session->session.token.begin(), session->session.token.end());
  EXPECT_EQ(session->session.platform_id.size(), 68u);  // hex of a SHA-256 Name

  Backup b;
  ASSERT_NO_FATAL_FAILURE(MakeBackup(*ma_key, *session, 0, &b));
  session->signer.reset();
  auto up = client->Upload(token, b.bytes);
  ASSERT_OK(up);
  EXPECT_EQ(up->package_id, b.model.package_id);
  EXPECT_FALSE(up->already_stored);
  auto again = client->Upload(token, b.bytes);
  ASSERT_OK(again);
  EXPECT_TRUE(again->already_stored);

  auto page = client->Query(token);
  ASSERT_OK(page);
  ASSERT_EQ(page->packages.size(), 1u);
  EXPECT_EQ(page->packages[0].package_id, b.model.package_id);
  EXPECT_EQ(ma::AccessName(page->packages[0].access), "Own");
  EXPECT_EQ(page->packages[0].key_count, 1u);

  // The owner clears the TPM: the SRK (and with it every key under it) is gone.
  const std::string child_pem = PublicPem(b.child.public_area.publicArea);
  ASSERT_FALSE(child_pem.empty());
  auto old_srk_name = srk_.name();
  CloseTpm();
  auto r = sw_->Tools({"tpm2_clear", "-c", "p"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  OpenTpm();
  ASSERT_NE(srk_.name(), old_srk_name);

  // The old AK blob no longer loads (TPM2_Clear changes the endorsement hierarchy's
  // proof value), but the EK is the same: a new AK, a new session for the same platform,
  // then the package re-wrapped to the new SRK.
  {
    auto ek = tpm_->CreateEk();
    ASSERT_OK(ek);
    EXPECT_FALSE(tpm_->Load(*ek, *ak).has_value());
  }
  ak = ma::CreateAttestationKey(*tpm_);
  ASSERT_OK(ak);
  // The old package-signing key died with the SRK: the platform certifies a new one and
  // backs up again; the package signed with the old key must still download.
  auto session2 = ma::Authenticate(*client, *tpm_, *ak, &srk_, AuthOptions(true));
  ASSERT_OK(session2);
  EXPECT_EQ(session2->session.platform_id, session->session.platform_id);
  const std::string token2(session2->session.token.begin(), session2->session.token.end());
  Backup b2;
  ASSERT_NO_FATAL_FAILURE(MakeBackup(*ma_key, *session2, 0, &b2));
  session2->signer.reset();
  ASSERT_OK(client->Upload(token2, b2.bytes));
  auto got = ma::DownloadTo(*client, *tpm_, token2, b.model.package_id, srk_, *ak);
  ASSERT_OK(got);
  EXPECT_EQ(got->document, b.bytes);

  // tpm2-tools import and load what the MA re-wrapped; the unchanged child key loads under
  // the imported MRK and signs; its signature verifies with the public key from before.
  CloseTpm();
  const std::string d = dir_.path() + "/";
  WriteFileOrDie(d + "mrk.pub", b.model.mrk.public_area);
  WriteFileOrDie(d + "dup.priv", got->duplicate);
  WriteFileOrDie(d + "dup.seed", got->encrypted_seed);
  WriteFileOrDie(d + "inner.key", ByteView(b.inner_key.data(), b.inner_key.size()));
  WriteFileOrDie(d + "child.pub", *tpm::Marshal(b.child.public_area));
  WriteFileOrDie(d + "child.priv", *tpm::Marshal(b.child.private_area));
  WriteText(d + "child.pem", child_pem);
  WriteText(d + "msg.txt", "signed after the restore\n");
  for (const std::vector<std::string>& cmd : std::vector<std::vector<std::string>>{
           {"tpm2_import", "-C", "0x81000001", "-u", d + "mrk.pub", "-i", d + "dup.priv", "-s",
            d + "dup.seed", "-k", d + "inner.key", "-r", d + "mrk.priv"},
           {"tpm2_load", "-C", "0x81000001", "-u", d + "mrk.pub", "-r", d + "mrk.priv", "-c",
            d + "mrk.ctx"},
           {"tpm2_load", "-C", d + "mrk.ctx", "-u", d + "child.pub", "-r", d + "child.priv", "-c",
            d + "child.ctx"},
           {"tpm2_sign", "-c", d + "child.ctx", "-g", "sha256", "-f", "plain", "-o", d + "sig",
            d + "msg.txt"}}) {
    auto res = sw_->Tools(cmd);
    ASSERT_EQ(res.exit_code, 0) << cmd[0] << ": " << res.output;
  }
  auto v = RunCommand({"openssl", "dgst", "-sha256", "-verify", d + "child.pem", "-signature",
                       d + "sig", d + "msg.txt"});
  EXPECT_EQ(v.exit_code, 0) << v.output;
  EXPECT_NE(v.output.find("Verified OK"), std::string::npos) << v.output;

  // Without the inner key the MA's blob alone does not import (the MA cannot open it).
  auto no_inner = sw_->Tools({"tpm2_import", "-C", "0x81000001", "-u", d + "mrk.pub", "-i",
                              d + "dup.priv", "-s", d + "dup.seed", "-r", d + "x.priv"});
  EXPECT_NE(no_inner.exit_code, 0);

  ASSERT_TRUE(client->Delete(token2, b.model.package_id).ok());
  auto after = client->Query(token2);
  ASSERT_OK(after);
  ASSERT_EQ(after->packages.size(), 1u);  // only the backup made after the clear
  EXPECT_EQ(after->packages[0].package_id, b2.model.package_id);
  EXPECT_CODE(client->DownloadPrepare(token2, b.model.package_id, Bytes(34, 1)), Code::kNotFound);
  EXPECT_EQ(ma_->Stop(), 0);
}

TEST_F(MaE2eTest, RefusalsOverTheWireAreFaultsWithStableCodes) {
  auto client = NewClient();
  ASSERT_NE(client, nullptr);
  const std::string bogus(43, 'A');
  EXPECT_CODE(client->Query(bogus), Code::kUnauthenticated);
  EXPECT_CODE(client->Upload(bogus, Bytes(100, 'x')), Code::kUnauthenticated);
  EXPECT_CODE(client->Delete(bogus, "3f2504e0-4f89-41d3-9a0c-0305e82c3301"),
              Code::kUnauthenticated);
  EXPECT_CODE(client->GetMAKey("no-such-key"), Code::kNotFound);

  // A client that does not trust the MA's CA refuses the connection.
  const std::string other = dir_.File("other-ca.pem");
  auto made = RunCommand({"openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                          "ec_paramgen_curve:P-256", "-nodes", "-keyout", dir_.File("other.key"),
                          "-out", other, "-subj", "/CN=someone else", "-days", "2"});
  ASSERT_EQ(made.exit_code, 0) << made.output;
  auto wrong = MaClient::Create({.url = ma_->url(), .ca_file = other, .timeout_s = 5});
  ASSERT_OK(wrong);
  EXPECT_CODE((*wrong)->GetMAServiceInfo(), Code::kUnavailable);

  // Bad options are refused before any connection.
  EXPECT_CODE(
      MaClient::Create({.url = "http://127.0.0.1:1", .ca_file = ma_->ca_file(), .timeout_s = 5}),
      Code::kInvalidArgument);
  EXPECT_CODE(
      MaClient::Create({.url = ma_->url(), .ca_file = dir_.File("missing.pem"), .timeout_s = 5}),
      Code::kInvalidArgument);
  // The server keeps serving.
  EXPECT_TRUE(client->GetMAServiceInfo().has_value());
}

// kill -9 while uploads are in flight: every Upload the server acknowledged is in the vault
// after the crash, and the vault passes SQLite's integrity check and the audit chain check.
TEST_F(MaE2eTest, AcknowledgedUploadsSurviveKillNine) {
  auto client = NewClient();
  ASSERT_NE(client, nullptr);
  auto key = client->GetMAKey();
  ASSERT_OK(key);
  auto ma_key = ma::VerifyMaKey(*key);
  ASSERT_OK(ma_key);
  OpenTpm();
  auto ak = ma::CreateAttestationKey(*tpm_);
  ASSERT_OK(ak);
  auto session = ma::Authenticate(*client, *tpm_, *ak, &srk_, AuthOptions(true));
  ASSERT_OK(session);
  const std::string token(session->session.token.begin(), session->session.token.end());

  // One real duplicate, many signed packages around it (distinct ids): the MA checks the
  // signature and the MRK policy, not whether two packages share a duplicate.
  Backup first;
  ASSERT_NO_FATAL_FAILURE(MakeBackup(*ma_key, *session, 0, &first));
  constexpr int kPackages = 240;
  std::vector<Backup> packages(kPackages);
  for (auto& p : packages) {
    p.mrk = first.mrk;
    p.child = first.child;
    esys::Duplicated dup;
    dup.duplicate = *tpm::Unmarshal<TPM2B_PRIVATE>(first.model.mrk.duplicate);
    dup.encrypted_seed = *tpm::Unmarshal<TPM2B_ENCRYPTED_SECRET>(first.model.mrk.encrypted_seed);
    FillModel(session->session.platform_id, dup, 0, &p);
    auto bytes = schema::SignPackage(p.model, session->signer.get());
    ASSERT_OK(bytes);
    p.bytes = *bytes;
  }

  std::mutex mu;
  std::set<std::string> acked;
  std::atomic<int> next{0}, failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      auto c = MaClient::Create({.url = ma_->url(), .ca_file = ma_->ca_file(), .timeout_s = 10});
      if (!c) return;
      for (;;) {
        int i = next.fetch_add(1);
        if (i >= kPackages) return;
        auto r = (*c)->Upload(token, packages[i].bytes);
        if (!r) {
          failures.fetch_add(1);
          return;  // the server is gone
        }
        std::lock_guard<std::mutex> lock(mu);
        acked.insert(r->package_id);
      }
    });
  }
  // Kill once a good part of the load has been acknowledged (a condition, not a sleep).
  for (;;) {
    {
      std::lock_guard<std::mutex> lock(mu);
      if (acked.size() >= kPackages / 3) break;
    }
    ASSERT_LT(next.load(), kPackages + 4) << "the load finished before the kill";
    std::this_thread::yield();
  }
  ma_->Kill9();
  for (auto& t : threads) t.join();
  ASSERT_GT(failures.load(), 0) << "no upload was cut off: the kill came too late";
  ASSERT_LT(acked.size(), static_cast<size_t>(kPackages));
  RecordProperty("acknowledged_before_kill", static_cast<int>(acked.size()));
  RecordProperty("cut_off", failures.load());

  {
    auto vault = storage::SqliteVault::Open(ma_->vault_path());
    ASSERT_OK(vault);
    EXPECT_TRUE((*vault)->IntegrityCheck().ok());
    Status chain = (*vault)->VerifyAuditChain();
    EXPECT_TRUE(chain.ok()) << chain.ToString();
    for (const auto& id : acked) {
      auto p = (*vault)->GetPackage(id);
      EXPECT_TRUE(p.has_value()) << "acknowledged upload " << id << " lost";
    }
  }
  // And the restarted server serves them.
  std::string why;
  ASSERT_TRUE(ma_->Restart(&why)) << why;
  auto c = NewClient();
  ASSERT_NE(c, nullptr);
  auto page = c->Query(token, {}, 500);
  ASSERT_OK(page);
  std::set<std::string> listed;
  for (const auto& d : page->packages) listed.insert(d.package_id);
  for (const auto& id : acked) EXPECT_TRUE(listed.count(id)) << id;
}

}  // namespace
}  // namespace tpmma::testing
