// SPDX-License-Identifier: GPL-2.0-or-later
// What the front end does with a request header before it reads a byte of the body: the
// route, or the refusal (status, outcome word for the log, Allow header). Pure, so that the
// HTTP parsing and this decision can be fuzzed without a socket (tests/fuzz/http_request).
#pragma once

#include <optional>
#include <string_view>

#include <boost/beast/http.hpp>

namespace tpmma::server {

enum class Route { kHealth, kMetrics, kSoap, kEcho, kConsole };

struct RouteDecision {
  std::optional<Route> route;  // set: serve it; else refuse with the fields below
  boost::beast::http::status status = boost::beast::http::status::ok;
  std::string_view outcome;     // "NotFound", "Unsupported" (the request log's outcome)
  std::string_view allow;       // the Allow header of a 405, else empty
  std::string_view body;        // the refusal's text, with its newline
  bool close = false;           // refusals that must close even if the body was read
  bool wants_continue = false;  // Expect: 100-continue, to be answered before the body
};

// `chunked`: the parser saw Transfer-Encoding: chunked (refused with 411: chunk extensions
// and trailers escape both size limits). `echo`: bench.echo is on. `metrics`: metrics.enabled
// (else /metrics is Not Found, like any other path; who may read it is decided later, by
// peer address).
RouteDecision RouteHeader(const boost::beast::http::request_header<>& req, bool chunked, bool echo,
                          bool metrics = false);

}  // namespace tpmma::server
