// SPDX-License-Identifier: GPL-2.0-or-later
// Operator roles over the wire: the real ma-server (made by ma-admin init) and the real
// ma-admin in remote mode with operator certificates from `ma-admin operator issue`.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "server/config.h"
#include "storage/sqlite_vault.h"
#include "tests/server/tls_client.h"
#include "tests/support/ma_process.h"
#include "tests/support/testutil.h"

namespace tpmma::testing {
namespace {

using nlohmann::json;

const std::string kOld = "000b" + std::string(64, 'a');
const std::string kNew = "000b" + std::string(64, 'b');

class OperatorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    ma_ = MaInstance::Start({MA_ADMIN_PATH, MA_SERVER_PATH}, dir_.path(), {}, &why);
    ASSERT_NE(ma_, nullptr) << why;
    ASSERT_EQ(ma_->Stop(), 0);
    {
      auto vault = storage::SqliteVault::Open(ma_->vault_path());
      ASSERT_TRUE(vault.has_value());
      for (const auto& id : {kOld, kNew}) {
        storage::Platform p;
        p.id = id;
        p.ek_public = Bytes(10, 1);
        p.ek_certificate = Bytes(10, 2);
        p.ak_public = Bytes(10, 3);
        p.ak_name = Bytes(34, 4);
        p.created_at = p.last_seen_at = 1700000000;
        ASSERT_TRUE((*vault)->UpsertPlatform(p, std::nullopt).has_value());
      }
    }
    for (auto [name, role] :
         {std::pair{"alice", "helpdesk"}, {"bob", "auditor"}, {"carol", "admin"}}) {
      auto r = Local({"operator", "issue", "--name", name, "--role", role, "--out", dir_.path()});
      ASSERT_EQ(r.exit_code, 0) << r.output;
    }
    ASSERT_TRUE(ma_->Restart(&why)) << why;
  }

  CommandResult Local(std::vector<std::string> args) {
    args.insert(args.begin(), MA_ADMIN_PATH);
    args.push_back("--dir");
    args.push_back(ma_->state_dir());
    return RunCommand(args);
  }
  CommandResult As(const std::string& who, std::vector<std::string> args) {
    std::vector<std::string> argv = {MA_ADMIN_PATH,
                                     "--json",
                                     "--ma",
                                     ma_->url(),
                                     "--ma-ca",
                                     ma_->ca_file(),
                                     "--operator-cert",
                                     dir_.File(who + ".pem")};
    argv.insert(argv.end(), args.begin(), args.end());
    return RunCommand(argv);
  }
  json AsJson(const std::string& who, std::vector<std::string> args) {
    CommandResult r = As(who, args);
    EXPECT_EQ(r.exit_code, 0) << r.output;
    return json::parse(r.output, nullptr, false);
  }
  static void ExpectRefused(const CommandResult& r, const std::string& code) {
    EXPECT_EQ(r.exit_code, 1) << r.output;
    EXPECT_NE(r.output.find(code), std::string::npos) << r.output;
  }

  TempDir dir_;
  std::unique_ptr<MaInstance> ma_;
};

