// SPDX-License-Identifier: GPL-2.0-or-later
#include "tpm/policy.h"

#include <openssl/evp.h>

#include <initializer_list>
#include <string>
#include <string_view>

#include "common/openssl.h"

namespace tpmma::tpm {

namespace {

constexpr uint8_t kPolicyRef[] = {'t', 'p', 'm', '-', 'm', 'a', ' ', 'd',
                                  'u', 'p', 'l', 'i', 'c', 'a', 't', 'e'};

Status CheckSha256Name(ByteView name, std::string_view what) {
  if (name.size() != 34 || name[0] != 0x00 || name[1] != 0x0b) {
    return Status(Code::kInvalidArgument,
                  std::string(what) + " must be a SHA-256 Name (34 bytes starting 000b), got " +
                      std::to_string(name.size()) + " bytes");
  }
  return Status::Ok();
}

// SHA-256 over the concatenation of `parts`, as a TPM2B_DIGEST.
Result<TPM2B_DIGEST> Sha256Of(std::initializer_list<ByteView> parts, std::string_view what) {
  EvpMdCtxPtr md(EVP_MD_CTX_new());
  bool ok = md && EVP_DigestInit_ex(md.get(), EVP_sha256(), nullptr) == 1;
  for (ByteView p : parts) ok = ok && EVP_DigestUpdate(md.get(), p.data(), p.size()) == 1;
  TPM2B_DIGEST out{};
  unsigned int len = 0;
  if (!ok || EVP_DigestFinal_ex(md.get(), out.buffer, &len) != 1) {
    return Error(OpensslError("SHA-256 of " + std::string(what)));
  }
  out.size = static_cast<uint16_t>(len);
  return out;
}

ByteView View(const TPM2B_DIGEST& d) {
  return ByteView(d.buffer, d.size);
}

}  // namespace

Result<TPM2B_DIGEST> DuplicationSelectPolicy(ByteView new_parent_name) {
  TPMMA_RETURN_IF_ERROR(CheckSha256Name(new_parent_name, "the new parent Name"));
  const uint8_t zeros[32] = {};
  const uint8_t cc[4] = {0x00, 0x00, 0x01, 0x88};  // TPM2_CC_PolicyDuplicationSelect
  static_assert(TPM2_CC_PolicyDuplicationSelect == 0x188);
  const uint8_t include_object = TPM2_NO;
  return Sha256Of({ByteView(zeros), ByteView(cc), new_parent_name, ByteView(&include_object, 1)},
                  "PolicyDuplicationSelect");
}

Result<TPM2B_DIGEST> AuthorizePolicy(ByteView policy_key_name, ByteView policy_ref) {
  TPMMA_RETURN_IF_ERROR(CheckSha256Name(policy_key_name, "the policy-signing key's Name"));
  if (policy_ref.size() > sizeof(TPM2B_NONCE::buffer)) {
    return Error(Code::kInvalidArgument, "a policyRef is at most 64 bytes");
  }
  const uint8_t zeros[32] = {};
  const uint8_t cc[4] = {0x00, 0x00, 0x01, 0x6a};  // TPM2_CC_PolicyAuthorize
  static_assert(TPM2_CC_PolicyAuthorize == 0x16a);
  TPMMA_ASSIGN_OR_RETURN(
      TPM2B_DIGEST key_step,
      Sha256Of({ByteView(zeros), ByteView(cc), policy_key_name}, "PolicyAuthorize"));
  return Sha256Of({View(key_step), policy_ref}, "PolicyAuthorize's policyRef");
}

Result<TPM2B_DIGEST> AuthorizeAHash(const TPM2B_DIGEST& approved_policy, ByteView policy_ref) {
  if (approved_policy.size != 32) {
    return Error(Code::kInvalidArgument, "an approved policy is a 32-byte SHA-256 digest");
  }
  return Sha256Of({View(approved_policy), policy_ref}, "the approved policy");
}

ByteView DuplicationPolicyRef() {
  return ByteView(kPolicyRef);
}

}  // namespace tpmma::tpm
