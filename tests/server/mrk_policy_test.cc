// SPDX-License-Identifier: GPL-2.0-or-later
// An MA with a policy-signing key ([policy], server/policy_key.h; issue #16) on the domain
// functions, with a real SQLite vault and two swtpm: GetMAKey publishes the approval of the
// MA key, which verifies; an MRK that follows the MA (PolicyAuthorize) is vaulted and
// restores on another board under a helpdesk approval; a legacy PolicyDuplicationSelect MRK
// is still taken; an MRK authorized by another key is refused at Upload; an approval that
// does not approve this MA's key stops the MA from starting.
#include <gtest/gtest.h>

#include "server/policy_key.h"
#include "tests/server/ma_operations_fixture.h"
#include "tpm/approval.h"

namespace tpmma::server {
namespace {

using testing::Swtpm;

class MrkPolicyTest : public MaOperationsTest {
 protected:
  void SetUp() override {
    MaPlatformTest::SetUp();  // not MaOperationsTest's: the MA needs [policy] first
    if (IsSkipped() || HasFatalFailure()) return;
    auto custody =
        LoadSoftwareMaKey(cfg_.ma.key_id, cfg_.ma.private_key, cfg_.ma.certificate, &env_);
    ASSERT_OK(custody);
    ma_public_ = (*custody)->public_area();
    ma_name_ = (*custody)->name();
    policy_key_ = dir_.File("policy-key.pem");
    cfg_.policy_public_key = dir_.File("policy-key.pub.pem");
    cfg_.policy_approval = dir_.File("ma-test.approval");
    ASSERT_OK(CreatePolicyKey(policy_key_, cfg_.policy_public_key, &env_));
    ASSERT_OK(WriteApproval(policy_key_, ma_name_, cfg_.policy_approval, &env_));
    ASSERT_OK_AND_ASSIGN(ep_, MakeOps(cfg_, &env_));
  }

  // GetMAKey's approval, as lms reads it.
  tpm::Approval Published() {
    CallContext call;
    auto info = ep_.ops->GetMAKey(std::nullopt, &call);
    EXPECT_TRUE(info.has_value());
    tpm::Approval a;
    if (!info || info->policy_key.empty()) return a;
    a.policy_key = *tpm::Unmarshal<TPM2B_PUBLIC>(info->policy_key);
    a.approved_policy = *tpm::DuplicationSelectPolicy(ma_name_);
    a.signature = *tpm::Unmarshal<TPMT_SIGNATURE>(info->approval);
    return a;
  }

  // cfg_ after `ma-admin ma-key rotate`: ma-2 (made here) current and approved, ma-test
  // retiring, the EK roots of `tb` too; `*k2` is ma-2's custody.
  Config Rotated(Swtpm* tb, std::unique_ptr<MaKeyCustody>* k2) {
    const MaFiles files = MakeMaFiles(dir_, "ma2");
    Config cfg = cfg_;
    cfg.ek_roots = {t_->RootCaCertPath(), tb->RootCaCertPath()};
    cfg.ma_retiring = {cfg_.ma};
    cfg.ma = TpmKeyConfig::Named("software", "ma-2");
    cfg.ma.private_key = files.key;
    cfg.ma.certificate = files.cert;
    auto custody = LoadSoftwareMaKey("ma-2", files.key, files.cert, &env_);
    EXPECT_TRUE(custody.has_value());
    if (!custody) return cfg;
    cfg.policy_approval = dir_.File("ma-2.approval");
    EXPECT_TRUE(WriteApproval(policy_key_, (*custody)->name(), cfg.policy_approval, &env_).ok());
    *k2 = std::move(*custody);
    return cfg;
  }

