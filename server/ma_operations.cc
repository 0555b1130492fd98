// SPDX-License-Identifier: GPL-2.0-or-later
#include "server/ma_operations.h"

#include <algorithm>
#include <mutex>
#include <string>
#include <unordered_map>
#include <variant>

#include "common/text.h"
#include "schema/package_xml.h"
#include "server/approvals.h"
#include "server/ek_identity.h"
#include "server/escrow_key.h"
#include "server/ma_key_ring.h"
#include "server/policy_key.h"
#include "tpm/attest.h"
#include "tpm/escrow.h"
#include "tpm/marshal.h"
#include "tpm/policy.h"
#include "tpm/public.h"

namespace tpmma::server {
namespace {

constexpr std::string_view kServiceVersion = "tpm-ma 0.1";
constexpr std::string_view kProtocolVersion = "urn:tpm-ma:migration:1";
constexpr size_t kNonceBytes = 32;
constexpr size_t kMaxAuditField = 1000;

std::string Clip(std::string s) {
  if (s.size() > kMaxAuditField) s.resize(kMaxAuditField);
  return s;
}

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

Result<storage::CustodyMode> CustodyOf(const schema::Custody& c) {
  return std::holds_alternative<schema::EscrowCustody>(c) ? storage::CustodyMode::kEscrow
                                                          : storage::CustodyMode::kRecoveryCode;
}

bool SameBytes(ByteView a, ByteView b) {
  return std::ranges::equal(a, b);
}

// The MRK must be duplicable only to this MA (authPolicy: PolicyDuplicationSelect to one of
// its storage keys, or PolicyAuthorize by its policy-signing key, docs/protocol.md "MRK
// policies"), only with an inner wrapper (encryptedDuplication), and duplicable at all
// (fixedTPM/fixedParent clear): otherwise the vaulted blob either cannot be restored or could
// have been copied elsewhere too. `*bound`: the storage key a legacy MRK is bound to; null
// for one that follows the MA.
Status CheckMrk(const TPMT_PUBLIC& mrk, const MaKeyRing& ring, ByteView authorize_policy,
                const RingKey** bound) {
  ByteView policy = tpm::Tpm2bView(mrk.authPolicy);
  const bool follows = !authorize_policy.empty() && SameBytes(policy, authorize_policy);
  *bound = follows ? nullptr : ring.BoundBy(policy);
  if (!follows && *bound == nullptr) {
    return Status(Code::kInvalidArgument,
                  authorize_policy.empty()
                      ? "MRK authPolicy is not PolicyDuplicationSelect to this MA's key (GetMAKey)"
                      : "MRK authPolicy is neither PolicyDuplicationSelect to this MA's key nor "
                        "PolicyAuthorize by its policy-signing key (GetMAKey)");
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

// What a Download nonce is bound to: the package and the destination parent's Name.
Bytes DownloadBinding(std::string_view package_id, ByteView parent_name) {
  Bytes b = ToBytes(package_id);
  b.push_back('\n');
  b.insert(b.end(), parent_name.begin(), parent_name.end());
  return b;
}

// Operations that change nothing: their records (success or refusal) may be deferred.
bool IsRead(std::string_view op) {
  return op == "GetMAKey" || op == "GetMAServiceInfo" || op == "Query";
}

enum class EscrowUse { kUpload, kRelease };

// Packages stored before the vault recorded wrap keys were wrapped to the MA's one key of the
// time: outside a rotation that is the current key, and it is recorded now, once. During a
// rotation it is not known without trying (MaKeyRing::RewrapTo does, ma-admin ma-key rotate records
// them before it rotates).
Status RecordWrapKeys(const MaKeyRing& ring, storage::Vault* vault, Env* env) {
  if (ring.rotating()) return Status::Ok();
  const std::string& id = ring.current().custody->key_id();
  auto n = vault->AssignUnrecordedWraps(
      id,
      storage::AuditEvent{env->NowUnixSeconds(), "system", "RecordWrapKeys", id, "ok",
                          "packages stored before wrap keys were recorded are wrapped to " + id});
  return n ? Status::Ok() : n.error();
}

}  // namespace

struct MaOperations::State {
  Config cfg;
  Env* env = nullptr;
  MaServiceOptions options;
  storage::Vault* vault = nullptr;
  MaKeyCustody* custody = nullptr;  // the current storage key: ring->current()
  std::unique_ptr<MaKeyRing> ring;
  // Escrow custody (docs/protocol.md "Inner-key custody"): the current key (null when
  // escrow.custody = "none"), and the retired ones, which only release what was escrowed to them.
  std::unique_ptr<EscrowKeyCustody> escrow;
  std::vector<std::unique_ptr<EscrowKeyCustody>> retired_escrow;
  std::unique_ptr<Authenticator> auth;
  // With a policy-signing key ([policy]): its approval of the MA key, published by GetMAKey,
  // and PolicyAuthorize(its Name), the authPolicy of MRKs that follow the MA.
  std::optional<tpm::Approval> approval;
  Bytes authorize_policy;
  bool defer_read_audit = true;  // audit.reads = "deferred"
  SigningKeyCache signing_keys;
  std::unique_ptr<RefusalLimiter> limiter;

  void WriteSummaries(const std::vector<RefusalSummary>& summaries) {
    // Best effort like every refusal record: a failed write must not fail the call.
    for (const RefusalSummary& r : summaries) (void)vault->AppendAudit(SummaryEvent(r, Now()));
  }

  int64_t Now() const { return env->NowUnixSeconds(); }

  // Every text field escaped and clipped (common/text.h ForAudit): the object and the
  // detail may quote what a caller sent (a KeyId, a package id, a refusal naming either),
  // and no row may hold a raw line feed or terminal escape (issue #13, finding 4).
  storage::AuditEvent Event(const CallContext& call, std::string outcome,
                            std::string_view detail) const {
    return storage::AuditEvent{Now(),
                               ForAudit(call.actor, kMaxAuditField),
                               ForAudit(call.op, kMaxAuditField),
                               ForAudit(call.object, kMaxAuditField),
                               std::move(outcome),
                               ForAudit(detail, kMaxAuditField)};
  }

  // Appends a record: durably (the reply waits for the commit) for state changes' refusals
  // and whenever audit.reads = "durable"; for reads otherwise deferred (queued for the
  // vault's next group commit, the reply does not wait for the fsync; a full queue makes
  // us wait instead: back-pressure). Either way in the same hash chain.
  Status Audit(const CallContext& call, storage::AuditEvent event) {
    if (IsRead(call.op) && defer_read_audit) return vault->AppendAuditDeferred(event);
    auto seq = vault->AppendAudit(event);
    return seq ? Status::Ok() : seq.error();
  }

  // A successful read: audited only if configured (see MaServiceOptions).
  Status Read(const CallContext& call) {
    if (!options.audit_successful_reads) return Status::Ok();
    return Audit(call, Event(call, "ok", "peer " + call.peer));
  }

  // Every refusal of an authenticated caller is on record; an anonymous one (no session)
  // only within its peer's allowance, the rest as one summary row per window (finding 3:
  // otherwise any client appends durable rows at the disk's commit rate). Messages never
  // carry secrets by contract.
  Status Refuse(const CallContext& call, Status s) {
    if (IsAnonymousActor(call.actor)) {
      RefusalLimiter::Decision d = limiter->Admit(PeerAddress(call.peer), Now());
      WriteSummaries(d.summaries);
      if (!d.record) return s;
    }
    Status audited = Audit(call, Event(call, std::string(CodeName(s.code())),
                                       "peer " + call.peer + ": " + s.message()));
    (void)audited;  // a failing audit write must not hide the refusal from the caller
    return s;
  }
  template <typename T>
  Result<T> Audited(const CallContext& call, Result<T> r) {
    if (!r) return Error(Refuse(call, r.error()));
    return r;
  }
  Status Audited(const CallContext& call, Status s) {
    return s.ok() ? s : Refuse(call, std::move(s));
  }

  Result<storage::Session> SessionFor(const std::string& token, CallContext* call) {
    TPMMA_ASSIGN_OR_RETURN(storage::Session s, auth->CheckSession(token));
    call->actor = s.platform_id;
    return s;
  }

  // The platform's certified package-signing key, as an OpenSSL public key.
  Result<EvpPkeyPtr> SigningKeyOf(const storage::Platform& p) {
    if (!p.signing_key_public) {
      return Error(Code::kPermissionDenied,
                   "platform " + p.id +
                       " has no certified package-signing key: Authenticate with a "
                       "PackageSigningKey certified by the AK first");
    }
    return signing_keys.Get(*p.signing_key_public);
  }

  schema::ParseLimits Limits() const {
    schema::ParseLimits l;
    l.max_document_bytes = cfg.max_package_bytes;
    l.max_child_keys = cfg.max_child_keys;
    return l;
  }

  Result<SecureBytes> OpenEscrow(const schema::EscrowCustody& e, std::string_view platform,
                                 const TPMT_PUBLIC& mrk, EscrowUse use);
  EscrowKeyCustody* EscrowKeyFor(const schema::EscrowCustody& e, EscrowUse use);

  Result<schema::MigrationPackage> VerifyUpload(ByteView body, const storage::Session& session,
                                                storage::Platform* me, Placement* placement,
                                                CallContext* call);
  Result<storage::Package> PackageRow(const schema::MigrationPackage& pkg,
                                      const storage::Platform& me, Placement placement, Bytes body);

  struct Authorized {
    storage::Session session;
    storage::PackageDescriptor descriptor;
    std::optional<int64_t> approval;
  };
  Result<Authorized> AuthorizeDownload(const std::string& token, const std::string& package_id,
                                       CallContext* call);
  Result<std::optional<int64_t>> MayRestore(const storage::PackageDescriptor& d,
                                            const std::string& platform);
  Result<TPM2B_PUBLIC> CheckCertifiedParent(const DownloadCompleteRequest& r,
                                            const storage::Session& session);
  struct Stored {
    Bytes body;
    Bytes signing_public;
    schema::MigrationPackage verified;
    std::string wrap_key_id;
    std::optional<storage::OuterWrap> rewrap;
  };
  // The outer wrap of `stored` and the storage key the vault says holds it (null: none here).
  Result<std::pair<const RingKey*, storage::OuterWrap>> WrapOf(const Stored& stored);
  Result<Stored> ReadVerifiedPackage(const storage::PackageDescriptor& d);
  Status RecordRestore(const CallContext& call, std::optional<int64_t> approval,
                       const std::string& detail);
};

// ---- escrow

EscrowKeyCustody* MaOperations::State::EscrowKeyFor(const schema::EscrowCustody& e, EscrowUse use) {
  if (escrow && e.escrow_key_id == escrow->key_id()) return escrow.get();
  if (use != EscrowUse::kRelease) return nullptr;
  for (const auto& r : retired_escrow) {
    if (e.escrow_key_id == r->key_id()) return r.get();
  }
  return nullptr;
}

// The inner key escrowed in a package of `platform`, checked against its binding. At
// Upload only the current escrow key will do; a release may use a retired one too.
Result<SecureBytes> MaOperations::State::OpenEscrow(const schema::EscrowCustody& e,
                                                    std::string_view platform,
                                                    const TPMT_PUBLIC& mrk, EscrowUse use) {
  EscrowKeyCustody* key = EscrowKeyFor(e, use);
  if (key == nullptr && !escrow) {
    return Error(Code::kUnsupported,
                 "this MA holds no escrow key (escrow.custody = \"none\"): use recovery-code "
                 "custody");
  }
  if (key == nullptr) {
    return Error(Code::kInvalidArgument,
                 "the inner key is escrowed to key '" + Clip(e.escrow_key_id) +
                     "', not to this MA's escrow key '" + escrow->key_id() + "' (GetMAKey)");
  }
  if (e.algorithm != schema::EscrowAlgorithm::kRsaOaepSha256) {
    return Error(Code::kUnsupported, "escrow algorithm " +
                                         std::string(schema::ToString(e.algorithm)) +
                                         " is not supported by this MA (RSA-OAEP-SHA256 only)");
  }
  TPMMA_ASSIGN_OR_RETURN(Bytes mrk_name, tpm::ComputeName(mrk));
  auto plain = key->Decrypt(e.encrypted_inner_key);
  if (!plain) {
    return Error(Code::kIntegrityFailure,
                 "the escrowed inner key does not decrypt with escrow key '" + key->key_id() + "'");
  }
  return tpm::EscrowOpen(*plain, platform, mrk_name);
}

// ---- construction and the read operations

MaOperations::MaOperations(std::unique_ptr<State> state) : s_(std::move(state)) {}
MaOperations::~MaOperations() {
  WriteRefusalSummaries(true);  // no count is lost at shutdown
}

Result<std::unique_ptr<MaOperations>> MaOperations::Create(const Config& cfg, Env* env,
                                                           storage::Vault* vault,
                                                           MaKeyCustody* custody,
                                                           const MaServiceOptions& options) {
  auto s = std::make_unique<State>();
  s->cfg = cfg;
  s->env = env;
  s->options = options;
  s->vault = vault;
  s->custody = custody;
  s->defer_read_audit = cfg.audit_reads != "durable";
  s->limiter = std::make_unique<RefusalLimiter>(options.anonymous_refusals);
  if (cfg.escrow.custody != "none") {
    TPMMA_ASSIGN_OR_RETURN(s->escrow, LoadEscrowKey(cfg.escrow, env));
  }
  for (const TpmKeyConfig& k : cfg.escrow_retired) {
    TPMMA_ASSIGN_OR_RETURN(auto retired, LoadEscrowKey(k, env));
    s->retired_escrow.push_back(std::move(retired));
  }
  AuthOptions a;
  a.ek_roots = cfg.ek_roots;
  a.ek_intermediates = cfg.ek_intermediates;
  a.challenge_ttl_s = cfg.challenge_ttl_s;
  a.session_ttl_s = cfg.session_ttl_s;
  a.max_pending_challenges = cfg.max_pending_challenges;
  a.ek_cache_entries = cfg.ek_cache_entries;
  TPMMA_ASSIGN_OR_RETURN(a.enrollment, ParseEnrollmentPolicy(cfg.enrollment_policy));
  TPMMA_ASSIGN_OR_RETURN(a.ek_templates, LoadEkTemplates(cfg.ek_templates, env));
  auto auth = Authenticator::Create(a, vault, env);
  if (!auth) return Error(auth.error().WithContext("trust.ek_roots / trust.ek_intermediates"));
  // Platforms enrolled before the vault kept their EK key: bind them to it now.
  TPMMA_RETURN_IF_ERROR(BackfillEkKeyIds(vault, env));
  s->auth = std::move(*auth);
  TPMMA_ASSIGN_OR_RETURN(s->ring, MaKeyRing::Create(custody, cfg.ma_retiring, env));
  TPMMA_RETURN_IF_ERROR(RecordWrapKeys(*s->ring, vault, env));
  TPMMA_ASSIGN_OR_RETURN(s->approval, LoadApproval(cfg, custody->name(), env));
  if (s->approval) {
    TPMMA_ASSIGN_OR_RETURN(Bytes key_name, tpm::ComputeName(s->approval->policy_key.publicArea));
    TPMMA_ASSIGN_OR_RETURN(TPM2B_DIGEST p,
                           tpm::AuthorizePolicy(key_name, tpm::DuplicationPolicyRef()));
    s->authorize_policy.assign(p.buffer, p.buffer + p.size);
  }
  return std::unique_ptr<MaOperations>(new MaOperations(std::move(s)));
}

const Config& MaOperations::config() const {
  return s_->cfg;
}
storage::Vault* MaOperations::vault() const {
  return s_->vault;
}
Env* MaOperations::env() const {
  return s_->env;
}

Status MaOperations::Refuse(const CallContext& call, Status refusal) {
  return s_->Refuse(call, std::move(refusal));
}

RefusalLimiter* MaOperations::refusal_limiter() const {
  return s_->limiter.get();
}

void MaOperations::WriteRefusalSummaries(bool all) {
  s_->WriteSummaries(s_->limiter->TakeEnded(s_->Now(), all));
}

Result<ServiceInfo> MaOperations::GetMAServiceInfo(CallContext* call) {
  call->op = "GetMAServiceInfo";
  ServiceInfo info;
  info.service_version = kServiceVersion;
  info.protocol_versions = {std::string(kProtocolVersion)};
  info.operations = {"Authenticate", "Upload",   "Download",        "Query",
                     "Delete",       "GetMAKey", "GetMAServiceInfo"};
  info.algorithms = {"TPM_ALG_RSA:2048",   "TPM_ALG_ECC:NIST_P256", "TPM_ALG_AES:128:CFB",
                     "TPM_ALG_SHA256",     "TPM_ALG_RSASSA",        "TPM_ALG_ECDSA",
                     "XMLDSIG:rsa-sha256", "XMLDSIG:ecdsa-sha256"};
  info.max_package_bytes = s_->cfg.max_package_bytes;
  info.max_child_keys = s_->cfg.max_child_keys;
  info.max_request_bytes = s_->cfg.max_body_bytes;
  info.custody_modes = {storage::CustodyMode::kRecoveryCode};
  info.ma_key_ids = {s_->custody->key_id()};
  for (size_t i = 1; i < s_->ring->keys().size(); ++i) {
    info.retiring_ma_key_ids.push_back(s_->ring->keys()[i].custody->key_id());
  }
  if (s_->escrow) {
    info.custody_modes.push_back(storage::CustodyMode::kEscrow);
    info.ma_key_ids.push_back(s_->escrow->key_id());
    info.algorithms.push_back("ESCROW:RSA-OAEP-SHA256");
  }
  TPMMA_RETURN_IF_ERROR(s_->Audited(*call, s_->Read(*call)));
  return info;
}

Result<MaKeyInfo> MaOperations::GetMAKey(const std::optional<std::string>& key_id,
                                         CallContext* call) {
  call->op = "GetMAKey";
  const MaKeyCustody& k = *s_->custody;
  call->object = k.key_id();
  MaKeyInfo out;
  const RingKey* retiring = key_id && *key_id != k.key_id() ? s_->ring->Find(*key_id) : nullptr;
  if (retiring != nullptr) {
    // No approval: an MRK that follows the MA duplicates to the current key only.
    const MaKeyCustody& r = *retiring->custody;
    call->object = r.key_id();
    out = {r.key_id(), r.certificate_der(), r.public_bytes(), retiring->name_tpm2b, {}, {}};
  } else if (key_id && s_->escrow && *key_id == s_->escrow->key_id()) {
    const EscrowKeyCustody& e = *s_->escrow;
    call->object = e.key_id();
    out = {e.key_id(), e.certificate_der(), e.public_bytes(), e.name_tpm2b(), {}, {}};
  } else if (key_id && *key_id != k.key_id()) {
    // The id the caller asked for is the record's object, once: the recorded message does
    // not repeat it (finding 3: it was stored twice). The caller's fault still names it.
    call->object = Clip(*key_id);
    (void)s_->Refuse(*call, Status(Code::kNotFound, "no MA key with this KeyId"));
    return Error(Code::kNotFound, "no MA key with id " + ForAudit(call->object, 256));
  } else {
    out = {k.key_id(), k.certificate_der(), k.public_bytes(), s_->ring->current().name_tpm2b, {},
           {}};
    if (s_->approval) {
      TPMMA_ASSIGN_OR_RETURN(out.policy_key, tpm::Marshal(s_->approval->policy_key));
      TPMMA_ASSIGN_OR_RETURN(out.approval, tpm::Marshal(s_->approval->signature));
    }
  }
  TPMMA_RETURN_IF_ERROR(s_->Audited(*call, s_->Read(*call)));
  return out;
}

// ---- Authenticate

Result<BeginResult> MaOperations::AuthenticateBegin(const BeginRequest& request,
                                                    CallContext* call) {
  call->op = "Authenticate.Begin";
  auto begun = s_->auth->Begin(request);
  if (!begun) {
    // Name the claimed platform in the refusal (only a claim: the chain did not check).
    if (auto ek = tpm::Unmarshal<TPM2B_PUBLIC>(request.ek_public)) {
      if (auto name = tpm::ComputeName(ek->publicArea)) call->actor = "claimed:" + HexEncode(*name);
    }
    return Error(s_->Refuse(*call, begun.error()));
  }
  call->actor = begun->platform_id;
  call->object = begun->platform_id;
  return begun;
}

Result<CompleteResult> MaOperations::AuthenticateComplete(const CompleteRequest& request,
                                                          CallContext* call) {
  call->op = "Authenticate.Complete";
  std::string platform;
  auto out = s_->auth->Complete(request, &platform);
  if (!platform.empty()) {
    call->actor = platform;
    call->object = platform;
  }
  return s_->Audited(*call, std::move(out));
}

// ---- Upload

// The package verified with the session platform's certified key; its MRK and escrow
// binding checked. `*me` is the platform row (the key that verified it is kept).
Result<schema::MigrationPackage> MaOperations::State::VerifyUpload(ByteView body,
                                                                   const storage::Session& session,
                                                                   storage::Platform* me,
                                                                   Placement* placement,
                                                                   CallContext* call) {
  TPMMA_ASSIGN_OR_RETURN(schema::PackageReader reader, schema::PackageReader::Open(body, Limits()));
  const schema::UnverifiedHeader& h = reader.UnverifiedHeaderFields();
  call->object = Clip(h.package_id);
  // Only the session's own platform key may vouch for a package: a platform cannot vault
  // (and later claim) another platform's keys.
  if (h.source_platform_id != session.platform_id) {
    return Error(Code::kPermissionDenied,
                 "package source platform is not the authenticated platform");
  }
  TPMMA_ASSIGN_OR_RETURN(*me, vault->GetPlatform(session.platform_id));
  TPMMA_ASSIGN_OR_RETURN(EvpPkeyPtr key, SigningKeyOf(*me));
  TPMMA_ASSIGN_OR_RETURN(schema::MigrationPackage pkg, reader.Verify(key.get()));
  TPMMA_ASSIGN_OR_RETURN(TPM2B_PUBLIC mrk, tpm::Unmarshal<TPM2B_PUBLIC>(pkg.mrk.public_area));
  const RingKey* bound = nullptr;
  TPMMA_RETURN_IF_ERROR(CheckMrk(mrk.publicArea, *ring, authorize_policy, &bound));
  if (const auto* e = std::get_if<schema::EscrowCustody>(&pkg.custody)) {
    // An escrow blob that would not open at restore time is a silent loss: check now that
    // it decrypts and was made for this platform and MRK. The key is wiped on return.
    auto opened = OpenEscrow(*e, session.platform_id, mrk.publicArea, EscrowUse::kUpload);
    if (!opened) return Error(opened.error().WithContext("package custody (Escrow)"));
  }
  TPMMA_ASSIGN_OR_RETURN(*placement,
                         ring->Place(bound, mrk, {pkg.mrk.duplicate, pkg.mrk.encrypted_seed}));
  return pkg;
}

Result<storage::Package> MaOperations::State::PackageRow(const schema::MigrationPackage& pkg,
                                                         const storage::Platform& me,
                                                         Placement placement, Bytes body) {
  storage::Package p;
  p.descriptor.wrap_key_id = std::move(placement.key_id);
  p.rewrap = std::move(placement.rewrap);
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
    p.descriptor.keys.push_back({k.key_id, k.label, std::string(schema::ToString(k.usage))});
  }
  // Hashed once, here: the vault stores the digest it is given.
  TPMMA_ASSIGN_OR_RETURN(p.descriptor.sha256, schema::PackageDigest(body));
  p.body = std::move(body);
  return p;
}

Result<UploadResult> MaOperations::Upload(UploadRequest request, CallContext* call) {
  call->op = "Upload";
  auto run = [&]() -> Result<UploadResult> {
    TPMMA_ASSIGN_OR_RETURN(storage::Session session, s_->SessionFor(request.session_token, call));
    if (request.package.size() > s_->cfg.max_package_bytes) {
      return Error(Code::kLimitExceeded, "package larger than max_package_bytes=" +
                                             std::to_string(s_->cfg.max_package_bytes));
    }
    storage::Platform me;
    Placement placement;
    TPMMA_ASSIGN_OR_RETURN(schema::MigrationPackage pkg,
                           s_->VerifyUpload(request.package, session, &me, &placement, call));
    const std::string wrapped =
        ", wrapped to " + placement.key_id +
        (placement.moved_from.empty() ? "" : " (re-enciphered from " + placement.moved_from + ")");
    TPMMA_ASSIGN_OR_RETURN(storage::Package p, s_->PackageRow(pkg, me, std::move(placement),
                                                              std::move(request.package)));
    const std::string digest = HexEncode(p.descriptor.sha256);
    TPMMA_ASSIGN_OR_RETURN(
        storage::PutOutcome outcome,
        s_->vault->PutPackage(p, s_->Event(*call, "ok",
                                           std::to_string(p.body.size()) + " bytes, " +
                                               std::to_string(pkg.child_keys.size()) +
                                               " keys, sha256 " + digest + wrapped)));
    return UploadResult{pkg.package_id, digest, outcome == storage::PutOutcome::kAlreadyStored};
  };
  return s_->Audited(*call, run());
}

// ---- Query and Delete

Result<QueryResult> MaOperations::Query(const QueryRequest& request, CallContext* call) {
  call->op = "Query";
  auto run = [&]() -> Result<QueryResult> {
    TPMMA_ASSIGN_OR_RETURN(storage::Session session, s_->SessionFor(request.session_token, call));
    call->object = session.platform_id;
    storage::PackageQuery q;
    q.visible_to_platform = session.platform_id;
    q.now = s_->Now();
    q.page_size = request.page_size;
    q.with_keys = false;  // the reply carries KeyCount only
    q.page_token = request.page_token;
    if (request.source_platform_id) q.source_platform_id = *request.source_platform_id;
    if (request.created_after) q.created_after = *request.created_after;
    if (request.created_before) q.created_before = *request.created_before;
    if (request.label_contains) q.label_contains = *request.label_contains;
    TPMMA_ASSIGN_OR_RETURN(storage::PackagePage page, s_->vault->QueryPackages(q));
    QueryResult out;
    out.next_page_token = std::move(page.next_page_token);
    for (auto& d : page.packages) {
      const PackageAccess access = d.source_platform_id == session.platform_id
                                       ? PackageAccess::kOwn
                                       : PackageAccess::kApproved;
      out.packages.push_back({std::move(d), access});
    }
    TPMMA_RETURN_IF_ERROR(s_->Read(*call));
    return out;
  };
  return s_->Audited(*call, run());
}

Status MaOperations::Delete(const DeleteRequest& request, CallContext* call) {
  call->op = "Delete";
  auto run = [&]() -> Status {
    TPMMA_ASSIGN_OR_RETURN(storage::Session session, s_->SessionFor(request.session_token, call));
    call->object = Clip(request.package_id);
    TPMMA_ASSIGN_OR_RETURN(storage::PackageDescriptor d,
                           s_->vault->GetPackageDescriptor(request.package_id));
    if (d.source_platform_id != session.platform_id) {
      return Status(Code::kPermissionDenied,
                    "only the platform that uploaded a package may delete it");
    }
    return s_->vault->DeletePackage(request.package_id, s_->Event(*call, "ok", "deleted"));
  };
  return s_->Audited(*call, run());
}

// ---- Download: authorize, then Prepare (a nonce) or Complete (certified parent, re-wrap)

// Own packages always (nullopt, or for an escrow package the id of an active approval to
// itself, which releases the escrowed key); another platform's only with an active
// helpdesk approval (its id). A Download under an approval uses it up.
Result<std::optional<int64_t>> MaOperations::State::MayRestore(const storage::PackageDescriptor& d,
                                                               const std::string& platform) {
  const bool own = d.source_platform_id == platform;
  // An own recovery-code package needs nothing more; an own escrow package comes back
  // without its inner key, unless the helpdesk approved this platform's restore (after a
  // TPM clear it has no copy of its own): docs/protocol.md "Inner-key custody".
  if (own && d.custody != storage::CustodyMode::kEscrow) return std::optional<int64_t>();
  auto approval = vault->FindActiveApproval(platform, d.package_id, Now());
  if (approval) return std::optional<int64_t>(approval->id);
  if (approval.error().code() != Code::kNotFound) return Error(approval.error());
  if (own) return std::optional<int64_t>();
  return Error(Code::kPermissionDenied, NoApprovalReason(*vault, platform, d, Now()));
}

// The session, the package and the approval decision: the same for both rounds.
Result<MaOperations::State::Authorized> MaOperations::State::AuthorizeDownload(
    const std::string& token, const std::string& package_id, CallContext* call) {
  Authorized a;
  TPMMA_ASSIGN_OR_RETURN(a.session, SessionFor(token, call));
  call->object = Clip(package_id);
  TPMMA_ASSIGN_OR_RETURN(a.descriptor, vault->GetPackageDescriptor(package_id));
  TPMMA_ASSIGN_OR_RETURN(a.approval, MayRestore(a.descriptor, a.session.platform_id));
  return a;
}

Result<DownloadPrepared> MaOperations::DownloadPrepare(const DownloadPrepareRequest& request,
                                                       CallContext* call) {
  call->op = "Download.Prepare";
  auto run = [&]() -> Result<DownloadPrepared> {
    TPMMA_ASSIGN_OR_RETURN(State::Authorized a,
                           s_->AuthorizeDownload(request.session_token, request.package_id, call));
    TPMMA_ASSIGN_OR_RETURN(TPM2B_NAME parsed, tpm::Unmarshal<TPM2B_NAME>(request.parent_name));
    (void)parsed;
    TPMMA_ASSIGN_OR_RETURN(Bytes nonce, RandomBytes(kNonceBytes));
    const int64_t now = s_->Now();
    storage::Challenge c;
    c.id = HexEncode(nonce);
    c.kind = storage::ChallengeKind::kDownloadNonce;
    c.platform_id = a.session.platform_id;
    c.nonce = nonce;
    c.associated_data = DownloadBinding(request.package_id, request.parent_name);
    c.expected_hash.assign(32, 0);  // nothing secret to prove: the nonce is the challenge
    c.created_at = now;
    c.expires_at = now + s_->cfg.download_nonce_ttl_s;
    TPMMA_RETURN_IF_ERROR(s_->vault->CreateChallenge(c, s_->Event(*call, "ok", "nonce issued")));
    return DownloadPrepared{std::move(nonce), c.expires_at};
  };
  return s_->Audited(*call, run());
}

// Burns the nonce (whatever fails after, it cannot be tried again), checks it was issued
// for this platform, package and parent, and that the AK certified the parent over it:
// plain TPM migration would wrap to any key it is handed (docs/protocol.md).
Result<TPM2B_PUBLIC> MaOperations::State::CheckCertifiedParent(const DownloadCompleteRequest& r,
                                                               const storage::Session& session) {
  auto ch =
      vault->ConsumeChallenge(HexEncode(r.nonce), storage::ChallengeKind::kDownloadNonce, Now());
  if (!ch && ch.error().code() == Code::kNotFound) {
    return Error(Code::kUnauthenticated, "unknown download nonce: run Prepare again");
  }
  if (!ch) return Error(ch.error());
  TPMMA_ASSIGN_OR_RETURN(TPM2B_PUBLIC parent, tpm::Unmarshal<TPM2B_PUBLIC>(r.parent_public));
  TPMMA_ASSIGN_OR_RETURN(TPM2B_NAME parent_name, tpm::ComputeTpm2bName(parent.publicArea));
  TPMMA_ASSIGN_OR_RETURN(Bytes parent_name_bytes, tpm::Marshal(parent_name));
  if (ch->platform_id != session.platform_id ||
      ch->associated_data != DownloadBinding(r.package_id, parent_name_bytes)) {
    return Error(Code::kUnauthenticated,
                 "download nonce was issued for another platform, package or parent");
  }
  TPMMA_ASSIGN_OR_RETURN(storage::Platform me, vault->GetPlatform(session.platform_id));
  TPMMA_ASSIGN_OR_RETURN(TPM2B_PUBLIC ak, tpm::Unmarshal<TPM2B_PUBLIC>(me.ak_public));
  const CertifiedKeyProof proof{r.parent_public, r.certify_info, r.certify_signature};
  TPMMA_RETURN_IF_ERROR(VerifyCertifiedKey(proof, ak, r.nonce, "destination parent"));
  TPMMA_RETURN_IF_ERROR(tpm::CheckStorageParent(parent.publicArea));
  return parent;
}

// The stored document, re-verified: the MRK is re-read from the signed document through
// the verifying reader only.
Result<MaOperations::State::Stored> MaOperations::State::ReadVerifiedPackage(
    const storage::PackageDescriptor& d) {
  TPMMA_ASSIGN_OR_RETURN(storage::Package stored, vault->GetPackage(d.package_id));
  TPMMA_ASSIGN_OR_RETURN(schema::PackageReader reader,
                         schema::PackageReader::Open(stored.body, Limits()));
  // The key the package was verified with at Upload; packages vaulted before the MA kept
  // it have the platform's current one. It goes out with the package, so that a client
  // with no copy of its own (a new key store) can check the signature too.
  Bytes signing_public = d.signing_key;
  if (signing_public.empty()) {
    TPMMA_ASSIGN_OR_RETURN(storage::Platform source, vault->GetPlatform(d.source_platform_id));
    if (!source.signing_key_public) return Error(SigningKeyOf(source).error());  // says why
    signing_public = *source.signing_key_public;
  }
  TPMMA_ASSIGN_OR_RETURN(EvpPkeyPtr key, signing_keys.Get(signing_public));
  auto verified = reader.Verify(key.get());
  if (!verified) {
    return Error(Code::kCorruption,
                 "stored package no longer verifies with its platform's signing key: " +
                     verified.error().message());
  }
  return Stored{std::move(stored.body), std::move(signing_public), std::move(*verified),
                std::move(stored.descriptor.wrap_key_id), std::move(stored.rewrap)};
}

Result<std::pair<const RingKey*, storage::OuterWrap>> MaOperations::State::WrapOf(
    const Stored& stored) {
  storage::OuterWrap wrap = stored.rewrap.value_or(
      storage::OuterWrap{stored.verified.mrk.duplicate, stored.verified.mrk.encrypted_seed});
  // Empty (stored before wrap keys were recorded, during a rotation) or not held here: no
  // hint, RewrapTo tries every key.
  return std::make_pair(ring->Find(stored.wrap_key_id), std::move(wrap));
}

// No audit record, no key material out. A restore under a single-use approval uses it up,
// in the same transaction as its audit record: a second Download under it is refused.
Status MaOperations::State::RecordRestore(const CallContext& call, std::optional<int64_t> approval,
                                          const std::string& detail) {
  if (approval && cfg.approvals_single_use) {
    return vault->MarkApprovalUsed(
        *approval, Now(),
        Event(call, "ok", detail + " under approval " + std::to_string(*approval)));
  }
  // approvals.single_use = false: the approval stays active until it expires or is
  // revoked; each Download under it is still on record with its id.
  auto audited =
      vault->AppendAudit(approval ? Event(call, "ok",
                                          detail + " under approval " + std::to_string(*approval) +
                                              " (kept: not single-use)")
                                  : Event(call, "ok", detail));
  return audited ? Status::Ok() : audited.error();
}

namespace {

// TPM2B_DATA, as TPM2_Import's encryptionKey takes it.
Result<SecureBytes> MarshalInnerKey(const SecureBytes& key) {
  TPM2B_DATA data{};
  if (key.size() > sizeof(data.buffer)) return Error(Code::kInternal, "inner key too long");
  data.size = static_cast<uint16_t>(key.size());
  std::copy(key.begin(), key.end(), data.buffer);
  auto bytes = tpm::Marshal(data);
  Wipe(data.buffer, sizeof(data.buffer));
  if (!bytes) return Error(bytes.error());
  SecureBytes out(bytes->begin(), bytes->end());
  Wipe(bytes->data(), bytes->size());
  return out;
}

}  // namespace

Result<DownloadedPackage> MaOperations::DownloadComplete(const DownloadCompleteRequest& request,
                                                         CallContext* call) {
  call->op = "Download.Complete";
  auto run = [&]() -> Result<DownloadedPackage> {
    TPMMA_ASSIGN_OR_RETURN(State::Authorized a,
                           s_->AuthorizeDownload(request.session_token, request.package_id, call));
    TPMMA_ASSIGN_OR_RETURN(TPM2B_PUBLIC parent, s_->CheckCertifiedParent(request, a.session));
    TPMMA_ASSIGN_OR_RETURN(State::Stored stored, s_->ReadVerifiedPackage(a.descriptor));
    const schema::MigratableRootKey& m = stored.verified.mrk;
    TPMMA_ASSIGN_OR_RETURN(TPM2B_PUBLIC mrk, tpm::Unmarshal<TPM2B_PUBLIC>(m.public_area));
    TPMMA_ASSIGN_OR_RETURN(auto wrap, s_->WrapOf(stored));
    // The escrowed inner key leaves the MA only with a Download under an approval.
    SecureBytes inner_key;
    const auto* escrow = std::get_if<schema::EscrowCustody>(&stored.verified.custody);
    if (escrow != nullptr && a.approval) {
      TPMMA_ASSIGN_OR_RETURN(inner_key, s_->OpenEscrow(*escrow, a.descriptor.source_platform_id,
                                                       mrk.publicArea, EscrowUse::kRelease));
    }
    auto moved = s_->ring->RewrapTo(wrap.first, mrk, wrap.second, parent);
    if (!moved && wrap.first == nullptr && !stored.wrap_key_id.empty()) {
      // Most likely an instance not restarted after `ma-key rotate` while reencipher ran.
      return Error(Code::kUnavailable, "the package's outer wrap is held by MA key " +
                                           Clip(stored.wrap_key_id) +
                                           ", which this MA instance does not hold (restarted "
                                           "since `ma-admin ma-key rotate`? retired?)");
    }
    if (!moved) return Error(moved.error());
    const tpm::Rewrapped& rw = moved->second;
    DownloadedPackage out;
    TPMMA_ASSIGN_OR_RETURN(out.duplicate, tpm::Marshal(rw.duplicate));
    TPMMA_ASSIGN_OR_RETURN(out.encrypted_seed, tpm::Marshal(rw.encrypted_seed));
    TPMMA_ASSIGN_OR_RETURN(TPM2B_NAME parent_name, tpm::ComputeTpm2bName(parent.publicArea));
    const std::string detail =
        "re-wrapped from MA key " + moved->first->custody->key_id() + " to parent " +
        HexEncode(ByteView(parent_name.name, parent_name.size)) +
        (inner_key.empty()
             ? ""
             : ", escrowed inner key released (escrow key " + Clip(escrow->escrow_key_id) + ")");
    TPMMA_RETURN_IF_ERROR(s_->RecordRestore(*call, a.approval, detail));
    if (!inner_key.empty()) {
      TPMMA_ASSIGN_OR_RETURN(out.escrowed_inner_key, MarshalInnerKey(inner_key));
    }
    out.document = std::move(stored.body);
    out.signing_key_public = std::move(stored.signing_public);
    return out;
  };
  return s_->Audited(*call, run());
}

}  // namespace tpmma::server
