// SPDX-License-Identifier: GPL-2.0-or-later
#include "server/bench/bench_ops.h"

#include <string>

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

// The same bytes every time: read-only operations.
class FixedRequest : public RequestSource {
 public:
  FixedRequest(std::string body, std::string expect)
      : body_(std::move(body)), expect_(std::move(expect)) {}
  std::string Next(size_t, uint64_t) override { return body_; }
  bool Accept(std::string_view reply) const override {
    return reply.find(expect_) != std::string_view::npos &&
           reply.find("Fault>") == std::string_view::npos;
  }

 private:
  std::string body_;
  std::string expect_;
};

// A 4 KB body like the ones DESIGN.md section 6 measured front ends with.
class Echo : public RequestSource {
 public:
  Echo() : body_(Envelope("<ma:Echo>" + std::string(4096, 'x') + "</ma:Echo>")) {}
  std::string Next(size_t, uint64_t) override { return body_; }
  bool Accept(std::string_view reply) const override { return reply.size() == body_.size(); }

 private:
  std::string body_;
};

}  // namespace

std::unique_ptr<RequestSource> MakeEcho() {
  return std::make_unique<Echo>();
}

std::string OperationNames() {
  return "getmakey, getmaserviceinfo (authenticate, query, upload: need --tcti)";
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
    return Error(Code::kUnsupported, name + ": session setup is not built yet");
  }
  return Error(Code::kInvalidArgument,
               "unknown operation '" + name + "'; known: " + OperationNames());
}

}  // namespace tpmma::bench
