// SPDX-License-Identifier: GPL-2.0-or-later
// What the MA tests share, over the wire (ma_service_swtpm_test.cc) or calling the domain
// functions (ma_operations_test.cc): a real swtpm platform (EK certificate from NV chained
// to the fixture's CA, AK, credential activation, TPM2_Certify over the MA's nonces, MRK
// duplication to the MA key, TPM-signed packages) driving the operations through MaCalls,
// which each file implements with its own transport.
#pragma once

#include <openssl/hmac.h>
#include <sys/stat.h>

#include <algorithm>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "common/env.h"
#include "schema/package_xml.h"
#include "server/auth.h"
#include "server/config.h"
#include "server/ma_key.h"
#include "server/ma_operations.h"
#include "storage/sqlite_vault.h"
#include "tests/support/status_testing.h"
#include "tests/support/swtpm.h"
#include "tests/support/testutil.h"
#include "tpm/escrow.h"
#include "tpm/esys/esys.h"
#include "tpm/esys/tpm_pkey.h"
#include "tpm/marshal.h"
#include "tpm/public.h"

namespace tpmma::server {

// Time the tests can move.
class FakeClockEnv : public EnvWrapper {
 public:
  FakeClockEnv() : EnvWrapper(Env::Default()) {}
  int64_t NowUnixSeconds() override { return target()->NowUnixSeconds() + offset; }
  int64_t offset = 0;
};

// An MA key and certificate made with the openssl CLI, as an operator might.
struct MaFiles {
  std::string key, cert;
};
inline MaFiles MakeMaFiles(const testing::TempDir& dir, const std::string& name = "ma",
                           const std::string& cn = "tpm-ma test MA") {
  MaFiles f{dir.File(name + ".key"), dir.File(name + ".crt")};
  auto r =
      testing::RunCommand({"openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                           f.key, "-out", f.cert, "-subj", "/CN=" + cn, "-days", "30"});
  EXPECT_EQ(r.exit_code, 0) << r.output;
  ::chmod(f.key.c_str(), 0600);
  return f;
}

inline Config BaseConfig(const testing::TempDir& dir, const MaFiles& ma,
                         std::vector<std::string> roots) {
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

inline Bytes Tpm2bAttest(const Bytes& body) {
  // Sized once and copied into: g++ 12 -O3 warns (-Warray-bounds, a false positive) on
  // inserting into a two-byte vector.
  Bytes out(body.size() + 2);
  out[0] = static_cast<uint8_t>(body.size() >> 8);
  out[1] = static_cast<uint8_t>(body.size());
  std::copy(body.begin(), body.end(), out.begin() + 2);
  return out;
}

inline Bytes Proof(ByteView secret, ByteView challenge_id) {
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

// The MA in process on `cfg`: its software MA key, its SQLite vault, the operations on them.
struct InProcessMa {
  std::unique_ptr<storage::SqliteVault> vault;
  std::unique_ptr<MaKeyCustody> custody;
  std::unique_ptr<MaOperations> ops;
  MaOperations* get() const { return ops.get(); }
};

inline Result<InProcessMa> MakeInProcessMa(const Config& cfg, Env* env) {
  InProcessMa s;
  TPMMA_ASSIGN_OR_RETURN(
      s.custody, LoadSoftwareMaKey(cfg.ma.key_id, cfg.ma.private_key, cfg.ma.certificate, env));
  TPMMA_ASSIGN_OR_RETURN(s.vault, storage::SqliteVault::Open(cfg.vault_path));
  TPMMA_ASSIGN_OR_RETURN(s.ops, MaOperations::Create(cfg, env, s.vault.get(), s.custody.get()));
  return s;
}

// The platform operations, as a test drives them.
class MaCalls {
 public:
  virtual ~MaCalls() = default;
  virtual Status Begin(const BeginRequest& r, BeginResult* out) = 0;
  virtual Status Complete(const CompleteRequest& r, CompleteResult* out) = 0;
  virtual Status Upload(const std::string& token, const Bytes& pkg, bool* already) = 0;
  virtual Status Query(const std::string& token, std::vector<std::string>* ids,
                       std::vector<unsigned>* key_counts) = 0;
  virtual Status Delete(const std::string& token, const std::string& id) = 0;
  virtual Status Prepare(const DownloadPrepareRequest& r, Bytes* nonce) = 0;
  virtual Status CompleteDownload(const DownloadCompleteRequest& r, Downloaded* out) = 0;
};

// Authenticate Begin and Complete straight into the operations (the other calls are not
// used): for tests of who may enroll.
class AuthOnlyCalls : public MaCalls {
 public:
  explicit AuthOnlyCalls(MaOperations* ops) : ops_(ops) {}
  Status Begin(const BeginRequest& r, BeginResult* out) override {
    CallContext call;
    auto got = ops_->AuthenticateBegin(r, &call);
    if (!got) return got.error();
    *out = std::move(*got);
    return Status::Ok();
  }
  Status Complete(const CompleteRequest& r, CompleteResult* out) override {
    CallContext call;
    auto got = ops_->AuthenticateComplete(r, &call);
    if (!got) return got.error();
    *out = std::move(*got);
    return Status::Ok();
  }
  Status Upload(const std::string&, const Bytes&, bool*) override { return Unused(); }
  Status Query(const std::string&, std::vector<std::string>*, std::vector<unsigned>*) override {
    return Unused();
  }
  Status Delete(const std::string&, const std::string&) override { return Unused(); }
  Status Prepare(const DownloadPrepareRequest&, Bytes*) override { return Unused(); }
  Status CompleteDownload(const DownloadCompleteRequest&, Downloaded*) override { return Unused(); }

 private:
  static Status Unused() { return Status(Code::kUnsupported, "not used here"); }
  MaOperations* ops_;
};

#define EXPECT_CODE(expr, code_)                                   \
  do {                                                             \
    Status s_ = (expr);                                            \
    EXPECT_EQ(s_.code(), code_) << #expr << ": " << s_.ToString(); \
  } while (0)

class MaPlatformTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    t_ = testing::SharedSwtpm(0, &why);
    if (t_ == nullptr) GTEST_SKIP() << why;
    ma_ = MakeMaFiles(dir_);
    cfg_ = BaseConfig(dir_, ma_, {t_->RootCaCertPath()});
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

  Status Begin(MaCalls& c, const esys::Object& ek, const Bytes& ak_public, Begun* out,
               bool with_intermediate = true) {
    auto ek_pub = cur_->ReadPublic(ek);
    auto cert = cur_->ReadEkCertificate();
    if (!ek_pub || !cert) return Status(Code::kInternal, "EK");
    BeginRequest r;
    r.ek_public = ek_pub->marshalled;
    if (send_ek_certificate_) {
      r.ek_certificate = *cert;
      if (with_intermediate) r.ek_intermediates.push_back(cur_intermediate_);
    }
    r.ak_public = ak_public;
    BeginResult got;
    Status s = c.Begin(r, &got);
    if (!s.ok()) return s;
    out->challenge_id = got.challenge_id;
    out->nonce = got.nonce;
    out->blob = *tpm::Unmarshal<TPM2B_ID_OBJECT>(got.credential_blob);
    out->secret = *tpm::Unmarshal<TPM2B_ENCRYPTED_SECRET>(got.encrypted_secret);
    return Status::Ok();
  }

  // Round one answered on the fixture's TPM: Begin with the AK `*ak_blob` (made under the EK
  // when `*ak_pub` is empty), ActivateCredential, the proof; the AK stays loaded for
  // certifications over begun.nonce (the EK is flushed: swtpm holds three objects).
  struct Activated {
    Begun begun;
    Bytes proof;
    esys::Object ak;
  };
  Status Activate(MaCalls& c, esys::KeyBlob* ak_blob, Bytes* ak_pub, Activated* out) {
    auto ek = tpm_->CreateEk();
    if (!ek) return ek.error();
    if (ak_pub->empty()) {
      auto blob = tpm_->CreateAk(*ek, esys::KeyAlg::kRsa2048);
      if (!blob) return blob.error();
      *ak_blob = *blob;
      *ak_pub = *tpm::Marshal(blob->public_area);
    }
    auto ak = tpm_->Load(*ek, *ak_blob);
    if (!ak) return ak.error();
    TPMMA_RETURN_IF_ERROR(Begin(c, *ek, *ak_pub, &out->begun));
    auto secret = tpm_->ActivateCredential(*ak, *ek, out->begun.blob, out->begun.secret);
    if (!secret) return secret.error();
    out->proof = Proof(*secret, out->begun.challenge_id);
    out->ak = std::move(*ak);
    return Status::Ok();
  }

  Status Complete(MaCalls& c, const Bytes& challenge_id, const Bytes& proof,
                  const esys::PublicInfo* signing, const esys::Attestation* cert,
                  std::string* token, std::string* platform) {
    CompleteRequest r;
    r.challenge_id = challenge_id;
    r.proof = proof;
    if (signing != nullptr) {
      r.signing_key =
          CertifiedKeyProof{signing->marshalled, Tpm2bAttest(cert->attest), cert->signature};
    }
    CompleteResult got;
    Status s = c.Complete(r, &got);
    if (s.ok()) {
      token->assign(got.token.data(), got.token.size());
      *platform = got.platform_id;
    }
    return s;
  }

  Status Upload(MaCalls& c, const std::string& token, const Bytes& pkg, bool* already) {
    return c.Upload(token, pkg, already);
  }

  Status Query(MaCalls& c, const std::string& token, std::vector<std::string>* ids) {
    return c.Query(token, ids, &last_key_counts_);
  }

  Status Delete(MaCalls& c, const std::string& token, const std::string& id) {
    return c.Delete(token, id);
  }

  Status Prepare(MaCalls& c, const std::string& token, const std::string& id, const Bytes& name,
                 Bytes* nonce) {
    return c.Prepare(DownloadPrepareRequest{token, id, name}, nonce);
  }

  Status CompleteDownload(MaCalls& c, const std::string& token, const std::string& id,
                          const Bytes& nonce, const Bytes& parent_public,
                          const esys::Attestation& cert, Downloaded* out) {
    return c.CompleteDownload(DownloadCompleteRequest{token, id, nonce, parent_public,
                                                      Tpm2bAttest(cert.attest), cert.signature},
                              out);
  }

  testing::TempDir dir_;
  testing::Swtpm* t_ = nullptr;
  MaFiles ma_;
  Config cfg_;
  FakeClockEnv env_;
  std::unique_ptr<esys::Tpm> tpm_;
  esys::Tpm* cur_ = nullptr;         // the TPM Begin reads the EK certificate from
  bool send_ek_certificate_ = true;  // false: Begin as a TPM without an EK certificate
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

  void OpenPlat(testing::Swtpm* sw, Plat* p) {
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

  // The old board `a` on the fixture's TPM and the new board `b` on `tb`, both authenticated
  // through `c`; `a` with a package-signing key, `b` with one if `b_signs`.
  void OpenBoth(MaCalls& c, testing::Swtpm* tb, Plat* a, Plat* b, bool b_signs) {
    ASSERT_NO_FATAL_FAILURE(OpenPlat(t_, a));
    ASSERT_NO_FATAL_FAILURE(OpenPlat(tb, b));
    ASSERT_NO_FATAL_FAILURE(AuthenticatePlat(c, *a, true));
    ASSERT_NO_FATAL_FAILURE(AuthenticatePlat(c, *b, b_signs));
  }

  static TPM2B_PUBLIC SigningTemplate() {
    TPM2B_PUBLIC t = esys::ChildTemplate(esys::ChildType::kRsaSign, false);
    t.publicArea.objectAttributes |= TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT;
    return t;
  }

  // Authenticate; with_key: certify a fresh package-signing key over the nonce.
  void AuthenticatePlat(MaCalls& c, Plat& p, bool with_key) {
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
    schema::MigrationPackage model;
    Bytes bytes;
    esys::KeyBlob mrk;
    SecureBytes inner_key;
  };

  // A real backup: MRK duplicated by the TPM to the MA key, package signed in the TPM.
  // With `escrow_public`, the inner key is escrowed to it (else recovery-code custody). With
  // `follow`, the MRK follows the MA (PolicyAuthorize by follow->policy_key) and duplicates
  // under that approval (else PolicyDuplicationSelect to `ma_name`).
  void MakePackage(Plat& p, const TPM2B_PUBLIC& ma_public, const Bytes& ma_name, Made* out,
                   const TPM2B_PUBLIC* escrow_public = nullptr,
                   const std::string& escrow_key_id = "escrow-test",
                   const tpm::Approval* follow = nullptr) {
    auto mrk_blob = follow == nullptr ? p.tpm->CreateMrk(p.srk, ma_name, esys::KeyAlg::kRsa2048)
                                      : p.tpm->CreateMrkFollowingMa(
                                            p.srk, *tpm::ComputeName(follow->policy_key.publicArea),
                                            esys::KeyAlg::kRsa2048);
    ASSERT_OK(mrk_blob);
    out->mrk = *mrk_blob;
    auto mrk = p.tpm->Load(p.srk, *mrk_blob);
    ASSERT_OK(mrk);
    auto d = follow == nullptr ? p.tpm->Duplicate(*mrk, ma_public, esys::InnerWrap::kTpmGenerated)
                               : p.tpm->DuplicateAuthorized(*mrk, ma_public, *follow,
                                                            esys::InnerWrap::kTpmGenerated);
    ASSERT_OK(d);
    mrk->reset();
    out->inner_key = d->inner_key;
    out->model.package_id = *schema::NewUuid();
    out->model.source_platform_id = p.id;
    out->model.creation_time = env_.NowUnixSeconds();
    out->model.mrk.public_area = *tpm::Marshal(mrk_blob->public_area);
    out->model.mrk.duplicate = *tpm::Marshal(d->duplicate);
    out->model.mrk.encrypted_seed = *tpm::Marshal(d->encrypted_seed);
    schema::RecoveryCodeCustody rc;
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
          schema::EscrowCustody{escrow_key_id, schema::EscrowAlgorithm::kRsaOaepSha256, *ct};
    }
    schema::ChildKey child;
    child.key_id = *schema::NewUuid();
    child.label = "VPN key";
    child.usage = schema::KeyUsage::kSign;
    child.public_area = out->model.mrk.public_area;  // any TPM2B blobs do for the MA
    child.private_area = out->model.mrk.duplicate;
    out->model.child_keys.push_back(child);
    auto bytes = schema::SignPackage(out->model, p.signer.get());
    ASSERT_OK(bytes);
    out->bytes = *bytes;
  }

  // Prepare, certify the SRK by the AK over the nonce, Complete.
  Status DownloadTo(MaCalls& c, Plat& p, const std::string& id, Downloaded* out,
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

}  // namespace tpmma::server
