// SPDX-License-Identifier: GPL-2.0-or-later
// Interop of tpm/ with real TPMs: swtpm instances driven by tpm2-tools produce every
// vector at test time (nothing hand-copied). TPM A is the old platform, TPM B the new one.
#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>

#include <cstdio>
#include <string>
#include <vector>

#include "common/openssl.h"
#include "tests/support/swtpm.h"
#include "tpm/attest.h"
#include "tpm/credential.h"
#include "tpm/ek_templates.h"
#include "tpm/marshal.h"
#include "tpm/public.h"
#include "tpm/rewrap.h"
#include "tpm/tss_error.h"

namespace tpmma::tpm {
namespace {

using tpmma::testing::CommandResult;
using tpmma::testing::ReadFileOrDie;
using tpmma::testing::Swtpm;
using tpmma::testing::WriteFileOrDie;

constexpr const char* kSrk = "0x81000011";     // RSA-2048 storage primary (A and B)
constexpr const char* kSrkEcc = "0x81000012";  // ECC P-256 storage primary (B)
constexpr const char* kSrkAttrs =
    "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|noda|restricted|decrypt";

// Everything the tests share, built once per binary: TPM provisioning and RSA key creation
// dominate the run time.
struct World {
  Swtpm* a = nullptr;
  Swtpm* b = nullptr;
  EvpPkeyPtr ma_key;
  TPM2B_PUBLIC ma_pub{};
  std::string ma_pub_file;  // marshalled TPM2B_PUBLIC, as GetMAKey publishes it
  std::string ma_name_file;
};

bool Ok(const Swtpm* t, const std::vector<std::string>& argv, std::string* err) {
  CommandResult r = t->Tools(argv);
  if (r.exit_code != 0) {
    *err = argv[0] + " failed (" + std::to_string(r.exit_code) + "): " + r.output;
    return false;
  }
  return true;
}

// Provisions TPMs A and B, the MA key, and storage primaries; returns an error or "".
std::string BuildWorld(World& w) {
  std::string error;
  if ((w.a = testing::SharedSwtpm(0, &error)) == nullptr ||
      (w.b = testing::SharedSwtpm(1, &error)) == nullptr) {
    return error;
  }
  w.ma_key.reset(EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", size_t{2048}));
  if (!w.ma_key) return "RSA key generation failed";
  auto pub = MaStoragePublic(w.ma_key.get());
  if (!pub) return pub.error().ToString();
  w.ma_pub = *pub;
  w.ma_pub_file = w.a->File("ma.pub");
  w.ma_name_file = w.a->File("ma.name");
  WriteFileOrDie(w.ma_pub_file, *Marshal(*pub));
  WriteFileOrDie(w.ma_name_file, *ComputeName(pub->publicArea));
  auto primary = [&](Swtpm* t, const char* alg, const char* handle) {
    const std::string h = handle;
    const std::string ctx = t->File(h + ".ctx");
    return Ok(t,
              {"tpm2_createprimary", "-C", "o", "-g", "sha256", "-G", alg, "-a", kSrkAttrs, "-c",
               ctx},
              &error) &&
           Ok(t, {"tpm2_evictcontrol", "-C", "o", "-c", ctx, handle}, &error) &&
           Ok(t,
              {"tpm2_readpublic", "-c", handle, "-o", t->File(h + ".pub"), "-n",
               t->File(h + ".name")},
              &error);
  };
  if (!primary(w.a, "rsa2048:aes128cfb", kSrk) || !primary(w.b, "rsa2048:aes128cfb", kSrk) ||
      !primary(w.b, "ecc256:aes128cfb", kSrkEcc)) {
    return error;
  }
  return "";
}

const World* GetWorld(std::string* err, bool* skip) {
  return testing::BuildOnce(&BuildWorld, err, skip);
}

template <typename T>
T Load(const std::string& path) {
  auto r = Unmarshal<T>(ReadFileOrDie(path));
  if (!r) throw std::runtime_error(path + ": " + r.error().ToString());
  return *r;
}

// "ERROR: Esys_Import(0x101)..." -> our message for that code, so the test also shows
// what an operator would read.
std::string Explained(const std::string& tools_output, const std::string& call) {
  // Not std::regex: g++ 12 -fsanitize builds warn (-Werror) inside <regex>.
  const size_t at = tools_output.find("(0x");
  if (at == std::string::npos) return "";
  return CheckRc(call, static_cast<TSS2_RC>(std::stoul(tools_output.substr(at + 1), nullptr, 16)))
      .message();
}

class SwtpmInteropTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string err;
    bool skip = false;
    w_ = GetWorld(&err, &skip);
    if (skip) GTEST_SKIP() << "swtpm not available: " << err;
    ASSERT_NE(w_, nullptr) << err;
  }

