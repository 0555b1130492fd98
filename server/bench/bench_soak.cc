// SPDX-License-Identifier: GPL-2.0-or-later
#include <utility>  // Boost 1.74 Asio needs std::exchange declared before it (C++23).

#include "server/bench/bench_soak.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>

#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <nlohmann/json.hpp>

#include "server/bench/bench_hostile.h"

namespace tpmma::bench {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;

// Keeps the operations in the cycle's order.
using Json = nlohmann::ordered_json;

// Latencies of a long run do not fit in a vector per request: a histogram whose bucket i
// holds latencies below 2^((i+1)/8) µs, so a percentile is known to within about 9 %.
constexpr int kBuckets = 8 * 27;  // up to ~134 s

int Bucket(uint64_t us) {
  int b = static_cast<int>(8 * std::log2(static_cast<double>(us) + 1));
  return std::min(b, kBuckets - 1);
}

double BucketMs(int i) {
  return (std::pow(2.0, (i + 1) / 8.0) - 1) / 1000.0;
}

// One operation's (or hostile kind's) counts; updated from any client I/O thread.
struct Counter {
  explicit Counter(std::string n) : name(std::move(n)) {}
  std::string name;
  std::atomic<uint64_t> ok{0}, errors{0}, skipped{0}, max_us{0};
  std::array<std::atomic<uint64_t>, kBuckets> hist{};
  std::mutex mu;
  std::string first_error;

  void Record(bool good, uint64_t us, const std::string& why) {
    if (!good) return Fail(why);
    ok.fetch_add(1, std::memory_order_relaxed);
    hist[static_cast<size_t>(Bucket(us))].fetch_add(1, std::memory_order_relaxed);
    uint64_t prev = max_us.load(std::memory_order_relaxed);
    while (us > prev && !max_us.compare_exchange_weak(prev, us)) {
    }
  }
  void Fail(const std::string& why) {
    errors.fetch_add(1, std::memory_order_relaxed);
    std::lock_guard lock(mu);
    if (first_error.empty()) first_error = why;
  }
  double Quantile(double q) const {
    uint64_t total = 0;
    for (const auto& h : hist) total += h.load();
    if (total == 0) return 0;
    uint64_t want = static_cast<uint64_t>(q * static_cast<double>(total - 1)) + 1, seen = 0;
    for (int i = 0; i < kBuckets; ++i) {
      seen += hist[static_cast<size_t>(i)].load();
      if (seen >= want) return BucketMs(i);
    }
    return BucketMs(kBuckets - 1);
  }
  Json ToJson() {
    Json j = {{"ok", ok.load()},
              {"errors", errors.load()},
              {"p50_ms", Quantile(0.50)},
              {"p99_ms", Quantile(0.99)},
              {"max_ms", max_us.load() / 1000.0}};
    if (skipped.load() > 0) j["skipped"] = skipped.load();
    std::lock_guard lock(mu);
    if (!first_error.empty()) j["first_error"] = first_error;
    return j;
  }
};

// What every connection shares: the cycle, its sources and counters, the acknowledged
// uploads file.
struct Mix {
  std::vector<std::string> ops;
  std::vector<std::unique_ptr<RequestSource>> owned;
  std::vector<RequestSource*> sources;                // per op; null for "hostile"
  std::vector<std::unique_ptr<Counter>> op_counters;  // per op
  std::vector<HostileRequest> hostile;
  std::vector<std::unique_ptr<Counter>> hostile_counters;  // per hostile kind
  Counter connect{"connect"};                              // connect and TLS handshake failures
  std::unique_ptr<UploadStream> uploads;
  std::atomic<uint64_t> reconnects{0};
  std::string target;
  tcp::resolver::results_type addr;
  ssl::context* tls = nullptr;
  Clock::time_point deadline;

