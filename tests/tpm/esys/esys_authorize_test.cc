// SPDX-License-Identifier: GPL-2.0-or-later
// MRKs that follow the MA (tpm/approval.h, esys::Tpm::CreateMrkFollowingMa and
// DuplicateAuthorized) on two swtpm: A makes one MRK whose authPolicy is PolicyAuthorize(the
// MA's policy-signing key P) and a child under it; the same MRK blob duplicates to MA storage
// key K1, then, after a rotation, to K2, with nothing re-made on A; each duplicate re-wrapped
// in software for B's SRK imports there with the MRK's Name and the child signs with its old
// public key. The TPM refuses what ../shared/reference/policy-authorize lists: another key's
// signature, another storage key's approval, a duplication to a key nobody approved. The
// software half's arithmetic and checks agree with the TPM's (tpm2-tools' Name of P, a trial
// session's PolicyAuthorize digest).
#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include <string>
#include <vector>

#include "common/openssl.h"
#include "tests/support/status_testing.h"
#include "tests/support/swtpm.h"
#include "tpm/approval.h"
#include "tpm/attest.h"
#include "tpm/esys/esys.h"
#include "tpm/marshal.h"
#include "tpm/policy.h"
#include "tpm/public.h"
#include "tpm/rewrap.h"

namespace tpmma::esys {
namespace {

using tpmma::testing::Swtpm;

EvpPkeyPtr NewKey(const char* type) {
  if (std::string(type) == "EC") {
    return EvpPkeyPtr(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"));
  }
  return EvpPkeyPtr(EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", size_t{2048}));
}

struct MaStorageKey {
  EvpPkeyPtr key;
  TPM2B_PUBLIC pub{};
  Bytes name;
};

MaStorageKey NewStorageKey() {
  MaStorageKey k;
  k.key = NewKey("RSA");
  k.pub = *tpm::MaStoragePublic(k.key.get());
  k.name = *tpm::ComputeName(k.pub.publicArea);
  return k;
}

class AuthorizeTest : public ::testing::TestWithParam<const char*> {
 protected:
  void SetUp() override {
    std::string why;
    a_ = testing::SharedSwtpm(0, &why);
    b_ = testing::SharedSwtpm(1, &why);
    if (a_ == nullptr || b_ == nullptr) GTEST_SKIP() << "swtpm not available: " << why;
    p_ = NewKey(GetParam());
    ASSERT_TRUE(p_);
    ASSERT_OK_AND_ASSIGN(TPM2B_PUBLIC p_pub, tpm::PolicyKeyPublic(p_.get()));
    ASSERT_OK_AND_ASSIGN(p_name_, tpm::ComputeName(p_pub.publicArea));
  }

  // On A: the MRK (authPolicy PolicyAuthorize(P)) and an ECDSA child under it.
  void MakeMrk(Tpm& a, const Object& srk) {
    ASSERT_OK_AND_ASSIGN(mrk_, a.CreateMrkFollowingMa(srk, p_name_, KeyAlg::kRsa2048));
    ASSERT_OK_AND_ASSIGN(Object mrk, a.Load(srk, mrk_));
    ASSERT_OK_AND_ASSIGN(child_, a.CreateChild(mrk, ChildType::kEccSign));
  }

  // The MA re-wraps `dup` (made for `k`) to B's SRK in software; B imports the MRK and its
  // child signs, verified with the child's public from A.
  void RestoreOnB(const MaStorageKey& k, const Duplicated& dup) {
    auto b = Tpm::Open(b_->tcti());
    ASSERT_OK(b);
    ASSERT_OK_AND_ASSIGN(Object srk_b, (*b)->GetOrCreateSrk(KeyAlg::kRsa2048));
    ASSERT_OK_AND_ASSIGN(auto rw,
                         tpm::Rewrap(k.key.get(), k.pub.publicArea, mrk_.public_area, dup.duplicate,
                                     dup.encrypted_seed, srk_b.public_area()));
    ASSERT_OK_AND_ASSIGN(TPM2B_PRIVATE priv, (*b)->Import(srk_b, mrk_.public_area, rw.duplicate,
                                                          rw.encrypted_seed, dup.inner_key));
    ASSERT_OK_AND_ASSIGN(Object mrk_b, (*b)->Load(srk_b, KeyBlob{mrk_.public_area, priv}));
    EXPECT_EQ(mrk_b.name(), *tpm::ComputeName(mrk_.public_area.publicArea));
    ASSERT_OK_AND_ASSIGN(Object child, (*b)->Load(mrk_b, child_));
    const Bytes message = ToBytes("signed on B after the MA key " + HexEncode(k.name));
    Bytes digest(32);
    unsigned int len = 0;
    EVP_Digest(message.data(), message.size(), digest.data(), &len, EVP_sha256(), nullptr);
    ASSERT_OK_AND_ASSIGN(TPMT_SIGNATURE sig, (*b)->Sign(child, digest));
    EXPECT_TRUE(tpm::VerifyTpmSignature(child_.public_area.publicArea, message, sig).ok());
  }

  Swtpm* a_ = nullptr;
  Swtpm* b_ = nullptr;
  EvpPkeyPtr p_;
  Bytes p_name_;
  KeyBlob mrk_, child_;
};

TEST_P(AuthorizeTest, OneMrkFollowsARotationAndItsChildStillSigns) {
  MaStorageKey k1 = NewStorageKey(), k2 = NewStorageKey();
  ASSERT_OK_AND_ASSIGN(tpm::Approval ap1, tpm::SignApproval(p_.get(), k1.name));
  ASSERT_OK_AND_ASSIGN(tpm::Approval ap2, tpm::SignApproval(p_.get(), k2.name));
  EXPECT_TRUE(tpm::CheckApproval(ap1, k1.name, p_name_).ok());
  EXPECT_TRUE(tpm::CheckApproval(ap2, k2.name, p_name_).ok());
  Duplicated to_k1, to_k2;
  {
    auto a = Tpm::Open(a_->tcti());
    ASSERT_OK(a);
    ASSERT_OK_AND_ASSIGN(Object srk, (*a)->GetOrCreateSrk(KeyAlg::kRsa2048));
    ASSERT_OK((*a)->EnableParameterEncryption(srk));
    MakeMrk(**a, srk);
    ASSERT_OK_AND_ASSIGN(Object mrk, (*a)->Load(srk, mrk_));
    ASSERT_OK_AND_ASSIGN(to_k1,
                         (*a)->DuplicateAuthorized(mrk, k1.pub, ap1, InnerWrap::kTpmGenerated));
    // The rotation: the same loaded MRK, now to K2 under K2's approval.
    ASSERT_OK_AND_ASSIGN(to_k2,
                         (*a)->DuplicateAuthorized(mrk, k2.pub, ap2, InnerWrap::kTpmGenerated));
  }
  ASSERT_NO_FATAL_FAILURE(RestoreOnB(k1, to_k1));
  ASSERT_NO_FATAL_FAILURE(RestoreOnB(k2, to_k2));
}

TEST_P(AuthorizeTest, TheTpmRefusesOtherSignersOtherKeysAndUnapprovedParents) {
  MaStorageKey k1 = NewStorageKey(), k2 = NewStorageKey();
  EvpPkeyPtr stranger = NewKey(GetParam());
  ASSERT_OK_AND_ASSIGN(tpm::Approval ap1, tpm::SignApproval(p_.get(), k1.name));
  ASSERT_OK_AND_ASSIGN(tpm::Approval by_stranger, tpm::SignApproval(stranger.get(), k2.name));
  auto a = Tpm::Open(a_->tcti());
  ASSERT_OK(a);
  ASSERT_OK_AND_ASSIGN(Object srk, (*a)->GetOrCreateSrk(KeyAlg::kRsa2048));
  MakeMrk(**a, srk);
  ASSERT_OK_AND_ASSIGN(Object mrk, (*a)->Load(srk, mrk_));
  auto refused = [&](const TPM2B_PUBLIC& parent, const tpm::Approval& ap, const char* call) {
    auto r = (*a)->DuplicateAuthorized(mrk, parent, ap, InnerWrap::kTpmGenerated);
    ASSERT_FALSE(r.has_value()) << call;
    EXPECT_NE(r.error().message().find(call), std::string::npos) << r.error().message();
    RecordProperty(call, r.error().message());
  };
  // A stranger's signature presented as P's: P's public with the stranger's signature.
  tpm::Approval forged = by_stranger;
  forged.policy_key = ap1.policy_key;
  refused(k2.pub, forged, "Esys_VerifySignature");
  // The stranger's own approval verifies, but PolicyAuthorize(stranger) is not the MRK's policy.
  refused(k2.pub, by_stranger, "Esys_Duplicate");
  // K1's approval for a duplication to K2: the session's digest is not the approved policy.
  refused(k2.pub, ap1, "Esys_PolicyAuthorize");
  // K1's approval relabelled as K2's: its signature does not cover K2's policy.
  tpm::Approval relabelled = ap1;
  relabelled.approved_policy = *tpm::DuplicationSelectPolicy(k2.name);
  refused(k2.pub, relabelled, "Esys_VerifySignature");
  // The software check says the same before any TPM is asked.
  EXPECT_EQ(tpm::CheckApproval(by_stranger, k2.name, p_name_).code(), Code::kIntegrityFailure);
  EXPECT_EQ(tpm::CheckApproval(ap1, k2.name, p_name_).code(), Code::kIntegrityFailure);
  EXPECT_EQ(tpm::CheckApproval(relabelled, k2.name, p_name_).code(), Code::kIntegrityFailure);
  EXPECT_EQ(tpm::CheckApproval(forged, k2.name, p_name_).code(), Code::kIntegrityFailure);
  // And no slot was left behind by the refusals.
  ASSERT_OK_AND_ASSIGN(auto handles, (*a)->TransientHandles());
  EXPECT_EQ(handles.size(), 1u);  // the MRK
}

TEST_P(AuthorizeTest, SoftwareArithmeticMatchesTpm2Tools) {
  // The policy key's Name as tpm2_loadexternal computes it, and the MRK's authPolicy as a
  // trial session computes it (tpm2_policyauthorize), equal ours.
  const std::string pem = a_->File(std::string("policy-key-") + GetParam() + ".pem");
  {
    BioPtr out(BIO_new_file(pem.c_str(), "w"));
    ASSERT_TRUE(out && PEM_write_bio_PUBKEY(out.get(), p_.get()) == 1);
  }
  const std::string alg = std::string(GetParam()) == "EC" ? "ecc" : "rsa";
  const std::string name_file = a_->File("policy-key.name"), policy = a_->File("mrk.policy");
  const std::string ref = a_->File("policy.ref");
  testing::WriteFileOrDie(
      ref, Bytes(tpm::DuplicationPolicyRef().begin(), tpm::DuplicationPolicyRef().end()));
  auto r = a_->Tools({"tpm2_loadexternal", "-C", "o", "-G", alg, "-a", "sign|userwithauth", "-u",
                      pem, "-c", a_->File("p.ctx"), "-n", name_file});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(HexEncode(testing::ReadFileOrDie(name_file)), HexEncode(p_name_));
  ASSERT_EQ(a_->Tools({"tpm2_flushcontext", "-t"}).exit_code, 0);
  const std::string trial = a_->File("trial.ctx");
  ASSERT_EQ(a_->Tools({"tpm2_startauthsession", "-S", trial}).exit_code, 0);
  r = a_->Tools({"tpm2_policyauthorize", "-S", trial, "-n", name_file, "-q", ref, "-L", policy});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  ASSERT_EQ(a_->Tools({"tpm2_flushcontext", trial}).exit_code, 0);
  ASSERT_OK_AND_ASSIGN(TPM2B_DIGEST ours,
                       tpm::AuthorizePolicy(p_name_, tpm::DuplicationPolicyRef()));
  EXPECT_EQ(HexEncode(testing::ReadFileOrDie(policy)), HexEncode(ByteView(ours.buffer, ours.size)));
}

INSTANTIATE_TEST_SUITE_P(PolicyKey, AuthorizeTest, ::testing::Values("RSA", "EC"),
                         [](const auto& info) { return std::string(info.param); });

}  // namespace
}  // namespace tpmma::esys
