// SPDX-License-Identifier: GPL-2.0-or-later
#include "server/ma_service.h"

#include "server/escrow_key.h"
#include "server/ma_key_tpm.h"
#include "server/operator_service.h"

#include <algorithm>
#include <cctype>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <sstream>
#include <stop_token>
#include <streambuf>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "schema/package_xml.h"
#include "server/auth.h"
#include "soapMigrationAuthorityBindingService.h"
#include "storage/sqlite_vault.h"
#include "tpm/attest.h"
#include "tpm/escrow.h"
#include "tpm/marshal.h"
#include "tpm/public.h"
#include "wsdl/soap_context.h"

namespace tpmma::server {
namespace {

using wsdl::FromBase64Binary;
using wsdl::ToBase64Binary;

constexpr std::string_view kServiceVersion = "tpm-ma 0.1";
constexpr std::string_view kProtocolVersion = "urn:tpm-ma:migration:1";
constexpr size_t kNonceBytes = 32;
constexpr size_t kMaxAuditField = 1000;

std::string Clip(std::string s) {
  if (s.size() > kMaxAuditField) s.resize(kMaxAuditField);
  return s;
}

// Reads the request body in place: gSOAP pulls from an istream, and copying a 16 MB body
// into an istringstream first would double the peak memory of every Upload.
class ViewBuf : public std::streambuf {
 public:
  explicit ViewBuf(std::string_view s) {
    char* p = const_cast<char*>(s.data());  // never written: get area only
    setg(p, p, p + s.size());
  }
};

// Package-signing keys decoded from their TPM2B_PUBLIC bytes. Building an EVP_PKEY from a
// TPM public area costs an EC point multiplication (about a tenth of an Upload's CPU in
// the profile); the platform row is still read for every Upload, only the decoding of the
// same bytes is reused. An EVP_PKEY is only read by the verifiers, which may share it.
class SigningKeyCache {
 public:
  static constexpr size_t kMaxEntries = 1024;

  Result<EvpPkeyPtr> Get(const Bytes& public_bytes) {
    std::string key(public_bytes.begin(), public_bytes.end());
    {
      std::lock_guard lock(mu_);
      auto it = keys_.find(key);
      if (it != keys_.end()) return UpRef(it->second.get());
    }
    TPMMA_ASSIGN_OR_RETURN(TPM2B_PUBLIC pub, tpm::Unmarshal<TPM2B_PUBLIC>(public_bytes));
    TPMMA_ASSIGN_OR_RETURN(EvpPkeyPtr pkey, tpm::PublicToEvp(pub.publicArea));
    std::lock_guard lock(mu_);
    if (keys_.size() >= kMaxEntries) keys_.clear();  // rare: more platforms than entries
    auto [it, inserted] = keys_.try_emplace(std::move(key), std::move(pkey));
    return UpRef(it->second.get());
  }

