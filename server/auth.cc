// SPDX-License-Identifier: GPL-2.0-or-later
#include "server/auth.h"

#include <openssl/err.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/sha.h>

#include <algorithm>
#include <cstdint>
#include <ctime>
#include <optional>

#include <fmt/format.h>

#include "server/ek_cert_quirks.h"
#include "server/ek_identity.h"
#include "tpm/attest.h"
#include "tpm/credential.h"
#include "tpm/marshal.h"
#include "tpm/public.h"

namespace tpmma::server {
namespace {

constexpr size_t kSecretBytes = 32;
constexpr size_t kIdBytes = 32;

Bytes Sha256(ByteView data) {
  Bytes out(SHA256_DIGEST_LENGTH);
  SHA256(data.data(), data.size(), out.data());
  return out;
}

Result<SecureBytes> HmacSha256(ByteView key, ByteView data) {
  SecureBytes out(SHA256_DIGEST_LENGTH);
  unsigned int len = 0;
  if (HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), data.data(), data.size(),
           out.data(), &len) == nullptr ||
      len != out.size()) {
    return Error(OpensslError("HMAC"));
  }
  return out;
}

std::string Base64Url(ByteView data) {
  std::string s = Base64Encode(data);
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    if (c == '+')
      out.push_back('-');
    else if (c == '/')
      out.push_back('_');
    else if (c != '=')
      out.push_back(c);
  }
  Wipe(s.data(), s.size());
  return out;
}

Result<X509Ptr> ParseDer(ByteView der, std::string_view what) {
  const unsigned char* p = der.data();
  X509Ptr cert(d2i_X509(nullptr, &p, static_cast<long>(der.size())));
  if (!cert || p != der.data() + der.size()) {
    return Error(Code::kMalformed, std::string(what) + " is not a DER X.509 certificate");
  }
  return cert;
}

void WriteLv(Bytes& out, ByteView v) {
  uint32_t n = static_cast<uint32_t>(v.size());
  for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<uint8_t>(n >> shift));
  out.insert(out.end(), v.begin(), v.end());
}

// The next WriteLv field of `in`, advanced past it; nullopt if `in` is too short.
std::optional<Bytes> ReadLv(ByteView& in) {
  if (in.size() < 4) return std::nullopt;
  const uint32_t n =
      (uint32_t{in[0]} << 24) | (uint32_t{in[1]} << 16) | (uint32_t{in[2]} << 8) | uint32_t{in[3]};
  if (in.size() - 4 < n) return std::nullopt;
  Bytes out(in.begin() + 4, in.begin() + 4 + n);
  in = in.subspan(4 + n);
  return out;
}

// The audit detail of an opened session: which keys the AK certified with it.
std::string CompleteDetail(bool signing_key, bool srk) {
  if (signing_key && srk) return "session opened; package-signing key and SRK certified";
  if (signing_key) return "session opened; package-signing key certified";
  if (srk) return "session opened; SRK certified";
  return "session opened";
}

}  // namespace

Result<Bytes> AttestBody(ByteView tpm2b_attest) {
  TPMMA_ASSIGN_OR_RETURN(TPM2B_ATTEST a, tpm::Unmarshal<TPM2B_ATTEST>(tpm2b_attest));
  return Bytes(a.attestationData, a.attestationData + a.size);
}

Result<TPM2B_PUBLIC> VerifyCertifiedKey(const CertifiedKeyProof& proof, const TPM2B_PUBLIC& ak,
                                        ByteView nonce, std::string_view what) {
  TPMMA_ASSIGN_OR_RETURN(TPM2B_PUBLIC key, tpm::Unmarshal<TPM2B_PUBLIC>(proof.public_area));
  TPMMA_ASSIGN_OR_RETURN(Bytes attest, AttestBody(proof.certify_info));
  TPMMA_ASSIGN_OR_RETURN(TPMT_SIGNATURE sig,
                         tpm::Unmarshal<TPMT_SIGNATURE>(proof.certify_signature));
  Status certified = tpm::VerifyCertify(ak.publicArea, attest, sig, nonce, key.publicArea);
  if (!certified.ok()) {
    return Error(certified.code(), fmt::format("{} certification: {}", what, certified.message()));
  }
  return key;
}