TEST_F(OperatorTest, RolesDecideWhatEachOperatorMayDo) {
  json me = AsJson("alice", {"whoami"});
  EXPECT_EQ(me["name"], "alice");
  EXPECT_EQ(me["role"], "helpdesk");

  json a = AsJson("alice", {"approve", "--old", kOld, "--new", kNew, "--reason", "ticket 4711",
                            "--expires", "4h"});
  EXPECT_EQ(a["approval"]["state"], "active") << a.dump();
  EXPECT_EQ(a["approval"]["created_by"], "alice");
  EXPECT_EQ(AsJson("bob", {"approvals", "list"})["approvals"].size(), 1u);

  // One expiry rule, remotely and on the MA host (issue #15): the local approve used to take
  // any --expires the server then refused remotely. The default approvals.max_ttl_s is 7 days.
  ExpectRefused(
      As("alice", {"approve", "--old", kOld, "--new", kNew, "--reason", "x", "--expires", "8d"}),
      "approvals.max_ttl_s = 604800");
  ExpectRefused(
      Local({"approve", "--old", kOld, "--new", kNew, "--reason", "x", "--expires", "8d"}),
      "approvals.max_ttl_s = 604800");

  // An auditor cannot approve; a helpdesk cannot read the audit log or revoke platforms.
  ExpectRefused(As("bob", {"approve", "--old", kOld, "--new", kNew, "--reason", "x"}),
                "PermissionDenied");
  ExpectRefused(As("alice", {"audit", "verify"}), "PermissionDenied");
  ExpectRefused(As("alice", {"platforms", "revoke", kNew, "--reason", "x"}), "PermissionDenied");

  json verified = AsJson("bob", {"audit", "verify"});
  EXPECT_GE(verified["verified_rows"].get<int64_t>(), 5);
  json rows = AsJson("bob", {"audit", "--action", "Operator.Approve"});
  // alice's approval, her refused 8-day one, and bob's refused one (the local refusal is
  // made before anything is written).
  ASSERT_EQ(rows["records"].size(), 3u) << rows.dump();
  EXPECT_EQ(rows["records"][0]["actor"], "operator:alice");
  EXPECT_EQ(rows["records"][0]["outcome"], "ok");
  EXPECT_EQ(rows["records"][1]["actor"], "operator:alice");
  EXPECT_EQ(rows["records"][1]["outcome"], "InvalidArgument");
  EXPECT_EQ(rows["records"][2]["actor"], "operator:bob");
  EXPECT_EQ(rows["records"][2]["outcome"], "PermissionDenied");

  // The admin revokes the new platform: no approval for it any more.
  EXPECT_EQ(As("carol", {"platforms", "revoke", kNew, "--reason", "stolen"}).exit_code, 0);
  ExpectRefused(As("alice", {"approve", "--old", kOld, "--new", kNew, "--reason", "x"}), "revoked");
}

TEST_F(OperatorTest, CertificatesDecideWhoIsAnOperator) {
  // Revoked on the MA host while the server runs: refused at once.
  auto r = Local({"operator", "revoke", "--name", "alice", "--reason", "left the company"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  ExpectRefused(As("alice", {"whoami"}), "PermissionDenied");
  EXPECT_EQ(AsJson("carol", {"whoami"})["role"], "admin");

  // A certificate from a foreign CA does not get through the TLS handshake.
  auto made =
      RunCommand({"openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                  "-nodes", "-keyout", dir_.File("mallory.key"), "-out", dir_.File("mallory.crt"),
                  "-subj", "/CN=mallory (admin)", "-days", "2"});
  ASSERT_EQ(made.exit_code, 0) << made.output;
  WriteFileOrDie(dir_.File("mallory.pem"), [&] {
    Bytes b = ReadFileOrDie(dir_.File("mallory.key"));
    Bytes c = ReadFileOrDie(dir_.File("mallory.crt"));
    b.insert(b.end(), c.begin(), c.end());
    return b;
  }());
  ExpectRefused(As("mallory", {"whoami"}), "Unavailable");

  // An endpoint (no client certificate) calling an operator operation gets a Fault.
  TlsClient c;
  ASSERT_TRUE(c.Connect(ma_->port())) << c.error();
  const std::string body =
      R"(<?xml version="1.0" encoding="UTF-8"?>)"
      R"(<SOAP-ENV:Envelope xmlns:SOAP-ENV="http://schemas.xmlsoap.org/soap/envelope/" )"
      R"(xmlns:op="urn:tpm-ma:operator:1"><SOAP-ENV:Body><op:WhoAmIRequest/>)"
      R"(</SOAP-ENV:Body></SOAP-ENV:Envelope>)";
  auto resp = c.RoundTrip(PostRequest("/", body));
  ASSERT_TRUE(resp.has_value()) << c.error();
  EXPECT_EQ(resp->status, 500u);
  EXPECT_NE(resp->body.find("Unauthenticated"), std::string::npos) << resp->body;
  // ... and the server keeps serving.
  auto health = c.RoundTrip(GetRequest("/healthz"));
  ASSERT_TRUE(health.has_value());
  EXPECT_EQ(health->status, 200u);
}

}  // namespace
}  // namespace tpmma::testing
