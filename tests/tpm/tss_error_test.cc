// SPDX-License-Identifier: GPL-2.0-or-later
#include "tpm/tss_error.h"

#include <gtest/gtest.h>
#include <tss2/tss2_tpm2_types.h>

namespace tpmma::tpm {
namespace {

bool Has(const Status& s, std::string_view text) {
  return s.message().find(text) != std::string::npos;
}

TEST(TssErrorTest, SuccessIsOk) {
  EXPECT_TRUE(CheckRc("Esys_Load", TSS2_RC_SUCCESS).ok());
}

TEST(TssErrorTest, StripsParameterHandleSessionNumbers) {
  EXPECT_EQ(TpmBaseRc(0x3DF), TPM2_RC_INTEGRITY);   // parameter 3
  EXPECT_EQ(TpmBaseRc(0x1C2), TPM2_RC_ATTRIBUTES);  // parameter 1
  EXPECT_EQ(TpmBaseRc(0x98E), TPM2_RC_AUTH_FAIL);   // session 1
  EXPECT_EQ(TpmBaseRc(0x18B), TPM2_RC_HANDLE);      // handle 1
  EXPECT_EQ(TpmBaseRc(0x902), TPM2_RC_OBJECT_MEMORY);
  EXPECT_EQ(TpmBaseRc(0x101), TPM2_RC_FAILURE);
  EXPECT_EQ(TpmBaseRc(TSS2_RESMGR_TPM_RC_LAYER | 0x3DF), TPM2_RC_INTEGRITY);
  EXPECT_EQ(TpmBaseRc(TSS2_MU_RC_BAD_SIZE), 0u);
}

TEST(TssErrorTest, ImportFailureMeansWrongTpm) {
  Status s = CheckRc("Esys_Import", 0x101);
  EXPECT_EQ(s.code(), Code::kTpmError);
  EXPECT_TRUE(Has(s, "Esys_Import")) << s.message();
  EXPECT_TRUE(Has(s, "0x00000101")) << s.message();
  EXPECT_TRUE(Has(s, "not wrapped for this TPM")) << s.message();
  EXPECT_FALSE(Has(CheckRc("Esys_Sign", 0x101), "not wrapped for this TPM"));
}

TEST(TssErrorTest, ImportSeedParameterErrorMeansWrongTpm) {
  // 0x4D5: TPM_RC_SIZE on parameter 4 (inSymSeed): an ECC-wrapped seed under an RSA SRK.
  EXPECT_TRUE(Has(CheckRc("Esys_Import", 0x4D5), "not wrapped for this TPM"));
  // The same code on parameter 3 (duplicate) is about the inner wrapper, not the parent.
  EXPECT_TRUE(Has(CheckRc("Esys_Import", 0x3D5), "inner wrapper key"));
  EXPECT_FALSE(Has(CheckRc("Esys_Load", 0x4D5), "not wrapped for this TPM"));
}

TEST(TssErrorTest, KnownCodesInPlainWords) {
  EXPECT_TRUE(Has(CheckRc("Esys_Import", 0x3DF), "damaged or was tampered with"));
  EXPECT_TRUE(Has(CheckRc("Esys_Import", 0x1C2), "inner wrapper key"));
  EXPECT_TRUE(Has(CheckRc("Esys_Import", 0x3D5), "inner wrapper key"));
  EXPECT_TRUE(Has(CheckRc("Esys_Load", 0x902), "out of object slots"));
  EXPECT_TRUE(Has(CheckRc("Esys_Load", 0x98E), "wrong authorization"));
  EXPECT_TRUE(Has(CheckRc("Esys_Load", 0x9A2), "wrong authorization"));
  EXPECT_TRUE(Has(CheckRc("Esys_Duplicate", 0x99D), "policy"));  // POLICY_FAIL, session 1
  EXPECT_TRUE(Has(CheckRc("Esys_Unseal", 0x921), "lockout"));
  // Tss2_RC_Decode's text is included too.
  EXPECT_TRUE(Has(CheckRc("Esys_Load", 0x902), "tpm:"));
}

TEST(TssErrorTest, LayersMapToCodes) {
  Status tcti = CheckRc("Esys_Initialize", TSS2_TCTI_RC_IO_ERROR);
  EXPECT_EQ(tcti.code(), Code::kUnavailable);
  EXPECT_TRUE(Has(tcti, "cannot reach the TPM"));
  EXPECT_EQ(CheckRc("Esys_Initialize", TSS2_TCTI_RC_NO_CONNECTION).code(), Code::kUnavailable);
  EXPECT_EQ(CheckRc("Tss2_MU_TPM2B_PUBLIC_Unmarshal", TSS2_MU_RC_INSUFFICIENT_BUFFER).code(),
            Code::kMalformed);
}

// After a command's TCTI failed, ESAPI answers BAD_SEQUENCE to every later call: that is
// the TPM gone too (lms_tpm_fault_test kills swtpm there), not a bug of ours to report.
TEST(TssErrorTest, BadSequenceAfterALostTpmIsUnavailable) {
  Status s = CheckRc("Esys_Certify", TSS2_ESYS_RC_BAD_SEQUENCE);
  EXPECT_EQ(s.code(), Code::kUnavailable);
  EXPECT_TRUE(Has(s, "an earlier command lost the TPM"));
  EXPECT_EQ(CheckRc("Esys_Certify", TSS2_ESYS_RC_BAD_REFERENCE).code(), Code::kTpmError);
}

// What lms words as "the TPM failed" rather than "the MA refused".
TEST(TssErrorTest, FromLocalTpmTellsTheTpmFromTheMa) {
  EXPECT_TRUE(FromLocalTpm(CheckRc("Esys_Certify", TSS2_TCTI_RC_IO_ERROR)));
  EXPECT_TRUE(FromLocalTpm(CheckRc("Tss2_TctiLdr_Initialize", TSS2_TCTI_RC_IO_ERROR)));
  // Bytes that do not parse may have come from the MA.
  EXPECT_FALSE(FromLocalTpm(CheckRc("Tss2_MU_TPM2B_PUBLIC_Unmarshal", TSS2_MU_RC_BAD_SIZE)));
  // A fault from the MA (its TPM names are TPM2_*, never Esys_*).
  EXPECT_FALSE(FromLocalTpm(Status(Code::kUnavailable,
                                   "the MA key's TPM is not available: "
                                   "TPM2_Load failed: cannot reach the TPM")));
}

}  // namespace
}  // namespace tpmma::tpm