  void Tools(const Swtpm* t, const std::vector<std::string>& argv) {
    std::string err;
    ASSERT_TRUE(Ok(t, argv, &err)) << err;
  }

  const World* w_ = nullptr;
};

#define TOOLS(t, ...) ASSERT_NO_FATAL_FAILURE(Tools(t, {__VA_ARGS__}))

TEST_F(SwtpmInteropTest, NamesMatchTpm2Tools) {
  // Storage primaries (RSA on A, ECC on B), the persistent EKs swtpm_setup made (RSA, ECC).
  struct {
    const Swtpm* t;
    std::string handle;
  } const keys[] = {{w_->a, kSrk}, {w_->b, kSrkEcc}, {w_->b, "0x81010001"}};
  for (const auto& k : keys) {
    std::string pub = k.t->File("rp" + k.handle + ".pub"),
                name = k.t->File("rp" + k.handle + ".name");
    TOOLS(k.t, "tpm2_readpublic", "-c", k.handle, "-o", pub, "-n", name);
    auto p = Load<TPM2B_PUBLIC>(pub);
    EXPECT_EQ(*ComputeName(p.publicArea), ReadFileOrDie(name)) << k.handle;
  }
  // The MA key: our marshalled bytes loaded by tpm2_loadexternal, and tpm2-tools' own
  // template from the PEM, must both give our Name.
  const Bytes ours = *ComputeName(w_->ma_pub.publicArea);
  TOOLS(w_->a, "tpm2_loadexternal", "-C", "n", "-u", w_->ma_pub_file, "-c",
        w_->a->File("ma_le.ctx"), "-n", w_->a->File("ma_le.name"));
  EXPECT_EQ(ReadFileOrDie(w_->a->File("ma_le.name")), ours);
  BioPtr bio(BIO_new_file(w_->a->File("ma_pub.pem").c_str(), "w"));
  ASSERT_EQ(PEM_write_bio_PUBKEY(bio.get(), w_->ma_key.get()), 1);
  bio.reset();
  TOOLS(w_->a, "tpm2_loadexternal", "-C", "n", "-G", "rsa", "-u", w_->a->File("ma_pub.pem"), "-a",
        "restricted|decrypt|userwithauth", "-c", w_->a->File("ma_pem.ctx"), "-n",
        w_->a->File("ma_pem.name"));
  EXPECT_EQ(ReadFileOrDie(w_->a->File("ma_pem.name")), ours);
}

TEST_F(SwtpmInteropTest, EkCertificateChainsToFixtureCa) {
  const Swtpm* b = w_->b;
  TOOLS(b, "tpm2_nvread", "-C", "o", "0x1c00002", "-o", b->File("ek_cert.der"));
  TOOLS(b, "tpm2_readpublic", "-c", "0x81010001", "-o", b->File("ek_persist.pub"));
  const Bytes der = ReadFileOrDie(b->File("ek_cert.der"));
  const uint8_t* p = der.data();
  X509Ptr cert(d2i_X509(nullptr, &p, static_cast<long>(der.size())));
  ASSERT_TRUE(cert);
  auto load_pem = [](const std::string& path) {
    BioPtr bio(BIO_new_file(path.c_str(), "r"));
    return X509Ptr(bio ? PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr) : nullptr);
  };
  X509Ptr root = load_pem(b->RootCaCertPath());
  X509Ptr intermediate = load_pem(b->IntermediateCaCertPath());
  ASSERT_TRUE(root && intermediate);
  X509StorePtr store(X509_STORE_new());
  ASSERT_EQ(X509_STORE_add_cert(store.get(), root.get()), 1);
  std::unique_ptr<STACK_OF(X509), decltype([](STACK_OF(X509) * s) { sk_X509_free(s); })> chain(
      sk_X509_new_null());
  sk_X509_push(chain.get(), intermediate.get());
  X509StoreCtxPtr ctx(X509_STORE_CTX_new());
  ASSERT_EQ(X509_STORE_CTX_init(ctx.get(), store.get(), cert.get(), chain.get()), 1);
  EXPECT_EQ(X509_verify_cert(ctx.get()), 1)
      << X509_verify_cert_error_string(X509_STORE_CTX_get_error(ctx.get()));
  // The certified key is the TPM's EK.
  auto ek = PublicToEvp(Load<TPM2B_PUBLIC>(b->File("ek_persist.pub")).publicArea);
  ASSERT_TRUE(ek.has_value());
  EXPECT_EQ(EVP_PKEY_eq(X509_get0_pubkey(cert.get()), ek->get()), 1);
}

