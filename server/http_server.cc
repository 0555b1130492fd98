// SPDX-License-Identifier: GPL-2.0-or-later
// First, before any Asio header: Boost 1.74's awaitable.hpp uses std::exchange under C++23
// without including <utility>.
#include <utility>

#include "server/http_server.h"

#include <openssl/crypto.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <deque>
#include <functional>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_map>
#include <vector>

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>

#include "common/openssl.h"
#include "server/admission.h"
#include "server/http_route.h"
#include "server/log.h"
#include "server/metrics.h"
#include "server/proxy_header.h"
#include "server/tls_context.h"
#include "server/worker_pool.h"
#include "wsdl/soap_fault.h"

namespace tpmma::server {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;
using std::chrono::milliseconds;

// Beast reads min(buffer capacity, 64 KB) per call; without the reservation it reads 512
// bytes at a time, a system call per 512 bytes of a 16 MB Upload.
constexpr size_t kReadBufferBytes = 64 * 1024;
// After an error reply on a connection we are closing: how long to wait for the peer's
// TLS close_notify before dropping the socket.
constexpr milliseconds kCloseGrace{500};

class ServerImpl;

std::shared_ptr<WebRequest> WebRequestOf(const http::request<http::string_body>& req,
                                         std::string body) {
  auto field = [&](auto f) { return std::string(req[f]); };
  auto web = std::make_shared<WebRequest>();
  web->method = std::string(req.method_string());
  web->target = std::string(req.target());
  web->host = field(http::field::host);
  web->origin = field(http::field::origin);
  web->cookie = field(http::field::cookie);
  web->content_type = field(http::field::content_type);
  web->sec_fetch_site = field("Sec-Fetch-Site");
  web->body = std::move(body);
  return web;
}

// One TLS connection. Every member is touched only on the connection's strand (the
// executor of its socket); workers hand replies back with asio::post.
class Connection : public std::enable_shared_from_this<Connection> {
 public:
  // `via_proxy`: the socket is from a server.trusted_proxies address; its PROXY line comes
  // before the TLS handshake and names the peer.
  Connection(ServerImpl* server, tcp::socket socket, ssl::context& ctx, Admission::PeerSlot slot,
             bool via_proxy);
  ~Connection();

  void Start();
  // Graceful stop: idle connections close now, others after their current request.
  void OnStop();
  // Shutdown deadline passed: close whatever state we are in.
  void ForceClose() { CloseNow(); }
  asio::any_io_executor executor() { return stream_.get_executor(); }

 private:
  enum class State { kHandshake, kIdle, kReading, kHandling, kWriting, kClosing, kClosed };

  beast::tcp_stream& lowest() { return beast::get_lowest_layer(stream_); }
  const Config& cfg() const;

  void Handshake();
  void ReadProxyHeader();
  void OnProxyHeader(beast::error_code ec, size_t line_bytes);
  void OnHandshake(beast::error_code ec);
  void ReadNext();
  void ReadHeader();
  void OnHeader(beast::error_code ec);
  void ReadBody();
  void OnRequest();
  void OnReadError(beast::error_code ec);
  void Dispatch(Route route);
  // GET /metrics, on the I/O thread: 403 for a peer not in metrics.allow.
  void ServeMetrics();
  // The request's log line, and the same fields counted in the metrics.
  void Log(const RequestLog& r);
  void SendReply(Reply reply);
  // A reply made on the I/O thread (health, HTTP errors). `close`: the connection cannot
  // carry another request (unread body, protocol error).
  void Respond(http::status status, std::string body, bool close, std::string_view outcome,
               http::field extra = http::field::unknown, std::string_view extra_value = {});
  void Write(bool close);
  void OnWrite(beast::error_code ec);
  void GracefulClose();
  void CloseNow();