Status CheckSigningKeyAttributes(const TPMT_PUBLIC& key) {
  const TPMA_OBJECT need = TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT |
                           TPMA_OBJECT_SENSITIVEDATAORIGIN | TPMA_OBJECT_SIGN_ENCRYPT;
  const TPMA_OBJECT a = key.objectAttributes;
  if ((a & need) != need) {
    return Status(Code::kInvalidArgument,
                  "package-signing key must have fixedTPM|fixedParent|sensitiveDataOrigin|sign");
  }
  if ((a & TPMA_OBJECT_DECRYPT) != 0 || (a & TPMA_OBJECT_RESTRICTED) != 0) {
    return Status(Code::kInvalidArgument,
                  "package-signing key must not be a decryption or restricted key");
  }
  if (key.type != TPM2_ALG_RSA && key.type != TPM2_ALG_ECC) {
    return Status(Code::kUnsupported, "package-signing key must be RSA or ECC");
  }
  return Status::Ok();
}

Bytes Authenticator::TokenHash(std::string_view token) {
  return Sha256(View(token));
}

Result<std::unique_ptr<Authenticator>> Authenticator::Create(const AuthOptions& options,
                                                             storage::Vault* vault, Env* env) {
  if (options.ek_roots.empty()) {
    return Error(Code::kInvalidArgument, "trust.ek_roots is empty: no EK could ever be trusted");
  }
  TPMMA_ASSIGN_OR_RETURN(std::unique_ptr<EkTrust> trust,
                         EkTrust::Load(options.ek_roots, options.ek_intermediates, env));
  return std::unique_ptr<Authenticator>(new Authenticator(options, vault, env, std::move(trust)));
}

std::string Authenticator::EkCacheKey(const BeginRequest& request) {
  Bytes encoded;
  WriteLv(encoded, request.ek_public);
  WriteLv(encoded, request.ek_certificate);
  for (const Bytes& c : request.ek_intermediates) WriteLv(encoded, c);
  Bytes digest = Sha256(encoded);
  return std::string(digest.begin(), digest.end());
}

bool Authenticator::EkCacheHit(const std::string& key, int64_t now) {
  if (options_.ek_cache_entries == 0) return false;
  std::lock_guard lock(ek_mu_);
  auto it = ek_cache_.find(key);
  if (it == ek_cache_.end()) return false;
  if (now < it->second.not_before || now > it->second.not_after) {
    ek_lru_.erase(it->second.lru);
    ek_cache_.erase(it);
    return false;
  }
  ek_lru_.splice(ek_lru_.begin(), ek_lru_, it->second.lru);
  return true;
}

void Authenticator::EkCacheRemember(const std::string& key, int64_t not_before, int64_t not_after) {
  if (options_.ek_cache_entries == 0) return;
  std::lock_guard lock(ek_mu_);
  if (ek_cache_.contains(key)) return;
  while (ek_cache_.size() >= options_.ek_cache_entries && !ek_lru_.empty()) {
    ek_cache_.erase(ek_lru_.back());
    ek_lru_.pop_back();
  }
  ek_lru_.push_front(key);
  ek_cache_.emplace(key, VerifiedEk{not_before, not_after, ek_lru_.begin()});
}

Status Authenticator::VerifyEkCertificate(const BeginRequest& request, const TPMT_PUBLIC& ek) {
  const int64_t now = env_->NowUnixSeconds();
  const std::string cache_key = EkCacheKey(request);
  // The same EK public, certificate and intermediates verified before, and every
  // certificate of that chain still valid now: the same checks would pass again.
  if (EkCacheHit(cache_key, now)) return Status::Ok();
  // Real EK certificates are quirky: server/ek_cert_quirks.h says what is tolerated.
  TPMMA_ASSIGN_OR_RETURN(EkCertificate leaf,
                         ParseEkCertificate(request.ek_certificate, "EKCertificate"));
  std::vector<X509Ptr> sent;
  std::vector<X509*> sent_view;
  for (const Bytes& der : request.ek_intermediates) {
    TPMMA_ASSIGN_OR_RETURN(X509Ptr c, ParseDer(der, "EKIntermediateCertificate"));
    sent_view.push_back(c.get());
    sent.push_back(std::move(c));
  }
  // The MA completes the chain from its intermediate pool and what the endpoint sent; a
  // refusal names the missing issuer and the `ma-admin ek-trust add` command.
  TPMMA_ASSIGN_OR_RETURN(VerifiedPath path, trust_->Verify(leaf, sent_view, now));
  TPMMA_ASSIGN_OR_RETURN(EvpPkeyPtr ek_key, tpm::PublicToEvp(ek));
  if (EVP_PKEY_eq(X509_get0_pubkey(leaf.cert.get()), ek_key.get()) != 1) {
    ERR_clear_error();
    return Status(Code::kUnauthenticated, "EK certificate does not certify the EKPublic sent");
  }
  // The window in which this verification holds: every certificate of the chain it built
  // (leaf, intermediates, root) within its validity.
  EkCacheRemember(cache_key, path.not_before, path.not_after);
  return Status::Ok();
}