// EK + AK on B, shared by the credential and attestation tests.
struct Identity {
  std::string ek_ctx, ek_pub, ak_ctx, ak_pub, ak_name;
};
const Identity& MakeIdentity(const Swtpm* b) {
  static Identity id;
  static bool made = false;
  if (!made) {
    id = {b->File("ek.ctx"), b->File("ek.pub"), b->File("ak.ctx"), b->File("ak.pub"),
          b->File("ak.name")};
    std::string err;
    if (!Ok(b, {"tpm2_createek", "-c", id.ek_ctx, "-G", "rsa", "-u", id.ek_pub}, &err) ||
        !Ok(b,
            {"tpm2_createak", "-C", id.ek_ctx, "-c", id.ak_ctx, "-G", "rsa", "-g", "sha256", "-s",
             "rsassa", "-u", id.ak_pub, "-n", id.ak_name, "-r", b->File("ak.priv")},
            &err)) {
      throw std::runtime_error(err);
    }
    made = true;
  }
  return id;
}

// tpm2_activatecredential with the PolicySecret(endorsement) session the EK requires.
CommandResult Activate(const Swtpm* b, const Identity& id, const std::string& ek_ctx,
                       const std::string& cred, const std::string& out) {
  const std::string s = b->File("ps.ctx");
  b->Tools({"tpm2_startauthsession", "--policy-session", "-S", s});
  b->Tools({"tpm2_policysecret", "-S", s, "-c", "e"});
  CommandResult r = b->Tools({"tpm2_activatecredential", "-c", id.ak_ctx, "-C", ek_ctx, "-i", cred,
                              "-o", out, "-P", "session:" + s});
  b->Tools({"tpm2_flushcontext", s});
  return r;
}

TEST_F(SwtpmInteropTest, MakeCredentialActivatesOnTpm) {
  const Identity& id = MakeIdentity(w_->b);
  auto ak = Load<TPM2B_PUBLIC>(id.ak_pub);
  ASSERT_TRUE(CheckAkAttributes(ak.publicArea).ok());
  const Bytes ak_name = *ComputeName(ak.publicArea);
  ASSERT_EQ(ak_name, ReadFileOrDie(id.ak_name));
  const Bytes secret = *RandomBytes(32);

  // RSA EK (OAEP "IDENTITY") and ECC EK (ECDH + KDFe).
  const std::string ecc_ek_ctx = w_->b->File("ekecc.ctx"), ecc_ek_pub = w_->b->File("ekecc.pub");
  TOOLS(w_->b, "tpm2_createek", "-c", ecc_ek_ctx, "-G", "ecc", "-u", ecc_ek_pub);
  for (auto [ek_ctx, ek_pub] :
       {std::pair{id.ek_ctx, id.ek_pub}, std::pair{ecc_ek_ctx, ecc_ek_pub}}) {
    auto cred = MakeCredential(Load<TPM2B_PUBLIC>(ek_pub), ak_name, secret);
    ASSERT_TRUE(cred.has_value()) << cred.error().ToString();
    const std::string file = w_->b->File("cred.out"), out = w_->b->File("cred.recovered");
    WriteFileOrDie(file, *CredentialFile(*cred));
    std::remove(out.c_str());
    CommandResult r = Activate(w_->b, id, ek_ctx, file, out);
    ASSERT_EQ(r.exit_code, 0) << ek_pub << ": " << r.output;
    EXPECT_EQ(ReadFileOrDie(out), secret) << ek_pub;
  }
  // Bound to another Name: the TPM refuses.
  Bytes other = ak_name;
  other.back() ^= 1;
  auto cred = MakeCredential(Load<TPM2B_PUBLIC>(id.ek_pub), other, secret);
  ASSERT_TRUE(cred.has_value());
  WriteFileOrDie(w_->b->File("cred_other.out"), *CredentialFile(*cred));
  CommandResult r = Activate(w_->b, id, id.ek_ctx, w_->b->File("cred_other.out"), w_->b->File("x"));
  EXPECT_NE(r.exit_code, 0);
  std::string msg = Explained(r.output, "Esys_ActivateCredential");
  EXPECT_NE(msg.find("Esys_ActivateCredential"), std::string::npos) << r.output;
  RecordProperty("wrong_name_message", msg);
}

