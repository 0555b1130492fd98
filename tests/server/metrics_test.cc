// SPDX-License-Identifier: GPL-2.0-or-later
// GET /metrics: the text format writer (escaping, histograms), the registry's bounded label
// sets, and the route on a real HTTPS front end on 127.0.0.1 (ephemeral port): off by
// default, 403 for a peer not in metrics.allow, counters that agree with the request log.
#include <utility>  // before Asio: Boost 1.74 under C++23

#include "server/metrics.h"

#include <gtest/gtest.h>

#include <fmt/format.h>

#include <map>
#include <optional>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "common/env.h"
#include "server/http_server.h"
#include "tests/server/tls_client.h"
#include "tests/support/testutil.h"

namespace tpmma::server {
namespace {

using testing::GetRequest;
using testing::PostRequest;
using testing::TlsClient;

// Every sample line of an exposition, by its series text (name and labels) → value.
std::map<std::string, std::string> Samples(const std::string& text) {
  std::map<std::string, std::string> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    size_t space = line.rfind(' ');
    out[line.substr(0, space)] = line.substr(space + 1);
  }
  return out;
}

// The format's grammar for what we write: comments are HELP or TYPE, samples are
// name{label="value",...} value, and the text ends with a newline.
void ExpectWellFormed(const std::string& text) {
  ASSERT_FALSE(text.empty());
  EXPECT_EQ(text.back(), '\n');
  const std::regex comment(
      R"(# (HELP [a-zA-Z_:][a-zA-Z0-9_:]* .*|TYPE [a-zA-Z_:][a-zA-Z0-9_:]* (counter|gauge|histogram)))");
  const std::regex sample(
      R"re([a-zA-Z_:][a-zA-Z0-9_:]*(\{[a-zA-Z_][a-zA-Z0-9_]*="([^"\\]|\\.)*"(,[a-zA-Z_][a-zA-Z0-9_]*="([^"\\]|\\.)*")*\})? [0-9.e+-]+)re");
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    EXPECT_TRUE(std::regex_match(line, line[0] == '#' ? comment : sample)) << line;
  }
}

TEST(MetricsTextTest, EscapesBackslashQuoteAndNewlineInLabelValues) {
  EXPECT_EQ(EscapeLabelValue("plain"), "plain");
  EXPECT_EQ(EscapeLabelValue("a\\b\"c\nd"), "a\\\\b\\\"c\\nd");
  EXPECT_EQ(EscapeHelp("x\\y\nz \"q\""), "x\\\\y\\nz \"q\"");  // quotes stay in HELP
  MetricsText t;
  t.Family("t_total", "counter", "line one\nline two");
  t.Sample("t_total", {{"k", "a\\b\"c\nd"}, {"j", ""}}, uint64_t{3});
  t.Sample("t_seconds", {}, 0.25);
  EXPECT_EQ(t.Take(),
            "# HELP t_total line one\\nline two\n# TYPE t_total counter\n"
            "t_total{k=\"a\\\\b\\\"c\\nd\",j=\"\"} 3\nt_seconds 0.25\n");
}

TEST(MetricsTextTest, HistogramBucketsAreCumulativeWithInfSumAndCount) {
  MetricsText t;
  t.Histogram("h", {{"op", "x"}}, {0.5, 1, 2.5}, {1, 0, 2, 4}, 12.75);
  EXPECT_EQ(t.Take(),
            "h_bucket{op=\"x\",le=\"0.5\"} 1\n"
            "h_bucket{op=\"x\",le=\"1\"} 1\n"
            "h_bucket{op=\"x\",le=\"2.5\"} 3\n"
            "h_bucket{op=\"x\",le=\"+Inf\"} 7\n"
            "h_sum{op=\"x\"} 12.75\n"
            "h_count{op=\"x\"} 7\n");
}

TEST(MetricsTest, LatencyGoesIntoTheFirstBucketThatHoldsIt) {
  Metrics m("1.2.3");
  m.Record("Upload", "ok", 1000);        // exactly 1 ms: le="0.001" (bounds are inclusive)
  m.Record("Upload", "ok", 1001);        // just above: le="0.0025"
  m.Record("Upload", "ok", 60'000'000);  // a minute: +Inf only
  auto s = Samples(m.Render({}));
  EXPECT_EQ(s["tpmma_request_duration_seconds_bucket{op=\"Upload\",le=\"0.001\"}"], "1");
  EXPECT_EQ(s["tpmma_request_duration_seconds_bucket{op=\"Upload\",le=\"0.0025\"}"], "2");
  EXPECT_EQ(s["tpmma_request_duration_seconds_bucket{op=\"Upload\",le=\"10\"}"], "2");
  EXPECT_EQ(s["tpmma_request_duration_seconds_bucket{op=\"Upload\",le=\"+Inf\"}"], "3");
  EXPECT_EQ(s["tpmma_request_duration_seconds_count{op=\"Upload\"}"], "3");
  EXPECT_EQ(s["tpmma_request_duration_seconds_sum{op=\"Upload\"}"], "60.002001");
  EXPECT_EQ(s["tpmma_requests_total{op=\"Upload\",outcome=\"ok\"}"], "3");
  EXPECT_EQ(s["tpmma_build_info{version=\"1.2.3\"}"], "1");
}

TEST(MetricsTest, InventedOperationsAndOutcomesFoldIntoOther) {
  Metrics m("v");
  for (int i = 0; i < 100; ++i) {
    m.Record("Bogus" + std::to_string(i) + "\"\n", "Weird" + std::to_string(i), 5);
  }
  m.Record("", "NotFound", 5);  // refused before any operation was known
  std::string text = m.Render({});
  ExpectWellFormed(text);
  EXPECT_EQ(text.find("Bogus"), std::string::npos) << text;
  EXPECT_EQ(text.find("Weird"), std::string::npos) << text;
  auto s = Samples(text);
  EXPECT_EQ(s["tpmma_requests_total{op=\"other\",outcome=\"other\"}"], "100");
  EXPECT_EQ(s["tpmma_requests_total{op=\"-\",outcome=\"NotFound\"}"], "1");
  // The label sets are fixed lists, whatever clients send.
  EXPECT_LE(Metrics::Operations().size(), 32u);
  EXPECT_LE(Metrics::Outcomes().size(), 32u);
}

// Recording is relaxed atomics, from every I/O thread at once: nothing may be lost.
TEST(MetricsTest, ConcurrentRecordsAreAllCounted) {
  Metrics m("v");
  constexpr int kThreads = 8;
  constexpr int kEach = 20'000;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&m, t] {
      for (int i = 0; i < kEach; ++i) m.Record(t % 2 ? "Upload" : "Query", "ok", 1500);
    });
  }
  for (auto& th : threads) th.join();
  auto s = Samples(m.Render({}));
  const std::string half = std::to_string(kThreads / 2 * kEach);
  EXPECT_EQ(s["tpmma_requests_total{op=\"Upload\",outcome=\"ok\"}"], half);
  EXPECT_EQ(s["tpmma_requests_total{op=\"Query\",outcome=\"ok\"}"], half);
  EXPECT_EQ(s["tpmma_request_duration_seconds_count{op=\"Upload\"}"], half);
  EXPECT_EQ(s["tpmma_request_duration_seconds_bucket{op=\"Query\",le=\"0.0025\"}"], half);
  EXPECT_EQ(s["tpmma_request_duration_seconds_bucket{op=\"Query\",le=\"0.001\"}"], "0");
}