void Authenticator::Remember(const std::string& id, const std::string& identity_key,
                             const std::function<Identity()>& make, Pending pending) {
  std::lock_guard lock(mu_);
  const int64_t now = env_->NowUnixSeconds();
  // Drop what is expired (nothing could complete it) and, beyond the cap, the oldest.
  while (!pending_order_.empty()) {
    auto first = pending_order_.begin();
    auto it = pending_.find(first->second);
    bool expired = it == pending_.end() || it->second.expires_at <= now;
    if (!expired && pending_.size() < options_.max_pending_challenges) break;
    if (it != pending_.end()) pending_.erase(it);
    pending_order_.erase(first);
  }
  std::weak_ptr<const Identity>& shared = identities_[identity_key];
  pending.identity = shared.lock();
  if (!pending.identity) {
    pending.identity = std::make_shared<const Identity>(make());
    shared = pending.identity;
  }
  if (identities_.size() > 2 * pending_.size() + 64) {
    std::erase_if(identities_, [](const auto& kv) { return kv.second.expired(); });
  }
  pending.seq = next_seq_++;
  pending_order_.emplace(pending.seq, id);
  pending_.insert_or_assign(id, std::move(pending));
}

std::optional<Authenticator::Pending> Authenticator::Take(const std::string& id) {
  std::lock_guard lock(mu_);
  auto it = pending_.find(id);
  if (it == pending_.end()) return std::nullopt;
  Pending p = std::move(it->second);
  pending_order_.erase(p.seq);
  pending_.erase(it);
  return p;
}

// A Begin this instance did not see (another instance behind the same load balancer issued
// it, or this one restarted since): the challenge row holds what Begin checked, and the EK
// key id and AK Name follow from the public areas as they did there. The answer is then
// checked exactly as for a remembered Begin; CompleteAuthentication consumes the row.
Result<Authenticator::Pending> Authenticator::PendingFromVault(const std::string& id) {
  auto c = vault_->GetChallenge(id, storage::ChallengeKind::kAuthenticate, env_->NowUnixSeconds());
  if (!c && (c.error().code() == Code::kNotFound || c.error().code() == Code::kUnauthenticated)) {
    return Error(Code::kUnauthenticated,
                 "unknown or already used challenge: start Authenticate again");
  }
  if (!c) return Error(c.error());
  ByteView rest = c->associated_data;
  std::optional<Bytes> ak_public = ReadLv(rest);
  std::optional<Bytes> ek_public = ReadLv(rest);
  std::optional<Bytes> ek_certificate = ReadLv(rest);
  if (!ak_public || !ek_public || !ek_certificate || !rest.empty()) {
    // A row written before challenges carried the certificate: answer again.
    return Error(Code::kUnauthenticated,
                 "challenge issued by an older MA version: start Authenticate again");
  }
  TPMMA_ASSIGN_OR_RETURN(TPM2B_PUBLIC ek, tpm::Unmarshal<TPM2B_PUBLIC>(*ek_public));
  TPMMA_ASSIGN_OR_RETURN(TPM2B_PUBLIC ak, tpm::Unmarshal<TPM2B_PUBLIC>(*ak_public));
  Identity who{.platform_id = c->platform_id,
               .ek_public = std::move(*ek_public),
               .ek_certificate = std::move(*ek_certificate),
               .ek_key_id = {},
               .ak_public = std::move(*ak_public),
               .ak_name = {}};
  TPMMA_ASSIGN_OR_RETURN(who.ek_key_id, EkKeyId(ek.publicArea));
  TPMMA_ASSIGN_OR_RETURN(who.ak_name, tpm::ComputeName(ak.publicArea));
  Pending p;
  p.identity = std::make_shared<const Identity>(std::move(who));
  p.nonce = c->nonce;
  p.expires_at = c->expires_at;
  return p;
}

