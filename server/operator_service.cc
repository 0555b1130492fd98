// SPDX-License-Identifier: GPL-2.0-or-later
// Decode the operator request, call operator_operations, encode the answer or the fault.
#include "server/operator_service.h"

#include "soapOperatorBindingService.h"
#include "wsdl/soap_context.h"

namespace tpmma::server {

using storage::OperatorRole;

namespace {

constexpr size_t kMaxApprovalsListed = 1000;  // the contract's maxOccurs

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

}  // namespace

class OperatorCalls::Impl final : public OperatorBindingService {
 public:
  Impl(struct soap* s, OperatorOperations* ops) : OperatorBindingService(s), ops_(ops) {}

  int Run(const RequestInfo& info, OperatorCallLog* log) {
    call_ = OperatorCall{};
    call_.client_cert_fingerprint = info.client_cert_fingerprint;
    call_.peer = info.peer;
    fault_.reset();
    int rc = dispatch();
    if (!call_.op.empty()) {
      log->op = "Operator." + call_.op;
      log->actor = call_.actor;
      log->fault = fault_;
    }
    return rc;
  }

  // ---- operations: decode, call, encode

  int WhoAmI(_op__WhoAmIRequest*, _op__WhoAmIResponse& resp) override {
    auto me = ops_->WhoAmI(&call_);
    if (!me) return Fault(me.error());
    resp.Name = me->name;
    resp.Role = WireRole(me->role);
    return SOAP_OK;
  }

  int ListPlatforms(_op__ListPlatformsRequest* req, _op__ListPlatformsResponse& resp) override {
    std::string token = req->PageToken != nullptr ? *req->PageToken : std::string();
    auto page = ops_->ListPlatforms(OperatorOperations::PageSize(req->PageSize), token, &call_);
    if (!page) return Fault(page.error());
    for (const auto& p : page->platforms) {
      auto* out = soap_new_op__Platform(soap);
      out->PlatformId = p.id;
      out->Revoked = p.state == storage::PlatformState::kRevoked;
      out->CreatedAt = static_cast<time_t>(p.created_at);
      out->LastSeenAt = static_cast<time_t>(p.last_seen_at);
      resp.Platform.push_back(out);
    }
    resp.NextPageToken = NextPage(page->next_page_token);
    return SOAP_OK;
  }

  int RevokePlatform(_op__RevokePlatformRequest* req, _op__RevokePlatformResponse& resp) override {
    Status s = ops_->RevokePlatform(req->PlatformId, req->Reason, &call_);
    if (!s.ok()) return Fault(s);
    resp.Revoked = true;
    return SOAP_OK;
  }

  int ListPackages(_op__ListPackagesRequest* req, _op__ListPackagesResponse& resp) override {
    storage::PackageQuery q;
    if (req->SourcePlatformId != nullptr) q.source_platform_id = *req->SourcePlatformId;
    q.page_size = OperatorOperations::PageSize(req->PageSize);
    if (req->PageToken != nullptr) q.page_token = *req->PageToken;
    auto page = ops_->ListPackages(q, &call_);
    if (!page) return Fault(page.error());
    for (const auto& d : page->packages) {
      auto* out = soap_new_op__Package(soap);
      out->PackageId = d.package_id;
      out->SourcePlatformId = d.source_platform_id;
      out->CreatedAt = static_cast<time_t>(d.created_at);
      out->UploadedAt = static_cast<time_t>(d.uploaded_at);
      out->KeyCount = static_cast<unsigned int>(d.keys.size());
      out->SizeBytes = static_cast<ULONG64>(d.size);
      out->CustodyMode = d.custody == storage::CustodyMode::kEscrow ? ma__CustodyMode__Escrow
                                                                    : ma__CustodyMode__RecoveryCode;
      resp.Package.push_back(out);
    }
    resp.NextPageToken = NextPage(page->next_page_token);
    return SOAP_OK;
  }

  int Approve(_op__ApproveRequest* req, _op__ApproveResponse& resp) override {
    ApprovalGrant r{.old_platform_id = req->OldPlatformId,
                    .new_platform_id = req->NewPlatformId,
                    .package_ids = req->PackageId,
                    .reason = req->Reason,
                    .validity_s = req->ValiditySeconds};
    auto made = ops_->Approve(r, &call_);
    if (!made) return Fault(made.error());
    resp.Approval = ToWire(*made);
    return SOAP_OK;
  }

  int ConfirmApproval(_op__ConfirmApprovalRequest* req,
                      _op__ConfirmApprovalResponse& resp) override {
    auto a = ops_->ConfirmApproval(req->ApprovalId, &call_);
    if (!a) return Fault(a.error());
    resp.Approval = ToWire(*a);
    return SOAP_OK;
  }

  int RevokeApproval(_op__RevokeApprovalRequest* req, _op__RevokeApprovalResponse& resp) override {
    Status s = ops_->RevokeApproval(req->ApprovalId, req->Reason, &call_);
    if (!s.ok()) return Fault(s);
    resp.Revoked = true;
    return SOAP_OK;
  }

  int ListApprovals(_op__ListApprovalsRequest* req, _op__ListApprovalsResponse& resp) override {
    std::string filter = req->NewPlatformId != nullptr ? *req->NewPlatformId : std::string();
    auto list = ops_->ListApprovals(filter, &call_);
    if (!list) return Fault(list.error());
    for (const auto& a : *list) {
      if (resp.Approval.size() >= kMaxApprovalsListed) break;
      resp.Approval.push_back(ToWire(a));
    }
    return SOAP_OK;
  }

  int ListAudit(_op__ListAuditRequest* req, _op__ListAuditResponse& resp) override {
    storage::AuditFilter f;
    if (req->Actor != nullptr) f.actor = *req->Actor;
    if (req->Object != nullptr) f.object = *req->Object;
    if (req->Action != nullptr) f.action = *req->Action;
    if (req->From != nullptr) f.time_from = static_cast<int64_t>(*req->From);
    if (req->To != nullptr) f.time_to = static_cast<int64_t>(*req->To);
    f.page_size = OperatorOperations::PageSize(req->PageSize);
    if (req->PageToken != nullptr) f.page_token = *req->PageToken;
    auto page = ops_->ListAudit(f, &call_);
    if (!page) return Fault(page.error());
    for (const auto& r : page->records) {
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
    resp.NextPageToken = NextPage(page->next_page_token);
    return SOAP_OK;
  }

  int VerifyAudit(_op__VerifyAuditRequest*, _op__VerifyAuditResponse& resp) override {
    auto rows = ops_->VerifyAudit(&call_);
    if (!rows) return Fault(rows.error());
    resp.VerifiedRows = *rows;
    return SOAP_OK;
  }

 private:
  int Fault(const Status& s) {
    fault_ = s;
    return SOAP_FAULT;
  }

  std::string* NextPage(const std::string& token) {
    if (token.empty()) return nullptr;
    auto* out = soap_new_std__string(soap);
    *out = token;
    return out;
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

  OperatorOperations* ops_;
  OperatorCall call_;
  std::optional<Status> fault_;
};

OperatorCalls::OperatorCalls(struct soap* soap, OperatorOperations* ops)
    : impl_(std::make_unique<Impl>(soap, ops)) {}
OperatorCalls::~OperatorCalls() = default;

int OperatorCalls::Dispatch(const RequestInfo& info, OperatorCallLog* log) {
  return impl_->Run(info, log);
}

}  // namespace tpmma::server
