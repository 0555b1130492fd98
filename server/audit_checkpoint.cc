// SPDX-License-Identifier: GPL-2.0-or-later
#include "server/audit_checkpoint.h"

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/sha.h>
#include <openssl/x509.h>

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <chrono>
#include <nlohmann/json.hpp>

#include "common/text.h"
#include "server/key_files.h"
#include "server/pki.h"

namespace tpmma::server {
namespace {

using json = nlohmann::json;

constexpr std::string_view kFormat = "tpm-ma audit checkpoint 1";
constexpr size_t kMaxCheckpointBytes = 4096;

void PutU64(Bytes* out, int64_t v) {
  for (int shift = 56; shift >= 0; shift -= 8) {
    out->push_back(static_cast<uint8_t>(static_cast<uint64_t>(v) >> shift));
  }
}

// Domain-separated and fixed-length but for the format string: no field can be moved
// into another, and a checkpoint can never be read as any other signed object of ours.
Bytes SignedBytes(const AuditCheckpoint& cp) {
  Bytes b(kFormat.begin(), kFormat.end());
  b.push_back(0);
  b.insert(b.end(), cp.vault_id.begin(), cp.vault_id.end());
  PutU64(&b, cp.seq);
  b.insert(b.end(), cp.head_hash.begin(), cp.head_hash.end());
  PutU64(&b, cp.time);
  b.insert(b.end(), cp.key_id.begin(), cp.key_id.end());
  return b;
}

Result<Bytes> Sign(EVP_PKEY* key, ByteView data) {
  return SignSha256(key, data, "audit checkpoint");
}

bool Verify(const EVP_PKEY* key, ByteView data, ByteView sig) {
  EvpMdCtxPtr ctx(EVP_MD_CTX_new());
  return ctx &&
         EVP_DigestVerifyInit(ctx.get(), nullptr, EVP_sha256(), nullptr,
                              const_cast<EVP_PKEY*>(key)) == 1 &&
         EVP_DigestVerify(ctx.get(), sig.data(), sig.size(), data.data(), data.size()) == 1;
}

Result<Bytes> HexField(const json& j, const char* name, size_t size) {
  if (!j.contains(name) || !j[name].is_string()) {
    return Error(Code::kInvalidArgument, fmt::format("audit checkpoint: no \"{}\"", name));
  }
  auto bytes = HexDecode(j[name].get<std::string>());
  if (!bytes || (size != 0 && bytes->size() != size)) {
    return Error(Code::kInvalidArgument,
                 fmt::format("audit checkpoint: \"{}\" is not {}hex", name,
                             size != 0 ? fmt::format("{} bytes of ", size) : ""));
  }
  return bytes;
}

Result<int64_t> IntField(const json& j, const char* name) {
  if (!j.contains(name) || !j[name].is_number_integer() || j[name].get<int64_t>() < 0) {
    return Error(Code::kInvalidArgument,
                 fmt::format("audit checkpoint: \"{}\" is not a count", name));
  }
  return j[name].get<int64_t>();
}

Result<AuditCheckpoint> ParseFields(std::string_view text) {
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object() || !j.contains("format") || j["format"] != kFormat) {
    return Error(Code::kInvalidArgument,
                 fmt::format("not an audit checkpoint (expected \"format\": \"{}\")", kFormat));
  }
  AuditCheckpoint cp;
  TPMMA_ASSIGN_OR_RETURN(cp.vault_id, HexField(j, "vault_id", 16));
  TPMMA_ASSIGN_OR_RETURN(cp.seq, IntField(j, "seq"));
  TPMMA_ASSIGN_OR_RETURN(cp.head_hash, HexField(j, "head_hash", 32));
  TPMMA_ASSIGN_OR_RETURN(cp.time, IntField(j, "time"));
  TPMMA_ASSIGN_OR_RETURN(cp.key_id, HexField(j, "key_id", 32));
  TPMMA_ASSIGN_OR_RETURN(cp.signature, HexField(j, "signature", 0));
  return cp;
}

// An archived checkpoint seq is checked against the segment that ends there.
Status CheckArchivedSeq(storage::Vault& vault, const AuditCheckpoint& cp) {
  TPMMA_ASSIGN_OR_RETURN(auto segments, vault.ListAuditSegments());
  for (const storage::AuditSegment& s : segments) {
    if (s.last_seq != cp.seq) continue;
    if (s.last_hash == cp.head_hash) return Status::Ok();
    return Status(
        Code::kCorruption,
        fmt::format("archived segment ending at seq {} does not end in the checkpoint's hash",
                    cp.seq));
  }
  return Status(Code::kNotFound,
                fmt::format("record {} has been archived; verify this checkpoint against the "
                            "archive file (ma-admin audit verify-archive)",
                            cp.seq));
}

}  // namespace

Result<Bytes> CheckpointKeyId(const EVP_PKEY* key) {
  unsigned char* der = nullptr;
  int n = i2d_PUBKEY(const_cast<EVP_PKEY*>(key), &der);
  if (n <= 0) return Error(OpensslError("i2d_PUBKEY"));
  Bytes out(SHA256_DIGEST_LENGTH);
  SHA256(der, static_cast<size_t>(n), out.data());
  OPENSSL_free(der);
  return out;
}

Result<std::string> SignCheckpoint(const storage::AuditHead& head, int64_t now, EVP_PKEY* key) {
  AuditCheckpoint cp{head.vault_id, head.seq, head.hash, now, {}, {}};
  TPMMA_ASSIGN_OR_RETURN(cp.key_id, CheckpointKeyId(key));
  TPMMA_ASSIGN_OR_RETURN(cp.signature, Sign(key, SignedBytes(cp)));
  json j = {{"format", kFormat},
            {"vault_id", HexEncode(cp.vault_id)},
            {"seq", cp.seq},
            {"head_hash", HexEncode(cp.head_hash)},
            {"time", cp.time},
            {"time_utc", Utc(cp.time)},  // for people; the signature covers "time"
            {"key_id", HexEncode(cp.key_id)},
            {"signature", HexEncode(cp.signature)}};
  return j.dump(2) + "\n";
}

