// SPDX-License-Identifier: GPL-2.0-or-later
#include <utility>  // before Asio: Boost 1.74 under C++23

#include "client/lms/ek_https.h"

#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <charconv>
#include <chrono>
#include <optional>

#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/beast/version.hpp>

namespace tpmma::lms {

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;

struct ParsedUrl {
  std::string host;  // without brackets
  std::string port = "443";
  std::string target;  // "/..." as sent
};

Result<ParsedUrl> ParseHttpsUrl(const std::string& url) {
  constexpr std::string_view kScheme = "https://";
  if (!url.starts_with(kScheme)) {
    return Error(Code::kInvalidArgument,
                 "only https:// URLs are used for the EK service (got \"" + url + "\")");
  }
  const std::string_view rest = std::string_view(url).substr(kScheme.size());
  const size_t slash = rest.find('/');
  std::string_view authority = rest.substr(0, slash);
  ParsedUrl out;
  out.target = slash == std::string_view::npos ? "/" : std::string(rest.substr(slash));
  if (authority.find('@') != std::string_view::npos) {
    return Error(Code::kInvalidArgument, "the EK service URL must not carry a user name");
  }
  std::string_view port;
  if (authority.starts_with('[')) {
    const size_t close = authority.find(']');
    if (close == std::string_view::npos) return Error(Code::kInvalidArgument, "bad URL " + url);
    out.host = std::string(authority.substr(1, close - 1));
    if (close + 1 < authority.size()) {
      if (authority[close + 1] != ':') return Error(Code::kInvalidArgument, "bad URL " + url);
      port = authority.substr(close + 2);
    }
  } else {
    const size_t colon = authority.find(':');
    out.host = std::string(authority.substr(0, colon));
    if (colon != std::string_view::npos) port = authority.substr(colon + 1);
  }
  if (!port.empty()) {
    unsigned value = 0;
    auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
    if (ec != std::errc() || end != port.data() + port.size() || value == 0 || value > 65535) {
      return Error(Code::kInvalidArgument, "bad port in the URL " + url);
    }
    out.port = std::string(port);
  }
  if (out.host.empty()) return Error(Code::kInvalidArgument, "no host in the URL " + url);
  return out;
}

// Runs one asynchronous step to completion; the stream's own timer (expires_after) bounds it.
template <class Start>
beast::error_code Step(asio::io_context& ioc, Start start) {
  beast::error_code result = asio::error::would_block;
  start([&result](beast::error_code ec, auto&&...) { result = ec; });
  ioc.restart();
  ioc.run();
  return result;
}

Status Refused(const std::string& doing, const ParsedUrl& u, const beast::error_code& ec) {
  const std::string why = ec == beast::error::timeout ? std::string("timed out") : ec.message();
  return Status(Code::kUnavailable, "cannot " + doing + " " + u.host + ":" + u.port + ": " + why);
}

Status SetUpTls(ssl::context& ctx, SSL* ssl_handle, const ParsedUrl& u,
                const HttpsGetOptions& options) {
  SSL_CTX_set_min_proto_version(ctx.native_handle(), TLS1_2_VERSION);
  SSL_set_min_proto_version(ssl_handle, TLS1_2_VERSION);  // the SSL was made before
  beast::error_code ec;
  if (options.ca_file.empty()) {
    ctx.set_default_verify_paths(ec);
  } else {
    ctx.load_verify_file(options.ca_file, ec);
  }
  if (ec) {
    return Status(
        Code::kInvalidArgument,
        "cannot use " +
            (options.ca_file.empty() ? std::string("the system trust store") : options.ca_file) +
            " to trust the EK service: " + ec.message());
  }
  SSL_set_verify(ssl_handle, SSL_VERIFY_PEER, nullptr);
  // Host name verification: the certificate must name the host of the URL.
  beast::error_code addr_ec;
  asio::ip::make_address(u.host, addr_ec);
  X509_VERIFY_PARAM* param = SSL_get0_param(ssl_handle);
  const bool ok = !addr_ec ? X509_VERIFY_PARAM_set1_ip_asc(param, u.host.c_str()) == 1
                           : SSL_set1_host(ssl_handle, u.host.c_str()) == 1 &&
                                 SSL_set_tlsext_host_name(ssl_handle, u.host.c_str()) == 1;
  if (!ok) return Status(Code::kInvalidArgument, "cannot verify the host name " + u.host);
  return Status::Ok();
}

}  // namespace

Result<HttpsReply> HttpsGet(const std::string& url, const HttpsGetOptions& options) {
  TPMMA_ASSIGN_OR_RETURN(ParsedUrl u, ParseHttpsUrl(url));
  asio::io_context ioc;
  ssl::context ctx{ssl::context::tls_client};
  beast::ssl_stream<beast::tcp_stream> stream(ioc, ctx);
  TPMMA_RETURN_IF_ERROR(SetUpTls(ctx, stream.native_handle(), u, options));
  const auto timeout = std::chrono::seconds(options.timeout_s);
  auto& tcp_stream = beast::get_lowest_layer(stream);

  tcp::resolver resolver(ioc);
  beast::error_code ec;
  const auto endpoints = resolver.resolve(u.host, u.port, ec);
  if (ec) return Error(Refused("resolve", u, ec));
  tcp_stream.expires_after(timeout);
  ec = Step(ioc, [&](auto done) { tcp_stream.async_connect(endpoints, done); });
  if (ec) return Error(Refused("connect to", u, ec));
  tcp_stream.expires_after(timeout);
  ec = Step(ioc, [&](auto done) { stream.async_handshake(ssl::stream_base::client, done); });
  if (ec) return Error(Refused("set up TLS (certificate and host name checked) with", u, ec));

  http::request<http::empty_body> req{http::verb::get, u.target, 11};
  req.set(http::field::host, u.host);
  req.set(http::field::user_agent, "tpm-ma-lms");
  req.set(http::field::accept, "*/*");
  req.set(http::field::connection, "close");
  tcp_stream.expires_after(timeout);
  ec = Step(ioc, [&](auto done) { http::async_write(stream, req, done); });
  if (ec) return Error(Refused("send the request to", u, ec));

  beast::flat_buffer buffer;
  http::response_parser<http::string_body> parser;
  parser.header_limit(16 * 1024);
  parser.body_limit(options.max_body);
  tcp_stream.expires_after(timeout);
  ec = Step(ioc, [&](auto done) { http::async_read(stream, buffer, parser, done); });
  if (ec == http::error::body_limit || ec == http::error::header_limit ||
      ec == http::error::buffer_overflow) {
    return Error(Code::kLimitExceeded, "the reply of " + u.host + " is larger than " +
                                           std::to_string(options.max_body / 1024) +
                                           " KiB: refused");
  }
  if (ec) return Error(Refused("read the reply of", u, ec));
  HttpsReply out;
  out.status = parser.get().result_int();
  out.body = std::move(parser.get().body());
  // The connection is closed either way; a failing TLS shutdown changes nothing we read.
  beast::error_code ignored;
  tcp_stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
  return out;
}

}  // namespace tpmma::lms