  ServerImpl* server_;
  Admission::PeerSlot slot_;
  // The current request's share of limits.max_inflight_bytes, until its reply is written.
  std::optional<Admission::Reservation> reservation_;
  beast::ssl_stream<beast::tcp_stream> stream_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  http::response<http::string_body> res_;
  State state_ = State::kHandshake;
  bool stopping_ = false;
  bool first_request_ = true;
  bool head_ = false;
  bool keep_alive_ = false;  // the client's wish for the current request
  Route route_ = Route::kHealth;
  std::string peer_;
  const bool via_proxy_;
  // What was read before the TLS handshake: the PROXY line, then the first TLS bytes.
  std::string proxy_buffer_;
  asio::ip::address peer_address_;  // IPv4-mapped IPv6 as IPv4 (metrics.allow)
  std::string fingerprint_;
  uint64_t start_micros_ = 0;
  // For the request log line, written once the reply is sent.
  std::string log_op_;
  std::string log_platform_;
  std::string log_outcome_;
};

class ServerImpl final : public HttpServer {
 public:
  ServerImpl(const Config& cfg, Endpoint* endpoint, Env* env, ssl::context ctx)
      : cfg_(cfg),
        endpoint_(endpoint),
        env_(env),
        admission_(cfg.max_connections_per_peer, cfg.max_inflight_bytes),
        metrics_(TPMMA_VERSION),
        ssl_ctx_(std::move(ctx)),
        acceptor_(asio::make_strand(ioc_)),
        accept_timer_(acceptor_.get_executor()),
        drain_timer_(acceptor_.get_executor()) {
    for (const std::string& a : cfg.trusted_proxies) {
      beast::error_code ec;
      asio::ip::address address = asio::ip::make_address(a, ec);
      if (!ec) trusted_proxies_.push_back(address);  // LoadConfig refuses anything else
    }
  }

  ~ServerImpl() override {
    Stop();
    Wait();
  }

  Status Listen() {
    beast::error_code ec;
    auto addr = asio::ip::make_address(cfg_.listen_address, ec);
    if (ec) {
      return Status(
          Code::kInvalidArgument,
          fmt::format("server.listen_address: '{}' is not an IP address", cfg_.listen_address));
    }
    tcp::endpoint ep(addr, cfg_.listen_port);
    acceptor_.open(ep.protocol(), ec);
    if (!ec) acceptor_.set_option(asio::socket_base::reuse_address(true), ec);
    if (!ec) acceptor_.bind(ep, ec);
    if (!ec) acceptor_.listen(asio::socket_base::max_listen_connections, ec);
    if (ec) {
      return Status(Code::kIoError, fmt::format("listen on {}:{}: {}", cfg_.listen_address,
                                                cfg_.listen_port, ec.message()));
    }
    port_ = acceptor_.local_endpoint().port();
    for (const std::string& a : cfg_.metrics_allow) {
      auto allowed = asio::ip::make_address(a, ec);
      if (ec) {
        return Status(Code::kInvalidArgument,
                      fmt::format("metrics.allow: '{}' is not an IP address", a));
      }
      metrics_allow_.push_back(allowed);
    }
    return Status::Ok();
  }

  uint16_t port() const override { return port_; }

  Status Start(bool handle_signals) override {
    {
      std::lock_guard lock(mu_);
      if (started_) return Status(Code::kInternal, "HttpServer::Start called twice");
      started_ = true;
    }
    pool_ = std::make_unique<WorkerPool>(cfg_.worker_threads,
                                         static_cast<size_t>(cfg_.max_queued_requests));
    work_.emplace(asio::make_work_guard(ioc_));
    if (handle_signals) {
      signals_.emplace(acceptor_.get_executor(), SIGINT, SIGTERM);
      signals_->async_wait([this](beast::error_code ec, int sig) {
        if (ec) return;
        spdlog::info("signal {}: shutting down", sig);
        Stop();
      });
    }
    asio::post(acceptor_.get_executor(), [this] { DoAccept(); });
    for (int i = 0; i < cfg_.io_threads; ++i) {
      io_threads_.emplace_back([this] {
        // A throwing handler (bad_alloc) costs its connection, not the I/O thread.
        for (;;) {
          try {
            ioc_.run();
            return;
          } catch (const std::exception& e) {
            spdlog::error("I/O thread: {}", e.what());
          }
        }
      });
    }
    std::string host = cfg_.listen_address.find(':') != std::string::npos
                           ? "[" + cfg_.listen_address + "]"
                           : cfg_.listen_address;
    spdlog::info("listening on https://{}:{} ({} I/O threads, {} workers)", host, port_,
                 cfg_.io_threads, cfg_.worker_threads);
    return Status::Ok();
  }

