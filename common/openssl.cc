// SPDX-License-Identifier: GPL-2.0-or-later
#include "common/openssl.h"

#include <openssl/err.h>

#include <string>

namespace tpmma {

Status OpensslError(std::string_view call) {
  std::string msg(call);
  msg += " failed";
  unsigned long err;  // NOLINT: OpenSSL's type
  bool first = true;
  while ((err = ERR_get_error()) != 0) {
    char buf[256];
    ERR_error_string_n(err, buf, sizeof buf);
    msg += first ? ": " : "; ";
    msg += buf;
    first = false;
  }
  return Status(Code::kCryptoError, std::move(msg));
}

Result<Bytes> SignSha256(EVP_PKEY* key, ByteView data, std::string_view what) {
  EvpMdCtxPtr ctx(EVP_MD_CTX_new());
  size_t len = 0;
  if (!ctx || EVP_DigestSignInit(ctx.get(), nullptr, EVP_sha256(), nullptr, key) != 1 ||
      EVP_DigestSign(ctx.get(), nullptr, &len, data.data(), data.size()) != 1) {
    return Error(OpensslError("EVP_DigestSign (" + std::string(what) + ")"));
  }
  Bytes sig(len);
  if (EVP_DigestSign(ctx.get(), sig.data(), &len, data.data(), data.size()) != 1) {
    return Error(OpensslError("EVP_DigestSign (" + std::string(what) + ")"));
  }
  sig.resize(len);
  return sig;
}

}  // namespace tpmma
