// SPDX-License-Identifier: GPL-2.0-or-later
#include "server/operator_service.h"

#include <fmt/format.h>

#include "soapOperatorBindingService.h"
#include "wsdl/soap_context.h"

namespace tpmma::server {

using storage::OperatorRole;

namespace {

constexpr size_t kMaxPage = 500;

op__ApprovalState WireState(storage::ApprovalState s) {
  switch (s) {
    case storage::ApprovalState::kPending:
      return op__ApprovalState__pending;
    case storage::ApprovalState::kActive:
      return op__ApprovalState__active;
    case storage::ApprovalState::kUsed:
      return op__ApprovalState__used;
    case storage::ApprovalState::kRevoked:
      return op__ApprovalState__revoked;
  }
  return op__ApprovalState__revoked;
}

op__Role WireRole(OperatorRole r) {
  switch (r) {
    case OperatorRole::kHelpdesk:
      return op__Role__helpdesk;
    case OperatorRole::kAuditor:
      return op__Role__auditor;
    case OperatorRole::kAdmin:
      return op__Role__admin;
  }
  return op__Role__auditor;
}

std::string Clip(std::string_view s) {
  return std::string(s.substr(0, 256));
}

}  // namespace

class OperatorCalls::Impl final : public OperatorBindingService {
 public:
  Impl(struct soap* s, storage::Vault* vault, Env* env, const OperatorPolicy& policy)
      : OperatorBindingService(s), vault_(vault), env_(env), policy_(policy) {}

  int Run(const RequestInfo& info, OperatorCallLog* log) {
    info_ = &info;
    log_ = log;
    int rc = dispatch();
    info_ = nullptr;
    log_ = nullptr;
    return rc;
  }

  // ---- operations (each: who, may they, do it, audit)

  int WhoAmI(_op__WhoAmIRequest*, _op__WhoAmIResponse& resp) override {
    return Call("WhoAmI", kAnyRole, "", [&](const storage::Operator& me) {
      resp.Name = me.name;
      resp.Role = WireRole(me.role);
      return Status::Ok();
    });
  }

  int ListPlatforms(_op__ListPlatformsRequest* req, _op__ListPlatformsResponse& resp) override {
    return Call("ListPlatforms", kAnyRole, "", [&](const storage::Operator&) -> Status {
      std::string token = req->PageToken != nullptr ? *req->PageToken : std::string();
      TPMMA_ASSIGN_OR_RETURN(auto page, vault_->ListPlatforms(Page(req->PageSize), token));
      for (const auto& p : page.platforms) {
        auto* out = soap_new_op__Platform(soap);
        out->PlatformId = p.id;
        out->Revoked = p.state == storage::PlatformState::kRevoked;
        out->CreatedAt = static_cast<time_t>(p.created_at);
        out->LastSeenAt = static_cast<time_t>(p.last_seen_at);
        resp.Platform.push_back(out);
      }
      if (!page.next_page_token.empty()) {
        resp.NextPageToken = soap_new_std__string(soap);
        *resp.NextPageToken = page.next_page_token;
      }
      return Status::Ok();
    });
  }

  int RevokePlatform(_op__RevokePlatformRequest* req, _op__RevokePlatformResponse& resp) override {
    return Call(
        "RevokePlatform", kAdminOnly, req->PlatformId, [&](const storage::Operator&) -> Status {
          TPMMA_RETURN_IF_ERROR(vault_->RevokePlatform(req->PlatformId, Event(req->Reason)));
          audited_ = true;
          resp.Revoked = true;
          return Status::Ok();
        });
  }

  int ListPackages(_op__ListPackagesRequest* req, _op__ListPackagesResponse& resp) override {
    return Call("ListPackages", kAnyRole, "", [&](const storage::Operator&) -> Status {
      storage::PackageQuery q;
      if (req->SourcePlatformId != nullptr) q.source_platform_id = *req->SourcePlatformId;
      q.page_size = Page(req->PageSize);
      if (req->PageToken != nullptr) q.page_token = *req->PageToken;
      TPMMA_ASSIGN_OR_RETURN(auto page, vault_->QueryPackages(q));
      for (const auto& d : page.packages) {
        auto* out = soap_new_op__Package(soap);
        out->PackageId = d.package_id;
        out->SourcePlatformId = d.source_platform_id;
        out->CreatedAt = static_cast<time_t>(d.created_at);
        out->UploadedAt = static_cast<time_t>(d.uploaded_at);
        out->KeyCount = static_cast<unsigned int>(d.keys.size());
        out->SizeBytes = static_cast<ULONG64>(d.size);
        out->CustodyMode = d.custody == storage::CustodyMode::kEscrow
                               ? ma__CustodyMode__Escrow
                               : ma__CustodyMode__RecoveryCode;
        resp.Package.push_back(out);
      }
      if (!page.next_page_token.empty()) {
        resp.NextPageToken = soap_new_std__string(soap);
        *resp.NextPageToken = page.next_page_token;
      }
      return Status::Ok();
    });
  }

