// SPDX-License-Identifier: GPL-2.0-or-later
// Platform authentication (docs/protocol.md, "Authenticate"): EK certificate chain, AK checks,
// software MakeCredential, one-time challenges, optional package-signing key certified by
// the AK, and session tokens. Secrets (credential secret, expected proof, token) live in
// SecureBytes and never reach the vault, a log line or a fault: the vault stores hashes.
#pragma once

#include <cstdint>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include <tss2/tss2_tpm2_types.h>

#include "common/bytes.h"
#include "common/env.h"
#include "common/openssl.h"
#include "common/status.h"
#include "server/ek_trust.h"
#include "storage/vault.h"
#include "tpm/ek_templates.h"

namespace tpmma::server {

// [enrollment] policy (docs/operations.md, "Enrollment policy"): which platforms whose EK
// chains to a trusted root may enroll.
enum class EnrollmentPolicy {
  kOpen,          // any of them (the default)
  kRegistered,    // only those an administrator registered (`ma-admin platforms register`)
  kApproveFirst,  // a first Authenticate stores the platform pending, until an operator accepts it
};
// "open", "registered", "approve-first"; kInvalidArgument otherwise.
Result<EnrollmentPolicy> ParseEnrollmentPolicy(std::string_view text);
std::string_view EnrollmentPolicyName(EnrollmentPolicy policy);

struct AuthOptions {
  std::vector<std::string> ek_roots;  // PEM files or directories of PEM files
  // The intermediate pool (server/ek_trust.h): untrusted helpers for path building.
  std::vector<std::string> ek_intermediates;
  // EK publics accepted besides the TCG default EK templates (trust.ek_templates).
  std::vector<tpm::EkTemplate> ek_templates;
  uint32_t challenge_ttl_s = 120;
  uint32_t session_ttl_s = 900;
  // Begin requests remembered until their Complete; the oldest are dropped beyond this
  // (their Complete then fails with Unauthenticated), so a Begin flood cannot exhaust memory.
  size_t max_pending_challenges = 20000;
  // EK certificate chains already verified, remembered by the SHA-256 of (EK public, EK
  // certificate, intermediates) with the time window in which every certificate of the
  // verified chain is valid. In OpenSSL 3.0 parsing the certificates and checking the
  // chain is most of what a Begin costs; a platform authenticating again, or a Begin flood
  // repeating one platform, skips it while the window holds. Least recently used entries
  // go beyond this (about 100 bytes each); 0 turns the cache off. Only successes are kept.
  size_t ek_cache_entries = 4096;
  EnrollmentPolicy enrollment = EnrollmentPolicy::kOpen;
};

struct BeginRequest {
  Bytes ek_public;       // TPM2B_PUBLIC
  Bytes ek_certificate;  // empty: the TPM has none (accepted only as CheckNoCertificate says)
  std::vector<Bytes> ek_intermediates;
  Bytes ak_public;  // TPM2B_PUBLIC
};

struct BeginResult {
  std::string platform_id;
  Bytes challenge_id;
  Bytes credential_blob;   // TPM2B_ID_OBJECT
  Bytes encrypted_secret;  // TPM2B_ENCRYPTED_SECRET
  Bytes nonce;
  int64_t expires_at = 0;
};

// A key of the platform's TPM (the package-signing key, the SRK) with TPM2_Certify by the
// AK over the challenge's nonce: the MA learns the key lives in the TPM whose EK it checked.
struct CertifiedKeyProof {
  Bytes public_area;        // TPM2B_PUBLIC
  Bytes certify_info;       // TPM2B_ATTEST
  Bytes certify_signature;  // TPMT_SIGNATURE
};

struct CompleteRequest {
  Bytes challenge_id;
  Bytes proof;
  std::optional<CertifiedKeyProof> signing_key;
  std::optional<CertifiedKeyProof> srk;  // the parent a Download re-wraps to
  // What the platform says about itself (checked by the caller: storage::CheckPlatformInventory).
  std::optional<storage::PlatformInventory> inventory;
};

struct CompleteResult {
  std::string platform_id;
  SecureString token;
  int64_t expires_at = 0;
};

// Splits a TPM2B_ATTEST into the TPMS_ATTEST bytes the AK signed.
Result<Bytes> AttestBody(ByteView tpm2b_attest);

// The key `proof` names, once the AK's TPM2_Certify of it over `nonce` verifies; refusals
// start with "`what` certification: ".
Result<TPM2B_PUBLIC> VerifyCertifiedKey(const CertifiedKeyProof& proof, const TPM2B_PUBLIC& ak,
                                        ByteView nonce, std::string_view what);

// Package-signing key: a TPM key (fixedTPM|fixedParent|sensitiveDataOrigin) that can only
// sign (sign set, decrypt and restricted clear, so it cannot forge TPM attestations).
Status CheckSigningKeyAttributes(const TPMT_PUBLIC& key);

class Authenticator {
 public:
  static Result<std::unique_ptr<Authenticator>> Create(const AuthOptions& options,
                                                       storage::Vault* vault, Env* env);

