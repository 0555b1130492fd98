// SPDX-License-Identifier: GPL-2.0-or-later
// The HTTPS front end against a real TLS client on 127.0.0.1 (ephemeral ports): routing,
// keep-alive, limits, deadlines, overload and graceful shutdown.
#include <utility>  // before Asio: Boost 1.74 under C++23

#include "server/http_server.h"

#include <poll.h>

#include <gtest/gtest.h>
#include <openssl/ssl.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <future>
#include <mutex>
#include <thread>

#include <boost/asio.hpp>

#include "common/env.h"
#include "tests/server/tls_client.h"
#include "tests/support/testutil.h"
#include "wsdl/soap_fault.h"

namespace tpmma::server {
namespace {

using std::chrono::milliseconds;
using std::chrono::steady_clock;
using testing::ClientOptions;
using testing::GetRequest;
using testing::PostRequest;
using testing::TlsClient;

// Answers "<ok n=LEN/>"; can hold requests at a gate to play a slow operation.
class TestEndpoint : public Endpoint {
 public:
  Reply Handle(std::string_view body, const RequestInfo& info) override {
    {
      std::unique_lock lock(mu_);
      ++entered_;
      last_info_ = info;
      last_body_ = std::string(body);
      cv_.notify_all();
      cv_.wait(lock, [this] { return !gated_; });
    }
    if (body == "throw") throw std::runtime_error("boom");
    Reply reply;
    reply.body = "<ok n=\"" + std::to_string(body.size()) + "\"/>";
    reply.log_op = "Test";
    reply.log_platform = "platform-1";
    return reply;
  }

  void Gate() {
    std::lock_guard lock(mu_);
    gated_ = true;
  }
  void Release() {
    std::lock_guard lock(mu_);
    gated_ = false;
    cv_.notify_all();
  }
  bool WaitEntered(int n, milliseconds timeout = milliseconds(5000)) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return entered_ >= n; });
  }
  RequestInfo last_info() {
    std::lock_guard lock(mu_);
    return last_info_;
  }
  int entered() {
    std::lock_guard lock(mu_);
    return entered_;
  }
  bool Ready() const override { return ready_.load(); }
  void SetReady(bool ready) { ready_.store(ready); }
  std::string last_body() {
    std::lock_guard lock(mu_);
    return last_body_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool gated_ = false;
  std::atomic<bool> ready_{true};
  int entered_ = 0;
  RequestInfo last_info_;
  std::string last_body_;
};

template <typename Pred>
bool Eventually(Pred pred, milliseconds timeout = milliseconds(5000)) {
  auto deadline = steady_clock::now() + timeout;
  while (steady_clock::now() < deadline) {
    if (pred()) return true;
    std::this_thread::sleep_for(milliseconds(5));
  }
  return pred();
}

class HttpServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    cert_ = testing::MakeSelfSignedCert(dir_.path(), "server");
    cfg_.listen_address = "127.0.0.1";
    cfg_.listen_port = 0;
    cfg_.io_threads = 2;
    cfg_.worker_threads = 2;
    cfg_.max_connections = 16;
    cfg_.max_queued_requests = 8;
    cfg_.tls_certificate = cert_.cert_path;
    cfg_.tls_private_key = cert_.key_path;
    cfg_.max_header_bytes = 2048;
    cfg_.max_body_bytes = 64 * 1024;
    cfg_.read_timeout_ms = 300;
    cfg_.idle_timeout_ms = 5000;
    cfg_.handshake_timeout_ms = 2000;
    cfg_.shutdown_timeout_ms = 5000;
    cfg_.bench_echo = true;
  }

  void TearDown() override {
    endpoint_.Release();
    if (server_) {
      server_->Stop();
      server_->Wait();
    }
  }

  void StartServer() {
    auto server = HttpServer::Create(cfg_, &endpoint_, Env::Default());
    ASSERT_TRUE(server.has_value()) << server.error().ToString();
    server_ = std::move(*server);
    ASSERT_NE(server_->port(), 0);
    ASSERT_TRUE(server_->Start(/*handle_signals=*/false).ok());
  }

  // A fresh connection that gets /healthz answered: the server is still serving.
  void ExpectServing() {
    TlsClient c;
    ASSERT_TRUE(c.Connect(server_->port())) << c.error();
    auto res = c.RoundTrip(GetRequest("/healthz"));
    ASSERT_TRUE(res.has_value()) << c.error();
    EXPECT_EQ(res->status, 200u);
    EXPECT_EQ(res->body, "ok\n");
  }

  testing::TempDir dir_;
  testing::CertFiles cert_;
  Config cfg_;
  TestEndpoint endpoint_;
  std::unique_ptr<HttpServer> server_;
};