Result<EnrollmentPolicy> ParseEnrollmentPolicy(std::string_view text) {
  if (text == "open") return EnrollmentPolicy::kOpen;
  if (text == "registered") return EnrollmentPolicy::kRegistered;
  if (text == "approve-first") return EnrollmentPolicy::kApproveFirst;
  return Error(Code::kInvalidArgument,
               fmt::format("enrollment policy must be \"open\", \"registered\" or "
                           "\"approve-first\", got \"{}\"",
                           text));
}

std::string_view EnrollmentPolicyName(EnrollmentPolicy policy) {
  switch (policy) {
    case EnrollmentPolicy::kOpen:
      return "open";
    case EnrollmentPolicy::kRegistered:
      return "registered";
    case EnrollmentPolicy::kApproveFirst:
      return "approve-first";
  }
  return "?";
}

Status Authenticator::CheckRegistered(const std::string& platform_id, ByteView ek_key_id,
                                      ByteView ek_certificate) {
  if (options_.enrollment != EnrollmentPolicy::kRegistered) return Status::Ok();
  const Bytes cert_hash = Sha256(ek_certificate);
  auto found = vault_->FindRegistration(ek_key_id, cert_hash);
  if (found) return Status::Ok();
  if (found.error().code() != Code::kNotFound) return found.error();
  return Status(
      Code::kPermissionDenied,
      fmt::format("enrollment policy \"registered\": platform {} is not registered with this MA; "
                  "an administrator must register it first with `ma-admin platforms register "
                  "--ek-public FILE` or `--ek-cert FILE` (EK key id {}, EK certificate SHA-256 {})",
                  platform_id, HexEncode(ek_key_id), HexEncode(cert_hash)));
}

Status Authenticator::CheckNoCertificate(const std::string& platform_id, ByteView ek_key_id) {
  const std::string what_to_do = fmt::format(
      "send the TPM's EK certificate (lms reads it from NV; give it with `lms --ek-cert FILE` "
      "or fetch it from the vendor with `lms ek fetch`), or have the administrator set "
      "`[enrollment] policy = registered` and register this EK public with `ma-admin platforms "
      "register --ek-public FILE` (`lms ek public --out FILE` writes it; EK key id {})",
      HexEncode(ek_key_id));
  if (options_.enrollment != EnrollmentPolicy::kRegistered) {
    return Status(Code::kPermissionDenied,
                  fmt::format("platform {} sent no EK certificate: under the enrollment policy "
                              "\"{}\" an EK certificate is required; {}",
                              platform_id, EnrollmentPolicyName(options_.enrollment), what_to_do));
  }
  // The EK key id only: no certificate hash can be looked up, none was sent.
  auto found = vault_->FindRegistration(ek_key_id, {});
  if (found && found->kind == storage::RegistrationKind::kEkKeyId) return Status::Ok();
  if (!found && found.error().code() != Code::kNotFound) return found.error();
  return Status(Code::kPermissionDenied,
                fmt::format("platform {} sent no EK certificate and its EK public is not "
                            "registered with this MA (a registration by EK certificate cannot "
                            "admit a TPM without one); {}",
                            platform_id, what_to_do));
}

