// SPDX-License-Identifier: GPL-2.0-or-later
#include "storage/vault.h"

#include <openssl/evp.h>

#include "common/openssl.h"

namespace tpmma::storage {
namespace {

void PutU64(Bytes& out, uint64_t v) {
  for (int i = 7; i >= 0; --i) out.push_back(static_cast<uint8_t>(v >> (8 * i)));
}

// Length-prefixed so that moving bytes between adjacent fields changes the hash.
void PutField(Bytes& out, ByteView field) {
  PutU64(out, field.size());
  out.insert(out.end(), field.begin(), field.end());
}

}  // namespace

Result<Bytes> AuditRecordHash(int64_t seq, const AuditEvent& event, ByteView prev_hash) {
  Bytes encoded;
  PutField(encoded, View("tpm-ma audit v1"));
  PutU64(encoded, static_cast<uint64_t>(seq));
  PutU64(encoded, static_cast<uint64_t>(event.time));
  PutField(encoded, View(event.actor));
  PutField(encoded, View(event.action));
  PutField(encoded, View(event.object));
  PutField(encoded, View(event.outcome));
  PutField(encoded, View(event.detail));
  PutField(encoded, prev_hash);
  Bytes digest(EVP_MAX_MD_SIZE);
  unsigned int len = 0;
  if (EVP_Digest(encoded.data(), encoded.size(), digest.data(), &len, EVP_sha256(), nullptr) != 1) {
    return Error(OpensslError("EVP_Digest(SHA-256) for audit record"));
  }
  digest.resize(len);
  return digest;
}

std::string_view ToString(PlatformState v) {
  switch (v) {
    case PlatformState::kActive:
      return "active";
    case PlatformState::kRevoked:
      return "revoked";
    case PlatformState::kPending:
      return "pending";
  }
  return "?";
}
std::string_view ToString(RegistrationKind v) {
  return v == RegistrationKind::kEkKeyId ? "ek-key-id" : "ek-cert-sha256";
}
std::string_view ToString(ChallengeKind v) {
  return v == ChallengeKind::kAuthenticate ? "authenticate" : "download-nonce";
}
std::string_view ToString(CustodyMode v) {
  return v == CustodyMode::kRecoveryCode ? "recovery-code" : "escrow";
}
std::string_view ToString(ApprovalState v) {
  switch (v) {
    case ApprovalState::kPending:
      return "pending";
    case ApprovalState::kActive:
      return "active";
    case ApprovalState::kUsed:
      return "used";
    case ApprovalState::kRevoked:
      return "revoked";
  }
  return "?";
}
std::string_view ToString(OperatorRole v) {
  switch (v) {
    case OperatorRole::kHelpdesk:
      return "helpdesk";
    case OperatorRole::kAuditor:
      return "auditor";
    case OperatorRole::kAdmin:
      return "admin";
  }
  return "?";
}

}  // namespace tpmma::storage
