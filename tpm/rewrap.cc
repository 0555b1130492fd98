// SPDX-License-Identifier: GPL-2.0-or-later
#include "tpm/rewrap.h"

#include <cstring>

#include "tpm/marshal.h"
#include "tpm/public.h"
#include "tpm/wrap.h"

namespace tpmma::tpm {

Result<Rewrapped> Rewrap(EVP_PKEY* ma_private, const TPMT_PUBLIC& ma_public,
                         const TPM2B_PUBLIC& object_public, const TPM2B_PRIVATE& duplicate,
                         const TPM2B_ENCRYPTED_SECRET& encrypted_seed,
                         const TPM2B_PUBLIC& new_parent) {
  // Refuse an unsuitable target before doing any secret work.
  if (Status s = CheckStorageParent(new_parent.publicArea); !s.ok()) {
    return Error(s.WithContext("new parent"));
  }
  TPMMA_ASSIGN_OR_RETURN(Bytes object_name, ComputeName(object_public.publicArea));
  TPMMA_ASSIGN_OR_RETURN(
      SecureBytes seed,
      RecoverSeed(ma_private, ma_public, ByteView(encrypted_seed.secret, encrypted_seed.size),
                  kDuplicateLabel));
  TPMMA_ASSIGN_OR_RETURN(
      SecureBytes inner,
      OuterUnwrap(ma_public, seed, object_name, ByteView(duplicate.buffer, duplicate.size)));
  TPMMA_ASSIGN_OR_RETURN(Seed new_seed, CreateSeed(new_parent.publicArea, kDuplicateLabel));
  TPMMA_ASSIGN_OR_RETURN(Bytes body,
                         OuterWrap(new_parent.publicArea, new_seed.seed, object_name, inner));
  Rewrapped out;
  if (body.size() > sizeof(out.duplicate.buffer) ||
      new_seed.encrypted.size() > sizeof(out.encrypted_seed.secret)) {
    return Error(Code::kLimitExceeded, "re-wrapped duplicate does not fit a TPM2B_PRIVATE");
  }
  out.duplicate.size = static_cast<uint16_t>(body.size());
  std::memcpy(out.duplicate.buffer, body.data(), body.size());
  out.encrypted_seed.size = static_cast<uint16_t>(new_seed.encrypted.size());
  std::memcpy(out.encrypted_seed.secret, new_seed.encrypted.data(), new_seed.encrypted.size());
  return out;
}

}  // namespace tpmma::tpm