  int Approve(_op__ApproveRequest* req, _op__ApproveResponse& resp) override {
    return Call("Approve", kHelpdeskOrAdmin, "", [&](const storage::Operator& me) -> Status {
      if (req->ValiditySeconds > policy_.max_approval_ttl_s) {
        return Status(Code::kInvalidArgument,
                      fmt::format("ValiditySeconds exceeds approvals.max_ttl_s = {}",
                                  policy_.max_approval_ttl_s));
      }
      TPMMA_ASSIGN_OR_RETURN(storage::Platform old_p, vault_->GetPlatform(req->OldPlatformId));
      TPMMA_ASSIGN_OR_RETURN(storage::Platform new_p, vault_->GetPlatform(req->NewPlatformId));
      (void)old_p;
      if (new_p.state == storage::PlatformState::kRevoked) {
        return Status(Code::kPermissionDenied, "the new platform is revoked");
      }
      for (const auto& id : req->PackageId) {
        TPMMA_ASSIGN_OR_RETURN(storage::PackageDescriptor d, vault_->GetPackageDescriptor(id));
        if (d.source_platform_id != req->OldPlatformId) {
          return Status(Code::kInvalidArgument, "package " + id + " is not from the old platform");
        }
      }
      const int64_t now = env_->NowUnixSeconds();
      storage::ApprovalRequest a{.old_platform_id = req->OldPlatformId,
                                 .new_platform_id = req->NewPlatformId,
                                 .all_packages = req->PackageId.empty(),
                                 .package_ids = req->PackageId,
                                 .reason = req->Reason,
                                 .created_by = me.name,
                                 .created_at = now,
                                 .expires_at = now + req->ValiditySeconds,
                                 .require_confirmation = policy_.two_person_approvals};
      TPMMA_ASSIGN_OR_RETURN(storage::Approval made, vault_->CreateApproval(a, Event(req->Reason)));
      audited_ = true;
      resp.Approval = ToWire(made);
      return Status::Ok();
    });
  }

  int ConfirmApproval(_op__ConfirmApprovalRequest* req,
                      _op__ConfirmApprovalResponse& resp) override {
    return Call("ConfirmApproval", kHelpdeskOrAdmin, std::to_string(req->ApprovalId),
                [&](const storage::Operator& me) -> Status {
                  TPMMA_ASSIGN_OR_RETURN(
                      storage::Approval a,
                      vault_->ConfirmApproval(req->ApprovalId, me.name, env_->NowUnixSeconds(),
                                              Event("second operator confirmed")));
                  audited_ = true;
                  resp.Approval = ToWire(a);
                  return Status::Ok();
                });
  }

  int RevokeApproval(_op__RevokeApprovalRequest* req, _op__RevokeApprovalResponse& resp) override {
    return Call(
        "RevokeApproval", kHelpdeskOrAdmin, std::to_string(req->ApprovalId),
        [&](const storage::Operator&) -> Status {
          TPMMA_RETURN_IF_ERROR(vault_->RevokeApproval(req->ApprovalId, Event(req->Reason)));
          audited_ = true;
          resp.Revoked = true;
          return Status::Ok();
        });
  }

  int ListApprovals(_op__ListApprovalsRequest* req, _op__ListApprovalsResponse& resp) override {
    return Call("ListApprovals", kAnyRole, "", [&](const storage::Operator&) -> Status {
      std::string filter = req->NewPlatformId != nullptr ? *req->NewPlatformId : std::string();
      TPMMA_ASSIGN_OR_RETURN(auto list, vault_->ListApprovals(filter));
      for (const auto& a : list) {
        if (resp.Approval.size() >= 1000) break;
        resp.Approval.push_back(ToWire(a));
      }
      return Status::Ok();
    });
  }

  int ListAudit(_op__ListAuditRequest* req, _op__ListAuditResponse& resp) override {
    return Call("ListAudit", kAuditorOrAdmin, "", [&](const storage::Operator&) -> Status {
      storage::AuditFilter f;
      if (req->Actor != nullptr) f.actor = *req->Actor;
      if (req->Object != nullptr) f.object = *req->Object;
      if (req->Action != nullptr) f.action = *req->Action;
      if (req->From != nullptr) f.time_from = static_cast<int64_t>(*req->From);
      if (req->To != nullptr) f.time_to = static_cast<int64_t>(*req->To);
      f.page_size = Page(req->PageSize);
      if (req->PageToken != nullptr) f.page_token = *req->PageToken;
      TPMMA_ASSIGN_OR_RETURN(auto page, vault_->ListAudit(f));
      for (const auto& r : page.records) {
        auto* out = soap_new_op__AuditRecord(soap);
        out->Seq = r.seq;
        out->Time = static_cast<time_t>(r.event.time);
        out->Actor = r.event.actor;
        out->Action = r.event.action;
        out->Object = r.event.object;
        out->Outcome = r.event.outcome;
        out->Detail = r.event.detail;
        out->Hash = HexEncode(r.hash);
        resp.Record.push_back(out);
      }
      if (!page.next_page_token.empty()) {
        resp.NextPageToken = soap_new_std__string(soap);
        *resp.NextPageToken = page.next_page_token;
      }
      return Status::Ok();
    });
  }