  void Stop() override {
    {
      std::lock_guard lock(mu_);
      if (stop_requested_) return;
      stop_requested_ = true;
    }
    draining_.store(true);
    cv_.notify_all();
    // Draining: everything is served as before except /healthz, which says 503 so that a
    // load balancer moves the traffic elsewhere before this instance refuses connections.
    asio::post(acceptor_.get_executor(), [this] {
      if (cfg_.drain_ms == 0) return BeginShutdown();
      spdlog::info("draining for {} ms: /healthz answers 503", cfg_.drain_ms);
      drain_timer_.expires_after(milliseconds(cfg_.drain_ms));
      drain_timer_.async_wait([this](beast::error_code) { BeginShutdown(); });
    });
  }

  void Wait() override {
    std::unique_lock lock(mu_);
    if (!started_ || joined_) return;
    cv_.wait(lock, [this] { return closing_; });
    bool drained = cv_.wait_until(lock, stop_deadline_, [this] { return connections_.empty(); });
    if (!drained) {
      spdlog::warn("shutdown: {} connections still open after {} ms, closing them",
                   connections_.size(), cfg_.shutdown_timeout_ms);
      lock.unlock();
      for (auto& s : Snapshot()) asio::post(s->executor(), [s] { s->ForceClose(); });
      lock.lock();
      // Closing is quick; workers still inside the Endpoint are waited for below.
      cv_.wait_for(lock, milliseconds(200), [this] { return connections_.empty(); });
    }
    lock.unlock();
    work_.reset();
    ioc_.stop();
    for (std::thread& t : io_threads_) t.join();
    io_threads_.clear();
    // In-flight Endpoint calls finish here (a vault commit must not be cut short).
    pool_->Shutdown();
    lock.lock();
    joined_ = true;
    spdlog::info("stopped");
  }

  int active_connections() const override { return active_.load(); }
  uint64_t rejected_connections() const override { return rejected_.load(); }
  size_t queued_requests() const override { return pool_ ? pool_->queued() : 0; }
  uint64_t inflight_bytes() const override { return admission_.inflight_bytes(); }

  // For connections.
  const Config& cfg() const { return cfg_; }
  Endpoint* endpoint() const { return endpoint_; }
  Env* env() const { return env_; }
  WorkerPool& pool() { return *pool_; }
  Admission& admission() { return admission_; }
  void CountRejected() { ++rejected_; }
  Metrics& metrics() { return metrics_; }
  bool MetricsAllowed(const asio::ip::address& peer) const {
    return std::find(metrics_allow_.begin(), metrics_allow_.end(), peer) != metrics_allow_.end();
  }
  MetricsSnapshot MetricsNow() const {
    MetricsSnapshot m;
    m.connections_open = active_connections();
    m.connections_rejected = rejected_connections();
    m.requests_queued = queued_requests();
    m.inflight_body_bytes = inflight_bytes();
    m.vault = endpoint_->GetVaultStats();
    m.vault_healthy = m.vault.has_value() && endpoint_->Ready();
    return m;
  }
  // Shutting down (after the drain): new connections are closed at once.
  bool stopping() {
    std::lock_guard lock(mu_);
    return closing_;
  }
  // From SIGTERM/Stop() on, drain included: /healthz says 503.
  bool draining() const { return draining_.load(); }
  void Unregister(Connection* s) {
    std::lock_guard lock(mu_);
    connections_.erase(s);
    --active_;
    if (connections_.empty()) cv_.notify_all();
  }

 private:
  void DoAccept() {
    acceptor_.async_accept(
        asio::make_strand(ioc_), [this](beast::error_code ec, tcp::socket socket) {
          if (!acceptor_.is_open()) return;
          if (ec) {
            // EMFILE and friends: back off briefly instead of spinning on a full fd table.
            spdlog::warn("accept: {}", ec.message());
            accept_timer_.expires_after(milliseconds(100));
            accept_timer_.async_wait([this](beast::error_code e) {
              if (!e && acceptor_.is_open()) DoAccept();
            });
            return;
          }
          beast::error_code ignored;
          asio::ip::address remote = socket.remote_endpoint(ignored).address();
          std::string address = remote.to_string();
          const bool via_proxy = TrustedProxy(remote);
          std::optional<Admission::PeerSlot> slot;
          if (active_.load() < cfg_.max_connections) {
            slot = via_proxy ? Admission::Unmetered() : admission_.AdmitPeer(address);
          }
          if (!slot) {
            // Closed before the TLS handshake: an overload costs no crypto and reads nothing.
            ++rejected_;
            spdlog::debug(
                "connection from {} refused: max_connections ({}) or "
                "max_connections_per_peer ({}) reached",
                address, cfg_.max_connections, cfg_.max_connections_per_peer);
            socket.close(ignored);
          } else {
            // Request/response: a reply's last segment must not wait for a delayed ACK.
            socket.set_option(tcp::no_delay(true), ignored);
            auto connection = std::make_shared<Connection>(this, std::move(socket), ssl_ctx_,
                                                           std::move(*slot), via_proxy);
            {
              std::lock_guard lock(mu_);
              connections_.emplace(connection.get(), connection);
              ++active_;
            }
            connection->Start();
          }
          DoAccept();
        });
  }

