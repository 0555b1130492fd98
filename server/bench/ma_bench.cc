// SPDX-License-Identifier: GPL-2.0-or-later
// ma-bench: a closed-loop load generator for ma-server. N keep-alive TLS connections each
// send a request, wait for the reply, and send the next, for a fixed duration. Every
// operation is measured in the same run as a bare echo (POST /echo, which the server
// answers through the same front end and worker pool without gSOAP or the vault), so the
// ratio to echo is meaningful on a shared, noisy machine where absolute numbers are not.
//
// --mix runs one long phase instead, every connection cycling through all the listed
// operations, hostile requests included (bench_soak.h): the soak of issue #13.
//
// Exit codes: 0 measured, 1 a phase failed (errors or no replies), 2 bad usage.
#include <utility>  // Boost 1.74 Asio needs std::exchange declared before it (C++23).

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>
#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <nlohmann/json.hpp>

#include "server/bench/bench_http.h"
#include "server/bench/bench_ops.h"
#include "server/bench/bench_soak.h"

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;

namespace {

struct PhaseResult {
  std::string name;
  uint64_t ok = 0;
  uint64_t errors = 0;
  double seconds = 0;  // the measured window (shorter if the source ran out)
  bool exhausted = false;
  double p50_ms = 0, p99_ms = 0, max_ms = 0;
  std::string first_error;
  double ops_per_s() const { return seconds > 0 ? ok / seconds : 0; }
};

// Shared by the connections of a phase: the first time a source has nothing left to send.
struct PhaseState {
  std::atomic<int64_t> exhausted_at_ns{INT64_MAX};  // Clock time since epoch
};

// One keep-alive connection running the closed loop until `deadline`.
class Connection : public std::enable_shared_from_this<Connection> {
 public:
  Connection(asio::io_context& io, ssl::context& tls, const tcp::resolver::results_type& addr,
             std::string target, tpmma::bench::RequestSource* source, size_t index,
             Clock::time_point measure_from, Clock::time_point deadline, PhaseState* state)
      : stream_(asio::make_strand(io), tls),
        addr_(addr),
        target_(std::move(target)),
        source_(source),
        index_(index),
        measure_from_(measure_from),
        deadline_(deadline),
        state_(state) {}

  void Run() {
    beast::get_lowest_layer(stream_).expires_after(std::chrono::seconds(10));
    beast::get_lowest_layer(stream_).async_connect(
        addr_, [self = shared_from_this()](beast::error_code ec, const tcp::endpoint&) {
          if (ec) return self->Fail("connect", ec);
          self->stream_.async_handshake(ssl::stream_base::client, [self](beast::error_code ec2) {
            if (ec2) return self->Fail("TLS handshake", ec2);
            self->Send();
          });
        });
  }

  // Replies that completed inside the measured window: latency, and completion time (ns
  // after measure_from) to cut the window short if the source runs out.
  std::vector<uint32_t> latencies_us;
  std::vector<int64_t> done_ns;
  uint64_t errors = 0;
  std::string first_error;

 private:
  void Send() {
    if (Clock::now() >= deadline_) return Close();
    std::optional<std::string> body = source_->Next(index_, seq_++);
    if (!body) {
      int64_t now = Clock::now().time_since_epoch().count();
      int64_t prev = state_->exhausted_at_ns.load();
      while (now < prev && !state_->exhausted_at_ns.compare_exchange_weak(prev, now)) {
      }
      return Close();
    }
    req_ = {};
    req_.method(http::verb::post);
    req_.target(target_);
    req_.version(11);
    req_.set(http::field::host, "ma");
    req_.set(http::field::content_type, "text/xml; charset=utf-8");
    req_.body() = std::move(*body);
    req_.prepare_payload();
    started_ = Clock::now();
    beast::get_lowest_layer(stream_).expires_after(std::chrono::seconds(30));
    http::async_write(stream_, req_, [self = shared_from_this()](beast::error_code ec, size_t) {
      if (ec) return self->Fail("write", ec);
      self->res_ = {};
      self->parser_.emplace();
      self->parser_->body_limit(64 * 1024 * 1024);
      http::async_read(self->stream_, self->buffer_, *self->parser_,
                       [self](beast::error_code ec2, size_t) {
                         if (ec2) return self->Fail("read", ec2);
                         self->OnReply();
                       });
    });
  }