// The EK publics a TPM creates from the TCG templates are what tpm/ek_templates.h accepts:
// tpm2_createek (L-1, L-2) and TPM2_CreatePrimary from the high-range H-1/H-2 templates
// (unique empty, policy PolicyB SHA-256 written out from our template).
TEST_F(SwtpmInteropTest, TcgEkTemplatesMatchTheTpm) {
  const Swtpm* b = w_->b;
  for (auto [alg, name] : {std::pair{"rsa", "L-1"}, std::pair{"ecc", "L-2"}}) {
    const std::string ctx = b->File(std::string("ek_") + alg + ".ctx");
    const std::string pub = b->File(std::string("ek_") + alg + ".pub");
    TOOLS(b, "tpm2_createek", "-c", ctx, "-G", alg, "-u", pub);
    const TPMT_PUBLIC ek = Load<TPM2B_PUBLIC>(pub).publicArea;
    std::vector<std::string> diff = EkTemplateDifferences(ek, TcgEkTemplate(name).public_area);
    EXPECT_TRUE(diff.empty()) << name << ": " << (diff.empty() ? "" : diff[0]);
    EXPECT_TRUE(CheckEkTemplate(ek).ok()) << name;
  }
  const TPM2B_DIGEST& policy_b = TcgEkTemplate("H-1").public_area.authPolicy;
  const std::string policy_file = b->File("policy_b_sha256.bin");
  WriteFileOrDie(policy_file, ByteView(policy_b.buffer, policy_b.size));
  const char* attrs =
      "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|adminwithpolicy|restricted|decrypt";
  for (auto [alg, name] :
       {std::pair{"rsa2048:aes128cfb", "H-1"}, std::pair{"ecc256:aes128cfb", "H-2"}}) {
    const std::string pub = b->File(std::string(name) + ".pub");
    const std::string ctx = b->File(std::string(name) + ".ctx");
    TOOLS(b, "tpm2_createprimary", "-C", "e", "-g", "sha256", "-G", alg, "-a", attrs, "-L",
          policy_file, "-c", ctx);
    TOOLS(b, "tpm2_readpublic", "-c", ctx, "-o", pub);
    const TPMT_PUBLIC ek = Load<TPM2B_PUBLIC>(pub).publicArea;
    std::vector<std::string> diff = EkTemplateDifferences(ek, TcgEkTemplate(name).public_area);
    EXPECT_TRUE(diff.empty()) << name << ": " << (diff.empty() ? "" : diff[0]);
    Status s = CheckEkTemplate(ek);
    EXPECT_TRUE(s.ok()) << name << ": " << s.ToString();
  }
}

