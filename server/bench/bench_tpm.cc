// SPDX-License-Identifier: GPL-2.0-or-later
#include "server/bench/bench_tpm.h"

#include <openssl/hmac.h>
#include <openssl/pem.h>

#include <algorithm>
#include <cstdio>
#include <optional>
#include <sstream>

#include "tpm/esys/esys.h"
#include "tpm/esys/tpm_pkey.h"
#include "common/env.h"
#include "common/openssl.h"
#include "schema/package_xml.h"
#include "soapMigrationAuthorityBindingProxy.h"
#include "tpm/marshal.h"
#include "tpm/public.h"
#include "wsdl/soap_context.h"

namespace tpmma::bench {
namespace {

using wsdl::FromBase64Binary;
using wsdl::ToBase64Binary;

// The request envelope, written by the generated serializer exactly as the proxy's send_X
// would, minus the connection (as in tests/server/ma_service_swtpm_test.cc).
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

// A gSOAP context in plain mode (no HTTP: Beast carries the bytes).
class Soap {
 public:
  Soap() {
    wsdl::HardenContext(proxy.soap);
    soap_set_mode(proxy.soap, SOAP_ENC_PLAIN);
  }
  template <typename T>
  Result<std::string> Serialize(T* req, const char* tag) {
    std::ostringstream os;
    proxy.soap->os = &os;
    int rc = Put(proxy.soap, req, tag);
    proxy.soap->os = nullptr;
    if (rc != SOAP_OK) return Error(wsdl::StatusFromSoap(proxy.soap));
    return std::move(os).str();
  }
  // Posts `body` and reads the reply with the generated `recv` (frees the previous reply).
  template <typename Recv>
  Status Call(SyncHttps& http, const std::string& body, Recv recv) {
    TPMMA_ASSIGN_OR_RETURN(HttpReply reply, http.Post(body));
    if (reply.status != 200 && reply.status != 500) {
      return Status(Code::kUnavailable,
                    "HTTP " + std::to_string(reply.status) + ": " + reply.body.substr(0, 200));
    }
    std::istringstream is(reply.body);
    proxy.soap->is = &is;
    recv(proxy);
    proxy.soap->is = nullptr;
    return wsdl::StatusFromSoap(proxy.soap);
  }
  void Free() { proxy.destroy(); }

  MigrationAuthorityBindingProxy proxy;
};

Bytes Tpm2bAttest(const Bytes& body) {
  Bytes out = {static_cast<uint8_t>(body.size() >> 8), static_cast<uint8_t>(body.size())};
  out.insert(out.end(), body.begin(), body.end());
  return out;
}

Result<Bytes> Proof(ByteView secret, ByteView challenge_id) {
  Bytes out(32);
  unsigned int len = 0;
  if (HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()), challenge_id.data(),
           challenge_id.size(), out.data(), &len) == nullptr) {
    return Error(OpensslError("HMAC"));
  }
  return out;
}

Result<std::vector<Bytes>> PemChainToDer(const std::string& path) {
  TPMMA_ASSIGN_OR_RETURN(Bytes pem, Env::Default()->ReadFile(path, 1 << 20));
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  std::vector<Bytes> out;
  while (true) {
    X509Ptr cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
    if (!cert) break;
    int n = i2d_X509(cert.get(), nullptr);
    Bytes der(static_cast<size_t>(n));
    unsigned char* p = der.data();
    i2d_X509(cert.get(), &p);
    out.push_back(std::move(der));
  }
  ERR_clear_error();
  if (out.empty()) return Error(Code::kInvalidArgument, path + " holds no PEM certificate");
  return out;
}

class BenchPlatformImpl final : public BenchPlatform {
 public:
  explicit BenchPlatformImpl(const SetupOptions& o) : options_(o) {}