  std::mutex acked_mu;
  FILE* acked = nullptr;
  std::atomic<uint64_t> acked_count{0};
  void Ack(const std::string& id) {
    acked_count.fetch_add(1, std::memory_order_relaxed);
    if (acked == nullptr) return;
    std::lock_guard lock(acked_mu);
    // Flushed at once: the file must hold every id the server acknowledged even if
    // ma-bench is killed.
    std::fprintf(acked, "%s\n", id.c_str());
    std::fflush(acked);
  }
  uint64_t TotalErrors() const {
    uint64_t n = connect.errors.load();
    for (const auto& c : op_counters) n += c->errors.load();
    return n;
  }
};

// One keep-alive connection cycling through the mix until the deadline; opened again
// whenever the server closes it.
class MixConnection : public std::enable_shared_from_this<MixConnection> {
 public:
  MixConnection(asio::io_context& io, Mix* mix, size_t index)
      : strand_(asio::make_strand(io)),
        timer_(strand_),
        mix_(mix),
        index_(index),
        turn_(index % mix->ops.size()),
        hostile_turn_(index) {}

  void Start() {
    asio::post(strand_, [self = shared_from_this()] { self->Connect(); });
  }

 private:
  beast::tcp_stream& lowest() { return beast::get_lowest_layer(*stream_); }

  void Connect() {
    if (Clock::now() >= mix_->deadline) return;
    stream_.emplace(strand_, *mix_->tls);
    buffer_.clear();
    lowest().expires_after(std::chrono::seconds(10));
    lowest().async_connect(
        mix_->addr, [self = shared_from_this()](beast::error_code ec, const tcp::endpoint&) {
          if (ec) return self->Reconnect(&self->mix_->connect, "connect: " + ec.message());
          self->stream_->async_handshake(ssl::stream_base::client, [self](beast::error_code ec2) {
            if (ec2)
              return self->Reconnect(&self->mix_->connect, "TLS handshake: " + ec2.message());
            self->Send();
          });
        });
  }

  // The next operation of the cycle that has something to send (an Upload has nothing
  // while no signed package is ready).
  bool Pick() {
    for (size_t tries = 0; tries < mix_->ops.size(); ++tries) {
      op_ = turn_++ % mix_->ops.size();
      if (mix_->sources[op_] == nullptr) {
        size_t k = hostile_turn_++ % mix_->hostile.size();
        hostile_ = &mix_->hostile[k];
        kind_ = mix_->hostile_counters[k].get();
        return true;
      }
      hostile_ = nullptr;
      kind_ = nullptr;
      std::optional<std::string> body = mix_->sources[op_]->Next(index_, seq_++);
      if (body) {
        body_ = std::move(*body);
        return true;
      }
      mix_->op_counters[op_]->skipped.fetch_add(1, std::memory_order_relaxed);
    }
    return false;
  }

  void Send() {
    if (Clock::now() >= mix_->deadline) return Close();
    if (!Pick()) {
      // Only uploads in the cycle, none signed yet: look again shortly.
      timer_.expires_after(std::chrono::milliseconds(20));
      timer_.async_wait([self = shared_from_this()](beast::error_code) { self->Send(); });
      return;
    }
    started_ = Clock::now();
    lowest().expires_after(std::chrono::seconds(30));
    auto then = [self = shared_from_this()](beast::error_code ec, size_t) {
      if (ec) return self->Reconnect(self->Current(), "write: " + ec.message());
      self->Read();
    };
    if (hostile_ != nullptr && hostile_->header_only) {
      // Beast would send the body it declares; the point is a header the server must
      // refuse on its own, so these bytes are written as they are.
      raw_ = "POST " + mix_->target + " HTTP/1.1\r\nHost: ma\r\n" +
             "Content-Type: text/xml; charset=utf-8\r\nContent-Length: " +
             std::to_string(hostile_->declared_length) + "\r\n\r\n";
      asio::async_write(*stream_, asio::buffer(raw_), then);
      return;
    }
    req_ = {};
    req_.method(http::verb::post);
    req_.target(mix_->target);
    req_.version(11);
    req_.set(http::field::host, "ma");
    req_.set(http::field::content_type, "text/xml; charset=utf-8");
    req_.body() = hostile_ != nullptr ? hostile_->body : std::move(body_);
    req_.prepare_payload();
    http::async_write(*stream_, req_, then);
  }