  void OnReply() {
    auto now = Clock::now();
    const auto& res = parser_->get();
    if (res.result() != http::status::ok || !source_->Accept(res.body())) {
      errors++;
      if (first_error.empty()) {
        first_error = "HTTP " + std::to_string(res.result_int()) + ": " + res.body().substr(0, 300);
      }
    } else if (started_ >= measure_from_ && now <= deadline_) {
      latencies_us.push_back(static_cast<uint32_t>(
          std::chrono::duration_cast<std::chrono::microseconds>(now - started_).count()));
      done_ns.push_back((now - measure_from_).count());
    }
    if (!res.keep_alive()) {
      errors++;
      if (first_error.empty()) first_error = "server closed the keep-alive connection";
      return Close();
    }
    Send();
  }

  void Fail(const char* what, beast::error_code ec) {
    errors++;
    if (first_error.empty()) first_error = std::string(what) + ": " + ec.message();
    Close();
  }

  void Close() {
    beast::error_code ignored;
    beast::get_lowest_layer(stream_).socket().shutdown(tcp::socket::shutdown_both, ignored);
    beast::get_lowest_layer(stream_).close();
  }

  beast::ssl_stream<beast::tcp_stream> stream_;
  tcp::resolver::results_type addr_;
  std::string target_;
  tpmma::bench::RequestSource* source_;
  size_t index_;
  uint64_t seq_ = 0;
  Clock::time_point measure_from_, deadline_, started_;
  PhaseState* state_;
  beast::flat_buffer buffer_{64 * 1024};
  http::request<http::string_body> req_;
  http::response<http::string_body> res_;
  std::optional<http::response_parser<http::string_body>> parser_;
};

double Percentile(std::vector<uint32_t>& v, double p) {
  if (v.empty()) return 0;
  size_t k = static_cast<size_t>(p * static_cast<double>(v.size() - 1));
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(k), v.end());
  return v[k] / 1000.0;
}

PhaseResult RunPhase(const std::string& name, const std::string& host, const std::string& port,
                     const std::string& target, ssl::context& tls,
                     tpmma::bench::RequestSource* source, int connections, int threads,
                     double warmup_s, double duration_s) {
  asio::io_context io;
  tcp::resolver resolver(io);
  auto addr = resolver.resolve(host, port);
  auto start = Clock::now();
  auto measure_from =
      start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(warmup_s));
  auto deadline = measure_from + std::chrono::duration_cast<Clock::duration>(
                                     std::chrono::duration<double>(duration_s));
  PhaseState state;
  std::vector<std::shared_ptr<Connection>> conns;
  for (int i = 0; i < connections; ++i) {
    conns.push_back(std::make_shared<Connection>(
        io, tls, addr, target, source, static_cast<size_t>(i), measure_from, deadline, &state));
    conns.back()->Run();
  }
  std::vector<std::thread> pool;
  for (int i = 1; i < threads; ++i) pool.emplace_back([&io] { io.run(); });
  io.run();
  for (auto& t : pool) t.join();

  PhaseResult r;
  r.name = name;
  r.seconds = duration_s;
  // A source that ran out ends the window when the first connection found it empty: from
  // then on fewer connections are busy, which is not the load being measured.
  int64_t window_ns = (deadline - measure_from).count();
  int64_t exhausted = state.exhausted_at_ns.load();
  if (exhausted != INT64_MAX) {
    r.exhausted = true;
    window_ns = std::min(window_ns, exhausted - measure_from.time_since_epoch().count());
    r.seconds = std::max(0.0, static_cast<double>(window_ns) / 1e9);
  }
  std::vector<uint32_t> all;
  for (auto& c : conns) {
    for (size_t i = 0; i < c->latencies_us.size(); ++i) {
      if (c->done_ns[i] <= window_ns) all.push_back(c->latencies_us[i]);
    }
    r.errors += c->errors;
    if (r.first_error.empty()) r.first_error = c->first_error;
  }
  r.ok = all.size();
  r.p50_ms = Percentile(all, 0.50);
  r.p99_ms = Percentile(all, 0.99);
  r.max_ms = all.empty() ? 0 : *std::max_element(all.begin(), all.end()) / 1000.0;
  return r;
}

