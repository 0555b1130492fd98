// SPDX-License-Identifier: GPL-2.0-or-later
// Signed checkpoints of the audit log's head: the anchor outside the vault that the hash
// chain alone lacks (docs/reliability.md, "The audit chain"). A checkpoint says "vault V
// had record S with hash H" and is signed by the checkpoint key, a P-256 key in its own
// file that the vault never holds; whoever can rewrite the vault file cannot make one. Kept
// elsewhere (a log host, a ticket, a printout), a checkpoint proves that no record up to S
// was changed, removed or inserted, and that the log was not cut below S.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <stop_token>
#include <string>
#include <string_view>
#include <thread>

#include "common/bytes.h"
#include "common/env.h"
#include "common/openssl.h"
#include "common/status.h"
#include "storage/vault.h"

namespace tpmma::server {

struct AuditCheckpoint {
  Bytes vault_id;    // 16 bytes, from the vault's genesis
  int64_t seq = 0;   // the head record's seq
  Bytes head_hash;   // its hash
  int64_t time = 0;  // when signed
  Bytes key_id;      // SHA-256 of the signing key's SubjectPublicKeyInfo
  Bytes signature;   // ECDSA-SHA256 (DER) over CheckpointSignedBytes
};

// SHA-256 of the key's SubjectPublicKeyInfo (DER).
Result<Bytes> CheckpointKeyId(const EVP_PKEY* key);

// The JSON text of a checkpoint of `head`, signed now with `key`.
Result<std::string> SignCheckpoint(const storage::AuditHead& head, int64_t now, EVP_PKEY* key);

// Parses a checkpoint file and checks its signature with `public_key`: kInvalidArgument
// for a file that is not a checkpoint, kSignatureInvalid for another key or a bad signature.
Result<AuditCheckpoint> ReadCheckpoint(std::string_view text, const EVP_PKEY* public_key);

struct CheckpointVerdict {
  int64_t seq = 0;
  int64_t records_after = 0;  // appended since the checkpoint
};

// The vault's chain checks (Vault::CheckAuditChain) and agrees with the checkpoint: same
// vault, the log reaches seq, record seq (or the archived segment ending there) has the
// signed hash. kCorruption naming what differs.
Result<CheckpointVerdict> VerifyAgainstCheckpoint(storage::Vault& vault, const AuditCheckpoint& cp);

// The checkpoint key files: a new P-256 key (0600) and its public key (PEM, 0644); never
// over existing files. Loading checks the private key's mode like every MA key.
Status CreateCheckpointKey(const std::string& private_path, const std::string& public_path,
                           Env* env);
Result<EvpPkeyPtr> LoadCheckpointKey(const std::string& private_path, Env* env);
Result<EvpPkeyPtr> LoadCheckpointPublicKey(const std::string& path, Env* env);

// Writes DIR/checkpoint-<seq>.json for the head; returns its path.
Result<std::string> WriteCheckpoint(storage::Vault& vault, EVP_PKEY* key, const std::string& dir,
                                    Env* env);

// ma-server's scheduled checkpoints: one at start, one every interval when the head has
// moved, one at shutdown. Failures are logged and retried next interval.
class AuditCheckpointer {
 public:
  AuditCheckpointer(storage::Vault* vault, EvpPkeyPtr key, std::string dir, int64_t interval_s,
                    Env* env);
  ~AuditCheckpointer();  // writes the last checkpoint
  AuditCheckpointer(const AuditCheckpointer&) = delete;
  AuditCheckpointer& operator=(const AuditCheckpointer&) = delete;

 private:
  void Loop(std::stop_token stop);
  void WriteIfMoved();

  storage::Vault* vault_;
  EvpPkeyPtr key_;
  std::string dir_;
  int64_t interval_s_;
  Env* env_;
  int64_t last_seq_ = -1;
  std::mutex mu_;
  std::condition_variable_any cv_;
  std::jthread thread_;  // last: stopped first
};

}  // namespace tpmma::server