  void Read() {
    parser_.emplace();
    parser_->body_limit(64 * 1024 * 1024);
    http::async_read(*stream_, buffer_, *parser_,
                     [self = shared_from_this()](beast::error_code ec, size_t) {
                       if (ec) return self->Reconnect(self->Current(), "read: " + ec.message());
                       self->OnReply();
                     });
  }

  void OnReply() {
    uint64_t us = static_cast<uint64_t>(
        std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - started_).count());
    const auto& res = parser_->get();
    const bool keep = res.keep_alive();
    std::string why;
    bool good;
    if (hostile_ != nullptr) {
      good = HostileAnswered(*hostile_, res.result_int(), res.body(), keep, &why);
      kind_->Record(good, us, why);
    } else {
      good = res.result() == http::status::ok && mix_->sources[op_]->Accept(res.body());
      if (!good)
        why = "HTTP " + std::to_string(res.result_int()) + ": " + res.body().substr(0, 300);
      if (good && mix_->sources[op_] == mix_->uploads.get()) {
        std::string id = UploadedPackageId(res.body());
        if (id.empty()) {
          good = false;
          why = "UploadResponse without a PackageId";
        } else {
          mix_->Ack(id);  // acknowledged, whatever happens to this connection next
        }
      }
      if (good && !keep) {
        good = false;
        why = "the server closed the keep-alive connection";
      }
    }
    mix_->op_counters[op_]->Record(good, us, why);
    if (!keep) {
      mix_->reconnects.fetch_add(1, std::memory_order_relaxed);
      Close();
      // Not from inside the old stream's own completion handler: Connect replaces it.
      asio::post(strand_, [self = shared_from_this()] { self->Connect(); });
      return;
    }
    Send();
  }

  Counter* Current() { return kind_ != nullptr ? kind_ : mix_->op_counters[op_].get(); }

  // A failed connect, handshake, write or read: counted, then a new connection after a
  // pause (a server that is down is not hammered in a loop).
  void Reconnect(Counter* counter, const std::string& why) {
    counter->Fail(why);
    if (counter == kind_) mix_->op_counters[op_]->Fail(why);
    mix_->reconnects.fetch_add(1, std::memory_order_relaxed);
    Close();
    timer_.expires_after(std::chrono::milliseconds(100));
    timer_.async_wait([self = shared_from_this()](beast::error_code) { self->Connect(); });
  }

  void Close() {
    if (!stream_) return;
    beast::error_code ignored;
    lowest().socket().shutdown(tcp::socket::shutdown_both, ignored);
    lowest().close();
  }

  asio::strand<asio::io_context::executor_type> strand_;
  asio::steady_timer timer_;
  Mix* mix_;
  size_t index_;
  size_t turn_, hostile_turn_, op_ = 0;
  uint64_t seq_ = 0;
  const HostileRequest* hostile_ = nullptr;
  Counter* kind_ = nullptr;
  std::string body_, raw_;
  Clock::time_point started_;
  std::optional<beast::ssl_stream<beast::tcp_stream>> stream_;
  beast::flat_buffer buffer_{64 * 1024};
  http::request<http::string_body> req_;
  std::optional<http::response_parser<http::string_body>> parser_;
};

std::string Expected(const HostileRequest& h) {
  std::string out = "HTTP " + std::to_string(h.status);
  if (!h.fault_code.empty()) out += ", MAFault " + h.fault_code;
  if (h.closes) out += ", Connection: close";
  return out;
}

Json Snapshot(Mix& mix, double seconds, bool final) {
  Json ops = Json::object(), kinds = Json::object();
  for (size_t i = 0; i < mix.ops.size(); ++i) {
    Json c = mix.op_counters[i]->ToJson();
    ops[mix.ops[i]] = final ? c : Json(c["ok"]);
  }
  for (size_t i = 0; i < mix.hostile.size(); ++i) {
    Json c = mix.hostile_counters[i]->ToJson();
    if (final) c["expect"] = Expected(mix.hostile[i]);
    kinds[mix.hostile[i].kind] = final ? c : Json(c["ok"]);
  }
  Json out = {{"phase", final ? "soak" : "progress"},
              {"seconds", seconds},
              {"ok", ops},
              {"hostile", kinds},
              {"errors", mix.TotalErrors()},
              {"connect_errors", mix.connect.errors.load()},
              {"reconnects", mix.reconnects.load()},
              {"acked_uploads", mix.acked_count.load()}};
  if (mix.uploads) out["signed_packages"] = mix.uploads->signed_count();
  if (final) {
    std::lock_guard lock(mix.connect.mu);
    if (!mix.connect.first_error.empty()) out["first_connect_error"] = mix.connect.first_error;
  }
  return out;
}

