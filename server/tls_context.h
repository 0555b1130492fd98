// SPDX-License-Identifier: GPL-2.0-or-later
// The front end's TLS server context from the config (server/http_server.cc, and
// --check-config through CheckTlsConfig): TLS 1.2+ with forward-secret AEAD suites, no
// renegotiation or compression; the certificate chain, the private key (owner-only, wiped
// after loading) and, when configured, the CA operators' client certificates must chain to.
#pragma once

#include <utility>  // before Asio: Boost 1.74 under C++23

#include <boost/asio/ssl/context.hpp>

#include "common/env.h"
#include "common/status.h"
#include "server/config.h"

namespace tpmma::server {

// kInvalidArgument naming the key (tls.certificate, tls.private_key, tls.client_ca) for a
// missing, unreadable, mismatched or group/world-readable file.
Status ConfigureTls(boost::asio::ssl::context& ctx, const Config& config, Env* env);

}  // namespace tpmma::server
