// SPDX-License-Identifier: GPL-2.0-or-later
#include "tpm/credential.h"

#include <cstring>

#include "tpm/marshal.h"
#include "tpm/public.h"
#include "tpm/wrap.h"

namespace tpmma::tpm {

Result<Credential> MakeCredential(const TPM2B_PUBLIC& ek, ByteView ak_name, ByteView secret) {
  const TPMT_PUBLIC& ek_pub = ek.publicArea;
  TPMMA_ASSIGN_OR_RETURN(size_t dsize, DigestSize(ek_pub.nameAlg));
  if (secret.empty() || secret.size() > dsize) {
    return Error(Code::kInvalidArgument, "credential secret must be 1.." + std::to_string(dsize) +
                                             " bytes for the EK nameAlg");
  }
  if (ak_name.size() < 2 + 20) return Error(Code::kInvalidArgument, "AK Name is too short");
  TPMMA_ASSIGN_OR_RETURN(Seed seed, CreateSeed(ek_pub, kIdentityLabel));
  // The credential is a TPM2B_DIGEST: size-prefixed secret, encrypted as a whole.
  SecureBytes plain;
  plain.push_back(static_cast<uint8_t>(secret.size() >> 8));
  plain.push_back(static_cast<uint8_t>(secret.size()));
  plain.insert(plain.end(), secret.begin(), secret.end());
  TPMMA_ASSIGN_OR_RETURN(Bytes body, OuterWrap(ek_pub, seed.seed, ak_name, plain));
  Credential out;
  if (body.size() > sizeof(out.id_object.credential) ||
      seed.encrypted.size() > sizeof(out.encrypted_secret.secret)) {
    return Error(Code::kInternal, "credential does not fit its TPM2B");
  }
  out.id_object.size = static_cast<uint16_t>(body.size());
  std::memcpy(out.id_object.credential, body.data(), body.size());
  out.encrypted_secret.size = static_cast<uint16_t>(seed.encrypted.size());
  std::memcpy(out.encrypted_secret.secret, seed.encrypted.data(), seed.encrypted.size());
  return out;
}

Result<Bytes> CredentialFile(const Credential& credential) {
  Bytes out = {0xBA, 0xDC, 0xC0, 0xDE, 0x00, 0x00, 0x00, 0x01};
  TPMMA_ASSIGN_OR_RETURN(Bytes id, Marshal(credential.id_object));
  TPMMA_ASSIGN_OR_RETURN(Bytes enc, Marshal(credential.encrypted_secret));
  out.insert(out.end(), id.begin(), id.end());
  out.insert(out.end(), enc.begin(), enc.end());
  return out;
}

}  // namespace tpmma::tpm