void PrintText(Mix& mix, double seconds) {
  std::printf("soak: %.0f s, %llu errors, %llu reconnects, %llu acknowledged uploads\n", seconds,
              static_cast<unsigned long long>(mix.TotalErrors()),
              static_cast<unsigned long long>(mix.reconnects.load()),
              static_cast<unsigned long long>(mix.acked_count.load()));
  auto line = [&](Counter& c) {
    std::printf("  %-18s %10llu ok %6llu errors  p50 %8.2f ms  p99 %8.2f ms  max %8.2f ms%s%s\n",
                c.name.c_str(), static_cast<unsigned long long>(c.ok.load()),
                static_cast<unsigned long long>(c.errors.load()), c.Quantile(0.5), c.Quantile(0.99),
                c.max_us.load() / 1000.0,
                c.first_error.empty() ? "" : "  first: ", c.first_error.c_str());
  };
  for (auto& c : mix.op_counters) line(*c);
  for (auto& c : mix.hostile_counters) line(*c);
  if (mix.connect.errors.load() > 0) line(mix.connect);
}

// The sources in the order their TPM sessions allow: each MakeOperation opens the TPM and
// lets it go; the upload stream keeps it (and its signing key) for the whole run, so it
// comes last.
Status SetUp(const SoakOptions& o, const SetupOptions& setup, Mix* mix) {
  for (const std::string& name : o.ops) {
    mix->ops.push_back(name);
    mix->op_counters.push_back(std::make_unique<Counter>(name));
    mix->sources.push_back(nullptr);
    if (name == "hostile" || name == "upload") continue;
    TPMMA_ASSIGN_OR_RETURN(auto source, MakeOperation(name, setup));
    mix->sources.back() = source.get();
    mix->owned.push_back(std::move(source));
  }
  for (size_t i = 0; i < o.ops.size(); ++i) {
    if (o.ops[i] != "upload") continue;
    if (mix->uploads) return Status(Code::kInvalidArgument, "upload listed twice in --op");
    TPMMA_ASSIGN_OR_RETURN(mix->uploads, UploadStream::Start(setup, o.upload_rate, o.upload_ready));
    mix->sources[i] = mix->uploads.get();
  }
  if (std::find(o.ops.begin(), o.ops.end(), "hostile") != o.ops.end()) {
    mix->hostile = MakeHostileRequests(o.max_body_bytes);
    for (const auto& h : mix->hostile) {
      mix->hostile_counters.push_back(std::make_unique<Counter>(h.kind));
    }
  }
  return Status::Ok();
}

// Runs the connections until the deadline, and until each has its last answer; a progress
// line (cumulative counts) every report_every_s. Returns the seconds it ran.
Result<double> Drive(const SoakOptions& o, ssl::context& tls, Mix* mix) {
  asio::io_context io;
  tcp::resolver resolver(io);
  boost::system::error_code ec;
  mix->addr = resolver.resolve(o.host, o.port, ec);
  if (ec) return Error(Code::kUnavailable, "resolve " + o.host + ": " + ec.message());
  mix->target = o.target;
  mix->tls = &tls;
  const auto start = Clock::now();
  auto seconds = [](double s) {
    return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s));
  };
  mix->deadline = start + seconds(o.duration_s);
  std::vector<std::shared_ptr<MixConnection>> conns;
  for (int i = 0; i < o.connections; ++i) {
    conns.push_back(std::make_shared<MixConnection>(io, mix, static_cast<size_t>(i)));
    conns.back()->Start();
  }
  auto elapsed = [&] { return std::chrono::duration<double>(Clock::now() - start).count(); };
  asio::steady_timer progress(io);
  int tick = 0;
  std::function<void()> schedule = [&] {
    progress.expires_at(std::min(start + seconds(o.report_every_s * ++tick), mix->deadline));
    progress.async_wait([&](beast::error_code wait_ec) {
      if (wait_ec || Clock::now() >= mix->deadline) return;  // the summary follows
      std::string line = Snapshot(*mix, elapsed(), /*final=*/false).dump();
      std::fprintf(o.json ? stdout : stderr, "%s\n", line.c_str());
      std::fflush(o.json ? stdout : stderr);
      schedule();
    });
  };
  if (o.report_every_s > 0) schedule();
  std::vector<std::thread> pool;
  for (int i = 1; i < o.threads; ++i) pool.emplace_back([&io] { io.run(); });
  io.run();
  for (auto& t : pool) t.join();
  return elapsed();
}

}  // namespace