TEST_F(HttpServerTest, KeepAliveServesSeveralRequestsOnOneConnection) {
  StartServer();
  TlsClient c;
  ASSERT_TRUE(c.Connect(server_->port())) << c.error();
  auto health = c.RoundTrip(GetRequest("/healthz"));
  ASSERT_TRUE(health.has_value()) << c.error();
  EXPECT_EQ(health->status, 200u);
  EXPECT_EQ(health->body, "ok\n");
  for (int i = 1; i <= 3; ++i) {
    std::string body(100 * i, 'x');
    auto res = c.RoundTrip(PostRequest(i % 2 ? "/" : "/soap", body));
    ASSERT_TRUE(res.has_value()) << "request " << i << ": " << c.error();
    EXPECT_EQ(res->status, 200u);
    EXPECT_EQ(res->body, "<ok n=\"" + std::to_string(body.size()) + "\"/>");
    EXPECT_EQ(res->connection, "");  // HTTP/1.1 default: keep-alive
    EXPECT_EQ(endpoint_.last_body(), body);
  }
  EXPECT_EQ(server_->active_connections(), 1);
  RequestInfo info = endpoint_.last_info();
  EXPECT_TRUE(info.peer.starts_with("127.0.0.1:")) << info.peer;
  EXPECT_EQ(info.client_cert_fingerprint, "");
  EXPECT_GT(info.received_micros, 0u);
}

// /healthz asks the endpoint (the MA: whether its vault answers) and says 503 while it does
// not; SOAP requests are still handed over (each gets the vault's own error).
TEST_F(HttpServerTest, HealthSays503WhileTheEndpointIsNotReady) {
  StartServer();
  TlsClient c;
  ASSERT_TRUE(c.Connect(server_->port())) << c.error();
  endpoint_.SetReady(false);
  auto down = c.RoundTrip(GetRequest("/healthz"));
  ASSERT_TRUE(down.has_value()) << c.error();
  EXPECT_EQ(down->status, 503u);
  EXPECT_EQ(down->body, "vault does not answer\n");
  auto post = c.RoundTrip(PostRequest("/", "abc"));
  ASSERT_TRUE(post.has_value()) << c.error();
  EXPECT_EQ(post->status, 200u);
  endpoint_.SetReady(true);
  auto up = c.RoundTrip(GetRequest("/healthz"));
  ASSERT_TRUE(up.has_value()) << c.error();
  EXPECT_EQ(up->status, 200u);
}

// After Stop() (SIGTERM) with drain_ms: /healthz says 503 at once, while new connections and
// requests are still served until the drain is over; then the server stops as before.
TEST_F(HttpServerTest, DrainSays503OnHealthButKeepsServing) {
  cfg_.drain_ms = 800;
  StartServer();
  TlsClient kept;
  ASSERT_TRUE(kept.Connect(server_->port())) << kept.error();
  auto before = kept.RoundTrip(GetRequest("/healthz"));
  ASSERT_TRUE(before.has_value()) << kept.error();
  EXPECT_EQ(before->status, 200u);
  const auto stopped_at = steady_clock::now();
  std::thread stopper([this] {
    server_->Stop();
    server_->Wait();
  });
  EXPECT_TRUE(Eventually([&] {
    TlsClient c;
    if (!c.Connect(server_->port())) return false;
    auto res = c.RoundTrip(GetRequest("/healthz"));
    return res.has_value() && res->status == 503u && res->body == "draining: shutting down\n";
  }));
  auto post = kept.RoundTrip(PostRequest("/", "abcd"));
  ASSERT_TRUE(post.has_value()) << kept.error();
  EXPECT_EQ(post->status, 200u);
  TlsClient late;
  ASSERT_TRUE(late.Connect(server_->port())) << late.error();
  auto late_post = late.RoundTrip(PostRequest("/", "x"));
  ASSERT_TRUE(late_post.has_value()) << late.error();
  EXPECT_EQ(late_post->status, 200u);
  stopper.join();
  EXPECT_GE(steady_clock::now() - stopped_at, milliseconds(800));
  TlsClient after;
  EXPECT_FALSE(after.Connect(server_->port()) && after.RoundTrip(GetRequest("/healthz")));
}

TEST_F(HttpServerTest, RsaServerCertificateWorksToo) {
  testing::CertFiles rsa = testing::MakeSelfSignedCert(dir_.path(), "rsa-server", /*rsa=*/true);
  cfg_.tls_certificate = rsa.cert_path;
  cfg_.tls_private_key = rsa.key_path;
  StartServer();
  ExpectServing();
}

TEST_F(HttpServerTest, PipelinedRequestsAreAnsweredInOrder) {
  StartServer();
  TlsClient c;
  ASSERT_TRUE(c.Connect(server_->port())) << c.error();
  ASSERT_TRUE(c.Send(PostRequest("/", "a") + GetRequest("/healthz") + PostRequest("/", "bbb")));
  auto r1 = c.Read(), r2 = c.Read(), r3 = c.Read();
  ASSERT_TRUE(r1 && r2 && r3) << c.error();
  EXPECT_EQ(r1->body, "<ok n=\"1\"/>");
  EXPECT_EQ(r2->body, "ok\n");
  EXPECT_EQ(r3->body, "<ok n=\"3\"/>");
}

