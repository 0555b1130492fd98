// SPDX-License-Identifier: GPL-2.0-or-later
// ma-server's TOML configuration: values, defaults, relative paths, one clear error per bad
// value, unknown keys, and the ConfigToToml round trip.
#include "server/config.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "tests/support/testutil.h"

namespace tpmma::server {
namespace {

using testing::TempDir;

constexpr const char* kRequired = R"(
[tls]
certificate = "tls/cert.pem"
private_key = "tls/key.pem"
[ma]
private_key = "ma/key.pem"
certificate = "/etc/tpm-ma/ma.crt"
[vault]
path = "vault.db"
)";

void Write(const std::string& path, const std::string& text) {
  testing::WriteFileOrDie(path,
                          ByteView(reinterpret_cast<const uint8_t*>(text.data()), text.size()));
}

// kRequired plus `extra`; keys for [tls], [ma] and [vault], which kRequired already opens
// (TOML forbids a second [tls]), go into the existing section.
Result<Config> Parse(const std::string& extra) {
  std::string text = kRequired;
  for (const std::string header : {"[tls]\n", "[ma]\n", "[vault]\n"}) {
    if (extra.starts_with(header)) {
      text.insert(text.find(header) + header.size(), extra.substr(header.size()) + "\n");
      return ParseConfig(text, "/srv/ma", "test.toml");
    }
  }
  return ParseConfig(text + extra, "/srv/ma", "test.toml");
}

TEST(ConfigTest, GoodFileWithRelativePathsResolvedAgainstItsDirectory) {
  TempDir dir;
  Write(dir.File("ma.toml"), R"(
[server]
listen_address = "::1"
listen_port = 9443
io_threads = 3
worker_threads = 5
max_connections = 100
max_queued_requests = 10
shutdown_timeout_ms = 1500
[tls]
certificate = "tls/cert.pem"
private_key = "./tls/../tls/key.pem"
request_client_cert = true
[limits]
max_header_bytes = 4096
max_body_bytes = 1048576
read_timeout_ms = 2000
idle_timeout_ms = 30000
handshake_timeout_ms = 1000
max_package_bytes = 524288
max_child_keys = 50
[ma]
key_id = "ma-2024.1"
private_key = "ma/key.pem"
certificate = "/etc/tpm-ma/ma.crt"
[vault]
path = "vault.db"
[trust]
ek_roots = ["roots", "/usr/share/ek/root.pem"]
ek_intermediates = ["pool"]
ek_templates = ["ek/site-ek.pub"]
[auth]
challenge_ttl_s = 60
session_ttl_s = 600
download_nonce_ttl_s = 120
[log]
level = "debug"
[bench]
echo = true
)");
  Result<Config> c = LoadConfig(dir.File("ma.toml"));
  ASSERT_TRUE(c.has_value()) << c.error().ToString();
  EXPECT_EQ(c->listen_address, "::1");
  EXPECT_EQ(c->listen_port, 9443);
  EXPECT_EQ(c->io_threads, 3);
  EXPECT_EQ(c->worker_threads, 5);
  EXPECT_EQ(c->max_connections, 100);
  EXPECT_EQ(c->max_queued_requests, 10);
  EXPECT_EQ(c->shutdown_timeout_ms, 1500u);
  EXPECT_EQ(c->tls_certificate, dir.path() + "/tls/cert.pem");
  EXPECT_EQ(c->tls_private_key, dir.path() + "/tls/key.pem");
  EXPECT_TRUE(c->tls_request_client_cert);
  EXPECT_EQ(c->tls_client_ca, "");
  EXPECT_EQ(c->max_header_bytes, 4096u);
  EXPECT_EQ(c->max_body_bytes, 1048576u);
  EXPECT_EQ(c->read_timeout_ms, 2000u);
  EXPECT_EQ(c->idle_timeout_ms, 30000u);
  EXPECT_EQ(c->handshake_timeout_ms, 1000u);
  EXPECT_EQ(c->max_package_bytes, 524288u);
  EXPECT_EQ(c->max_child_keys, 50u);
  EXPECT_EQ(c->ma.key_id, "ma-2024.1");
  EXPECT_EQ(c->ma.private_key, dir.path() + "/ma/key.pem");
  EXPECT_EQ(c->ma.certificate, "/etc/tpm-ma/ma.crt");
  EXPECT_EQ(c->vault_path, dir.path() + "/vault.db");
  EXPECT_EQ(c->ek_roots,
            (std::vector<std::string>{dir.path() + "/roots", "/usr/share/ek/root.pem"}));
  EXPECT_EQ(c->ek_intermediates, std::vector<std::string>{dir.path() + "/pool"});
  EXPECT_EQ(c->ek_templates, std::vector<std::string>{dir.path() + "/ek/site-ek.pub"});
  EXPECT_EQ(c->challenge_ttl_s, 60u);
  EXPECT_EQ(c->session_ttl_s, 600u);
  EXPECT_EQ(c->download_nonce_ttl_s, 120u);
  EXPECT_EQ(c->log_level, "debug");
  EXPECT_TRUE(c->bench_echo);
}

TEST(ConfigTest, OmittedKeysKeepTheirDefaults) {
  Result<Config> c = Parse("");
  ASSERT_TRUE(c.has_value()) << c.error().ToString();
  Config defaults;
  EXPECT_EQ(c->listen_address, defaults.listen_address);
  EXPECT_EQ(c->listen_port, defaults.listen_port);
  EXPECT_EQ(c->max_body_bytes, defaults.max_body_bytes);
  EXPECT_EQ(c->read_timeout_ms, defaults.read_timeout_ms);
  EXPECT_EQ(c->log_level, "info");
  EXPECT_FALSE(c->bench_echo);
  EXPECT_EQ(c->tls_certificate, "/srv/ma/tls/cert.pem");
}

struct BadValue {
  const char* toml;
  const char* message;  // a substring the error must contain
};

class ConfigBadValueTest : public ::testing::TestWithParam<BadValue> {};

TEST_P(ConfigBadValueTest, IsAnInvalidArgumentNamingTheKeyAndRange) {
  Result<Config> c = Parse(GetParam().toml);
  ASSERT_FALSE(c.has_value()) << GetParam().toml;
  EXPECT_EQ(c.error().code(), Code::kInvalidArgument);
  EXPECT_NE(c.error().message().find(GetParam().message), std::string::npos) << c.error().message();
}

INSTANTIATE_TEST_SUITE_P(
    Values, ConfigBadValueTest,
    ::testing::Values(
        BadValue{"[server]\nlisten_port = 70000",
                 "server.listen_port must be an integer between 0 and 65535, got 70000"},
        BadValue{"[server]\nlisten_port = -1", "server.listen_port must be an integer"},
        BadValue{"[server]\nlisten_port = \"8443\"",
                 "server.listen_port must be an integer between 0 and 65535, got \"8443\""},
        BadValue{"[server]\nlisten_address = \"localhost\"",
                 "server.listen_address must be an IPv4 or IPv6 address"},
        BadValue{"[server]\nio_threads = 0", "server.io_threads must be an integer between 1"},
        BadValue{"[server]\nworker_threads = 1000", "between 1 and 256, got 1000"},
        BadValue{"[server]\nmax_connections = 0", "server.max_connections"},
        BadValue{"[server]\nmax_queued_requests = 0", "server.max_queued_requests"},
        BadValue{"[server]\nshutdown_timeout_ms = 1.5", "server.shutdown_timeout_ms"},
        BadValue{"[limits]\nmax_body_bytes = 0",
                 "limits.max_body_bytes must be an integer between 1024 and 268435456, got 0"},
        BadValue{"[limits]\nmax_header_bytes = 100", "limits.max_header_bytes"},
        BadValue{"[limits]\nread_timeout_ms = \"fast\"", "limits.read_timeout_ms"},
        BadValue{"[limits]\nidle_timeout_ms = 10", "limits.idle_timeout_ms"},
        BadValue{"[limits]\nhandshake_timeout_ms = 0", "limits.handshake_timeout_ms"},
        BadValue{"[limits]\nmax_child_keys = 0", "limits.max_child_keys"},
        BadValue{"[limits]\nmax_body_bytes = 4096\nmax_package_bytes = 8192",
                 "limits.max_package_bytes (8192) must not exceed limits.max_body_bytes"},
        BadValue{"[tls]\nrequest_client_cert = 1", "tls.request_client_cert must be true or false"},
        BadValue{"[ma]\nkey_id = \"a b\"", "ma.key_id must be 1 to 64 characters"},
        BadValue{"[trust]\nek_roots = \"roots\"", "trust.ek_roots must be an array"},
        BadValue{"[trust]\nek_roots = [\"\"]", "trust.ek_roots must be an array"},
        BadValue{"[trust]\nek_templates = \"ek.pub\"", "trust.ek_templates must be an array"},
        BadValue{"[auth]\nsession_ttl_s = 0", "auth.session_ttl_s"},
        BadValue{"[auth]\nchallenge_ttl_s = 99999", "auth.challenge_ttl_s"},
        BadValue{"[auth]\ndownload_nonce_ttl_s = true", "auth.download_nonce_ttl_s"},
        BadValue{"[log]\nlevel = \"loud\"", "log.level must be one of trace, debug"},
        BadValue{"[bench]\necho = \"yes\"", "bench.echo must be true or false"},
        BadValue{"[vault]\nmax_batch = 0",
                 "vault.max_batch must be an integer between 1 and 4096, got 0"},
        BadValue{"[vault]\nread_connections = 65", "vault.read_connections"},
        BadValue{"[vault]\nmax_deferred_audit = 0",
                 "vault.max_deferred_audit must be an integer between 1 and 1000000, got 0"},
        BadValue{"[vault]\ndeferred_audit_delay_ms = 1001", "vault.deferred_audit_delay_ms"},
        BadValue{"[auth]\nmax_pending_challenges = 0", "auth.max_pending_challenges"},
        BadValue{"[auth]\nek_cache_entries = -1", "auth.ek_cache_entries"},
        BadValue{"[audit]\nreads = \"off\"",
                 "audit.reads must be \"deferred\" or \"durable\", got \"off\""},
        BadValue{"[audit]\nreads = true", "audit.reads must be"},
        BadValue{"[enrollment]\npolicy = \"closed\"",
                 "enrollment.policy must be \"open\", \"registered\" or \"approve-first\", "
                 "got \"closed\""},
        BadValue{"[approvals]\nsingle_use = 0", "approvals.single_use must be true or false"},
        BadValue{"[escrow]\ncustody = \"hsm\"",
                 "escrow.custody must be \"none\", \"software\" or \"tpm\""},
        BadValue{"[escrow]\ncustody = \"software\"\ncertificate = \"e.crt\"",
                 "escrow.private_key is required"},
        BadValue{"[escrow]\ncustody = \"tpm\"\ncertificate = \"e.crt\"",
                 "escrow.tpm_tcti is required"},
        BadValue{"[escrow]\ncustody = \"software\"\nprivate_key = \"e.key\"",
                 "escrow.certificate is required"},
        BadValue{"[escrow]\ncustody = \"software\"\nkey_id = \"ma-1\"\nprivate_key = "
                 "\"e.key\"\ncertificate = \"e.crt\"",
                 "escrow.key_id must differ from ma.key_id"},
        BadValue{"[escrow]\ncustody = \"software\"\nprivate_key = \"ma/key.pem\"\n"
                 "certificate = \"e.crt\"",
                 "escrow.private_key must be a different file from ma.private_key"},
        BadValue{"[server]\nmalloc_arenas = -1",
                 "server.malloc_arenas must be an integer between 0 and 256, got -1"}));

TEST(ConfigTest, ThroughputKeysHaveSafeDefaultsAndParse) {
  Result<Config> d = Parse("");
  ASSERT_TRUE(d.has_value()) << d.error().ToString();
  EXPECT_EQ(d->vault_max_batch, 64u);
  EXPECT_EQ(d->vault_read_connections, 4u);
  EXPECT_EQ(d->vault_max_deferred_audit, 8192u);
  EXPECT_EQ(d->vault_deferred_audit_delay_ms, 10u);
  EXPECT_EQ(d->max_pending_challenges, 20000u);
  EXPECT_EQ(d->ek_cache_entries, 4096u);
  EXPECT_EQ(d->audit_reads, "deferred");
  EXPECT_EQ(d->malloc_arenas, 2);

  Result<Config> c = ParseConfig(std::string(kRequired) +
                                     "max_batch = 128\nread_connections = 8\n"
                                     "max_deferred_audit = 100\ndeferred_audit_delay_ms = 0\n"
                                     "[auth]\nmax_pending_challenges = 5\nek_cache_entries = 0\n"
                                     "[audit]\nreads = \"durable\"\n",
                                 "/srv/ma", "test.toml");
  ASSERT_TRUE(c.has_value()) << c.error().ToString();
  EXPECT_EQ(c->vault_path, "/srv/ma/vault.db");  // the [vault] of kRequired is kept
  EXPECT_EQ(c->vault_max_batch, 128u);
  EXPECT_EQ(c->vault_read_connections, 8u);
  EXPECT_EQ(c->vault_max_deferred_audit, 100u);
  EXPECT_EQ(c->vault_deferred_audit_delay_ms, 0u);
  EXPECT_EQ(c->max_pending_challenges, 5u);
  EXPECT_EQ(c->ek_cache_entries, 0u);
  EXPECT_EQ(c->audit_reads, "durable");

  Result<Config> typo = Parse("[audit]\nread = \"deferred\"");
  ASSERT_FALSE(typo.has_value());
  EXPECT_NE(typo.error().message().find("unknown key audit.read (did you mean audit.reads?)"),
            std::string::npos)
      << typo.error().message();
}

// [vault] url selects PostgreSQL: path is then optional, password_file resolves like any path
// and needs url; the URL's own password is refused where the vault is opened
// (tests/server/vault_open_test.cc), which can parse it.
TEST(ConfigTest, VaultUrlMakesThePathOptionalAndTakesAPasswordFile) {
  const std::string without_path =
      std::string(kRequired).substr(0, std::string(kRequired).find("path = \"vault.db\""));
  Result<Config> c =
      ParseConfig(without_path +
                      "url = \"postgresql://ma@db:5432/tpmma\"\npassword_file = \"pw\"\n"
                      "[server]\ndrain_ms = 3000\n",
                  "/srv/ma", "test.toml");
  ASSERT_TRUE(c.has_value()) << c.error().ToString();
  EXPECT_EQ(c->vault_url, "postgresql://ma@db:5432/tpmma");
  EXPECT_EQ(c->vault_password_file, "/srv/ma/pw");
  EXPECT_EQ(c->vault_path, "");
  EXPECT_EQ(c->drain_ms, 3000u);
  Result<Config> back = ParseConfig(ConfigToToml(*c), "/", "roundtrip");
  ASSERT_TRUE(back.has_value()) << back.error().ToString();
  EXPECT_EQ(*back, *c);

  Result<Config> neither = ParseConfig(without_path, "/srv/ma", "test.toml");
  ASSERT_FALSE(neither.has_value());
  EXPECT_NE(neither.error().message().find("vault.path is required"), std::string::npos);
  Result<Config> stray = Parse("[vault]\npassword_file = \"pw\"");
  ASSERT_FALSE(stray.has_value());
  EXPECT_NE(stray.error().message().find("vault.password_file is for PostgreSQL"),
            std::string::npos)
      << stray.error().message();
  EXPECT_EQ(Parse("")->drain_ms, 0u);
}

// Issue #16: the policy-signing key's public half and its approval, relative to the file,
// written back by ConfigToToml, and only together.
TEST(ConfigTest, PolicyKeyAndApprovalGoTogether) {
  Result<Config> c = ParseConfig(std::string(kRequired) +
                                     "[policy]\npublic_key = \"policy/p.pub.pem\"\n"
                                     "approval = \"policy/ma-1.approval\"\n",
                                 "/srv/ma", "test.toml");
  ASSERT_TRUE(c.has_value()) << c.error().ToString();
  EXPECT_EQ(c->policy_public_key, "/srv/ma/policy/p.pub.pem");
  EXPECT_EQ(c->policy_approval, "/srv/ma/policy/ma-1.approval");
  Result<Config> back = ParseConfig(ConfigToToml(*c), "/", "roundtrip");
  ASSERT_TRUE(back.has_value()) << back.error().ToString();
  EXPECT_EQ(*back, *c);
  EXPECT_TRUE(Parse("")->policy_public_key.empty());
  for (const char* half : {"[policy]\npublic_key = \"p.pem\"", "[policy]\napproval = \"a\""}) {
    Result<Config> bad = Parse(half);
    ASSERT_FALSE(bad.has_value()) << half;
    EXPECT_NE(bad.error().message().find("policy.public_key and policy.approval go together"),
              std::string::npos)
        << bad.error().message();
  }
}

// [policy] custody = "tpm" (`ma-admin policy-key import-tpm`): where ma-admin signs approvals;
// the TPM blobs are required with it, and "software" is no custody of its own (the PEM is).
TEST(ConfigTest, PolicySignerInTheTpm) {
  const std::string policy =
      "[policy]\npublic_key = \"policy/p.pub.pem\"\napproval = \"policy/ma-1.approval\"\n";
  Result<Config> c =
      ParseConfig(std::string(kRequired) + policy +
                      "custody = \"tpm\"\ntpm_tcti = \"device:/dev/tpmrm0\"\n"
                      "tpm_public = \"policy/k.pub\"\ntpm_private = \"policy/k.priv\"\n",
                  "/srv/ma", "test.toml");
  ASSERT_TRUE(c.has_value()) << c.error().ToString();
  EXPECT_EQ(c->policy_signer.custody, "tpm");
  EXPECT_EQ(c->policy_signer.tpm_private, "/srv/ma/policy/k.priv");
  Result<Config> back = ParseConfig(ConfigToToml(*c), "/", "roundtrip");
  ASSERT_TRUE(back.has_value()) << back.error().ToString();
  EXPECT_EQ(back->policy_signer, c->policy_signer);
  EXPECT_EQ(ParseConfig(std::string(kRequired) + policy, "/srv/ma", "t")->policy_signer.custody,
            "none");
  for (const std::string& extra :
       {std::string("custody = \"tpm\"\n"), std::string("custody = \"software\"\n")}) {
    Result<Config> bad = ParseConfig(std::string(kRequired) + policy + extra, "/srv/ma", "t");
    EXPECT_FALSE(bad.has_value()) << extra;
  }
}

// Issue #14: the load balancers whose PROXY line the server believes.
TEST(ConfigTest, TrustedProxiesAreAddresses) {
  Result<Config> c = Parse("[server]\ntrusted_proxies = [\"127.0.0.1\", \"::1\"]");
  ASSERT_TRUE(c.has_value()) << c.error().ToString();
  EXPECT_EQ(c->trusted_proxies, (std::vector<std::string>{"127.0.0.1", "::1"}));
  EXPECT_TRUE(Parse("")->trusted_proxies.empty());
  for (const char* bad : {"[\"haproxy.example\"]", "[\"10.0.0.0/8\"]", "\"127.0.0.1\"", "[1]"}) {
    Result<Config> r = Parse(std::string("[server]\ntrusted_proxies = ") + bad);
    ASSERT_FALSE(r.has_value()) << bad;
    EXPECT_NE(r.error().message().find("server.trusted_proxies"), std::string::npos)
        << r.error().message();
    EXPECT_NE(r.error().message().find("an IPv4 or IPv6 address"), std::string::npos)
        << r.error().message();
  }
}

TEST(ConfigTest, BadTlsPathIsNamed) {
  // The required block defines [tls] already; a second [tls] is a TOML error, so test the
  // value through a full text.
  Result<Config> c = ParseConfig(
      "[tls]\ncertificate = \"\"\nprivate_key = \"k\"\n[ma]\nprivate_key = \"a\"\n"
      "certificate = \"b\"\n[vault]\npath = \"v\"\n",
      "/srv", "t.toml");
  ASSERT_FALSE(c.has_value());
  EXPECT_NE(c.error().message().find("tls.certificate must be a non-empty path"), std::string::npos)
      << c.error().message();
}

TEST(ConfigTest, UnknownKeysAndSectionsAreErrorsWithSuggestions) {
  Result<Config> typo = Parse("[server]\nlisten_adress = \"0.0.0.0\"");
  ASSERT_FALSE(typo.has_value());
  EXPECT_NE(typo.error().message().find(
                "unknown key server.listen_adress (did you mean server.listen_address?)"),
            std::string::npos)
      << typo.error().message();

  Result<Config> section = Parse("[srever]\nlisten_port = 1");
  ASSERT_FALSE(section.has_value());
  EXPECT_NE(section.error().message().find("unknown section [srever] (did you mean server?)"),
            std::string::npos)
      << section.error().message();

  Result<Config> unrelated = Parse("[server]\nfrobnicate = 1\n[extra]\nx = 1");
  ASSERT_FALSE(unrelated.has_value());
  // Every problem is reported at once, not one per run.
  EXPECT_NE(unrelated.error().message().find("unknown key server.frobnicate"), std::string::npos);
  EXPECT_NE(unrelated.error().message().find("unknown section [extra]"), std::string::npos);
  EXPECT_EQ(unrelated.error().message().find("did you mean"), std::string::npos);

  Result<Config> not_table = ParseConfig("server = 1\n" + std::string(kRequired), "/", "t");
  ASSERT_FALSE(not_table.has_value());
  EXPECT_NE(not_table.error().message().find("server must be a table"), std::string::npos)
      << not_table.error().message();
}

TEST(ConfigTest, MissingRequiredKeysAreNamed) {
  Result<Config> c = ParseConfig("[server]\nlisten_port = 1\n", "/srv", "t.toml");
  ASSERT_FALSE(c.has_value());
  for (const char* key :
       {"tls.certificate is required", "tls.private_key is required", "ma.private_key is required",
        "ma.certificate is required", "vault.path is required"}) {
    EXPECT_NE(c.error().message().find(key), std::string::npos) << c.error().message();
  }
}

TEST(ConfigTest, SyntaxErrorNamesFileAndLine) {
  Result<Config> c = ParseConfig("[server]\nlisten_port = = 1\n", "/srv", "ma.toml");
  ASSERT_FALSE(c.has_value());
  EXPECT_EQ(c.error().code(), Code::kInvalidArgument);
  EXPECT_TRUE(c.error().message().starts_with("ma.toml:2:")) << c.error().message();
}

TEST(ConfigTest, MissingFileIsAnError) {
  TempDir dir;
  Result<Config> c = LoadConfig(dir.File("nope.toml"));
  ASSERT_FALSE(c.has_value());
  EXPECT_NE(c.error().code(), Code::kOk);
}

// [[escrow.retired]]: each entry is read like [escrow], and its errors say which one.
TEST(ConfigTest, RetiredEscrowKeysAreCheckedOneByOne) {
  const std::string current =
      "[escrow]\ncustody = \"software\"\nkey_id = \"escrow-2\"\nprivate_key = \"e2.key\"\n"
      "certificate = \"e2.crt\"\n";
  auto parse = [&](const std::string& retired) { return Parse(current + retired); };
  Result<Config> ok = parse(
      "[[escrow.retired]]\ncustody = \"software\"\nkey_id = \"escrow-1\"\n"
      "private_key = \"e1.key\"\ncertificate = \"e1.crt\"\n");
  ASSERT_TRUE(ok.has_value()) << ok.error().ToString();
  ASSERT_EQ(ok->escrow_retired.size(), 1u);
  EXPECT_EQ(ok->escrow_retired[0].private_key, "/srv/ma/e1.key");
  const std::pair<std::string, std::string> bad[] = {
      {"[[escrow.retired]]\ncustody = \"none\"\nkey_id = \"escrow-1\"\n",
       "escrow.retired[0]: escrow.custody must be \"software\" or \"tpm\""},
      {"[[escrow.retired]]\ncustody = \"software\"\nprivate_key = \"e1.key\"\n"
       "certificate = \"e1.crt\"\n",
       "escrow.retired[0]: escrow.key_id is required"},
      {"[[escrow.retired]]\ncustody = \"software\"\nkey_id = \"escrow-2\"\n"
       "private_key = \"e1.key\"\ncertificate = \"e1.crt\"\n",
       "escrow.retired[0]: key_id \"escrow-2\" is used twice"},
      {"[[escrow.retired]]\ncustody = \"software\"\nkey_id = \"escrow-1\"\n"
       "certificate = \"e1.crt\"\ncolour = 1\n",
       "escrow.retired[0]: unknown key escrow.colour"},
  };
  for (const auto& [toml, message] : bad) {
    Result<Config> c = parse(toml);
    ASSERT_FALSE(c.has_value()) << toml;
    EXPECT_NE(c.error().message().find(message), std::string::npos) << c.error().message();
  }
  Result<Config> not_tables = Parse(current + "retired = [\"e1\"]\n");
  ASSERT_FALSE(not_tables.has_value());
  EXPECT_NE(not_tables.error().message().find("escrow.retired must be an array of tables"),
            std::string::npos)
      << not_tables.error().message();
}

// [[ma.retiring]] (issue #16): storage keys a rotation replaced, read like [ma]; no id twice
// among the MA's keys; written back by ConfigToToml.
TEST(ConfigTest, RetiringMaKeysAreReadCheckedAndWritten) {
  // kRequired's [ma] is ma-1; its [[ma.retiring]] entries follow the other tables.
  const std::string escrow =
      "[escrow]\ncustody = \"software\"\nkey_id = \"escrow-1\"\nprivate_key = \"e.key\"\n"
      "certificate = \"e.crt\"\n";
  auto parse = [&](const std::string& retiring) { return Parse(escrow + retiring); };
  Result<Config> ok = parse(
      "[[ma.retiring]]\ncustody = \"tpm\"\nkey_id = \"ma-0\"\ncertificate = \"m0.crt\"\n"
      "tpm_tcti = \"device:/dev/tpmrm0\"\ntpm_public = \"m0.pub\"\ntpm_private = \"m0.priv\"\n");
  ASSERT_TRUE(ok.has_value()) << ok.error().ToString();
  ASSERT_EQ(ok->ma_retiring.size(), 1u);
  EXPECT_EQ(ok->ma_retiring[0].custody, "tpm");
  EXPECT_EQ(ok->ma_retiring[0].tpm_private, "/srv/ma/m0.priv");
  Result<Config> again = ParseConfig(ConfigToToml(*ok), "/srv/ma", "again.toml");
  ASSERT_TRUE(again.has_value()) << again.error().ToString();
  EXPECT_EQ(again->ma_retiring, ok->ma_retiring);
  const std::pair<std::string, std::string> bad[] = {
      {"[[ma.retiring]]\ncustody = \"software\"\nkey_id = \"ma-1\"\nprivate_key = \"x\"\n"
       "certificate = \"y\"\n",
       "ma.retiring[0]: key_id \"ma-1\" is used twice among the ma keys"},
      {"[[ma.retiring]]\ncustody = \"software\"\nkey_id = \"escrow-1\"\nprivate_key = \"x\"\n"
       "certificate = \"y\"\n",
       "ma.retiring[0]: key_id \"escrow-1\" is used twice"},
      {"[[ma.retiring]]\ncustody = \"tpm\"\nkey_id = \"ma-0\"\ncertificate = \"y\"\n",
       "ma.retiring[0]: ma.tpm_tcti is required"},
  };
  for (const auto& [toml, message] : bad) {
    Result<Config> c = parse(toml);
    ASSERT_FALSE(c.has_value()) << toml;
    EXPECT_NE(c.error().message().find(message), std::string::npos) << c.error().message();
  }
}

TEST(ConfigTest, ConfigToTomlRoundTrips) {
  Config c;
  c.listen_address = "0.0.0.0";
  c.listen_port = 0;
  c.io_threads = 4;
  c.worker_threads = 16;
  c.max_connections = 5000;
  c.max_queued_requests = 77;
  c.shutdown_timeout_ms = 0;
  c.trusted_proxies = {"10.0.0.5", "fd00::5"};
  c.tls_certificate = "/state/tls \"quoted\" \\ dir/cert.pem";
  c.tls_private_key = "/state/tls/key.pem";
  c.tls_client_ca = "/state/admin-ca.pem";
  c.tls_request_client_cert = true;
  c.max_header_bytes = 16384;
  c.max_body_bytes = 2 << 20;
  c.read_timeout_ms = 1234;
  c.idle_timeout_ms = 4321;
  c.handshake_timeout_ms = 999;
  c.max_package_bytes = 1 << 20;
  c.max_child_keys = 12;
  c.ma.key_id = "ma-7";
  c.ma.private_key = "/state/ma/key.pem";
  c.ma.certificate = "/state/ma/cert.pem";
  c.vault_path = "/state/vault.db";
  c.ek_roots = {"/state/roots", "/usr/share/tpm/ek-roots/infineon.pem"};
  c.ek_intermediates = {"/state/trust/ek-intermediates"};
  c.ek_templates = {"/state/trust/site-ek.pub"};
  c.challenge_ttl_s = 30;
  c.session_ttl_s = 300;
  c.download_nonce_ttl_s = 45;
  c.log_level = "warn";
  c.bench_echo = true;
  c.vault_max_batch = 7;
  c.vault_read_connections = 2;
  c.vault_max_deferred_audit = 33;
  c.vault_deferred_audit_delay_ms = 0;
  c.max_pending_challenges = 99;
  c.ek_cache_entries = 0;
  c.audit_reads = "durable";
  c.malloc_arenas = 0;
  c.approvals_single_use = false;
  c.metrics_enabled = true;
  c.metrics_allow = {"10.0.0.7", "fd00::1"};
  c.escrow.custody = "tpm";
  c.escrow.key_id = "escrow-9";
  c.escrow.certificate = "/state/escrow/cert.pem";
  c.escrow.tpm_tcti = "device:/dev/tpmrm0";
  c.escrow.tpm_public = "/state/escrow/tpm.pub";
  c.escrow.tpm_private = "/state/escrow/tpm.priv";
  c.escrow.tpm_parent = 0x81000010;
  c.escrow_retired = {{.custody = "software",
                       .key_id = "escrow-7",
                       .private_key = "/state/escrow/escrow-7-key.pem",
                       .certificate = "/state/escrow/escrow-7-cert.pem",
                       .tpm_tcti = "",
                       .tpm_public = "",
                       .tpm_private = "",
                       .tpm_parent = 0x81000001},
                      {.custody = "tpm",
                       .key_id = "escrow-8",
                       .private_key = "",
                       .certificate = "/state/escrow/escrow-8-cert.pem",
                       .tpm_tcti = "swtpm:host=127.0.0.1,port=2321",
                       .tpm_public = "/state/escrow/escrow-8.pub",
                       .tpm_private = "/state/escrow/escrow-8.priv",
                       .tpm_parent = 0x81000002}};
  std::string text = ConfigToToml(c);
  Result<Config> back = ParseConfig(text, "/elsewhere", "roundtrip");
  ASSERT_TRUE(back.has_value()) << back.error().ToString() << "\n" << text;
  EXPECT_TRUE(*back == c) << text;

  // Defaults too (empty optional paths are left out, not written as "").
  Config d;
  d.tls_certificate = "/a";
  d.tls_private_key = "/b";
  d.ma.private_key = "/c";
  d.ma.certificate = "/d";
  d.vault_path = "/e";
  Result<Config> back_d = ParseConfig(ConfigToToml(d), "/", "roundtrip");
  ASSERT_TRUE(back_d.has_value()) << back_d.error().ToString();
  EXPECT_TRUE(*back_d == d);
}

// [metrics] (GET /metrics): off by default, loopback only by default; each allowed entry
// must be one IP address, and enabled with nobody allowed is refused.
TEST(ConfigTest, MetricsKeysHaveSafeDefaultsAndRefuseBadAddresses) {
  Result<Config> d = Parse("");
  ASSERT_TRUE(d.has_value()) << d.error().ToString();
  EXPECT_FALSE(d->metrics_enabled);
  EXPECT_EQ(d->metrics_allow, (std::vector<std::string>{"127.0.0.1", "::1"}));

  Result<Config> c = Parse("[metrics]\nenabled = true\nallow = [\"192.0.2.10\", \"::1\"]\n");
  ASSERT_TRUE(c.has_value()) << c.error().ToString();
  EXPECT_TRUE(c->metrics_enabled);
  EXPECT_EQ(c->metrics_allow, (std::vector<std::string>{"192.0.2.10", "::1"}));

  for (const char* bad : {"[\"192.0.2.0/24\"]", "[\"localhost\"]", "[\"\"]", "[1]"}) {
    Result<Config> r = Parse(std::string("[metrics]\nallow = ") + bad + "\n");
    ASSERT_FALSE(r.has_value()) << bad;
    EXPECT_EQ(r.error().code(), Code::kInvalidArgument);
    EXPECT_NE(r.error().message().find("metrics.allow[0] must be an IPv4 or IPv6 address"),
              std::string::npos)
        << r.error().message();
  }
  Result<Config> not_array = Parse("[metrics]\nallow = \"127.0.0.1\"\n");
  ASSERT_FALSE(not_array.has_value());
  EXPECT_NE(not_array.error().message().find("metrics.allow must be an array"), std::string::npos)
      << not_array.error().message();
  Result<Config> nobody = Parse("[metrics]\nenabled = true\nallow = []\n");
  ASSERT_FALSE(nobody.has_value());
  EXPECT_NE(nobody.error().message().find("metrics.allow is empty"), std::string::npos)
      << nobody.error().message();
  Result<Config> typo = Parse("[metrics]\nenable = true\n");
  ASSERT_FALSE(typo.has_value());
  EXPECT_NE(typo.error().message().find("did you mean metrics.enabled"), std::string::npos)
      << typo.error().message();
}

// What `ma-admin init` writes: relative paths stay relative in the text and resolve
// against the directory the file is read from; the MA's TPM-key block (custody "tpm",
// another parent) comes back as it was.
TEST(ConfigTest, ConfigToTomlKeepsRelativePathsRelative) {
  Config c;
  c.tls_certificate = "tls/server-cert.pem";
  c.tls_private_key = "tls/server-key.pem";
  c.ma.custody = "tpm";
  c.ma.certificate = "ma/ma-cert.pem";
  c.ma.tpm_tcti = "swtpm:host=127.0.0.1,port=2321";
  c.ma.tpm_public = "ma/ma-tpm.pub";
  c.ma.tpm_private = "ma/ma-tpm.priv";
  c.ma.tpm_parent = 0x81000002;
  c.vault_path = "vault.db";
  c.ek_roots = {"trust/ek-roots"};
  const std::string text = ConfigToToml(c);
  EXPECT_NE(text.find("\"ma/ma-tpm.pub\""), std::string::npos) << text;
  EXPECT_EQ(text.find("/state"), std::string::npos) << text;
  Result<Config> back = ParseConfig(text, "/state", "roundtrip");
  ASSERT_TRUE(back.has_value()) << back.error().ToString() << "\n" << text;
  EXPECT_EQ(back->tls_certificate, "/state/tls/server-cert.pem");
  EXPECT_EQ(back->ma.custody, "tpm");
  EXPECT_EQ(back->ma.tpm_public, "/state/ma/ma-tpm.pub");
  EXPECT_EQ(back->ma.tpm_private, "/state/ma/ma-tpm.priv");
  EXPECT_EQ(back->ma.certificate, "/state/ma/ma-cert.pem");
  EXPECT_EQ(back->ma.tpm_parent, 0x81000002u);
  EXPECT_EQ(back->vault_path, "/state/vault.db");
  EXPECT_EQ(back->ek_roots, std::vector<std::string>{"/state/trust/ek-roots"});
  EXPECT_EQ(ConfigToToml(c), text);  // the same Config, the same text (stable diffs)
}

// A config.toml as the hand-written writer before toml++ wrote it (`ma-admin init` and one
// `escrow rotate`): files in the field must still load, with the same values.
TEST(ConfigTest, FilesWrittenByEarlierVersionsStillLoad) {
  constexpr const char* kEarlier =
      R"(# ma-server configuration. Relative paths are relative to this file's directory.

[server]
listen_address = "127.0.0.1"
listen_port = 0
io_threads = 2
worker_threads = 8
max_connections = 1024
max_queued_requests = 256
shutdown_timeout_ms = 10000
malloc_arenas = 2

[tls]
certificate = "tls/server-cert.pem"
private_key = "tls/server-key.pem"
client_ca = "ca/operator-ca-cert.pem"
request_client_cert = false

[limits]
max_header_bytes = 8192
max_body_bytes = 16777216
read_timeout_ms = 10000
idle_timeout_ms = 60000
handshake_timeout_ms = 5000
max_package_bytes = 8388608
max_child_keys = 1000

[ma]
key_id = "ma-1"
private_key = "ma/ma-key.pem"
certificate = "ma/ma-cert.pem"
custody = "software"

[escrow]
custody = "software"
key_id = "escrow-2"
private_key = "escrow/escrow-2-key.pem"
certificate = "escrow/escrow-2-cert.pem"

# Retired by ma-admin escrow rotate: releases what it escrowed, escrows nothing new.
[[escrow.retired]]
custody = "software"
key_id = "escrow-1"
private_key = "escrow/escrow-key.pem"
certificate = "escrow/escrow-cert.pem"

[approvals]
two_person = false
max_ttl_s = 604800
single_use = true

[vault]
path = "vault.db"
max_batch = 64
read_connections = 4
max_deferred_audit = 8192
deferred_audit_delay_ms = 10

[trust]
ek_roots = ["trust/ek-roots"]

[auth]
challenge_ttl_s = 120
session_ttl_s = 900
download_nonce_ttl_s = 300
max_pending_challenges = 20000
ek_cache_entries = 4096

[audit]
reads = "deferred"

[log]
level = "info"

[bench]
echo = false
)";
  Result<Config> c = ParseConfig(kEarlier, "/var/lib/tpm-ma", "config.toml");
  ASSERT_TRUE(c.has_value()) << c.error().ToString();
  Config want;
  want.listen_port = 0;
  want.tls_certificate = "/var/lib/tpm-ma/tls/server-cert.pem";
  want.tls_private_key = "/var/lib/tpm-ma/tls/server-key.pem";
  want.tls_client_ca = "/var/lib/tpm-ma/ca/operator-ca-cert.pem";
  want.ma.private_key = "/var/lib/tpm-ma/ma/ma-key.pem";
  want.ma.certificate = "/var/lib/tpm-ma/ma/ma-cert.pem";
  want.escrow = TpmKeyConfig::Named("software", "escrow-2");
  want.escrow.private_key = "/var/lib/tpm-ma/escrow/escrow-2-key.pem";
  want.escrow.certificate = "/var/lib/tpm-ma/escrow/escrow-2-cert.pem";
  TpmKeyConfig retired = TpmKeyConfig::Named("software", "escrow-1");
  retired.private_key = "/var/lib/tpm-ma/escrow/escrow-key.pem";
  retired.certificate = "/var/lib/tpm-ma/escrow/escrow-cert.pem";
  want.escrow_retired = {retired};
  want.vault_path = "/var/lib/tpm-ma/vault.db";
  want.ek_roots = {"/var/lib/tpm-ma/trust/ek-roots"};
  EXPECT_TRUE(*c == want);
  // And what the new writer makes of it reads back the same.
  Result<Config> again = ParseConfig(ConfigToToml(*c), "/elsewhere", "roundtrip");
  ASSERT_TRUE(again.has_value()) << again.error().ToString();
  EXPECT_TRUE(*again == want);
}

