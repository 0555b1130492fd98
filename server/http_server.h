// SPDX-License-Identifier: GPL-2.0-or-later
// ma-server's network front end. Boost.Beast owns sockets, TLS (1.2+), HTTP/1.1 keep-alive,
// limits and deadlines; the Endpoint only ever sees complete, size-checked bodies, on a
// worker thread (gSOAP (de)serializes from memory; a blocked worker must not stall other
// connections). Slow, truncated, oversized and malformed requests are refused
// on the I/O threads before any worker is involved.
//
// Routes: GET /healthz (I/O thread), GET /metrics when metrics_enabled (I/O thread, peers in
// metrics_allow only; server/metrics.h), POST / and /soap (text/xml) -> Endpoint, POST /echo
// when bench_echo (worker path without the Endpoint, the ma-bench baseline).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "common/env.h"
#include "common/status.h"
#include "server/config.h"
#include "server/endpoint.h"

namespace tpmma::server {

class HttpServer {
 public:
  // Loads the TLS certificate and key, binds and listens (port 0: an ephemeral port, see
  // port()). Nothing runs until Start(). `endpoint` and `env` must outlive the server.
  // kInvalidArgument for a bad certificate/key or address, kIoError if the bind fails.
  static Result<std::unique_ptr<HttpServer>> Create(const Config& config, Endpoint* endpoint,
                                                    Env* env);

  virtual ~HttpServer() = default;

  // The bound port (the real one when the config said 0).
  virtual uint16_t port() const = 0;

  // Starts the I/O and worker threads and logs "listening on https://ADDR:PORT". With
  // `handle_signals`, SIGTERM and SIGINT call Stop().
  virtual Status Start(bool handle_signals) = 0;

  // Graceful stop, from any thread, any number of times: stop accepting, close idle
  // connections, let in-flight requests finish and be answered (with Connection: close),
  // for at most shutdown_timeout_ms; then close whatever is left.
  virtual void Stop() = 0;

  // Blocks until Stop() (or a signal) has run its course and every thread is joined.
  // Returns at once if Start() was never called.
  virtual void Wait() = 0;

  // For tests and metrics: open connections, and connections closed at accept because
  // max_connections was reached.
  virtual int active_connections() const = 0;
  virtual uint64_t rejected_connections() const = 0;
  // Requests waiting for a worker (not counting those being handled).
  virtual size_t queued_requests() const = 0;
  // Request body bytes reserved against limits.max_inflight_bytes (server/admission.h).
  virtual uint64_t inflight_bytes() const = 0;
};

// What --check-config asks of the front end: the TLS certificate and key load and match,
// the client CA loads. Binds nothing. kInvalidArgument naming the key.
Status CheckTlsConfig(const Config& config, Env* env);

// Answers every request with a SOAP Fault "Unsupported: operations not built yet": an
// endpoint for tests of the front end alone (ma-server always serves ma_service).
std::unique_ptr<Endpoint> MakeUnsupportedEndpoint();

}  // namespace tpmma::server