TEST(MetricsTest, VaultFamiliesOnlyWithAVault) {
  Metrics m("v");
  MetricsSnapshot snap;
  snap.connections_open = 3;
  snap.connections_rejected = 4;
  std::string without = m.Render(snap);
  EXPECT_EQ(without.find("tpmma_vault"), std::string::npos);
  auto s0 = Samples(without);
  EXPECT_EQ(s0["tpmma_http_connections_open"], "3");
  EXPECT_EQ(s0["tpmma_http_connections_rejected_total"], "4");

  storage::VaultStats v;
  v.calls = 10;
  v.commits = 4;
  v.batch_sizes[storage::BatchSizeBucket(1)] = 2;
  v.batch_sizes[storage::BatchSizeBucket(4)] = 2;  // batches of 3 and 4 calls
  v.batches = 4;
  v.batch_calls = 9;
  v.largest_batch = 4;
  v.deferred_lost = 5;
  v.errors = 6;
  snap.vault = v;
  snap.vault_healthy = true;
  std::string with = m.Render(snap);
  ExpectWellFormed(with);
  auto s = Samples(with);
  EXPECT_EQ(s["tpmma_vault_healthy"], "1");
  EXPECT_EQ(s["tpmma_vault_write_calls_total"], "10");
  EXPECT_EQ(s["tpmma_vault_commits_total"], "4");
  EXPECT_EQ(s["tpmma_vault_batch_size_bucket{le=\"1\"}"], "2");
  EXPECT_EQ(s["tpmma_vault_batch_size_bucket{le=\"2\"}"], "2");
  EXPECT_EQ(s["tpmma_vault_batch_size_bucket{le=\"4\"}"], "4");
  EXPECT_EQ(s["tpmma_vault_batch_size_bucket{le=\"+Inf\"}"], "4");
  EXPECT_EQ(s["tpmma_vault_batch_size_sum"], "9");
  EXPECT_EQ(s["tpmma_vault_batch_size_count"], "4");
  EXPECT_EQ(s["tpmma_vault_deferred_audit_lost_total"], "5");
  EXPECT_EQ(s["tpmma_vault_errors_total"], "6");
}

