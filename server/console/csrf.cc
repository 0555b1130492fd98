// SPDX-License-Identifier: GPL-2.0-or-later
#include "server/console/csrf.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "common/bytes.h"
#include "common/text.h"
#include "server/console/form.h"

namespace tpmma::server::console {

namespace {
constexpr std::string_view kTokenContext = "tpm-ma console form token v1\n";
}  // namespace

Result<std::string> NewCsrfCookieValue() {
  TPMMA_ASSIGN_OR_RETURN(Bytes random, RandomBytes(32));
  return HexEncode(random);
}

std::string CsrfSetCookie(const std::string& value) {
  return std::string(kCsrfCookie) + "=" + value + "; Path=/; Secure; HttpOnly; SameSite=Strict";
}

std::string CsrfToken(const std::string& cookie_value, const std::string& cert_fingerprint) {
  const std::string data = std::string(kTokenContext) + cert_fingerprint;
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (HMAC(EVP_sha256(), cookie_value.data(), static_cast<int>(cookie_value.size()),
           reinterpret_cast<const unsigned char*>(data.data()), data.size(), mac,
           &len) == nullptr) {
    return {};  // compares equal to no token a form can carry
  }
  return HexEncode(ByteView(mac, len));
}

Status CheckCsrf(const WebRequest& request, const std::string& token,
                 const std::string& cert_fingerprint) {
  if (request.origin.empty() || request.origin != "https://" + request.host) {
    return Status(Code::kPermissionDenied,
                  "a form from another site was refused (its Origin is not this console's)");
  }
  if (!request.sec_fetch_site.empty() && request.sec_fetch_site != "same-origin") {
    return Status(Code::kPermissionDenied,
                  "a form from another site was refused (Sec-Fetch-Site: " +
                      ForAudit(request.sec_fetch_site, 40) + ")");
  }
  const std::string cookie = CookieValue(request.cookie, kCsrfCookie);
  if (cookie.empty()) {
    return Status(Code::kPermissionDenied,
                  "the form came without the console's cookie: reload the page and try again");
  }
  const std::string expected = CsrfToken(cookie, cert_fingerprint);
  if (token.empty() || expected.empty() || !ConstantTimeEqual(View(token), View(expected))) {
    return Status(Code::kPermissionDenied,
                  "the form's token is not this session's: reload the page and try again");
  }
  return Status::Ok();
}

}  // namespace tpmma::server::console
