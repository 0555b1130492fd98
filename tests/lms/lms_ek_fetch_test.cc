// SPDX-License-Identifier: GPL-2.0-or-later
// `lms ek fetch` (issue #12) against stand-ins of the Intel PTT and AMD fTPM EK services
// (ek_service_standin.py: TLS on loopback with a CA made here, the vendors' reply formats,
// the request path derived there, independently, from the certificate's key; anything
// else is a 404). The swtpm's own EK certificate is read out and its NV indices removed, so
// that this TPM looks like a firmware TPM: after `lms ek fetch` the real ma-server accepts
// `lms authenticate` with no --ek-cert. Refusals: a certificate for another key, 404,
// broken replies, a reply over 64 KiB, an untrusted or misnamed server, http://.
#include <signal.h>

#include <thread>

#include "tests/lms/lms_ma_fixture.h"

namespace tpmma::lms {
namespace {

struct EkWorld {
  Swtpm* t = nullptr;
  TempDir dir;
  std::unique_ptr<MaInstance> ma;
  std::vector<std::string> ma_flags;
  pid_t standin = -1;
  std::string service;  // https://127.0.0.1:PORT
  ~EkWorld() {
    if (standin > 0) {
      ::kill(standin, SIGTERM);
      ::waitpid(standin, nullptr, 0);
    }
  }
};

std::string Openssl(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {"openssl"};
  argv.insert(argv.end(), args.begin(), args.end());
  auto r = RunCommand(argv);
  return r.exit_code == 0 ? "" : "openssl " + args[0] + ": " + r.output;
}

// A test CA and the stand-in's server certificate (for 127.0.0.1 only), and an ECC P-256 EK
// certificate for the L-2 EK, issued by the test CA.
std::string MakeCertificates(EkWorld& w) {
  auto f = [&](const char* n) { return w.dir.File(n); };
  std::string e = Openssl({"req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                           "-nodes", "-keyout", f("ca.key"), "-out", f("ca.pem"), "-subj",
                           "/CN=ek service test CA", "-days", "2"});
  if (e.empty()) {
    e = Openssl({"req",
                 "-newkey",
                 "ec",
                 "-pkeyopt",
                 "ec_paramgen_curve:P-256",
                 "-nodes",
                 "-keyout",
                 f("server.key"),
                 "-out",
                 f("server.pem"),
                 "-subj",
                 "/CN=127.0.0.1",
                 "-addext",
                 "subjectAltName=IP:127.0.0.1",
                 "-x509",
                 "-CA",
                 f("ca.pem"),
                 "-CAkey",
                 f("ca.key"),
                 "-days",
                 "2"});
  }
  if (!e.empty()) return e;
  auto t = w.t->Tools(
      {"tpm2_createek", "-G", "ecc", "-c", f("ecc-ek.ctx"), "-u", f("ecc-ek.pem"), "-f", "pem"});
  if (t.exit_code != 0) return "tpm2_createek: " + t.output;
  t = w.t->Tools({"tpm2_flushcontext", f("ecc-ek.ctx")});
  return Openssl({"x509", "-new", "-force_pubkey", f("ecc-ek.pem"), "-subj", "/CN=ECC EK", "-CA",
                  f("ca.pem"), "-CAkey", f("ca.key"), "-days", "2", "-outform", "DER", "-out",
                  f("ecc-ek.der")});
}

std::string StartStandin(EkWorld& w) {
  const std::string port_file = w.dir.File("standin.port");
  std::vector<std::string> argv = {
      "/usr/bin/python3", EK_STANDIN_PATH,          "--tls-cert",  w.dir.File("server.pem"),
      "--tls-key",        w.dir.File("server.key"), "--port-file", port_file,
      "--serve",          w.dir.File("ek.der"),     "--serve",     w.dir.File("ecc-ek.der"),
      "--other",          w.dir.File("other.der")};
  std::vector<char*> args;
  for (auto& a : argv) args.push_back(a.data());
  args.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  const std::string log = w.dir.File("standin.log");
  posix_spawn_file_actions_addopen(&fa, 2, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  const int rc = posix_spawn(&w.standin, args[0], &fa, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) return "cannot start the stand-in";
  // Waits for the port file (written by rename once the socket listens), or its exit.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (!std::filesystem::exists(port_file)) {
    if (::waitpid(w.standin, nullptr, WNOHANG) == w.standin) {
      w.standin = -1;
      return "the stand-in exited: " + Slurp(log);
    }
    if (std::chrono::steady_clock::now() > deadline) return "the stand-in did not start";
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  w.service = "https://127.0.0.1:" + Slurp(port_file);
  return "";
}

std::string BuildEkWorld(EkWorld& w) {
  std::string why;
  w.t = testing::SharedSwtpm(0, &why);
  Swtpm* other = w.t != nullptr ? testing::SharedSwtpm(1, &why) : nullptr;
  if (other == nullptr) return "swtpm: " + why;
  auto t = w.t->Tools({"tpm2_nvread", "0x01c00002", "-C", "o", "-o", w.dir.File("ek.der")});
  if (t.exit_code != 0) return "tpm2_nvread: " + t.output;
  t = other->Tools({"tpm2_nvread", "0x01c00002", "-C", "o", "-o", w.dir.File("other.der")});
  if (t.exit_code != 0) return "tpm2_nvread: " + t.output;
  // A firmware TPM: no EK certificate in NV (the RSA one and swtpm's ECC H-3 one).
  for (const char* index : {"0x01c00002", "0x01c00016"}) {
    t = w.t->Tools({"tpm2_nvundefine", index, "-C", "p"});
    if (t.exit_code != 0) return "tpm2_nvundefine: " + t.output;
  }
  if (std::string e = MakeCertificates(w); !e.empty()) return e;
  if (std::string e = StartStandin(w); !e.empty()) return e;
  w.ma = MaInstance::Start({MA_ADMIN_PATH, MA_SERVER_PATH}, w.dir.path(), {w.t->RootCaCertPath()},
                           &why);
  if (w.ma == nullptr) return "ma-server: " + why;
  w.ma_flags = {"--ma",          w.ma->url(),         "--ma-ca",
                w.ma->ca_file(), "--ek-intermediate", w.t->IntermediateCaCertPath()};
  return "";
}

class LmsEkFetchTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string err;
    bool skip = false;
    w_ = testing::BuildOnce(&BuildEkWorld, &err, &skip);
    if (skip) GTEST_SKIP() << "swtpm not available: " << err;
    ASSERT_NE(w_, nullptr) << err;
  }
  Lms Store(const std::string& name) const { return {dir_.File(name), w_->t->tcti(), {}}; }
  // lms ek fetch from the stand-in's /<route>/ with the test CA trusted.
  Ran Fetch(const Lms& l, const std::string& vendor, const std::string& route,
            std::vector<std::string> more = {}) const {
    std::vector<std::string> args = {"ek",        "fetch",          "--vendor",
                                     vendor,      "--url",          w_->service + "/" + route,
                                     "--ca-file", dir(w_, "ca.pem")};
    args.insert(args.end(), more.begin(), more.end());
    return l(args);
  }
  static std::string dir(const EkWorld* w, const char* name) { return w->dir.File(name); }
  // The certificate was fetched, kept in the store and recorded; authenticate needs no flag.
  void ExpectKeptAndAuthenticates(const Lms& l) const {
    const std::string kept = l.store + "/ek-cert.der";
    EXPECT_EQ(Slurp(kept), Slurp(dir(w_, "ek.der")));
    EXPECT_EQ(json::parse(Slurp(l.store + "/config.json")).value("ek_cert", ""), kept);
    Lms with_ma = l;
    with_ma.ma_flags = w_->ma_flags;
    json auth = with_ma.Json({"authenticate"});
    EXPECT_FALSE(auth.value("platform_id", "").empty()) << auth.dump();
  }
  void ExpectNothingKept(const Lms& l) const {
    EXPECT_FALSE(std::filesystem::exists(l.store + "/ek-cert.der"));
    const std::string config = Slurp(l.store + "/config.json");
    EXPECT_TRUE(config.empty() || !json::parse(config).contains("ek_cert")) << config;
  }
  EkWorld* w_ = nullptr;
  TempDir dir_;
};

TEST_F(LmsEkFetchTest, IntelFormatThenAuthenticateWithoutFlags) {
  const Lms l = Store("intel");
  Ran r = Fetch(l, "intel", "intel/ok/", {"--json"});
  ASSERT_EQ(r.exit_code, 0) << r.all();
  json j = ParseJson(r);
  EXPECT_EQ(j.value("vendor", ""), "intel");
  EXPECT_EQ(j.value("ek_template", ""), "L-1");
  EXPECT_EQ(j.value("manufacturer", ""), "IBM");
  // base64url of a SHA-256 with its padding escaped, as tpm2_getekcertificate sends it.
  const std::string url = j.value("url", "");
  EXPECT_TRUE(url.starts_with(w_->service + "/intel/ok/")) << url;
  EXPECT_TRUE(url.ends_with("%3D")) << url;
  EXPECT_EQ(url.size(), (w_->service + "/intel/ok/").size() + 43 + 3) << url;
  EXPECT_NE(j.value("issuer", "").find("swtpm"), std::string::npos) << j.dump();
  EXPECT_FALSE(j.value("not_after", "").empty());
  ExpectKeptAndAuthenticates(l);
}

TEST_F(LmsEkFetchTest, AmdFormatThenAuthenticateWithoutFlags) {
  const Lms l = Store("amd");
  Ran r = Fetch(l, "amd", "amd/ok", {"--out", dir_.File("out.der")});  // no '/': lms adds it
  ASSERT_EQ(r.exit_code, 0) << r.all();
  EXPECT_NE(r.out.find("subject"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("not after"), std::string::npos) << r.out;
  EXPECT_EQ(Slurp(dir_.File("out.der")), Slurp(dir(w_, "ek.der")));
  // 16 bytes of the hash in hex.
  EXPECT_NE(r.out.find(w_->service + "/amd/ok/"), std::string::npos) << r.out;
  ExpectKeptAndAuthenticates(l);
}

TEST_F(LmsEkFetchTest, EccEkOfBothVendors) {
  for (const char* vendor : {"intel", "amd"}) {
    const Lms l = Store(std::string("ecc-") + vendor);
    Ran r = Fetch(l, vendor, std::string(vendor) + "/ok/", {"--alg", "ecc", "--json"});
    ASSERT_EQ(r.exit_code, 0) << r.all();
    EXPECT_EQ(ParseJson(r).value("ek_template", ""), "L-2");
    EXPECT_EQ(Slurp(l.store + "/ek-cert.der"), Slurp(dir(w_, "ecc-ek.der")));
  }
}

TEST_F(LmsEkFetchTest, RefusesWhatDoesNotCheckOut) {
  for (const char* vendor : {"intel", "amd"}) {
    SCOPED_TRACE(vendor);
    const std::string v = vendor;
    const Lms l = Store("refused-" + v);
    EXPECT_FAILS_WITH(Fetch(l, v, v + "/other/"), 1, "certificate for another key");
    EXPECT_FAILS_WITH(Fetch(l, v, "unknown/ok/"), 1, "HTTP 404");
    EXPECT_FAILS_WITH(Fetch(l, v, v + "/garbage/"), 1,
                      v == "intel" ? "not a JSON object" : "not one DER X.509");
    EXPECT_FAILS_WITH(Fetch(l, v, v + "/big/"), 1, "larger than 64 KiB");
    Ran r = Fetch(l, v, v + "/big/", {"--json"});
    EXPECT_EQ(ParseJson(r).value("code", ""), "LimitExceeded") << r.out;
    ExpectNothingKept(l);
  }
}

TEST_F(LmsEkFetchTest, RefusesAnUntrustedOrMisnamedServer) {
  const Lms l = Store("tls");
  // The system store does not know the test CA.
  EXPECT_FAILS_WITH(l({"ek", "fetch", "--vendor", "intel", "--url", w_->service + "/intel/ok/"}), 1,
                    "certificate verify failed");
  // The server's certificate names 127.0.0.1, not localhost.
  const std::string by_name = "https://localhost:" + w_->service.substr(w_->service.rfind(':') + 1);
  EXPECT_FAILS_WITH(l({"ek", "fetch", "--vendor", "intel", "--url", by_name + "/intel/ok/",
                       "--ca-file", dir(w_, "ca.pem")}),
                    1, "certificate verify failed");
  EXPECT_FAILS_WITH(l({"ek", "fetch", "--vendor", "amd", "--url", "http://127.0.0.1:1/amd/ok/"}), 1,
                    "only https://");
  ExpectNothingKept(l);
}

TEST_F(LmsEkFetchTest, AVendorWithoutAServiceIsNamed) {
  const Lms l = Store("ibm");
  // swtpm says "IBM": no online service; the message says what to do instead.
  Ran r = l({"ek", "fetch", "--url", w_->service + "/intel/ok/"});
  EXPECT_EQ(r.exit_code, 1) << r.all();
  EXPECT_NE(r.err.find("\"IBM\""), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("--ek-cert FILE"), std::string::npos) << r.err;
  EXPECT_EQ(l({"ek", "fetch", "--vendor", "ibm"}).exit_code, 2);
}

}  // namespace
}  // namespace tpmma::lms