  bool TrustedProxy(const asio::ip::address& remote) const {
    // A v4 client on a dual-stack listener arrives as ::ffff:a.b.c.d.
    asio::ip::address a = remote;
    if (a.is_v6() && a.to_v6().is_v4_mapped()) {
      a = asio::ip::make_address_v4(asio::ip::v4_mapped, a.to_v6());
    }
    return std::find(trusted_proxies_.begin(), trusted_proxies_.end(), a) != trusted_proxies_.end();
  }

  // On the acceptor's strand.
  void BeginShutdown() {
    {
      std::lock_guard lock(mu_);
      if (closing_) return;
      closing_ = true;
      stop_deadline_ = std::chrono::steady_clock::now() + milliseconds(cfg_.shutdown_timeout_ms);
    }
    cv_.notify_all();
    beast::error_code ignored;
    drain_timer_.cancel();
    acceptor_.close(ignored);
    accept_timer_.cancel();
    if (signals_) signals_->cancel(ignored);
    std::vector<std::shared_ptr<Connection>> connections = Snapshot();
    spdlog::info("shutdown: no longer accepting; {} connections open", connections.size());
    for (auto& s : connections) asio::post(s->executor(), [s] { s->OnStop(); });
  }

  // The live connections. Must be called, and its result dropped, without holding mu_: the
  // last reference to a connection may be in it, and ~Connection takes mu_.
  std::vector<std::shared_ptr<Connection>> Snapshot() {
    std::vector<std::shared_ptr<Connection>> out;
    std::lock_guard lock(mu_);
    for (auto& [ptr, weak] : connections_) {
      if (auto s = weak.lock()) out.push_back(std::move(s));
    }
    return out;
  }

  const Config cfg_;
  Endpoint* const endpoint_;
  Env* const env_;
  uint16_t port_ = 0;

  // Declared before ioc_: connections destroyed with the io_context still unregister here.
  std::mutex mu_;
  std::condition_variable cv_;
  std::unordered_map<Connection*, std::weak_ptr<Connection>> connections_;
  bool started_ = false;
  bool stop_requested_ = false;
  bool closing_ = false;  // the drain is over: no longer accepting
  std::atomic<bool> draining_{false};
  bool joined_ = false;
  std::chrono::steady_clock::time_point stop_deadline_;
  std::atomic<int> active_{0};
  std::atomic<uint64_t> rejected_{0};
  Admission admission_;  // before ioc_: connections destroyed with it release here
  std::vector<asio::ip::address> trusted_proxies_;
  Metrics metrics_;  // before ioc_: connections count into it until they are gone
  std::vector<asio::ip::address> metrics_allow_;

