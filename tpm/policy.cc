// SPDX-License-Identifier: GPL-2.0-or-later
#include "tpm/policy.h"

#include <openssl/evp.h>

#include <string>

#include "common/openssl.h"

namespace tpmma::tpm {

Result<TPM2B_DIGEST> DuplicationSelectPolicy(ByteView new_parent_name) {
  if (new_parent_name.size() != 34 || new_parent_name[0] != 0x00 || new_parent_name[1] != 0x0b) {
    return Error(Code::kInvalidArgument,
                 "the new parent Name must be a SHA-256 Name (34 bytes starting 000b), got " +
                     std::to_string(new_parent_name.size()) + " bytes");
  }
  const uint8_t zeros[32] = {};
  const uint8_t cc[4] = {0x00, 0x00, 0x01, 0x88};  // TPM2_CC_PolicyDuplicationSelect
  static_assert(TPM2_CC_PolicyDuplicationSelect == 0x188);
  const uint8_t include_object = TPM2_NO;
  EvpMdCtxPtr md(EVP_MD_CTX_new());
  TPM2B_DIGEST out{};
  unsigned int len = 0;
  if (!md || EVP_DigestInit_ex(md.get(), EVP_sha256(), nullptr) != 1 ||
      EVP_DigestUpdate(md.get(), zeros, sizeof zeros) != 1 ||
      EVP_DigestUpdate(md.get(), cc, sizeof cc) != 1 ||
      EVP_DigestUpdate(md.get(), new_parent_name.data(), new_parent_name.size()) != 1 ||
      EVP_DigestUpdate(md.get(), &include_object, 1) != 1 ||
      EVP_DigestFinal_ex(md.get(), out.buffer, &len) != 1) {
    return Error(OpensslError("SHA-256 of PolicyDuplicationSelect"));
  }
  out.size = static_cast<uint16_t>(len);
  return out;
}

}  // namespace tpmma::tpm
