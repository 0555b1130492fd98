// SPDX-License-Identifier: GPL-2.0-or-later
#include "server/http_route.h"

namespace tpmma::server {

namespace http = boost::beast::http;
namespace beast = boost::beast;

namespace {

RouteDecision Refuse(http::status status, std::string_view outcome, std::string_view body,
                     bool close = false) {
  RouteDecision d;
  d.status = status;
  d.outcome = outcome;
  d.body = body;
  d.close = close;
  return d;
}

RouteDecision RoutePath(const http::request_header<>& req, std::string_view path, bool echo,
                        bool metrics) {
  RouteDecision d;
  if (path == "/healthz" || (path == "/metrics" && metrics)) {
    if (req.method() == http::verb::get || req.method() == http::verb::head) {
      d.route = path == "/healthz" ? Route::kHealth : Route::kMetrics;
      return d;
    }
    d = Refuse(http::status::method_not_allowed, "Unsupported", "Method Not Allowed\n");
    d.allow = "GET, HEAD";
    return d;
  }
  if (path == "/console" || path.starts_with("/console/")) {
    // The helpdesk console's pages and forms (server/console/); it decides per page.
    const http::verb m = req.method();
    if (m != http::verb::get && m != http::verb::head && m != http::verb::post) {
      d = Refuse(http::status::method_not_allowed, "Unsupported", "Method Not Allowed\n");
      d.allow = "GET, HEAD, POST";
      return d;
    }
    d.route = Route::kConsole;
    return d;
  }
  if (path == "/" || path == "/soap" || (path == "/echo" && echo)) {
    if (req.method() != http::verb::post) {
      d = Refuse(http::status::method_not_allowed, "Unsupported", "Method Not Allowed\n");
      d.allow = "POST";
      return d;
    }
    if (path != "/echo" &&
        !beast::iequals(beast::string_view(req[http::field::content_type]).substr(0, 8),
                        "text/xml")) {
      return Refuse(http::status::unsupported_media_type, "Unsupported",
                    "Unsupported Media Type\n");
    }
    d.route = path == "/echo" ? Route::kEcho : Route::kSoap;
    return d;
  }
  return Refuse(http::status::not_found, "NotFound", "Not Found\n");
}

}  // namespace

RouteDecision RouteHeader(const http::request_header<>& req, bool chunked, bool echo,
                          bool metrics) {
  // lms, ma-admin and stock SOAP stacks send Content-Length. A chunked body escapes both
  // size limits (Beast counts neither chunk extensions nor trailers against them), so it is
  // refused before a byte of it is read (RFC 9110 15.5.12).
  if (chunked) {
    return Refuse(http::status::length_required, "Unsupported",
                  "chunked request bodies are not accepted: send Content-Length\n", true);
  }
  std::string_view target(req.target().data(), req.target().size());
  RouteDecision d = RoutePath(req, target.substr(0, target.find('?')), echo, metrics);
  auto expect = req.find(http::field::expect);
  if (expect != req.end()) {
    if (!beast::iequals(expect->value(), "100-continue")) {
      return Refuse(http::status::expectation_failed, "Unsupported", "unsupported Expect\n", true);
    }
    d.wants_continue = true;
  }
  return d;
}

}  // namespace tpmma::server