TEST_F(HttpServerTest, UnknownRoutesAndMethods) {
  StartServer();
  TlsClient c;
  ASSERT_TRUE(c.Connect(server_->port())) << c.error();
  auto not_found = c.RoundTrip(GetRequest("/nope"));
  ASSERT_TRUE(not_found) << c.error();
  EXPECT_EQ(not_found->status, 404u);
  auto get_root = c.RoundTrip(GetRequest("/"));
  ASSERT_TRUE(get_root) << c.error();
  EXPECT_EQ(get_root->status, 405u);
  EXPECT_EQ(get_root->allow, "POST");
  auto post_health = c.RoundTrip(PostRequest("/healthz", ""));
  ASSERT_TRUE(post_health) << c.error();
  EXPECT_EQ(post_health->status, 405u);
  EXPECT_EQ(post_health->allow, "GET, HEAD");
  // A refused request without a body leaves the connection usable.
  auto wrong_type = c.RoundTrip(PostRequest("/", "", "application/json"));
  ASSERT_TRUE(wrong_type) << c.error();
  EXPECT_EQ(wrong_type->status, 415u);
  auto ok = c.RoundTrip(GetRequest("/healthz"));
  ASSERT_TRUE(ok) << c.error();
  EXPECT_EQ(ok->status, 200u);
}

TEST_F(HttpServerTest, RefusedRequestWithUnreadBodyClosesTheConnection) {
  StartServer();
  TlsClient c;
  ASSERT_TRUE(c.Connect(server_->port())) << c.error();
  // The body would otherwise be read as the next request.
  ASSERT_TRUE(c.Send("POST /nope HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n\r\n"));
  auto res = c.Read();
  ASSERT_TRUE(res) << c.error();
  EXPECT_EQ(res->status, 404u);
  EXPECT_EQ(res->connection, "close");
  EXPECT_TRUE(c.WaitClosed(milliseconds(3000)));
}

TEST_F(HttpServerTest, EchoOnlyWhenConfigured) {
  StartServer();
  TlsClient c;
  ASSERT_TRUE(c.Connect(server_->port())) << c.error();
  auto res = c.RoundTrip(PostRequest("/echo", "hello", "application/octet-stream"));
  ASSERT_TRUE(res) << c.error();
  EXPECT_EQ(res->status, 200u);
  EXPECT_EQ(res->body, "hello");
  server_->Stop();
  server_->Wait();

  cfg_.bench_echo = false;
  StartServer();
  TlsClient c2;
  ASSERT_TRUE(c2.Connect(server_->port())) << c2.error();
  auto off = c2.RoundTrip(PostRequest("/echo", "hello"));
  ASSERT_TRUE(off) << c2.error();
  EXPECT_EQ(off->status, 404u);
}

TEST_F(HttpServerTest, OversizedBodyGets413AndCloseWhileOthersAreServed) {
  StartServer();
  TlsClient big;
  ASSERT_TRUE(big.Connect(server_->port())) << big.error();
  ASSERT_TRUE(
      big.Send("POST / HTTP/1.1\r\nHost: x\r\nContent-Type: text/xml\r\n"
               "Content-Length: 10000000\r\n\r\n<a>"));
  auto start = steady_clock::now();
  auto res = big.Read();
  ASSERT_TRUE(res) << big.error();
  EXPECT_EQ(res->status, 413u);
  EXPECT_EQ(res->connection, "close");
  EXPECT_LT(steady_clock::now() - start, milliseconds(1000));  // refused on the header
  EXPECT_TRUE(big.WaitClosed(milliseconds(3000)));
  ExpectServing();
}

// Issue #13, finding 2: a 200 MB chunk extension or 20 MB of trailers was read in full (Beast
// counts neither against body_limit). Now any chunked body is refused on its header.
TEST_F(HttpServerTest, ChunkedBodyGets411BeforeAnyOfItIsRead) {
  StartServer();
  const std::string head =
      "POST / HTTP/1.1\r\nHost: x\r\nContent-Type: text/xml\r\nTransfer-Encoding: chunked\r\n\r\n";
  {
    // A well-formed small chunked SOAP request: refused too, with a reason.
    TlsClient c;
    ASSERT_TRUE(c.Connect(server_->port())) << c.error();
    auto res = c.RoundTrip(head + "3\r\n<a>\r\n0\r\n\r\n");
    ASSERT_TRUE(res) << c.error();
    EXPECT_EQ(res->status, 411u);
    EXPECT_EQ(res->connection, "close");
    EXPECT_NE(res->body.find("Content-Length"), std::string::npos) << res->body;
    EXPECT_TRUE(c.WaitClosed(milliseconds(3000)));
  }
  {
    // The header, then a chunk extension that never ends: answered without waiting for it.
    TlsClient c;
    ASSERT_TRUE(c.Connect(server_->port())) << c.error();
    // (Only a little is sent: the server closes at once, so a large write would fail.)
    ASSERT_TRUE(c.Send(head + "1;ext=" + std::string(1024, 'e')));
    auto res = c.Read();
    ASSERT_TRUE(res) << c.error();
    EXPECT_EQ(res->status, 411u);
    EXPECT_TRUE(c.WaitClosed(milliseconds(3000)));
  }
  {
    // The health check is not a way around it.
    TlsClient c;
    ASSERT_TRUE(c.Connect(server_->port())) << c.error();
    auto res =
        c.RoundTrip("GET /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" +
                    std::string("0\r\nX-Trailer: ") + std::string(8192, 't') + "\r\n\r\n");
    ASSERT_TRUE(res) << c.error();
    EXPECT_EQ(res->status, 411u);
  }
  ExpectServing();
}

