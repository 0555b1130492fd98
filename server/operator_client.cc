// SPDX-License-Identifier: GPL-2.0-or-later
#include "server/operator_client.h"

#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <ctime>
#include <mutex>

#include "soapOperatorBindingProxy.h"
#include "wsdl/soap_context.h"

namespace tpmma::server {

using nlohmann::json;

namespace {

std::string Iso(time_t t) {
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

const char* StateName(op__ApprovalState s) {
  switch (s) {
    case op__ApprovalState__pending:
      return "pending";
    case op__ApprovalState__active:
      return "active";
    case op__ApprovalState__used:
      return "used";
    case op__ApprovalState__revoked:
      return "revoked";
  }
  return "?";
}

json ApprovalJson(const op__Approval& a) {
  json j = {{"id", a.ApprovalId},
            {"old_platform", a.OldPlatformId},
            {"new_platform", a.NewPlatformId},
            {"all_packages", a.PackageId.empty()},
            {"packages", a.PackageId},
            {"reason", a.Reason},
            {"created_by", a.CreatedBy},
            {"created_at", Iso(a.CreatedAt)},
            {"expires_at", Iso(a.ExpiresAt)},
            {"state", StateName(a.State)}};
  if (a.ConfirmedBy != nullptr) j["confirmed_by"] = *a.ConfirmedBy;
  return j;
}

}  // namespace

OperatorClient::OperatorClient(const OperatorClientOptions& options)
    : options_(options), proxy_(std::make_unique<OperatorBindingProxy>()) {}

OperatorClient::~OperatorClient() {
  if (proxy_) proxy_->destroy();
}

Result<std::unique_ptr<OperatorClient>> OperatorClient::Create(const OperatorClientOptions& o) {
  if (!o.url.starts_with("https://")) {
    return Error(Code::kInvalidArgument, "--ma must be https://HOST:PORT");
  }
  for (const auto& [flag, path] :
       {std::pair{"--ma-ca", o.ca_file}, {"--operator-cert", o.bundle_file}}) {
    if (path.empty() || ::access(path.c_str(), R_OK) != 0) {
      return Error(Code::kInvalidArgument, std::string(flag) + ": cannot read '" + path + "'");
    }
  }
  static std::once_flag once;
  std::call_once(once, [] {
    soap_ssl_init();
    struct sigaction old {};
    if (::sigaction(SIGPIPE, nullptr, &old) == 0 && old.sa_handler == SIG_DFL) {
      ::signal(SIGPIPE, SIG_IGN);
    }
  });
  return std::unique_ptr<OperatorClient>(new OperatorClient(o));
}

Status OperatorClient::Prepare() {
  proxy_->destroy();
  if (ready_) return Status::Ok();
  struct soap* soap = proxy_->soap;
  wsdl::SoapLimits limits;
  limits.connect_timeout_s = limits.recv_timeout_s = limits.send_timeout_s = options_.timeout_s;
  wsdl::HardenContext(soap, limits);
  soap_set_mode(soap, SOAP_IO_KEEPALIVE);
  soap->socket_flags = MSG_NOSIGNAL;
  if (soap_ssl_client_context(soap,
                              SOAP_SSL_REQUIRE_SERVER_AUTHENTICATION | SOAP_SSL_NO_DEFAULT_CA_PATH |
                                  SOAP_TLSv1_2 | SOAP_TLSv1_3,
                              options_.bundle_file.c_str(), nullptr, options_.ca_file.c_str(),
                              nullptr, nullptr) != SOAP_OK) {
    return Status(Code::kInvalidArgument, "cannot use the operator certificate or MA CA: " +
                                              wsdl::StatusFromSoap(soap).message());
  }
  proxy_->soap_endpoint = options_.url.c_str();
  ready_ = true;
  return Status::Ok();
}

Status OperatorClient::Finish(int rc) {
  if (rc == SOAP_OK) return Status::Ok();
  Status s = wsdl::StatusFromSoap(proxy_->soap);
  if (s.code() == Code::kUnavailable) {
    proxy_->soap_close_socket();
    return Status(Code::kUnavailable,
                  "the MA at " + options_.url +
                      (s.message().empty() ? " did not answer" : ": " + s.message()));
  }
  return s;
}

Result<json> OperatorClient::WhoAmI() {
  TPMMA_RETURN_IF_ERROR(Prepare());
  _op__WhoAmIRequest req;
  _op__WhoAmIResponse resp;
  TPMMA_RETURN_IF_ERROR(Finish(proxy_->WhoAmI(&req, resp)));
  const char* role = resp.Role == op__Role__admin     ? "admin"
                     : resp.Role == op__Role__auditor ? "auditor"
                                                      : "helpdesk";
  return json{{"ok", true}, {"name", resp.Name}, {"role", role}};
}

Result<json> OperatorClient::ListPlatforms() {
  json all = json::array();
  std::string token;
  do {
    TPMMA_RETURN_IF_ERROR(Prepare());
    _op__ListPlatformsRequest req;
    req.PageSize = 500;
    if (!token.empty()) req.PageToken = &token;
    _op__ListPlatformsResponse resp;
    TPMMA_RETURN_IF_ERROR(Finish(proxy_->ListPlatforms(&req, resp)));
    for (const auto* p : resp.Platform) {
      all.push_back({{"id", p->PlatformId},
                     {"state", p->Revoked ? "revoked" : "active"},
                     {"created_at", Iso(p->CreatedAt)},
                     {"last_seen_at", Iso(p->LastSeenAt)}});
    }
    token = resp.NextPageToken != nullptr ? *resp.NextPageToken : std::string();
  } while (!token.empty());
  return json{{"ok", true}, {"platforms", all}};
}

Status OperatorClient::RevokePlatform(const std::string& id, const std::string& reason) {
  TPMMA_RETURN_IF_ERROR(Prepare());
  _op__RevokePlatformRequest req;
  req.PlatformId = id;
  req.Reason = reason;
  _op__RevokePlatformResponse resp;
  return Finish(proxy_->RevokePlatform(&req, resp));
}

Result<json> OperatorClient::ListPackages(const std::optional<std::string>& platform) {
  json all = json::array();
  std::string token, src = platform.value_or("");
  do {
    TPMMA_RETURN_IF_ERROR(Prepare());
    _op__ListPackagesRequest req;
    req.PageSize = 500;
    if (platform) req.SourcePlatformId = &src;
    if (!token.empty()) req.PageToken = &token;
    _op__ListPackagesResponse resp;
    TPMMA_RETURN_IF_ERROR(Finish(proxy_->ListPackages(&req, resp)));
    for (const auto* p : resp.Package) {
      all.push_back(
          {{"id", p->PackageId},
           {"source_platform", p->SourcePlatformId},
           {"created_at", Iso(p->CreatedAt)},
           {"uploaded_at", Iso(p->UploadedAt)},
           {"key_count", p->KeyCount},
           {"size", p->SizeBytes},
           {"custody", p->CustodyMode == ma__CustodyMode__Escrow ? "escrow" : "recovery-code"}});
    }
    token = resp.NextPageToken != nullptr ? *resp.NextPageToken : std::string();
  } while (!token.empty());
  return json{{"ok", true}, {"packages", all}};
}

Result<json> OperatorClient::Approve(const std::string& old_platform,
                                     const std::string& new_platform,
                                     const std::vector<std::string>& packages, int64_t ttl_s,
                                     const std::string& reason) {
  TPMMA_RETURN_IF_ERROR(Prepare());
  _op__ApproveRequest req;
  req.OldPlatformId = old_platform;
  req.NewPlatformId = new_platform;
  req.PackageId = packages;
  req.ValiditySeconds = ttl_s;
  req.Reason = reason;
  _op__ApproveResponse resp;
  TPMMA_RETURN_IF_ERROR(Finish(proxy_->Approve(&req, resp)));
  if (resp.Approval == nullptr) return Error(Code::kMalformed, "Approve answered no approval");
  return json{{"ok", true}, {"approval", ApprovalJson(*resp.Approval)}};
}

Result<json> OperatorClient::ConfirmApproval(int64_t id) {
  TPMMA_RETURN_IF_ERROR(Prepare());
  _op__ConfirmApprovalRequest req;
  req.ApprovalId = id;
  _op__ConfirmApprovalResponse resp;
  TPMMA_RETURN_IF_ERROR(Finish(proxy_->ConfirmApproval(&req, resp)));
  if (resp.Approval == nullptr) return Error(Code::kMalformed, "no approval in the answer");
  return json{{"ok", true}, {"approval", ApprovalJson(*resp.Approval)}};
}

Status OperatorClient::RevokeApproval(int64_t id, const std::string& reason) {
  TPMMA_RETURN_IF_ERROR(Prepare());
  _op__RevokeApprovalRequest req;
  req.ApprovalId = id;
  req.Reason = reason;
  _op__RevokeApprovalResponse resp;
  return Finish(proxy_->RevokeApproval(&req, resp));
}

Result<json> OperatorClient::ListApprovals(const std::string& new_platform) {
  TPMMA_RETURN_IF_ERROR(Prepare());
  _op__ListApprovalsRequest req;
  std::string filter = new_platform;
  if (!filter.empty()) req.NewPlatformId = &filter;
  _op__ListApprovalsResponse resp;
  TPMMA_RETURN_IF_ERROR(Finish(proxy_->ListApprovals(&req, resp)));
  json all = json::array();
  for (const auto* a : resp.Approval) all.push_back(ApprovalJson(*a));
  return json{{"ok", true}, {"approvals", all}};
}

Result<json> OperatorClient::ListAudit(const std::optional<std::string>& actor,
                                       const std::optional<std::string>& platform,
                                       const std::optional<std::string>& action,
                                       std::optional<int64_t> since, std::optional<int64_t> until) {
  json all = json::array();
  std::string token, a = actor.value_or(""), act = action.value_or("");
  time_t from = static_cast<time_t>(since.value_or(0)), to = static_cast<time_t>(until.value_or(0));
  do {
    TPMMA_RETURN_IF_ERROR(Prepare());
    _op__ListAuditRequest req;
    if (actor) req.Actor = &a;
    if (action) req.Action = &act;
    if (since) req.From = &from;
    if (until) req.To = &to;
    req.PageSize = 500;
    if (!token.empty()) req.PageToken = &token;
    _op__ListAuditResponse resp;
    TPMMA_RETURN_IF_ERROR(Finish(proxy_->ListAudit(&req, resp)));
    for (const auto* r : resp.Record) {
      // A platform is the actor of its own calls and the object of operators' calls about
      // it; the operation filters on one of them only, so (as `ma-admin audit --dir` does)
      // both are matched here.
      if (platform && r->Actor != *platform && r->Object != *platform) continue;
      all.push_back({{"seq", r->Seq},
                     {"time", Iso(r->Time)},
                     {"actor", r->Actor},
                     {"action", r->Action},
                     {"object", r->Object},
                     {"outcome", r->Outcome},
                     {"detail", r->Detail},
                     {"hash", r->Hash}});
    }
    token = resp.NextPageToken != nullptr ? *resp.NextPageToken : std::string();
  } while (!token.empty());
  return json{{"ok", true}, {"records", all}};
}

Result<int64_t> OperatorClient::VerifyAudit() {
  TPMMA_RETURN_IF_ERROR(Prepare());
  _op__VerifyAuditRequest req;
  _op__VerifyAuditResponse resp;
  TPMMA_RETURN_IF_ERROR(Finish(proxy_->VerifyAudit(&req, resp)));
  return static_cast<int64_t>(resp.VerifiedRows);
}

}  // namespace tpmma::server
