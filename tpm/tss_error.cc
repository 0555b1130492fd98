// SPDX-License-Identifier: GPL-2.0-or-later
#include "tpm/tss_error.h"

#include <cstdio>
#include <string>

#include <tss2/tss2_rc.h>
#include <tss2/tss2_tpm2_types.h>

namespace tpmma::tpm {

namespace {

bool Contains(std::string_view haystack, std::string_view needle) {
  return haystack.find(needle) != std::string_view::npos;
}

// Plain words for the codes operators actually meet; empty if we have nothing to add.
std::string_view Explain(std::string_view call, uint32_t base) {
  const bool import = Contains(call, "Import");
  const bool activate = Contains(call, "ActivateCredential");
  switch (base) {
    case TPM2_RC_FAILURE:
      // libtpms reports a seed that does not decrypt under the parent (wrong OAEP key/ECDH)
      // as TPM_RC_FAILURE rather than a parameter error.
      if (import) return "this backup was not wrapped for this TPM (wrong parent key)";
      if (activate) return "the credential was not made for this TPM's endorsement key";
      return "the TPM reported an internal failure";
    case TPM2_RC_INTEGRITY:
      if (import) return "the backup is damaged or was tampered with";
      if (activate) return "the credential is damaged or was made for another key";
      return "an integrity check failed: the blob is damaged, tampered with or bound to another "
             "key";
    case TPM2_RC_ATTRIBUTES:
      if (import) return "the inner wrapper key is missing or wrong for this backup";
      return "the object attributes are not allowed for this operation";
    case TPM2_RC_SIZE:
      // Without (or with the wrong) inner key the TPM parses ciphertext as a sensitive area.
      if (import) return "the inner wrapper key is missing or wrong, or the backup is damaged";
      return "a structure has the wrong size";
    case TPM2_RC_SYMMETRIC:
      if (import) return "the inner wrapper key or algorithm is missing or wrong";
      return "the symmetric algorithm is not acceptable";
    case TPM2_RC_KEY_SIZE:
      if (import) return "the inner wrapper key has the wrong size";
      return "a key has the wrong size";
    case TPM2_RC_OBJECT_MEMORY:
      return "the TPM is out of object slots (flush transient objects you no longer need)";
    case TPM2_RC_SESSION_MEMORY:
      return "the TPM is out of session slots (flush sessions you no longer need)";
    case TPM2_RC_AUTH_FAIL:
    case TPM2_RC_BAD_AUTH:
      return "wrong authorization value (password) for the key or hierarchy";
    case TPM2_RC_POLICY_FAIL:
      return "the policy session does not satisfy the object's authPolicy";
    case TPM2_RC_LOCKOUT:
      return "the TPM is in dictionary-attack lockout; wait or reset the lockout";
    case TPM2_RC_RETRY:
    case TPM2_RC_YIELDED:
    case TPM2_RC_TESTING:
      return "the TPM is busy; retrying may help";
    case TPM2_RC_HANDLE:
      return "the handle does not refer to a loaded object";
    case TPM2_RC_INITIALIZE:
      return "the TPM has not been started up (TPM2_Startup missing)";
    case TPM2_RC_BINDING:
      return "the public and private parts do not belong together";
    default:
      return {};
  }
}

}  // namespace

bool FromLocalTpm(const Status& s) {
  const std::string& m = s.message();
  return m.find("Esys_") != std::string::npos || m.find("Tss2_Tcti") != std::string::npos;
}

uint32_t TpmBaseRc(TSS2_RC rc) {
  const TSS2_RC layer = rc & TSS2_RC_LAYER_MASK;
  if (layer != TSS2_TPM_RC_LAYER && layer != TSS2_RESMGR_TPM_RC_LAYER) return 0;
  const uint32_t code = rc & 0xFFFF;
  if (code & TPM2_RC_FMT1) {
    // Format one: bits 0-5 error number, bit 7 the format flag; bits 6 and 8-11 only say
    // which parameter, handle or session was at fault.
    return code & (TPM2_RC_FMT1 | 0x3F);
  }
  return code & 0xFFF;
}

Status CheckRc(std::string_view call, TSS2_RC rc) {
  if (rc == TSS2_RC_SUCCESS) return Status::Ok();
  char hex[16];
  std::snprintf(hex, sizeof hex, "0x%08x", rc);
  std::string msg(call);
  msg += " failed: ";
  msg += hex;
  const char* decoded = Tss2_RC_Decode(rc);
  if (decoded != nullptr) {
    msg += " (";
    msg += decoded;
    msg += ")";
  }
  const TSS2_RC layer = rc & TSS2_RC_LAYER_MASK;
  const uint32_t base_code = rc & 0xFFFF;
  if (layer == TSS2_MU_RC_LAYER) {
    return Status(Code::kMalformed, std::move(msg) + ": malformed or truncated TPM structure");
  }
  if (layer == TSS2_TCTI_RC_LAYER &&
      (base_code == TSS2_BASE_RC_IO_ERROR || base_code == TSS2_BASE_RC_NO_CONNECTION ||
       base_code == TSS2_BASE_RC_TRY_AGAIN || base_code == TSS2_BASE_RC_GENERAL_FAILURE)) {
    return Status(Code::kUnavailable, std::move(msg) + ": cannot reach the TPM");
  }
  // ESAPI refuses every call after one whose TCTI failed (its context is in an internal
  // error state); with only synchronous calls that is the one way to get BAD_SEQUENCE.
  if (rc == TSS2_ESYS_RC_BAD_SEQUENCE) {
    return Status(Code::kUnavailable,
                  std::move(msg) + ": an earlier command lost the TPM: cannot reach the TPM");
  }
  std::string_view plain = Explain(call, TpmBaseRc(rc));
  // TPM2_Import's 4th parameter is inSymSeed: any error there means the seed was encrypted
  // to another parent (e.g. an ECC-wrapped backup offered to an RSA SRK).
  constexpr uint32_t kInSymSeed = 4;
  if (Contains(call, "Import") && layer == TSS2_TPM_RC_LAYER && (base_code & TPM2_RC_FMT1) &&
      (base_code & TPM2_RC_P) && ((base_code >> 8) & 0xF) == kInSymSeed) {
    plain = "this backup was not wrapped for this TPM (its seed does not match this parent key)";
  }
  if (!plain.empty()) {
    msg += ": ";
    msg += plain;
  }
  return Status(Code::kTpmError, std::move(msg));
}

}  // namespace tpmma::tpm