TEST_F(HttpServerTest, OversizedHeadersGet431) {
  StartServer();
  TlsClient c;
  ASSERT_TRUE(c.Connect(server_->port())) << c.error();
  std::string req =
      "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + std::string(4096, 'a') + "\r\n\r\n";
  auto res = c.RoundTrip(req);
  ASSERT_TRUE(res) << c.error();
  EXPECT_EQ(res->status, 431u);
  EXPECT_TRUE(c.WaitClosed(milliseconds(3000)));
  ExpectServing();
}

TEST_F(HttpServerTest, MalformedRequestLineGets400) {
  StartServer();
  TlsClient c;
  ASSERT_TRUE(c.Connect(server_->port())) << c.error();
  auto res = c.RoundTrip("HELLO THERE\r\n\r\n");
  ASSERT_TRUE(res) << c.error();
  EXPECT_EQ(res->status, 400u);
  EXPECT_TRUE(c.WaitClosed(milliseconds(3000)));
  TlsClient c2;
  ASSERT_TRUE(c2.Connect(server_->port())) << c2.error();
  auto bad_length = c2.RoundTrip("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n");
  ASSERT_TRUE(bad_length) << c2.error();
  EXPECT_EQ(bad_length->status, 400u);
  ExpectServing();
}

TEST_F(HttpServerTest, SlowlorisIsCutOffAtTheRequestDeadline) {
  StartServer();
  TlsClient slow;
  ASSERT_TRUE(slow.Connect(server_->port())) << slow.error();
  auto start = steady_clock::now();
  // One header byte every 50 ms: each byte arrives well within any per-read timeout, but
  // the request as a whole must be done within read_timeout_ms (300).
  std::string req = "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\nX-Slow: ";
  bool closed = false;
  bool served_meanwhile = false;
  for (size_t i = 0; i < 200 && !closed; ++i) {
    if (!slow.Send(std::string(1, req[i % req.size()]))) {
      closed = true;
      break;
    }
    closed = slow.PeerClosed(milliseconds(50));
    if (!served_meanwhile) {
      ExpectServing();  // a normal client is not held up by the slow one
      served_meanwhile = true;
    }
  }
  auto elapsed = steady_clock::now() - start;
  EXPECT_TRUE(closed);
  EXPECT_TRUE(served_meanwhile);
  EXPECT_GE(elapsed, milliseconds(250));
  EXPECT_LT(elapsed, milliseconds(1500));
}

TEST_F(HttpServerTest, StalledPartialRequestIsClosedAtReadTimeout) {
  StartServer();
  TlsClient stalled;
  ASSERT_TRUE(stalled.Connect(server_->port())) << stalled.error();
  ASSERT_TRUE(
      stalled.Send("POST / HTTP/1.1\r\nHost: x\r\nContent-Type: text/xml\r\n"
                   "Content-Length: 100\r\n\r\n<partial"));
  auto start = steady_clock::now();
  ExpectServing();
  EXPECT_TRUE(stalled.WaitClosed(milliseconds(3000)));
  auto elapsed = steady_clock::now() - start;
  EXPECT_GE(elapsed, milliseconds(250));
  EXPECT_LT(elapsed, milliseconds(1500));
}

TEST_F(HttpServerTest, IdleKeepAliveConnectionIsClosedAtIdleTimeout) {
  cfg_.idle_timeout_ms = 300;
  StartServer();
  TlsClient c;
  ASSERT_TRUE(c.Connect(server_->port())) << c.error();
  ASSERT_TRUE(c.RoundTrip(GetRequest("/healthz")));
  auto start = steady_clock::now();
  EXPECT_FALSE(c.PeerClosed(milliseconds(150)));  // not before the idle timeout
  EXPECT_TRUE(c.PeerClosed(milliseconds(3000)));
  auto elapsed = steady_clock::now() - start;
  EXPECT_GE(elapsed, milliseconds(250));
  EXPECT_LT(elapsed, milliseconds(1500));
}

TEST_F(HttpServerTest, ClientThatNeverHandshakesIsClosedAtHandshakeTimeout) {
  cfg_.handshake_timeout_ms = 300;
  StartServer();
  boost::asio::io_context ioc;
  boost::asio::ip::tcp::socket raw(ioc);
  raw.connect({boost::asio::ip::make_address("127.0.0.1"), server_->port()});
  auto start = steady_clock::now();
  pollfd p{raw.native_handle(), POLLRDHUP, 0};
  ASSERT_EQ(::poll(&p, 1, 3000), 1);
  EXPECT_NE(p.revents & (POLLRDHUP | POLLHUP | POLLERR), 0);
  auto elapsed = steady_clock::now() - start;
  EXPECT_GE(elapsed, milliseconds(250));
  EXPECT_LT(elapsed, milliseconds(1500));
  ExpectServing();
}

