// SPDX-License-Identifier: GPL-2.0-or-later
// The MA's SOAP operations driven in-process through Endpoint::Handle, with requests and
// replies (de)serialized by the generated gSOAP proxy, a real SQLite vault, and a real
// swtpm (EK certificate from NV chained to the fixture's CA, AK, credential activation,
// TPM2_Certify over the MA's nonces, MRK duplication to the MA key, TPM-signed package,
// TPM2_Import of the re-wrapped MRK).
#include <openssl/hmac.h>
#include <openssl/rsa.h>
#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <map>
#include <optional>
#include <sstream>
#include <thread>

#include <gtest/gtest.h>

#include "common/env.h"
#include "schema/package_xml.h"
#include "server/ma_key.h"
#include "server/ma_service.h"
#include "soapMigrationAuthorityBindingProxy.h"
#include "storage/sqlite_vault.h"
#include "tests/server/ma_platform_fixture.h"
#include "tests/support/status_testing.h"
#include "tests/support/swtpm.h"
#include "tests/support/testutil.h"
#include "tpm/escrow.h"
#include "tpm/esys/esys.h"
#include "tpm/esys/tpm_pkey.h"
#include "tpm/marshal.h"
#include "tpm/public.h"
#include "wsdl/soap_context.h"

namespace tpmma::server {
namespace {

using testing::RunCommand;
using testing::Swtpm;
using testing::TempDir;
using wsdl::FromBase64Binary;
using wsdl::ToBase64Binary;

// A client as a stock one would be: the generated proxy writes the request envelope, the
// reply is read back through it. SOAP_ENC_PLAIN: no HTTP on either side.
class Client : public MaCalls {
 public:
  explicit Client(Endpoint* ep) : ep_(ep) {
    wsdl::HardenContext(proxy.soap);
    soap_set_mode(proxy.soap, SOAP_ENC_PLAIN);
  }
  // Frees the previous response (copy what you need out of it first).
  template <typename Send, typename Recv>
  Status Call(Send send, Recv recv) {
    proxy.destroy();
    std::ostringstream os;
    proxy.soap->os = &os;
    int rc = send(proxy);
    proxy.soap->os = nullptr;
    if (rc != SOAP_OK) return wsdl::StatusFromSoap(proxy.soap);
    body = os.str();
    return Raw(body, recv);
  }
  template <typename Recv>
  Status Raw(const std::string& request, Recv recv) {
    RequestInfo info;
    info.peer = "127.0.0.1:1";
    reply = ep_->Handle(request, info);
    std::istringstream is(reply.body);
    proxy.soap->is = &is;
    recv(proxy);
    proxy.soap->is = nullptr;
    return wsdl::StatusFromSoap(proxy.soap);
  }
  // MaCalls, over the wire (below).
  Status Begin(const BeginRequest& r, BeginResult* out) override;
  Status Complete(const CompleteRequest& r, CompleteResult* out) override;
  Status Upload(const std::string& token, const Bytes& pkg, bool* already) override;
  Status Query(const std::string& token, std::vector<std::string>* ids,
               std::vector<unsigned>* key_counts) override;
  Status Delete(const std::string& token, const std::string& id) override;
  Status Prepare(const DownloadPrepareRequest& r, Bytes* nonce) override;
  Status CompleteDownload(const DownloadCompleteRequest& r, Downloaded* out) override;

  MigrationAuthorityBindingProxy proxy;
  Reply reply;
  std::string body;

