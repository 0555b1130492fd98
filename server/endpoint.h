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

#include "storage/vault_stats.h"

namespace tpmma::server {

struct RequestInfo {
  std::string peer;                     // "127.0.0.1:53422", for logs
  std::string client_cert_fingerprint;  // SHA-256 hex of a TLS client cert, or empty
  uint64_t received_micros = 0;         // Env::NowMicros() when the body was complete
};

struct Reply {
  unsigned http_status = 200;  // 200, or 500 for a SOAP Fault (SOAP 1.1 over HTTP)
  std::string content_type = "text/xml; charset=utf-8";
  std::string body;
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
  // Whether the endpoint can serve (its vault answers), for GET /healthz. Called on an I/O
  // thread: must not block, so an endpoint answers from what it last observed.
  virtual bool Ready() const { return true; }
  // The counters of the endpoint's vault, for GET /metrics (on an I/O thread: must not
  // block); none if it has no vault.
  virtual std::optional<storage::VaultStats> GetVaultStats() const { return std::nullopt; }
};

}  // namespace tpmma::server