TEST_F(HttpServerTest, TruncatedBodyThenCloseLeavesServerServing) {
  StartServer();
  {
    TlsClient c;
    ASSERT_TRUE(c.Connect(server_->port())) << c.error();
    ASSERT_TRUE(
        c.Send("POST / HTTP/1.1\r\nHost: x\r\nContent-Type: text/xml\r\n"
               "Content-Length: 1000\r\n\r\n<only-a-bit"));
    c.Close();
  }
  EXPECT_TRUE(Eventually([&] { return server_->active_connections() == 0; }));
  ExpectServing();
}

TEST_F(HttpServerTest, Tls11ClientIsRefused) {
  StartServer();
  TlsClient old;
  EXPECT_FALSE(old.Connect(server_->port(), {.max_tls_version = TLS1_1_VERSION}));
  // The same client settings capped at TLS 1.2 do connect: the refusal is about the version.
  TlsClient tls12;
  EXPECT_TRUE(tls12.Connect(server_->port(), {.max_tls_version = TLS1_2_VERSION})) << tls12.error();
  ExpectServing();
}

// With two connections open and the limit reached: a third is closed at accept, the two keep
// working, and a slot freed is a slot available.
void ExpectTwoConnectionsThenRefusal(HttpServer* server) {
  TlsClient a, b;
  ASSERT_TRUE(a.Connect(server->port())) << a.error();
  ASSERT_TRUE(b.Connect(server->port())) << b.error();
  ASSERT_TRUE(Eventually([&] { return server->active_connections() == 2; }));
  TlsClient c;
  EXPECT_FALSE(c.Connect(server->port()));
  EXPECT_EQ(server->rejected_connections(), 1u);
  auto res = a.RoundTrip(GetRequest("/healthz"));
  ASSERT_TRUE(res) << a.error();
  EXPECT_EQ(res->status, 200u);
  b.Close();
  ASSERT_TRUE(Eventually([&] { return server->active_connections() == 1; }));
  TlsClient d;
  EXPECT_TRUE(d.Connect(server->port())) << d.error();
}

TEST_F(HttpServerTest, MaxConnectionsIsEnforced) {
  cfg_.max_connections = 2;
  StartServer();
  ExpectTwoConnectionsThenRefusal(server_.get());
}

TEST_F(HttpServerTest, FullWorkerQueueGets503WithRetryAfter) {
  cfg_.worker_threads = 1;
  cfg_.max_queued_requests = 1;
  StartServer();
  endpoint_.Gate();
  TlsClient running, queued, refused;
  ASSERT_TRUE(running.Connect(server_->port()));
  ASSERT_TRUE(running.Send(PostRequest("/", "one")));
  ASSERT_TRUE(endpoint_.WaitEntered(1));
  ASSERT_TRUE(queued.Connect(server_->port()));
  ASSERT_TRUE(queued.Send(PostRequest("/", "two")));
  ASSERT_TRUE(Eventually([&] { return server_->queued_requests() == 1; }));
  ASSERT_TRUE(refused.Connect(server_->port()));
  auto busy = refused.RoundTrip(PostRequest("/", "three"));
  ASSERT_TRUE(busy) << refused.error();
  EXPECT_EQ(busy->status, 503u);
  EXPECT_EQ(busy->retry_after, "1");
  // /healthz needs no worker, and says the pool is saturated (issue #13: it said ok while
  // every SOAP call waited), so that a load balancer sends the next request elsewhere.
  auto health = refused.RoundTrip(GetRequest("/healthz"));
  ASSERT_TRUE(health) << refused.error();
  EXPECT_EQ(health->status, 503u);
  EXPECT_NE(health->body.find("saturated"), std::string::npos) << health->body;
  endpoint_.Release();
  auto r1 = running.Read(), r2 = queued.Read();
  ASSERT_TRUE(r1 && r2);
  EXPECT_EQ(r1->status, 200u);
  EXPECT_EQ(r2->status, 200u);
  ExpectServing();
}

// Issue #13 finding 7: one peer could take every connection slot.
TEST_F(HttpServerTest, OnePeerCannotTakeEveryConnection) {
  cfg_.max_connections = 16;
  cfg_.max_connections_per_peer = 2;
  StartServer();
  ExpectTwoConnectionsThenRefusal(server_.get());
}

// Issue #14: behind haproxy (TLS passthrough, send-proxy) the MA sees the client, not the proxy:
// in the request log, audit rows and the per-peer limits.
TEST_F(HttpServerTest, ProxyLineFromATrustedProxyNamesTheClient) {
  cfg_.trusted_proxies = {"127.0.0.1"};
  StartServer();
  TlsClient c;
  ASSERT_TRUE(
      c.Connect(server_->port(), {.before_tls = "PROXY TCP4 192.0.2.7 127.0.0.1 40000 8443\r\n"}))
      << c.error();
  auto res = c.RoundTrip(PostRequest("/", "x"));
  ASSERT_TRUE(res) << c.error();
  EXPECT_EQ(res->status, 200u);
  EXPECT_EQ(endpoint_.last_info().peer, "192.0.2.7:40000");

  TlsClient v6;
  ASSERT_TRUE(
      v6.Connect(server_->port(), {.before_tls = "PROXY TCP6 2001:db8::7 ::1 40001 8443\r\n"}))
      << v6.error();
  ASSERT_TRUE(v6.RoundTrip(PostRequest("/", "x")));
  EXPECT_EQ(endpoint_.last_info().peer, "[2001:db8::7]:40001");

  // UNKNOWN (haproxy's health checks may send it): the proxy itself is the peer.
  TlsClient unknown;
  ASSERT_TRUE(unknown.Connect(server_->port(), {.before_tls = "PROXY UNKNOWN\r\n"}))
      << unknown.error();
  ASSERT_TRUE(unknown.RoundTrip(PostRequest("/", "x")));
  EXPECT_TRUE(endpoint_.last_info().peer.starts_with("127.0.0.1:")) << endpoint_.last_info().peer;
}