TEST(ConfigTest, CheckConfigFilesNamesTheMissingFile) {
  TempDir dir;
  for (const char* f : {"cert.pem", "key.pem", "ma.pem", "ma.crt"}) Write(dir.File(f), "x");
  Config c;
  c.tls_certificate = dir.File("cert.pem");
  c.tls_private_key = dir.File("key.pem");
  c.ma.private_key = dir.File("ma.pem");
  c.ma.certificate = dir.File("ma.crt");
  c.vault_path = dir.File("vault.db");
  c.ek_roots = {dir.path()};
  EXPECT_TRUE(CheckConfigFiles(c).ok()) << CheckConfigFiles(c).ToString();

  Config missing = c;
  missing.ma.certificate = dir.File("nope.crt");
  Status s = CheckConfigFiles(missing);
  EXPECT_EQ(s.code(), Code::kInvalidArgument);
  EXPECT_NE(s.message().find("ma.certificate"), std::string::npos) << s.message();

  Config no_dir = c;
  no_dir.vault_path = dir.File("no/such/dir/vault.db");
  EXPECT_NE(CheckConfigFiles(no_dir).message().find("vault.path"), std::string::npos);

  Config bad_root = c;
  bad_root.ek_roots = {dir.File("none.pem")};
  EXPECT_NE(CheckConfigFiles(bad_root).message().find("trust.ek_roots"), std::string::npos);
}

}  // namespace
}  // namespace tpmma::server