Result<AuditCheckpoint> ReadCheckpoint(std::string_view text, const EVP_PKEY* public_key) {
  if (text.size() > kMaxCheckpointBytes) {
    return Error(Code::kInvalidArgument, "not an audit checkpoint (too large)");
  }
  TPMMA_ASSIGN_OR_RETURN(AuditCheckpoint cp, ParseFields(text));
  TPMMA_ASSIGN_OR_RETURN(Bytes key_id, CheckpointKeyId(public_key));
  if (key_id != cp.key_id) {
    return Error(
        Code::kSignatureInvalid,
        fmt::format(
            "audit checkpoint was signed by key {}..., not by the checkpoint key given ({}...)",
            HexEncode(cp.key_id).substr(0, 16), HexEncode(key_id).substr(0, 16)));
  }
  if (!Verify(public_key, SignedBytes(cp), cp.signature)) {
    return Error(Code::kSignatureInvalid,
                 "audit checkpoint signature does not verify: the file was altered");
  }
  return cp;
}

Result<CheckpointVerdict> VerifyAgainstCheckpoint(storage::Vault& vault,
                                                  const AuditCheckpoint& cp) {
  TPMMA_ASSIGN_OR_RETURN(storage::AuditChainReport chain, vault.CheckAuditChain());
  if (chain.vault_id != cp.vault_id) {
    return Error(Code::kCorruption, fmt::format("the checkpoint is of vault {}, this vault is {} "
                                                "(another vault, or a log rebuilt from scratch)",
                                                HexEncode(cp.vault_id), HexEncode(chain.vault_id)));
  }
  if (chain.last_seq < cp.seq) {
    return Error(Code::kCorruption, fmt::format("the log was cut: the checkpoint vouches for "
                                                "records up to seq {}, the log ends at seq {}",
                                                cp.seq, chain.last_seq));
  }
  if (cp.seq < chain.first_seq) {
    TPMMA_RETURN_IF_ERROR(CheckArchivedSeq(vault, cp));
  } else {
    TPMMA_ASSIGN_OR_RETURN(storage::AuditRecord r, vault.GetAuditRecord(cp.seq));
    if (r.hash != cp.head_hash) {
      return Error(
          Code::kCorruption,
          fmt::format("record {} is not the one the checkpoint signed: the log up to it was "
                      "rewritten (records changed, removed or inserted, and re-chained)",
                      cp.seq));
    }
  }
  return CheckpointVerdict{cp.seq, chain.last_seq - cp.seq};
}

Status CreateCheckpointKey(const std::string& private_path, const std::string& public_path,
                           Env* env) {
  return CreateKeyPairFiles(private_path, public_path,
                            "checkpoints already signed with it would no longer verify against "
                            "a new one",
                            env);
}

Result<EvpPkeyPtr> LoadCheckpointKey(const std::string& private_path, Env* env) {
  return ReadPrivateKeyFile(private_path, "audit checkpoint", env);
}

Result<EvpPkeyPtr> LoadCheckpointPublicKey(const std::string& path, Env* env) {
  return ReadPublicKeyFile(path, env);
}

Result<std::string> WriteCheckpoint(storage::Vault& vault, EVP_PKEY* key, const std::string& dir,
                                    Env* env) {
  TPMMA_RETURN_IF_ERROR(vault.FlushDeferredAudit());
  TPMMA_ASSIGN_OR_RETURN(storage::AuditHead head, vault.GetAuditHead());
  TPMMA_ASSIGN_OR_RETURN(std::string text, SignCheckpoint(head, env->NowUnixSeconds(), key));
  TPMMA_RETURN_IF_ERROR(env->CreateDirs(dir, 0700));
  std::string path = fmt::format("{}/checkpoint-{}.json", dir, head.seq);
  TPMMA_RETURN_IF_ERROR(env->WriteFileAtomic(path, View(text), 0644));
  return path;
}

AuditCheckpointer::AuditCheckpointer(storage::Vault* vault, EvpPkeyPtr key, std::string dir,
                                     int64_t interval_s, Env* env)
    : vault_(vault),
      key_(std::move(key)),
      dir_(std::move(dir)),
      interval_s_(interval_s),
      env_(env) {
  WriteIfMoved();
  thread_ = std::jthread([this](std::stop_token stop) { Loop(stop); });
}

AuditCheckpointer::~AuditCheckpointer() {
  thread_.request_stop();
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  WriteIfMoved();
}

void AuditCheckpointer::Loop(std::stop_token stop) {
  std::unique_lock lock(mu_);
  while (!stop.stop_requested()) {
    cv_.wait_for(lock, stop, std::chrono::seconds(interval_s_), [] { return false; });
    if (stop.stop_requested()) break;
    lock.unlock();
    WriteIfMoved();
    lock.lock();
  }
}

void AuditCheckpointer::WriteIfMoved() {
  auto head = vault_->GetAuditHead();
  if (!head) {
    spdlog::error("audit checkpoint: {}", head.error().ToString());
    return;
  }
  if (head->seq == last_seq_) return;
  auto path = WriteCheckpoint(*vault_, key_.get(), dir_, env_);
  if (!path) {
    spdlog::error("audit checkpoint: {}", path.error().ToString());
    return;
  }
  last_seq_ = head->seq;
  spdlog::info("audit checkpoint seq={} written to {}", head->seq, *path);
}

}  // namespace tpmma::server
