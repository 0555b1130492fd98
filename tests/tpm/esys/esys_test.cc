// SPDX-License-Identifier: GPL-2.0-or-later
// The ESAPI layer on two swtpm instances: A is the old platform, B the new one. Where a
// fact can be checked against tpm2-tools it is (Names); the MA side is tpm/ in software.
//
// swtpm serves one TCP connection at a time: a test closes its Tpm before it runs
// tpm2-tools against the same instance, or the tool would wait for the socket.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <map>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "common/openssl.h"
#include "tests/support/status_testing.h"
#include "tests/support/swtpm.h"
#include "tpm/attest.h"
#include "tpm/credential.h"
#include "tpm/esys/esys.h"
#include "tpm/esys/templates.h"
#include "tpm/esys/tpm_pkey.h"
#include "tpm/marshal.h"
#include "tpm/public.h"
#include "tpm/rewrap.h"

namespace tpmma::esys {
namespace {

using tpmma::testing::CommandResult;
using tpmma::testing::ReadFileOrDie;
using tpmma::testing::Swtpm;

Bytes Sha256(ByteView data) {
  Bytes out(32);
  unsigned int len = 0;
  EVP_Digest(data.data(), data.size(), out.data(), &len, EVP_sha256(), nullptr);
  return out;
}

SecureBytes Secret(ByteView b) {
  return SecureBytes(b.begin(), b.end());
}

// Median wall time of the calls recorded under one label, in ms.
std::map<std::string, std::vector<double>>& Timings() {
  static std::map<std::string, std::vector<double>> t;
  return t;
}
template <typename F>
auto Timed(const std::string& label, F&& f) {
  const auto t0 = std::chrono::steady_clock::now();
  auto r = f();
  Timings()[label].push_back(
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  return r;
}

// Children kept under an MRK made on A, with what each must do again on B.
struct MrkSet {
  KeyAlg alg = KeyAlg::kRsa2048;
  KeyBlob mrk;
  std::vector<std::pair<ChildType, KeyBlob>> children;
  SecureBytes sealed;  // data in the kSealed child
  Bytes plaintext;     // ...and its RSA-OAEP ciphertext, made by the TPM on A
  Bytes ciphertext;
};

struct World {
  Swtpm* a = nullptr;
  Swtpm* b = nullptr;
  EvpPkeyPtr ma_key;
  TPM2B_PUBLIC ma_pub{};
  Bytes ma_name;
  TPM2B_PUBLIC srk_b_rsa{}, srk_b_ecc{};
  MrkSet rsa;              // RSA MRK with all four kinds of child
  MrkSet ecc;              // ECC MRK with an ECDSA key and a sealed object (fast to make)
  KeyBlob ak_rsa, ak_ecc;  // under B's EK
};

Result<MrkSet> BuildMrkSet(Tpm& tpm, const Object& srk, KeyAlg alg, ByteView ma_name,
                           const std::vector<ChildType>& kinds) {
  MrkSet set;
  set.alg = alg;
  TPMMA_ASSIGN_OR_RETURN(set.mrk, tpm.CreateMrk(srk, ma_name, alg));
  TPMMA_ASSIGN_OR_RETURN(Object mrk, tpm.Load(srk, set.mrk));
  TPMMA_ASSIGN_OR_RETURN(Bytes seal, RandomBytes(32));
  set.sealed = Secret(seal);
  TPMMA_ASSIGN_OR_RETURN(set.plaintext, RandomBytes(48));
  for (ChildType kind : kinds) {
    TPMMA_ASSIGN_OR_RETURN(
        KeyBlob blob,
        tpm.CreateChild(mrk, kind, kind == ChildType::kSealed ? set.sealed : SecureBytes{}));
    if (kind == ChildType::kRsaDecrypt) {
      TPMMA_ASSIGN_OR_RETURN(Object dec, tpm.Load(mrk, blob));
      TPMMA_ASSIGN_OR_RETURN(set.ciphertext, tpm.RsaEncrypt(dec, set.plaintext));
    }
    set.children.emplace_back(kind, blob);
  }
  return set;
}

std::string BuildWorld(World& w) {
  std::string error;
  if ((w.a = testing::SharedSwtpm(0, &error)) == nullptr ||
      (w.b = testing::SharedSwtpm(1, &error)) == nullptr) {
    return error;
  }
  w.ma_key.reset(EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", size_t{2048}));
  if (!w.ma_key) return "RSA key generation failed";
  auto pub = tpm::MaStoragePublic(w.ma_key.get());
  if (!pub) return pub.error().ToString();
  w.ma_pub = *pub;
  w.ma_name = *tpm::ComputeName(pub->publicArea);
  auto build = [&]() -> Status {
    {
      TPMMA_ASSIGN_OR_RETURN(auto b, Tpm::Open(w.b->tcti()));
      TPMMA_ASSIGN_OR_RETURN(Object srk, b->GetOrCreateSrk(KeyAlg::kRsa2048));
      w.srk_b_rsa = srk.public_area();
      TPMMA_ASSIGN_OR_RETURN(Object srk_ecc, b->GetOrCreateSrk(KeyAlg::kEccP256));
      w.srk_b_ecc = srk_ecc.public_area();
      TPMMA_ASSIGN_OR_RETURN(Object ek, b->CreateEk());
      TPMMA_ASSIGN_OR_RETURN(w.ak_rsa, b->CreateAk(ek, KeyAlg::kRsa2048));
      TPMMA_ASSIGN_OR_RETURN(w.ak_ecc, b->CreateAk(ek, KeyAlg::kEccP256));
    }
    TPMMA_ASSIGN_OR_RETURN(auto a, Tpm::Open(w.a->tcti()));
    TPMMA_ASSIGN_OR_RETURN(Object srk, a->GetOrCreateSrk(KeyAlg::kRsa2048));
    TPMMA_ASSIGN_OR_RETURN(
        w.rsa, BuildMrkSet(*a, srk, KeyAlg::kRsa2048, w.ma_name,
                           {ChildType::kEccSign, ChildType::kRsaSign, ChildType::kRsaDecrypt,
                            ChildType::kSealed, ChildType::kEccApp, ChildType::kRsaApp}));
    TPMMA_ASSIGN_OR_RETURN(w.ecc, BuildMrkSet(*a, srk, KeyAlg::kEccP256, w.ma_name,
                                              {ChildType::kEccSign, ChildType::kSealed}));
    return Status::Ok();
  };
  Status s = build();
  return s.ok() ? "" : s.ToString();
}

const World* GetWorld(std::string* err, bool* skip) {
  return testing::BuildOnce(&BuildWorld, err, skip);
}

class EsysTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string err;
    bool skip = false;
    w_ = GetWorld(&err, &skip);
    if (skip) GTEST_SKIP() << "swtpm not available: " << err;
    ASSERT_NE(w_, nullptr) << err;
  }
  static std::unique_ptr<Tpm> OpenOrDie(const Swtpm* t) {
    auto tpm = Tpm::Open(t->tcti());
    if (!tpm) throw std::runtime_error(tpm.error().ToString());
    return std::move(*tpm);
  }
  void Tools(const Swtpm* t, const std::vector<std::string>& argv) {
    CommandResult r = t->Tools(argv);
    ASSERT_EQ(r.exit_code, 0) << argv[0] << ": " << r.output;
  }
  const World* w_ = nullptr;
};

// Sits between a Tpm and swtpm (command port Q -> P, control port Q+1 -> P+1, as the
// swtpm TCTI opens both) and records what crosses the command channel: what a bus sniffer
// would see.
class Relay {
 public:
  explicit Relay(int target_port) : target_(target_port) {
    std::mt19937 rng(std::random_device{}());
    for (int attempt = 0; attempt < 50 && port_ == 0; ++attempt) {
      const int q = 20000 + static_cast<int>(rng() % 40000);
      int a = Listen(q), b = a >= 0 ? Listen(q + 1) : -1;
      if (a >= 0 && b >= 0) {
        port_ = q;
        threads_.emplace_back([this, a] { Serve(a, target_, true); });
        threads_.emplace_back([this, b] { Serve(b, target_ + 1, false); });
      } else {
        if (a >= 0) ::close(a);
      }
    }
  }
  ~Relay() {
    stop_ = true;
    for (auto& t : threads_) t.join();
  }
  std::string tcti() const { return "swtpm:host=127.0.0.1,port=" + std::to_string(port_); }
  bool ok() const { return port_ != 0; }
  bool Saw(ByteView needle) {
    std::lock_guard<std::mutex> lock(mu_);
    return std::search(seen_.begin(), seen_.end(), needle.begin(), needle.end()) != seen_.end();
  }

