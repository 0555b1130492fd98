// SPDX-License-Identifier: GPL-2.0-or-later
// The PROXY protocol v1 line a TCP load balancer (haproxy `send-proxy`) writes before the
// client's first byte, so that behind haproxy's TLS passthrough the MA still logs, audits and
// rate-limits the real client address (issue #14). Only connections from a configured
// `server.trusted_proxies` address are read this way (server/http_server.cc).
//
// Spec: haproxy's doc/proxy-protocol.txt, section 2.1. The line is at most 107 bytes, CRLF
// included: "PROXY TCP4 <src> <dst> <sport> <dport>\r\n", TCP6 alike, or "PROXY UNKNOWN...\r\n"
// (a health check or a connection the proxy cannot describe: the proxy itself is the peer).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "common/status.h"

namespace tpmma::server {

inline constexpr size_t kProxyV1MaxBytes = 107;

struct ProxyClient {
  std::string address;  // canonical text form ("192.0.2.7", "2001:db8::1")
  uint16_t port = 0;
};

// `line` is everything up to and including the first "\r\n". nullopt for UNKNOWN; the
// client otherwise. kInvalidArgument for anything the spec does not allow: a wrong
// protocol word, an address that is not of its family, a port out of range or with leading
// zeros, extra or missing fields, more than 107 bytes.
Result<std::optional<ProxyClient>> ParseProxyV1(std::string_view line);

}  // namespace tpmma::server