  asio::io_context ioc_;
  ssl::context ssl_ctx_;
  tcp::acceptor acceptor_;
  asio::steady_timer accept_timer_;
  asio::steady_timer drain_timer_;
  std::optional<asio::signal_set> signals_;
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work_;
  std::unique_ptr<WorkerPool> pool_;
  std::vector<std::thread> io_threads_;
};

// ---------------------------------------------------------------------------------------

Connection::Connection(ServerImpl* server, tcp::socket socket, ssl::context& ctx,
                       Admission::PeerSlot slot, bool via_proxy)
    : server_(server),
      slot_(std::move(slot)),
      stream_(std::move(socket), ctx),
      via_proxy_(via_proxy) {
  buffer_.reserve(kReadBufferBytes);
  beast::error_code ec;
  tcp::endpoint remote = lowest().socket().remote_endpoint(ec);
  if (!ec) {
    peer_address_ = remote.address();
    // A dual-stack socket shows IPv4 peers as ::ffff:a.b.c.d; metrics.allow lists a.b.c.d.
    if (peer_address_.is_v6() && peer_address_.to_v6().is_v4_mapped()) {
      peer_address_ = asio::ip::make_address_v4(asio::ip::v4_mapped, peer_address_.to_v6());
    }
    peer_ = remote.address().is_v6()
                ? fmt::format("[{}]:{}", remote.address().to_string(), remote.port())
                : fmt::format("{}:{}", remote.address().to_string(), remote.port());
  }
}

Connection::~Connection() {
  server_->Unregister(this);
}

const Config& Connection::cfg() const {
  return server_->cfg();
}

void Connection::Start() {
  asio::dispatch(stream_.get_executor(), [self = shared_from_this()] {
    if (self->server_->stopping()) return self->CloseNow();
    // One deadline for the PROXY line and the handshake together.
    self->lowest().expires_after(milliseconds(self->cfg().handshake_timeout_ms));
    if (self->via_proxy_) return self->ReadProxyHeader();
    self->Handshake();
  });
}

void Connection::Handshake() {
  // Bytes read past the PROXY line are the client's first TLS record: the handshake starts
  // from them.
  stream_.async_handshake(ssl::stream_base::server, asio::buffer(proxy_buffer_),
                          [self = shared_from_this()](beast::error_code ec, size_t) {
                            self->proxy_buffer_.clear();
                            self->OnHandshake(ec);
                          });
}

void Connection::ReadProxyHeader() {
  asio::async_read_until(
      lowest(), asio::dynamic_buffer(proxy_buffer_, kProxyV1MaxBytes), "\r\n",
      [self = shared_from_this()](beast::error_code ec, size_t n) { self->OnProxyHeader(ec, n); });
}

void Connection::OnProxyHeader(beast::error_code ec, size_t line_bytes) {
  // A trusted proxy that sends no valid line is misconfigured (send-proxy missing): say so
  // loudly, since every client behind it is being refused.
  if (ec) {
    spdlog::warn("{}: no PROXY line from a trusted proxy ({}); closing", peer_, ec.message());
    return CloseNow();
  }
  auto client = ParseProxyV1(std::string_view(proxy_buffer_).substr(0, line_bytes));
  if (!client.has_value()) {
    spdlog::warn("{}: {}; closing", peer_, client.error().message());
    return CloseNow();
  }
  proxy_buffer_.erase(0, line_bytes);
  if (!client->has_value()) return Handshake();  // UNKNOWN: the proxy itself (health checks)
  const ProxyClient& c = **client;
  std::optional<Admission::PeerSlot> slot = server_->admission().AdmitPeer(c.address);
  if (!slot) {
    server_->CountRejected();
    spdlog::debug("connection from {} (via {}) refused: max_connections_per_peer reached",
                  c.address, peer_);
    return CloseNow();
  }
  slot_ = std::move(*slot);
  beast::error_code ignored;
  peer_address_ = asio::ip::make_address(c.address, ignored);  // canonical: ParseProxyV1
  spdlog::debug("{}: PROXY line names {} port {}", peer_, c.address, c.port);
  peer_ = c.address.find(':') != std::string::npos ? fmt::format("[{}]:{}", c.address, c.port)
                                                   : fmt::format("{}:{}", c.address, c.port);
  Handshake();
}

void Connection::OnStop() {
  stopping_ = true;
  // A request being read, handled or written finishes (bounded by read_timeout_ms and the
  // shutdown deadline) and is answered with Connection: close.
  if (state_ == State::kHandshake || state_ == State::kIdle) CloseNow();
}

void Connection::OnHandshake(beast::error_code ec) {
  if (ec) {
    // A refused client certificate is someone trying to be an operator: worth a warning
    // (issue #13, finding 9). Scanners, TLS 1.0 clients, timeouts: a debug line.
    const long verify = SSL_get_verify_result(stream_.native_handle());
    if (verify != X509_V_OK) {
      spdlog::warn("TLS handshake with {} refused: client certificate not accepted ({})", peer_,
                   X509_verify_cert_error_string(verify));
    } else {
      spdlog::debug("TLS handshake with {} failed: {}", peer_, ec.message());
    }
    return CloseNow();
  }
  if (X509* cert = SSL_get0_peer_certificate(stream_.native_handle())) {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    if (X509_digest(cert, EVP_sha256(), md, &len) == 1) {
      for (unsigned i = 0; i < len; ++i) fingerprint_ += fmt::format("{:02x}", md[i]);
    }
  }
  ReadNext();
}

void Connection::ReadNext() {
  if (stopping_) return GracefulClose();
  parser_.emplace();
  parser_->header_limit(cfg().max_header_bytes);
  parser_->body_limit(cfg().max_body_bytes);
  if (buffer_.size() > 0) return ReadHeader();  // pipelined: the next request is here
  // Until the first byte of a request arrives the connection is idle (and a graceful stop
  // may close it): read_timeout_ms after the handshake, idle_timeout_ms between keep-alive
  // requests. The request deadline starts with that first byte.
  state_ = State::kIdle;
  lowest().expires_after(
      milliseconds(first_request_ ? cfg().read_timeout_ms : cfg().idle_timeout_ms));
  stream_.async_read_some(buffer_.prepare(kReadBufferBytes),
                          [self = shared_from_this()](beast::error_code ec, size_t n) {
                            self->buffer_.commit(n);
                            if (ec) return self->OnReadError(ec);
                            self->ReadHeader();
                          });
}

void Connection::ReadHeader() {
  state_ = State::kReading;
  start_micros_ = server_->env()->NowMicros();
  log_op_ = "-";
  log_platform_.clear();
  // One deadline for headers and body together: a client trickling bytes (slowloris)
  // cannot extend it.
  lowest().expires_after(milliseconds(cfg().read_timeout_ms));
  http::async_read_header(
      stream_, buffer_, *parser_,
      [self = shared_from_this()](beast::error_code ec, size_t) { self->OnHeader(ec); });
}

void Connection::OnHeader(beast::error_code ec) {
  if (ec) return OnReadError(ec);
  const auto& req = parser_->get();
  head_ = req.method() == http::verb::head;
  // Route on the header alone, so a request we will refuse never has its body read.
  RouteDecision d = RouteHeader(req, parser_->chunked(), cfg().bench_echo, cfg().metrics_enabled);
  if (d.close) return Respond(d.status, std::string(d.body), true, d.outcome);
  keep_alive_ = req.keep_alive();
  const bool wants_continue = d.wants_continue;
  if (!d.route) {
    // An unread body would be parsed as the next request: close instead.
    return Respond(d.status, std::string(d.body), !parser_->is_done(), d.outcome,
                   d.allow.empty() ? http::field::unknown : http::field::allow, d.allow);
  }
  std::optional<Route> route = d.route;
  route_ = *route;
  if (route_ != Route::kHealth && route_ != Route::kMetrics) {
    reservation_ = server_->admission().Reserve(parser_->content_length().value_or(0));
    if (!reservation_) {
      return Respond(http::status::service_unavailable, "server busy: too much in flight\n",
                     !parser_->is_done(), "Unavailable", http::field::retry_after, "1");
    }
  }
  if (wants_continue && !parser_->is_done()) {
    // The client holds the body back until we agree to take it (curl waits 1 s otherwise).
    auto cont = std::make_shared<http::response<http::empty_body>>(http::status::continue_, 11);
    http::async_write(stream_, *cont,
                      [self = shared_from_this(), cont](beast::error_code e, size_t) {
                        if (e) return self->CloseNow();
                        self->ReadBody();
                      });
    return;
  }
  ReadBody();
}

void Connection::ReadBody() {
  if (parser_->is_done()) return OnRequest();
  http::async_read(stream_, buffer_, *parser_,
                   [self = shared_from_this()](beast::error_code ec, size_t) {
                     if (ec) return self->OnReadError(ec);
                     self->OnRequest();
                   });
}

void Connection::OnReadError(beast::error_code ec) {
  if (ec == http::error::header_limit) {
    return Respond(http::status::request_header_fields_too_large, "header too large\n", true,
                   "LimitExceeded");
  }
  if (ec == http::error::body_limit) {
    return Respond(http::status::payload_too_large, "body too large\n", true, "LimitExceeded");
  }
  if (ec == beast::error::timeout) {
    // tcp_stream has closed the socket already; nothing can be sent.
    if (state_ == State::kReading) {
      Log({.op = "-",
           .platform = "",
           .outcome = "Timeout",
           .http_status = 0,
           .latency_micros = server_->env()->NowMicros() - start_micros_,
           .peer = peer_});
    }
    return CloseNow();
  }
  if (ec == http::error::end_of_stream || ec == http::error::partial_message ||
      ec == asio::error::eof || ec == asio::error::operation_aborted ||
      ec == ssl::error::stream_truncated || ec == asio::error::connection_reset) {
    if (ec == http::error::partial_message) spdlog::debug("{}: truncated request", peer_);
    return CloseNow();
  }
  if (ec.category() == http::make_error_code(http::error::bad_method).category()) {
    return Respond(http::status::bad_request, "malformed request\n", true, "Malformed");
  }
  spdlog::debug("{}: read failed: {}", peer_, ec.message());
  CloseNow();
}

void Connection::OnRequest() {
  if (route_ == Route::kMetrics) return ServeMetrics();
  if (route_ == Route::kHealth) {
    log_op_ = "healthz";
    if (server_->draining()) {
      return Respond(http::status::service_unavailable, "draining: shutting down\n", false,
                     "Unavailable");
    }
    if (server_->pool().saturated()) {
      return Respond(http::status::service_unavailable, "saturated: every worker is busy\n", false,
                     "Unavailable", http::field::retry_after, "1");
    }
    if (!server_->endpoint()->Ready()) {
      return Respond(http::status::service_unavailable, "vault does not answer\n", false,
                     "Unavailable", http::field::retry_after, "1");
    }
    return Respond(http::status::ok, "ok\n", false, "ok");
  }
  state_ = State::kHandling;
  // The worker's time is not the client's: no deadline until the reply is written.
  lowest().expires_never();
  RequestInfo info{.peer = peer_,
                   .client_cert_fingerprint = fingerprint_,
                   .received_micros = server_->env()->NowMicros()};
  auto& req = parser_->get();
  auto body = std::make_shared<std::string>(std::move(req.body()));
  std::shared_ptr<WebRequest> web;
  if (route_ == Route::kConsole) web = WebRequestOf(req, std::move(*body));
  bool echo = route_ == Route::kEcho;
  Endpoint* endpoint = server_->endpoint();
  bool queued = server_->pool().TryPost([self = shared_from_this(), body, web,
                                         info = std::move(info), echo, endpoint] {
    Reply reply;
    if (echo) {
      reply.content_type = "application/octet-stream";
      reply.body = std::move(*body);
      reply.log_op = "echo";
    } else {
      try {
        reply = web ? endpoint->HandleWeb(*web, info) : endpoint->Handle(*body, info);
      } catch (...) {
        // A bug in an operation must cost one request, not the process.
        spdlog::error("endpoint threw an exception");
        reply = Reply();
        reply.http_status = 500;
        if (web) {
          reply.content_type = "text/plain; charset=utf-8";
          reply.body = "internal error\n";
        } else {
          reply.body = wsdl::SoapFaultXml(Status(Code::kInternal, "internal error"));
        }
        reply.log_outcome = CodeName(Code::kInternal);
      }
    }
    asio::post(self->executor(),
               [self, reply = std::move(reply)]() mutable { self->SendReply(std::move(reply)); });
  });
  if (!queued) {
    Respond(http::status::service_unavailable, "server busy\n", false, "Unavailable",
            http::field::retry_after, "1");
  }
}

void Connection::ServeMetrics() {
  log_op_ = "metrics";
  if (!server_->MetricsAllowed(peer_address_)) {
    // Says nothing about what is there: the address list is the administrator's business.
    return Respond(http::status::forbidden, "Forbidden\n", false, "PermissionDenied");
  }
  Respond(http::status::ok, server_->metrics().Render(server_->MetricsNow()), false, "ok",
          http::field::content_type, "text/plain; version=0.0.4; charset=utf-8");
}

void Connection::Log(const RequestLog& r) {
  LogRequest(r);
  server_->metrics().Record(r.op, r.outcome, r.latency_micros);
}

void Connection::SendReply(Reply reply) {
  if (state_ == State::kClosed) return;  // force-closed while the worker ran
  log_op_ = std::move(reply.log_op);
  log_platform_ = std::move(reply.log_platform);
  log_outcome_ = std::move(reply.log_outcome);
  res_ = {};
  // Beast throws on a status outside 0..999, on an I/O thread: never pass one through.
  bool valid = reply.http_status >= 200 && reply.http_status <= 599;
  res_.result(valid ? reply.http_status : 500u);
  res_.set(http::field::content_type, reply.content_type);
  for (const auto& [name, value] : reply.headers) res_.set(name, value);
  res_.body() = std::move(reply.body);
  Write(false);
}

void Connection::Respond(http::status status, std::string body, bool close,
                         std::string_view outcome, http::field extra,
                         std::string_view extra_value) {
  log_outcome_ = outcome;
  res_ = {};
  res_.result(status);
  res_.set(http::field::content_type, "text/plain; charset=utf-8");
  if (extra != http::field::unknown) {
    res_.set(extra, beast::string_view(extra_value.data(), extra_value.size()));
  }
  res_.body() = std::move(body);
  if (close) keep_alive_ = false;
  Write(close);
}

void Connection::Write(bool close) {
  state_ = State::kWriting;
  bool keep = keep_alive_ && !close && !stopping_;
  res_.version(11);
  res_.set(http::field::server, "tpm-ma");
  res_.keep_alive(keep);
  res_.prepare_payload();
  if (head_) res_.body().clear();  // Content-Length stays that of the GET reply
  // Replies (a Download is megabytes) get the idle timeout: generous, but a client that
  // stops reading still loses the connection.
  lowest().expires_after(milliseconds(cfg().idle_timeout_ms));
  http::async_write(stream_, res_, [self = shared_from_this(), keep](beast::error_code ec, size_t) {
    self->keep_alive_ = keep;
    self->OnWrite(ec);
  });
}

void Connection::OnWrite(beast::error_code ec) {
  Log({.op = log_op_,
       .platform = log_platform_,
       .outcome = log_outcome_,
       .http_status = res_.result_int(),
       .latency_micros = server_->env()->NowMicros() - start_micros_,
       .peer = peer_});
  reservation_.reset();
  if (ec) return CloseNow();
  if (!keep_alive_) return GracefulClose();
  first_request_ = false;
  res_ = {};
  ReadNext();
}

void Connection::GracefulClose() {
  if (state_ == State::kClosing || state_ == State::kClosed) return;
  state_ = State::kClosing;
  // close_notify tells the client the reply is complete; don't wait long for its answer.
  lowest().expires_after(kCloseGrace);
  stream_.async_shutdown([self = shared_from_this()](beast::error_code) { self->CloseNow(); });
}

void Connection::CloseNow() {
  if (state_ == State::kClosed) return;
  state_ = State::kClosed;
  beast::error_code ignored;
  lowest().socket().shutdown(tcp::socket::shutdown_both, ignored);
  lowest().close();
}

}  // namespace

