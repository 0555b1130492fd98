// SPDX-License-Identifier: GPL-2.0-or-later
// Issue #13, findings 3, 4 and 9: what hostile callers can make the audit log hold, and what
// a fault tells them. The MA endpoint (MakeMaService) with a real SQLite vault, called
// in-process with raw SOAP bodies and a clock the test moves; then the real ma-server over
// TLS for the certificate-less operator calls.
#include <sys/stat.h>

#include <string>
#include <tuple>
#include <vector>

#include <gtest/gtest.h>

#include "common/env.h"
#include "common/text.h"
#include "server/auth.h"
#include "server/ma_key.h"
#include "server/ma_service.h"
#include "server/refusal_limiter.h"
#include "storage/sqlite_vault.h"
#include "tests/server/tls_client.h"
#include "tests/support/ma_process.h"
#include "tests/support/testutil.h"

namespace tpmma::server {
namespace {

using testing::RunCommand;
using testing::TempDir;

class FakeClockEnv : public EnvWrapper {
 public:
  FakeClockEnv() : EnvWrapper(Env::Default()) {}
  int64_t NowUnixSeconds() override { return target()->NowUnixSeconds() + offset; }
  int64_t offset = 0;
};

const std::string kPlatform = "000b" + std::string(64, 'a');
const std::string kOther = "000b" + std::string(64, 'b');
const std::string kToken = std::string(40, 'T') + "tok";  // a live session (Harness)
const std::string kNoSuchToken(43, 'A');
const std::string kPackage = "123e4567-e89b-42d3-a456-426614174000";
const std::string kAdminFp(64, 'c'), kAuditorFp(64, 'd');

std::string Envelope(const std::string& op) {
  return "<?xml version=\"1.0\" encoding=\"UTF-8\"?><SOAP-ENV:Envelope "
         "xmlns:SOAP-ENV=\"http://schemas.xmlsoap.org/soap/envelope/\" "
         "xmlns:ma=\"urn:tpm-ma:migration:1\" xmlns:op=\"urn:tpm-ma:operator:1\"><SOAP-ENV:Body>" +
         op + "</SOAP-ENV:Body></SOAP-ENV:Envelope>";
}
std::string DeleteBody(const std::string& token, const std::string& package = kPackage) {
  return Envelope("<ma:DeleteRequest><ma:SessionToken>" + token +
                  "</ma:SessionToken><ma:PackageId>" + package +
                  "</ma:PackageId></ma:DeleteRequest>");
}
std::string GetMAKeyBody(const std::string& key_id) {
  return Envelope("<ma:GetMAKeyRequest><ma:KeyId>" + key_id + "</ma:KeyId></ma:GetMAKeyRequest>");
}
const std::string kWhoAmI = Envelope("<op:WhoAmIRequest/>");

std::string FaultString(const Reply& r) {
  const size_t open = r.body.find("<faultstring>");
  const size_t close = r.body.find("</faultstring>");
  if (open == std::string::npos || close == std::string::npos) return {};
  return r.body.substr(open + 13, close - open - 13);
}

// The MA endpoint over a vault the test also reads, one platform with a live session, and
// two operators (an admin, an auditor) known by their certificate fingerprints.
struct Harness {
  explicit Harness(RefusalLimits limits = {}) {
    auto r = RunCommand({"openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                         dir.File("ma.key"), "-out", dir.File("ma.crt"), "-subj", "/CN=ma", "-days",
                         "2"});
    EXPECT_EQ(r.exit_code, 0) << r.output;
    ::chmod(dir.File("ma.key").c_str(), 0600);
    auto c = LoadSoftwareMaKey("ma-1", dir.File("ma.key"), dir.File("ma.crt"), &env);
    EXPECT_TRUE(c.has_value()) << c.error().ToString();
    custody = std::move(*c);
    auto v = storage::SqliteVault::Open(dir.File("vault.db"));
    EXPECT_TRUE(v.has_value());
    vault = std::move(*v);
    const int64_t now = env.NowUnixSeconds();
    for (const std::string& id : {kPlatform, kOther}) {
      storage::Platform p;
      p.id = id;
      p.ek_public = Bytes(10, 1);
      p.ek_certificate = Bytes(10, 2);
      p.ak_public = Bytes(10, 3);
      p.ak_name = Bytes(34, 4);
      p.created_at = p.last_seen_at = now;
      EXPECT_TRUE(vault->UpsertPlatform(p, std::nullopt).has_value());
    }
    storage::Session session;
    session.token_hash = Authenticator::TokenHash(kToken);
    session.platform_id = kPlatform;
    session.created_at = now;
    session.expires_at = now + 7 * 86400;
    EXPECT_TRUE(vault->CreateSession(session, std::nullopt).ok());
    for (auto [name, role, fp] : {std::tuple{"carol", storage::OperatorRole::kAdmin, kAdminFp},
                                  {"bob", storage::OperatorRole::kAuditor, kAuditorFp}}) {
      storage::Operator op;
      op.name = name;
      op.role = role;
      op.cert_fingerprint = fp;
      op.created_at = now;
      storage::AuditEvent added;
      added.time = now;
      added.actor = "system";
      added.action = "AddOperator";
      added.object = name;
      added.outcome = "ok";
      EXPECT_TRUE(vault->AddOperator(op, added).ok());
    }
    Config cfg;
    cfg.ma.key_id = "ma-1";
    cfg.ek_roots = {dir.File("ma.crt")};  // any CA certificate: nothing authenticates here
    cfg.max_body_bytes = 1 << 20;
    MaServiceOptions options;
    options.purge_interval_s = 0;
    options.anonymous_refusals = limits;
    auto ep = MakeMaService(cfg, &env, vault.get(), custody.get(), options);
    EXPECT_TRUE(ep.has_value()) << ep.error().ToString();
    endpoint = std::move(*ep);
  }
  ~Harness() { endpoint.reset(); }  // before the vault it uses