  Status Init() {
    TPMMA_ASSIGN_OR_RETURN(tpm_, esys::Tpm::Open(options_.tcti));
    TPMMA_ASSIGN_OR_RETURN(esys::Object ek, tpm_->CreateEk());
    TPMMA_ASSIGN_OR_RETURN(esys::PublicInfo ek_info, tpm_->ReadPublic(ek));
    ek_public_ = ek_info.marshalled;
    platform_id_ = HexEncode(ek_info.name);
    if (!options_.ek_certificate.empty()) {
      TPMMA_ASSIGN_OR_RETURN(ek_cert_, Env::Default()->ReadFile(options_.ek_certificate, 1 << 20));
    } else {
      auto cert = tpm_->ReadEkCertificate();
      if (!cert) return cert.error().WithContext("EK certificate from NV 0x01c00002");
      ek_cert_ = std::move(*cert);
    }
    for (const std::string& f : options_.ek_intermediates) {
      TPMMA_ASSIGN_OR_RETURN(std::vector<Bytes> certs, PemChainToDer(f));
      for (auto& c : certs) intermediates_.push_back(std::move(c));
    }
    TPMMA_ASSIGN_OR_RETURN(ak_blob_, tpm_->CreateAk(ek, esys::KeyAlg::kRsa2048));
    TPMMA_ASSIGN_OR_RETURN(ak_public_, tpm::Marshal(ak_blob_.public_area));
    TPMMA_ASSIGN_OR_RETURN(srk_, tpm_->GetOrCreateSrk(esys::KeyAlg::kRsa2048));
    return Status::Ok();
  }

  Result<std::string> BeginBody() override {
    _ma__AuthenticateRequest req;
    req.__union_AuthenticateRequest = SOAP_UNION__ma__union_AuthenticateRequest_Begin;
    soap_.Free();
    auto* b = soap_new_ma__AuthenticateBegin(soap_.proxy.soap);
    req.union_AuthenticateRequest.Begin = b;
    b->EKPublic = ToBase64Binary(soap_.proxy.soap, ek_public_);
    b->EKCertificate = soap_new_xsd__base64Binary(soap_.proxy.soap);
    *b->EKCertificate = ToBase64Binary(soap_.proxy.soap, ek_cert_);
    for (const Bytes& c : intermediates_) {
      b->EKIntermediateCertificate.push_back(ToBase64Binary(soap_.proxy.soap, c));
    }
    b->AKPublic = ToBase64Binary(soap_.proxy.soap, ak_public_);
    auto body = soap_.Serialize(&req, "ma:AuthenticateRequest");
    soap_.Free();
    return body;
  }

