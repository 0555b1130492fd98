// SPDX-License-Identifier: GPL-2.0-or-later
// The real ma-server binary: --check-config, --help/--version, and a run that serves
// /healthz on an ephemeral port and exits 0 on SIGTERM.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <optional>
#include <regex>
#include <string>
#include <vector>

#include "tests/server/tls_client.h"
#include "tests/support/ma_process.h"
#include "tests/support/testutil.h"

namespace tpmma::testing {
namespace {

using std::chrono::milliseconds;

void Write(const std::string& path, const std::string& text) {
  WriteFileOrDie(path, ByteView(reinterpret_cast<const uint8_t*>(text.data()), text.size()));
}

class MaServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    CertFiles tls = MakeSelfSignedCert(dir_.path(), "tls");
    // An RSA-2048 key and certificate stand in for the MA storage key.
    MakeSelfSignedCert(dir_.path(), "ma", /*rsa=*/true);
    // Any CA certificate will do as an EK root: nothing authenticates here.
    MakeSelfSignedCert(dir_.path(), "ek-root");
    ::chmod(tls.key_path.c_str(), 0600);
    ::chmod(dir_.File("ma.key").c_str(), 0600);  // the MA service refuses a readable key
    config_ = dir_.File("ma.toml");
    // Relative paths: resolved against the config file's directory, not the cwd.
    Write(config_, R"([server]
listen_address = "127.0.0.1"
listen_port = 0
io_threads = 1
worker_threads = 2
[tls]
certificate = "tls.crt"
private_key = "tls.key"
[ma]
private_key = "ma.key"
certificate = "ma.crt"
[vault]
path = "vault.db"
[trust]
ek_roots = ["ek-root.crt"]
[limits]
read_timeout_ms = 2000
)");
  }

  TempDir dir_;
  std::string config_;
};

TEST_F(MaServerTest, ServesHealthzAndExitsZeroOnSigterm) {
  ServerProcess server({MA_SERVER_BIN, "--config", config_});
  std::optional<uint16_t> port = server.WaitListening(milliseconds(10000));
  ASSERT_TRUE(port.has_value()) << server.output();

  TlsClient c;
  ASSERT_TRUE(c.Connect(*port)) << c.error();
  auto health = c.RoundTrip(GetRequest("/healthz"));
  ASSERT_TRUE(health.has_value()) << c.error();
  EXPECT_EQ(health->status, 200u);
  EXPECT_EQ(health->body, "ok\n");
  // Not SOAP at all: whichever endpoint is built in, the answer is a SOAP Fault.
  auto soap = c.RoundTrip(PostRequest("/", "<not-an-envelope/>"));
  ASSERT_TRUE(soap.has_value()) << c.error();
  EXPECT_EQ(soap->status, 500u);
  EXPECT_NE(soap->body.find("Fault"), std::string::npos) << soap->body;

  EXPECT_EQ(server.SignalAndWait(SIGTERM, milliseconds(10000)), 0) << server.output();
  EXPECT_NE(server.output().find("shutting down"), std::string::npos) << server.output();
  // The request log: op, outcome, status, latency and peer; never the body.
  EXPECT_NE(server.output().find("request op="), std::string::npos) << server.output();
  EXPECT_EQ(server.output().find("not-an-envelope"), std::string::npos) << server.output();
}

