// SPDX-License-Identifier: GPL-2.0-or-later
#include <utility>  // Boost 1.74 Asio needs std::exchange declared before it (C++23).

#include "server/bench/bench_http.h"

#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>

namespace tpmma::bench {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;

class SyncHttpsImpl final : public SyncHttps {
 public:
  // `tls` is configured (verification, CA) before the stream takes it.
  SyncHttpsImpl(std::string host, std::string port, std::string path, ssl::context tls)
      : host_(std::move(host)),
        port_(std::move(port)),
        path_(std::move(path)),
        tls_(std::move(tls)),
        stream_(io_, tls_) {}

  Status Open() {
    beast::error_code ec;
    tcp::resolver resolver(io_);
    auto addr = resolver.resolve(host_, port_, ec);
    if (ec) return Status(Code::kUnavailable, "resolve " + host_ + ": " + ec.message());
    beast::get_lowest_layer(stream_).expires_after(std::chrono::seconds(30));
    beast::get_lowest_layer(stream_).connect(addr, ec);
    if (ec)
      return Status(Code::kUnavailable, "connect " + host_ + ":" + port_ + ": " + ec.message());
    stream_.handshake(ssl::stream_base::client, ec);
    if (ec) return Status(Code::kUnavailable, "TLS handshake: " + ec.message());
    return Status::Ok();
  }

  Result<HttpReply> Post(const std::string& body) override {
    http::request<http::string_body> req{http::verb::post, path_, 11};
    req.set(http::field::host, host_);
    req.set(http::field::content_type, "text/xml; charset=utf-8");
    req.body() = body;
    req.prepare_payload();
    beast::error_code ec;
    beast::get_lowest_layer(stream_).expires_after(std::chrono::seconds(60));
    http::write(stream_, req, ec);
    if (ec) return Error(Code::kUnavailable, "write: " + ec.message());
    http::response_parser<http::string_body> parser;
    parser.body_limit(64 * 1024 * 1024);
    http::read(stream_, buffer_, parser, ec);
    if (ec) return Error(Code::kUnavailable, "read: " + ec.message());
    return HttpReply{parser.get().result_int(), std::move(parser.get().body())};
  }

 private:
  std::string host_, port_, path_;
  asio::io_context io_;
  ssl::context tls_;
  beast::ssl_stream<beast::tcp_stream> stream_;
  beast::flat_buffer buffer_;
};

}  // namespace

Status ParseUrl(const std::string& url, std::string* host, std::string* port, std::string* path) {
  std::string rest = url.rfind("https://", 0) == 0 ? url.substr(8) : "";
  auto slash = rest.find('/');
  std::string hostport = rest.substr(0, slash);
  *path = slash == std::string::npos ? "/" : rest.substr(slash);
  auto colon = hostport.rfind(':');
  if (rest.empty() || colon == std::string::npos || colon == 0 || colon + 1 == hostport.size()) {
    return Status(Code::kInvalidArgument, "URL must look like https://127.0.0.1:8443/, got " + url);
  }
  *host = hostport.substr(0, colon);
  *port = hostport.substr(colon + 1);
  return Status::Ok();
}

Result<std::unique_ptr<SyncHttps>> SyncHttps::Connect(const std::string& url,
                                                      const std::string& ca_file) {
  std::string host, port, path;
  TPMMA_RETURN_IF_ERROR(ParseUrl(url, &host, &port, &path));
  ssl::context tls(ssl::context::tls_client);
  tls.set_verify_mode(ssl::verify_peer);
  beast::error_code ec;
  tls.load_verify_file(ca_file, ec);
  if (ec) return Error(Code::kInvalidArgument, "cannot load CA " + ca_file + ": " + ec.message());
  auto c = std::make_unique<SyncHttpsImpl>(host, port, path, std::move(tls));
  TPMMA_RETURN_IF_ERROR(c->Open());
  return std::unique_ptr<SyncHttps>(std::move(c));
}

}  // namespace tpmma::bench
