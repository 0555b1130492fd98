// SPDX-License-Identifier: GPL-2.0-or-later
// Cross-site request forgery. An operator's browser presents the client certificate to any
// page that asks, so a page on another site could post a form to the console with the
// operator's authority. Three locks, each enough on its own against today's browsers:
//   - the cookie is SameSite=Strict (a cross-site POST carries none) and __Host- (only this
//     origin sets it, over HTTPS, for the whole host);
//   - every form carries a token, the HMAC of the operator's certificate fingerprint under
//     the cookie's random value: a form from another site cannot know it, and a token is
//     good only with the certificate it was made for. Stateless, so any instance behind a
//     load balancer checks what another one issued;
//   - a POST's Origin must be this host (and Sec-Fetch-Site, when sent, same-origin).
#pragma once

#include <string>

#include "common/status.h"
#include "server/endpoint.h"

namespace tpmma::server::console {

inline constexpr char kCsrfCookie[] = "__Host-tpmma-csrf";

// A fresh cookie value: 32 random bytes, hex.
Result<std::string> NewCsrfCookieValue();
// The Set-Cookie value that stores it.
std::string CsrfSetCookie(const std::string& value);
// The token a form carries, for this cookie value and certificate.
std::string CsrfToken(const std::string& cookie_value, const std::string& cert_fingerprint);

// kPermissionDenied, saying which lock held, unless `request` (a POST) comes from this
// origin with the cookie and a `token` that match `cert_fingerprint`.
Status CheckCsrf(const WebRequest& request, const std::string& token,
                 const std::string& cert_fingerprint);

}  // namespace tpmma::server::console
