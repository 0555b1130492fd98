// SPDX-License-Identifier: GPL-2.0-or-later
// What ma-server's front end does with the bytes of a request before any worker sees it
// (server/http_server.cc): Beast's request parser with the default header and body limits,
// then RouteHeader (server/http_route.h) on the parsed header. Invariants: no crash, no
// sanitizer report; a request is routed to the SOAP endpoint only as a POST to / or /soap
// with a text/xml content type, never chunked, and to the metrics (on here) only as a GET or
// HEAD of /metrics; every refusal is a 4xx with a body.
#include <cstdint>
#include <string_view>

#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include "server/config.h"
#include "server/http_route.h"
#include "tests/fuzz/fuzz_check.h"

namespace http = boost::beast::http;
namespace beast = boost::beast;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const tpmma::server::Config defaults;
  http::request_parser<http::string_body> parser;
  parser.header_limit(defaults.max_header_bytes);
  parser.body_limit(defaults.max_body_bytes);
  parser.eager(false);  // as async_read_header: the header first
  beast::error_code ec;
  size_t used = parser.put(boost::asio::buffer(data, size), ec);
  if (ec || !parser.is_header_done()) return 0;
  TPMMA_FUZZ_CHECK(used <= size);
  const auto& req = parser.get();
  auto d = tpmma::server::RouteHeader(req, parser.chunked(), /*echo=*/false, /*metrics=*/true);
  if (!d.route) {
    const unsigned code = static_cast<unsigned>(d.status);
    TPMMA_FUZZ_CHECK(code >= 400 && code < 500 && !d.body.empty() && !d.outcome.empty());
    return 0;
  }
  std::string_view target(req.target().data(), req.target().size());
  std::string_view path = target.substr(0, target.find('?'));
  if (*d.route == tpmma::server::Route::kMetrics) {
    TPMMA_FUZZ_CHECK(req.method() == http::verb::get || req.method() == http::verb::head);
    TPMMA_FUZZ_CHECK(path == "/metrics" && !parser.chunked());
  }
  if (*d.route == tpmma::server::Route::kSoap) {
    TPMMA_FUZZ_CHECK(req.method() == http::verb::post && !parser.chunked());
    TPMMA_FUZZ_CHECK(path == "/" || path == "/soap");
  }
  TPMMA_FUZZ_CHECK(*d.route != tpmma::server::Route::kEcho);  // bench.echo is off
  return 0;
}
