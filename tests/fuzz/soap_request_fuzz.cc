// SPDX-License-Identifier: GPL-2.0-or-later
// A SOAP request body as ma-server's endpoint reads it (server/ma_service.cc Handler::Serve):
// wsdl::PrecheckSoapRequest first, then, if it passes, gSOAP's deserializer in the hardened
// context (wsdl::HardenContext) dispatching to every operation of both bindings
// (migration.wsdl, operator.wsdl). The operations here do nothing: what is fuzzed is the
// parsing, which runs before any of our code sees a request. Invariants: no crash, no
// sanitizer report, and a body the precheck refused is never handed to gSOAP.
#include <cstdint>
#include <istream>
#include <sstream>
#include <streambuf>
#include <string_view>

#include "soapMigrationAuthorityBindingService.h"
#include "soapOperatorBindingService.h"
#include "tests/fuzz/fuzz_check.h"
#include "wsdl/soap_context.h"

namespace {

class ViewBuf : public std::streambuf {
 public:
  explicit ViewBuf(std::string_view s) {
    char* p = const_cast<char*>(s.data());  // read only
    setg(p, p, p + s.size());
  }
};

// Every operation accepts what gSOAP decoded and answers with an empty response.
class NullMa final : public MigrationAuthorityBindingService {
 public:
  NullMa() {
    tpmma::wsdl::HardenContext(soap);
    soap_set_mode(soap, SOAP_ENC_PLAIN);
  }
  int Authenticate(_ma__AuthenticateRequest*, _ma__AuthenticateResponse&) override {
    return SOAP_OK;
  }
  int Upload(_ma__UploadRequest*, _ma__UploadResponse&) override { return SOAP_OK; }
  int Download(_ma__DownloadRequest*, _ma__DownloadResponse&) override { return SOAP_OK; }
  int Query(_ma__QueryRequest*, _ma__QueryResponse&) override { return SOAP_OK; }
  int Delete(_ma__DeleteRequest*, _ma__DeleteResponse&) override { return SOAP_OK; }
  int GetMAServiceInfo(_ma__GetMAServiceInfoRequest*, _ma__GetMAServiceInfoResponse&) override {
    return SOAP_OK;
  }
  int GetMAKey(_ma__GetMAKeyRequest*, _ma__GetMAKeyResponse&) override { return SOAP_OK; }
};

class NullOperator final : public OperatorBindingService {
 public:
  explicit NullOperator(struct soap* s) : OperatorBindingService(s) {}
  int WhoAmI(_op__WhoAmIRequest*, _op__WhoAmIResponse&) override { return SOAP_OK; }
  int ListPlatforms(_op__ListPlatformsRequest*, _op__ListPlatformsResponse&) override {
    return SOAP_OK;
  }
  int RevokePlatform(_op__RevokePlatformRequest*, _op__RevokePlatformResponse&) override {
    return SOAP_OK;
  }
  int ListPackages(_op__ListPackagesRequest*, _op__ListPackagesResponse&) override {
    return SOAP_OK;
  }
  int Approve(_op__ApproveRequest*, _op__ApproveResponse&) override { return SOAP_OK; }
  int ConfirmApproval(_op__ConfirmApprovalRequest*, _op__ConfirmApprovalResponse&) override {
    return SOAP_OK;
  }
  int RevokeApproval(_op__RevokeApprovalRequest*, _op__RevokeApprovalResponse&) override {
    return SOAP_OK;
  }
  int ListApprovals(_op__ListApprovalsRequest*, _op__ListApprovalsResponse&) override {
    return SOAP_OK;
  }
  int ListAudit(_op__ListAuditRequest*, _op__ListAuditResponse&) override { return SOAP_OK; }
  int VerifyAudit(_op__VerifyAuditRequest*, _op__VerifyAuditResponse&) override { return SOAP_OK; }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static NullMa ma;
  static NullOperator op(ma.soap);
  const std::string_view body(reinterpret_cast<const char*>(data), size);
  tpmma::Status pre = tpmma::wsdl::PrecheckSoapRequest(body);
  if (!pre.ok()) {
    TPMMA_FUZZ_CHECK(!pre.message().empty());
    return 0;
  }
  ViewBuf in(body);
  std::istream is(&in);
  std::ostringstream os;
  ma.soap->is = &is;
  ma.soap->os = &os;
  int rc = soap_begin_serve(ma.soap);
  if (rc == SOAP_OK) rc = ma.dispatch();
  if (rc == SOAP_NO_METHOD) {
    ma.soap->error = SOAP_OK;
    rc = op.dispatch();
  }
  if (rc != SOAP_OK) {
    TPMMA_FUZZ_CHECK(!tpmma::wsdl::StatusFromSoap(ma.soap).message().empty());
  }
  soap_destroy(ma.soap);
  soap_end(ma.soap);
  ma.soap->is = nullptr;
  ma.soap->os = nullptr;
  return 0;
}
