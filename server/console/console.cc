// SPDX-License-Identifier: GPL-2.0-or-later
// Routing, the operator, the form and its token, and rendering; the pages are pages.h's.
#include "server/console/console.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <functional>

#include "server/console/assets.h"
#include "server/console/csrf.h"
#include "server/console/form.h"
#include "server/console/pages.h"

namespace tpmma::server::console {

namespace {

// No script at all, styles from this origin only, forms post only here, no framing. The
// referrer policy is same-origin, not no-referrer: under no-referrer a browser sends
// "Origin: null" with the console's own forms, and csrf.h could not tell them from a forgery.
constexpr char kCsp[] =
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'";

struct Route {
  std::string_view path;
  bool post;  // a state change: POST, with the form token checked first
  Result<Page> (*page)(const PageRequest&);
  std::string_view log_op;
};

constexpr Route kRoutes[] = {
    {"/console/", false, FindPage, "console.find"},
    {"/console/platform", false, PlatformPage, "console.platform"},
    {"/console/approve", false, ReviewPage, "console.review"},
    {"/console/approve", true, GrantApproval, "console.approve"},
    {"/console/approvals", false, ApprovalsPage, "console.approvals"},
    {"/console/approvals/confirm", true, ConfirmApproval, "console.confirm"},
    {"/console/approvals/revoke", true, RevokeApproval, "console.revoke"},
    {"/console/platform/revoke", false, RevokePlatformPage, "console.revoke_platform"},
    {"/console/platform/revoke", true, RevokePlatform, "console.revoke_platform"},
    {"/console/compliance", false, CompliancePage, "console.compliance"},
    {"/console/compliance.csv", false, ComplianceCsv, "console.compliance_csv"},
    {"/console/audit", false, AuditPage, "console.audit"},
};

unsigned HttpStatusOf(Code code) {
  switch (code) {
    case Code::kUnauthenticated:
    case Code::kPermissionDenied:
      return 403;
    case Code::kNotFound:
      return 404;
    case Code::kConflict:
    case Code::kAlreadyExists:
    case Code::kExpired:
      return 409;
    case Code::kInvalidArgument:
    case Code::kSchemaViolation:
    case Code::kMalformed:
    case Code::kLimitExceeded:
      return 400;
    case Code::kUnavailable:
      return 503;
    default:
      return 500;
  }
}

// What a person reads for a refusal: the operation's own words, except for faults that
// are ours (internal, I/O, crypto, TPM, a damaged vault): those say only that it failed,
// and the log says more. Keyed on the code, not the HTTP status: a refused method (405)
// or form encoding (415) is the browser's mistake and is worth reading.
bool IsOurFault(Code code) {
  switch (code) {
    case Code::kInternal:
    case Code::kIoError:
    case Code::kCryptoError:
    case Code::kTpmError:
    case Code::kCorruption:
      return true;
    default:
      return false;
  }
}

std::string Readable(const Status& s) {
  if (IsOurFault(s.code()))
    return "the MA could not do this (" + std::string(CodeName(s.code())) +
           "); try again or ask an administrator";
  return s.message();
}

bool MayAudit(const storage::Operator& me) {
  return OperatorOperations::RoleMay(me.role, "ListAudit");
}

Reply Base(unsigned status, std::string_view log_op) {
  Reply reply;
  reply.http_status = status;
  reply.content_type = "text/html; charset=utf-8";
  reply.log_op = std::string(log_op);
  reply.headers = {
      {"Content-Security-Policy", kCsp},     {"X-Frame-Options", "DENY"},
      {"X-Content-Type-Options", "nosniff"}, {"Referrer-Policy", "same-origin"},
      {"Cache-Control", "no-store"},         {"Strict-Transport-Security", "max-age=31536000"}};
  return reply;
}

std::string RenderTemplate(std::string_view name, const mu::data& data) {
  mu::mustache tmpl{std::string(Asset(name))};
  if (!tmpl.is_valid()) {
    spdlog::error("console template {}: {}", name, tmpl.error_message());
    return "<p class=\"error\">This page could not be shown.</p>";
  }
  return tmpl.render(data);
}

// `content` is already rendered (and escaped) by its own template.
std::string RenderLayout(const std::string& title, const std::string& notice,
                         const std::string& content, const storage::Operator* me, bool can_audit) {
  mu::data d;
  d.set("title", title);
  if (!notice.empty()) d.set("notice", notice);
  d.set("content", content);
  if (me != nullptr) {
    d.set("operator", me->name);
    d.set("role", std::string(storage::ToString(me->role)));
    d.set("can_audit", can_audit);
  }
  return RenderTemplate("layout.mustache", d);
}

// `http_status` overrides the code's own status where HTTP has a more precise one (405, 415).
Reply ErrorPage(const Status& s, std::string_view log_op, const storage::Operator* me,
                unsigned http_status = 0) {
  Reply reply = Base(http_status != 0 ? http_status : HttpStatusOf(s.code()), log_op);
  mu::data d;
  d.set("message", Readable(s));
  if (me != nullptr) d.set("operator", true);
  reply.body =
      RenderLayout(reply.http_status == 403 ? "Not allowed" : "That did not work", "",
                   RenderTemplate("error.mustache", d), me, me != nullptr && MayAudit(*me));
  reply.log_outcome = std::string(CodeName(s.code()));
  return reply;
}

const Route* FindRoute(std::string_view path, bool post, bool* other_method) {
  *other_method = false;
  if (path == "/console") path = "/console/";
  for (const Route& r : kRoutes) {
    if (r.path != path) continue;
    if (r.post == post) return &r;
    *other_method = true;
  }
  return nullptr;
}

bool IsCookieValue(const std::string& v) {
  return v.size() == 64 && v.find_first_not_of("0123456789abcdef") == std::string::npos;
}

Reply ServePage(const Route& route, const WebRequest& web, const RequestInfo& info,
                const storage::Operator& me, OperatorOperations* ops, Env* env) {
  if (route.post && !web.content_type.starts_with("application/x-www-form-urlencoded")) {
    return ErrorPage(
        Status(Code::kUnsupported, "a form is sent as application/x-www-form-urlencoded"),
        route.log_op, &me, 415);
  }
  Result<Form> form = Form::Parse(route.post ? std::string_view(web.body) : QueryOf(web.target));
  if (!form) return ErrorPage(form.error(), route.log_op, &me);
  std::string cookie = CookieValue(web.cookie, kCsrfCookie);
  std::string set_cookie;
  if (route.post) {
    // Before anything else: a forged form reaches no operation.
    Status csrf = CheckCsrf(web, form->Get("csrf"), info.client_cert_fingerprint);
    if (!csrf.ok()) {
      spdlog::warn("console: {} refused for operator {} from {}: {}", route.path, me.name,
                   info.peer, csrf.message());
      return ErrorPage(csrf, route.log_op, &me);
    }
  } else if (!IsCookieValue(cookie)) {
    Result<std::string> fresh = NewCsrfCookieValue();
    if (!fresh) return ErrorPage(fresh.error(), route.log_op, &me);
    cookie = *fresh;
    set_cookie = CsrfSetCookie(cookie);
  }
  const PageRequest request{.web = web,
                            .info = info,
                            .form = *form,
                            .me = me,
                            .csrf = CsrfToken(cookie, info.client_cert_fingerprint),
                            .ops = ops,
                            .env = env};
  Result<Page> page = route.page(request);
  Reply reply;
  if (!page) {
    reply = ErrorPage(page.error(), route.log_op, &me);
  } else if (!page->raw_type.empty()) {
    reply = Base(200, route.log_op);
    reply.content_type = page->raw_type;
    reply.headers.emplace_back("Content-Disposition",
                               "attachment; filename=\"" + page->filename + "\"");
    reply.body = std::move(page->raw_body);
  } else if (!page->redirect.empty()) {
    // After a POST, the browser fetches the result (a reload does not post again).
    reply = Base(303, route.log_op);
    reply.content_type = "text/plain; charset=utf-8";
    reply.headers.emplace_back("Location", page->redirect);
  } else {
    reply = Base(200, route.log_op);
    reply.body = RenderLayout(page->title, page->notice,
                              RenderTemplate(page->template_name, page->data), &me, MayAudit(me));
  }
  if (!set_cookie.empty()) reply.headers.emplace_back("Set-Cookie", set_cookie);
  return reply;
}

}  // namespace

Reply Console::Serve(const WebRequest& web, const RequestInfo& info) {
  const std::string_view path = PathOf(web.target);
  const bool post = web.method == "POST";
  // Nothing at all, not even the stylesheet, for a browser that is no operator.
  if (info.client_cert_fingerprint.empty()) {
    return ErrorPage(Status(Code::kUnauthenticated,
                            "This console is for operators: it needs an operator's client "
                            "certificate (ma-admin operator issue), installed in the browser."),
                     "console", nullptr);
  }
  OperatorCall who;
  who.client_cert_fingerprint = info.client_cert_fingerprint;
  who.peer = info.peer;
  Result<storage::Operator> me = ops_->Identify(&who);
  if (!me) return ErrorPage(me.error(), "console", nullptr);

  if (path == "/console/style.css" && !post) {
    Reply reply = Base(200, "console.css");
    reply.content_type = "text/css; charset=utf-8";
    reply.body = std::string(Asset("style.css"));
    return reply;
  }
  bool other_method = false;
  const Route* route = FindRoute(path, post, &other_method);
  if (route == nullptr) {
    if (other_method) {
      return ErrorPage(Status(Code::kUnsupported, "this page does not take that method"), "console",
                       &*me, 405);
    }
    return ErrorPage(Status(Code::kNotFound, "there is no such page"), "console", &*me);
  }
  return ServePage(*route, web, info, *me, ops_, env_);
}

}  // namespace tpmma::server::console