  Status Authenticate(SyncHttps& http, bool with_signing_key) override {
    signer_.reset();  // frees its TPM slot (swtpm holds three transient objects)
    TPMMA_ASSIGN_OR_RETURN(esys::Object ek, tpm_->CreateEk());
    TPMMA_ASSIGN_OR_RETURN(esys::Object ak, tpm_->Load(ek, ak_blob_));
    TPMMA_ASSIGN_OR_RETURN(std::string begin, BeginBody());
    _ma__AuthenticateResponse resp;
    TPMMA_RETURN_IF_ERROR(
        soap_.Call(http, begin, [&](auto& p) { return p.recv_Authenticate(resp); })
            .WithContext("Authenticate.Begin"));
    if (resp.__union_AuthenticateResponse != SOAP_UNION__ma__union_AuthenticateResponse_Challenge ||
        resp.union_AuthenticateResponse.Challenge == nullptr) {
      return Status(Code::kInternal, "Authenticate.Begin: no challenge in the reply");
    }
    const auto* ch = resp.union_AuthenticateResponse.Challenge;
    Bytes challenge_id = FromBase64Binary(ch->ChallengeId);
    Bytes nonce = FromBase64Binary(ch->Nonce);
    TPMMA_ASSIGN_OR_RETURN(TPM2B_ID_OBJECT blob,
                           tpm::Unmarshal<TPM2B_ID_OBJECT>(FromBase64Binary(ch->CredentialBlob)));
    TPMMA_ASSIGN_OR_RETURN(
        TPM2B_ENCRYPTED_SECRET secret,
        tpm::Unmarshal<TPM2B_ENCRYPTED_SECRET>(FromBase64Binary(ch->EncryptedSecret)));
    soap_.Free();
    TPMMA_ASSIGN_OR_RETURN(SecureBytes activated, tpm_->ActivateCredential(ak, ek, blob, secret));
    ek.reset();

    std::optional<esys::PublicInfo> key_info;
    std::optional<esys::Attestation> key_cert;
    if (with_signing_key) {
      TPM2B_PUBLIC tmpl = esys::ChildTemplate(
          options_.sign_alg == "rsa" ? esys::ChildType::kRsaSign : esys::ChildType::kEccSign,
          false);
      tmpl.publicArea.objectAttributes |= TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT;
      TPMMA_ASSIGN_OR_RETURN(esys::KeyBlob kb, tpm_->Create(srk_, tmpl));
      TPMMA_ASSIGN_OR_RETURN(esys::Object key, tpm_->Load(srk_, kb));
      TPMMA_ASSIGN_OR_RETURN(key_info, tpm_->ReadPublic(key));
      TPMMA_ASSIGN_OR_RETURN(key_cert, tpm_->Certify(key, ak, nonce));
      ak.reset();
      // An OpenSSL 3 provider key: xmlsec signs with it as with any private key.
      TPMMA_ASSIGN_OR_RETURN(signer_, esys::MakeTpmSigningKey(*tpm_, std::move(key)));
    }
    ak.reset();

    TPMMA_ASSIGN_OR_RETURN(Bytes proof, Proof(activated, challenge_id));
    _ma__AuthenticateRequest req;
    req.__union_AuthenticateRequest = SOAP_UNION__ma__union_AuthenticateRequest_Complete;
    auto* m = soap_new_ma__AuthenticateComplete(soap_.proxy.soap);
    req.union_AuthenticateRequest.Complete = m;
    m->ChallengeId = ToBase64Binary(soap_.proxy.soap, challenge_id);
    m->Proof = ToBase64Binary(soap_.proxy.soap, proof);
    if (key_info) {
      m->PackageSigningKey = soap_new_ma__PackageSigningKey(soap_.proxy.soap);
      m->PackageSigningKey->Public = ToBase64Binary(soap_.proxy.soap, key_info->marshalled);
      m->PackageSigningKey->CertifyInfo =
          ToBase64Binary(soap_.proxy.soap, Tpm2bAttest(key_cert->attest));
      m->PackageSigningKey->CertifySignature =
          ToBase64Binary(soap_.proxy.soap, key_cert->signature);
    }
    TPMMA_ASSIGN_OR_RETURN(std::string complete, soap_.Serialize(&req, "ma:AuthenticateRequest"));
    soap_.Free();
    _ma__AuthenticateResponse done;
    TPMMA_RETURN_IF_ERROR(
        soap_.Call(http, complete, [&](auto& p) { return p.recv_Authenticate(done); })
            .WithContext("Authenticate.Complete"));
    if (done.__union_AuthenticateResponse != SOAP_UNION__ma__union_AuthenticateResponse_Session ||
        done.union_AuthenticateResponse.Session == nullptr) {
      return Status(Code::kInternal, "Authenticate.Complete: no session in the reply");
    }
    token_ = done.union_AuthenticateResponse.Session->SessionToken;
    if (done.union_AuthenticateResponse.Session->PlatformId != platform_id_) {
      return Status(Code::kInternal, "Authenticate.Complete: the MA names another platform");
    }
    soap_.Free();
    return Status::Ok();
  }

  const std::string& token() const override { return token_; }
  const std::string& platform_id() const override { return platform_id_; }

  Result<std::vector<Bytes>> MakePackages(SyncHttps& http, size_t count,
                                          size_t min_bytes) override {
    if (!signer_) return Error(Code::kInternal, "MakePackages: authenticate with a key first");
    if (!model_) TPMMA_RETURN_IF_ERROR(MakeModel(http));
    // Children per package: measured, not guessed (the XML overhead per child is fixed).
    if (children_ == 0) {
      TPMMA_ASSIGN_OR_RETURN(Bytes one, Sign(1));
      TPMMA_ASSIGN_OR_RETURN(Bytes two, Sign(2));
      size_t per = two.size() > one.size() ? two.size() - one.size() : 1;
      children_ = 1;
      if (one.size() < min_bytes) children_ += (min_bytes - one.size() + per - 1) / per;
    }
    std::vector<Bytes> out;
    out.reserve(count);
    for (size_t i = 0; i < count; ++i) {
      TPMMA_ASSIGN_OR_RETURN(Bytes pkg, Sign(children_));
      if (pkg.size() < min_bytes) {
        ++children_;
        --i;
        continue;
      }
      out.push_back(std::move(pkg));
    }
    return out;
  }

  Result<std::string> UploadBody(const Bytes& package) override {
    _ma__UploadRequest req;
    req.SessionToken = token_;
    req.Package = ToBase64Binary(soap_.proxy.soap, package);
    auto body = soap_.Serialize(&req, "ma:UploadRequest");
    soap_.Free();
    return body;
  }

