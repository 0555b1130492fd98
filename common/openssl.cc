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

}  // namespace tpmma