// --- The route on a real server

// Each request's body is the operation name it reports (so a test can make up any), and
// optional vault counters.
class OpEchoEndpoint : public Endpoint {
 public:
  Reply Handle(std::string_view body, const RequestInfo&) override {
    Reply reply;
    reply.body = "<ok/>";
    reply.log_op = std::string(body);
    reply.log_platform = "platform-secret-id";
    return reply;
  }
  std::optional<storage::VaultStats> GetVaultStats() const override { return vault; }
  std::optional<storage::VaultStats> vault;
};

class MetricsRouteTest : public ::testing::Test {
 protected:
  void SetUp() override {
    cert_ = testing::MakeSelfSignedCert(dir_.path(), "server");
    cfg_.listen_address = "127.0.0.1";
    cfg_.listen_port = 0;
    cfg_.io_threads = 1;
    cfg_.worker_threads = 1;
    cfg_.tls_certificate = cert_.cert_path;
    cfg_.tls_private_key = cert_.key_path;
    cfg_.metrics_enabled = true;
  }
  void TearDown() override {
    if (server_) {
      server_->Stop();
      server_->Wait();
    }
  }
  void StartServer() {
    auto server = HttpServer::Create(cfg_, &endpoint_, Env::Default());
    ASSERT_TRUE(server.has_value()) << server.error().ToString();
    server_ = std::move(*server);
    ASSERT_TRUE(server_->Start(/*handle_signals=*/false).ok());
  }
  // On one keep-alive connection: a request's counting is done before the next one is read.
  std::optional<testing::HttpResponse> Get(TlsClient& c, const std::string& target) {
    auto r = c.RoundTrip(GetRequest(target));
    EXPECT_TRUE(r.has_value()) << c.error();
    return r;
  }

  testing::TempDir dir_;
  testing::CertFiles cert_;
  Config cfg_;
  OpEchoEndpoint endpoint_;
  std::unique_ptr<HttpServer> server_;
};

TEST_F(MetricsRouteTest, DisabledByDefaultIsNotFound) {
  cfg_.metrics_enabled = Config().metrics_enabled;
  ASSERT_FALSE(cfg_.metrics_enabled);
  StartServer();
  TlsClient c;
  ASSERT_TRUE(c.Connect(server_->port())) << c.error();
  auto r = Get(c, "/metrics");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 404u);
  EXPECT_EQ(r->body.find("tpmma_"), std::string::npos);
}