Result<BeginResult> Authenticator::Begin(const BeginRequest& sent) {
  TPMMA_ASSIGN_OR_RETURN(TPM2B_PUBLIC ek, tpm::Unmarshal<TPM2B_PUBLIC>(sent.ek_public));
  TPMMA_ASSIGN_OR_RETURN(TPM2B_PUBLIC ak, tpm::Unmarshal<TPM2B_PUBLIC>(sent.ak_public));
  TPMMA_ASSIGN_OR_RETURN(Bytes ek_name, tpm::ComputeName(ek.publicArea));
  BeginResult out;
  out.platform_id = HexEncode(ek_name);
  BeginRequest request = sent;
  const bool no_certificate = sent.ek_certificate.empty();
  if (no_certificate && !sent.ek_intermediates.empty()) {
    return Error(Code::kInvalidArgument, "EKIntermediateCertificate sent without an EKCertificate");
  }
  if (!no_certificate) {
    // The certificate as read from NV: from here on without the padding after its DER length.
    TPMMA_ASSIGN_OR_RETURN(request.ek_certificate, TrimEkCertificatePadding(sent.ek_certificate));
    TPMMA_RETURN_IF_ERROR(VerifyEkCertificate(request, ek.publicArea));
  }
  // One TPM, one platform: only the EK templates, so the same key cannot come back under
  // another public area (another Name, another platform id). With or without a certificate.
  TPMMA_RETURN_IF_ERROR(tpm::CheckEkTemplate(ek.publicArea, options_.ek_templates));
  TPMMA_ASSIGN_OR_RETURN(Bytes ek_key_id, EkKeyId(ek.publicArea));
  if (no_certificate) {
    TPMMA_RETURN_IF_ERROR(CheckNoCertificate(out.platform_id, ek_key_id));
  } else {
    TPMMA_RETURN_IF_ERROR(CheckRegistered(out.platform_id, ek_key_id, request.ek_certificate));
  }
  TPMMA_RETURN_IF_ERROR(tpm::CheckAkAttributes(ak.publicArea));
  // The AK Name binds the credential: computed here, never taken from the client.
  TPMMA_ASSIGN_OR_RETURN(Bytes ak_name, tpm::ComputeName(ak.publicArea));

  TPMMA_ASSIGN_OR_RETURN(Bytes secret_plain, RandomBytes(kSecretBytes));
  SecureBytes secret(secret_plain.begin(), secret_plain.end());
  Wipe(secret_plain.data(), secret_plain.size());
  TPMMA_ASSIGN_OR_RETURN(tpm::Credential cred, tpm::MakeCredential(ek, ak_name, secret));
  TPMMA_ASSIGN_OR_RETURN(out.challenge_id, RandomBytes(kIdBytes));
  TPMMA_ASSIGN_OR_RETURN(out.nonce, RandomBytes(kIdBytes));
  TPMMA_ASSIGN_OR_RETURN(out.credential_blob, tpm::Marshal(cred.id_object));
  TPMMA_ASSIGN_OR_RETURN(out.encrypted_secret, tpm::Marshal(cred.encrypted_secret));
  // Only the hash of the expected proof is stored: a vault dump cannot answer a challenge.
  TPMMA_ASSIGN_OR_RETURN(SecureBytes proof, HmacSha256(secret, out.challenge_id));

  const int64_t now = env_->NowUnixSeconds();
  out.expires_at = now + options_.challenge_ttl_s;
  storage::Challenge c;
  c.id = HexEncode(out.challenge_id);
  c.kind = storage::ChallengeKind::kAuthenticate;
  c.platform_id = out.platform_id;
  c.expected_hash = Sha256(proof);
  c.nonce = out.nonce;
  // What Complete needs if another instance answers it (PendingFromVault).
  WriteLv(c.associated_data, request.ak_public);
  WriteLv(c.associated_data, request.ek_public);
  WriteLv(c.associated_data, request.ek_certificate);
  c.created_at = now;
  c.expires_at = out.expires_at;
  storage::AuditEvent audit{
      now,
      out.platform_id,
      "Authenticate.Begin",
      out.platform_id,
      "ok",
      no_certificate ? "challenge issued; no EK certificate: EK public registered (policy "
                       "registered, EK key id " +
                           HexEncode(ek_key_id) + ")"
                     : "challenge issued"};
  TPMMA_RETURN_IF_ERROR(vault_->CreateChallenge(c, audit));

  Pending p;
  p.nonce = out.nonce;
  p.expires_at = out.expires_at;
  Bytes identity_key_bytes;
  WriteLv(identity_key_bytes, request.ek_public);
  WriteLv(identity_key_bytes, request.ek_certificate);
  WriteLv(identity_key_bytes, request.ak_public);
  Bytes identity_key = Sha256(identity_key_bytes);
  Remember(
      c.id, std::string(identity_key.begin(), identity_key.end()),
      [&] {
        return Identity{out.platform_id,      request.ek_public, request.ek_certificate,
                        std::move(ek_key_id), request.ak_public, std::move(ak_name)};
      },
      std::move(p));
  return out;
}