  int VerifyAudit(_op__VerifyAuditRequest*, _op__VerifyAuditResponse& resp) override {
    return Call("VerifyAudit", kAuditorOrAdmin, "", [&](const storage::Operator&) -> Status {
      TPMMA_RETURN_IF_ERROR(vault_->VerifyAuditChain());
      storage::AuditFilter f;
      f.page_size = 1000;
      int64_t last = 0;
      do {
        TPMMA_ASSIGN_OR_RETURN(auto page, vault_->ListAudit(f));
        if (!page.records.empty()) last = page.records.back().seq;
        f.page_token = page.next_page_token;
      } while (!f.page_token.empty());
      resp.VerifiedRows = last;
      return Status::Ok();
    });
  }

 private:
  enum Roles : unsigned {
    kHelpdesk = 1,
    kAuditor = 2,
    kAdmin = 4,
    kAnyRole = 7,
    kAdminOnly = kAdmin,
    kHelpdeskOrAdmin = kHelpdesk | kAdmin,
    kAuditorOrAdmin = kAuditor | kAdmin,
  };
  static unsigned Bit(OperatorRole r) {
    switch (r) {
      case OperatorRole::kHelpdesk:
        return kHelpdesk;
      case OperatorRole::kAuditor:
        return kAuditor;
      case OperatorRole::kAdmin:
        return kAdmin;
    }
    return 0;
  }

  static size_t Page(int requested) {
    return requested <= 0 ? 100 : std::min(static_cast<size_t>(requested), kMaxPage);
  }

  op__Approval* ToWire(const storage::Approval& a) {
    auto* out = soap_new_op__Approval(soap);
    out->ApprovalId = a.id;
    out->OldPlatformId = a.old_platform_id;
    out->NewPlatformId = a.new_platform_id;
    out->PackageId = a.package_ids;
    out->Reason = a.reason;
    out->CreatedBy = a.created_by;
    if (a.confirmed_by) {
      out->ConfirmedBy = soap_new_std__string(soap);
      *out->ConfirmedBy = *a.confirmed_by;
    }
    out->CreatedAt = static_cast<time_t>(a.created_at);
    out->ExpiresAt = static_cast<time_t>(a.expires_at);
    out->State = WireState(a.state);
    return out;
  }

  storage::AuditEvent Event(std::string detail, std::string outcome = "ok") const {
    return storage::AuditEvent{.time = env_->NowUnixSeconds(),
                               .actor = log_->actor,
                               .action = "Operator." + op_,
                               .object = object_,
                               .outcome = std::move(outcome),
                               .detail = Clip(detail)};
  }

  // Authenticates the caller by certificate, checks the role, runs `body`, audits the
  // outcome (state changes audit themselves inside their transaction), sets the fault.
  template <typename Body>
  int Call(const char* op, unsigned roles, std::string object, Body body) {
    op_ = op;
    log_->op = std::string("Operator.") + op;
    object_ = Clip(object);
    audited_ = false;
    Status s = [&]() -> Status {
      if (info_->client_cert_fingerprint.empty()) {
        log_->actor = "anonymous";
        return Status(Code::kUnauthenticated,
                      "operator operations need an operator TLS client certificate "
                      "(ma-admin operator issue)");
      }
      auto me = vault_->GetOperatorByFingerprint(info_->client_cert_fingerprint);
      if (!me && me.error().code() == Code::kNotFound) {
        log_->actor = "anonymous";
        return Status(Code::kUnauthenticated, "this client certificate belongs to no operator");
      }
      if (!me) return me.error();
      log_->actor = "operator:" + me->name;
      if (me->revoked_at) {
        return Status(Code::kPermissionDenied, "operator " + me->name + " has been revoked");
      }
      if ((Bit(me->role) & roles) == 0) {
        return Status(Code::kPermissionDenied,
                      fmt::format("role {} may not call {}", storage::ToString(me->role), op));
      }
      return body(*me);
    }();
    if (!audited_) {
      // Reads and refusals: one row, outcome included; never the request's secrets (none).
      auto row = vault_->AppendAudit(Event("", s.ok() ? "ok" : std::string(CodeName(s.code()))));
      if (!row && s.ok()) s = row.error();  // no audit row, no answer
    }
    log_->outcome = s.code();
    if (!s.ok()) {
      log_->faulted = true;
      return wsdl::SetFault(soap, s);
    }
    return SOAP_OK;
  }

  storage::Vault* vault_;
  Env* env_;
  OperatorPolicy policy_;
  const RequestInfo* info_ = nullptr;
  OperatorCallLog* log_ = nullptr;
  std::string op_;
  std::string object_;
  bool audited_ = false;
};

OperatorCalls::OperatorCalls(struct soap* soap, storage::Vault* vault, Env* env,
                             const OperatorPolicy& policy)
    : impl_(std::make_unique<Impl>(soap, vault, env, policy)) {}
OperatorCalls::~OperatorCalls() = default;

int OperatorCalls::Dispatch(const RequestInfo& info, OperatorCallLog* log) {
  return impl_->Run(info, log);
}

}  // namespace tpmma::server