TEST_F(MetricsRouteTest, AllowedPeerSeesCountersMoveWithRequests) {
  StartServer();
  TlsClient c;
  ASSERT_TRUE(c.Connect(server_->port())) << c.error();
  for (int i = 0; i < 3; ++i) {
    auto r = c.RoundTrip(PostRequest("/", "GetMAServiceInfo"));
    ASSERT_TRUE(r) << c.error();
    ASSERT_EQ(r->status, 200u);
  }
  ASSERT_TRUE(c.RoundTrip(PostRequest("/", "InventedOp\"{x=\"1\"}")));
  ASSERT_TRUE(Get(c, "/nowhere"));
  auto r = Get(c, "/metrics?ignored=1");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200u);
  EXPECT_EQ(r->content_type, "text/plain; version=0.0.4; charset=utf-8");
  ExpectWellFormed(r->body);
  for (const char* family :
       {"tpmma_requests_total", "tpmma_request_duration_seconds", "tpmma_http_connections_open",
        "tpmma_http_connections_rejected_total", "tpmma_requests_queued",
        "tpmma_inflight_body_bytes", "tpmma_build_info"}) {
    EXPECT_NE(r->body.find(std::string("# TYPE ") + family + " "), std::string::npos) << family;
  }
  auto s = Samples(r->body);
  EXPECT_EQ(s["tpmma_requests_total{op=\"GetMAServiceInfo\",outcome=\"ok\"}"], "3") << r->body;
  EXPECT_EQ(s["tpmma_requests_total{op=\"other\",outcome=\"ok\"}"], "1") << r->body;
  EXPECT_EQ(s["tpmma_requests_total{op=\"-\",outcome=\"NotFound\"}"], "1") << r->body;
  EXPECT_EQ(s["tpmma_http_connections_open"], "1");
  // Cumulative buckets, +Inf = _count = the counter.
  uint64_t last = 0;
  for (double le : Metrics::kLatencyBounds) {
    std::string key = "tpmma_request_duration_seconds_bucket{op=\"GetMAServiceInfo\",le=\"" +
                      fmt::format("{}", le) + "\"}";
    ASSERT_TRUE(s.contains(key)) << key << "\n" << r->body;
    uint64_t n = std::stoull(s[key]);
    EXPECT_GE(n, last) << key;
    last = n;
  }
  EXPECT_EQ(s["tpmma_request_duration_seconds_bucket{op=\"GetMAServiceInfo\",le=\"+Inf\"}"], "3");
  EXPECT_EQ(s["tpmma_request_duration_seconds_count{op=\"GetMAServiceInfo\"}"], "3");
  // Nothing a client chose, no platform and no peer address.
  EXPECT_EQ(r->body.find("Invented"), std::string::npos) << r->body;
  EXPECT_EQ(r->body.find("platform-secret-id"), std::string::npos);
  EXPECT_EQ(r->body.find("127.0.0.1"), std::string::npos);
  // No vault behind this endpoint: no vault families.
  EXPECT_EQ(r->body.find("tpmma_vault"), std::string::npos);

  // The scrape itself is counted once it is answered.
  auto again = Samples(Get(c, "/metrics")->body);
  EXPECT_EQ(again["tpmma_requests_total{op=\"metrics\",outcome=\"ok\"}"], "1");
}

TEST_F(MetricsRouteTest, PeerNotInAllowGetsForbiddenAndNothingElse) {
  cfg_.metrics_allow = {"192.0.2.1", "::1"};  // not 127.0.0.1
  StartServer();
  TlsClient c;
  ASSERT_TRUE(c.Connect(server_->port())) << c.error();
  auto r = Get(c, "/metrics");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 403u);
  EXPECT_EQ(r->body, "Forbidden\n");
  // The connection stays usable.
  auto health = Get(c, "/healthz");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200u);
}

TEST_F(MetricsRouteTest, OnlyGetAndHeadAreAnswered) {
  StartServer();
  TlsClient c;
  ASSERT_TRUE(c.Connect(server_->port())) << c.error();
  auto post = c.RoundTrip(PostRequest("/metrics", "x", "text/plain"));
  ASSERT_TRUE(post) << c.error();
  EXPECT_EQ(post->status, 405u);
  EXPECT_EQ(post->allow, "GET, HEAD");
}

TEST_F(MetricsRouteTest, VaultCountersOfTheEndpointAreShown) {
  storage::VaultStats v;
  v.calls = 7;
  v.errors = 2;
  v.deferred_lost = 1;
  endpoint_.vault = v;
  StartServer();
  TlsClient c;
  ASSERT_TRUE(c.Connect(server_->port())) << c.error();
  auto r = Get(c, "/metrics");
  ASSERT_TRUE(r);
  ExpectWellFormed(r->body);
  auto s = Samples(r->body);
  EXPECT_EQ(s["tpmma_vault_healthy"], "1");  // Endpoint::Ready() is true
  EXPECT_EQ(s["tpmma_vault_write_calls_total"], "7");
  EXPECT_EQ(s["tpmma_vault_errors_total"], "2");
  EXPECT_EQ(s["tpmma_vault_deferred_audit_lost_total"], "1");
}

TEST_F(MetricsRouteTest, BadAllowAddressIsRefusedAtCreate) {
  cfg_.metrics_allow = {"not-an-address"};
  auto server = HttpServer::Create(cfg_, &endpoint_, Env::Default());
  ASSERT_FALSE(server.has_value());
  EXPECT_EQ(server.error().code(), Code::kInvalidArgument);
  EXPECT_NE(server.error().message().find("metrics.allow"), std::string::npos);
}

}  // namespace
}  // namespace tpmma::server