// One phase's line on stdout; false if the phase failed (errors, or no reply at all).
bool Report(const PhaseResult& r, double echo_ops, bool json, int connections) {
  double ratio = echo_ops > 0 ? r.ops_per_s() / echo_ops : 0;
  if (json) {
    nlohmann::json out = {
        {"phase", r.name},      {"ops_per_s", r.ops_per_s()}, {"p50_ms", r.p50_ms},
        {"p99_ms", r.p99_ms},   {"max_ms", r.max_ms},         {"ok", r.ok},
        {"errors", r.errors},   {"ratio_to_echo", ratio},     {"connections", connections},
        {"seconds", r.seconds}, {"exhausted", r.exhausted}};
    if (!r.first_error.empty()) out["first_error"] = r.first_error;
    std::printf("%s\n", out.dump().c_str());
  } else {
    std::printf(
        "%-18s %10.0f ops/s  p50 %7.2f ms  p99 %7.2f ms  max %7.2f ms  ratio %5.2f  errors "
        "%llu%s%s%s\n",
        r.name.c_str(), r.ops_per_s(), r.p50_ms, r.p99_ms, r.max_ms, ratio,
        static_cast<unsigned long long>(r.errors),
        r.exhausted ? ("  (source ran out after " + std::to_string(r.seconds) + " s)").c_str() : "",
        r.first_error.empty() ? "" : "  first: ", r.first_error.c_str());
  }
  std::fflush(stdout);
  return r.ok > 0 && r.errors == 0;
}

