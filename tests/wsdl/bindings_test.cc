// SPDX-License-Identifier: GPL-2.0-or-later
// The generated gSOAP bindings against the contract: what gSOAP writes validates against
// the schema in migration.wsdl, what a stock client (zeep) writes parses in the generated
// service, and a hardened context refuses what the schema refuses.
#include <gtest/gtest.h>

#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

#include "soapMigrationAuthorityBindingProxy.h"
#include "soapMigrationAuthorityBindingService.h"
#include "tests/support/testutil.h"
#include "wsdl/soap_context.h"

namespace tpmma::wsdl {
namespace {

using tpmma::testing::RunCommand;
using tpmma::testing::SourceDir;
using tpmma::testing::TempDir;

const char kToken[] = "c2Vzc2lvbi10b2tlbi0wMTIzNDU2Nzg5QUJDREVG";
const char kUuid[] = "3f2b8c1e-7a4d-4e2b-9c1f-0a1b2c3d4e5f";
const char kPlatform[] = "000b0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

Bytes Filled(size_t n, uint8_t v) {
  return Bytes(n, v);
}

// Owns one hardened context for a test.
class Context {
 public:
  Context() : soap_(soap_new()) { HardenContext(soap_); }
  ~Context() {
    soap_destroy(soap_);
    soap_end(soap_);
    soap_free(soap_);
  }
  struct soap* get() {
    return soap_;
  }
  xsd__base64Binary B(size_t n, uint8_t v = 0x5a) { return ToBase64Binary(soap_, Filled(n, v)); }