TEST_F(HttpServerTest, TrustedProxyMustSendAValidProxyLine) {
  cfg_.trusted_proxies = {"127.0.0.1"};
  StartServer();
  for (const char* bad : {"", "PROXY TCP4 192.0.2.300 127.0.0.1 1 2\r\n",
                          "PROXY TCP4 192.0.2.7 127.0.0.1 1\r\n", "GET / HTTP/1.1\r\n"}) {
    TlsClient c;
    EXPECT_FALSE(c.Connect(server_->port(), {.before_tls = bad})) << "'" << bad << "'";
  }
  EXPECT_EQ(endpoint_.entered(), 0);
  TlsClient good;
  EXPECT_TRUE(good.Connect(server_->port(), {.before_tls = "PROXY UNKNOWN\r\n"})) << good.error();
}

// Only a configured proxy may name the client: from anyone else the line is not TLS.
TEST_F(HttpServerTest, ProxyLineFromAnyoneElseFailsTheHandshake) {
  StartServer();
  TlsClient c;
  EXPECT_FALSE(
      c.Connect(server_->port(), {.before_tls = "PROXY TCP4 192.0.2.7 127.0.0.1 40000 8443\r\n"}));
  ExpectServing();
}

// Per-peer slots are the clients', not the proxy's: one client behind the proxy gets
// max_connections_per_peer, another client still gets in.
TEST_F(HttpServerTest, PerPeerLimitCountsTheClientBehindTheProxy) {
  cfg_.trusted_proxies = {"127.0.0.1"};
  cfg_.max_connections_per_peer = 2;
  StartServer();
  const ClientOptions a{.before_tls = "PROXY TCP4 192.0.2.7 127.0.0.1 40000 8443\r\n"};
  TlsClient a1, a2, a3, b;
  ASSERT_TRUE(a1.Connect(server_->port(), a)) << a1.error();
  ASSERT_TRUE(a2.Connect(server_->port(), a)) << a2.error();
  EXPECT_FALSE(a3.Connect(server_->port(), a));
  EXPECT_EQ(server_->rejected_connections(), 1u);
  ASSERT_TRUE(
      b.Connect(server_->port(), {.before_tls = "PROXY TCP4 192.0.2.8 127.0.0.1 40000 8443\r\n"}))
      << b.error();
  auto res = b.RoundTrip(PostRequest("/", "x"));
  ASSERT_TRUE(res) << b.error();
  EXPECT_EQ(endpoint_.last_info().peer, "192.0.2.8:40000");
}

// Issue #13 finding 7: 1,024 connections x 16 MiB bodies was 16 GiB in flight. Each request
// reserves its Content-Length on its header; past the budget: 503 before the body is read.
TEST_F(HttpServerTest, InFlightBodyBytesAreBounded) {
  cfg_.max_body_bytes = 64 * 1024;
  cfg_.max_inflight_bytes = 100 * 1024;
  StartServer();
  const std::string head =
      "POST / HTTP/1.1\r\nHost: x\r\nContent-Type: text/xml\r\nContent-Length: 60000\r\n\r\n";
  TlsClient slow, second;
  ASSERT_TRUE(slow.Connect(server_->port())) << slow.error();
  ASSERT_TRUE(slow.Send(head + std::string(1000, 'a')));  // holds 60000 of the 102400
  ASSERT_TRUE(Eventually([&] { return server_->inflight_bytes() == 60000; }));
  ASSERT_TRUE(second.Connect(server_->port())) << second.error();
  TlsClient refused;
  ASSERT_TRUE(refused.Connect(server_->port())) << refused.error();
  auto busy = refused.RoundTrip(head);
  ASSERT_TRUE(busy) << refused.error();
  EXPECT_EQ(busy->status, 503u);
  EXPECT_EQ(busy->retry_after, "1");
  EXPECT_NE(busy->body.find("in flight"), std::string::npos) << busy->body;
  EXPECT_TRUE(refused.WaitClosed(milliseconds(3000)));  // its body was never read
  // A small request still fits beside the held one.
  auto small = second.RoundTrip(PostRequest("/", "small"));
  ASSERT_TRUE(small) << second.error();
  EXPECT_EQ(small->status, 200u);
  // The held request completes, gives its bytes back, and a large one fits again.
  ASSERT_TRUE(slow.Send(std::string(59000, 'a')));
  auto done = slow.Read();
  ASSERT_TRUE(done) << slow.error();
  EXPECT_EQ(done->status, 200u);
  ASSERT_TRUE(Eventually([&] { return server_->inflight_bytes() == 0; }));
  auto again = second.RoundTrip(head + std::string(60000, 'b'));
  ASSERT_TRUE(again) << second.error();
  EXPECT_EQ(again->status, 200u);
}

