// SPDX-License-Identifier: GPL-2.0-or-later
// The seam between the network front end (http_server.h: Boost.Beast owns sockets, TLS,
// HTTP and limits) and the SOAP layer (ma_service.h: gSOAP only (de)serializes, from
// memory). The front end calls Handle() on a worker thread, never on an I/O thread, so
// an endpoint may block on the vault's fsync without stalling other connections.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "storage/vault_stats.h"

namespace tpmma::server {

struct RequestInfo {
  std::string peer;                     // "127.0.0.1:53422", for logs
  std::string client_cert_fingerprint;  // SHA-256 hex of a TLS client cert, or empty
  uint64_t received_micros = 0;         // Env::NowMicros() when the body was complete
};

// A request for a page of the helpdesk console (server/console/): the few header fields a
// page needs, as the client sent them, and the body (a form, limits.max_body_bytes at most).
struct WebRequest {
  std::string method;  // "GET", "HEAD" or "POST" (the front end refuses others)
  std::string target;  // "/console/platform?id=..."
  std::string host;
  std::string origin;
  std::string cookie;
  std::string content_type;
  std::string sec_fetch_site;
  std::string body;
};

struct Reply {
  unsigned http_status = 200;  // 200, or 500 for a SOAP Fault (SOAP 1.1 over HTTP)
  std::string content_type = "text/xml; charset=utf-8";
  std::string body;
  // More response header fields (a page's Content-Security-Policy, Set-Cookie, Location).
  std::vector<std::pair<std::string, std::string>> headers;
  // One line per request in the structured log: op, platform, outcome.
  std::string log_op;
  std::string log_platform;
  std::string log_outcome = "ok";  // "ok" or a CodeName()
};

class Endpoint {
 public:
  virtual ~Endpoint() = default;
  // `body` is the complete HTTP request body, already size-checked by the front end (413);
  // an endpoint may check again for callers that are not the front end.
  virtual Reply Handle(std::string_view body, const RequestInfo& info) = 0;
  // A console page, on a worker thread like Handle(). An endpoint without pages: 404.
  // Inline, so that the class keeps no key function and links without the front end.
  virtual Reply HandleWeb(const WebRequest&, const RequestInfo&) {
    Reply reply;
    reply.http_status = 404;
    reply.content_type = "text/plain; charset=utf-8";
    reply.body = "Not Found\n";
    reply.log_op = "console";
    reply.log_outcome = "NotFound";
    return reply;
  }
  // Whether the endpoint can serve (its vault answers), for GET /healthz. Called on an I/O
  // thread: must not block, so an endpoint answers from what it last observed.
  virtual bool Ready() const { return true; }
  // The counters of the endpoint's vault, for GET /metrics (on an I/O thread: must not
  // block); none if it has no vault.
  virtual std::optional<storage::VaultStats> GetVaultStats() const { return std::nullopt; }
};

}  // namespace tpmma::server