 private:
  static sockaddr_in Loopback(int port) {
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(static_cast<uint16_t>(port));
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return sa;
  }
  static int Listen(int port) {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in sa = Loopback(port);
    if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0 ||
        ::listen(fd, 4) != 0) {
      if (fd >= 0) ::close(fd);
      return -1;
    }
    return fd;
  }
  void Serve(int listener, int target, bool record) {
    while (!stop_) {
      pollfd lp{listener, POLLIN, 0};
      if (::poll(&lp, 1, 20) <= 0) continue;
      int client = ::accept(listener, nullptr, nullptr);
      int server = ::socket(AF_INET, SOCK_STREAM, 0);
      sockaddr_in sa = Loopback(target);
      if (client < 0 || server < 0 ||
          ::connect(server, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
        if (client >= 0) ::close(client);
        if (server >= 0) ::close(server);
        continue;
      }
      pollfd fds[2] = {{client, POLLIN, 0}, {server, POLLIN, 0}};
      bool open = true;
      while (open && !stop_) {
        if (::poll(fds, 2, 20) <= 0) continue;
        for (int i = 0; i < 2 && open; ++i) {
          if (!(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
          uint8_t buf[4096];
          const ssize_t n = ::read(fds[i].fd, buf, sizeof buf);
          if (n <= 0 || ::write(fds[1 - i].fd, buf, static_cast<size_t>(n)) != n) {
            open = false;
            break;
          }
          if (record) {
            std::lock_guard<std::mutex> lock(mu_);
            seen_.insert(seen_.end(), buf, buf + n);
          }
        }
      }
      ::close(client);
      ::close(server);
    }
    ::close(listener);
  }

  int target_;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::vector<std::thread> threads_;
  std::mutex mu_;
  Bytes seen_;
};

// ------------------------------------------------------------------ connection

TEST(EsysOpenTest, UnreachableTpmIsUnavailableInPlainWords) {
  // Port 1 on loopback: nothing listens, the connection is refused.
  auto r = Tpm::Open("swtpm:host=127.0.0.1,port=1");
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), Code::kUnavailable) << r.error().ToString();
  EXPECT_NE(r.error().message().find("cannot reach the TPM at 'swtpm:host=127.0.0.1,port=1'"),
            std::string::npos)
      << r.error().message();
  auto bad = Tpm::Open("no-such-tcti-module:");
  ASSERT_FALSE(bad.has_value());
  EXPECT_EQ(bad.error().code(), Code::kUnavailable) << bad.error().ToString();
}

TEST(EsysOpenTest, TctiFromArgumentThenEnvironment) {
  ::setenv("TPM2TOOLS_TCTI", "swtpm:port=1", 1);
  ::setenv("TCTI", "mssim:port=2", 1);
  EXPECT_EQ(Tpm::ResolveTcti("tabrmd:"), "tabrmd:");
  EXPECT_EQ(Tpm::ResolveTcti(""), "swtpm:port=1");
  ::unsetenv("TPM2TOOLS_TCTI");
  EXPECT_EQ(Tpm::ResolveTcti(""), "mssim:port=2");
  ::unsetenv("TCTI");
  EXPECT_EQ(Tpm::ResolveTcti(""), "device:/dev/tpmrm0");
}

// ------------------------------------------------------------------ key hierarchy

TEST_F(EsysTest, SrkIsPersistentAndNamedAsTpm2ToolsSees) {
  Bytes rsa_name, ecc_name;
  {
    auto tpm = OpenOrDie(w_->a);
    ASSERT_OK_AND_ASSIGN(Object srk, tpm->GetOrCreateSrk(KeyAlg::kRsa2048));
    EXPECT_TRUE(srk.persistent());
    ASSERT_OK_AND_ASSIGN(bool exists, tpm->HandleExists(kSrkHandle));
    EXPECT_TRUE(exists);
    ASSERT_OK_AND_ASSIGN(PublicInfo info, tpm->ReadPublic(srk));
    EXPECT_EQ(info.name, srk.name());
    EXPECT_EQ(*tpm::ComputeName(info.public_area.publicArea), srk.name());
    EXPECT_TRUE(tpm::CheckStorageParent(info.public_area.publicArea).ok());
    rsa_name = srk.name();
    // Idempotent: the second call finds the same key.
    ASSERT_OK_AND_ASSIGN(Object again, tpm->GetOrCreateSrk(KeyAlg::kRsa2048));
    EXPECT_EQ(again.name(), rsa_name);
    ASSERT_OK_AND_ASSIGN(Object ecc, tpm->GetOrCreateSrk(KeyAlg::kEccP256));
    EXPECT_EQ(ecc.public_area().publicArea.type, TPM2_ALG_ECC);
    ecc_name = ecc.name();
    // Our RSA SRK handle is not an ECC key: refused, not silently used.
    auto wrong = tpm->GetOrCreateSrk(KeyAlg::kEccP256, kSrkHandle);
    ASSERT_FALSE(wrong.has_value());
    EXPECT_EQ(wrong.error().code(), Code::kConflict);
  }
  ASSERT_NO_FATAL_FAILURE(
      Tools(w_->a, {"tpm2_readpublic", "-c", "0x81000001", "-n", w_->a->File("srk.name")}));
  EXPECT_EQ(ReadFileOrDie(w_->a->File("srk.name")), rsa_name);
  ASSERT_NO_FATAL_FAILURE(
      Tools(w_->a, {"tpm2_readpublic", "-c", "0x81000002", "-n", w_->a->File("srkecc.name")}));
  EXPECT_EQ(ReadFileOrDie(w_->a->File("srkecc.name")), ecc_name);
}

// The TPM's identity as tpm2_getcap reads it: swtpm reports manufacturer "IBM" and the
// libtpms vendor string; the firmware words are what tpm2_getcap prints in hex.
TEST_F(EsysTest, InfoMatchesTpm2Getcap) {
  auto tpm = OpenOrDie(w_->a);
  ASSERT_OK_AND_ASSIGN(TpmInfo info, tpm->Info());
  EXPECT_EQ(info.manufacturer, "IBM");
  EXPECT_FALSE(info.vendor.empty());
  CommandResult r = w_->a->Tools({"tpm2_getcap", "properties-fixed"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  char fw1[16], fw2[16];
  std::snprintf(fw1, sizeof fw1, "0x%X", info.firmware1);
  std::snprintf(fw2, sizeof fw2, "0x%X", info.firmware2);
  auto section = [&](const std::string& name) {
    size_t at = r.output.find(name + ":");
    return at == std::string::npos ? std::string() : r.output.substr(at, 80);
  };
  EXPECT_NE(section("TPM2_PT_FIRMWARE_VERSION_1").find(fw1), std::string::npos) << r.output;
  EXPECT_NE(section("TPM2_PT_FIRMWARE_VERSION_2").find(fw2), std::string::npos) << r.output;
  EXPECT_NE(section("TPM2_PT_MANUFACTURER").find("\"IBM\""), std::string::npos) << r.output;
}

TEST_F(EsysTest, EkNameMatchesCertificateAndTpm2Createek) {
  Bytes ek_name, cert_der;
  TPM2B_PUBLIC ek_pub{};
  {
    auto tpm = OpenOrDie(w_->b);
    ASSERT_OK_AND_ASSIGN(Object ek, tpm->CreateEk());
    ek_name = ek.name();
    ek_pub = ek.public_area();
    ASSERT_OK_AND_ASSIGN(cert_der, tpm->ReadEkCertificate());
  }
  const uint8_t* p = cert_der.data();
  X509Ptr cert(d2i_X509(nullptr, &p, static_cast<long>(cert_der.size())));
  ASSERT_TRUE(cert);
  EXPECT_EQ(p, cert_der.data() + cert_der.size()) << "trailing bytes after the certificate";
  EVP_PKEY* cert_key = X509_get0_pubkey(cert.get());
  ASSERT_NE(cert_key, nullptr);
  // What the MA does: the EK template with the certificate's modulus gives the EK Name.
  BIGNUM* n_raw = nullptr;
  ASSERT_EQ(EVP_PKEY_get_bn_param(cert_key, "n", &n_raw), 1);
  BignumPtr n(n_raw);
  TPM2B_PUBLIC from_cert = EkRsaTemplate();
  ASSERT_EQ(BN_bn2binpad(n.get(), from_cert.publicArea.unique.rsa.buffer, 256), 256);
  EXPECT_EQ(*tpm::ComputeName(from_cert.publicArea), ek_name);
  auto ek_evp = tpm::PublicToEvp(ek_pub.publicArea);
  ASSERT_TRUE(ek_evp.has_value());
  EXPECT_EQ(EVP_PKEY_eq(cert_key, ek_evp->get()), 1);
  // And tpm2_createek derives the same key.
  ASSERT_NO_FATAL_FAILURE(Tools(w_->b, {"tpm2_createek", "-c", w_->b->File("ek.ctx"), "-G", "rsa",
                                        "-u", w_->b->File("ek.pub")}));
  auto tools_pub = tpm::Unmarshal<TPM2B_PUBLIC>(ReadFileOrDie(w_->b->File("ek.pub")));
  ASSERT_TRUE(tools_pub.has_value());
  EXPECT_EQ(*tpm::ComputeName(tools_pub->publicArea), ek_name);
}

TEST_F(EsysTest, MakeCredentialInSoftwareActivatesOnTpm) {
  auto tpm = OpenOrDie(w_->b);
  ASSERT_OK_AND_ASSIGN(Object srk, tpm->GetOrCreateSrk(KeyAlg::kEccP256));
  ASSERT_OK(tpm->EnableParameterEncryption(srk));
  ASSERT_OK_AND_ASSIGN(Object ek, tpm->CreateEk());
  ASSERT_OK_AND_ASSIGN(Object ak, tpm->Load(ek, w_->ak_rsa));
  ASSERT_OK(tpm::CheckAkAttributes(ak.public_area().publicArea));
  // The MA computes the AK Name itself; it must be the one the TPM uses.
  EXPECT_EQ(*tpm::ComputeName(w_->ak_rsa.public_area.publicArea), ak.name());
  const Bytes secret = *RandomBytes(32);
  for (int i = 0; i < 3; ++i) {
    auto cred = tpm::MakeCredential(ek.public_area(), ak.name(), secret);
    ASSERT_TRUE(cred.has_value()) << cred.error().ToString();
    ASSERT_OK_AND_ASSIGN(
        SecureBytes got, Timed("ActivateCredential (incl. PolicySecret session)", [&] {
          return tpm->ActivateCredential(ak, ek, cred->id_object, cred->encrypted_secret);
        }));
    EXPECT_EQ(Bytes(got.begin(), got.end()), secret);
  }
  // Made for another key's Name: refused, and the message names the call in plain words.
  Bytes other = ak.name();
  other.back() ^= 1;
  auto cred = tpm::MakeCredential(ek.public_area(), other, secret);
  ASSERT_TRUE(cred.has_value());
  auto bad = tpm->ActivateCredential(ak, ek, cred->id_object, cred->encrypted_secret);
  ASSERT_FALSE(bad.has_value());
  EXPECT_EQ(bad.error().code(), Code::kTpmError);
  EXPECT_NE(bad.error().message().find("Esys_ActivateCredential"), std::string::npos);
  EXPECT_NE(bad.error().message().find("made for another key"), std::string::npos)
      << bad.error().message();
  RecordProperty("activate_wrong_name", bad.error().message());
}

TEST_F(EsysTest, CertifyAndQuoteVerifyInSoftware) {
  auto tpm = OpenOrDie(w_->b);
  ASSERT_OK_AND_ASSIGN(Object srk, tpm->GetOrCreateSrk(KeyAlg::kRsa2048));
  ASSERT_OK_AND_ASSIGN(Object ek, tpm->CreateEk());
  for (const KeyBlob* blob : {&w_->ak_rsa, &w_->ak_ecc}) {
    ASSERT_OK_AND_ASSIGN(Object ak, tpm->Load(ek, *blob));
    const TPMT_PUBLIC& akp = ak.public_area().publicArea;
    SCOPED_TRACE(akp.type == TPM2_ALG_RSA ? "rsa ak" : "ecc ak");
    const Bytes nonce = *RandomBytes(32);
    ASSERT_OK_AND_ASSIGN(Attestation att, tpm->Certify(srk, ak, nonce));
    auto sig = tpm::Unmarshal<TPMT_SIGNATURE>(att.signature);
    ASSERT_TRUE(sig.has_value());
    ASSERT_OK(tpm::VerifyCertify(akp, att.attest, *sig, nonce, srk.public_area().publicArea));
    Bytes other = nonce;
    other[0] ^= 1;
    EXPECT_FALSE(
        tpm::VerifyCertify(akp, att.attest, *sig, other, srk.public_area().publicArea).ok());
    // Another parent (the ECC SRK of the same TPM) is not what was certified.
    EXPECT_FALSE(tpm::VerifyCertify(akp, att.attest, *sig, nonce, w_->srk_b_ecc.publicArea).ok());

    ASSERT_OK_AND_ASSIGN(Attestation quote, tpm->Quote(ak, nonce, {0, 1, 2, 3, 7}));
    auto qsig = tpm::Unmarshal<TPMT_SIGNATURE>(quote.signature);
    ASSERT_TRUE(qsig.has_value());
    auto info = tpm::VerifyQuote(akp, quote.attest, *qsig, nonce);
    ASSERT_TRUE(info.has_value()) << info.error().ToString();
    EXPECT_EQ(info->pcr_digest.size(), 32u);
  }
}

// ------------------------------------------------------------------ MRK, children, migration

TEST_F(EsysTest, DuplicationPolicyInSoftwareEqualsTrialSession) {
  auto tpm = OpenOrDie(w_->a);
  ASSERT_OK_AND_ASSIGN(TPM2B_DIGEST sw, DuplicationSelectPolicy(w_->ma_name));
  ASSERT_OK_AND_ASSIGN(TPM2B_DIGEST trial, tpm->TrialDuplicationSelectPolicy(w_->ma_name));
  EXPECT_EQ(tpm::Tpm2bView(sw).size(), 32u);
  EXPECT_TRUE(std::ranges::equal(tpm::Tpm2bView(sw), tpm::Tpm2bView(trial)));
  EXPECT_FALSE(DuplicationSelectPolicy(Bytes(20, 1)).has_value());
}

TEST_F(EsysTest, MrkAndChildrenHaveTheDesignedAttributes) {
  ASSERT_OK_AND_ASSIGN(TPM2B_DIGEST policy, DuplicationSelectPolicy(w_->ma_name));
  for (const MrkSet* set : {&w_->rsa, &w_->ecc}) {
    const TPMT_PUBLIC& m = set->mrk.public_area.publicArea;
    EXPECT_EQ(m.objectAttributes & (TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT), 0u);
    EXPECT_EQ(m.objectAttributes & kMrkAttributes, kMrkAttributes);
    EXPECT_TRUE(std::ranges::equal(tpm::Tpm2bView(m.authPolicy), tpm::Tpm2bView(policy)));
    EXPECT_TRUE(tpm::CheckStorageParent(m).ok());
    for (const auto& [kind, blob] : set->children) {
      const TPMA_OBJECT a = blob.public_area.publicArea.objectAttributes;
      EXPECT_TRUE(a & TPMA_OBJECT_FIXEDPARENT) << ChildTypeName(kind);
      EXPECT_FALSE(a & TPMA_OBJECT_FIXEDTPM) << ChildTypeName(kind);
      EXPECT_TRUE(a & TPMA_OBJECT_ENCRYPTEDDUPLICATION) << ChildTypeName(kind);
    }
  }
  // The TPM itself refuses a child whose encryptedDuplication differs from the MRK's.
  auto tpm = OpenOrDie(w_->a);
  ASSERT_OK_AND_ASSIGN(Object srk, tpm->GetOrCreateSrk(KeyAlg::kRsa2048));
  ASSERT_OK_AND_ASSIGN(Object mrk, tpm->Load(srk, w_->ecc.mrk));
  auto bad = tpm->Create(mrk, ChildTemplate(ChildType::kEccSign, false));
  ASSERT_FALSE(bad.has_value());
  EXPECT_EQ(bad.error().code(), Code::kTpmError);
  EXPECT_NE(bad.error().message().find("attributes"), std::string::npos) << bad.error().message();
  // Sealed objects need data; keys must not get any.
  EXPECT_EQ(tpm->CreateChild(mrk, ChildType::kSealed).error().code(), Code::kInvalidArgument);
  EXPECT_EQ(tpm->CreateChild(mrk, ChildType::kEccSign, Secret(ToBytes("x"))).error().code(),
            Code::kInvalidArgument);
}

// Uses every child on `tpm` under `mrk` as it was used on A.
void UseChildren(Tpm& tpm, const Object& mrk, const MrkSet& set) {
  const Bytes message = ToBytes("restored on the new platform");
  for (const auto& [kind, blob] : set.children) {
    SCOPED_TRACE(ChildTypeName(kind));
    ASSERT_OK_AND_ASSIGN(
        Object child, Timed("Load child under imported MRK", [&] { return tpm.Load(mrk, blob); }));
    switch (kind) {
      case ChildType::kEccSign:
      case ChildType::kRsaSign:
      case ChildType::kEccApp:  // no scheme in the key: Sign uses the SHA-256 default
      case ChildType::kRsaApp: {
        ASSERT_OK_AND_ASSIGN(TPMT_SIGNATURE sig,
                             Timed(std::string("Sign ") + ChildTypeName(kind),
                                   [&] { return tpm.Sign(child, Sha256(message)); }));
        ASSERT_OK(tpm::VerifyTpmSignature(blob.public_area.publicArea, message, sig));
        break;
      }
      case ChildType::kRsaDecrypt: {
        ASSERT_OK_AND_ASSIGN(SecureBytes plain, tpm.RsaDecrypt(child, set.ciphertext));
        EXPECT_EQ(Bytes(plain.begin(), plain.end()), set.plaintext);
        break;
      }
      case ChildType::kSealed: {
        ASSERT_OK_AND_ASSIGN(SecureBytes data, tpm.Unseal(child));
        EXPECT_EQ(data, set.sealed);
        break;
      }
    }
  }
}

struct MigrationCase {
  const char* tag;
  bool rsa_mrk;      // w_->rsa (every kind of child) or w_->ecc
  bool ecc_new_srk;  // re-wrap to B's ECC SRK instead of its RSA SRK
  InnerWrap inner;
};

class MigrationTest : public EsysTest, public ::testing::WithParamInterface<MigrationCase> {};

TEST_P(MigrationTest, DuplicateRewrapImportLoadAndUseChildren) {
  const MigrationCase c = GetParam();
  const MrkSet& set = c.rsa_mrk ? w_->rsa : w_->ecc;
  const TPM2B_PUBLIC& new_srk = c.ecc_new_srk ? w_->srk_b_ecc : w_->srk_b_rsa;
  auto a = OpenOrDie(w_->a);
  auto b = OpenOrDie(w_->b);
  ASSERT_OK_AND_ASSIGN(Object srk_a, a->GetOrCreateSrk(KeyAlg::kRsa2048));
  ASSERT_OK_AND_ASSIGN(Object srk_b,
                       b->GetOrCreateSrk(c.ecc_new_srk ? KeyAlg::kEccP256 : KeyAlg::kRsa2048));
  ASSERT_EQ(srk_b.name(), *tpm::ComputeName(new_srk.publicArea));
  // As lms runs: secrets never cross the bus in clear.
  ASSERT_OK(a->EnableParameterEncryption(srk_a));
  ASSERT_OK(b->EnableParameterEncryption(srk_b));

  // On A: duplicate the MRK to the MA key.
  ASSERT_OK_AND_ASSIGN(Object mrk, a->Load(srk_a, set.mrk));
  const SecureBytes given = Secret(*RandomBytes(16));
  ASSERT_OK_AND_ASSIGN(Duplicated dup,
                       Timed("Duplicate MRK (incl. LoadExternal + policy session)", [&] {
                         return a->Duplicate(mrk, w_->ma_pub, c.inner,
                                             c.inner == InnerWrap::kGiven ? given : SecureBytes{});
                       }));
  ASSERT_EQ(dup.inner_key.size(), 16u);
  if (c.inner == InnerWrap::kGiven) {
    EXPECT_EQ(dup.inner_key, given);
  }
  // encryptedDuplication: no duplicate without an inner wrapper.
  auto plain = a->Duplicate(mrk, w_->ma_pub, InnerWrap::kNone);
  ASSERT_FALSE(plain.has_value());
  EXPECT_EQ(plain.error().code(), Code::kInvalidArgument);
  // The MRK policy names the MA key: duplicating straight to B's SRK is refused by the TPM.
  auto direct = a->Duplicate(mrk, new_srk, InnerWrap::kTpmGenerated);
  ASSERT_FALSE(direct.has_value());
  EXPECT_NE(direct.error().message().find("Esys_Duplicate"), std::string::npos)
      << direct.error().message();
  EXPECT_NE(direct.error().message().find("policy"), std::string::npos) << direct.error().message();
  RecordProperty("duplicate_to_wrong_parent", direct.error().message());
  mrk.reset();

  // MA, in software: re-wrap the outer layer for B's SRK.
  auto rw = tpm::Rewrap(w_->ma_key.get(), w_->ma_pub.publicArea, set.mrk.public_area, dup.duplicate,
                        dup.encrypted_seed, new_srk);
  ASSERT_TRUE(rw.has_value()) << rw.error().ToString();

  // On B: a wrong or missing inner key is refused in plain words.
  SecureBytes wrong = dup.inner_key;
  wrong[0] ^= 1;
  for (const SecureBytes* k :
       {static_cast<const SecureBytes*>(&wrong), static_cast<const SecureBytes*>(nullptr)}) {
    auto bad = b->Import(srk_b, set.mrk.public_area, rw->duplicate, rw->encrypted_seed,
                         k ? *k : SecureBytes{});
    ASSERT_FALSE(bad.has_value());
    EXPECT_EQ(bad.error().code(), Code::kTpmError);
    EXPECT_NE(bad.error().message().find("Esys_Import"), std::string::npos);
    EXPECT_NE(bad.error().message().find("inner wrapper key"), std::string::npos)
        << bad.error().message();
    RecordProperty(k ? "import_wrong_inner_key" : "import_no_inner_key", bad.error().message());
  }
  // Wrapped for B, imported on A: refused.
  auto elsewhere =
      a->Import(srk_a, set.mrk.public_area, rw->duplicate, rw->encrypted_seed, dup.inner_key);
  ASSERT_FALSE(elsewhere.has_value());
  if (!c.ecc_new_srk) {
    EXPECT_NE(elsewhere.error().message().find("not wrapped for this TPM"), std::string::npos)
        << elsewhere.error().message();
  }
  RecordProperty("import_on_wrong_tpm", elsewhere.error().message());

  TPM2B_PRIVATE imported{};
  for (int i = 0; i < 5; ++i) {  // repeated for the timing record only
    ASSERT_OK_AND_ASSIGN(imported, Timed("Import MRK (inner key supplied)", [&] {
                           return b->Import(srk_b, set.mrk.public_area, rw->duplicate,
                                            rw->encrypted_seed, dup.inner_key);
                         }));
  }
  ASSERT_OK_AND_ASSIGN(Object mrk_b, Timed("Load imported MRK", [&] {
                         return b->Load(srk_b, KeyBlob{set.mrk.public_area, imported});
                       }));
  EXPECT_EQ(mrk_b.name(), *tpm::ComputeName(set.mrk.public_area.publicArea));
  ASSERT_NO_FATAL_FAILURE(UseChildren(*b, mrk_b, set));
}

INSTANTIATE_TEST_SUITE_P(
    Esys, MigrationTest,
    ::testing::Values(MigrationCase{"rsa_mrk_tpm_inner_key", true, false, InnerWrap::kTpmGenerated},
                      MigrationCase{"rsa_mrk_given_inner_key", true, false, InnerWrap::kGiven},
                      MigrationCase{"ecc_mrk_to_ecc_srk", false, true, InnerWrap::kTpmGenerated}),
    [](const auto& info) { return std::string(info.param.tag); });

// What crosses the wire: sealed data, the inner key and RSA plaintexts are visible to a
// sniffer without parameter encryption and invisible with it.
TEST_F(EsysTest, ParameterEncryptionKeepsSecretsOffTheBus) {
  const MrkSet& set = w_->rsa;
  for (bool encrypt : {false, true}) {
    SCOPED_TRACE(encrypt ? "encrypted" : "clear");
    Relay relay(w_->a->port());
    ASSERT_TRUE(relay.ok());
    SecureBytes inner;
    {
      ASSERT_OK_AND_ASSIGN(auto tpm, Tpm::Open(relay.tcti()));
      ASSERT_OK_AND_ASSIGN(Object srk, tpm->GetOrCreateSrk(KeyAlg::kRsa2048));
      if (encrypt) {
        ASSERT_OK(tpm->EnableParameterEncryption(srk));
      }
      EXPECT_EQ(tpm->parameter_encryption(), encrypt);
      ASSERT_OK_AND_ASSIGN(Object mrk, tpm->Load(srk, set.mrk));
      for (const auto& [kind, blob] : set.children) {
        if (kind != ChildType::kSealed && kind != ChildType::kRsaDecrypt) continue;
        ASSERT_OK_AND_ASSIGN(Object child, tpm->Load(mrk, blob));
        if (kind == ChildType::kSealed) {
          ASSERT_OK_AND_ASSIGN(SecureBytes data, tpm->Unseal(child));
          EXPECT_EQ(data, set.sealed);
        } else {
          ASSERT_OK_AND_ASSIGN(SecureBytes plain, tpm->RsaDecrypt(child, set.ciphertext));
          EXPECT_EQ(Bytes(plain.begin(), plain.end()), set.plaintext);
        }
      }
      ASSERT_OK_AND_ASSIGN(Duplicated dup,
                           tpm->Duplicate(mrk, w_->ma_pub, InnerWrap::kTpmGenerated));
      inner = dup.inner_key;
      const SecureBytes sealed_new = Secret(*RandomBytes(64));
      ASSERT_OK(tpm->CreateChild(mrk, ChildType::kSealed, sealed_new));
      EXPECT_EQ(relay.Saw(sealed_new), !encrypt) << "sealed data going in";
    }
    EXPECT_EQ(relay.Saw(set.sealed), !encrypt) << "unsealed data";
    EXPECT_EQ(relay.Saw(set.plaintext), !encrypt) << "RSA plaintext";
    EXPECT_EQ(relay.Saw(inner), !encrypt) << "inner wrapper key";
  }
}

// ------------------------------------------------------------------ OpenSSL signer

TEST_F(EsysTest, TpmBackedEvpPkeySignsAndOpensslVerifies) {
  auto tpm = OpenOrDie(w_->a);
  ASSERT_OK_AND_ASSIGN(Object srk, tpm->GetOrCreateSrk(KeyAlg::kRsa2048));
  ASSERT_OK_AND_ASSIGN(Object mrk, tpm->Load(srk, w_->rsa.mrk));
  const Bytes message = ToBytes("<MigrationPackage>...</MigrationPackage>");
  for (const auto& [kind, blob] : w_->rsa.children) {
    if (kind != ChildType::kEccSign && kind != ChildType::kRsaSign) continue;
    SCOPED_TRACE(ChildTypeName(kind));
    ASSERT_OK_AND_ASSIGN(Object key, tpm->Load(mrk, blob));
    ASSERT_OK_AND_ASSIGN(EvpPkeyPtr pkey, MakeTpmSigningKey(*tpm, std::move(key)));
    for (const EVP_MD* md : {EVP_sha256(), kind == ChildType::kEccSign ? EVP_sha384() : nullptr}) {
      if (md == nullptr) continue;
      EvpMdCtxPtr ctx(EVP_MD_CTX_new());
      ASSERT_EQ(EVP_DigestSignInit(ctx.get(), nullptr, md, nullptr, pkey.get()), 1);
      size_t len = 0;
      ASSERT_EQ(EVP_DigestSign(ctx.get(), nullptr, &len, message.data(), message.size()), 1);
      Bytes sig(len);
      ASSERT_EQ(EVP_DigestSign(ctx.get(), sig.data(), &len, message.data(), message.size()), 1);
      sig.resize(len);
      // Verified with nothing but the public key, as xmlsec on the MA would.
      auto plain = tpm::PublicToEvp(blob.public_area.publicArea);
      ASSERT_TRUE(plain.has_value());
      EvpMdCtxPtr vctx(EVP_MD_CTX_new());
      ASSERT_EQ(EVP_DigestVerifyInit(vctx.get(), nullptr, md, nullptr, plain->get()), 1);
      EXPECT_EQ(
          EVP_DigestVerify(vctx.get(), sig.data(), sig.size(), message.data(), message.size()), 1);
    }
  }
  // Keys that cannot sign external data are refused up front.
  ASSERT_OK_AND_ASSIGN(Object persistent_srk, tpm->FromPersistent(kSrkHandle));
  auto refused = MakeTpmSigningKey(*tpm, std::move(persistent_srk));
  ASSERT_FALSE(refused.has_value());
  EXPECT_EQ(refused.error().code(), Code::kInvalidArgument);
}

// ------------------------------------------------------------------ hygiene

TEST_F(EsysTest, NoTransientObjectOrSessionLeaks) {
  {
    auto tpm = OpenOrDie(w_->a);
    ASSERT_OK_AND_ASSIGN(Object srk, tpm->GetOrCreateSrk(KeyAlg::kRsa2048));
    ASSERT_OK(tpm->EnableParameterEncryption(srk));
    // Far more loads, sessions and failures than the TPM has slots for.
    for (int i = 0; i < 20; ++i) {
      ASSERT_OK_AND_ASSIGN(Object mrk, Timed("Load ECC MRK under SRK (loop)",
                                             [&] { return tpm->Load(srk, w_->ecc.mrk); }));
      ASSERT_OK_AND_ASSIGN(Object key, Timed("Load ECC child under MRK (loop)", [&] {
                             return tpm->Load(mrk, w_->ecc.children[0].second);
                           }));
      ASSERT_OK(
          Timed("Sign ecc-p256-sign (loop)", [&] { return tpm->Sign(key, Sha256(ToBytes("x"))); }));
      ASSERT_OK(Timed("Duplicate ECC MRK (loop)",
                      [&] { return tpm->Duplicate(mrk, w_->ma_pub, InnerWrap::kTpmGenerated); }));
      EXPECT_FALSE(tpm->Duplicate(mrk, w_->srk_b_rsa, InnerWrap::kTpmGenerated).has_value());
      EXPECT_FALSE(tpm->Import(srk, w_->ecc.mrk.public_area, TPM2B_PRIVATE{},
                               TPM2B_ENCRYPTED_SECRET{}, SecureBytes{})
                       .has_value());
      ASSERT_OK(tpm->TrialDuplicationSelectPolicy(w_->ma_name));
    }
    ASSERT_OK_AND_ASSIGN(auto handles, tpm->TransientHandles());
    EXPECT_TRUE(handles.empty()) << handles.size() << " transient objects left";
  }
  {
    auto tpm = OpenOrDie(w_->b);
    ASSERT_OK_AND_ASSIGN(Object ek, tpm->CreateEk());
    for (int i = 0; i < 20; ++i) {
      ASSERT_OK_AND_ASSIGN(Object ak, tpm->Load(ek, w_->ak_ecc));
      ASSERT_OK(tpm->Quote(ak, Bytes(16, 7), {0}));
    }
  }
}

// ------------------------------------------------------------------ shared context

TEST_F(EsysTest, ObjectOutlivesItsTpmKeepsWorkingAndIsFlushedWhenDestroyed) {
  const KeyBlob& sign_blob = w_->ecc.children[0].second;  // ECDSA-P256
  {
    Object key;
    {
      auto tpm = OpenOrDie(w_->a);
      ASSERT_OK_AND_ASSIGN(Object srk, tpm->GetOrCreateSrk(KeyAlg::kRsa2048));
      ASSERT_OK(tpm->EnableParameterEncryption(srk));
      ASSERT_OK_AND_ASSIGN(Object mrk, tpm->Load(srk, w_->ecc.mrk));
      ASSERT_OK_AND_ASSIGN(key, tpm->Load(mrk, sign_blob));
    }  // the Tpm, the SRK handle and the MRK are gone; `key` holds the context
    ASSERT_TRUE(key);
    ASSERT_OK_AND_ASSIGN(auto again, Tpm::Of(key));
    EXPECT_TRUE(again->Owns(key));
    EXPECT_EQ(again->tcti(), w_->a->tcti());
    EXPECT_TRUE(again->parameter_encryption()) << "the session belongs to the context";
    ASSERT_OK_AND_ASSIGN(auto loaded, again->TransientHandles());
    EXPECT_EQ(loaded.size(), 1u) << "only the key is left loaded (the MRK was flushed)";
    const Bytes digest = Sha256(ToBytes("signed after the Tpm died"));
    ASSERT_OK_AND_ASSIGN(TPMT_SIGNATURE sig, again->Sign(key, digest));
    ASSERT_OK(tpm::VerifyTpmSignature(sign_blob.public_area.publicArea,
                                      ToBytes("signed after the Tpm died"), sig));
    again.reset();  // a Tpm from Of() is as disposable as the first one
    ASSERT_OK_AND_ASSIGN(auto third, Tpm::Of(key));
    ASSERT_OK(third->Sign(key, digest));
  }  // the key, the last holder: flushed, then the connection closes
  // swtpm serves one connection at a time: this Open only gets through if the first closed.
  auto second = OpenOrDie(w_->a);
  ASSERT_OK_AND_ASSIGN(auto handles, second->TransientHandles());
  EXPECT_TRUE(handles.empty()) << handles.size() << " transient objects left";
  EXPECT_FALSE(second->parameter_encryption());
  EXPECT_FALSE(Tpm::Of(Object{}).has_value());
}

TEST_F(EsysTest, EvpPkeyOutlivesItsTpmAndStillSigns) {
  const KeyBlob& sign_blob = w_->rsa.children[1].second;
  ASSERT_EQ(w_->rsa.children[1].first, ChildType::kRsaSign);
  EvpPkeyPtr pkey;
  {
    auto tpm = OpenOrDie(w_->a);
    ASSERT_OK_AND_ASSIGN(Object srk, tpm->GetOrCreateSrk(KeyAlg::kRsa2048));
    ASSERT_OK_AND_ASSIGN(Object mrk, tpm->Load(srk, w_->rsa.mrk));
    ASSERT_OK_AND_ASSIGN(Object key, tpm->Load(mrk, sign_blob));
    ASSERT_OK_AND_ASSIGN(pkey, MakeTpmSigningKey(*tpm, std::move(key)));
  }
  const Bytes message = ToBytes("signed by an EVP_PKEY whose Tpm is gone");
  EvpMdCtxPtr ctx(EVP_MD_CTX_new());
  ASSERT_EQ(EVP_DigestSignInit(ctx.get(), nullptr, EVP_sha256(), nullptr, pkey.get()), 1);
  size_t len = 0;
  ASSERT_EQ(EVP_DigestSign(ctx.get(), nullptr, &len, message.data(), message.size()), 1);
  Bytes sig(len);
  ASSERT_EQ(EVP_DigestSign(ctx.get(), sig.data(), &len, message.data(), message.size()), 1);
  sig.resize(len);
  ctx.reset();
  ASSERT_OK_AND_ASSIGN(EvpPkeyPtr plain, tpm::PublicToEvp(sign_blob.public_area.publicArea));
  EvpMdCtxPtr vctx(EVP_MD_CTX_new());
  ASSERT_EQ(EVP_DigestVerifyInit(vctx.get(), nullptr, EVP_sha256(), nullptr, plain.get()), 1);
  EXPECT_EQ(EVP_DigestVerify(vctx.get(), sig.data(), sig.size(), message.data(), message.size()),
            1);
  pkey.reset();  // the last holder of the context
  auto second = OpenOrDie(w_->a);
  ASSERT_OK_AND_ASSIGN(auto handles, second->TransientHandles());
  EXPECT_TRUE(handles.empty()) << handles.size() << " transient objects left";
}

TEST_F(EsysTest, AnObjectBelongsToTheContextThatLoadedIt) {
  auto a = OpenOrDie(w_->a);
  auto b = OpenOrDie(w_->b);
  ASSERT_OK_AND_ASSIGN(Object on_b, b->LoadExternal(w_->rsa.children[1].second.public_area));
  EXPECT_TRUE(b->Owns(on_b));
  EXPECT_FALSE(a->Owns(on_b));
  EXPECT_FALSE(a->Owns(Object{}));
  // An EVP_PKEY would send B's handle to A: refused before any TPM is asked.
  auto refused = MakeTpmSigningKey(*a, std::move(on_b));
  ASSERT_FALSE(refused.has_value());
  EXPECT_EQ(refused.error().code(), Code::kInvalidArgument) << refused.error().ToString();
}

// After every test (parameterized suites run after all TEST_Fs): nothing of ours is left
// loaded in either TPM. A Tpm closes its sessions and objects when it is destroyed.
class LeakCheck : public ::testing::Environment {
  void TearDown() override {
    std::string err;
    bool skip = false;
    const World* w = GetWorld(&err, &skip);
    if (w == nullptr) return;
    for (const Swtpm* t : {w->a, w->b}) {
      for (const char* cap :
           {"handles-transient", "handles-loaded-session", "handles-saved-session"}) {
        CommandResult r = t->ToolsNoFlush({"tpm2_getcap", cap});
        EXPECT_EQ(r.exit_code, 0) << r.output;
        EXPECT_EQ(r.output, "") << cap << " not empty after the tests";
      }
    }
  }
};
const bool kLeakCheckInstalled = [] {
  ::testing::AddGlobalTestEnvironment(new LeakCheck);  // gtest owns it
  return true;
}();

// Prints medians; a record for docs/benchmarks.md, not an assertion.
class TimingPrinter : public ::testing::EmptyTestEventListener {
  void OnTestProgramEnd(const ::testing::UnitTest&) override {
    if (Timings().empty()) return;
    std::printf("%-52s %8s %8s %3s\n", "ESAPI call (in-process, swtpm over TCP)", "median", "min",
                "n");
    for (auto& [label, v] : Timings()) {
      std::sort(v.begin(), v.end());
      std::printf("%-52s %8.2f %8.2f %3zu\n", label.c_str(), v[v.size() / 2], v.front(), v.size());
    }
    std::printf("(ms)\n");
  }
};
const bool kTimingPrinterInstalled = [] {
  ::testing::UnitTest::GetInstance()->listeners().Append(new TimingPrinter);  // gtest owns it
  return true;
}();

}  // namespace
}  // namespace tpmma::esys