 private:
  struct soap* soap_;
};

// Writes one element with the generated serializer and checks it with xmllint against
// the schema extracted from migration.wsdl.
void ExpectValid(const std::string& name, const std::function<int(struct soap*)>& write,
                 struct soap* soap) {
  std::ostringstream out;
  soap->os = &out;
  ASSERT_EQ(write(soap), SOAP_OK) << name;
  soap->os = nullptr;
  TempDir dir;
  std::string file = dir.File(name + ".xml");
  tpmma::testing::WriteFileOrDie(file, View(out.str()));
  auto r = RunCommand({"xmllint", "--noout", "--nonet", "--schema", TPMMA_WSDL_XSD, file});
  EXPECT_EQ(r.exit_code, 0) << name << ": " << r.output << "\n" << out.str();
}

TEST(WsdlBindings, EveryRequestGsoapWritesValidates) {
  Context ctx;
  struct soap* soap = ctx.get();

  ma__AuthenticateBegin begin;
  begin.soap_default(soap);
  begin.EKPublic = ctx.B(282);
  xsd__base64Binary ek_cert = ctx.B(900);
  begin.EKCertificate = &ek_cert;
  begin.EKIntermediateCertificate.push_back(ctx.B(800));
  begin.AKPublic = ctx.B(282);
  _ma__AuthenticateRequest auth_begin;
  auth_begin.soap_default(soap);
  auth_begin.__union_AuthenticateRequest = SOAP_UNION__ma__union_AuthenticateRequest_Begin;
  auth_begin.union_AuthenticateRequest.Begin = &begin;
  ExpectValid(
      "AuthenticateBegin",
      [&](struct soap* s) { return soap_write__ma__AuthenticateRequest(s, &auth_begin); }, soap);

  ma__PackageSigningKey psk;
  psk.soap_default(soap);
  psk.Public = ctx.B(90);
  psk.CertifyInfo = ctx.B(120);
  psk.CertifySignature = ctx.B(70);
  ma__AuthenticateComplete complete;
  complete.soap_default(soap);
  complete.ChallengeId = ctx.B(16);
  complete.Proof = ctx.B(32);
  complete.PackageSigningKey = &psk;
  _ma__AuthenticateRequest auth_complete;
  auth_complete.soap_default(soap);
  auth_complete.__union_AuthenticateRequest = SOAP_UNION__ma__union_AuthenticateRequest_Complete;
  auth_complete.union_AuthenticateRequest.Complete = &complete;
  ExpectValid(
      "AuthenticateComplete",
      [&](struct soap* s) { return soap_write__ma__AuthenticateRequest(s, &auth_complete); }, soap);

  _ma__UploadRequest upload;
  upload.soap_default(soap);
  upload.SessionToken = kToken;
  upload.Package = ToBase64Binary(soap, View("<MigrationPackage/>"));
  ExpectValid(
      "Upload", [&](struct soap* s) { return soap_write__ma__UploadRequest(s, &upload); }, soap);

  ma__DownloadPrepare prepare;
  prepare.soap_default(soap);
  prepare.DestinationParentName = ctx.B(36);
  _ma__DownloadRequest dl_prepare;
  dl_prepare.soap_default(soap);
  dl_prepare.SessionToken = kToken;
  dl_prepare.PackageId = kUuid;
  dl_prepare.__union_DownloadRequest = SOAP_UNION__ma__union_DownloadRequest_Prepare;
  dl_prepare.union_DownloadRequest.Prepare = &prepare;
  ExpectValid(
      "DownloadPrepare",
      [&](struct soap* s) { return soap_write__ma__DownloadRequest(s, &dl_prepare); }, soap);

  ma__DownloadComplete dl_c;
  dl_c.soap_default(soap);
  dl_c.Nonce = ctx.B(32);
  dl_c.DestinationParentPublic = ctx.B(282);
  dl_c.CertifyInfo = ctx.B(120);
  dl_c.CertifySignature = ctx.B(262);
  _ma__DownloadRequest dl_complete;
  dl_complete.soap_default(soap);
  dl_complete.SessionToken = kToken;
  dl_complete.PackageId = kUuid;
  dl_complete.__union_DownloadRequest = SOAP_UNION__ma__union_DownloadRequest_Complete;
  dl_complete.union_DownloadRequest.Complete = &dl_c;
  ExpectValid(
      "DownloadComplete",
      [&](struct soap* s) { return soap_write__ma__DownloadRequest(s, &dl_complete); }, soap);

  ma__QueryFilter filter;
  filter.soap_default(soap);
  std::string platform = kPlatform;
  time_t after = 1700000000;
  filter.SourcePlatformId = &platform;
  filter.CreatedAfter = &after;
  _ma__QueryRequest query;
  query.soap_default(soap);
  query.SessionToken = kToken;
  query.Filter = &filter;
  query.PageSize = 100;
  ExpectValid(
      "Query", [&](struct soap* s) { return soap_write__ma__QueryRequest(s, &query); }, soap);

  _ma__DeleteRequest del;
  del.soap_default(soap);
  del.SessionToken = kToken;
  del.PackageId = kUuid;
  ExpectValid(
      "Delete", [&](struct soap* s) { return soap_write__ma__DeleteRequest(s, &del); }, soap);

  _ma__GetMAServiceInfoRequest info;
  info.soap_default(soap);
  ExpectValid(
      "GetMAServiceInfo",
      [&](struct soap* s) { return soap_write__ma__GetMAServiceInfoRequest(s, &info); }, soap);

  _ma__GetMAKeyRequest key;
  key.soap_default(soap);
  std::string key_id = "ma-2026-1";
  key.KeyId = &key_id;
  ExpectValid(
      "GetMAKey", [&](struct soap* s) { return soap_write__ma__GetMAKeyRequest(s, &key); }, soap);
}

TEST(WsdlBindings, ResponsesGsoapWritesValidate) {
  Context ctx;
  struct soap* soap = ctx.get();

  ma__AuthenticateSession session;
  session.soap_default(soap);
  session.SessionToken = kToken;
  session.PlatformId = kPlatform;
  session.ExpiresAt = 1800000000;
  _ma__AuthenticateResponse auth;
  auth.soap_default(soap);
  auth.__union_AuthenticateResponse = SOAP_UNION__ma__union_AuthenticateResponse_Session;
  auth.union_AuthenticateResponse.Session = &session;
  ExpectValid(
      "AuthenticateSession",
      [&](struct soap* s) { return soap_write__ma__AuthenticateResponse(s, &auth); }, soap);

  ma__PackageDescriptor d;
  d.soap_default(soap);
  d.PackageId = kUuid;
  d.SourcePlatformId = kPlatform;
  d.CreatedAt = 1700000000;
  d.UploadedAt = 1700000002;
  d.KeyCount = 3;
  d.SizeBytes = 18234;
  d.CustodyMode = ma__CustodyMode__Escrow;
  d.Access = ma__Access__Approved;
  _ma__QueryResponse q;
  q.soap_default(soap);
  q.PackageDescriptor.push_back(&d);
  ExpectValid(
      "QueryResponse", [&](struct soap* s) { return soap_write__ma__QueryResponse(s, &q); }, soap);

  _ma__GetMAKeyResponse key;
  key.soap_default(soap);
  key.KeyId = "ma-2026-1";
  key.Certificate = ctx.B(700);
  key.Public = ctx.B(282);
  key.Name = ctx.B(36);
  ExpectValid(
      "GetMAKeyResponse", [&](struct soap* s) { return soap_write__ma__GetMAKeyResponse(s, &key); },
      soap);
}

// A service that records what it was asked and answers GetMAKey; everything it does not
// override answers SOAP_NO_METHOD (WITH_DEFAULT_VIRTUAL).
class RecordingService : public MigrationAuthorityBindingService {
 public:
  RecordingService() { HardenContext(soap); }