 private:
  static Result<EvpPkeyPtr> UpRef(EVP_PKEY* k) {
    if (EVP_PKEY_up_ref(k) != 1) return Error(OpensslError("EVP_PKEY_up_ref"));
    return EvpPkeyPtr(k);
  }
  std::mutex mu_;
  std::unordered_map<std::string, EvpPkeyPtr> keys_;  // guarded by mu_
};

// Everything the handlers share; thread-safe (the vault and the custody are, the rest is
// read-only after construction).
struct Core {
  Config cfg;
  Env* env = nullptr;
  MaServiceOptions options;
  OperatorPolicy operator_policy;
  std::unique_ptr<storage::Vault> owned_vault;
  std::unique_ptr<MaKeyCustody> owned_custody;
  storage::Vault* vault = nullptr;
  MaKeyCustody* custody = nullptr;
  // Escrow custody (DESIGN 4.4): the current key (null when escrow.custody = "none"), and
  // the retired ones, which only release what was escrowed to them.
  std::unique_ptr<EscrowKeyCustody> escrow;
  std::vector<std::unique_ptr<EscrowKeyCustody>> retired_escrow;
  std::unique_ptr<Authenticator> auth;
  Bytes ma_name_tpm2b;  // GetMAKey's Name (TPM2B_NAME)
  Bytes mrk_policy;     // PolicyDuplicationSelect(MA Name): every MRK's authPolicy
  wsdl::SoapLimits limits;
  bool defer_read_audit = true;  // audit.reads = "deferred"
  SigningKeyCache signing_keys;
};

Result<storage::CustodyMode> CustodyOf(const package::Custody& c) {
  return std::holds_alternative<package::EscrowCustody>(c) ? storage::CustodyMode::kEscrow
                                                           : storage::CustodyMode::kRecoveryCode;
}

// The MRK must be duplicable only to this MA (authPolicy), only with an inner wrapper
// (encryptedDuplication), and duplicable at all (fixedTPM/fixedParent clear): otherwise
// the vaulted blob either cannot be restored or could have been copied elsewhere too.
Status CheckMrk(const TPMT_PUBLIC& mrk, ByteView expected_policy) {
  ByteView policy = tpm::Tpm2bView(mrk.authPolicy);
  if (policy.size() != expected_policy.size() ||
      !std::equal(policy.begin(), policy.end(), expected_policy.begin())) {
    return Status(Code::kInvalidArgument,
                  "MRK authPolicy is not PolicyDuplicationSelect to this MA's key (GetMAKey)");
  }
  const TPMA_OBJECT a = mrk.objectAttributes;
  if ((a & TPMA_OBJECT_ENCRYPTEDDUPLICATION) == 0) {
    return Status(Code::kInvalidArgument,
                  "MRK must have encryptedDuplication set (inner wrapper required)");
  }
  if ((a & (TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT)) != 0) {
    return Status(Code::kInvalidArgument, "MRK must have fixedTPM and fixedParent clear");
  }
  return Status::Ok();
}

// Facets gSOAP 2.8 does not enforce on its own (measured with tests/wsdl/examples): xsd:length
// and min/maxLength on base64Binary, xsd:pattern, and a choice with no branch. Checked here,
// before anything else reads the field, with the code a validating parser would give.
Status CheckBlob(const xsd__base64Binary& b, int min, int max, std::string_view field) {
  if (b.__size < min || b.__size > max) {
    return Status(Code::kSchemaViolation, std::string(field) + " must be " + std::to_string(min) +
                                              ".." + std::to_string(max) + " octets, got " +
                                              std::to_string(b.__size));
  }
  return Status::Ok();
}

Status CheckToken(const std::string& t) {
  bool ok = t.size() >= 16 && t.size() <= 128 && std::all_of(t.begin(), t.end(), [](char c) {
              return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-';
            });
  return ok ? Status::Ok()
            : Status(Code::kSchemaViolation, "SessionToken is not 16..128 base64url characters");
}

Status CheckPackageId(const std::string& id) {
  return package::IsCanonicalUuid(id)
             ? Status::Ok()
             : Status(Code::kSchemaViolation, "PackageId is not a lower-case UUID");
}

Status CheckPlatformId(const std::string& id) {
  bool ok = id.size() % 2 == 0 && id.size() >= 68 && id.size() <= 132 &&
            std::all_of(id.begin(), id.end(),
                        [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
  return ok ? Status::Ok()
            : Status(Code::kSchemaViolation, "PlatformId is not the lower-case hex of an EK Name");
}

constexpr int kMaxTpmBlob = 4096;
constexpr int kMaxDer = 16384;

class Handler final : public MigrationAuthorityBindingService {
 public:
  explicit Handler(Core* core)
      : core_(core), operator_calls_(soap, core->vault, core->env, core->operator_policy) {
    wsdl::HardenContext(soap, core_->limits);
    soap_set_mode(soap, SOAP_ENC_PLAIN);
  }

  void Serve(std::string_view body, const RequestInfo& info, Reply* reply) {
    info_ = &info;
    op_ = "(unparsed)";
    actor_ = "anonymous";
    object_.clear();
    faulted_ = false;
    outcome_ = Code::kOk;

    ViewBuf in(body);
    std::istream is(&in);
    std::ostringstream os;
    soap->is = &is;
    soap->os = &os;
    // The front end enforces the same limit; checked again so no caller can bypass it.
    Status pre = body.size() > core_->cfg.max_body_bytes
                     ? Status(Code::kLimitExceeded, "request body larger than max_body_bytes=" +
                                                        std::to_string(core_->cfg.max_body_bytes))
                     : wsdl::RejectDoctype(body);
    if (!pre.ok()) {
      outcome_ = pre.code();
      wsdl::SetFault(soap, pre);
      soap_send_fault(soap);
    } else {
      int rc = soap_begin_serve(soap);
      if (rc == SOAP_OK) rc = dispatch();
      if (rc == SOAP_NO_METHOD) {
        // Not one of the seven: maybe an operator call (operator.wsdl), which authenticates
        // by TLS client certificate only (operator_service.h).
        soap->error = SOAP_OK;
        OperatorCallLog log;
        rc = operator_calls_.Dispatch(info, &log);
        if (!log.op.empty()) {
          op_ = log.op;
          actor_ = log.actor;
          outcome_ = log.outcome;
          faulted_ = log.faulted;
        }
      }
      if (rc != SOAP_OK) {
        if (!faulted_) {
          // gSOAP refused the XML (schema, size, syntax) before any operation ran: give it
          // the same MAFault shape as every other error.
          Status s = wsdl::StatusFromSoap(soap);
          // The body is complete and in memory: running out of it is a truncated message,
          // not a network failure.
          if (s.code() == Code::kUnavailable) {
            s = Status(Code::kMalformed, "request body ends inside the SOAP envelope");
          }
          outcome_ = s.code();
          soap->error = SOAP_OK;
          wsdl::SetFault(soap, s);
        }
        soap_send_fault(soap);
      }
    }
    reply->body = std::move(os).str();
    reply->http_status = outcome_ == Code::kOk ? 200 : 500;
    reply->log_op = op_;
    reply->log_platform = actor_ == "anonymous" ? std::string() : actor_;
    reply->log_outcome = outcome_ == Code::kOk ? "ok" : std::string(CodeName(outcome_));
    // A released escrowed key was serialised from gSOAP's arena: wipe it before soap_end
    // hands the memory back (the reply body itself is the front end's to send and free).
    if (wipe_after_reply_.__ptr != nullptr) {
      Wipe(wipe_after_reply_.__ptr, static_cast<size_t>(wipe_after_reply_.__size));
      wipe_after_reply_ = {};
    }
    // The generated serve loop never frees between requests; we do, every time.
    soap_destroy(soap);
    soap_end(soap);
    soap->is = nullptr;
    soap->os = nullptr;
    info_ = nullptr;
  }

  // ---- operations

  int GetMAServiceInfo(_ma__GetMAServiceInfoRequest*,
                       _ma__GetMAServiceInfoResponse& resp) override {
    op_ = "GetMAServiceInfo";
    resp.ServiceVersion = kServiceVersion;
    resp.ProtocolVersion = {std::string(kProtocolVersion)};
    resp.Operation = {"Authenticate", "Upload",   "Download",        "Query",
                      "Delete",       "GetMAKey", "GetMAServiceInfo"};
    resp.Algorithm = {"TPM_ALG_RSA:2048",   "TPM_ALG_ECC:NIST_P256", "TPM_ALG_AES:128:CFB",
                      "TPM_ALG_SHA256",     "TPM_ALG_RSASSA",        "TPM_ALG_ECDSA",
                      "XMLDSIG:rsa-sha256", "XMLDSIG:ecdsa-sha256"};
    resp.Limits = soap_new_ma__ServiceLimits(soap);
    resp.Limits->MaxPackageBytes = core_->cfg.max_package_bytes;
    resp.Limits->MaxChildKeys = core_->cfg.max_child_keys;
    resp.Limits->MaxRequestBytes = core_->cfg.max_body_bytes;
    resp.CustodyMode = {ma__CustodyMode__RecoveryCode};
    // The storage key first; then the escrow key, when this MA offers escrow custody.
    resp.MAKeyId = {core_->custody->key_id()};
    if (core_->escrow) {
      resp.CustodyMode.push_back(ma__CustodyMode__Escrow);
      resp.MAKeyId.push_back(core_->escrow->key_id());
      resp.Algorithm.push_back("ESCROW:RSA-OAEP-SHA256");
    }
    return Finish(Read());
  }

  int GetMAKey(_ma__GetMAKeyRequest* req, _ma__GetMAKeyResponse& resp) override {
    op_ = "GetMAKey";
    const MaKeyCustody& k = *core_->custody;
    object_ = k.key_id();
    if (req->KeyId != nullptr && req->KeyId->size() > 256) {
      return Finish(Status(Code::kSchemaViolation, "KeyId must be at most 256 characters"));
    }
    if (req->KeyId != nullptr && core_->escrow && *req->KeyId == core_->escrow->key_id()) {
      const EscrowKeyCustody& e = *core_->escrow;
      object_ = e.key_id();
      resp.KeyId = e.key_id();
      resp.Certificate = ToBase64Binary(soap, e.certificate_der());
      resp.Public = ToBase64Binary(soap, e.public_bytes());
      resp.Name = ToBase64Binary(soap, e.name_tpm2b());
      return Finish(Read());
    }
    if (req->KeyId != nullptr && *req->KeyId != k.key_id()) {
      object_ = Clip(*req->KeyId);
      return Finish(Status(Code::kNotFound, "no MA key with id " + object_));
    }
    resp.KeyId = k.key_id();
    resp.Certificate = ToBase64Binary(soap, k.certificate_der());
    resp.Public = ToBase64Binary(soap, k.public_bytes());
    resp.Name = ToBase64Binary(soap, core_->ma_name_tpm2b);
    return Finish(Read());
  }

  int Authenticate(_ma__AuthenticateRequest* req, _ma__AuthenticateResponse& resp) override {
    if (req->__union_AuthenticateRequest == SOAP_UNION__ma__union_AuthenticateRequest_Begin &&
        req->union_AuthenticateRequest.Begin != nullptr) {
      op_ = "Authenticate.Begin";
      return Finish(Begin(*req->union_AuthenticateRequest.Begin, resp));
    }
    if (req->__union_AuthenticateRequest == SOAP_UNION__ma__union_AuthenticateRequest_Complete &&
        req->union_AuthenticateRequest.Complete != nullptr) {
      op_ = "Authenticate.Complete";
      return Finish(Complete(*req->union_AuthenticateRequest.Complete, resp));
    }
    op_ = "Authenticate";
    return Finish(Status(Code::kSchemaViolation, "AuthenticateRequest needs Begin or Complete"));
  }

  int Upload(_ma__UploadRequest* req, _ma__UploadResponse& resp) override {
    op_ = "Upload";
    return Finish(DoUpload(*req, resp));
  }

  int Query(_ma__QueryRequest* req, _ma__QueryResponse& resp) override {
    op_ = "Query";
    return Finish(DoQuery(*req, resp));
  }

  int Delete(_ma__DeleteRequest* req, _ma__DeleteResponse& resp) override {
    op_ = "Delete";
    return Finish(DoDelete(*req, resp));
  }

  int Download(_ma__DownloadRequest* req, _ma__DownloadResponse& resp) override {
    op_ = "Download";
    return Finish(DoDownload(*req, resp));
  }

 private:
  int64_t Now() const { return core_->env->NowUnixSeconds(); }

  storage::AuditEvent Event(std::string outcome, std::string detail) const {
    return storage::AuditEvent{Now(),         Clip(actor_),       Clip(op_),
                               Clip(object_), std::move(outcome), Clip(std::move(detail))};
  }

  // Operations that change nothing: their records (success or refusal) may be deferred.
  bool IsRead() const { return op_ == "GetMAKey" || op_ == "GetMAServiceInfo" || op_ == "Query"; }

  // Appends a record: durably (the reply waits for the commit) for state changes' refusals
  // and whenever audit.reads = "durable"; for reads otherwise deferred (queued for the
  // vault's next group commit, the reply does not wait for the fsync; a full queue makes
  // us wait instead: back-pressure). Either way in the same hash chain.
  Status Audit(storage::AuditEvent event) {
    if (IsRead() && core_->defer_read_audit) return core_->vault->AppendAuditDeferred(event);
    auto seq = core_->vault->AppendAudit(event);
    return seq ? Status::Ok() : seq.error();
  }

  // A successful read: audited only if configured (see MaServiceOptions).
  Status Read() {
    if (!core_->options.audit_successful_reads) return Status::Ok();
    return Audit(Event("ok", "peer " + info_->peer));
  }

  // Every refusal is audited (a successful operation audited itself, in its own
  // transaction), then becomes the MAFault. Messages never carry secrets by contract.
  int Finish(const Status& s) {
    if (s.ok()) return SOAP_OK;
    faulted_ = true;
    outcome_ = s.code();
    Status audited =
        Audit(Event(std::string(CodeName(s.code())), "peer " + info_->peer + ": " + s.message()));
    (void)audited;  // a failing audit write must not hide the refusal from the caller
    return wsdl::SetFault(soap, s);
  }

  Result<storage::Session> SessionFor(const std::string& token) {
    TPMMA_ASSIGN_OR_RETURN(storage::Session s, core_->auth->CheckSession(token));
    actor_ = s.platform_id;
    return s;
  }

  Status Begin(const ma__AuthenticateBegin& b, _ma__AuthenticateResponse& resp) {
    TPMMA_RETURN_IF_ERROR(CheckBlob(b.EKPublic, 1, kMaxTpmBlob, "EKPublic"));
    TPMMA_RETURN_IF_ERROR(CheckBlob(b.EKCertificate, 1, kMaxDer, "EKCertificate"));
    for (const auto& c : b.EKIntermediateCertificate) {
      TPMMA_RETURN_IF_ERROR(CheckBlob(c, 1, kMaxDer, "EKIntermediateCertificate"));
    }
    TPMMA_RETURN_IF_ERROR(CheckBlob(b.AKPublic, 1, kMaxTpmBlob, "AKPublic"));
    BeginRequest r;
    r.ek_public = FromBase64Binary(b.EKPublic);
    r.ek_certificate = FromBase64Binary(b.EKCertificate);
    for (const auto& c : b.EKIntermediateCertificate)
      r.ek_intermediates.push_back(FromBase64Binary(c));
    r.ak_public = FromBase64Binary(b.AKPublic);
    auto begun = core_->auth->Begin(r);
    if (!begun) {
      // Name the claimed platform in the refusal (only a claim: the chain did not check).
      if (auto ek = tpm::Unmarshal<TPM2B_PUBLIC>(r.ek_public)) {
        if (auto name = tpm::ComputeName(ek->publicArea)) actor_ = "claimed:" + HexEncode(*name);
      }
      return begun.error();
    }
    BeginResult& out = *begun;
    actor_ = out.platform_id;
    object_ = out.platform_id;
    auto* ch = soap_new_ma__AuthenticateChallenge(soap);
    ch->ChallengeId = ToBase64Binary(soap, out.challenge_id);
    ch->CredentialBlob = ToBase64Binary(soap, out.credential_blob);
    ch->EncryptedSecret = ToBase64Binary(soap, out.encrypted_secret);
    ch->Nonce = ToBase64Binary(soap, out.nonce);
    ch->ExpiresAt = static_cast<time_t>(out.expires_at);
    resp.__union_AuthenticateResponse = SOAP_UNION__ma__union_AuthenticateResponse_Challenge;
    resp.union_AuthenticateResponse.Challenge = ch;
    return Status::Ok();
  }

  Status Complete(const ma__AuthenticateComplete& c, _ma__AuthenticateResponse& resp) {
    TPMMA_RETURN_IF_ERROR(CheckBlob(c.ChallengeId, 16, 64, "ChallengeId"));
    TPMMA_RETURN_IF_ERROR(CheckBlob(c.Proof, 32, 32, "Proof"));
    if (const ma__PackageSigningKey* k = c.PackageSigningKey) {
      TPMMA_RETURN_IF_ERROR(CheckBlob(k->Public, 1, kMaxTpmBlob, "PackageSigningKey/Public"));
      TPMMA_RETURN_IF_ERROR(
          CheckBlob(k->CertifyInfo, 1, kMaxTpmBlob, "PackageSigningKey/CertifyInfo"));
      TPMMA_RETURN_IF_ERROR(
          CheckBlob(k->CertifySignature, 1, kMaxTpmBlob, "PackageSigningKey/CertifySignature"));
    }
    CompleteRequest r;
    r.challenge_id = FromBase64Binary(c.ChallengeId);
    r.proof = FromBase64Binary(c.Proof);
    if (c.PackageSigningKey != nullptr) {
      r.signing_key = SigningKeyProof{FromBase64Binary(c.PackageSigningKey->Public),
                                      FromBase64Binary(c.PackageSigningKey->CertifyInfo),
                                      FromBase64Binary(c.PackageSigningKey->CertifySignature)};
    }
    std::string platform;
    auto out = core_->auth->Complete(r, &platform);
    if (!platform.empty()) {
      actor_ = platform;
      object_ = platform;
    }
    if (!out) return out.error();
    auto* s = soap_new_ma__AuthenticateSession(soap);
    s->SessionToken.assign(out->token.data(), out->token.size());
    s->PlatformId = out->platform_id;
    s->ExpiresAt = static_cast<time_t>(out->expires_at);
    resp.__union_AuthenticateResponse = SOAP_UNION__ma__union_AuthenticateResponse_Session;
    resp.union_AuthenticateResponse.Session = s;
    return Status::Ok();
  }

  // The platform's certified package-signing key, as an OpenSSL public key.
  Result<EvpPkeyPtr> SigningKeyOf(const std::string& platform_id) {
    TPMMA_ASSIGN_OR_RETURN(storage::Platform p, core_->vault->GetPlatform(platform_id));
    return SigningKeyOf(p);
  }
  Result<EvpPkeyPtr> SigningKeyOf(const storage::Platform& p) {
    const std::string& platform_id = p.id;
    if (!p.signing_key_public) {
      return Error(Code::kPermissionDenied,
                   "platform " + platform_id +
                       " has no certified package-signing key: Authenticate with a "
                       "PackageSigningKey certified by the AK first");
    }
    return core_->signing_keys.Get(*p.signing_key_public);
  }

  package::ParseLimits Limits() const {
    package::ParseLimits l;
    l.max_document_bytes = core_->cfg.max_package_bytes;
    l.max_child_keys = core_->cfg.max_child_keys;
    return l;
  }

  Status DoUpload(const _ma__UploadRequest& req, _ma__UploadResponse& resp) {
    TPMMA_RETURN_IF_ERROR(CheckToken(req.SessionToken));
    TPMMA_ASSIGN_OR_RETURN(storage::Session session, SessionFor(req.SessionToken));
    if (req.Package.__size < 0 ||
        static_cast<uint64_t>(req.Package.__size) > core_->cfg.max_package_bytes) {
      return Status(Code::kLimitExceeded, "package larger than max_package_bytes=" +
                                              std::to_string(core_->cfg.max_package_bytes));
    }
    Bytes body = FromBase64Binary(req.Package);
    TPMMA_ASSIGN_OR_RETURN(package::PackageReader reader,
                           package::PackageReader::Open(body, Limits()));
    const package::UnverifiedHeader& h = reader.UnverifiedHeaderFields();
    object_ = Clip(h.package_id);
    // Only the session's own platform key may vouch for a package: a platform cannot vault
    // (and later claim) another platform's keys.
    if (h.source_platform_id != session.platform_id) {
      return Status(Code::kPermissionDenied,
                    "package source platform is not the authenticated platform");
    }
    TPMMA_ASSIGN_OR_RETURN(storage::Platform me, core_->vault->GetPlatform(session.platform_id));
    TPMMA_ASSIGN_OR_RETURN(EvpPkeyPtr key, SigningKeyOf(me));
    TPMMA_ASSIGN_OR_RETURN(package::MigrationPackage pkg, reader.Verify(key.get()));
    TPMMA_ASSIGN_OR_RETURN(TPM2B_PUBLIC mrk, tpm::Unmarshal<TPM2B_PUBLIC>(pkg.mrk.public_area));
    TPMMA_RETURN_IF_ERROR(CheckMrk(mrk.publicArea, core_->mrk_policy));
    if (const auto* e = std::get_if<package::EscrowCustody>(&pkg.custody)) {
      // An escrow blob that would not open at restore time is a silent loss: check now that
      // it decrypts and was made for this platform and MRK. The key is wiped on return.
      auto opened = OpenEscrow(*e, session.platform_id, mrk.publicArea, EscrowUse::kUpload);
      if (!opened) return opened.error().WithContext("package custody (Escrow)");
    }

    storage::Package p;
    p.descriptor.package_id = pkg.package_id;
    p.descriptor.source_platform_id = pkg.source_platform_id;
    p.descriptor.format_version = std::to_string(pkg.format_version);
    p.descriptor.created_at = pkg.creation_time;
    p.descriptor.uploaded_at = Now();
    TPMMA_ASSIGN_OR_RETURN(p.descriptor.custody, CustodyOf(pkg.custody));
    // The key that verified it, kept with the package: the platform may certify a new
    // signing key later (e.g. after a TPM clear) and older packages must still verify.
    p.descriptor.signing_key = me.signing_key_public.value_or(Bytes());
    for (const auto& k : pkg.child_keys) {
      p.descriptor.keys.push_back({k.key_id, k.label, std::string(package::ToString(k.usage))});
    }
    TPMMA_ASSIGN_OR_RETURN(Bytes digest, package::PackageDigest(body));
    p.descriptor.sha256 = digest;  // hashed once: the vault keeps it instead of re-hashing
    p.body = std::move(body);
    TPMMA_ASSIGN_OR_RETURN(
        storage::PutOutcome outcome,
        core_->vault->PutPackage(p, Event("ok", std::to_string(p.body.size()) + " bytes, " +
                                                    std::to_string(pkg.child_keys.size()) +
                                                    " keys, sha256 " + HexEncode(digest))));
    resp.PackageId = pkg.package_id;
    resp.Digest = HexEncode(digest);
    resp.AlreadyStored = outcome == storage::PutOutcome::kAlreadyStored;
    return Status::Ok();
  }

  Status DoQuery(const _ma__QueryRequest& req, _ma__QueryResponse& resp) {
    TPMMA_RETURN_IF_ERROR(CheckToken(req.SessionToken));
    if (req.PageSize < 1 || req.PageSize > 500) {
      return Status(Code::kSchemaViolation, "PageSize must be 1..500");
    }
    if (req.PageToken != nullptr && (req.PageToken->empty() || req.PageToken->size() > 512)) {
      return Status(Code::kSchemaViolation, "PageToken must be 1..512 characters");
    }
    if (req.Filter != nullptr && req.Filter->SourcePlatformId != nullptr) {
      TPMMA_RETURN_IF_ERROR(CheckPlatformId(*req.Filter->SourcePlatformId));
    }
    if (req.Filter != nullptr && req.Filter->LabelContains != nullptr &&
        req.Filter->LabelContains->size() > 256) {
      return Status(Code::kSchemaViolation, "LabelContains must be at most 256 characters");
    }
    TPMMA_ASSIGN_OR_RETURN(storage::Session session, SessionFor(req.SessionToken));
    object_ = session.platform_id;
    storage::PackageQuery q;
    q.visible_to_platform = session.platform_id;
    q.now = Now();
    q.page_size = static_cast<size_t>(req.PageSize);
    q.with_keys = false;  // the reply carries KeyCount only
    if (req.PageToken != nullptr) q.page_token = *req.PageToken;
    if (req.Filter != nullptr) {
      const ma__QueryFilter& f = *req.Filter;
      if (f.SourcePlatformId != nullptr) q.source_platform_id = *f.SourcePlatformId;
      if (f.CreatedAfter != nullptr) q.created_after = static_cast<int64_t>(*f.CreatedAfter);
      if (f.CreatedBefore != nullptr) q.created_before = static_cast<int64_t>(*f.CreatedBefore);
      if (f.LabelContains != nullptr) q.label_contains = *f.LabelContains;
    }
    TPMMA_ASSIGN_OR_RETURN(storage::PackagePage page, core_->vault->QueryPackages(q));
    for (const auto& d : page.packages) {
      auto* out = soap_new_ma__PackageDescriptor(soap);
      out->PackageId = d.package_id;
      out->SourcePlatformId = d.source_platform_id;
      out->CreatedAt = static_cast<time_t>(d.created_at);
      out->UploadedAt = static_cast<time_t>(d.uploaded_at);
      out->KeyCount = static_cast<unsigned int>(d.key_count);
      out->SizeBytes = static_cast<ULONG64>(d.size);
      out->CustodyMode = d.custody == storage::CustodyMode::kEscrow ? ma__CustodyMode__Escrow
                                                                    : ma__CustodyMode__RecoveryCode;
      out->Access =
          d.source_platform_id == session.platform_id ? ma__Access__Own : ma__Access__Approved;
      resp.PackageDescriptor.push_back(out);
    }
    if (!page.next_page_token.empty()) {
      resp.NextPageToken = soap_new_std__string(soap);
      *resp.NextPageToken = page.next_page_token;
    }
    return Read();
  }

  Status DoDelete(const _ma__DeleteRequest& req, _ma__DeleteResponse& resp) {
    TPMMA_RETURN_IF_ERROR(CheckToken(req.SessionToken));
    TPMMA_RETURN_IF_ERROR(CheckPackageId(req.PackageId));
    TPMMA_ASSIGN_OR_RETURN(storage::Session session, SessionFor(req.SessionToken));
    object_ = Clip(req.PackageId);
    TPMMA_ASSIGN_OR_RETURN(storage::PackageDescriptor d,
                           core_->vault->GetPackageDescriptor(req.PackageId));
    if (d.source_platform_id != session.platform_id) {
      return Status(Code::kPermissionDenied,
                    "only the platform that uploaded a package may "
                    "delete it");
    }
    TPMMA_RETURN_IF_ERROR(core_->vault->DeletePackage(req.PackageId, Event("ok", "deleted")));
    resp.Deleted = true;
    return Status::Ok();
  }

  // Own packages always (nullopt, or for an escrow package the id of an active approval to
  // itself, which releases the escrowed key); another platform's only with an active
  // helpdesk approval (its id). A Download under an approval uses it up.
  Result<std::optional<int64_t>> MayRestore(const storage::PackageDescriptor& d,
                                            const std::string& platform) {
    if (d.source_platform_id == platform) {
      if (d.custody != storage::CustodyMode::kEscrow) return std::optional<int64_t>();
      // An own escrow package comes back without its inner key, unless the helpdesk approved
      // this platform's restore (after a TPM clear it has no copy of its own): DESIGN 4.4.
      auto own = core_->vault->FindActiveApproval(platform, d.package_id, Now());
      if (own) return std::optional<int64_t>(own->id);
      if (own.error().code() != Code::kNotFound) return Error(own.error());
      return std::optional<int64_t>();
    }
    auto approval = core_->vault->FindActiveApproval(platform, d.package_id, Now());
    if (approval) return std::optional<int64_t>(approval->id);
    if (approval.error().code() != Code::kNotFound) return Error(approval.error());
    return Error(Code::kPermissionDenied,
                 "restore to another platform needs a helpdesk approval (none is active for "
                 "this platform and package)");
  }

  // The inner key escrowed in a package of `platform`, checked against its binding. At
  // Upload only the current escrow key will do; a release may use a retired one too.
  enum class EscrowUse { kUpload, kRelease };
  Result<SecureBytes> OpenEscrow(const package::EscrowCustody& e, std::string_view platform,
                                 const TPMT_PUBLIC& mrk, EscrowUse use) {
    EscrowKeyCustody* key = nullptr;
    if (core_->escrow && e.escrow_key_id == core_->escrow->key_id()) key = core_->escrow.get();
    if (key == nullptr && use == EscrowUse::kRelease) {
      for (const auto& r : core_->retired_escrow) {
        if (e.escrow_key_id == r->key_id()) key = r.get();
      }
    }
    if (key == nullptr && !core_->escrow) {
      return Error(Code::kUnsupported,
                   "this MA holds no escrow key (escrow.custody = \"none\"): use recovery-code "
                   "custody");
    }
    if (key == nullptr) {
      return Error(Code::kInvalidArgument, "the inner key is escrowed to key '" +
                                               Clip(e.escrow_key_id) +
                                               "', not to this MA's escrow key '" +
                                               core_->escrow->key_id() + "' (GetMAKey)");
    }
    if (e.algorithm != package::EscrowAlgorithm::kRsaOaepSha256) {
      return Error(Code::kUnsupported, "escrow algorithm " +
                                           std::string(package::ToString(e.algorithm)) +
                                           " is not supported by this MA (RSA-OAEP-SHA256 only)");
    }
    TPMMA_ASSIGN_OR_RETURN(Bytes mrk_name, tpm::ComputeName(mrk));
    auto plain = key->Decrypt(e.encrypted_inner_key);
    if (!plain) {
      return Error(
          Code::kIntegrityFailure,
          "the escrowed inner key does not decrypt with escrow key '" + key->key_id() + "'");
    }
    return tpm::EscrowOpen(*plain, platform, mrk_name);
  }

  static Bytes DownloadBinding(std::string_view package_id, ByteView parent_name) {
    Bytes b = ToBytes(package_id);
    b.push_back('\n');
    b.insert(b.end(), parent_name.begin(), parent_name.end());
    return b;
  }

  Status DoDownload(const _ma__DownloadRequest& req, _ma__DownloadResponse& resp) {
    const bool prepare =
        req.__union_DownloadRequest == SOAP_UNION__ma__union_DownloadRequest_Prepare;
    op_ = prepare ? "Download.Prepare" : "Download.Complete";
    TPMMA_RETURN_IF_ERROR(CheckToken(req.SessionToken));
    TPMMA_RETURN_IF_ERROR(CheckPackageId(req.PackageId));
    if (prepare && req.union_DownloadRequest.Prepare != nullptr) {
      TPMMA_RETURN_IF_ERROR(CheckBlob(req.union_DownloadRequest.Prepare->DestinationParentName, 1,
                                      kMaxTpmBlob, "DestinationParentName"));
    } else if (req.__union_DownloadRequest == SOAP_UNION__ma__union_DownloadRequest_Complete &&
               req.union_DownloadRequest.Complete != nullptr) {
      const ma__DownloadComplete& c = *req.union_DownloadRequest.Complete;
      TPMMA_RETURN_IF_ERROR(CheckBlob(c.Nonce, 16, 64, "Nonce"));
      TPMMA_RETURN_IF_ERROR(
          CheckBlob(c.DestinationParentPublic, 1, kMaxTpmBlob, "DestinationParentPublic"));
      TPMMA_RETURN_IF_ERROR(CheckBlob(c.CertifyInfo, 1, kMaxTpmBlob, "CertifyInfo"));
      TPMMA_RETURN_IF_ERROR(CheckBlob(c.CertifySignature, 1, kMaxTpmBlob, "CertifySignature"));
    } else {
      op_ = "Download";
      return Status(Code::kSchemaViolation, "DownloadRequest needs Prepare or Complete");
    }
    TPMMA_ASSIGN_OR_RETURN(storage::Session session, SessionFor(req.SessionToken));
    object_ = Clip(req.PackageId);
    TPMMA_ASSIGN_OR_RETURN(storage::PackageDescriptor d,
                           core_->vault->GetPackageDescriptor(req.PackageId));
    TPMMA_ASSIGN_OR_RETURN(std::optional<int64_t> approval, MayRestore(d, session.platform_id));

    if (prepare && req.union_DownloadRequest.Prepare != nullptr) {
      Bytes name = FromBase64Binary(req.union_DownloadRequest.Prepare->DestinationParentName);
      TPMMA_ASSIGN_OR_RETURN(TPM2B_NAME parsed, tpm::Unmarshal<TPM2B_NAME>(name));
      (void)parsed;
      TPMMA_ASSIGN_OR_RETURN(Bytes nonce, RandomBytes(kNonceBytes));
      const int64_t now = Now();
      storage::Challenge c;
      c.id = HexEncode(nonce);
      c.kind = storage::ChallengeKind::kDownloadNonce;
      c.platform_id = session.platform_id;
      c.nonce = nonce;
      c.associated_data = DownloadBinding(req.PackageId, name);
      c.expected_hash.assign(32, 0);  // nothing secret to prove: the nonce is the challenge
      c.created_at = now;
      c.expires_at = now + core_->cfg.download_nonce_ttl_s;
      TPMMA_RETURN_IF_ERROR(core_->vault->CreateChallenge(c, Event("ok", "nonce issued")));
      auto* p = soap_new_ma__DownloadPrepared(soap);
      p->Nonce = ToBase64Binary(soap, nonce);
      p->ExpiresAt = static_cast<time_t>(c.expires_at);
      resp.__union_DownloadResponse = SOAP_UNION__ma__union_DownloadResponse_Prepared;
      resp.union_DownloadResponse.Prepared = p;
      return Status::Ok();
    }
    const ma__DownloadComplete& c = *req.union_DownloadRequest.Complete;
    Bytes nonce = FromBase64Binary(c.Nonce);
    Bytes parent_bytes = FromBase64Binary(c.DestinationParentPublic);
    // Burn the nonce first: whatever fails below, it cannot be tried again.
    auto ch = core_->vault->ConsumeChallenge(HexEncode(nonce),
                                             storage::ChallengeKind::kDownloadNonce, Now());
    if (!ch && ch.error().code() == Code::kNotFound) {
      return Status(Code::kUnauthenticated, "unknown download nonce: run Prepare again");
    }
    if (!ch) return ch.error();
    TPMMA_ASSIGN_OR_RETURN(TPM2B_PUBLIC parent, tpm::Unmarshal<TPM2B_PUBLIC>(parent_bytes));
    TPMMA_ASSIGN_OR_RETURN(TPM2B_NAME parent_name, tpm::ComputeTpm2bName(parent.publicArea));
    TPMMA_ASSIGN_OR_RETURN(Bytes parent_name_bytes, tpm::Marshal(parent_name));
    if (ch->platform_id != session.platform_id ||
        ch->associated_data != DownloadBinding(req.PackageId, parent_name_bytes)) {
      return Status(Code::kUnauthenticated,
                    "download nonce was issued for another platform, package or parent");
    }
    TPMMA_ASSIGN_OR_RETURN(storage::Platform me, core_->vault->GetPlatform(session.platform_id));
    TPMMA_ASSIGN_OR_RETURN(TPM2B_PUBLIC ak, tpm::Unmarshal<TPM2B_PUBLIC>(me.ak_public));
    TPMMA_ASSIGN_OR_RETURN(Bytes attest, AttestBody(FromBase64Binary(c.CertifyInfo)));
    TPMMA_ASSIGN_OR_RETURN(TPMT_SIGNATURE sig,
                           tpm::Unmarshal<TPMT_SIGNATURE>(FromBase64Binary(c.CertifySignature)));
    // The parent must be proven to live in the authenticated TPM (DESIGN 4.3): plain TPM
    // migration would wrap to any key it is handed.
    Status certified = tpm::VerifyCertify(ak.publicArea, attest, sig, nonce, parent.publicArea);
    if (!certified.ok()) {
      return Status(certified.code(), "destination parent certification: " + certified.message());
    }
    TPMMA_RETURN_IF_ERROR(tpm::CheckStorageParent(parent.publicArea));

    TPMMA_ASSIGN_OR_RETURN(storage::Package stored, core_->vault->GetPackage(req.PackageId));
    // Re-read the MRK from the signed document, through the verifying reader only.
    TPMMA_ASSIGN_OR_RETURN(package::PackageReader reader,
                           package::PackageReader::Open(stored.body, Limits()));
    // The key the package was verified with at Upload; packages vaulted before the MA kept
    // it have the platform's current one. It goes out with the package, so that a client
    // with no copy of its own (a new key store) can check the signature too.
    Bytes signing_public = d.signing_key;
    if (signing_public.empty()) {
      TPMMA_ASSIGN_OR_RETURN(storage::Platform source,
                             core_->vault->GetPlatform(d.source_platform_id));
      if (!source.signing_key_public) return SigningKeyOf(source).error();  // says why
      signing_public = *source.signing_key_public;
    }
    TPMMA_ASSIGN_OR_RETURN(EvpPkeyPtr key, core_->signing_keys.Get(signing_public));
    auto verified = reader.Verify(key.get());
    if (!verified) {
      return Status(Code::kCorruption,
                    "stored package no longer verifies with its platform's signing key: " +
                        verified.error().message());
    }
    TPMMA_ASSIGN_OR_RETURN(TPM2B_PUBLIC mrk,
                           tpm::Unmarshal<TPM2B_PUBLIC>(verified->mrk.public_area));
    TPMMA_ASSIGN_OR_RETURN(TPM2B_PRIVATE dup,
                           tpm::Unmarshal<TPM2B_PRIVATE>(verified->mrk.duplicate));
    TPMMA_ASSIGN_OR_RETURN(TPM2B_ENCRYPTED_SECRET seed,
                           tpm::Unmarshal<TPM2B_ENCRYPTED_SECRET>(verified->mrk.encrypted_seed));
    // The escrowed inner key leaves the MA only with a Download under an approval.
    SecureBytes escrowed_inner_key;
    const auto* escrow = std::get_if<package::EscrowCustody>(&verified->custody);
    if (escrow != nullptr && approval) {
      TPMMA_ASSIGN_OR_RETURN(escrowed_inner_key, OpenEscrow(*escrow, d.source_platform_id,
                                                            mrk.publicArea, EscrowUse::kRelease));
    }
    TPMMA_ASSIGN_OR_RETURN(tpm::Rewrapped rw, core_->custody->Rewrap(mrk, dup, seed, parent));
    TPMMA_ASSIGN_OR_RETURN(Bytes dup_out, tpm::Marshal(rw.duplicate));
    TPMMA_ASSIGN_OR_RETURN(Bytes seed_out, tpm::Marshal(rw.encrypted_seed));
    const std::string detail =
        "re-wrapped to parent " + HexEncode(ByteView(parent_name.name, parent_name.size)) +
        (escrowed_inner_key.empty()
             ? ""
             : ", escrowed inner key released (escrow key " + Clip(escrow->escrow_key_id) + ")");
    if (approval && core_->cfg.approvals_single_use) {
      // A restore under an approval uses it up, in the same transaction as its audit
      // record: a second Download under it is refused (a new approval is needed).
      TPMMA_RETURN_IF_ERROR(core_->vault->MarkApprovalUsed(
          *approval, Now(), Event("ok", detail + " under approval " + std::to_string(*approval))));
    } else if (approval) {
      // approvals.single_use = false: the approval stays active until it expires or is
      // revoked; each Download under it is still on record with its id.
      auto audited = core_->vault->AppendAudit(Event(
          "ok",
          detail + " under approval " + std::to_string(*approval) + " (kept: not single-use)"));
      if (!audited) return audited.error();
    } else {
      auto audited = core_->vault->AppendAudit(Event("ok", detail));
      if (!audited) return audited.error();  // no audit record, no key material out
    }
    auto* p = soap_new_ma__DownloadedPackage(soap);
    p->Document = ToBase64Binary(soap, stored.body);
    p->DuplicateRewrapped = ToBase64Binary(soap, dup_out);
    p->EncryptedSeedRewrapped = ToBase64Binary(soap, seed_out);
    p->SigningKeyPublic = soap_new_xsd__base64Binary(soap);
    *p->SigningKeyPublic = ToBase64Binary(soap, signing_public);
    if (!escrowed_inner_key.empty()) {
      // TPM2B_DATA, as TPM2_Import's encryptionKey takes it.
      TPM2B_DATA data{};
      data.size = static_cast<uint16_t>(escrowed_inner_key.size());
      std::copy(escrowed_inner_key.begin(), escrowed_inner_key.end(), data.buffer);
      TPMMA_ASSIGN_OR_RETURN(Bytes data_bytes, tpm::Marshal(data));
      p->EscrowedInnerKey = soap_new_xsd__base64Binary(soap);
      *p->EscrowedInnerKey = ToBase64Binary(soap, data_bytes);
      wipe_after_reply_ = *p->EscrowedInnerKey;
      Wipe(data.buffer, sizeof(data.buffer));
      Wipe(data_bytes.data(), data_bytes.size());
    }
    resp.__union_DownloadResponse = SOAP_UNION__ma__union_DownloadResponse_Package;
    resp.union_DownloadResponse.Package = p;
    return Status::Ok();
  }

  Core* core_;
  OperatorCalls operator_calls_;
  xsd__base64Binary wipe_after_reply_{};  // secret bytes in the arena, cleansed after the reply
  const RequestInfo* info_ = nullptr;
  std::string op_;
  std::string actor_;
  std::string object_;
  bool faulted_ = false;
  Code outcome_ = Code::kOk;
};

class MaService final : public Endpoint {
 public:
  explicit MaService(std::unique_ptr<Core> core) : core_(std::move(core)) {
    if (core_->options.purge_interval_s > 0) {
      purger_ = std::jthread([this](std::stop_token stop) { PurgeLoop(stop); });
    }
  }
  ~MaService() override {
    purger_.request_stop();
    purge_cv_.notify_all();
    if (purger_.joinable()) purger_.join();  // before core_ (the vault) goes
  }

  Reply Handle(std::string_view body, const RequestInfo& info) override {
    // A pool rather than thread_local: contexts belong to this endpoint (tests create
    // several) and die with it, and a worker thread only ever holds one at a time.
    std::unique_ptr<Handler> h;
    {
      std::lock_guard lock(mu_);
      if (!idle_.empty()) {
        h = std::move(idle_.back());
        idle_.pop_back();
      }
    }
    if (!h) h = std::make_unique<Handler>(core_.get());
    Reply reply;
    h->Serve(body, info, &reply);
    std::lock_guard lock(mu_);
    idle_.push_back(std::move(h));
    return reply;
  }

 private:
  void PurgeLoop(std::stop_token stop) {
    const auto interval = std::chrono::seconds(core_->options.purge_interval_s);
    std::unique_lock lock(purge_mu_);
    while (!stop.stop_requested()) {
      if (purge_cv_.wait_for(lock, stop, interval, [] { return false; })) break;
      if (stop.stop_requested()) break;
      lock.unlock();
      // A failure (busy vault, disk full) is retried next round; the rows only take space.
      (void)core_->vault->PurgeExpired(core_->env->NowUnixSeconds());
      lock.lock();
    }
  }

  std::unique_ptr<Core> core_;
  std::mutex mu_;
  std::vector<std::unique_ptr<Handler>> idle_;
  std::mutex purge_mu_;
  std::condition_variable_any purge_cv_;
  std::jthread purger_;  // last: stopped first
};

Result<std::unique_ptr<Endpoint>> Build(std::unique_ptr<Core> core) {
  AuthOptions a;
  a.ek_roots = core->cfg.ek_roots;
  a.challenge_ttl_s = core->cfg.challenge_ttl_s;
  a.session_ttl_s = core->cfg.session_ttl_s;
  a.max_pending_challenges = core->cfg.max_pending_challenges;
  a.ek_cache_entries = core->cfg.ek_cache_entries;
  core->defer_read_audit = core->cfg.audit_reads != "durable";
  core->operator_policy.two_person_approvals = core->cfg.approvals_two_person;
  core->operator_policy.max_approval_ttl_s = core->cfg.approvals_max_ttl_s;
  if (core->cfg.escrow.custody != "none") {
    TPMMA_ASSIGN_OR_RETURN(core->escrow, LoadEscrowKey(core->cfg.escrow, core->env));
  }
  for (const TpmKeyConfig& k : core->cfg.escrow_retired) {
    TPMMA_ASSIGN_OR_RETURN(auto retired, LoadEscrowKey(k, core->env));
    core->retired_escrow.push_back(std::move(retired));
  }
  auto auth = Authenticator::Create(a, core->vault, core->env);
  if (!auth) return Error(auth.error().WithContext("trust.ek_roots"));
  core->auth = std::move(*auth);
  TPMMA_ASSIGN_OR_RETURN(core->mrk_policy, DuplicationSelectPolicyDigest(core->custody->name()));
  const Bytes& raw = core->custody->name();
  TPM2B_NAME name{};
  if (raw.size() > sizeof(name.name)) return Error(Code::kInternal, "MA Name too long");
  name.size = static_cast<uint16_t>(raw.size());
  std::copy(raw.begin(), raw.end(), name.name);
  TPMMA_ASSIGN_OR_RETURN(core->ma_name_tpm2b, tpm::Marshal(name));
  core->limits.max_message_bytes = core->cfg.max_body_bytes;
  core->limits.max_string_bytes = static_cast<long>(core->cfg.max_body_bytes);
  return std::unique_ptr<Endpoint>(std::make_unique<MaService>(std::move(core)));
}

}  // namespace

Result<std::unique_ptr<Endpoint>> MakeMaService(const Config& cfg, Env* env, storage::Vault* vault,
                                                MaKeyCustody* custody,
                                                const MaServiceOptions& options) {
  auto core = std::make_unique<Core>();
  core->cfg = cfg;
  core->env = env;
  core->options = options;
  core->vault = vault;
  core->custody = custody;
  return Build(std::move(core));
}

Result<std::unique_ptr<Endpoint>> MakeMaService(const Config& cfg, Env* env,
                                                const MaServiceOptions& options) {
  auto core = std::make_unique<Core>();
  core->cfg = cfg;
  core->env = env;
  core->options = options;
  auto custody = cfg.ma.custody == "tpm" ? LoadTpmMaKey({.key_id = cfg.ma.key_id,
                                                         .tcti = cfg.ma.tpm_tcti,
                                                         .parent_handle = cfg.ma.tpm_parent,
                                                         .public_path = cfg.ma.tpm_public,
                                                         .private_path = cfg.ma.tpm_private,
                                                         .certificate_path = cfg.ma.certificate},
                                                        env)
                                         : LoadSoftwareMaKey(cfg.ma.key_id, cfg.ma.private_key,
                                                             cfg.ma.certificate, env);
  if (!custody) {
    return Error(custody.error().WithContext(cfg.ma.custody == "tpm"
                                                 ? "ma.tpm_* (TPM-resident MA key)"
                                                 : "ma.private_key/ma.certificate"));
  }
  core->owned_custody = std::move(*custody);
  storage::SqliteVaultOptions vault_options;
  vault_options.max_batch = cfg.vault_max_batch;
  vault_options.read_connections = cfg.vault_read_connections;
  vault_options.max_deferred_audit = cfg.vault_max_deferred_audit;
  vault_options.deferred_audit_delay_ms = cfg.vault_deferred_audit_delay_ms;
  auto vault = storage::SqliteVault::Open(cfg.vault_path, std::move(vault_options));
  if (!vault) return Error(vault.error().WithContext("vault.path " + cfg.vault_path));
  core->owned_vault = std::move(*vault);
  core->vault = core->owned_vault.get();
  core->custody = core->owned_custody.get();
  return Build(std::move(core));
}

}  // namespace tpmma::server