  // Round one; the actor in the audit event is the platform id computed from the EK. The EK
  // public must be a TCG EK template or one of AuthOptions::ek_templates; the certificate
  // may carry NV padding after its DER length (TrimEkCertificatePadding).
  Result<BeginResult> Begin(const BeginRequest& sent);
  // Round two. *platform_id is filled as soon as it is known (for audit of refusals).
  Result<CompleteResult> Complete(const CompleteRequest& request, std::string* platform_id);
  // The session for a bearer token: kUnauthenticated (unknown) or kExpired.
  Result<storage::Session> CheckSession(std::string_view token);

  static Bytes TokenHash(std::string_view token);

 private:
  // What the platform row needs from a Begin. Shared by every pending Begin with the same
  // EK, certificate and AK (a platform retrying, a Begin flood), so that the cap on pending
  // Begins bounds memory at ~100 bytes each plus one Identity per distinct platform.
  struct Identity {
    std::string platform_id;
    Bytes ek_public;
    Bytes ek_certificate;  // without NV padding
    Bytes ek_key_id;       // server/ek_identity.h EkKeyId
    Bytes ak_public;
    Bytes ak_name;
  };
  struct Pending {
    std::shared_ptr<const Identity> identity;
    Bytes nonce;
    int64_t expires_at = 0;
    uint64_t seq = 0;
  };

  Authenticator(const AuthOptions& options, storage::Vault* vault, Env* env,
                std::unique_ptr<EkTrust> trust)
      : options_(options), vault_(vault), env_(env), trust_(std::move(trust)) {}

  Status VerifyEkCertificate(const BeginRequest& request, const TPMT_PUBLIC& ek);
  // The "registered" policy: kPermissionDenied unless the EK key id or the certificate's
  // SHA-256 is registered. Every Begin, not only a platform's first.
  Status CheckRegistered(const std::string& platform_id, ByteView ek_key_id,
                         ByteView ek_certificate);
  // A Begin without an EK certificate: only under the "registered" policy, and only for an
  // EK key id registered from its EK public (`ma-admin platforms register --ek-public`); a
  // registration by certificate hash cannot match. kPermissionDenied saying what to do.
  Status CheckNoCertificate(const std::string& platform_id, ByteView ek_key_id);
  // The cache of verified EK chains (see AuthOptions::ek_cache_entries).
  static std::string EkCacheKey(const BeginRequest& request);
  bool EkCacheHit(const std::string& key, int64_t now);
  void EkCacheRemember(const std::string& key, int64_t not_before, int64_t not_after);
  // `identity_key` names the identity's bytes; `make` builds it when no pending Begin
  // shares it yet.
  void Remember(const std::string& id, const std::string& identity_key,
                const std::function<Identity()>& make, Pending pending);
  std::optional<Pending> Take(const std::string& id);
  Result<Pending> PendingFromVault(const std::string& id);

  AuthOptions options_;
  storage::Vault* vault_;
  Env* env_;
  std::unique_ptr<EkTrust> trust_;  // roots and intermediate pool, fixed at start-up

  // Begin data waiting for Complete, by challenge id (hex). The vault holds the
  // authoritative one-time challenge; this only carries the EK/AK the platform row needs.
  std::mutex mu_;
  std::unordered_map<std::string, Pending> pending_;
  std::map<uint64_t, std::string> pending_order_;
  uint64_t next_seq_ = 0;
  // Identities of pending Begins; entries whose last Pending is gone are swept.
  std::unordered_map<std::string, std::weak_ptr<const Identity>> identities_;

  struct VerifiedEk {
    int64_t not_before = 0;  // the verification holds while not_before <= now <= not_after
    int64_t not_after = 0;
    std::list<std::string>::iterator lru;
  };
  std::mutex ek_mu_;
  std::unordered_map<std::string, VerifiedEk> ek_cache_;  // guarded by ek_mu_
  std::list<std::string> ek_lru_;                         // most recently used first
};

}  // namespace tpmma::server