// GET /metrics on the real server: [metrics] enabled, loopback allowed by default; a SOAP
// call moves its counter, the vault's families are there, an invented operation and the
// peer's address are not.
TEST_F(MaServerTest, MetricsCountAGetMAServiceInfoAndShowTheVault) {
  Bytes original = ReadFileOrDie(config_);
  Write(config_, std::string(original.begin(), original.end()) + "[metrics]\nenabled = true\n");
  ServerProcess server({MA_SERVER_BIN, "--config", config_});
  std::optional<uint16_t> port = server.WaitListening(milliseconds(10000));
  ASSERT_TRUE(port.has_value()) << server.output();
  const std::string open =
      "<?xml version=\"1.0\" encoding=\"UTF-8\"?><SOAP-ENV:Envelope "
      "xmlns:SOAP-ENV=\"http://schemas.xmlsoap.org/soap/envelope/\" "
      "xmlns:ma=\"urn:tpm-ma:migration:1\"><SOAP-ENV:Body>";
  const std::string close = "</SOAP-ENV:Body></SOAP-ENV:Envelope>";

  TlsClient c;  // one keep-alive connection: each reply is counted before the next request
  ASSERT_TRUE(c.Connect(*port)) << c.error();
  auto info = c.RoundTrip(PostRequest("/", open + "<ma:GetMAServiceInfoRequest/>" + close));
  ASSERT_TRUE(info.has_value()) << c.error();
  EXPECT_EQ(info->status, 200u) << info->body;
  auto bogus = c.RoundTrip(PostRequest("/", open + "<ma:InventedOperationRequest/>" + close));
  ASSERT_TRUE(bogus.has_value()) << c.error();
  EXPECT_EQ(bogus->status, 500u);
  auto m = c.RoundTrip(GetRequest("/metrics"));
  ASSERT_TRUE(m.has_value()) << c.error();
  EXPECT_EQ(m->status, 200u);
  EXPECT_EQ(m->content_type, "text/plain; version=0.0.4; charset=utf-8");
  for (const char* line :
       {"tpmma_requests_total{op=\"GetMAServiceInfo\",outcome=\"ok\"} 1\n",
        "tpmma_request_duration_seconds_count{op=\"GetMAServiceInfo\"} 1\n",
        "tpmma_request_duration_seconds_bucket{op=\"GetMAServiceInfo\",le=\"+Inf\"} 1\n",
        "tpmma_vault_healthy 1\n", "# TYPE tpmma_vault_batch_size histogram\n",
        "tpmma_vault_errors_total 0\n", "tpmma_vault_deferred_audit_lost_total 0\n",
        "tpmma_build_info{version=\""}) {
    EXPECT_NE(m->body.find(line), std::string::npos) << line << "\n" << m->body;
  }
  EXPECT_EQ(m->body.find("Invented"), std::string::npos) << m->body;
  EXPECT_EQ(m->body.find("127.0.0.1"), std::string::npos) << m->body;
  EXPECT_EQ(m->body.back(), '\n');
  EXPECT_EQ(server.SignalAndWait(SIGTERM, milliseconds(10000)), 0) << server.output();
}

TEST_F(MaServerTest, SigintAlsoStopsCleanly) {
  ServerProcess server({MA_SERVER_BIN, "--config", config_});
  ASSERT_TRUE(server.WaitListening(milliseconds(10000)).has_value()) << server.output();
  EXPECT_EQ(server.SignalAndWait(SIGINT, milliseconds(10000)), 0) << server.output();
}

TEST_F(MaServerTest, CheckConfigSaysOk) {
  CommandResult r = RunCommand({MA_SERVER_BIN, "--config", config_, "--check-config"});
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("config OK"), std::string::npos) << r.output;
}

TEST_F(MaServerTest, CheckConfigNamesTheBadKeyAndExits2) {
  Write(config_, "[server]\nlisten_port = 99999\n");
  CommandResult r = RunCommand({MA_SERVER_BIN, "--config", config_, "--check-config"});
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("server.listen_port must be an integer between 0 and 65535"),
            std::string::npos)
      << r.output;
  EXPECT_EQ(r.output.find("config OK"), std::string::npos);
}

TEST_F(MaServerTest, CheckConfigNamesAMissingFile) {
  ::unlink(dir_.File("ma.crt").c_str());
  CommandResult r = RunCommand({MA_SERVER_BIN, "--config", config_, "--check-config"});
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("ma.certificate"), std::string::npos) << r.output;
}

TEST_F(MaServerTest, CheckConfigFindsAKeyThatDoesNotMatchTheCertificate) {
  MakeSelfSignedCert(dir_.path(), "other");
  Bytes original = ReadFileOrDie(config_);
  std::string cfg(original.begin(), original.end());
  cfg.replace(cfg.find("private_key = \"tls.key\""), 23, "private_key = \"other.key\"");
  Write(config_, cfg);
  CommandResult r = RunCommand({MA_SERVER_BIN, "--config", config_, "--check-config"});
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("tls.private_key"), std::string::npos) << r.output;
}