// --mix and the options only it reads (bench_soak.h).
void AddMixOptions(CLI::App& app, bool* mix, tpmma::bench::SoakOptions* soak) {
  app.add_flag("--mix", *mix,
               "one mixed phase of --duration s: every connection cycles through the --op "
               "list (default: all of " +
                   tpmma::bench::MixOperationNames() + "), opened again if the server closes it");
  app.add_option("--acked-uploads", soak->acked_uploads,
                 "--mix: append the id of every Upload the server acknowledged to this file");
  app.add_option("--report-every", soak->report_every_s, "--mix: progress line every S seconds")
      ->capture_default_str();
  app.add_option("--upload-rate", soak->upload_rate,
                 "--mix: packages signed per second while the load runs (0: no cap)")
      ->capture_default_str();
  app.add_option("--max-body-bytes", soak->max_body_bytes,
                 "--mix: the server's limits.max_body_bytes (hostile: a header declaring one more)")
      ->capture_default_str();
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"ma-bench: load generator for ma-server (keep-alive TLS, closed loop)"};
  std::string url = "https://127.0.0.1:8443/";
  std::string ca_file;
  std::vector<std::string> ops = {"getmakey"};
  int connections = 64, threads = 1, repeats = 1;
  double duration = 10, warmup = 1;
  bool json = false;
  tpmma::bench::SetupOptions setup;
  app.add_option("--url", url, "MA base URL (https://host:port/)")->capture_default_str();
  app.add_option("--ca", ca_file, "CA certificate that issued the server's TLS certificate")
      ->required();
  app.add_option("--op", ops, "operations: " + tpmma::bench::OperationNames())
      ->capture_default_str();
  app.add_option("--connections", connections, "concurrent keep-alive connections")
      ->capture_default_str()
      ->check(CLI::Range(1, 4096));
  app.add_option("--threads", threads, "client I/O threads")
      ->capture_default_str()
      ->check(CLI::Range(1, 64));
  app.add_option("--duration", duration, "measured seconds per phase")->capture_default_str();
  app.add_option("--warmup", warmup, "unmeasured seconds before each phase")->capture_default_str();
  app.add_option("--repeats", repeats, "echo/op pairs per operation (report medians)")
      ->capture_default_str()
      ->check(CLI::Range(1, 20));
  app.add_option("--tcti", setup.tcti, "TPM for operations that need a session (swtpm:...)");
  app.add_option("--ek-cert", setup.ek_certificate,
                 "EK certificate (DER) of that TPM (default: read from NV 0x01c00002)");
  app.add_option("--ek-intermediate", setup.ek_intermediates,
                 "PEM certificate(s) between the EK certificate and the MA's EK root (repeatable)");
  app.add_option("--packages", setup.packages,
                 "upload: distinct packages to sign before the clock starts (shared by all "
                 "upload phases; a phase that runs out is cut short and says so)")
      ->capture_default_str();
  app.add_option("--package-bytes", setup.package_bytes, "upload: minimum size of each package")
      ->capture_default_str();
  app.add_option("--page-size", setup.page_size, "query: PageSize (the platform owns that many)")
      ->capture_default_str()
      ->check(CLI::Range(1, 500));
  app.add_option("--sign-alg", setup.sign_alg, "package-signing key in the TPM: ecc or rsa")
      ->capture_default_str();
  app.add_flag("--json", json, "one JSON object per phase on stdout");
  bool mix = false;
  tpmma::bench::SoakOptions soak;
  AddMixOptions(app, &mix, &soak);
  app.footer("Exit codes: 0 measured, 1 a phase failed, 2 bad usage.");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }

  std::string host, port, target;
  if (tpmma::Status u = tpmma::bench::ParseUrl(url, &host, &port, &target); !u.ok()) {
    std::fprintf(stderr, "ma-bench: --url: %s\n", u.ToString().c_str());
    return 2;
  }
  ssl::context tls(ssl::context::tls_client);
  tls.set_verify_mode(ssl::verify_peer);
  boost::system::error_code ec;
  tls.load_verify_file(ca_file, ec);
  if (ec) {
    std::fprintf(stderr, "ma-bench: cannot load --ca %s: %s\n", ca_file.c_str(),
                 ec.message().c_str());
    return 2;
  }
  setup.url = url;
  setup.ca_file = ca_file;
  if (mix) {
    soak.host = host;
    soak.port = port;
    soak.target = target;
    soak.connections = connections;
    soak.threads = threads;
    soak.duration_s = duration;
    soak.json = json;
    soak.ops = app.count("--op") > 0 ? ops : tpmma::bench::MixDefaultOperations();
    return tpmma::bench::RunSoak(soak, setup);
  }

  bool failed = false;
  auto report = [&](const PhaseResult& r, double echo_ops) {
    failed |= !Report(r, echo_ops, json, connections);
  };

  auto echo = tpmma::bench::MakeEcho();
  for (const auto& op : ops) {
    auto source = tpmma::bench::MakeOperation(op, setup);
    if (!source) {
      std::fprintf(stderr, "ma-bench: %s: %s\n", op.c_str(), source.error().ToString().c_str());
      return source.error().code() == tpmma::Code::kInvalidArgument ? 2 : 1;
    }
    for (int rep = 0; rep < repeats; ++rep) {
      PhaseResult e = RunPhase("echo", host, port, "/echo", tls, echo.get(), connections, threads,
                               warmup, duration);
      report(e, e.ops_per_s());
      PhaseResult r = RunPhase(op, host, port, target, tls, source->get(), connections, threads,
                               warmup, duration);
      report(r, e.ops_per_s());
    }
  }
  return failed ? 1 : 0;
}
