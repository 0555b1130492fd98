// SPDX-License-Identifier: GPL-2.0-or-later
// The one PolicyDuplicationSelect digest (tpm/policy.h), in software: a known answer and the
// input checks. That the TPM computes the same digest is checked on swtpm
// (tests/tpm/esys/esys_test.cc DuplicationPolicyInSoftwareEqualsTrialSession, and the
// MaKey tests in tests/server/ma_service_swtpm_test.cc, one of them for this very Name).
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

}  // namespace
}  // namespace tpmma::tpm
