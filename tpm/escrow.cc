// SPDX-License-Identifier: GPL-2.0-or-later
#include "tpm/escrow.h"

#include <openssl/evp.h>
#include <openssl/sha.h>

#include <string>

#include "common/openssl.h"
#include "tpm/public.h"
#include "tpm/wrap.h"

namespace tpmma::tpm {
namespace {

constexpr std::string_view kBindingContext = "tpm-ma escrow v1";
constexpr size_t kMinInnerKey = 16;
constexpr size_t kMaxInnerKey = 32;

}  // namespace

Bytes EscrowOaepLabel() {
  Bytes l(kEscrowLabel.begin(), kEscrowLabel.end());
  l.push_back(0);
  return l;
}

Status CheckEscrowKey(const TPMT_PUBLIC& key) {
  if (key.type != TPM2_ALG_RSA) return Status(Code::kInvalidArgument, "escrow key must be RSA");
  const TPMS_RSA_PARMS& rsa = key.parameters.rsaDetail;
  if (rsa.keyBits < 2048) {
    return Status(Code::kInvalidArgument, "escrow key must have at least 2048 bits");
  }
  const TPMA_OBJECT a = key.objectAttributes;
  if (!(a & TPMA_OBJECT_DECRYPT) || (a & TPMA_OBJECT_RESTRICTED) ||
      (a & TPMA_OBJECT_SIGN_ENCRYPT)) {
    return Status(Code::kInvalidArgument,
                  "escrow key must be a plain decryption key (decrypt set, restricted and sign "
                  "clear)");
  }
  if (rsa.symmetric.algorithm != TPM2_ALG_NULL) {
    return Status(Code::kInvalidArgument, "escrow key must have no symmetric algorithm");
  }
  if (rsa.scheme.scheme != TPM2_ALG_NULL &&
      !(rsa.scheme.scheme == TPM2_ALG_OAEP && rsa.scheme.details.oaep.hashAlg == TPM2_ALG_SHA256)) {
    return Status(Code::kInvalidArgument, "escrow key scheme must be NULL or OAEP-SHA256");
  }
  return Status::Ok();
}

Result<TPM2B_PUBLIC> EscrowPublicFromEvp(const EVP_PKEY* key) {
  TPMMA_ASSIGN_OR_RETURN(TPM2B_PUBLIC pub,
                         PublicFromEvp(key, PublicTemplate{.attributes = TPMA_OBJECT_DECRYPT |
                                                                         TPMA_OBJECT_USERWITHAUTH,
                                                           .name_alg = TPM2_ALG_SHA256,
                                                           .symmetric = TPM2_ALG_NULL,
                                                           .sym_bits = 0}));
  TPMMA_RETURN_IF_ERROR(CheckEscrowKey(pub.publicArea));
  return pub;
}

Result<Bytes> EscrowBinding(std::string_view platform_id, ByteView mrk_name) {
  if (platform_id.empty() || mrk_name.empty()) {
    return Error(Code::kInvalidArgument, "escrow binding needs a platform id and an MRK Name");
  }
  Bytes data(kBindingContext.begin(), kBindingContext.end());
  data.push_back(0);
  data.insert(data.end(), platform_id.begin(), platform_id.end());
  data.push_back(0);
  data.insert(data.end(), mrk_name.begin(), mrk_name.end());
  Bytes digest(SHA256_DIGEST_LENGTH);
  if (SHA256(data.data(), data.size(), digest.data()) == nullptr) {
    return Error(OpensslError("SHA256"));
  }
  return digest;
}

Result<Bytes> EscrowEncrypt(const TPMT_PUBLIC& escrow_key, ByteView inner_key,
                            std::string_view platform_id, ByteView mrk_name) {
  TPMMA_RETURN_IF_ERROR(CheckEscrowKey(escrow_key));
  if (inner_key.size() < kMinInnerKey || inner_key.size() > kMaxInnerKey) {
    return Error(Code::kInvalidArgument, "inner key must be 16..32 bytes");
  }
  TPMMA_ASSIGN_OR_RETURN(Bytes binding, EscrowBinding(platform_id, mrk_name));
  SecureBytes plain(inner_key.begin(), inner_key.end());
  plain.insert(plain.end(), binding.begin(), binding.end());
  TPMMA_ASSIGN_OR_RETURN(EvpPkeyPtr pub, PublicToEvp(escrow_key));
  EvpPkeyCtxPtr ctx(EVP_PKEY_CTX_new_from_pkey(nullptr, pub.get(), nullptr));
  if (!ctx || EVP_PKEY_encrypt_init(ctx.get()) != 1) {
    return Error(OpensslError("EVP_PKEY_encrypt_init"));
  }
  TPMMA_RETURN_IF_ERROR(SetOaepParameters(ctx.get(), EVP_sha256(), kEscrowLabel));
  size_t len = 0;
  if (EVP_PKEY_encrypt(ctx.get(), nullptr, &len, plain.data(), plain.size()) != 1) {
    return Error(OpensslError("EVP_PKEY_encrypt"));
  }
  Bytes out(len);
  if (EVP_PKEY_encrypt(ctx.get(), out.data(), &len, plain.data(), plain.size()) != 1) {
    return Error(OpensslError("EVP_PKEY_encrypt"));
  }
  out.resize(len);
  return out;
}

Result<SecureBytes> EscrowDecrypt(EVP_PKEY* escrow_private, ByteView ciphertext) {
  EvpPkeyCtxPtr ctx(EVP_PKEY_CTX_new_from_pkey(nullptr, escrow_private, nullptr));
  if (!ctx || EVP_PKEY_decrypt_init(ctx.get()) != 1) {
    return Error(OpensslError("EVP_PKEY_decrypt_init"));
  }
  TPMMA_RETURN_IF_ERROR(SetOaepParameters(ctx.get(), EVP_sha256(), kEscrowLabel));
  size_t len = 0;
  if (EVP_PKEY_decrypt(ctx.get(), nullptr, &len, ciphertext.data(), ciphertext.size()) != 1) {
    return Error(Code::kIntegrityFailure,
                 "escrowed inner key does not decrypt with the escrow key");
  }
  SecureBytes plain(len);
  if (EVP_PKEY_decrypt(ctx.get(), plain.data(), &len, ciphertext.data(), ciphertext.size()) != 1) {
    return Error(Code::kIntegrityFailure,
                 "escrowed inner key does not decrypt with the escrow key");
  }
  plain.resize(len);
  return plain;
}

Result<SecureBytes> EscrowOpen(const SecureBytes& plaintext, std::string_view platform_id,
                               ByteView mrk_name) {
  if (plaintext.size() < kMinInnerKey + kEscrowBindingBytes ||
      plaintext.size() > kMaxInnerKey + kEscrowBindingBytes) {
    return Error(Code::kMalformed, "escrowed inner key has the wrong size");
  }
  const size_t key_len = plaintext.size() - kEscrowBindingBytes;
  TPMMA_ASSIGN_OR_RETURN(Bytes binding, EscrowBinding(platform_id, mrk_name));
  if (!ConstantTimeEqual(ByteView(plaintext.data() + key_len, kEscrowBindingBytes), binding)) {
    return Error(Code::kIntegrityFailure,
                 "escrowed inner key was made for another platform or MRK than this package's");
  }
  return SecureBytes(plaintext.begin(), plaintext.begin() + static_cast<ptrdiff_t>(key_len));
}

}  // namespace tpmma::tpm
