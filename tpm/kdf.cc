// SPDX-License-Identifier: GPL-2.0-or-later
// KDFa maps exactly onto OpenSSL's KBKDF (mode=counter, mac=HMAC): OpenSSL 3.0 hashes
// [i]32 || Label || 0x00 || Context || [L]32 with L = output length in bits, the separator
// and L being on by default; TPM's contextU || contextV is the KBKDF context. KDFe is
// SSKDF with a digest: H([i]32 || Z || FixedInfo), FixedInfo = label || 0x00 || U || V.
// Both are checked against an independent HMAC/hash loop in tests/tpm/kdf_test.cc.
#include "tpm/kdf.h"

#include <openssl/core_names.h>
#include <openssl/kdf.h>

#include <memory>
#include <string>
#include <vector>

#include "common/openssl.h"
#include "tpm/public.h"

namespace tpmma::tpm {

namespace {

using EvpKdfPtr = std::unique_ptr<EVP_KDF, OpensslDeleter<EVP_KDF, EVP_KDF_free>>;
using EvpKdfCtxPtr = std::unique_ptr<EVP_KDF_CTX, OpensslDeleter<EVP_KDF_CTX, EVP_KDF_CTX_free>>;

Result<SecureBytes> Derive(const char* kdf_name, OSSL_PARAM* params, size_t bits) {
  if (bits == 0 || bits % 8 != 0) {
    return Error(Code::kInvalidArgument, "KDF output length must be a positive multiple of 8 bits");
  }
  EvpKdfPtr kdf(EVP_KDF_fetch(nullptr, kdf_name, nullptr));
  if (!kdf) return Error(OpensslError(std::string("EVP_KDF_fetch(") + kdf_name + ")"));
  EvpKdfCtxPtr ctx(EVP_KDF_CTX_new(kdf.get()));
  if (!ctx) return Error(OpensslError("EVP_KDF_CTX_new"));
  SecureBytes out(bits / 8);
  if (EVP_KDF_derive(ctx.get(), out.data(), out.size(), params) != 1) {
    return Error(OpensslError(std::string("EVP_KDF_derive(") + kdf_name + ")"));
  }
  return out;
}

// OSSL_PARAM wants non-const pointers even for inputs it only reads.
void* Mut(const void* p) {
  return const_cast<void*>(p);
}

}  // namespace

Result<SecureBytes> KDFa(TPMI_ALG_HASH hash, ByteView key, std::string_view label,
                         ByteView context_u, ByteView context_v, size_t bits) {
  TPMMA_ASSIGN_OR_RETURN(const EVP_MD* md, HashMd(hash));
  if (key.empty()) return Error(Code::kInvalidArgument, "KDFa key is empty");
  SecureBytes context(context_u.begin(), context_u.end());
  context.insert(context.end(), context_v.begin(), context_v.end());
  const char* digest = EVP_MD_get0_name(md);
  // Empty label/context are left out rather than passed as (nullptr, 0) octet strings.
  std::vector<OSSL_PARAM> params = {
      OSSL_PARAM_utf8_string(OSSL_KDF_PARAM_MODE, Mut("counter"), 0),
      OSSL_PARAM_utf8_string(OSSL_KDF_PARAM_MAC, Mut("HMAC"), 0),
      OSSL_PARAM_utf8_string(OSSL_KDF_PARAM_DIGEST, Mut(digest), 0),
      OSSL_PARAM_octet_string(OSSL_KDF_PARAM_KEY, Mut(key.data()), key.size()),
  };
  if (!label.empty()) {
    params.push_back(OSSL_PARAM_octet_string(OSSL_KDF_PARAM_SALT, Mut(label.data()), label.size()));
  }
  if (!context.empty()) {
    params.push_back(
        OSSL_PARAM_octet_string(OSSL_KDF_PARAM_INFO, Mut(context.data()), context.size()));
  }
  params.push_back(OSSL_PARAM_END);
  return Derive("KBKDF", params.data(), bits);
}

Result<SecureBytes> KDFe(TPMI_ALG_HASH hash, ByteView z, std::string_view label, ByteView party_u,
                         ByteView party_v, size_t bits) {
  TPMMA_ASSIGN_OR_RETURN(const EVP_MD* md, HashMd(hash));
  Bytes info(label.begin(), label.end());
  info.push_back(0);
  info.insert(info.end(), party_u.begin(), party_u.end());
  info.insert(info.end(), party_v.begin(), party_v.end());
  const char* digest = EVP_MD_get0_name(md);
  OSSL_PARAM params[] = {
      OSSL_PARAM_utf8_string(OSSL_KDF_PARAM_DIGEST, Mut(digest), 0),
      OSSL_PARAM_octet_string(OSSL_KDF_PARAM_KEY, Mut(z.data()), z.size()),
      OSSL_PARAM_octet_string(OSSL_KDF_PARAM_INFO, Mut(info.data()), info.size()),
      OSSL_PARAM_END,
  };
  return Derive("SSKDF", params, bits);
}

}  // namespace tpmma::tpm