  Result<std::string> QueryBody(int page_size) override {
    _ma__QueryRequest req;
    req.SessionToken = token_;
    req.PageSize = page_size;
    auto body = soap_.Serialize(&req, "ma:QueryRequest");
    soap_.Free();
    return body;
  }

 private:
  // The parts every package shares: the MRK duplicated to the MA key by the TPM, and one
  // real child key (its blobs stay loadable under the MRK).
  Status MakeModel(SyncHttps& http) {
    _ma__GetMAKeyRequest req;
    TPMMA_ASSIGN_OR_RETURN(std::string body, soap_.Serialize(&req, "ma:GetMAKeyRequest"));
    _ma__GetMAKeyResponse key;
    TPMMA_RETURN_IF_ERROR(soap_.Call(http, body, [&](auto& p) { return p.recv_GetMAKey(key); })
                              .WithContext("GetMAKey"));
    TPMMA_ASSIGN_OR_RETURN(TPM2B_PUBLIC ma_public,
                           tpm::Unmarshal<TPM2B_PUBLIC>(FromBase64Binary(key.Public)));
    soap_.Free();
    TPMMA_ASSIGN_OR_RETURN(Bytes ma_name, tpm::ComputeName(ma_public.publicArea));
    TPMMA_ASSIGN_OR_RETURN(esys::KeyBlob mrk_blob,
                           tpm_->CreateMrk(srk_, ma_name, esys::KeyAlg::kRsa2048));
    TPMMA_ASSIGN_OR_RETURN(esys::Object mrk, tpm_->Load(srk_, mrk_blob));
    TPMMA_ASSIGN_OR_RETURN(esys::KeyBlob child, tpm_->CreateChild(mrk, esys::ChildType::kEccSign));
    TPMMA_ASSIGN_OR_RETURN(esys::Duplicated dup,
                           tpm_->Duplicate(mrk, ma_public, esys::InnerWrap::kTpmGenerated));
    mrk.reset();
    schema::MigrationPackage m;
    m.source_platform_id = platform_id_;
    m.creation_time = Env::Default()->NowUnixSeconds();
    TPMMA_ASSIGN_OR_RETURN(m.mrk.public_area, tpm::Marshal(mrk_blob.public_area));
    TPMMA_ASSIGN_OR_RETURN(m.mrk.duplicate, tpm::Marshal(dup.duplicate));
    TPMMA_ASSIGN_OR_RETURN(m.mrk.encrypted_seed, tpm::Marshal(dup.encrypted_seed));
    schema::RecoveryCodeCustody rc;
    rc.salt = Bytes(16, 7);
    rc.n = 32768;
    rc.r = 8;
    rc.p = 1;
    m.custody = rc;
    TPMMA_ASSIGN_OR_RETURN(child_public_, tpm::Marshal(child.public_area));
    TPMMA_ASSIGN_OR_RETURN(child_private_, tpm::Marshal(child.private_area));
    model_ = std::move(m);
    return Status::Ok();
  }

  Result<Bytes> Sign(size_t children) {
    schema::MigrationPackage m = *model_;
    TPMMA_ASSIGN_OR_RETURN(m.package_id, schema::NewUuid());
    for (size_t i = 0; i < children; ++i) {
      schema::ChildKey c;
      TPMMA_ASSIGN_OR_RETURN(c.key_id, schema::NewUuid());
      c.label = "bench key " + std::to_string(i);
      c.usage = schema::KeyUsage::kSign;
      c.public_area = child_public_;
      c.private_area = child_private_;
      m.child_keys.push_back(std::move(c));
    }
    return schema::SignPackage(m, signer_.get());
  }

  SetupOptions options_;
  std::unique_ptr<esys::Tpm> tpm_;
  Soap soap_;
  Bytes ek_public_, ek_cert_, ak_public_;
  std::vector<Bytes> intermediates_;
  esys::KeyBlob ak_blob_;
  esys::Object srk_;
  std::string platform_id_, token_;
  EvpPkeyPtr signer_;
  std::optional<schema::MigrationPackage> model_;
  Bytes child_public_, child_private_;
  size_t children_ = 0;
};

}  // namespace

Result<std::unique_ptr<BenchPlatform>> BenchPlatform::Open(const SetupOptions& options) {
  auto p = std::make_unique<BenchPlatformImpl>(options);
  TPMMA_RETURN_IF_ERROR(p->Init());
  return std::unique_ptr<BenchPlatform>(std::move(p));
}

}  // namespace tpmma::bench