std::string MixOperationNames() {
  return "getmakey, getmaserviceinfo, authenticate, query, upload (these three need --tcti), "
         "hostile (in turn: " +
         HostileKinds() + ")";
}

std::vector<std::string> MixDefaultOperations() {
  return {"getmakey", "getmaserviceinfo", "authenticate", "query", "upload", "hostile"};
}

int RunSoak(const SoakOptions& o, const SetupOptions& setup) {
  for (const std::string& name : o.ops) {
    if (name != "hostile" && name != "getmakey" && name != "getmaserviceinfo" &&
        name != "authenticate" && name != "query" && name != "upload") {
      std::fprintf(stderr, "ma-bench: --mix: unknown operation '%s'; known: %s\n", name.c_str(),
                   MixOperationNames().c_str());
      return 2;
    }
  }
  if (o.ops.empty()) return 2;
  Mix mix;
  ssl::context tls(ssl::context::tls_client);
  tls.set_verify_mode(ssl::verify_peer);
  boost::system::error_code ec;
  tls.load_verify_file(setup.ca_file, ec);
  if (ec) {
    std::fprintf(stderr, "ma-bench: cannot load --ca %s: %s\n", setup.ca_file.c_str(),
                 ec.message().c_str());
    return 2;
  }
  if (!o.acked_uploads.empty()) {
    mix.acked = std::fopen(o.acked_uploads.c_str(), "a");
    if (mix.acked == nullptr) {
      std::perror(("ma-bench: --acked-uploads " + o.acked_uploads).c_str());
      return 2;
    }
  }
  Status s = SetUp(o, setup, &mix);
  if (!s.ok()) {
    std::fprintf(stderr, "ma-bench: --mix setup: %s\n", s.ToString().c_str());
    if (mix.acked != nullptr) std::fclose(mix.acked);
    return s.code() == Code::kInvalidArgument ? 2 : 1;
  }
  // soak.sh starts its clock (RSS samples) at this line.
  std::fprintf(stderr, "ma-bench: mix load starts: %d connections, %.0f s\n", o.connections,
               o.duration_s);
  std::fflush(stderr);
  Result<double> ran = Drive(o, tls, &mix);
  if (mix.uploads) mix.uploads->Stop();
  if (!ran) {
    std::fprintf(stderr, "ma-bench: --mix: %s\n", ran.error().ToString().c_str());
    if (mix.acked != nullptr) std::fclose(mix.acked);
    return 1;
  }
  const double seconds = *ran;
  Json summary = Snapshot(mix, seconds, /*final=*/true);
  std::string signer_failure = mix.uploads ? mix.uploads->failure() : "";
  if (!signer_failure.empty()) summary["signer_failure"] = signer_failure;
  if (o.json) {
    std::printf("%s\n", summary.dump().c_str());
  } else {
    PrintText(mix, seconds);
    if (!signer_failure.empty())
      std::printf("  package signer stopped: %s\n", signer_failure.c_str());
  }
  std::fflush(stdout);
  if (mix.acked != nullptr) std::fclose(mix.acked);
  bool every_op_answered = true;
  for (auto& c : mix.op_counters) every_op_answered &= c->ok.load() > 0;
  for (auto& c : mix.hostile_counters) every_op_answered &= c->ok.load() > 0;
  return mix.TotalErrors() == 0 && every_op_answered && signer_failure.empty() ? 0 : 1;
}

}  // namespace tpmma::bench
