// SPDX-License-Identifier: GPL-2.0-or-later
// Internal to ek_fetch.cc: one HTTPS GET (Boost.Beast over Asio SSL) with the server's
// certificate and host name verified, a timeout on every step and a cap on the reply.
#pragma once

#include <cstddef>
#include <string>

#include "common/status.h"

namespace tpmma::lms {

struct HttpsReply {
  int status = 0;
  std::string body;
};

struct HttpsGetOptions {
  std::string ca_file;  // PEM bundle; empty: the system's default trust store
  int timeout_s = 30;   // connect, handshake, write and read each
  size_t max_body = 64 * 1024;
};

// kInvalidArgument for a URL that is not https://HOST[:PORT]/PATH, kUnavailable when the
// server cannot be reached or the TLS handshake fails (not trusted, wrong host name),
// kLimitExceeded when the reply is larger than max_body, kMalformed for a broken reply.
Result<HttpsReply> HttpsGet(const std::string& url, const HttpsGetOptions& options);

}  // namespace tpmma::lms