  // B, approved for A's packages, downloads `m` and its TPM imports and loads the MRK.
  void RestoresOn(Client& c, Plat& a, Plat& b, const Made& m) {
    ASSERT_OK(Approve(*ep_.vault, a.id, b.id));
    Downloaded got;
    ASSERT_OK(DownloadTo(c, b, m.model.package_id, &got));
    ASSERT_OK_AND_ASSIGN(
        TPM2B_PRIVATE priv,
        b.tpm->Import(b.srk, m.mrk.public_area, *tpm::Unmarshal<TPM2B_PRIVATE>(got.duplicate),
                      *tpm::Unmarshal<TPM2B_ENCRYPTED_SECRET>(got.seed), m.inner_key));
    ASSERT_OK(b.tpm->Load(b.srk, esys::KeyBlob{m.mrk.public_area, priv}));
  }

  std::string policy_key_;
  TPM2B_PUBLIC ma_public_{};
  Bytes ma_name_;
};

TEST_F(MrkPolicyTest, AFollowingMrkIsVaultedAndRestoresOnAnotherBoard) {
  std::string why;
  Swtpm* tb = testing::SharedSwtpm(1, &why);
  ASSERT_NE(tb, nullptr) << why;
  Config cfg = cfg_;
  cfg.ek_roots = {t_->RootCaCertPath(), tb->RootCaCertPath()};
  ASSERT_OK_AND_ASSIGN(ep_, MakeOps(cfg, &env_));
  const tpm::Approval approval = Published();
  ASSERT_OK_AND_ASSIGN(Bytes policy_name, tpm::ComputeName(approval.policy_key.publicArea));
  ASSERT_OK(tpm::CheckApproval(approval, ma_name_, policy_name));

  Client c(ep_.get());
  Plat a, b;
  ASSERT_NO_FATAL_FAILURE(OpenBoth(c, tb, &a, &b, false));
  Made pa;
  ASSERT_NO_FATAL_FAILURE(MakePackage(a, ma_public_, ma_name_, &pa, nullptr, "", &approval));
  ASSERT_OK(Upload(c, a.token, pa.bytes, nullptr));
  // The MRK a board made before the MA had a policy key is still taken.
  Made legacy;
  ASSERT_NO_FATAL_FAILURE(AuthenticatePlat(c, a, true));  // a fresh signer slot
  ASSERT_NO_FATAL_FAILURE(MakePackage(a, ma_public_, ma_name_, &legacy));
  ASSERT_OK(Upload(c, a.token, legacy.bytes, nullptr));

  // The motherboard swap: B restores A's following MRK, re-wrapped by the MA.
  ASSERT_OK(Approve(*ep_.vault, a.id, b.id));
  Downloaded got;
  ASSERT_OK(DownloadTo(c, b, pa.model.package_id, &got));
  ASSERT_OK_AND_ASSIGN(
      TPM2B_PRIVATE priv,
      b.tpm->Import(b.srk, pa.mrk.public_area, *tpm::Unmarshal<TPM2B_PRIVATE>(got.duplicate),
                    *tpm::Unmarshal<TPM2B_ENCRYPTED_SECRET>(got.seed), pa.inner_key));
  ASSERT_OK_AND_ASSIGN(esys::Object restored,
                       b.tpm->Load(b.srk, esys::KeyBlob{pa.mrk.public_area, priv}));
  EXPECT_EQ(restored.name(), *tpm::ComputeName(pa.mrk.public_area.publicArea));
}

TEST_F(MrkPolicyTest, AnMrkAuthorizedByAnotherKeyIsRefusedAtUpload) {
  Client c(ep_.get());
  Plat a;
  ASSERT_NO_FATAL_FAILURE(OpenPlat(t_, &a));
  ASSERT_NO_FATAL_FAILURE(AuthenticatePlat(c, a, true));
  // A stranger's policy key approves this MA's storage key: the TPM duplicates, the MA refuses.
  EvpPkeyPtr stranger(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"));
  ASSERT_OK_AND_ASSIGN(tpm::Approval theirs, tpm::SignApproval(stranger.get(), ma_name_));
  Made m;
  ASSERT_NO_FATAL_FAILURE(MakePackage(a, ma_public_, ma_name_, &m, nullptr, "", &theirs));
  Status s = Upload(c, a.token, m.bytes, nullptr);
  EXPECT_EQ(s.code(), Code::kInvalidArgument) << s.ToString();
  EXPECT_NE(s.message().find("nor PolicyAuthorize by its policy-signing key"), std::string::npos)
      << s.message();
  std::vector<std::string> ids;
  ASSERT_OK(Query(c, a.token, &ids));
  EXPECT_TRUE(ids.empty());  // nothing vaulted
}

// After `ma-admin ma-key rotate` (ma-2 current, ma-test retiring): an upload still wrapped to
// the retiring key (a following MRK whose backup began before the restart, or a legacy MRK
// bound to it) is re-enciphered to ma-2 at once and restores from there; a legacy MRK bound
// to a key this MA never held is refused.
TEST_F(MrkPolicyTest, UploadsWrappedToARetiringKeyAreReencipheredAtOnce) {
  std::string why;
  Swtpm* tb = testing::SharedSwtpm(1, &why);
  ASSERT_NE(tb, nullptr) << why;
  const tpm::Approval old_approval = Published();
  std::unique_ptr<MaKeyCustody> k2;
  ASSERT_OK_AND_ASSIGN(ep_, MakeOps(Rotated(tb, &k2), &env_));
  CallContext info_call;
  ASSERT_OK_AND_ASSIGN(ServiceInfo info, ep_.ops->GetMAServiceInfo(&info_call));
  EXPECT_EQ(info.ma_key_ids.front(), "ma-2");
  EXPECT_EQ(info.retiring_ma_key_ids, std::vector<std::string>{"ma-test"});

  Client c(ep_.get());
  Plat a, b;
  ASSERT_NO_FATAL_FAILURE(OpenBoth(c, tb, &a, &b, false));
  Made follow, legacy;
  ASSERT_NO_FATAL_FAILURE(
      MakePackage(a, ma_public_, ma_name_, &follow, nullptr, "", &old_approval));
  ASSERT_OK(Upload(c, a.token, follow.bytes, nullptr));
  ASSERT_NO_FATAL_FAILURE(AuthenticatePlat(c, a, true));
  ASSERT_NO_FATAL_FAILURE(MakePackage(a, ma_public_, ma_name_, &legacy));
  ASSERT_OK(Upload(c, a.token, legacy.bytes, nullptr));
  for (const Made* m : {&follow, &legacy}) {
    ASSERT_OK_AND_ASSIGN(storage::Package stored, ep_.vault->GetPackage(m->model.package_id));
    EXPECT_EQ(stored.descriptor.wrap_key_id, "ma-2");
    ASSERT_TRUE(stored.rewrap.has_value());
    EXPECT_NE(stored.rewrap->encrypted_seed, m->model.mrk.encrypted_seed);
    EXPECT_EQ(stored.body, m->bytes);  // the document as the platform signed it
  }
  storage::AuditFilter f;
  f.action = "Upload";
  ASSERT_OK_AND_ASSIGN(storage::AuditPage uploads, ep_.vault->ListAudit(f));
  ASSERT_FALSE(uploads.records.empty());
  EXPECT_NE(uploads.records.back().event.detail.find("re-enciphered from ma-test"),
            std::string::npos)
      << uploads.records.back().event.detail;

  // B restores the legacy one from its re-enciphered wrap.
  ASSERT_NO_FATAL_FAILURE(RestoresOn(c, a, b, legacy));

  // A legacy MRK bound to a key this MA does not hold.
  const MaFiles k3 = MakeMaFiles(dir_, "ma3");
  auto stranger = LoadSoftwareMaKey("k3", k3.key, k3.cert, &env_);
  ASSERT_OK(stranger);
  ASSERT_NO_FATAL_FAILURE(AuthenticatePlat(c, a, true));
  Made elsewhere;
  ASSERT_NO_FATAL_FAILURE(
      MakePackage(a, (*stranger)->public_area(), (*stranger)->name(), &elsewhere));
  Status s = Upload(c, a.token, elsewhere.bytes, nullptr);
  EXPECT_EQ(s.code(), Code::kInvalidArgument) << s.ToString();
}

// A rolling restart after a rotation: an instance still on ma-test alone takes a following
// MRK's upload already duplicated to ma-2 and records it under ma-test (outside a rotation it
// spends no crypto on the wrap). Once it runs with the rotated keys, Download finds the key
// that opens it.
TEST_F(MrkPolicyTest, AnUploadRecordedUnderAnOlderKeyStillRestores) {
  std::string why;
  Swtpm* tb = testing::SharedSwtpm(1, &why);
  ASSERT_NE(tb, nullptr) << why;
  std::unique_ptr<MaKeyCustody> k2;
  const Config rotated = Rotated(tb, &k2);
  ASSERT_NE(k2, nullptr);
  Config before = cfg_;
  before.ek_roots = rotated.ek_roots;
  ASSERT_OK_AND_ASSIGN(ep_, MakeOps(before, &env_));
  ASSERT_OK_AND_ASSIGN(
      tpm::Approval to_k2,
      tpm::ApprovalFromWire(*tpm::Marshal(Published().policy_key),
                            *env_.ReadFile(rotated.policy_approval, 4096), k2->name()));
  Client c(ep_.get());
  Plat a, b;
  ASSERT_NO_FATAL_FAILURE(OpenBoth(c, tb, &a, &b, false));
  Made m;
  ASSERT_NO_FATAL_FAILURE(MakePackage(a, k2->public_area(), k2->name(), &m, nullptr, "", &to_k2));
  ASSERT_OK(Upload(c, a.token, m.bytes, nullptr));
  ASSERT_OK_AND_ASSIGN(storage::PackageDescriptor d,
                       ep_.vault->GetPackageDescriptor(m.model.package_id));
  EXPECT_EQ(d.wrap_key_id, "ma-test");  // the record is wrong
  ASSERT_OK_AND_ASSIGN(ep_, MakeOps(rotated, &env_));
  Client c2(ep_.get());
  ASSERT_NO_FATAL_FAILURE(AuthenticatePlat(c2, b, false));
  ASSERT_NO_FATAL_FAILURE(RestoresOn(c2, a, b, m));
}

TEST_F(MrkPolicyTest, AnApprovalOfAnotherKeyOrNoneStopsTheMa) {
  // The approval file signed for another storage key: the MA does not start.
  Bytes other_name = ma_name_;
  other_name.back() ^= 1;
  ASSERT_OK(WriteApproval(policy_key_, other_name, cfg_.policy_approval, &env_));
  auto refused = MakeOps(cfg_, &env_);
  ASSERT_FALSE(refused.has_value());
  EXPECT_NE(refused.error().message().find("does not approve this MA's storage key"),
            std::string::npos)
      << refused.error().message();
  // A file that is no signature at all.
  testing::WriteFileOrDie(cfg_.policy_approval, ToBytes("not a signature"));
  refused = MakeOps(cfg_, &env_);
  ASSERT_FALSE(refused.has_value());
  EXPECT_NE(refused.error().message().find("is not a TPMT_SIGNATURE"), std::string::npos)
      << refused.error().message();
  // Without [policy] the MA publishes no approval and takes legacy MRKs only.
  Config plain = cfg_;
  plain.policy_public_key.clear();
  plain.policy_approval.clear();
  ASSERT_OK_AND_ASSIGN(ep_, MakeOps(plain, &env_));
  CallContext call;
  ASSERT_OK_AND_ASSIGN(MaKeyInfo info, ep_.ops->GetMAKey(std::nullopt, &call));
  EXPECT_TRUE(info.policy_key.empty());
  EXPECT_TRUE(info.approval.empty());
}

}  // namespace
}  // namespace tpmma::server