Status CheckTlsConfig(const Config& config, Env* env) {
  ssl::context ctx(ssl::context::tls_server);
  return ConfigureTls(ctx, config, env);
}

Result<std::unique_ptr<HttpServer>> HttpServer::Create(const Config& config, Endpoint* endpoint,
                                                       Env* env) {
  ssl::context ctx(ssl::context::tls_server);
  TPMMA_RETURN_IF_ERROR(ConfigureTls(ctx, config, env));
  auto server = std::make_unique<ServerImpl>(config, endpoint, env, std::move(ctx));
  TPMMA_RETURN_IF_ERROR(server->Listen());
  return std::unique_ptr<HttpServer>(std::move(server));
}

namespace {
class UnsupportedEndpoint final : public Endpoint {
 public:
  Reply Handle(std::string_view, const RequestInfo&) override {
    Status status(Code::kUnsupported, "operations not built yet");
    Reply reply;
    reply.http_status = 500;
    reply.body = wsdl::SoapFaultXml(status);
    reply.log_op = "soap";
    reply.log_outcome = CodeName(status.code());
    return reply;
  }
};
}  // namespace

std::unique_ptr<Endpoint> MakeUnsupportedEndpoint() {
  return std::make_unique<UnsupportedEndpoint>();
}

}  // namespace tpmma::server