TEST_F(HttpServerTest, EndpointExceptionBecomesFaultAndServerSurvives) {
  StartServer();
  TlsClient c;
  ASSERT_TRUE(c.Connect(server_->port()));
  auto res = c.RoundTrip(PostRequest("/", "throw"));
  ASSERT_TRUE(res) << c.error();
  EXPECT_EQ(res->status, 500u);
  EXPECT_NE(res->body.find("<ma:Code>Internal</ma:Code>"), std::string::npos) << res->body;
  auto again = c.RoundTrip(PostRequest("/", "fine"));
  ASSERT_TRUE(again) << c.error();
  EXPECT_EQ(again->status, 200u);
}

TEST_F(HttpServerTest, Expect100ContinueIsHonoured) {
  StartServer();
  TlsClient c;
  ASSERT_TRUE(c.Connect(server_->port()));
  ASSERT_TRUE(
      c.Send("POST / HTTP/1.1\r\nHost: x\r\nContent-Type: text/xml\r\n"
             "Content-Length: 4\r\nExpect: 100-continue\r\n\r\n"));
  auto interim = c.Read();
  ASSERT_TRUE(interim) << c.error();
  EXPECT_EQ(interim->status, 100u);
  ASSERT_TRUE(c.Send("<a/>"));
  auto res = c.Read();
  ASSERT_TRUE(res) << c.error();
  EXPECT_EQ(res->status, 200u);
  EXPECT_EQ(res->body, "<ok n=\"4\"/>");
  // Too big: refused before the client sends the body.
  auto big = c.RoundTrip(
      "POST / HTTP/1.1\r\nHost: x\r\nContent-Type: text/xml\r\n"
      "Content-Length: 1000000\r\nExpect: 100-continue\r\n\r\n");
  ASSERT_TRUE(big) << c.error();
  EXPECT_EQ(big->status, 413u);
}

TEST_F(HttpServerTest, ClientCertificateFingerprintReachesTheEndpoint) {
  cfg_.tls_request_client_cert = true;
  StartServer();
  testing::CertFiles operator_cert = testing::MakeSelfSignedCert(dir_.path(), "operator");
  TlsClient with_cert;
  ASSERT_TRUE(with_cert.Connect(server_->port(), {.client_cert = &operator_cert}))
      << with_cert.error();
  ASSERT_TRUE(with_cert.RoundTrip(PostRequest("/", "x")));
  EXPECT_EQ(endpoint_.last_info().client_cert_fingerprint, operator_cert.sha256_hex);
  TlsClient without;
  ASSERT_TRUE(without.Connect(server_->port())) << without.error();
  ASSERT_TRUE(without.RoundTrip(PostRequest("/", "y")));
  EXPECT_EQ(endpoint_.last_info().client_cert_fingerprint, "");
}

// haproxy's health checks, curl and browsers resume TLS sessions; with client certificates
// requested that once failed every resumed handshake (CI: both instances marked down).
TEST_F(HttpServerTest, ResumedSessionKeepsTheClientCertificate) {
  testing::CertFiles ca = testing::MakeSelfSignedCert(dir_.path(), "admin-ca");
  cfg_.tls_client_ca = ca.cert_path;
  StartServer();
  for (int tls : {TLS1_2_VERSION, TLS1_3_VERSION}) {
    SCOPED_TRACE(tls);
    TlsClient first;
    ASSERT_TRUE(first.Connect(server_->port(), {.max_tls_version = tls, .client_cert = &ca}))
        << first.error();
    ASSERT_TRUE(first.RoundTrip(PostRequest("/", "x")));
    std::string session = first.Session();
    ASSERT_FALSE(session.empty());
    first.Close();
    TlsClient again;
    ASSERT_TRUE(again.Connect(server_->port(), {.max_tls_version = tls, .resume_session = session}))
        << again.error();
    auto answer = again.RoundTrip(PostRequest("/", "y"));
    ASSERT_TRUE(answer) << again.error();
    EXPECT_EQ(answer->status, 200u);
    EXPECT_TRUE(again.Resumed());
    EXPECT_EQ(endpoint_.last_info().client_cert_fingerprint, ca.sha256_hex);
  }
}

TEST_F(HttpServerTest, ClientCertificateNotFromTheConfiguredCaIsRefused) {
  testing::CertFiles ca = testing::MakeSelfSignedCert(dir_.path(), "admin-ca");
  cfg_.tls_client_ca = ca.cert_path;
  StartServer();
  testing::CertFiles stranger = testing::MakeSelfSignedCert(dir_.path(), "stranger");
  TlsClient c;
  bool ok = c.Connect(server_->port(), {.client_cert = &stranger});
  // TLS 1.3: the client learns of the refusal on its first read.
  if (ok) ok = c.RoundTrip(GetRequest("/healthz")).has_value();
  EXPECT_FALSE(ok);
  // Presenting no certificate is allowed (LMS clients have none).
  ExpectServing();
}

