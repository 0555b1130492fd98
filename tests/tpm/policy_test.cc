// SPDX-License-Identifier: GPL-2.0-or-later
// The policy digests of tpm/policy.h in software (PolicyDuplicationSelect, PolicyAuthorize and
// the aHash the MA's policy-signing key signs): known answers and the input checks. That the TPM
// computes the same digest is checked on swtpm (tests/tpm/esys/esys_test.cc
// DuplicationPolicyInSoftwareEqualsTrialSession, and the MaKey tests in
// tests/server/ma_service_swtpm_test.cc, one of them for this very Name).
#include "tpm/policy.h"

#include <gtest/gtest.h>

#include "tests/support/status_testing.h"

namespace tpmma::tpm {
namespace {

Bytes TestName() {
  Bytes name = {0x00, 0x0b};
  for (int i = 0; i < 32; ++i) name.push_back(static_cast<uint8_t>(i * 7));
  return name;
}

TEST(DuplicationSelectPolicy, KnownAnswer) {
  // SHA-256(0^32 || 00000188 || name || 00), computed with Python's hashlib.
  ASSERT_OK_AND_ASSIGN(TPM2B_DIGEST d, DuplicationSelectPolicy(TestName()));
  EXPECT_EQ(HexEncode(ByteView(d.buffer, d.size)),
            "1d743b6cfb5970bc413ffb354b5d39cd2c3b9537c61fefdf98c3c46fd8a9cfbf");
}

TEST(DuplicationSelectPolicy, DependsOnEveryByteOfTheName) {
  ASSERT_OK_AND_ASSIGN(TPM2B_DIGEST a, DuplicationSelectPolicy(TestName()));
  Bytes other = TestName();
  other.back() ^= 1;
  ASSERT_OK_AND_ASSIGN(TPM2B_DIGEST b, DuplicationSelectPolicy(other));
  EXPECT_NE(HexEncode(ByteView(a.buffer, a.size)), HexEncode(ByteView(b.buffer, b.size)));
}

TEST(DuplicationSelectPolicy, RefusesAnythingButASha256Name) {
  Bytes sha1_name = {0x00, 0x04};
  sha1_name.resize(22, 1);
  Bytes wrong_alg = TestName();
  wrong_alg[1] = 0x0c;  // SHA-384's id with a 32-byte digest
  Bytes long_name = TestName();
  long_name.push_back(0);
  for (const Bytes& bad :
       {Bytes{}, Bytes{0x00, 0x0b}, Bytes(20, 1), Bytes(34, 1), sha1_name, wrong_alg, long_name}) {
    auto r = DuplicationSelectPolicy(bad);
    ASSERT_FALSE(r.has_value()) << HexEncode(bad);
    EXPECT_EQ(r.error().code(), Code::kInvalidArgument);
  }
}

// Known answers computed with Python's hashlib, as ../shared/reference/policy-authorize's
// polcalc.py does (run.sh checks that arithmetic against a trial session and
// tpm2_verifysignature; tests/tpm/esys checks ours against swtpm).
TEST(AuthorizePolicy, KnownAnswers) {
  EXPECT_EQ(HexEncode(DuplicationPolicyRef()), HexEncode(ToBytes("tpm-ma duplicate")));
  ASSERT_OK_AND_ASSIGN(TPM2B_DIGEST mrk, AuthorizePolicy(TestName(), DuplicationPolicyRef()));
  // SHA-256(SHA-256(0^32 || 0000016a || name) || "tpm-ma duplicate")
  EXPECT_EQ(HexEncode(ByteView(mrk.buffer, mrk.size)),
            "cada7c41e326de10b2261809b31a171f4e821792375bac3b2d534019864e873e");
  ASSERT_OK_AND_ASSIGN(TPM2B_DIGEST approved, DuplicationSelectPolicy(TestName()));
  ASSERT_OK_AND_ASSIGN(TPM2B_DIGEST ahash, AuthorizeAHash(approved, DuplicationPolicyRef()));
  // SHA-256(approvedPolicy || "tpm-ma duplicate")
  EXPECT_EQ(HexEncode(ByteView(ahash.buffer, ahash.size)),
            "a62ebdeabb7b53ac88c1147d2b949e90fbd1ff1868a59c6f73f963455bf567b0");
}

TEST(AuthorizePolicy, RefusesBadNamesRefsAndDigests) {
  EXPECT_EQ(AuthorizePolicy(Bytes(34, 1), DuplicationPolicyRef()).error().code(),
            Code::kInvalidArgument);
  EXPECT_EQ(AuthorizePolicy(TestName(), Bytes(65, 1)).error().code(), Code::kInvalidArgument);
  EXPECT_TRUE(AuthorizePolicy(TestName(), Bytes(64, 1)).has_value());
  TPM2B_DIGEST short_digest{};
  short_digest.size = 20;
  EXPECT_EQ(AuthorizeAHash(short_digest, DuplicationPolicyRef()).error().code(),
            Code::kInvalidArgument);
}

}  // namespace
}  // namespace tpmma::tpm