// Issue #13, finding 6: --check-config (the unit's ExecStartPre) passed what the start then
// refused, and a world-readable TLS key was accepted although the docs said otherwise.
TEST_F(MaServerTest, CheckConfigRunsTheStartChecksOnKeyFiles) {
  auto check = [&] { return RunCommand({MA_SERVER_BIN, "--config", config_, "--check-config"}); };
  ::chmod(dir_.File("tls.key").c_str(), 0644);
  CommandResult tls = check();
  EXPECT_EQ(tls.exit_code, 2) << tls.output;
  EXPECT_NE(tls.output.find("tls.private_key"), std::string::npos) << tls.output;
  EXPECT_NE(tls.output.find("chmod 600"), std::string::npos) << tls.output;
  CommandResult start = RunCommand({MA_SERVER_BIN, "--config", config_});
  EXPECT_EQ(start.exit_code, 2) << start.output;
  ::chmod(dir_.File("tls.key").c_str(), 0600);

  ::chmod(dir_.File("ma.key").c_str(), 0640);
  CommandResult ma = check();
  EXPECT_EQ(ma.exit_code, 2) << ma.output;
  EXPECT_NE(ma.output.find("ma.key"), std::string::npos) << ma.output;
  EXPECT_NE(ma.output.find("chmod 600"), std::string::npos) << ma.output;
  ::chmod(dir_.File("ma.key").c_str(), 0600);

  // An MA certificate that certifies another key.
  MakeSelfSignedCert(dir_.path(), "ma-other", /*rsa=*/true);
  Bytes original = ReadFileOrDie(config_);
  std::string cfg(original.begin(), original.end());
  cfg.replace(cfg.find("certificate = \"ma.crt\""), 22, "certificate = \"ma-other.crt\"");
  Write(config_, cfg);
  CommandResult cert = check();
  EXPECT_EQ(cert.exit_code, 2) << cert.output;
  EXPECT_NE(cert.output.find("does not certify"), std::string::npos) << cert.output;
  EXPECT_EQ(cert.output.find("config OK"), std::string::npos);
}

TEST_F(MaServerTest, BadConfigAlsoStopsANormalStartWithExit2) {
  Write(config_, "[server]\nlisten_prot = 1\n");
  CommandResult r = RunCommand({MA_SERVER_BIN, "--config", config_});
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("did you mean server.listen_port"), std::string::npos) << r.output;
}

TEST_F(MaServerTest, UsageErrorsExit2HelpAndVersionExit0) {
  CommandResult none = RunCommand({MA_SERVER_BIN});
  EXPECT_EQ(none.exit_code, 2) << none.output;
  CommandResult bogus = RunCommand({MA_SERVER_BIN, "--bogus"});
  EXPECT_EQ(bogus.exit_code, 2) << bogus.output;
  CommandResult help = RunCommand({MA_SERVER_BIN, "--help"});
  EXPECT_EQ(help.exit_code, 0) << help.output;
  EXPECT_NE(help.output.find("Exit codes"), std::string::npos) << help.output;
  EXPECT_NE(help.output.find("--check-config"), std::string::npos) << help.output;
  CommandResult version = RunCommand({MA_SERVER_BIN, "--version"});
  EXPECT_EQ(version.exit_code, 0) << version.output;
  EXPECT_NE(version.output.find("ma-server "), std::string::npos) << version.output;
}

TEST_F(MaServerTest, PortInUseExits1) {
  ServerProcess first({MA_SERVER_BIN, "--config", config_});
  std::optional<uint16_t> port = first.WaitListening(milliseconds(10000));
  ASSERT_TRUE(port.has_value()) << first.output();
  std::string cfg2 = dir_.File("second.toml");
  Bytes original = ReadFileOrDie(config_);
  std::string text(original.begin(), original.end());
  text.replace(text.find("listen_port = 0"), 15, "listen_port = " + std::to_string(*port));
  Write(cfg2, text);
  CommandResult r = RunCommand({MA_SERVER_BIN, "--config", cfg2});
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_EQ(first.SignalAndWait(SIGTERM, milliseconds(10000)), 0) << first.output();
}

}  // namespace
}  // namespace tpmma::testing
