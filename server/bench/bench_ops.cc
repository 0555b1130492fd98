// SPDX-License-Identifier: GPL-2.0-or-later
#include "server/bench/bench_ops.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "server/bench/bench_http.h"
#include "server/bench/bench_tpm.h"

namespace tpmma::bench {
namespace {

constexpr std::string_view kEnvelopeHead =
    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>"
    "<SOAP-ENV:Envelope xmlns:SOAP-ENV=\"http://schemas.xmlsoap.org/soap/envelope/\" "
    "xmlns:ma=\"urn:tpm-ma:migration:1\"><SOAP-ENV:Body>";
constexpr std::string_view kEnvelopeTail = "</SOAP-ENV:Body></SOAP-ENV:Envelope>";

std::string Envelope(std::string_view body) {
  std::string out(kEnvelopeHead);
  out += body;
  out += kEnvelopeTail;
  return out;
}

bool IsReply(std::string_view reply, std::string_view element) {
  return reply.find(element) != std::string_view::npos &&
         reply.find("Fault>") == std::string_view::npos;
}

// The same bytes every time: read-only operations, and Authenticate.Begin (each one gets
// a fresh challenge from the MA).
class FixedRequest : public RequestSource {
 public:
  FixedRequest(std::string body, std::string expect)
      : body_(std::move(body)), expect_(std::move(expect)) {}
  std::optional<std::string> Next(size_t, uint64_t) override { return body_; }
  bool Accept(std::string_view reply) const override { return IsReply(reply, expect_); }

 private:
  std::string body_;
  std::string expect_;
};

// A 4 KB body like the ones the front-end comparison in wsdl/README.md was measured with.
class Echo : public RequestSource {
 public:
  Echo() : body_(Envelope("<ma:Echo>" + std::string(4096, 'x') + "</ma:Echo>")) {}
  std::optional<std::string> Next(size_t, uint64_t) override { return body_; }
  bool Accept(std::string_view reply) const override { return reply.size() == body_.size(); }

 private:
  std::string body_;
};

bool IsFreshUpload(std::string_view reply) {
  return IsReply(reply, "UploadResponse") &&
         reply.find("AlreadyStored>false<") != std::string_view::npos;
}

// Pre-built Upload bodies, each handed out once (across phases and repeats): every
// request uploads a package the MA has never seen (a re-upload is a cheaper idempotent
// no-op). The reply must say AlreadyStored false.
class Uploads : public RequestSource {
 public:
  explicit Uploads(std::vector<std::string> bodies) : bodies_(std::move(bodies)) {}
  std::optional<std::string> Next(size_t, uint64_t) override {
    size_t i = next_.fetch_add(1, std::memory_order_relaxed);
    if (i >= bodies_.size()) return std::nullopt;
    return std::move(bodies_[i]);  // sent once; frees the memory as the phase runs
  }
  bool Accept(std::string_view reply) const override { return IsFreshUpload(reply); }