  int Authenticate(_ma__AuthenticateRequest* req, _ma__AuthenticateResponse& resp) override {
    called = "Authenticate";
    if (req->__union_AuthenticateRequest != SOAP_UNION__ma__union_AuthenticateRequest_Begin) {
      return SetFault(soap, Status(Code::kInvalidArgument, "expected Begin"));
    }
    ek_public = FromBase64Binary(req->union_AuthenticateRequest.Begin->EKPublic);
    intermediates = req->union_AuthenticateRequest.Begin->EKIntermediateCertificate.size();
    return SetFault(soap, Status(Code::kUnauthenticated, "EK certificate chain not trusted"));
    (void)resp;
  }

  int GetMAKey(_ma__GetMAKeyRequest* req, _ma__GetMAKeyResponse& resp) override {
    called = "GetMAKey";
    if (req->KeyId != nullptr) key_id = *req->KeyId;
    resp.KeyId = "ma-2026-1";
    resp.Certificate = ToBase64Binary(soap, Filled(10, 1));
    resp.Public = ToBase64Binary(soap, Filled(20, 2));
    resp.Name = ToBase64Binary(soap, Filled(36, 3));
    return SOAP_OK;
  }

  int Upload(_ma__UploadRequest* req, _ma__UploadResponse& resp) override {
    called = "Upload";
    package = FromBase64Binary(req->Package);
    resp.PackageId = kUuid;
    resp.Digest = std::string(64, 'a');
    resp.AlreadyStored = false;
    return SOAP_OK;
  }

  // One request from `in`, the HTTP response into *out. Returns soap->error.
  int ServeOne(const std::string& in, std::string* out) {
    std::istringstream is(in);
    std::ostringstream os;
    soap->is = &is;
    soap->os = &os;
    int rc = soap_begin_serve(soap);
    if (rc == SOAP_OK) {
      rc = dispatch();
      if (rc != SOAP_OK) soap_send_fault(soap);
    }
    rc = soap->error;
    soap->is = nullptr;
    soap->os = nullptr;
    *out = os.str();
    return rc;
  }