TEST_F(HttpServerTest, StopFinishesInFlightRequestsThenCloses) {
  StartServer();
  endpoint_.Gate();
  TlsClient busy, idle;
  ASSERT_TRUE(idle.Connect(server_->port()));
  ASSERT_TRUE(idle.RoundTrip(GetRequest("/healthz")));
  ASSERT_TRUE(busy.Connect(server_->port()));
  ASSERT_TRUE(busy.Send(PostRequest("/", "in-flight")));
  ASSERT_TRUE(endpoint_.WaitEntered(1));

  server_->Stop();
  auto waited = std::async(std::launch::async, [&] { server_->Wait(); });
  EXPECT_TRUE(idle.WaitClosed(milliseconds(3000)));  // idle keep-alive: closed at once
  EXPECT_EQ(waited.wait_for(milliseconds(100)), std::future_status::timeout);  // still busy
  TlsClient late;
  EXPECT_FALSE(late.Connect(server_->port(), {}, milliseconds(1000)));

  endpoint_.Release();
  auto res = busy.Read();
  ASSERT_TRUE(res) << busy.error();
  EXPECT_EQ(res->status, 200u);
  EXPECT_EQ(res->connection, "close");
  EXPECT_EQ(waited.wait_for(milliseconds(5000)), std::future_status::ready);
  EXPECT_EQ(server_->active_connections(), 0);
}

TEST_F(HttpServerTest, StopGivesUpOnStuckRequestsAfterTheTimeout) {
  cfg_.shutdown_timeout_ms = 200;
  StartServer();
  endpoint_.Gate();
  TlsClient busy;
  ASSERT_TRUE(busy.Connect(server_->port()));
  ASSERT_TRUE(busy.Send(PostRequest("/", "stuck")));
  ASSERT_TRUE(endpoint_.WaitEntered(1));
  server_->Stop();
  auto waited = std::async(std::launch::async, [&] { server_->Wait(); });
  // The connection is dropped at the deadline even though the worker is still busy.
  EXPECT_TRUE(busy.WaitClosed(milliseconds(3000)));
  endpoint_.Release();  // now Wait() can join the worker
  EXPECT_EQ(waited.wait_for(milliseconds(5000)), std::future_status::ready);
}

TEST_F(HttpServerTest, BadCertificateOrKeyIsAnInvalidArgument) {
  cfg_.tls_certificate = dir_.File("missing.crt");
  auto missing = HttpServer::Create(cfg_, &endpoint_, Env::Default());
  ASSERT_FALSE(missing.has_value());
  EXPECT_NE(missing.error().message().find("tls.certificate"), std::string::npos);

  testing::CertFiles other = testing::MakeSelfSignedCert(dir_.path(), "other");
  cfg_.tls_certificate = cert_.cert_path;
  cfg_.tls_private_key = other.key_path;
  auto mismatch = HttpServer::Create(cfg_, &endpoint_, Env::Default());
  ASSERT_FALSE(mismatch.has_value());
  EXPECT_EQ(mismatch.error().code(), Code::kInvalidArgument);
  EXPECT_NE(mismatch.error().message().find("tls.private_key"), std::string::npos)
      << mismatch.error().ToString();
}

TEST_F(HttpServerTest, PortInUseIsAnIoError) {
  StartServer();
  cfg_.listen_port = server_->port();
  TestEndpoint other;
  auto second = HttpServer::Create(cfg_, &other, Env::Default());
  ASSERT_FALSE(second.has_value());
  EXPECT_EQ(second.error().code(), Code::kIoError);
}

TEST(UnsupportedEndpointTest, AnswersEveryRequestWithAnUnsupportedFault) {
  auto endpoint = MakeUnsupportedEndpoint();
  Reply reply = endpoint->Handle("<Envelope/>", RequestInfo{});
  EXPECT_EQ(reply.http_status, 500u);
  EXPECT_NE(reply.body.find("<ma:Code>Unsupported</ma:Code>"), std::string::npos);
  EXPECT_NE(reply.body.find("operations not built yet"), std::string::npos);
  EXPECT_EQ(reply.log_outcome, "Unsupported");
}

TEST(SoapFaultXmlTest, EscapesTheMessageAndPicksTheFaultcode) {
  std::string client = wsdl::SoapFaultXml(Status(Code::kMalformed, "bad <tag> & \"quote\""));
  EXPECT_NE(client.find("SOAP-ENV:Client"), std::string::npos);
  EXPECT_NE(client.find("bad &lt;tag&gt; &amp; &quot;quote&quot;"), std::string::npos);
  EXPECT_EQ(client.find("<tag>"), std::string::npos);
  std::string server = wsdl::SoapFaultXml(Status(Code::kIoError, "disk"));
  EXPECT_NE(server.find("SOAP-ENV:Server"), std::string::npos);
}

}  // namespace
}  // namespace tpmma::server