 private:
  Endpoint* ep_;
};

// The request envelope, written by the generated serializer exactly as the proxy's send_X
// would, minus the connection (the endpoint is called in-process).
template <typename T>
int Put(struct soap* soap, T* req, const char* tag) {
  soap_serializeheader(soap);
  req->soap_serialize(soap);
  if (soap_begin_send(soap) || soap_envelope_begin_out(soap) || soap_putheader(soap) ||
      soap_body_begin_out(soap) || req->soap_put(soap, tag, "") || soap_body_end_out(soap) ||
      soap_envelope_end_out(soap) || soap_end_send(soap)) {
    return soap->error;
  }
  return SOAP_OK;
}

Status GetMAKey(Client& c, _ma__GetMAKeyResponse* out) {
  _ma__GetMAKeyRequest req;
  return c.Call([&](auto& p) { return Put(p.soap, &req, "ma:GetMAKeyRequest"); },
                [&](auto& p) { return p.recv_GetMAKey(*out); });
}

// ---- MaCalls over the wire: each domain request as the envelope a stock client sends.

Status Client::Begin(const BeginRequest& r, BeginResult* out) {
  _ma__AuthenticateRequest req;
  req.__union_AuthenticateRequest = SOAP_UNION__ma__union_AuthenticateRequest_Begin;
  _ma__AuthenticateResponse resp;
  Status s = Call(
      [&](auto& p) {
        auto* b = soap_new_ma__AuthenticateBegin(p.soap);
        req.union_AuthenticateRequest.Begin = b;
        b->EKPublic = ToBase64Binary(p.soap, r.ek_public);
        if (!r.ek_certificate.empty()) {
          b->EKCertificate = soap_new_xsd__base64Binary(p.soap);
          *b->EKCertificate = ToBase64Binary(p.soap, r.ek_certificate);
        }
        for (const Bytes& i : r.ek_intermediates) {
          b->EKIntermediateCertificate.push_back(ToBase64Binary(p.soap, i));
        }
        b->AKPublic = ToBase64Binary(p.soap, r.ak_public);
        return Put(p.soap, &req, "ma:AuthenticateRequest");
      },
      [&](auto& p) { return p.recv_Authenticate(resp); });
  if (!s.ok()) return s;
  auto* ch = resp.union_AuthenticateResponse.Challenge;
  out->challenge_id = FromBase64Binary(ch->ChallengeId);
  out->nonce = FromBase64Binary(ch->Nonce);
  out->credential_blob = FromBase64Binary(ch->CredentialBlob);
  out->encrypted_secret = FromBase64Binary(ch->EncryptedSecret);
  out->expires_at = static_cast<int64_t>(ch->ExpiresAt);
  return Status::Ok();
}

Status Client::Complete(const CompleteRequest& r, CompleteResult* out) {
  _ma__AuthenticateRequest req;
  req.__union_AuthenticateRequest = SOAP_UNION__ma__union_AuthenticateRequest_Complete;
  _ma__AuthenticateResponse resp;
  Status s = Call(
      [&](auto& p) {
        auto* m = soap_new_ma__AuthenticateComplete(p.soap);
        req.union_AuthenticateRequest.Complete = m;
        m->ChallengeId = ToBase64Binary(p.soap, r.challenge_id);
        m->Proof = ToBase64Binary(p.soap, r.proof);
        if (r.signing_key) {
          m->PackageSigningKey = soap_new_ma__PackageSigningKey(p.soap);
          m->PackageSigningKey->Public = ToBase64Binary(p.soap, r.signing_key->public_area);
          m->PackageSigningKey->CertifyInfo = ToBase64Binary(p.soap, r.signing_key->certify_info);
          m->PackageSigningKey->CertifySignature =
              ToBase64Binary(p.soap, r.signing_key->certify_signature);
        }
        return Put(p.soap, &req, "ma:AuthenticateRequest");
      },
      [&](auto& p) { return p.recv_Authenticate(resp); });
  if (s.ok()) {
    const auto* session = resp.union_AuthenticateResponse.Session;
    out->token.assign(session->SessionToken.begin(), session->SessionToken.end());
    out->platform_id = session->PlatformId;
    out->expires_at = static_cast<int64_t>(session->ExpiresAt);
  }
  return s;
}

Status Client::Upload(const std::string& token, const Bytes& pkg, bool* already) {
  _ma__UploadRequest req;
  _ma__UploadResponse resp;
  Status s = Call(
      [&](auto& p) {
        req.SessionToken = token;
        req.Package = ToBase64Binary(p.soap, pkg);
        return Put(p.soap, &req, "ma:UploadRequest");
      },
      [&](auto& p) { return p.recv_Upload(resp); });
  if (s.ok() && already != nullptr) *already = resp.AlreadyStored;
  return s;
}

Status Client::Query(const std::string& token, std::vector<std::string>* ids,
                     std::vector<unsigned>* key_counts) {
  _ma__QueryRequest req;
  req.SessionToken = token;
  req.PageSize = 100;
  _ma__QueryResponse resp;
  Status s = Call([&](auto& p) { return Put(p.soap, &req, "ma:QueryRequest"); },
                  [&](auto& p) { return p.recv_Query(resp); });
  ids->clear();
  key_counts->clear();
  for (auto* d : resp.PackageDescriptor) {
    ids->push_back(d->PackageId);
    key_counts->push_back(d->KeyCount);
  }
  return s;
}

Status Client::Delete(const std::string& token, const std::string& id) {
  _ma__DeleteRequest req;
  req.SessionToken = token;
  req.PackageId = id;
  _ma__DeleteResponse resp;
  return Call([&](auto& p) { return Put(p.soap, &req, "ma:DeleteRequest"); },
              [&](auto& p) { return p.recv_Delete(resp); });
}

Status Client::Prepare(const DownloadPrepareRequest& r, Bytes* nonce) {
  _ma__DownloadRequest req;
  req.SessionToken = r.session_token;
  req.PackageId = r.package_id;
  req.__union_DownloadRequest = SOAP_UNION__ma__union_DownloadRequest_Prepare;
  _ma__DownloadResponse resp;
  Status s = Call(
      [&](auto& p) {
        auto* prep = soap_new_ma__DownloadPrepare(p.soap);
        req.union_DownloadRequest.Prepare = prep;
        prep->DestinationParentName = ToBase64Binary(p.soap, r.parent_name);
        return Put(p.soap, &req, "ma:DownloadRequest");
      },
      [&](auto& p) { return p.recv_Download(resp); });
  if (s.ok()) *nonce = FromBase64Binary(resp.union_DownloadResponse.Prepared->Nonce);
  return s;
}

Status Client::CompleteDownload(const DownloadCompleteRequest& r, Downloaded* out) {
  _ma__DownloadRequest req;
  req.SessionToken = r.session_token;
  req.PackageId = r.package_id;
  req.__union_DownloadRequest = SOAP_UNION__ma__union_DownloadRequest_Complete;
  _ma__DownloadResponse resp;
  Status s = Call(
      [&](auto& p) {
        auto* comp = soap_new_ma__DownloadComplete(p.soap);
        req.union_DownloadRequest.Complete = comp;
        comp->Nonce = ToBase64Binary(p.soap, r.nonce);
        comp->DestinationParentPublic = ToBase64Binary(p.soap, r.parent_public);
        comp->CertifyInfo = ToBase64Binary(p.soap, r.certify_info);
        comp->CertifySignature = ToBase64Binary(p.soap, r.certify_signature);
        return Put(p.soap, &req, "ma:DownloadRequest");
      },
      [&](auto& p) { return p.recv_Download(resp); });
  if (s.ok()) {
    auto* pk = resp.union_DownloadResponse.Package;
    out->document = FromBase64Binary(pk->Document);
    out->duplicate = FromBase64Binary(pk->DuplicateRewrapped);
    out->seed = FromBase64Binary(pk->EncryptedSeedRewrapped);
    out->escrowed_inner_key =
        pk->EscrowedInnerKey != nullptr ? FromBase64Binary(*pk->EscrowedInnerKey) : Bytes();
    out->signing_key_public =
        pk->SigningKeyPublic != nullptr ? FromBase64Binary(*pk->SigningKeyPublic) : Bytes();
  }
  return s;
}

// ---------------------------------------------------------------------------------------
// Software-only: no TPM needed.

TEST(MaKey, RefusesKeyReadableByOthers) {
  TempDir dir;
  MaFiles ma = MakeMaFiles(dir);
  ::chmod(ma.key.c_str(), 0644);
  auto k = LoadSoftwareMaKey("k", ma.key, ma.cert, Env::Default());
  ASSERT_FALSE(k.has_value());
  EXPECT_EQ(k.error().code(), Code::kPermissionDenied);
  EXPECT_NE(k.error().message().find("chmod 600"), std::string::npos) << k.error().message();
  ::chmod(ma.key.c_str(), 0600);
  EXPECT_TRUE(LoadSoftwareMaKey("k", ma.key, ma.cert, Env::Default()).has_value());
}

TEST(MaService, InfoKeyAndRequestRefusals) {
  TempDir dir;
  MaFiles ma = MakeMaFiles(dir);
  FakeClockEnv env;
  auto ep = MakeMaService(BaseConfig(dir, ma, {ma.cert}), &env);
  ASSERT_OK(ep);
  Client c(ep->get());

  _ma__GetMAKeyResponse key;
  {
    Status s = GetMAKey(c, &key);
    ASSERT_TRUE(s.ok()) << s.ToString() << "\nrequest: " << c.body << "\nreply: " << c.reply.body;
  }
  EXPECT_EQ(c.reply.http_status, 200u);
  EXPECT_EQ(c.reply.log_op, "GetMAKey");
  EXPECT_EQ(key.KeyId, "ma-test");
  // The published bytes are what tpm2_loadexternal would make of the PEM (tpm/ tests
  // cross-check MaStoragePublic against tpm2-tools), and Name is their TPM2B_NAME.
  auto pub = tpm::Unmarshal<TPM2B_PUBLIC>(FromBase64Binary(key.Public));
  ASSERT_OK(pub);
  auto name = tpm::ComputeTpm2bName(pub->publicArea);
  ASSERT_OK(name);
  auto name_bytes = tpm::Marshal(*name);
  ASSERT_OK(name_bytes);
  EXPECT_EQ(*name_bytes, FromBase64Binary(key.Name));

  {
    _ma__GetMAKeyRequest req;
    std::string other = "nope";
    req.KeyId = &other;
    _ma__GetMAKeyResponse resp;
    Status s = c.Call([&](auto& p) { return Put(p.soap, &req, "ma:GetMAKeyRequest"); },
                      [&](auto& p) { return p.recv_GetMAKey(resp); });
    EXPECT_EQ(s.code(), Code::kNotFound) << s.ToString();
    EXPECT_EQ(c.reply.http_status, 500u);
    EXPECT_EQ(c.reply.log_outcome, "NotFound");
  }
  {
    _ma__GetMAServiceInfoRequest req;
    _ma__GetMAServiceInfoResponse resp;
    Status s = c.Call([&](auto& p) { return Put(p.soap, &req, "ma:GetMAServiceInfoRequest"); },
                      [&](auto& p) { return p.recv_GetMAServiceInfo(resp); });
    ASSERT_TRUE(s.ok()) << s.ToString();
    ASSERT_NE(resp.Limits, nullptr);
    EXPECT_EQ(resp.Limits->MaxPackageBytes, 512u * 1024);
    EXPECT_EQ(resp.Operation.size(), 7u);
    EXPECT_EQ(resp.MAKeyId, std::vector<std::string>{"ma-test"});
  }
  std::string token(43, 'A');
  {
    _ma__QueryRequest req;
    req.SessionToken = token;
    req.PageSize = 10;
    _ma__QueryResponse resp;
    Status s = c.Call([&](auto& p) { return Put(p.soap, &req, "ma:QueryRequest"); },
                      [&](auto& p) { return p.recv_Query(resp); });
    EXPECT_EQ(s.code(), Code::kUnauthenticated) << s.ToString();
  }
  {
    _ma__UploadRequest req;
    req.SessionToken = token;
    Bytes junk = ToBytes("<x/>");
    _ma__UploadResponse resp;
    Status s = c.Call(
        [&](auto& p) {
          req.Package = ToBase64Binary(p.soap, junk);
          return Put(p.soap, &req, "ma:UploadRequest");
        },
        [&](auto& p) { return p.recv_Upload(resp); });
    EXPECT_EQ(s.code(), Code::kUnauthenticated) << s.ToString();
  }
  // Bodies gSOAP or our pre-check refuse still get an MAFault with a stable code.
  _ma__GetMAKeyResponse resp;
  auto recv = [&](auto& p) { return p.recv_GetMAKey(resp); };
  const std::string env_head =
      "<?xml version=\"1.0\"?><SOAP-ENV:Envelope "
      "xmlns:SOAP-ENV=\"http://schemas.xmlsoap.org/soap/envelope/\" "
      "xmlns:ma=\"urn:tpm-ma:migration:1\"><SOAP-ENV:Body>";
  EXPECT_EQ(
      c.Raw("<?xml version=\"1.0\"?><!DOCTYPE x [<!ENTITY a \"b\">]>" + env_head, recv).code(),
      Code::kMalformed);
  EXPECT_EQ(c.reply.http_status, 500u);
  EXPECT_EQ(c.Raw(env_head + "<ma:GetMAKeyRequest><ma:KeyId>", recv).code(), Code::kMalformed)
      << c.reply.body;
  Status unknown = c.Raw(env_head +
                             "<ma:GetMAKeyRequest><ma:Bogus/></ma:GetMAKeyRequest>"
                             "</SOAP-ENV:Body></SOAP-ENV:Envelope>",
                         recv);
  EXPECT_EQ(unknown.code(), Code::kSchemaViolation) << unknown.ToString();
  Status big = c.Raw(env_head + "<ma:GetMAKeyRequest><ma:KeyId>" + std::string(2 << 20, 'k') +
                         "</ma:KeyId></ma:GetMAKeyRequest></SOAP-ENV:Body></SOAP-ENV:Envelope>",
                     recv);
  EXPECT_EQ(big.code(), Code::kLimitExceeded) << big.ToString();
  // Issue #13 findings 1 and 8: what gSOAP alone accepted, refused before it binds anything.
  const std::string op = "<ma:GetMAKeyRequest><ma:KeyId>ma-test</ma:KeyId></ma:GetMAKeyRequest>";
  const std::string env_tail = "</SOAP-ENV:Body></SOAP-ENV:Envelope>";
  std::string flood;
  for (int i = 0; i < 40000; ++i) flood += " xmlns:n" + std::to_string(i) + "='urn:x'";
  struct Hostile {
    std::string body;
    Code code;
  };
  for (const Hostile& h : std::vector<Hostile>{
           {env_head + "<ma:GetMAKeyRequest" + flood +
                "><ma:KeyId>k</ma:KeyId></ma:GetMAKeyRequest>" + env_tail,
            Code::kLimitExceeded},
           {env_head + op + op + env_tail, Code::kMalformed},
           {env_head + op + env_tail + "trailing", Code::kMalformed},
           {env_head + "<ma:GetMAKeyRequest><ma:KeyId>k\xC3\x28</ma:KeyId></ma:GetMAKeyRequest>" +
                env_tail,
            Code::kMalformed},
           {env_head + "<ma:GetMAKeyRequest><ma:KeyId>&#0;</ma:KeyId></ma:GetMAKeyRequest>" +
                env_tail,
            Code::kMalformed},
           {env_head + "<ma:GetMAKeyRequest><ma:KeyId href='#k'/></ma:GetMAKeyRequest><x id='k'>" +
                "ma-test</x>" + env_tail,
            Code::kMalformed},
       }) {
    Status s = c.Raw(h.body, recv);
    EXPECT_EQ(s.code(), h.code) << s.ToString() << "\n" << h.body.substr(0, 200);
    EXPECT_EQ(c.reply.http_status, 500u);
  }
  // A SOAP 1.2 envelope gets a clean SOAP 1.1 fault, not a mix of both.
  Status v12 = c.Raw(
      "<e:Envelope xmlns:e='http://www.w3.org/2003/05/soap-envelope' "
      "xmlns:ma='urn:tpm-ma:migration:1'><e:Body>" +
          op + "</e:Body></e:Envelope>",
      recv);
  EXPECT_EQ(v12.code(), Code::kUnsupported) << v12.ToString();
  EXPECT_NE(c.reply.body.find("http://schemas.xmlsoap.org/soap/envelope/"), std::string::npos);
  EXPECT_EQ(c.reply.body.find("http://www.w3.org/2003/05/soap-envelope"), std::string::npos)
      << c.reply.body;
  // ... and the context is clean for the next request.
  ASSERT_TRUE(GetMAKey(c, &key).ok()) << c.reply.body;
}

TEST(MaKey, DuplicationSelectPolicyMatchesTheTpm) {
  std::string why;
  Swtpm* t = testing::SharedSwtpm(0, &why);
  if (t == nullptr) GTEST_SKIP() << why;
  auto tpm = esys::Tpm::Open(t->tcti());
  ASSERT_OK(tpm);
  Bytes name = {0x00, 0x0b};
  for (int i = 0; i < 32; ++i) name.push_back(static_cast<uint8_t>(i * 7));
  auto ours = DuplicationSelectPolicyDigest(name);
  ASSERT_OK(ours);
  auto trial = (*tpm)->TrialDuplicationSelectPolicy(name);
  ASSERT_OK(trial);
  EXPECT_EQ(*ours, Bytes(trial->buffer, trial->buffer + trial->size));
}

TEST(MaKey, DuplicationSelectPolicyMatchesTpm2Tools) {
  std::string why;
  Swtpm* t = testing::SharedSwtpm(1, &why);
  if (t == nullptr) GTEST_SKIP() << why;
  TempDir dir;
  MaFiles ma = MakeMaFiles(dir);
  auto key = LoadSoftwareMaKey("k", ma.key, ma.cert, Env::Default());
  ASSERT_OK(key);
  testing::WriteFileOrDie(t->File("ma.name"), (*key)->name());
  std::string sess = t->File("trial.ctx");
  auto r = t->ToolsNoFlush({"tpm2_startauthsession", "-S", sess});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = t->ToolsNoFlush({"tpm2_policyduplicationselect", "-S", sess, "-N", t->File("ma.name"), "-L",
                       t->File("policy.bin")});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = t->ToolsNoFlush({"tpm2_flushcontext", sess});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto ours = DuplicationSelectPolicyDigest((*key)->name());
  ASSERT_OK(ours);
  EXPECT_EQ(*ours, testing::ReadFileOrDie(t->File("policy.bin")));
}

// The request examples the zeep contract test sends (tests/wsdl/examples), wrapped in an
// envelope: the valid ones reach their operation, the invalid ones are refused by the
// schema, and each gets the stable code a caller can act on, never Internal.
TEST(MaService, ContractExamplesGetStableAnswers) {
  TempDir dir;
  MaFiles ma = MakeMaFiles(dir);
  FakeClockEnv env;
  auto ep = MakeMaService(BaseConfig(dir, ma, {ma.cert}), &env);
  ASSERT_OK(ep);
  const std::map<std::string, Code> expected = {
      {"getmaserviceinfo", Code::kOk},
      {"getmakey", Code::kNotFound},             // asks for "ma-2026-1"; this MA is "ma-test"
      {"authenticate-begin", Code::kMalformed},  // placeholder bytes, not a TPM2B_PUBLIC
      {"authenticate-complete", Code::kUnauthenticated},
      {"upload", Code::kUnauthenticated},
      {"query", Code::kUnauthenticated},
      {"delete", Code::kUnauthenticated},
      {"download-prepare", Code::kUnauthenticated},
      {"download-complete", Code::kUnauthenticated},
      {"invalid-authenticate-both-choices", Code::kSchemaViolation},
      {"invalid-authenticate-short-proof", Code::kSchemaViolation},
      {"invalid-delete-bad-uuid", Code::kSchemaViolation},
      {"invalid-download-no-choice", Code::kSchemaViolation},
      {"invalid-query-page-size", Code::kSchemaViolation},
      {"invalid-upload-missing-package", Code::kSchemaViolation},
  };
  for (const auto& [name, code] : expected) {
    Bytes raw = testing::ReadFileOrDie(testing::SourceDir() + "/tests/wsdl/examples/" + name +
                                       ".request.xml");
    std::string text = ToString(raw);
    // Drop the XML declaration and the SPDX comment: the element goes into a Body.
    size_t start = text.find("<ma:");
    ASSERT_NE(start, std::string::npos) << name;
    std::string body =
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><SOAP-ENV:Envelope "
        "xmlns:SOAP-ENV=\"http://schemas.xmlsoap.org/soap/envelope/\"><SOAP-ENV:Body>" +
        text.substr(start) + "</SOAP-ENV:Body></SOAP-ENV:Envelope>";
    RequestInfo info;
    Reply r = (*ep)->Handle(body, info);
    if (code == Code::kOk) {
      EXPECT_EQ(r.http_status, 200u) << name << ": " << r.body;
      continue;
    }
    EXPECT_EQ(r.http_status, 500u) << name;
    EXPECT_EQ(r.log_outcome, CodeName(code)) << name << ": " << r.body;
    EXPECT_NE(r.body.find("<ma:Code>" + std::string(CodeName(code)) + "</ma:Code>"),
              std::string::npos)
        << name << ": " << r.body;
  }
}

TEST(MaService, ConcurrentRequestsUseSeparateContexts) {
  TempDir dir;
  MaFiles ma = MakeMaFiles(dir);
  FakeClockEnv env;
  auto ep = MakeMaService(BaseConfig(dir, ma, {ma.cert}), &env);
  ASSERT_OK(ep);
  std::string get_key, query;
  {
    Client c(ep->get());
    _ma__GetMAKeyRequest req;
    _ma__GetMAKeyResponse resp;
    ASSERT_TRUE(c.Call([&](auto& p) { return Put(p.soap, &req, "ma:GetMAKeyRequest"); },
                       [&](auto& p) { return p.recv_GetMAKey(resp); })
                    .ok());
    get_key = c.body;
    _ma__QueryRequest q;
    q.SessionToken = std::string(43, 'Q');
    q.PageSize = 5;
    _ma__QueryResponse qr;
    Status s = c.Call([&](auto& p) { return Put(p.soap, &q, "ma:QueryRequest"); },
                      [&](auto& p) { return p.recv_Query(qr); });
    ASSERT_EQ(s.code(), Code::kUnauthenticated);
    query = c.body;
  }
  std::atomic<int> ok{0}, refused{0}, other{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 6; ++t) {
    threads.emplace_back([&, t] {
      RequestInfo info;
      for (int i = 0; i < 40; ++i) {
        bool key = (i + t) % 2 == 0;
        Reply r = (*ep)->Handle(key ? get_key : query, info);
        if (key && r.http_status == 200 && r.body.find("GetMAKeyResponse") != std::string::npos) {
          ++ok;
        } else if (!key && r.http_status == 500 && r.log_outcome == "Unauthenticated") {
          ++refused;
        } else {
          ++other;
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(ok.load(), 120);
  EXPECT_EQ(refused.load(), 120);
  EXPECT_EQ(other.load(), 0);
}

// Every read is in the audit log, in the hash chain, whether its record is deferred (the
// default: the reply does not wait for the fsync) or durable; refusals of reads too.
TEST(MaService, EveryReadIsAuditedInTheChainDeferredOrDurable) {
  TempDir dir;
  MaFiles ma = MakeMaFiles(dir);
  FakeClockEnv env;
  for (const std::string mode : {"deferred", "durable"}) {
    SCOPED_TRACE(mode);
    Config cfg = BaseConfig(dir, ma, {ma.cert});
    cfg.vault_path = dir.File(mode + ".db");
    cfg.audit_reads = mode;
    auto vault = storage::SqliteVault::Open(cfg.vault_path);
    ASSERT_OK(vault);
    auto custody = LoadSoftwareMaKey(cfg.ma.key_id, cfg.ma.private_key, cfg.ma.certificate, &env);
    ASSERT_OK(custody);
    // Every read on record here, refused ones too: anonymous refusals (the Query without a
    // session) are limited per peer by default (audit_hygiene_test.cc tests that).
    MaServiceOptions options;
    options.anonymous_refusals.per_window = 1u << 20;
    auto ep = MakeMaService(cfg, &env, vault->get(), custody->get(), options);
    ASSERT_OK(ep);
    std::string get_key, info, query;
    {
      Client c(ep->get());
      _ma__GetMAKeyRequest k;
      _ma__GetMAKeyResponse kr;
      ASSERT_TRUE(c.Call([&](auto& p) { return Put(p.soap, &k, "ma:GetMAKeyRequest"); },
                         [&](auto& p) { return p.recv_GetMAKey(kr); })
                      .ok());
      get_key = c.body;
      _ma__GetMAServiceInfoRequest i;
      _ma__GetMAServiceInfoResponse ir;
      ASSERT_TRUE(c.Call([&](auto& p) { return Put(p.soap, &i, "ma:GetMAServiceInfoRequest"); },
                         [&](auto& p) { return p.recv_GetMAServiceInfo(ir); })
                      .ok());
      info = c.body;
      _ma__QueryRequest q;
      q.SessionToken = std::string(43, 'Q');
      q.PageSize = 5;
      _ma__QueryResponse qr;
      ASSERT_EQ(c.Call([&](auto& p) { return Put(p.soap, &q, "ma:QueryRequest"); },
                       [&](auto& p) { return p.recv_Query(qr); })
                    .code(),
                Code::kUnauthenticated);
      query = c.body;
    }
    ASSERT_TRUE((*vault)->FlushDeferredAudit().ok());
    storage::SqliteVaultStats before = (*vault)->GetStats();
    constexpr int kThreads = 6, kEach = 60;
    std::atomic<int> wrong{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        RequestInfo ri;
        ri.peer = "127.0.0.1:" + std::to_string(1000 + t);
        for (int i = 0; i < kEach; ++i) {
          int kind = (i + t) % 3;
          Reply r = (*ep)->Handle(kind == 0 ? get_key : kind == 1 ? info : query, ri);
          if (r.http_status != (kind == 2 ? 500u : 200u)) ++wrong;
        }
      });
    }
    for (auto& th : threads) th.join();
    EXPECT_EQ(wrong.load(), 0);
    ASSERT_TRUE((*vault)->FlushDeferredAudit().ok());
    auto count = [&](const std::string& action, const std::string& outcome) {
      storage::AuditFilter f;
      f.action = action;
      f.page_size = 1000;
      auto page = (*vault)->ListAudit(f);
      EXPECT_TRUE(page.has_value());
      int n = 0;
      for (const auto& r : page->records) n += r.event.outcome == outcome;
      return n;
    };
    // +1 each for the requests made above to capture the bodies.
    EXPECT_EQ(count("GetMAKey", "ok"), kThreads * kEach / 3 + 1);
    EXPECT_EQ(count("GetMAServiceInfo", "ok"), kThreads * kEach / 3 + 1);
    EXPECT_EQ(count("Query", "Unauthenticated"), kThreads * kEach / 3 + 1);
    ASSERT_TRUE((*vault)->VerifyAuditChain().ok());
    storage::SqliteVaultStats after = (*vault)->GetStats();
    uint64_t deferred = after.deferred_committed - before.deferred_committed;
    EXPECT_EQ(deferred, mode == "deferred" ? uint64_t{kThreads * kEach} : 0u);
    EXPECT_EQ(after.deferred_lost, 0u);
    ep->reset();  // before the vault it uses
  }
}

// ---------------------------------------------------------------------------------------
// With a TPM: every operation once over the wire, the whole path. The policy decisions
// behind each operation are tested on the domain functions (ma_operations_test.cc).

class MaServiceTpmTest : public MaPlatformTest {
 protected:
  void SetUp() override {
    MaPlatformTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    auto ep = MakeMaService(cfg_, &env_);
    ASSERT_OK(ep);
    ep_ = std::move(*ep);
  }
  std::unique_ptr<Endpoint> ep_;
};

TEST_F(MaServiceTpmTest, AuthenticateUploadQueryDownloadDelete) {
  Client c(ep_.get());
  _ma__GetMAKeyResponse key_resp;
  ASSERT_TRUE(GetMAKey(c, &key_resp).ok());
  const Bytes ma_public_bytes = FromBase64Binary(key_resp.Public);
  auto ma_public = tpm::Unmarshal<TPM2B_PUBLIC>(ma_public_bytes);
  ASSERT_OK(ma_public);
  auto ma_name = tpm::ComputeName(ma_public->publicArea);
  ASSERT_OK(ma_name);

  // --- Authenticate: EK + certificate from NV, AK, activation.
  auto ek = tpm_->CreateEk();
  ASSERT_OK(ek);
  auto ak_blob = tpm_->CreateAk(*ek, esys::KeyAlg::kRsa2048);
  ASSERT_OK(ak_blob);
  auto ak = tpm_->Load(*ek, *ak_blob);
  ASSERT_OK(ak);
  auto ak_pub = tpm::Marshal(ak_blob->public_area);
  ASSERT_OK(ak_pub);

  // Wrong-attribute "AK": the (unrestricted) package-signing key template.
  TPM2B_PUBLIC sign_tmpl = esys::ChildTemplate(esys::ChildType::kRsaSign, false);
  sign_tmpl.publicArea.objectAttributes |= TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT;
  auto bad_ak = tpm::Marshal(sign_tmpl);
  ASSERT_OK(bad_ak);
  Begun begun;
  EXPECT_CODE(Begin(c, *ek, *bad_ak, &begun), Code::kInvalidArgument);
  // Without the intermediate the chain does not reach the configured root.
  EXPECT_CODE(Begin(c, *ek, *ak_pub, &begun, false), Code::kUnauthenticated);

  ASSERT_TRUE(Begin(c, *ek, *ak_pub, &begun).ok()) << c.reply.body;
  auto secret = tpm_->ActivateCredential(*ak, *ek, begun.blob, begun.secret);
  ASSERT_OK(secret);
  ek->reset();  // swtpm holds three transient objects
  Bytes proof = Proof(*secret, begun.challenge_id);

  // The package-signing key, certified by the AK over the challenge nonce.
  auto srk = tpm_->GetOrCreateSrk(esys::KeyAlg::kRsa2048);
  ASSERT_OK(srk);
  auto sign_blob = tpm_->Create(*srk, sign_tmpl);
  ASSERT_OK(sign_blob);
  auto sign_obj = tpm_->Load(*srk, *sign_blob);
  ASSERT_OK(sign_obj);
  auto sign_info = tpm_->ReadPublic(*sign_obj);
  ASSERT_OK(sign_info);
  auto sign_cert = tpm_->Certify(*sign_obj, *ak, begun.nonce);
  ASSERT_OK(sign_cert);
  // A certification over another nonce is refused (and burns nothing we need: new Begin).
  {
    auto wrong = tpm_->Certify(*sign_obj, *ak, Bytes(32, 0x42));
    ASSERT_OK(wrong);
    ek = tpm_->CreateEk();
    ASSERT_OK(ek);
    Begun other;
    ASSERT_TRUE(Begin(c, *ek, *ak_pub, &other).ok());
    auto other_secret = tpm_->ActivateCredential(*ak, *ek, other.blob, other.secret);
    ASSERT_OK(other_secret);
    ek->reset();
    std::string tok, plat;
    EXPECT_CODE(Complete(c, other.challenge_id, Proof(*other_secret, other.challenge_id),
                         &*sign_info, &*wrong, &tok, &plat),
                Code::kInvalidArgument);
  }

  std::string token, platform;
  ASSERT_TRUE(
      Complete(c, begun.challenge_id, proof, &*sign_info, &*sign_cert, &token, &platform).ok())
      << c.reply.body;
  EXPECT_EQ(token.size(), 43u);
  std::string tok2, plat2;
  EXPECT_CODE(Complete(c, begun.challenge_id, proof, nullptr, nullptr, &tok2, &plat2),
              Code::kUnauthenticated);  // replayed challenge
  ak->reset();

  // --- Backup: MRK under the SRK, duplicated by the TPM to the MA key, TPM-signed package.
  auto mrk_blob = tpm_->CreateMrk(*srk, *ma_name, esys::KeyAlg::kRsa2048);
  ASSERT_OK(mrk_blob);
  esys::Duplicated dup;
  {
    auto mrk = tpm_->Load(*srk, *mrk_blob);
    ASSERT_OK(mrk);
    auto d = tpm_->Duplicate(*mrk, *ma_public, esys::InnerWrap::kTpmGenerated);
    ASSERT_OK(d);
    dup = std::move(*d);
  }
  schema::MigrationPackage model;
  model.package_id = *schema::NewUuid();
  model.source_platform_id = platform;
  model.creation_time = env_.NowUnixSeconds();
  model.mrk.public_area = *tpm::Marshal(mrk_blob->public_area);
  model.mrk.duplicate = *tpm::Marshal(dup.duplicate);
  model.mrk.encrypted_seed = *tpm::Marshal(dup.encrypted_seed);
  schema::RecoveryCodeCustody rc;
  rc.salt = Bytes(16, 7);
  rc.n = 32768;
  rc.r = 8;
  rc.p = 1;
  model.custody = rc;
  auto pkey = esys::MakeTpmSigningKey(*tpm_, std::move(*sign_obj));
  ASSERT_OK(pkey);
  auto signed_pkg = schema::SignPackage(model, pkey->get());
  ASSERT_OK(signed_pkg);
  schema::MigrationPackage foreign = model;  // claims another platform
  foreign.package_id = *schema::NewUuid();
  foreign.source_platform_id = std::string(68, 'a');
  auto foreign_pkg = schema::SignPackage(foreign, pkey->get());
  ASSERT_OK(foreign_pkg);
  pkey->reset();
  // The same content signed by a key the MA does not know for this platform.
  EvpPkeyPtr soft(EVP_EC_gen("P-256"));
  auto soft_pkg = schema::SignPackage(model, soft.get());
  ASSERT_OK(soft_pkg);

  EXPECT_CODE(Upload(c, std::string(43, 'x'), *signed_pkg, nullptr), Code::kUnauthenticated);
  EXPECT_CODE(Upload(c, token, *soft_pkg, nullptr), Code::kSignatureInvalid);
  EXPECT_CODE(Upload(c, token, *foreign_pkg, nullptr), Code::kPermissionDenied);
  Bytes tampered = *signed_pkg;
  const Bytes doctype = ToBytes("<!DOCTYPE x>");
  tampered.insert(tampered.begin() + 39, doctype.begin(), doctype.end());
  EXPECT_CODE(Upload(c, token, Bytes(tampered), nullptr), Code::kMalformed);
  bool already = true;
  ASSERT_TRUE(Upload(c, token, *signed_pkg, &already).ok()) << c.reply.body;
  EXPECT_FALSE(already);
  ASSERT_TRUE(Upload(c, token, *signed_pkg, &already).ok());
  EXPECT_TRUE(already);  // idempotent

  std::vector<std::string> ids;
  ASSERT_TRUE(Query(c, token, &ids).ok()) << c.reply.body;
  EXPECT_EQ(ids, std::vector<std::string>{model.package_id});

  // --- Restore on the same platform: SRK certified by the AK over the MA's nonce.
  auto srk_info = tpm_->ReadPublic(*srk);
  ASSERT_OK(srk_info);
  TPM2B_NAME srk_name{};
  srk_name.size = static_cast<uint16_t>(srk_info->name.size());
  std::copy(srk_info->name.begin(), srk_info->name.end(), srk_name.name);
  Bytes srk_name_bytes = *tpm::Marshal(srk_name);
  Bytes nonce;
  ASSERT_TRUE(Prepare(c, token, model.package_id, srk_name_bytes, &nonce).ok()) << c.reply.body;
  ek = tpm_->CreateEk();
  ASSERT_OK(ek);
  ak = tpm_->Load(*ek, *ak_blob);
  ASSERT_OK(ak);
  auto srk_cert = tpm_->Certify(*srk, *ak, nonce);
  ASSERT_OK(srk_cert);
  auto stale_cert = tpm_->Certify(*srk, *ak, Bytes(32, 9));
  ASSERT_OK(stale_cert);
  ak->reset();
  ek->reset();
  Downloaded got;
  // Certified over the wrong nonce: refused, and the nonce is burnt.
  EXPECT_CODE(
      CompleteDownload(c, token, model.package_id, nonce, srk_info->marshalled, *stale_cert, &got),
      Code::kInvalidArgument);
  EXPECT_CODE(
      CompleteDownload(c, token, model.package_id, nonce, srk_info->marshalled, *srk_cert, &got),
      Code::kUnauthenticated);
  ASSERT_TRUE(Prepare(c, token, model.package_id, srk_name_bytes, &nonce).ok());
  ek = tpm_->CreateEk();
  ASSERT_OK(ek);
  ak = tpm_->Load(*ek, *ak_blob);
  ASSERT_OK(ak);
  srk_cert = tpm_->Certify(*srk, *ak, nonce);
  ASSERT_OK(srk_cert);
  ak->reset();
  ek->reset();
  ASSERT_TRUE(
      CompleteDownload(c, token, model.package_id, nonce, srk_info->marshalled, *srk_cert, &got)
          .ok())
      << c.reply.body;
  EXPECT_EQ(got.document, *signed_pkg);
  // The key the MA verified the package with at Upload: what a new key store checks it with.
  EXPECT_EQ(got.signing_key_public, sign_info->marshalled);
  auto priv =
      tpm_->Import(*srk, mrk_blob->public_area, *tpm::Unmarshal<TPM2B_PRIVATE>(got.duplicate),
                   *tpm::Unmarshal<TPM2B_ENCRYPTED_SECRET>(got.seed), dup.inner_key);
  ASSERT_OK(priv);
  auto restored = tpm_->Load(*srk, esys::KeyBlob{mrk_blob->public_area, *priv});
  ASSERT_OK(restored);
  restored->reset();

  // --- Expired session, then Delete.
  env_.offset += cfg_.session_ttl_s + 1;
  EXPECT_CODE(Query(c, token, &ids), Code::kExpired);
  env_.offset = 0;
  ASSERT_TRUE(Delete(c, token, model.package_id).ok()) << c.reply.body;
  ASSERT_TRUE(Query(c, token, &ids).ok());
  EXPECT_TRUE(ids.empty());
  EXPECT_CODE(Delete(c, token, model.package_id), Code::kNotFound);
}

}  // namespace
}  // namespace tpmma::server