 private:
  std::vector<std::string> bodies_;
  std::atomic<size_t> next_{0};
};

void Say(const SetupOptions& o, const std::string& text) {
  if (o.verbose) std::fprintf(stderr, "ma-bench setup: %s\n", text.c_str());
}

double SecondsSince(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

Result<std::unique_ptr<RequestSource>> MakeAuthenticate(const SetupOptions& o) {
  TPMMA_ASSIGN_OR_RETURN(auto platform, BenchPlatform::Open(o));
  TPMMA_ASSIGN_OR_RETURN(std::string body, platform->BeginBody());
  // One real Begin first, so that a refusal (EK root not configured, ...) is reported here
  // and not as a phase full of errors.
  TPMMA_ASSIGN_OR_RETURN(auto http, SyncHttps::Connect(o.url, o.ca_file));
  TPMMA_ASSIGN_OR_RETURN(HttpReply reply, http->Post(body));
  if (reply.status != 200 || !IsReply(reply.body, "Challenge")) {
    return Error(Code::kUnauthenticated,
                 "Authenticate.Begin refused (is the TPM's EK root in trust.ek_roots?): HTTP " +
                     std::to_string(reply.status) + " " + reply.body.substr(0, 400));
  }
  Say(o, "Begin body " + std::to_string(body.size()) + " bytes (EK public, EK certificate, " +
             std::to_string(o.ek_intermediates.size()) + " intermediate file(s), AK public)");
  return std::unique_ptr<RequestSource>(
      std::make_unique<FixedRequest>(std::move(body), "AuthenticateResponse"));
}

Result<std::unique_ptr<RequestSource>> MakeQuery(const SetupOptions& o) {
  TPMMA_ASSIGN_OR_RETURN(auto platform, BenchPlatform::Open(o));
  TPMMA_ASSIGN_OR_RETURN(auto http, SyncHttps::Connect(o.url, o.ca_file));
  TPMMA_RETURN_IF_ERROR(platform->Authenticate(*http, /*with_signing_key=*/true));
  // The platform owns a full page of packages, so every Query returns page_size
  // descriptors (each with its key list).
  TPMMA_ASSIGN_OR_RETURN(
      std::vector<Bytes> pkgs,
      platform->MakePackages(*http, static_cast<size_t>(o.page_size), o.package_bytes));
  for (const Bytes& p : pkgs) {
    TPMMA_ASSIGN_OR_RETURN(std::string body, platform->UploadBody(p));
    TPMMA_ASSIGN_OR_RETURN(HttpReply reply, http->Post(body));
    if (reply.status != 200) {
      return Error(Code::kInternal, "setup upload failed: " + reply.body.substr(0, 400));
    }
  }
  TPMMA_ASSIGN_OR_RETURN(std::string body, platform->QueryBody(o.page_size));
  TPMMA_ASSIGN_OR_RETURN(HttpReply reply, http->Post(body));
  size_t found = 0;
  for (size_t at = reply.body.find("PackageDescriptor>"); at != std::string::npos;
       at = reply.body.find("PackageDescriptor>", at + 1)) {
    ++found;
  }
  if (reply.status != 200 || found / 2 != static_cast<size_t>(o.page_size)) {
    return Error(Code::kInternal,
                 "setup Query did not return a full page: " + reply.body.substr(0, 400));
  }
  Say(o, "Query: platform " + platform->platform_id().substr(0, 16) + "... owns " +
             std::to_string(pkgs.size()) + " packages; PageSize " + std::to_string(o.page_size));
  return std::unique_ptr<RequestSource>(
      std::make_unique<FixedRequest>(std::move(body), "QueryResponse"));
}

Result<std::unique_ptr<RequestSource>> MakeUpload(const SetupOptions& o) {
  TPMMA_ASSIGN_OR_RETURN(auto platform, BenchPlatform::Open(o));
  TPMMA_ASSIGN_OR_RETURN(auto http, SyncHttps::Connect(o.url, o.ca_file));
  TPMMA_RETURN_IF_ERROR(platform->Authenticate(*http, /*with_signing_key=*/true));
  auto start = std::chrono::steady_clock::now();
  TPMMA_ASSIGN_OR_RETURN(std::vector<Bytes> pkgs,
                         platform->MakePackages(*http, o.packages + 1, o.package_bytes));
  double signing = SecondsSince(start);
  size_t min_size = SIZE_MAX, max_size = 0;
  for (const Bytes& p : pkgs) {
    min_size = std::min(min_size, p.size());
    max_size = std::max(max_size, p.size());
  }
  std::vector<std::string> bodies;
  bodies.reserve(pkgs.size());
  for (Bytes& p : pkgs) {
    TPMMA_ASSIGN_OR_RETURN(std::string body, platform->UploadBody(p));
    bodies.push_back(std::move(body));
    Bytes().swap(p);
  }
  // The last one checks, before the clock starts, that the MA takes these packages. Signing
  // many packages can outlast the server's idle timeout (limits.idle_timeout_ms), which
  // closes the set-up connection: check on a new one.
  TPMMA_ASSIGN_OR_RETURN(http, SyncHttps::Connect(o.url, o.ca_file));
  TPMMA_ASSIGN_OR_RETURN(HttpReply reply, http->Post(bodies.back()));
  if (reply.status != 200 || reply.body.find("AlreadyStored>false<") == std::string::npos) {
    return Error(Code::kInternal, "setup upload refused: " + reply.body.substr(0, 400));
  }
  bodies.pop_back();
  char line[256];
  std::snprintf(line, sizeof line,
                "signed %zu packages (%zu..%zu bytes, %s key in the TPM) in %.1f s (%.2f ms each); "
                "request bodies %zu bytes",
                pkgs.size(), min_size, max_size, o.sign_alg.c_str(), signing,
                1000 * signing / static_cast<double>(pkgs.size()), bodies.front().size());
  Say(o, line);
  return std::unique_ptr<RequestSource>(std::make_unique<Uploads>(std::move(bodies)));
}

// The signer thread is the only user of the platform (and of its TPM connection) once
// Start has returned; the I/O threads only take finished bodies from `ready_`.
class UploadStreamImpl final : public UploadStream {
 public:
  UploadStreamImpl(std::unique_ptr<BenchPlatform> platform, std::unique_ptr<SyncHttps> http,
                   size_t package_bytes, double rate_per_s, size_t ready)
      : platform_(std::move(platform)),
        http_(std::move(http)),
        package_bytes_(package_bytes),
        rate_per_s_(rate_per_s),
        max_ready_(std::max<size_t>(ready, 1)) {}
  ~UploadStreamImpl() override { Stop(); }

  void Begin() {
    signer_ = std::jthread([this](std::stop_token stop) { Loop(stop); });
  }
  std::optional<std::string> Next(size_t, uint64_t) override {
    std::lock_guard lock(mu_);
    if (ready_.empty()) return std::nullopt;
    std::string body = std::move(ready_.front());
    ready_.pop_front();
    room_.notify_one();
    return body;
  }
  bool Accept(std::string_view reply) const override { return IsFreshUpload(reply); }
  uint64_t signed_count() const override { return signed_.load(); }
  std::string failure() const override {
    std::lock_guard lock(mu_);
    return failure_;
  }
  void Stop() override {
    signer_.request_stop();
    if (signer_.joinable()) signer_.join();
  }

 private:
  void Loop(std::stop_token stop) {
    using std::chrono::steady_clock;
    const auto period = std::chrono::duration_cast<steady_clock::duration>(
        std::chrono::duration<double>(rate_per_s_ > 0 ? 1.0 / rate_per_s_ : 0.0));
    auto next = steady_clock::now();
    while (!stop.stop_requested()) {
      Result<std::string> body = SignOne();
      std::unique_lock lock(mu_);
      if (!body) {
        failure_ = body.error().ToString();
        return;
      }
      // Not a test's sleep: the signer waits for room, or for its next slot at --upload-rate.
      room_.wait(lock, stop, [&] { return ready_.size() < max_ready_; });
      if (stop.stop_requested()) return;
      ready_.push_back(std::move(*body));
      signed_++;
      // After a stall (a full queue, a slow TPM) catch up by a few slots, not in one burst.
      next = std::max(next + period, steady_clock::now() - 8 * period);
      room_.wait_until(lock, stop, next, [] { return false; });
    }
  }
  Result<std::string> SignOne() {
    TPMMA_ASSIGN_OR_RETURN(std::vector<Bytes> pkgs,
                           platform_->MakePackages(*http_, 1, package_bytes_));
    return platform_->UploadBody(pkgs.front());
  }

  std::unique_ptr<BenchPlatform> platform_;
  std::unique_ptr<SyncHttps> http_;  // MakePackages' GetMAKey (done at Start)
  size_t package_bytes_;
  double rate_per_s_;
  size_t max_ready_;
  mutable std::mutex mu_;
  std::condition_variable_any room_;
  std::deque<std::string> ready_;
  std::string failure_;
  std::atomic<uint64_t> signed_{0};
  std::jthread signer_;
};

}  // namespace

Result<std::unique_ptr<UploadStream>> UploadStream::Start(const SetupOptions& o, double rate_per_s,
                                                          size_t ready) {
  if (o.tcti.empty())
    return Error(Code::kUnsupported, "upload needs a TPM for its session: pass --tcti");
  TPMMA_ASSIGN_OR_RETURN(auto platform, BenchPlatform::Open(o));
  TPMMA_ASSIGN_OR_RETURN(auto http, SyncHttps::Connect(o.url, o.ca_file));
  TPMMA_RETURN_IF_ERROR(platform->Authenticate(*http, /*with_signing_key=*/true));
  TPMMA_ASSIGN_OR_RETURN(std::vector<Bytes> pkgs,
                         platform->MakePackages(*http, 1, o.package_bytes));
  TPMMA_ASSIGN_OR_RETURN(std::string body, platform->UploadBody(pkgs.front()));
  TPMMA_ASSIGN_OR_RETURN(HttpReply reply, http->Post(body));
  if (reply.status != 200 || !IsFreshUpload(reply.body)) {
    return Error(Code::kInternal, "setup upload refused: " + reply.body.substr(0, 400));
  }
  Say(o, "upload stream: " + std::to_string(pkgs.front().size()) +
             "-byte packages signed in the TPM " +
             (rate_per_s > 0 ? "at up to " + std::to_string(static_cast<int>(rate_per_s)) + "/s"
                             : std::string("as fast as it signs")) +
             ", while the load runs");
  auto stream = std::make_unique<UploadStreamImpl>(std::move(platform), std::move(http),
                                                   o.package_bytes, rate_per_s, ready);
  stream->Begin();
  return std::unique_ptr<UploadStream>(std::move(stream));
}

std::string UploadedPackageId(std::string_view reply) {
  constexpr std::string_view kTag = "PackageId>";
  size_t at = reply.find(kTag);
  if (at == std::string_view::npos) return "";
  at += kTag.size();
  size_t end = reply.find('<', at);
  if (end == std::string_view::npos) return "";
  return std::string(reply.substr(at, end - at));
}

std::unique_ptr<RequestSource> MakeEcho() {
  return std::make_unique<Echo>();
}

std::string OperationNames() {
  return "getmakey, getmaserviceinfo, authenticate, query, upload (the last three need --tcti)";
}

Result<std::unique_ptr<RequestSource>> MakeOperation(const std::string& name,
                                                     const SetupOptions& setup) {
  if (name == "getmakey") {
    return std::make_unique<FixedRequest>(Envelope("<ma:GetMAKeyRequest/>"), "GetMAKeyResponse");
  }
  if (name == "getmaserviceinfo") {
    return std::make_unique<FixedRequest>(Envelope("<ma:GetMAServiceInfoRequest/>"),
                                          "GetMAServiceInfoResponse");
  }
  if (name == "authenticate" || name == "query" || name == "upload") {
    if (setup.tcti.empty()) {
      return Error(Code::kUnsupported, name + " needs a TPM for its session: pass --tcti");
    }
    if (setup.sign_alg != "ecc" && setup.sign_alg != "rsa") {
      return Error(Code::kInvalidArgument, "--sign-alg must be ecc or rsa");
    }
    if (name == "authenticate") return MakeAuthenticate(setup);
    if (name == "query") return MakeQuery(setup);
    return MakeUpload(setup);
  }
  return Error(Code::kInvalidArgument,
               "unknown operation '" + name + "'; known: " + OperationNames());
}

}  // namespace tpmma::bench