  std::string called;
  std::string key_id;
  Bytes ek_public;
  Bytes package;
  size_t intermediates = 0;
};

std::string HttpPost(const std::string& body) {
  return "POST / HTTP/1.1\r\nHost: localhost\r\nContent-Type: text/xml; charset=utf-8\r\n"
         "Content-Length: " +
         std::to_string(body.size()) + "\r\n\r\n" + body;
}

std::string ReadText(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// The response the service wrote, read back through the generated proxy as a client
// would. `resp` points into proxy's arena: use it while proxy lives.
template <typename Response, typename Recv>
Status ReadResponse(MigrationAuthorityBindingProxy& proxy, const std::string& http, Response* resp,
                    Recv recv) {
  HardenContext(proxy.soap);
  std::istringstream is(http);
  proxy.soap->is = &is;
  recv(proxy, *resp);
  Status s = StatusFromSoap(proxy.soap);
  proxy.soap->is = nullptr;
  return s;
}

TEST(WsdlBindings, ZeepEnvelopesParseInGsoapService) {
  TempDir dir;
  auto r = RunCommand({TPMMA_SYSTEM_PYTHON, SourceDir() + "/tests/wsdl/zeep_contract_test.py",
                       SourceDir() + "/wsdl/migration.wsdl", TPMMA_WSDL_XSD, "--out", dir.path()});
  ASSERT_EQ(r.exit_code, 0) << r.output;

  {
    RecordingService svc;
    std::string out;
    EXPECT_EQ(svc.ServeOne(HttpPost(ReadText(dir.File("GetMAKey.xml"))), &out), SOAP_OK) << out;
    EXPECT_EQ(svc.called, "GetMAKey");
    EXPECT_EQ(svc.key_id, "ma-2026-1");
    EXPECT_NE(out.find("GetMAKeyResponse"), std::string::npos) << out;

    MigrationAuthorityBindingProxy proxy;
    _ma__GetMAKeyResponse resp;
    Status s = ReadResponse(proxy, out, &resp,
                            [](MigrationAuthorityBindingProxy& p, _ma__GetMAKeyResponse& r) {
                              return p.recv_GetMAKey(r);
                            });
    ASSERT_TRUE(s.ok()) << s.ToString() << "\n" << out;
    EXPECT_EQ(resp.KeyId, "ma-2026-1");
    EXPECT_EQ(FromBase64Binary(resp.Name), Filled(36, 3));
  }
  {
    RecordingService svc;
    std::string out;
    svc.ServeOne(HttpPost(ReadText(dir.File("Authenticate-Begin.xml"))), &out);
    EXPECT_EQ(svc.called, "Authenticate");
    Bytes expected_ek = {0x00, 0x04, 0x00, 0x23, 0x00};
    expected_ek.resize(35, 0);
    EXPECT_EQ(svc.ek_public, expected_ek);
    EXPECT_EQ(svc.intermediates, 1u);

    // The fault the method raised arrives at a client as the same Status.
    MigrationAuthorityBindingProxy proxy;
    _ma__AuthenticateResponse resp;
    Status s = ReadResponse(proxy, out, &resp,
                            [](MigrationAuthorityBindingProxy& p, _ma__AuthenticateResponse& r) {
                              return p.recv_Authenticate(r);
                            });
    EXPECT_EQ(s.code(), Code::kUnauthenticated) << s.ToString() << "\n" << out;
    EXPECT_EQ(s.message(), "EK certificate chain not trusted");
    EXPECT_NE(out.find("<ma:Code>Unauthenticated</ma:Code>"), std::string::npos) << out;
    EXPECT_NE(out.find("<faultcode>SOAP-ENV:Client</faultcode>"), std::string::npos) << out;
  }
  // Every other zeep request must at least parse and reach its operation (the defaults
  // answer SOAP_NO_METHOD, which is not a parse error).
  for (const char* op : {"Authenticate-Complete", "Upload", "Download-Prepare", "Download-Complete",
                         "Query", "Delete", "GetMAServiceInfo"}) {
    RecordingService svc;
    std::string out;
    int rc = svc.ServeOne(HttpPost(ReadText(dir.File(std::string(op) + ".xml"))), &out);
    EXPECT_TRUE(rc == SOAP_OK || rc == SOAP_NO_METHOD || rc == SOAP_FAULT)
        << op << " rc=" << rc << "\n"
        << out;
  }
}

std::string Envelope(const std::string& body) {
  return "<?xml version=\"1.0\" encoding=\"UTF-8\"?>"
         "<SOAP-ENV:Envelope xmlns:SOAP-ENV=\"http://schemas.xmlsoap.org/soap/envelope/\" "
         "xmlns:ma=\"urn:tpm-ma:migration:1\"><SOAP-ENV:Body>" +
         body + "</SOAP-ENV:Body></SOAP-ENV:Envelope>";
}

std::string UploadBody(const std::string& inner) {
  return "<ma:UploadRequest>" + inner + "</ma:UploadRequest>";
}

const std::string kGoodUpload = UploadBody(std::string("<ma:SessionToken>") + kToken +
                                           "</ma:SessionToken><ma:Package>PHgvPg==</ma:Package>");

TEST(WsdlBindings, HardenedServiceAcceptsValidUpload) {
  RecordingService svc;
  std::string out;
  EXPECT_EQ(svc.ServeOne(HttpPost(Envelope(kGoodUpload)), &out), SOAP_OK) << out;
  EXPECT_EQ(svc.called, "Upload");
  EXPECT_EQ(ToString(svc.package), "<x/>");
}

TEST(WsdlBindings, HardenedServiceRefusesWhatTheSchemaRefuses) {
  struct Case {
    const char* what;
    std::string body;
  };
  std::vector<Case> cases = {
      {"missing Package",
       UploadBody(std::string("<ma:SessionToken>") + kToken + "</ma:SessionToken>")},
      {"unknown element", UploadBody(std::string("<ma:SessionToken>") + kToken +
                                     "</ma:SessionToken><ma:Package>PHgvPg==</ma:Package>"
                                     "<ma:Extra>1</ma:Extra>")},
      {"duplicate element", UploadBody(std::string("<ma:SessionToken>") + kToken +
                                       "</ma:SessionToken><ma:SessionToken>" + kToken +
                                       "</ma:SessionToken><ma:Package>PHgvPg==</ma:Package>")},
      {"token too short", UploadBody("<ma:SessionToken>abc</ma:SessionToken>"
                                     "<ma:Package>PHgvPg==</ma:Package>")},
      {"bad base64", UploadBody(std::string("<ma:SessionToken>") + kToken +
                                "</ma:SessionToken><ma:Package>!!notbase64!!</ma:Package>")},
      {"both choices", std::string("<ma:DownloadRequest><ma:SessionToken>") + kToken +
                           "</ma:SessionToken><ma:PackageId>" + kUuid +
                           "</ma:PackageId><ma:Prepare><ma:DestinationParentName>AAE=</"
                           "ma:DestinationParentName></ma:Prepare><ma:Prepare><ma:"
                           "DestinationParentName>AAE=</ma:DestinationParentName></ma:Prepare>"
                           "</ma:DownloadRequest>"},
      {"page size out of range", std::string("<ma:QueryRequest><ma:SessionToken>") + kToken +
                                     "</ma:SessionToken><ma:PageSize>501</ma:PageSize>"
                                     "</ma:QueryRequest>"},
  };
  for (const auto& c : cases) {
    RecordingService svc;
    std::string out;
    int rc = svc.ServeOne(HttpPost(Envelope(c.body)), &out);
    EXPECT_NE(rc, SOAP_OK) << c.what << "\n" << out;
    EXPECT_TRUE(svc.called.empty()) << c.what << " reached " << svc.called;
    Status s = StatusFromSoap(svc.soap);
    EXPECT_TRUE(s.code() == Code::kSchemaViolation || s.code() == Code::kMalformed)
        << c.what << ": " << s.ToString();
  }
}

TEST(WsdlBindings, PlainBodyWithoutHttpHeadersParses) {
  // How a front-end that owns HTTP (Boost.Beast) hands gSOAP only the body.
  RecordingService svc;
  soap_set_mode(svc.soap, SOAP_ENC_PLAIN);
  std::string out;
  EXPECT_EQ(svc.ServeOne(Envelope(kGoodUpload), &out), SOAP_OK) << out;
  EXPECT_EQ(svc.called, "Upload");
  EXPECT_EQ(out.rfind("<?xml", 0), 0u) << out;  // no HTTP status line either
  EXPECT_NE(out.find("UploadResponse"), std::string::npos) << out;
}

TEST(WsdlBindings, LenientDefaultsWouldAcceptAMissingElement) {
  // Why HardenContext exists: gSOAP's default mode lets the same request through.
  RecordingService svc;
  soap_set_imode(svc.soap, SOAP_IO_DEFAULT);
  svc.soap->imode &= ~SOAP_XML_STRICT;
  std::string out;
  svc.ServeOne(HttpPost(Envelope(
                   UploadBody(std::string("<ma:SessionToken>") + kToken + "</ma:SessionToken>"))),
               &out);
  EXPECT_EQ(svc.called, "Upload");
}

TEST(WsdlBindings, HardenedServiceEnforcesSizeAndDepthLimits) {
  {
    RecordingService svc;
    SoapLimits limits;
    limits.max_message_bytes = 512;
    HardenContext(svc.soap, limits);
    std::string big(4000, 'A');
    std::string out;
    int rc = svc.ServeOne(
        HttpPost(Envelope(UploadBody(std::string("<ma:SessionToken>") + kToken +
                                     "</ma:SessionToken><ma:Package>" + big + "</ma:Package>"))),
        &out);
    EXPECT_NE(rc, SOAP_OK);
    EXPECT_TRUE(svc.called.empty());
    EXPECT_EQ(StatusFromSoap(svc.soap).code(), Code::kLimitExceeded)
        << StatusFromSoap(svc.soap).ToString();
  }
  {
    // Envelope/Body/UploadRequest/SessionToken is four levels deep.
    RecordingService svc;
    SoapLimits limits;
    limits.max_depth = 3;
    HardenContext(svc.soap, limits);
    std::string out;
    int rc = svc.ServeOne(HttpPost(Envelope(kGoodUpload)), &out);
    EXPECT_NE(rc, SOAP_OK);
    EXPECT_TRUE(svc.called.empty());
    EXPECT_EQ(StatusFromSoap(svc.soap).code(), Code::kLimitExceeded)
        << StatusFromSoap(svc.soap).ToString();
  }
}

TEST(WsdlBindings, UnimplementedOperationAnswersNoMethod) {
  RecordingService svc;
  std::string out;
  std::string body = std::string("<ma:DeleteRequest><ma:SessionToken>") + kToken +
                     "</ma:SessionToken><ma:PackageId>" + kUuid +
                     "</ma:PackageId></ma:DeleteRequest>";
  int rc = svc.ServeOne(HttpPost(Envelope(body)), &out);
  EXPECT_EQ(rc, SOAP_NO_METHOD) << out;  // the default for methods a subclass leaves out
}

}  // namespace
}  // namespace tpmma::wsdl
