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

#include "tpm/esys/esys.h"
#include "tpm/esys/tpm_pkey.h"
#include "common/env.h"
#include "schema/package_xml.h"
#include "server/ma_key.h"
#include "server/ma_service.h"
#include "soapMigrationAuthorityBindingProxy.h"
#include "storage/sqlite_vault.h"
#include "tests/support/status_testing.h"
#include "tests/support/swtpm.h"
#include "tests/support/testutil.h"
#include "tpm/escrow.h"
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

// Time the tests can move.
class FakeClockEnv : public EnvWrapper {
 public:
  FakeClockEnv() : EnvWrapper(Env::Default()) {}
  int64_t NowUnixSeconds() override { return target()->NowUnixSeconds() + offset; }
  int64_t offset = 0;
};

// A client as a stock one would be: the generated proxy writes the request envelope, the
// reply is read back through it. SOAP_ENC_PLAIN: no HTTP on either side.
class Client {
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

// An MA key and certificate made with the openssl CLI, as an operator might.
struct MaFiles {
  std::string key, cert;
};
MaFiles MakeMaFiles(const TempDir& dir) {
  MaFiles f{dir.File("ma.key"), dir.File("ma.crt")};
  auto r = RunCommand({"openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f.key,
                       "-out", f.cert, "-subj", "/CN=tpm-ma test MA", "-days", "30"});
  EXPECT_EQ(r.exit_code, 0) << r.output;
  ::chmod(f.key.c_str(), 0600);
  return f;
}

Config BaseConfig(const TempDir& dir, const MaFiles& ma, std::vector<std::string> roots) {
  Config cfg;
  cfg.ma.key_id = "ma-test";
  cfg.ma.private_key = ma.key;
  cfg.ma.certificate = ma.cert;
  cfg.vault_path = dir.File("vault.db");
  cfg.ek_roots = std::move(roots);
  cfg.max_body_bytes = 1 << 20;
  cfg.max_package_bytes = 512 * 1024;
  return cfg;
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
    auto ep = MakeMaService(cfg, &env, vault->get(), custody->get());
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
// With a TPM: the whole path.

Bytes Tpm2bAttest(const Bytes& body) {
  Bytes out = {static_cast<uint8_t>(body.size() >> 8), static_cast<uint8_t>(body.size())};
  out.insert(out.end(), body.begin(), body.end());
  return out;
}

Bytes Proof(ByteView secret, ByteView challenge_id) {
  Bytes out(32);
  unsigned int len = 0;
  HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()), challenge_id.data(),
       challenge_id.size(), out.data(), &len);
  return out;
}

struct Downloaded {
  Bytes document, duplicate, seed;
  Bytes escrowed_inner_key;  // marshalled TPM2B_DATA, when the MA released it
  Bytes signing_key_public;  // TPM2B_PUBLIC the MA verified the package with
};

class MaServiceTpmTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    t_ = testing::SharedSwtpm(0, &why);
    if (t_ == nullptr) GTEST_SKIP() << why;
    ma_ = MakeMaFiles(dir_);
    cfg_ = BaseConfig(dir_, ma_, {t_->RootCaCertPath()});
    auto ep = MakeMaService(cfg_, &env_);
    ASSERT_OK(ep);
    ep_ = std::move(*ep);
    auto tpm = esys::Tpm::Open(t_->tcti());
    ASSERT_OK(tpm);
    tpm_ = std::move(*tpm);
    cur_ = tpm_.get();
    intermediate_ = testing::PemCertificateFileToDer(t_->IntermediateCaCertPath());
    ASSERT_FALSE(intermediate_.empty());
    cur_intermediate_ = intermediate_;
  }

  struct Begun {
    Bytes challenge_id, nonce;
    TPM2B_ID_OBJECT blob{};
    TPM2B_ENCRYPTED_SECRET secret{};
  };

  Status Begin(Client& c, const esys::Object& ek, const Bytes& ak_public, Begun* out,
               bool with_intermediate = true) {
    auto ek_pub = cur_->ReadPublic(ek);
    auto cert = cur_->ReadEkCertificate();
    if (!ek_pub || !cert) return Status(Code::kInternal, "EK");
    _ma__AuthenticateRequest req;
    req.__union_AuthenticateRequest = SOAP_UNION__ma__union_AuthenticateRequest_Begin;
    _ma__AuthenticateResponse resp;
    Status s = c.Call(
        [&](auto& p) {
          auto* b = soap_new_ma__AuthenticateBegin(p.soap);
          req.union_AuthenticateRequest.Begin = b;
          b->EKPublic = ToBase64Binary(p.soap, ek_pub->marshalled);
          b->EKCertificate = ToBase64Binary(p.soap, *cert);
          if (with_intermediate) {
            b->EKIntermediateCertificate.push_back(ToBase64Binary(p.soap, cur_intermediate_));
          }
          b->AKPublic = ToBase64Binary(p.soap, ak_public);
          return Put(p.soap, &req, "ma:AuthenticateRequest");
        },
        [&](auto& p) { return p.recv_Authenticate(resp); });
    if (!s.ok()) return s;
    auto* ch = resp.union_AuthenticateResponse.Challenge;
    out->challenge_id = FromBase64Binary(ch->ChallengeId);
    out->nonce = FromBase64Binary(ch->Nonce);
    out->blob = *tpm::Unmarshal<TPM2B_ID_OBJECT>(FromBase64Binary(ch->CredentialBlob));
    out->secret = *tpm::Unmarshal<TPM2B_ENCRYPTED_SECRET>(FromBase64Binary(ch->EncryptedSecret));
    return Status::Ok();
  }

  Status Complete(Client& c, const Bytes& challenge_id, const Bytes& proof,
                  const esys::PublicInfo* signing, const esys::Attestation* cert,
                  std::string* token, std::string* platform) {
    _ma__AuthenticateRequest req;
    req.__union_AuthenticateRequest = SOAP_UNION__ma__union_AuthenticateRequest_Complete;
    _ma__AuthenticateResponse resp;
    Status s = c.Call(
        [&](auto& p) {
          auto* m = soap_new_ma__AuthenticateComplete(p.soap);
          req.union_AuthenticateRequest.Complete = m;
          m->ChallengeId = ToBase64Binary(p.soap, challenge_id);
          m->Proof = ToBase64Binary(p.soap, proof);
          if (signing != nullptr) {
            m->PackageSigningKey = soap_new_ma__PackageSigningKey(p.soap);
            m->PackageSigningKey->Public = ToBase64Binary(p.soap, signing->marshalled);
            m->PackageSigningKey->CertifyInfo = ToBase64Binary(p.soap, Tpm2bAttest(cert->attest));
            m->PackageSigningKey->CertifySignature = ToBase64Binary(p.soap, cert->signature);
          }
          return Put(p.soap, &req, "ma:AuthenticateRequest");
        },
        [&](auto& p) { return p.recv_Authenticate(resp); });
    if (s.ok()) {
      *token = resp.union_AuthenticateResponse.Session->SessionToken;
      *platform = resp.union_AuthenticateResponse.Session->PlatformId;
    }
    return s;
  }

  Status Upload(Client& c, const std::string& token, const Bytes& pkg, bool* already) {
    _ma__UploadRequest req;
    _ma__UploadResponse resp;
    Status s = c.Call(
        [&](auto& p) {
          req.SessionToken = token;
          req.Package = ToBase64Binary(p.soap, pkg);
          return Put(p.soap, &req, "ma:UploadRequest");
        },
        [&](auto& p) { return p.recv_Upload(resp); });
    if (s.ok() && already != nullptr) *already = resp.AlreadyStored;
    return s;
  }

  Status Query(Client& c, const std::string& token, std::vector<std::string>* ids) {
    _ma__QueryRequest req;
    req.SessionToken = token;
    req.PageSize = 100;
    _ma__QueryResponse resp;
    Status s = c.Call([&](auto& p) { return Put(p.soap, &req, "ma:QueryRequest"); },
                      [&](auto& p) { return p.recv_Query(resp); });
    ids->clear();
    last_key_counts_.clear();
    for (auto* d : resp.PackageDescriptor) {
      ids->push_back(d->PackageId);
      last_key_counts_.push_back(d->KeyCount);
    }
    return s;
  }

  Status Delete(Client& c, const std::string& token, const std::string& id) {
    _ma__DeleteRequest req;
    req.SessionToken = token;
    req.PackageId = id;
    _ma__DeleteResponse resp;
    return c.Call([&](auto& p) { return Put(p.soap, &req, "ma:DeleteRequest"); },
                  [&](auto& p) { return p.recv_Delete(resp); });
  }

  Status Prepare(Client& c, const std::string& token, const std::string& id, const Bytes& name,
                 Bytes* nonce) {
    _ma__DownloadRequest req;
    req.SessionToken = token;
    req.PackageId = id;
    req.__union_DownloadRequest = SOAP_UNION__ma__union_DownloadRequest_Prepare;
    _ma__DownloadResponse resp;
    Status s = c.Call(
        [&](auto& p) {
          auto* prep = soap_new_ma__DownloadPrepare(p.soap);
          req.union_DownloadRequest.Prepare = prep;
          prep->DestinationParentName = ToBase64Binary(p.soap, name);
          return Put(p.soap, &req, "ma:DownloadRequest");
        },
        [&](auto& p) { return p.recv_Download(resp); });
    if (s.ok()) *nonce = FromBase64Binary(resp.union_DownloadResponse.Prepared->Nonce);
    return s;
  }

  Status CompleteDownload(Client& c, const std::string& token, const std::string& id,
                          const Bytes& nonce, const Bytes& parent_public,
                          const esys::Attestation& cert, Downloaded* out) {
    _ma__DownloadRequest req;
    req.SessionToken = token;
    req.PackageId = id;
    req.__union_DownloadRequest = SOAP_UNION__ma__union_DownloadRequest_Complete;
    _ma__DownloadResponse resp;
    Status s = c.Call(
        [&](auto& p) {
          auto* comp = soap_new_ma__DownloadComplete(p.soap);
          req.union_DownloadRequest.Complete = comp;
          comp->Nonce = ToBase64Binary(p.soap, nonce);
          comp->DestinationParentPublic = ToBase64Binary(p.soap, parent_public);
          comp->CertifyInfo = ToBase64Binary(p.soap, Tpm2bAttest(cert.attest));
          comp->CertifySignature = ToBase64Binary(p.soap, cert.signature);
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

  TempDir dir_;
  Swtpm* t_ = nullptr;
  MaFiles ma_;
  Config cfg_;
  FakeClockEnv env_;
  std::unique_ptr<Endpoint> ep_;
  std::unique_ptr<esys::Tpm> tpm_;
  esys::Tpm* cur_ = nullptr;  // the TPM Begin reads the EK certificate from
  Bytes intermediate_;
  Bytes cur_intermediate_;
  std::vector<unsigned> last_key_counts_;  // KeyCount of each descriptor of the last Query

  // ---- helpers for tests with several platforms

  struct Plat {
    esys::Tpm* tpm = nullptr;
    std::unique_ptr<esys::Tpm> owned;
    Bytes intermediate;
    esys::KeyBlob ak_blob;
    Bytes ak_pub;
    esys::Object srk;
    esys::PublicInfo srk_info;
    Bytes srk_name;  // TPM2B_NAME
    EvpPkeyPtr signer;
    std::string token, id;
  };

  void OpenPlat(Swtpm* sw, Plat* p) {
    if (sw == t_) {
      p->tpm = tpm_.get();  // swtpm serves one connection at a time: share the fixture's
    } else {
      auto tpm = esys::Tpm::Open(sw->tcti());
      ASSERT_OK(tpm);
      p->owned = std::move(*tpm);
      p->tpm = p->owned.get();
    }
    p->intermediate = testing::PemCertificateFileToDer(sw->IntermediateCaCertPath());
    auto srk = p->tpm->GetOrCreateSrk(esys::KeyAlg::kRsa2048);
    ASSERT_OK(srk);
    p->srk = std::move(*srk);
    auto info = p->tpm->ReadPublic(p->srk);
    ASSERT_OK(info);
    p->srk_info = *info;
    TPM2B_NAME n{};
    n.size = static_cast<uint16_t>(info->name.size());
    std::copy(info->name.begin(), info->name.end(), n.name);
    p->srk_name = *tpm::Marshal(n);
  }

  static TPM2B_PUBLIC SigningTemplate() {
    TPM2B_PUBLIC t = esys::ChildTemplate(esys::ChildType::kRsaSign, false);
    t.publicArea.objectAttributes |= TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT;
    return t;
  }

  // Authenticate; with_key: certify a fresh package-signing key over the nonce.
  void AuthenticatePlat(Client& c, Plat& p, bool with_key) {
    cur_ = p.tpm;
    cur_intermediate_ = p.intermediate;
    p.signer.reset();  // frees its TPM slot
    auto ek = p.tpm->CreateEk();
    ASSERT_OK(ek);
    if (p.ak_pub.empty()) {
      auto blob = p.tpm->CreateAk(*ek, esys::KeyAlg::kRsa2048);
      ASSERT_OK(blob);
      p.ak_blob = *blob;
      p.ak_pub = *tpm::Marshal(blob->public_area);
    }
    auto ak = p.tpm->Load(*ek, p.ak_blob);
    ASSERT_OK(ak);
    Begun b;
    Status s = Begin(c, *ek, p.ak_pub, &b);
    ASSERT_TRUE(s.ok()) << s.ToString();
    auto secret = p.tpm->ActivateCredential(*ak, *ek, b.blob, b.secret);
    ASSERT_OK(secret);
    ek->reset();
    std::optional<esys::PublicInfo> info;
    std::optional<esys::Attestation> cert;
    if (with_key) {
      auto blob = p.tpm->Create(p.srk, SigningTemplate());
      ASSERT_OK(blob);
      auto obj = p.tpm->Load(p.srk, *blob);
      ASSERT_OK(obj);
      auto i = p.tpm->ReadPublic(*obj);
      ASSERT_OK(i);
      info = *i;
      auto ce = p.tpm->Certify(*obj, *ak, b.nonce);
      ASSERT_OK(ce);
      cert = *ce;
      ak->reset();
      auto pkey = esys::MakeTpmSigningKey(*p.tpm, std::move(*obj));
      ASSERT_OK(pkey);
      p.signer = std::move(*pkey);
    }
    ak->reset();
    s = Complete(c, b.challenge_id, Proof(*secret, b.challenge_id), info ? &*info : nullptr,
                 cert ? &*cert : nullptr, &p.token, &p.id);
    ASSERT_TRUE(s.ok()) << s.ToString();
  }

  struct Made {
    package::MigrationPackage model;
    Bytes bytes;
    esys::KeyBlob mrk;
    SecureBytes inner_key;
  };

  // A real backup: MRK duplicated by the TPM to the MA key, package signed in the TPM.
  // With `escrow_public`, the inner key is escrowed to it (else recovery-code custody).
  void MakePackage(Plat& p, const TPM2B_PUBLIC& ma_public, const Bytes& ma_name, Made* out,
                   const TPM2B_PUBLIC* escrow_public = nullptr,
                   const std::string& escrow_key_id = "escrow-test") {
    auto mrk_blob = p.tpm->CreateMrk(p.srk, ma_name, esys::KeyAlg::kRsa2048);
    ASSERT_OK(mrk_blob);
    out->mrk = *mrk_blob;
    auto mrk = p.tpm->Load(p.srk, *mrk_blob);
    ASSERT_OK(mrk);
    auto d = p.tpm->Duplicate(*mrk, ma_public, esys::InnerWrap::kTpmGenerated);
    ASSERT_OK(d);
    mrk->reset();
    out->inner_key = d->inner_key;
    out->model.package_id = *package::NewUuid();
    out->model.source_platform_id = p.id;
    out->model.creation_time = env_.NowUnixSeconds();
    out->model.mrk.public_area = *tpm::Marshal(mrk_blob->public_area);
    out->model.mrk.duplicate = *tpm::Marshal(d->duplicate);
    out->model.mrk.encrypted_seed = *tpm::Marshal(d->encrypted_seed);
    package::RecoveryCodeCustody rc;
    rc.salt = Bytes(16, 7);
    rc.n = 32768;
    rc.r = 8;
    rc.p = 1;
    out->model.custody = rc;
    if (escrow_public != nullptr) {
      auto mrk_name = tpm::ComputeName(mrk_blob->public_area.publicArea);
      ASSERT_OK(mrk_name);
      auto ct = tpm::EscrowEncrypt(escrow_public->publicArea, d->inner_key, p.id, *mrk_name);
      ASSERT_OK(ct);
      out->model.custody =
          package::EscrowCustody{escrow_key_id, package::EscrowAlgorithm::kRsaOaepSha256, *ct};
    }
    package::ChildKey child;
    child.key_id = *package::NewUuid();
    child.label = "VPN key";
    child.usage = package::KeyUsage::kSign;
    child.public_area = out->model.mrk.public_area;  // any TPM2B blobs do for the MA
    child.private_area = out->model.mrk.duplicate;
    out->model.child_keys.push_back(child);
    auto bytes = package::SignPackage(out->model, p.signer.get());
    ASSERT_OK(bytes);
    out->bytes = *bytes;
  }

  // Prepare, certify the SRK by the AK over the nonce, Complete.
  Status DownloadTo(Client& c, Plat& p, const std::string& id, Downloaded* out,
                    Plat* certifier = nullptr) {
    Bytes nonce;
    Plat& cp = certifier != nullptr ? *certifier : p;
    Status s = Prepare(c, p.token, id, cp.srk_name, &nonce);
    if (!s.ok()) return s;
    // EK + AK + the persistent SRK (loaded by the TPM while in use) fill swtpm's three
    // object slots: the signer has to go.
    cp.signer.reset();
    auto ek = cp.tpm->CreateEk();
    if (!ek) return ek.error();
    auto ak = cp.tpm->Load(*ek, cp.ak_blob);
    if (!ak) return ak.error();
    auto cert = cp.tpm->Certify(cp.srk, *ak, nonce);
    if (!cert) return cert.error();
    ak->reset();
    ek->reset();
    return CompleteDownload(c, p.token, id, nonce, cp.srk_info.marshalled, *cert, out);
  }
};

#define EXPECT_CODE(expr, code_)                                   \
  do {                                                             \
    Status s_ = (expr);                                            \
    EXPECT_EQ(s_.code(), code_) << #expr << ": " << s_.ToString(); \
  } while (0)

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
  package::MigrationPackage model;
  model.package_id = *package::NewUuid();
  model.source_platform_id = platform;
  model.creation_time = env_.NowUnixSeconds();
  model.mrk.public_area = *tpm::Marshal(mrk_blob->public_area);
  model.mrk.duplicate = *tpm::Marshal(dup.duplicate);
  model.mrk.encrypted_seed = *tpm::Marshal(dup.encrypted_seed);
  package::RecoveryCodeCustody rc;
  rc.salt = Bytes(16, 7);
  rc.n = 32768;
  rc.r = 8;
  rc.p = 1;
  model.custody = rc;
  auto pkey = esys::MakeTpmSigningKey(*tpm_, std::move(*sign_obj));
  ASSERT_OK(pkey);
  auto signed_pkg = package::SignPackage(model, pkey->get());
  ASSERT_OK(signed_pkg);
  package::MigrationPackage foreign = model;  // claims another platform
  foreign.package_id = *package::NewUuid();
  foreign.source_platform_id = std::string(68, 'a');
  auto foreign_pkg = package::SignPackage(foreign, pkey->get());
  ASSERT_OK(foreign_pkg);
  pkey->reset();
  // The same content signed by a key the MA does not know for this platform.
  EvpPkeyPtr soft(EVP_EC_gen("P-256"));
  auto soft_pkg = package::SignPackage(model, soft.get());
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

TEST_F(MaServiceTpmTest, ExpiredChallengeIsRefused) {
  Client c(ep_.get());
  Plat p;
  ASSERT_NO_FATAL_FAILURE(OpenPlat(t_, &p));
  auto ek = tpm_->CreateEk();
  ASSERT_OK(ek);
  auto ak_blob = tpm_->CreateAk(*ek, esys::KeyAlg::kRsa2048);
  ASSERT_OK(ak_blob);
  auto ak = tpm_->Load(*ek, *ak_blob);
  ASSERT_OK(ak);
  Begun b;
  ASSERT_TRUE(Begin(c, *ek, *tpm::Marshal(ak_blob->public_area), &b).ok());
  auto secret = tpm_->ActivateCredential(*ak, *ek, b.blob, b.secret);
  ASSERT_OK(secret);
  env_.offset += cfg_.challenge_ttl_s;
  std::string token, platform;
  EXPECT_CODE(Complete(c, b.challenge_id, Proof(*secret, b.challenge_id), nullptr, nullptr, &token,
                       &platform),
              Code::kExpired);
  env_.offset = 0;
  // Burnt: even in time, the same challenge does not work again.
  EXPECT_CODE(Complete(c, b.challenge_id, Proof(*secret, b.challenge_id), nullptr, nullptr, &token,
                       &platform),
              Code::kUnauthenticated);
}

TEST_F(MaServiceTpmTest, EkFromAnUnknownRootIsRefused) {
  // Roots = the MA's own certificate: a well-formed chain that ends nowhere we trust.
  TempDir d;
  Config cfg = cfg_;
  cfg.vault_path = d.File("v.db");
  cfg.ek_roots = {ma_.cert};
  auto ep = MakeMaService(cfg, &env_);
  ASSERT_OK(ep);
  Client c(ep->get());
  auto ek = tpm_->CreateEk();
  ASSERT_OK(ek);
  Plat p;
  ASSERT_NO_FATAL_FAILURE(OpenPlat(t_, &p));
  auto ak = tpm_->CreateAk(*ek, esys::KeyAlg::kRsa2048);
  ASSERT_OK(ak);
  Begun b;
  Status s = Begin(c, *ek, *tpm::Marshal(ak->public_area), &b);
  EXPECT_EQ(s.code(), Code::kUnauthenticated) << s.ToString();
  EXPECT_NE(s.message().find("EK certificate not trusted"), std::string::npos) << s.message();
}

// A verified EK chain is remembered for exactly its bytes (EK public included) and only
// while every certificate in it is valid.
TEST_F(MaServiceTpmTest, RememberedEkChainsHoldOnlyForTheirBytesAndValidity) {
  Client c(ep_.get());
  auto ek = tpm_->CreateEk();
  ASSERT_OK(ek);
  auto ak_blob = tpm_->CreateAk(*ek, esys::KeyAlg::kRsa2048);
  ASSERT_OK(ak_blob);
  Bytes ak_pub = *tpm::Marshal(ak_blob->public_area);
  Begun b;
  ASSERT_TRUE(Begin(c, *ek, ak_pub, &b).ok()) << c.reply.body;
  ASSERT_TRUE(Begin(c, *ek, ak_pub, &b).ok()) << c.reply.body;  // from the cache
  // The same certificate and intermediate with another key as "EK": refused.
  auto srk = tpm_->GetOrCreateSrk(esys::KeyAlg::kRsa2048);
  ASSERT_OK(srk);
  Status other = Begin(c, *srk, ak_pub, &b);
  EXPECT_EQ(other.code(), Code::kUnauthenticated) << other.ToString();
  EXPECT_NE(other.message().find("does not certify"), std::string::npos) << other.message();
  // Before the certificates' validity: refused although the bytes were verified before.
  env_.offset = -20LL * 365 * 86400;
  Status early = Begin(c, *ek, ak_pub, &b);
  EXPECT_EQ(early.code(), Code::kUnauthenticated) << early.ToString();
  env_.offset = 0;
  ASSERT_TRUE(Begin(c, *ek, ak_pub, &b).ok());
}

// auth.max_pending_challenges: beyond it the oldest Begin is forgotten (its Complete is
// refused), the newer ones complete.
TEST_F(MaServiceTpmTest, PendingBeginsAreCapped) {
  TempDir d;
  Config cfg = cfg_;
  cfg.vault_path = d.File("v.db");
  cfg.max_pending_challenges = 1;
  auto ep = MakeMaService(cfg, &env_);
  ASSERT_OK(ep);
  Client c(ep->get());
  auto ek = tpm_->CreateEk();
  ASSERT_OK(ek);
  auto ak_blob = tpm_->CreateAk(*ek, esys::KeyAlg::kRsa2048);
  ASSERT_OK(ak_blob);
  auto ak = tpm_->Load(*ek, *ak_blob);
  ASSERT_OK(ak);
  Bytes ak_pub = *tpm::Marshal(ak_blob->public_area);
  Begun first, second;
  ASSERT_TRUE(Begin(c, *ek, ak_pub, &first).ok());
  ASSERT_TRUE(Begin(c, *ek, ak_pub, &second).ok());
  auto s1 = tpm_->ActivateCredential(*ak, *ek, first.blob, first.secret);
  ASSERT_OK(s1);
  auto s2 = tpm_->ActivateCredential(*ak, *ek, second.blob, second.secret);
  ASSERT_OK(s2);
  std::string token, platform;
  EXPECT_CODE(Complete(c, first.challenge_id, Proof(*s1, first.challenge_id), nullptr, nullptr,
                       &token, &platform),
              Code::kUnauthenticated);
  EXPECT_TRUE(Complete(c, second.challenge_id, Proof(*s2, second.challenge_id), nullptr, nullptr,
                       &token, &platform)
                  .ok())
      << c.reply.body;
}

TEST_F(MaServiceTpmTest, PlatformsSeeOnlyTheirOwnOrApprovedPackages) {
  std::string why;
  Swtpm* tb = testing::SharedSwtpm(1, &why);
  ASSERT_NE(tb, nullptr) << why;
  TempDir d;
  auto vault = storage::SqliteVault::Open(d.File("v.db"));
  ASSERT_OK(vault);
  auto custody = LoadSoftwareMaKey("ma-test", ma_.key, ma_.cert, &env_);
  ASSERT_OK(custody);
  Config cfg = cfg_;
  cfg.ek_roots = {t_->RootCaCertPath(), tb->RootCaCertPath()};
  auto ep = MakeMaService(cfg, &env_, vault->get(), custody->get());
  ASSERT_OK(ep);
  Client c(ep->get());
  const TPM2B_PUBLIC& ma_public = (*custody)->public_area();
  const Bytes& ma_name = (*custody)->name();

  Plat a, b;
  ASSERT_NO_FATAL_FAILURE(OpenPlat(t_, &a));
  ASSERT_NO_FATAL_FAILURE(OpenPlat(tb, &b));
  ASSERT_NO_FATAL_FAILURE(AuthenticatePlat(c, a, true));
  ASSERT_NO_FATAL_FAILURE(AuthenticatePlat(c, b, false));
  ASSERT_NE(a.id, b.id);

  Made pa;
  ASSERT_NO_FATAL_FAILURE(MakePackage(a, ma_public, ma_name, &pa));
  ASSERT_TRUE(Upload(c, a.token, pa.bytes, nullptr).ok()) << c.reply.body;
  // Same id, other bytes.
  {
    package::MigrationPackage changed = pa.model;
    changed.creation_time += 1;
    auto other = package::SignPackage(changed, a.signer.get());
    ASSERT_OK(other);
    EXPECT_CODE(Upload(c, a.token, *other, nullptr), Code::kConflict);
  }
  // An MRK whose policy does not name the MA key is refused before it is vaulted.
  {
    package::MigrationPackage wrong = pa.model;
    wrong.package_id = *package::NewUuid();
    auto mrk = a.tpm->CreateMrk(a.srk, a.srk_info.name, esys::KeyAlg::kRsa2048);
    ASSERT_OK(mrk);
    wrong.mrk.public_area = *tpm::Marshal(mrk->public_area);
    auto bytes = package::SignPackage(wrong, a.signer.get());
    ASSERT_OK(bytes);
    Status s = Upload(c, a.token, *bytes, nullptr);
    EXPECT_EQ(s.code(), Code::kInvalidArgument) << s.ToString();
    EXPECT_NE(s.message().find("PolicyDuplicationSelect"), std::string::npos) << s.message();
  }

  // B has no certified signing key yet: it cannot upload at all (checked before the
  // signature, so any signer will do for the attempt).
  {
    package::MigrationPackage mine = pa.model;
    mine.package_id = *package::NewUuid();
    mine.source_platform_id = b.id;
    auto bytes = package::SignPackage(mine, a.signer.get());
    ASSERT_OK(bytes);
    Status s = Upload(c, b.token, *bytes, nullptr);
    EXPECT_EQ(s.code(), Code::kPermissionDenied) << s.ToString();
    EXPECT_NE(s.message().find("no certified package-signing key"), std::string::npos)
        << s.message();
  }
  ASSERT_NO_FATAL_FAILURE(AuthenticatePlat(c, b, true));
  Made pb;
  ASSERT_NO_FATAL_FAILURE(AuthenticatePlat(c, b, true));  // DownloadTo dropped B's signer
  ASSERT_NO_FATAL_FAILURE(MakePackage(b, ma_public, ma_name, &pb));
  ASSERT_TRUE(Upload(c, b.token, pb.bytes, nullptr).ok()) << c.reply.body;
  // A's package under B's session: the source platform is not the session's.
  EXPECT_CODE(Upload(c, b.token, pa.bytes, nullptr), Code::kPermissionDenied);

  std::vector<std::string> ids;
  ASSERT_TRUE(Query(c, b.token, &ids).ok());
  // KeyCount comes from the vault's count (the keys themselves are not read for a Query).
  EXPECT_EQ(last_key_counts_, std::vector<unsigned>(ids.size(), 1u));
  EXPECT_EQ(std::count(ids.begin(), ids.end(), pa.model.package_id), 0);
  EXPECT_CODE(Delete(c, b.token, pa.model.package_id), Code::kPermissionDenied);
  Downloaded got;
  {
    Bytes nonce;
    Status s = Prepare(c, b.token, pa.model.package_id, b.srk_name, &nonce);
    EXPECT_EQ(s.code(), Code::kPermissionDenied) << s.ToString();
    EXPECT_NE(s.message().find("helpdesk approval"), std::string::npos) << s.message();
  }

  // A's SRK certified by A's AK, presented in B's session: not B's TPM.
  EXPECT_CODE(DownloadTo(c, b, pb.model.package_id, &got, &a), Code::kSignatureInvalid);
  // B's SRK public sent for a nonce bound to another parent Name.
  {
    Bytes nonce;
    ASSERT_TRUE(Prepare(c, b.token, pb.model.package_id, a.srk_name, &nonce).ok());
    b.signer.reset();
    auto ek = b.tpm->CreateEk();
    ASSERT_OK(ek);
    auto ak = b.tpm->Load(*ek, b.ak_blob);
    ASSERT_OK(ak);
    auto cert = b.tpm->Certify(b.srk, *ak, nonce);
    ASSERT_OK(cert);
    ak->reset();
    ek->reset();
    EXPECT_CODE(CompleteDownload(c, b.token, pb.model.package_id, nonce, b.srk_info.marshalled,
                                 *cert, &got),
                Code::kUnauthenticated);
  }

  // A helpdesk approval (made directly in the vault until the operator flow exists) lets
  // B see and restore A's package: the motherboard swap, on two real TPMs.
  storage::ApprovalRequest r;
  r.old_platform_id = a.id;
  r.new_platform_id = b.id;
  r.reason = "test swap";
  r.created_by = "helpdesk1";
  r.created_at = env_.NowUnixSeconds();
  r.expires_at = r.created_at + 3600;
  ASSERT_OK((*vault)->CreateApproval(
      r, storage::AuditEvent{r.created_at, "operator:helpdesk1", "ApproveRestore", "", "ok", ""}));
  ASSERT_TRUE(Query(c, b.token, &ids).ok());
  EXPECT_EQ(std::count(ids.begin(), ids.end(), pa.model.package_id), 1);
  Status s = DownloadTo(c, b, pa.model.package_id, &got);
  ASSERT_TRUE(s.ok()) << s.ToString();
  auto priv =
      b.tpm->Import(b.srk, pa.mrk.public_area, *tpm::Unmarshal<TPM2B_PRIVATE>(got.duplicate),
                    *tpm::Unmarshal<TPM2B_ENCRYPTED_SECRET>(got.seed), pa.inner_key);
  ASSERT_OK(priv);
  auto restored = b.tpm->Load(b.srk, esys::KeyBlob{pa.mrk.public_area, *priv});
  ASSERT_OK(restored);
  restored->reset();
  // Still only A may delete it.
  EXPECT_CODE(Delete(c, b.token, pa.model.package_id), Code::kPermissionDenied);
  ASSERT_TRUE(Delete(c, a.token, pa.model.package_id).ok());

  // The audit log: every call, refusals included; never a session token.
  storage::AuditFilter f;
  f.page_size = 1000;
  auto audit = (*vault)->ListAudit(f);
  ASSERT_OK(audit);
  std::map<std::string, int> seen;
  for (const auto& rec : audit->records) {
    seen[rec.event.action + "/" + rec.event.outcome]++;
    for (const std::string* tok : {&a.token, &b.token}) {
      EXPECT_EQ(rec.event.detail.find(*tok), std::string::npos);
      EXPECT_EQ(rec.event.object.find(*tok), std::string::npos);
    }
  }
  EXPECT_GE(seen["Upload/ok"], 2);
  EXPECT_GE(seen["Upload/Conflict"], 1);
  EXPECT_GE(seen["Upload/PermissionDenied"], 1);
  EXPECT_GE(seen["Delete/PermissionDenied"], 2);
  EXPECT_GE(seen["Download.Prepare/PermissionDenied"], 1);
  EXPECT_GE(seen["Download.Complete/ok"], 1);
  EXPECT_GE(seen["Authenticate.Complete/ok"], 3);
  Status chain = (*vault)->VerifyAuditChain();
  EXPECT_TRUE(chain.ok()) << chain.ToString();
}

// Escrow custody (DESIGN 4.4): the MA checks an escrow blob at Upload, and releases the
// inner key only with a Download under a helpdesk approval; expired approvals release
// nothing. Two real TPMs: A backs up, B is the new board; then A after a TPM clear.
TEST_F(MaServiceTpmTest, EscrowedInnerKeyIsReleasedOnlyUnderAnApproval) {
  std::string why;
  Swtpm* tb = testing::SharedSwtpm(1, &why);
  ASSERT_NE(tb, nullptr) << why;
  TempDir d;
  // The escrow key: its own file, made like the MA key (openssl CLI).
  const std::string ekey = d.File("escrow.key"), ecert = d.File("escrow.crt");
  auto made = RunCommand({"openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                          ekey, "-out", ecert, "-subj", "/CN=tpm-ma test escrow", "-days", "30"});
  ASSERT_EQ(made.exit_code, 0) << made.output;
  ::chmod(ekey.c_str(), 0600);
  auto vault = storage::SqliteVault::Open(d.File("v.db"));
  ASSERT_OK(vault);
  auto custody = LoadSoftwareMaKey("ma-test", ma_.key, ma_.cert, &env_);
  ASSERT_OK(custody);
  Config cfg = cfg_;
  cfg.ek_roots = {t_->RootCaCertPath(), tb->RootCaCertPath()};
  cfg.escrow.custody = "software";
  cfg.escrow.key_id = "escrow-test";
  cfg.escrow.private_key = ekey;
  cfg.escrow.certificate = ecert;
  auto ep = MakeMaService(cfg, &env_, vault->get(), custody->get());
  ASSERT_OK(ep);
  Client c(ep->get());
  const TPM2B_PUBLIC& ma_public = (*custody)->public_area();
  const Bytes& ma_name = (*custody)->name();

  // GetMAKey publishes the escrow key by id; it is a plain RSA decryption key.
  TPM2B_PUBLIC escrow_public{};
  {
    _ma__GetMAKeyRequest req;
    std::string id = "escrow-test";
    req.KeyId = &id;
    _ma__GetMAKeyResponse resp;
    Status s = c.Call([&](auto& p) { return Put(p.soap, &req, "ma:GetMAKeyRequest"); },
                      [&](auto& p) { return p.recv_GetMAKey(resp); });
    ASSERT_TRUE(s.ok()) << s.ToString();
    EXPECT_EQ(resp.KeyId, "escrow-test");
    auto pub = tpm::Unmarshal<TPM2B_PUBLIC>(FromBase64Binary(resp.Public));
    ASSERT_OK(pub);
    EXPECT_TRUE(tpm::CheckEscrowKey(pub->publicArea).ok());
    escrow_public = *pub;
  }

  Plat a, b;
  ASSERT_NO_FATAL_FAILURE(OpenPlat(t_, &a));
  ASSERT_NO_FATAL_FAILURE(OpenPlat(tb, &b));
  ASSERT_NO_FATAL_FAILURE(AuthenticatePlat(c, a, true));
  ASSERT_NO_FATAL_FAILURE(AuthenticatePlat(c, b, true));

  // Refused at Upload: an escrow blob for another key id, and one made for another platform
  // (a copy of B's escrowed key re-signed into A's package would otherwise open for A).
  {
    Made wrong_id;
    ASSERT_NO_FATAL_FAILURE(MakePackage(a, ma_public, ma_name, &wrong_id, &escrow_public, "other"));
    Status s = Upload(c, a.token, wrong_id.bytes, nullptr);
    EXPECT_EQ(s.code(), Code::kInvalidArgument) << s.ToString();
    EXPECT_NE(s.message().find("escrow-test"), std::string::npos) << s.message();
    Made other;
    ASSERT_NO_FATAL_FAILURE(MakePackage(b, ma_public, ma_name, &other, &escrow_public));
    package::MigrationPackage stolen = other.model;
    stolen.source_platform_id = a.id;
    auto bytes = package::SignPackage(stolen, a.signer.get());
    ASSERT_OK(bytes);
    s = Upload(c, a.token, *bytes, nullptr);
    EXPECT_EQ(s.code(), Code::kIntegrityFailure) << s.ToString();
    EXPECT_NE(s.message().find("another platform or MRK"), std::string::npos) << s.message();
  }

  Made pa;
  ASSERT_NO_FATAL_FAILURE(MakePackage(a, ma_public, ma_name, &pa, &escrow_public));
  {
    // The same vault and MA key served without an escrow key: it cannot vouch for the
    // escrow blob, so it refuses the package rather than keep one it could never release.
    Config no_escrow = cfg;
    no_escrow.escrow.custody = "none";
    auto plain = MakeMaService(no_escrow, &env_, vault->get(), custody->get());
    ASSERT_OK(plain);
    Client pc(plain->get());
    Status s = Upload(pc, a.token, pa.bytes, nullptr);
    EXPECT_EQ(s.code(), Code::kUnsupported) << s.ToString();
    EXPECT_NE(s.message().find("no escrow key"), std::string::npos) << s.message();
  }
  ASSERT_TRUE(Upload(c, a.token, pa.bytes, nullptr).ok()) << c.reply.body;
  std::vector<std::string> ids;
  ASSERT_TRUE(Query(c, a.token, &ids).ok());
  EXPECT_EQ(std::count(ids.begin(), ids.end(), pa.model.package_id), 1);

  // A's own download, no approval: the package, but not the inner key.
  Downloaded got;
  Status s = DownloadTo(c, a, pa.model.package_id, &got);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_TRUE(got.escrowed_inner_key.empty());

  // An approval A -> B that expired before B downloads: refused, nothing released.
  auto approve = [&](const std::string& from, const std::string& to, int64_t ttl) {
    storage::ApprovalRequest r;
    r.old_platform_id = from;
    r.new_platform_id = to;
    r.reason = "motherboard swap";
    r.created_by = "helpdesk1";
    r.created_at = env_.NowUnixSeconds();
    r.expires_at = r.created_at + ttl;
    return (*vault)->CreateApproval(
        r, storage::AuditEvent{r.created_at, "operator:helpdesk1", "ApproveRestore", "", "ok", ""});
  };
  ASSERT_OK(approve(a.id, b.id, 60));
  env_.offset += 120;
  {
    Bytes nonce;
    Status expired = Prepare(c, b.token, pa.model.package_id, b.srk_name, &nonce);
    EXPECT_EQ(expired.code(), Code::kPermissionDenied) << expired.ToString();
    EXPECT_NE(expired.message().find("helpdesk approval"), std::string::npos) << expired.message();
  }
  // Sessions outlive the fake clock jump only if re-made.
  ASSERT_NO_FATAL_FAILURE(AuthenticatePlat(c, b, true));
  // A revoked approval releases nothing either.
  {
    auto revoked = approve(a.id, b.id, 3600);
    ASSERT_OK(revoked);
    ASSERT_TRUE(
        (*vault)
            ->RevokeApproval(revoked->id,
                             storage::AuditEvent{env_.NowUnixSeconds(), "operator:helpdesk1",
                                                 "RevokeApproval", "", "ok", "wrong ticket"})
            .ok());
    Bytes nonce;
    EXPECT_CODE(Prepare(c, b.token, pa.model.package_id, b.srk_name, &nonce),
                Code::kPermissionDenied);
  }

  // An active approval: B gets the re-wrapped MRK and the inner key, imports and loads it.
  ASSERT_OK(approve(a.id, b.id, 3600));
  s = DownloadTo(c, b, pa.model.package_id, &got);
  ASSERT_TRUE(s.ok()) << s.ToString();
  auto data = tpm::Unmarshal<TPM2B_DATA>(got.escrowed_inner_key);
  ASSERT_OK(data);
  SecureBytes inner(data->buffer, data->buffer + data->size);
  EXPECT_EQ(inner, pa.inner_key);
  auto priv =
      b.tpm->Import(b.srk, pa.mrk.public_area, *tpm::Unmarshal<TPM2B_PRIVATE>(got.duplicate),
                    *tpm::Unmarshal<TPM2B_ENCRYPTED_SECRET>(got.seed), inner);
  ASSERT_OK(priv);
  auto restored = b.tpm->Load(b.srk, esys::KeyBlob{pa.mrk.public_area, *priv});
  ASSERT_OK(restored);
  restored->reset();
  // The approval is used up: a second download is refused.
  EXPECT_CODE(DownloadTo(c, b, pa.model.package_id, &got), Code::kPermissionDenied);

  // approvals.single_use = false (a user restoring several packages, or retrying after a
  // mistyped code): the approval stays active and releases the key again, audited each time.
  {
    Config reusable = cfg;
    reusable.approvals_single_use = false;
    auto ep2 = MakeMaService(reusable, &env_, vault->get(), custody->get());
    ASSERT_OK(ep2);
    Client c2(ep2->get());
    ASSERT_NO_FATAL_FAILURE(AuthenticatePlat(c2, b, true));
    auto kept = approve(a.id, b.id, 3600);
    ASSERT_OK(kept);
    for (int i = 0; i < 2; ++i) {
      Downloaded again;
      Status twice = DownloadTo(c2, b, pa.model.package_id, &again);
      ASSERT_TRUE(twice.ok()) << i << ": " << twice.ToString();
      EXPECT_FALSE(again.escrowed_inner_key.empty());
    }
    auto still = (*vault)->FindActiveApproval(b.id, pa.model.package_id, env_.NowUnixSeconds());
    ASSERT_OK(still);
    EXPECT_EQ(still->id, kept->id);
    ASSERT_TRUE((*vault)
                    ->RevokeApproval(
                        kept->id, storage::AuditEvent{env_.NowUnixSeconds(), "operator:helpdesk1",
                                                      "RevokeApproval", "", "ok", "restores done"})
                    .ok());
    ASSERT_NO_FATAL_FAILURE(AuthenticatePlat(c, b, true));
  }

  // A same-platform approval (A's TPM was cleared: its sealed copy is gone) releases the key
  // to A itself; a same-platform approval without escrow packages is refused as pointless.
  ASSERT_OK(approve(a.id, a.id, 3600));
  ASSERT_NO_FATAL_FAILURE(AuthenticatePlat(c, a, true));
  s = DownloadTo(c, a, pa.model.package_id, &got);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_FALSE(got.escrowed_inner_key.empty());
  Made pb;
  ASSERT_NO_FATAL_FAILURE(AuthenticatePlat(c, b, true));  // DownloadTo dropped B's signer
  ASSERT_NO_FATAL_FAILURE(MakePackage(b, ma_public, ma_name, &pb));
  ASSERT_TRUE(Upload(c, b.token, pb.bytes, nullptr).ok()) << c.reply.body;
  auto pointless = approve(b.id, b.id, 3600);
  ASSERT_FALSE(pointless.has_value());
  EXPECT_NE(pointless.error().message().find("escrow"), std::string::npos);

  // The escrow key is rotated: new packages must be escrowed to the new key; what the
  // retired key escrowed is still released under an approval.
  {
    const std::string nkey = d.File("escrow2.key"), ncert = d.File("escrow2.crt");
    auto r2 = RunCommand({"openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                          nkey, "-out", ncert, "-subj", "/CN=tpm-ma test escrow 2", "-days", "30"});
    ASSERT_EQ(r2.exit_code, 0) << r2.output;
    ::chmod(nkey.c_str(), 0600);
    Config rotated = cfg;
    rotated.escrow_retired = {cfg.escrow};
    rotated.escrow.key_id = "escrow-test-2";
    rotated.escrow.private_key = nkey;
    rotated.escrow.certificate = ncert;
    auto ep3 = MakeMaService(rotated, &env_, vault->get(), custody->get());
    ASSERT_OK(ep3);
    Client c3(ep3->get());
    ASSERT_NO_FATAL_FAILURE(AuthenticatePlat(c3, a, true));
    Made old_key;
    ASSERT_NO_FATAL_FAILURE(MakePackage(a, ma_public, ma_name, &old_key, &escrow_public));
    Status s3 = Upload(c3, a.token, old_key.bytes, nullptr);
    EXPECT_EQ(s3.code(), Code::kInvalidArgument) << s3.ToString();
    EXPECT_NE(s3.message().find("'escrow-test', not to this MA's escrow key 'escrow-test-2'"),
              std::string::npos)
        << s3.message();
    ASSERT_OK(approve(a.id, a.id, 3600));
    Downloaded again;
    s3 = DownloadTo(c3, a, pa.model.package_id, &again);
    ASSERT_TRUE(s3.ok()) << s3.ToString();
    auto released = tpm::Unmarshal<TPM2B_DATA>(again.escrowed_inner_key);
    ASSERT_OK(released);
    EXPECT_EQ(SecureBytes(released->buffer, released->buffer + released->size), pa.inner_key);
  }

  // The audit log says when an escrowed key left, and the chain holds.
  storage::AuditFilter f;
  f.page_size = 1000;
  auto audit = (*vault)->ListAudit(f);
  ASSERT_OK(audit);
  int released = 0;
  for (const auto& rec : audit->records) {
    if (rec.event.detail.find("escrowed inner key released") != std::string::npos) ++released;
  }
  // B under the single-use approval, B twice under the kept one, A, A by the retired key.
  EXPECT_EQ(released, 5);
  EXPECT_TRUE((*vault)->VerifyAuditChain().ok());
}

}  // namespace
}  // namespace tpmma::server
