// SPDX-License-Identifier: GPL-2.0-or-later
// Platform authentication (DESIGN 4.1, docs/protocol.md): EK certificate chain, AK checks,
// software MakeCredential, one-time challenges, optional package-signing key certified by
// the AK, and session tokens. Secrets (credential secret, expected proof, token) live in
// SecureBytes and never reach the vault, a log line or a fault: the vault stores hashes.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include <tss2/tss2_tpm2_types.h>

#include "common/bytes.h"
#include "common/env.h"
#include "common/openssl.h"
#include "common/status.h"
#include "storage/vault.h"

namespace tpmma::server {

struct AuthOptions {
  std::vector<std::string> ek_roots;  // PEM files or directories of PEM files
  uint32_t challenge_ttl_s = 120;
  uint32_t session_ttl_s = 900;
  // Begin requests remembered until their Complete; the oldest are dropped beyond this
  // (their Complete then fails with Unauthenticated), so a Begin flood cannot exhaust memory.
  size_t max_pending_challenges = 20000;
};

struct BeginRequest {
  Bytes ek_public;  // TPM2B_PUBLIC
  Bytes ek_certificate;
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

struct SigningKeyProof {
  Bytes public_area;        // TPM2B_PUBLIC
  Bytes certify_info;       // TPM2B_ATTEST
  Bytes certify_signature;  // TPMT_SIGNATURE
};

struct CompleteRequest {
  Bytes challenge_id;
  Bytes proof;
  std::optional<SigningKeyProof> signing_key;
};

struct CompleteResult {
  std::string platform_id;
  SecureString token;
  int64_t expires_at = 0;
};

// Splits a TPM2B_ATTEST into the TPMS_ATTEST bytes the AK signed.
Result<Bytes> AttestBody(ByteView tpm2b_attest);

// Package-signing key: a TPM key (fixedTPM|fixedParent|sensitiveDataOrigin) that can only
// sign (sign set, decrypt and restricted clear, so it cannot forge TPM attestations).
Status CheckSigningKeyAttributes(const TPMT_PUBLIC& key);

class Authenticator {
 public:
  static Result<std::unique_ptr<Authenticator>> Create(const AuthOptions& options,
                                                       storage::Vault* vault, Env* env);

  // Round one; the actor in the audit event is the platform id computed from the EK.
  Result<BeginResult> Begin(const BeginRequest& request);
  // Round two. *platform_id is filled as soon as it is known (for audit of refusals).
  Result<CompleteResult> Complete(const CompleteRequest& request, std::string* platform_id);
  // The session for a bearer token: kUnauthenticated (unknown) or kExpired.
  Result<storage::Session> CheckSession(std::string_view token);

  static Bytes TokenHash(std::string_view token);

 private:
  struct Pending {
    std::string platform_id;
    Bytes ek_public;
    Bytes ek_certificate;
    Bytes ak_public;
    Bytes ak_name;
    Bytes nonce;
    int64_t expires_at = 0;
    uint64_t seq = 0;
  };

  Authenticator(const AuthOptions& options, storage::Vault* vault, Env* env, X509StorePtr roots)
      : options_(options), vault_(vault), env_(env), roots_(std::move(roots)) {}

  Status VerifyEkCertificate(const BeginRequest& request, const TPMT_PUBLIC& ek) const;
  void Remember(const std::string& id, Pending pending);
  std::optional<Pending> Take(const std::string& id);

  AuthOptions options_;
  storage::Vault* vault_;
  Env* env_;
  X509StorePtr roots_;

  // Begin data waiting for Complete, by challenge id (hex). The vault holds the
  // authoritative one-time challenge; this only carries the EK/AK the platform row needs.
  std::mutex mu_;
  std::map<std::string, Pending> pending_;
  std::map<uint64_t, std::string> pending_order_;
  uint64_t next_seq_ = 0;
};

}  // namespace tpmma::server