TEST_F(SwtpmInteropTest, QuoteAndCertifyVerify) {
  const Identity& id = MakeIdentity(w_->b);
  const TPMT_PUBLIC ak = Load<TPM2B_PUBLIC>(id.ak_pub).publicArea;
  const Swtpm* b = w_->b;

  // Quote over an MA nonce.
  const Bytes nonce = *RandomBytes(20);
  TOOLS(b, "tpm2_quote", "-c", id.ak_ctx, "-l", "sha256:0,1,2,3", "-q", HexEncode(nonce), "-m",
        b->File("quote.msg"), "-s", b->File("quote.sig"), "-g", "sha256");
  const Bytes quote = ReadFileOrDie(b->File("quote.msg"));
  const auto qsig = Load<TPMT_SIGNATURE>(b->File("quote.sig"));
  auto info = VerifyQuote(ak, quote, qsig, nonce);
  ASSERT_TRUE(info.has_value()) << info.error().ToString();
  EXPECT_EQ(info->pcr_select.count, 1u);
  EXPECT_EQ(info->pcr_digest.size(), 32u);
  Bytes other_nonce = nonce;
  other_nonce[0] ^= 1;
  EXPECT_EQ(VerifyQuote(ak, quote, qsig, other_nonce).error().code(), Code::kInvalidArgument);
  Bytes tampered = quote;
  tampered.back() ^= 1;
  EXPECT_EQ(VerifyQuote(ak, tampered, qsig, nonce).error().code(), Code::kSignatureInvalid);

  // Certify of B's SRK. tpm2-tools 5.4 cannot set qualifyingData: it always sends
  // 00 ff 55 aa, which stands in for the MA nonce here (ESAPI callers pass the real one).
  TOOLS(b, "tpm2_certify", "-C", id.ak_ctx, "-c", kSrk, "-g", "sha256", "-o",
        b->File("certify.attest"), "-s", b->File("certify.sig"));
  const Bytes attest = ReadFileOrDie(b->File("certify.attest"));
  const auto csig = Load<TPMT_SIGNATURE>(b->File("certify.sig"));
  const TPMT_PUBLIC srk_b = Load<TPM2B_PUBLIC>(b->File(std::string(kSrk) + ".pub")).publicArea;
  const TPMT_PUBLIC srk_a = Load<TPM2B_PUBLIC>(w_->a->File(std::string(kSrk) + ".pub")).publicArea;
  const Bytes fixed_nonce = {0x00, 0xff, 0x55, 0xaa};
  Status ok = VerifyCertify(ak, attest, csig, fixed_nonce, srk_b);
  EXPECT_TRUE(ok.ok()) << ok.ToString();
  EXPECT_TRUE(CheckStorageParent(srk_b).ok());
  Status wrong_key = VerifyCertify(ak, attest, csig, fixed_nonce, srk_a);
  EXPECT_EQ(wrong_key.code(), Code::kInvalidArgument);
  EXPECT_NE(wrong_key.message().find("certified Name"), std::string::npos);
  EXPECT_EQ(VerifyCertify(ak, attest, csig, nonce, srk_b).code(), Code::kInvalidArgument);
  tampered = attest;
  tampered[tampered.size() - 3] ^= 1;
  EXPECT_EQ(VerifyCertify(ak, tampered, csig, fixed_nonce, srk_b).code(), Code::kSignatureInvalid);
  // Signed by someone else: verify with another RSA key in place of the AK.
  EXPECT_EQ(VerifyCertify(srk_a, attest, csig, fixed_nonce, srk_b).code(), Code::kSignatureInvalid);
  // A quote is not a certify.
  EXPECT_EQ(VerifyCertify(ak, quote, qsig, nonce, srk_b).code(), Code::kInvalidArgument);
}

// Quotes by an ECDSA-P256/SHA-256 AK and an RSA-PSS/SHA-384 AK (the RSASSA AK is above).
TEST_F(SwtpmInteropTest, QuoteVerifiesForEcdsaAndPssAks) {
  const Identity& id = MakeIdentity(w_->b);
  const Swtpm* b = w_->b;
  struct {
    const char* tag;
    const char* hash;
    const char* scheme;
    std::vector<std::string> args;
  } const aks[] = {{"ecdsa", "sha256", "ecdsa", {"-G", "ecc", "-s", "ecdsa"}},
                   {"pss", "sha384", "rsapss", {"-G", "rsa", "-s", "rsapss"}}};
  for (const auto& k : aks) {
    SCOPED_TRACE(k.tag);
    const std::string t = k.tag;
    std::vector<std::string> create = {"tpm2_createak",
                                       "-C",
                                       id.ek_ctx,
                                       "-c",
                                       b->File(t + "ak.ctx"),
                                       "-u",
                                       b->File(t + "ak.pub"),
                                       "-r",
                                       b->File(t + "ak.priv")};
    create.insert(create.end(), k.args.begin(), k.args.end());
    create.insert(create.end(), {"-g", k.hash});
    TOOLS(b, create);
    const TPMT_PUBLIC ak = Load<TPM2B_PUBLIC>(b->File(t + "ak.pub")).publicArea;
    EXPECT_TRUE(CheckAkAttributes(ak).ok());
    const Bytes nonce = *RandomBytes(16);
    TOOLS(b, "tpm2_quote", "-c", b->File(t + "ak.ctx"), "-l", "sha256:0,7", "-q", HexEncode(nonce),
          "-m", b->File(t + "quote.msg"), "-s", b->File(t + "quote.sig"), "-g", k.hash, "--scheme",
          k.scheme);
    const Bytes quote = ReadFileOrDie(b->File(t + "quote.msg"));
    const auto sig = Load<TPMT_SIGNATURE>(b->File(t + "quote.sig"));
    auto info = VerifyQuote(ak, quote, sig, nonce);
    EXPECT_TRUE(info.has_value()) << info.error().ToString();
    Bytes tampered = quote;
    tampered[10] ^= 1;
    EXPECT_EQ(VerifyQuote(ak, tampered, sig, nonce).error().code(), Code::kSignatureInvalid);
  }
}