  Reply Call(const std::string& body, const std::string& peer, const std::string& fp = "") {
    RequestInfo info;
    info.peer = peer;
    info.client_cert_fingerprint = fp;
    return endpoint->Handle(body, info);
  }
  std::vector<storage::AuditRecord> Rows() {
    EXPECT_TRUE(vault->FlushDeferredAudit().ok());
    storage::AuditFilter f;
    f.page_size = 1000;
    auto page = vault->ListAudit(f);
    EXPECT_TRUE(page.has_value());
    return page ? page->records : std::vector<storage::AuditRecord>{};
  }
  std::vector<storage::AuditEvent> Rows(const std::string& action) {
    std::vector<storage::AuditEvent> out;
    for (const auto& r : Rows()) {
      if (r.event.action == action) out.push_back(r.event);
    }
    return out;
  }

  TempDir dir;
  FakeClockEnv env;
  std::unique_ptr<MaKeyCustody> custody;
  std::unique_ptr<storage::Vault> vault;
  std::unique_ptr<Endpoint> endpoint;
};

// The limiter alone: bounded peers (the oldest window evicted with its summary), ended
// windows swept, addresses without their port.
TEST(RefusalLimiter, BoundedPeersEvictOldestWithSummary) {
  RefusalLimits limits;
  limits.per_window = 2;
  limits.window_s = 10;
  limits.max_peers = 2;
  RefusalLimiter l(limits);
  EXPECT_TRUE(l.Admit("a", 100).record);
  EXPECT_TRUE(l.Admit("a", 101).record);
  for (int i = 0; i < 4; ++i) EXPECT_FALSE(l.Admit("a", 102).record);
  EXPECT_TRUE(l.Admit("b", 103).record);
  RefusalLimiter::Decision c = l.Admit("c", 104);  // a third peer: "a" goes
  EXPECT_TRUE(c.record);
  ASSERT_EQ(c.summaries.size(), 1u);
  EXPECT_EQ(c.summaries[0].peer, "a");
  EXPECT_EQ(c.summaries[0].suppressed, 4u);
  EXPECT_EQ(l.tracked(), 2u);
  for (int i = 0; i < 3; ++i) l.Admit("b", 105);
  EXPECT_TRUE(l.TakeEnded(112).empty());  // b's window (from 103) is still open
  std::vector<RefusalSummary> ended = l.TakeEnded(113);
  ASSERT_EQ(ended.size(), 1u);  // b (2 suppressed); c's window (from 104) is open
  EXPECT_EQ(ended[0].peer, "b");
  EXPECT_EQ(ended[0].suppressed, 2u);
  EXPECT_EQ(l.tracked(), 1u);
  EXPECT_EQ(PeerAddress("192.0.2.1:5000"), "192.0.2.1");
  EXPECT_EQ(PeerAddress("[2001:db8::1]:443"), "2001:db8::1");
  EXPECT_EQ(PeerAddress("2001:db8::1"), "2001:db8::1");
  EXPECT_EQ(PeerAddress(""), "");
  EXPECT_TRUE(IsAnonymousActor("anonymous"));
  EXPECT_TRUE(IsAnonymousActor("claimed:000b12"));
  EXPECT_FALSE(IsAnonymousActor("operator:carol"));
  EXPECT_FALSE(IsAnonymousActor(kPlatform));
}

// Finding 3: 200 refused Deletes without a session were 200 durable rows.
TEST(AuditHygiene, AnonymousRefusalsAreCountedPerPeerNotEachWritten) {
  Harness h;
  for (int i = 0; i < 200; ++i) {
    Reply r = h.Call(DeleteBody(kNoSuchToken), "198.51.100.7:" + std::to_string(40000 + i));
    ASSERT_EQ(r.log_outcome, "Unauthenticated") << r.body;
  }
  // Another peer has an allowance of its own.
  for (int i = 0; i < 3; ++i)
    h.Call(DeleteBody(kNoSuchToken), "[2001:db8::1]:" + std::to_string(i));
  std::vector<storage::AuditEvent> deletes = h.Rows("Delete");
  EXPECT_EQ(deletes.size(), 5u + 3u);
  EXPECT_TRUE(h.Rows("AnonymousRefusals").empty()) << "the window is still open";

  // The window ends: the peer's next refusal writes the summary, and is recorded itself.
  h.env.offset += 61;
  h.Call(DeleteBody(kNoSuchToken), "198.51.100.7:1");
  std::vector<storage::AuditEvent> summary = h.Rows("AnonymousRefusals");
  ASSERT_EQ(summary.size(), 1u);
  EXPECT_EQ(summary[0].actor, "anonymous");
  EXPECT_EQ(summary[0].object, "198.51.100.7");
  EXPECT_EQ(summary[0].outcome, "RateLimited");
  EXPECT_NE(summary[0].detail.find("195 anonymous refusal(s) from peer 198.51.100.7"),
            std::string::npos)
      << summary[0].detail;
  EXPECT_EQ(h.Rows("Delete").size(), 9u);
  EXPECT_TRUE(h.vault->VerifyAuditChain().ok());
}

// Finding 3 for the operator side, and finding 9: every operator row names its peer.
TEST(AuditHygiene, CertificateLessOperatorCallsAreCountedAndCarryThePeer) {
  Harness h;
  for (int i = 0; i < 200; ++i) {
    Reply r = h.Call(kWhoAmI, "203.0.113.9:" + std::to_string(1000 + i),
                     i % 2 == 0 ? "" : std::string(64, 'e'));  // none, or no operator's
    ASSERT_EQ(r.log_outcome, "Unauthenticated") << r.body;
  }
  std::vector<storage::AuditEvent> rows = h.Rows("Operator.WhoAmI");
  ASSERT_EQ(rows.size(), 5u);
  for (const auto& e : rows) {
    EXPECT_EQ(e.actor, "anonymous");
    EXPECT_NE(e.detail.find("peer 203.0.113.9:"), std::string::npos) << e.detail;
  }
  // An operator's own rows carry the peer too.
  Reply me = h.Call(kWhoAmI, "192.0.2.44:5555", kAdminFp);
  ASSERT_EQ(me.log_outcome, "ok") << me.body;
  rows = h.Rows("Operator.WhoAmI");
  ASSERT_EQ(rows.size(), 6u);
  EXPECT_EQ(rows.back().actor, "operator:carol");
  EXPECT_NE(rows.back().detail.find("peer 192.0.2.44:5555"), std::string::npos);
  // At shutdown the open window's count is written, not lost.
  h.endpoint.reset();
  std::vector<storage::AuditEvent> summary = h.Rows("AnonymousRefusals");
  ASSERT_EQ(summary.size(), 1u);
  EXPECT_NE(summary[0].detail.find("195 anonymous refusal(s) from peer 203.0.113.9"),
            std::string::npos)
      << summary[0].detail;
}

// Authenticated callers' refusals stay on record one by one.
TEST(AuditHygiene, AuthenticatedRefusalsAreEachAudited) {
  Harness h;
  for (int i = 0; i < 20; ++i) {
    Reply r = h.Call(DeleteBody(kToken), "198.51.100.7:1");
    ASSERT_EQ(r.log_outcome, "NotFound") << r.body;
  }
  std::vector<storage::AuditEvent> deletes = h.Rows("Delete");
  ASSERT_EQ(deletes.size(), 20u);
  for (const auto& e : deletes) EXPECT_EQ(e.actor, kPlatform);
  // An auditor may not revoke platforms: each refusal is its own row.
  const std::string revoke = Envelope("<op:RevokePlatformRequest><op:PlatformId>" + kOther +
                                      "</op:PlatformId><op:Reason>x</op:Reason>"
                                      "</op:RevokePlatformRequest>");
  for (int i = 0; i < 20; ++i) {
    Reply r = h.Call(revoke, "198.51.100.7:2", kAuditorFp);
    ASSERT_EQ(r.log_outcome, "PermissionDenied") << r.body;
  }
  EXPECT_EQ(h.Rows("Operator.RevokePlatform").size(), 20u);
  EXPECT_TRUE(h.Rows("AnonymousRefusals").empty());
}

// Finding 4: a KeyId with a line feed and ANSI escapes was stored verbatim, and twice.
TEST(AuditHygiene, CallerChosenStringsAreRefusedOrStoredEscaped) {
  RefusalLimits generous;
  generous.per_window = 1000;  // every refusal here must be on record, to be checked
  Harness h(generous);
  const std::string peer = "198.51.100.7:1";
  Reply lf = h.Call(GetMAKeyBody("ma-1\n2026-12-01 admin:root Delete ok"), peer);
  EXPECT_EQ(lf.log_outcome, "SchemaViolation") << lf.body;
  EXPECT_NE(FaultString(lf).find("KeyId"), std::string::npos) << lf.body;
  Reply esc = h.Call(GetMAKeyBody("\x1b[31mred\n"), peer);
  EXPECT_EQ(esc.http_status, 500u);
  EXPECT_NE(esc.log_outcome, "ok");
  Reply tab = h.Call(DeleteBody(kToken, kPackage + "\n"), peer);
  EXPECT_EQ(tab.log_outcome, "SchemaViolation");
  EXPECT_NE(FaultString(tab).find("PackageId"), std::string::npos) << tab.body;
  const std::string download =
      Envelope("<ma:DownloadRequest><ma:SessionToken>" + kToken +
               "</ma:SessionToken><ma:PackageId>a\nb</ma:PackageId><ma:Prepare>"
               "<ma:DestinationParentName>AAQAAQAL</ma:DestinationParentName></ma:Prepare>"
               "</ma:DownloadRequest>");
  Reply dl = h.Call(download, peer);
  EXPECT_EQ(dl.log_outcome, "SchemaViolation") << dl.body;
  // An unknown KeyId: the record names it once, as its object.
  Reply unknown = h.Call(GetMAKeyBody("nope-key"), peer);
  EXPECT_EQ(unknown.log_outcome, "NotFound");
  // An operator's reason is text: kept, escaped.
  const std::string revoke = Envelope("<op:RevokePlatformRequest><op:PlatformId>" + kOther +
                                      "</op:PlatformId><op:Reason>stolen\nforged line</op:Reason>"
                                      "</op:RevokePlatformRequest>");
  EXPECT_EQ(h.Call(revoke, peer, kAdminFp).log_outcome, "ok");
  // ... an id in an operator's filter is not.
  const std::string audit = Envelope(
      "<op:ListAuditRequest><op:Actor>a\nb</op:Actor><op:PageSize>10</op:PageSize>"
      "</op:ListAuditRequest>");
  Reply filter = h.Call(audit, peer, kAuditorFp);
  EXPECT_EQ(filter.log_outcome, "SchemaViolation");
  EXPECT_NE(FaultString(filter).find("Actor"), std::string::npos) << filter.body;

  const auto rows = h.Rows();
  ASSERT_GE(rows.size(), 6u);
  for (const auto& r : rows) {
    const storage::AuditEvent& e = r.event;
    for (const std::string* field : {&e.actor, &e.action, &e.object, &e.outcome, &e.detail}) {
      EXPECT_FALSE(HasControlCharacter(*field)) << "row " << r.seq << ": " << *field;
    }
  }
  std::vector<storage::AuditEvent> keys = h.Rows("GetMAKey");
  ASSERT_FALSE(keys.empty());
  const storage::AuditEvent& nope = keys.back();
  EXPECT_EQ(nope.object, "nope-key");
  EXPECT_EQ(nope.detail.find("nope-key"), std::string::npos) << nope.detail;
  std::vector<storage::AuditEvent> revoked = h.Rows("Operator.RevokePlatform");
  ASSERT_EQ(revoked.size(), 1u);
  EXPECT_NE(revoked[0].detail.find("stolen\\x0aforged line"), std::string::npos)
      << revoked[0].detail;
}

// Finding 9: faults named internals ("gSOAP error 44", Tss2_MU_*); the codes stay.
TEST(AuditHygiene, FaultsNameNoInternals) {
  Harness h;
  struct Case {
    std::string body;
    Code code;
  };
  const std::vector<Case> cases = {
      // gSOAP refuses these after our pre-check passed them.
      {Envelope("<ma:GetMAKeyRequest><ma:Bogus/></ma:GetMAKeyRequest>"), Code::kSchemaViolation},
      {Envelope("<ma:DeleteRequest><ma:SessionToken>" + kNoSuchToken +
                "</ma:SessionToken></ma:DeleteRequest>"),
       Code::kSchemaViolation},
      {Envelope("<ma:NoSuchRequest/>"), Code::kSchemaViolation},
      // A TPM2B_PUBLIC whose size field fits but whose content is cut short.
      {Envelope("<ma:AuthenticateRequest><ma:Begin><ma:EKPublic>AAQAAQAL</ma:EKPublic>"
                "<ma:AKPublic>AAQAAQAL</ma:AKPublic></ma:Begin></ma:AuthenticateRequest>"),
       Code::kMalformed},
  };
  for (const Case& c : cases) {
    Reply r = h.Call(c.body, "198.51.100.7:1");
    const std::string fs = FaultString(r);
    EXPECT_EQ(r.log_outcome, CodeName(c.code)) << r.body;
    EXPECT_FALSE(fs.empty()) << r.body;
    for (const char* internal : {"gSOAP", "Tss2_", "Esys_", "soap_"}) {
      EXPECT_EQ(fs.find(internal), std::string::npos) << fs;
      EXPECT_EQ(r.body.find(internal), std::string::npos) << r.body;
    }
  }
  Reply ek = h.Call(cases.back().body, "198.51.100.7:1");
  EXPECT_NE(FaultString(ek).find("TPM2B_PUBLIC"), std::string::npos) << ek.body;
}

// The real ma-server: certificate-less operator calls over TLS, one connection, keep-alive.
TEST(AuditHygiene, RealServerBoundsCertificateLessOperatorRows) {
  TempDir dir;
  std::string why;
  auto ma = testing::MaInstance::Start({MA_ADMIN_PATH, MA_SERVER_PATH}, dir.path(), {}, &why);
  ASSERT_NE(ma, nullptr) << why;
  testing::TlsClient c;
  ASSERT_TRUE(c.Connect(ma->port())) << c.error();
  for (int i = 0; i < 200; ++i) {
    auto resp = c.RoundTrip(testing::PostRequest("/", kWhoAmI));
    ASSERT_TRUE(resp.has_value()) << c.error();
    ASSERT_EQ(resp->status, 500u);
    ASSERT_NE(resp->body.find("Unauthenticated"), std::string::npos) << resp->body;
  }
  c.Close();
  ASSERT_EQ(ma->Stop(), 0);
  auto vault = storage::SqliteVault::Open(ma->vault_path());
  ASSERT_TRUE(vault.has_value());
  storage::AuditFilter f;
  f.page_size = 1000;
  auto page = (*vault)->ListAudit(f);
  ASSERT_TRUE(page.has_value());
  int anonymous = 0, summaries = 0;
  for (const auto& r : page->records) {
    if (r.event.action == "Operator.WhoAmI") {
      ++anonymous;
      EXPECT_NE(r.event.detail.find("peer 127.0.0.1:"), std::string::npos) << r.event.detail;
    }
    if (r.event.action == "AnonymousRefusals") {
      ++summaries;
      EXPECT_NE(r.event.detail.find("195 anonymous refusal(s) from peer 127.0.0.1"),
                std::string::npos)
          << r.event.detail;
    }
  }
  EXPECT_EQ(anonymous, 5);
  EXPECT_EQ(summaries, 1);
  EXPECT_TRUE((*vault)->VerifyAuditChain().ok());
}

}  // namespace
}  // namespace tpmma::server