Result<CompleteResult> Authenticator::Complete(const CompleteRequest& request,
                                               std::string* platform_id) {
  const std::string id = HexEncode(request.challenge_id);
  std::optional<Pending> p = Take(id);
  if (!p) {
    TPMMA_ASSIGN_OR_RETURN(p, PendingFromVault(id));
  }
  const Identity& who = *p->identity;
  *platform_id = who.platform_id;
  const int64_t now = env_->NowUnixSeconds();

  TPMMA_ASSIGN_OR_RETURN(TPM2B_PUBLIC ak, tpm::Unmarshal<TPM2B_PUBLIC>(who.ak_public));
  std::optional<Bytes> signing_key;
  if (request.signing_key) {
    TPMMA_ASSIGN_OR_RETURN(TPM2B_PUBLIC key, VerifyCertifiedKey(*request.signing_key, ak, p->nonce,
                                                                "PackageSigningKey"));
    TPMMA_RETURN_IF_ERROR(CheckSigningKeyAttributes(key.publicArea));
    signing_key = request.signing_key->public_area;
  }
  std::optional<Bytes> srk;
  if (request.srk) {
    TPMMA_ASSIGN_OR_RETURN(TPM2B_PUBLIC key,
                           VerifyCertifiedKey(*request.srk, ak, p->nonce, "StorageRootKey"));
    TPMMA_RETURN_IF_ERROR(
        tpm::CheckStorageParent(key.publicArea).WithContext("StorageRootKey is not a storage key"));
    srk = request.srk->public_area;
  }

  TPMMA_ASSIGN_OR_RETURN(Bytes token_bytes, RandomBytes(32));
  CompleteResult out;
  {
    std::string t = Base64Url(token_bytes);
    out.token.assign(t.begin(), t.end());
    Wipe(t.data(), t.size());
    Wipe(token_bytes.data(), token_bytes.size());
  }
  out.platform_id = who.platform_id;
  out.expires_at = now + options_.session_ttl_s;

  storage::AuthCompletion a;
  a.challenge_id = id;
  a.proof_hash = Sha256(request.proof);
  a.now = now;
  a.platform.id = who.platform_id;
  a.platform.ek_public = who.ek_public;
  a.platform.ek_certificate = who.ek_certificate;
  a.platform.ek_key_id = who.ek_key_id;
  a.platform.ak_public = who.ak_public;
  a.platform.ak_name = who.ak_name;
  a.platform.signing_key_public = signing_key;
  a.platform.srk_public = srk;
  a.platform.srk_certified_at = srk ? now : 0;
  a.platform.created_at = now;
  a.platform.last_seen_at = now;
  a.inventory = request.inventory;  // informational; stored only with a proven Complete
  a.session.token_hash = TokenHash(std::string_view(out.token.data(), out.token.size()));
  a.session.platform_id = who.platform_id;
  a.session.created_at = now;
  a.session.expires_at = out.expires_at;
  a.audit = storage::AuditEvent{now,
                                who.platform_id,
                                "Authenticate.Complete",
                                who.platform_id,
                                "ok",
                                CompleteDetail(signing_key.has_value(), srk.has_value())};
  // approve-first: a platform not yet stored is stored pending and gets no session.
  a.enroll_pending = options_.enrollment == EnrollmentPolicy::kApproveFirst;
  a.pending_audit = storage::AuditEvent{
      now,
      who.platform_id,
      "Authenticate.Complete",
      who.platform_id,
      "pending",
      "enrollment policy approve-first: platform stored pending, awaiting an operator"};
  a.pending_message = fmt::format(
      "platform {} awaits an operator: under the enrollment policy \"approve-first\" an "
      "operator must accept it with `ma-admin platforms accept {}` before it can authenticate",
      who.platform_id, who.platform_id);
  TPMMA_RETURN_IF_ERROR(vault_->CompleteAuthentication(a));
  return out;
}

Result<storage::Session> Authenticator::CheckSession(std::string_view token) {
  auto s = vault_->GetSession(TokenHash(token), env_->NowUnixSeconds());
  if (!s && s.error().code() == Code::kNotFound) {
    return Error(Code::kUnauthenticated, "unknown session token: Authenticate first");
  }
  if (!s && s.error().code() == Code::kExpired) {
    return Error(Code::kExpired, "session expired: Authenticate again");
  }
  return s;
}

}  // namespace tpmma::server