// MRK flavours: RSA without encryptedDuplication, ECC with it (needs the inner wrapper).
struct MrkCase {
  const char* tag;
  const char* alg;
  bool encrypted_duplication;
};

void PrintTo(const MrkCase& c, std::ostream* os) {
  *os << c.tag;
}

class RewrapInteropTest : public SwtpmInteropTest, public ::testing::WithParamInterface<MrkCase> {};

TEST_P(RewrapInteropTest, DuplicateRewrapImportLoadAndUseChild) {
  const MrkCase c = GetParam();
  const Swtpm* a = w_->a;
  const Swtpm* b = w_->b;
  auto f = [&](const std::string& n) { return a->File(std::string(c.tag) + "_" + n); };

  // On A: MRK with authPolicy = PolicyDuplicationSelect(MA Name, includeObject NO) and a child.
  TOOLS(a, "tpm2_startauthsession", "-S", f("trial.ctx"));
  TOOLS(a, "tpm2_policyduplicationselect", "-S", f("trial.ctx"), "-N", w_->ma_name_file, "-L",
        f("mrk.policy"));
  TOOLS(a, "tpm2_flushcontext", f("trial.ctx"));
  std::string attrs = "restricted|decrypt|userwithauth|sensitivedataorigin|noda";
  std::string child_attrs = "fixedparent|sensitivedataorigin|userwithauth|sign";
  if (c.encrypted_duplication) {
    attrs += "|encryptedduplication";
    child_attrs += "|encryptedduplication";
  }
  TOOLS(a, "tpm2_create", "-C", kSrk, "-G", c.alg, "-g", "sha256", "-a", attrs, "-L",
        f("mrk.policy"), "-u", f("mrk.pub"), "-r", f("mrk.priv"));
  TOOLS(a, "tpm2_load", "-C", kSrk, "-u", f("mrk.pub"), "-r", f("mrk.priv"), "-c", f("mrk.ctx"),
        "-n", f("mrk.name"));
  TOOLS(a, "tpm2_create", "-C", f("mrk.ctx"), "-G", "ecc256:ecdsa-sha256", "-a", child_attrs, "-u",
        f("child.pub"), "-r", f("child.priv"));
  const auto mrk_pub = Load<TPM2B_PUBLIC>(f("mrk.pub"));
  ASSERT_EQ(*ComputeName(mrk_pub.publicArea), ReadFileOrDie(f("mrk.name")));

  // Duplicate to the MA key, with and without the inner wrapper (not allowed with ED).
  std::vector<bool> inner_modes = {true};
  if (!c.encrypted_duplication) inner_modes.push_back(false);
  for (bool inner : inner_modes) {
    SCOPED_TRACE(std::string(c.tag) + (inner ? " inner" : " no-inner"));
    const std::string d = inner ? "inner" : "plain";
    TOOLS(a, "tpm2_loadexternal", "-C", "n", "-u", w_->ma_pub_file, "-c", f("ma.ctx"));
    TOOLS(a, "tpm2_startauthsession", "--policy-session", "-S", f("s.ctx"));
    TOOLS(a, "tpm2_policyduplicationselect", "-S", f("s.ctx"), "-n", f("mrk.name"), "-N",
          w_->ma_name_file);
    std::vector<std::string> dup = {"tpm2_duplicate",
                                    "-C",
                                    f("ma.ctx"),
                                    "-c",
                                    f("mrk.ctx"),
                                    "-G",
                                    inner ? "aes" : "null",
                                    "-p",
                                    "session:" + f("s.ctx"),
                                    "-r",
                                    f(d + ".dup"),
                                    "-s",
                                    f(d + ".seed")};
    if (inner) dup.insert(dup.end(), {"-o", f(d + ".innerkey")});
    CommandResult r = a->Tools(dup);
    a->Tools({"tpm2_flushcontext", f("s.ctx")});
    ASSERT_EQ(r.exit_code, 0) << r.output;

    const auto dup_priv = Load<TPM2B_PRIVATE>(f(d + ".dup"));
    const auto dup_seed = Load<TPM2B_ENCRYPTED_SECRET>(f(d + ".seed"));

    // A flipped bit never gets past the MA.
    TPM2B_PRIVATE flipped = dup_priv;
    flipped.buffer[flipped.size / 2] ^= 0x04;
    auto bad = Rewrap(w_->ma_key.get(), w_->ma_pub.publicArea, mrk_pub, flipped, dup_seed,
                      Load<TPM2B_PUBLIC>(b->File(std::string(kSrk) + ".pub")));
    ASSERT_FALSE(bad.has_value());
    EXPECT_EQ(bad.error().code(), Code::kIntegrityFailure);

    for (const char* parent : {kSrk, kSrkEcc}) {
      SCOPED_TRACE(parent);
      const std::string p = std::string(parent);
      auto rw = Rewrap(w_->ma_key.get(), w_->ma_pub.publicArea, mrk_pub, dup_priv, dup_seed,
                       Load<TPM2B_PUBLIC>(b->File(p + ".pub")));
      ASSERT_TRUE(rw.has_value()) << rw.error().ToString();
      const std::string out_priv = f(d + p + ".rw.priv"), out_seed = f(d + p + ".rw.seed");
      WriteFileOrDie(out_priv, *Marshal(rw->duplicate));
      WriteFileOrDie(out_seed, *Marshal(rw->encrypted_seed));

      std::vector<std::string> imp = {
          "tpm2_import", "-C", p,        "-u", f("mrk.pub"),          "-i",
          out_priv,      "-s", out_seed, "-r", f(d + p + ".imported")};
      if (inner) {
        // Without the inner key the TPM refuses (our CheckRc explains why).
        CommandResult no_key = b->Tools(imp);
        EXPECT_NE(no_key.exit_code, 0);
        const std::string msg = Explained(no_key.output, "Esys_Import");
        EXPECT_NE(msg.find("inner wrapper key"), std::string::npos) << no_key.output << "\n" << msg;
        RecordProperty("import_without_inner_key", msg);
        imp.insert(imp.end(), {"-k", f(d + ".innerkey")});
      }
      TOOLS(b, imp);
      TOOLS(b, "tpm2_load", "-C", p, "-u", f("mrk.pub"), "-r", f(d + p + ".imported"), "-c",
            f(d + p + ".mrkB.ctx"), "-n", f(d + p + ".mrkB.name"));
      EXPECT_EQ(ReadFileOrDie(f(d + p + ".mrkB.name")), ReadFileOrDie(f("mrk.name")));
      // The child blob made on A loads unchanged under the imported MRK on B and signs.
      TOOLS(b, "tpm2_load", "-C", f(d + p + ".mrkB.ctx"), "-u", f("child.pub"), "-r",
            f("child.priv"), "-c", f(d + p + ".childB.ctx"));
      WriteFileOrDie(f("msg"), ToBytes("backup restored"));
      TOOLS(b, "tpm2_sign", "-c", f(d + p + ".childB.ctx"), "-g", "sha256", "-o", f(d + p + ".sig"),
            f("msg"));
      Status v =
          VerifyTpmSignature(Load<TPM2B_PUBLIC>(f("child.pub")).publicArea,
                             ToBytes("backup restored"), Load<TPMT_SIGNATURE>(f(d + p + ".sig")));
      EXPECT_TRUE(v.ok()) << v.ToString();

      if (std::string(parent) == kSrk && !inner) {
        // Wrapped for B, imported on A: refused, and the message says so.
        CommandResult wrong = a->Tools({"tpm2_import", "-C", kSrk, "-u", f("mrk.pub"), "-i",
                                        out_priv, "-s", out_seed, "-r", f("wrong.imported")});
        EXPECT_NE(wrong.exit_code, 0);
        std::string msg = Explained(wrong.output, "Esys_Import");
        EXPECT_NE(msg.find("not wrapped for this TPM"), std::string::npos) << wrong.output << "\n"
                                                                           << msg;
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Mrk, RewrapInteropTest,
                         ::testing::Values(MrkCase{"rsa", "rsa2048:aes128cfb", false},
                                           MrkCase{"ecced", "ecc256:aes128cfb", true}),
                         [](const auto& info) { return std::string(info.param.tag); });

}  // namespace
}  // namespace tpmma::tpm
