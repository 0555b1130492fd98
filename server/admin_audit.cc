// SPDX-License-Identifier: GPL-2.0-or-later
#include "server/admin_audit.h"

#include <openssl/sha.h>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "common/bytes.h"
#include "server/admin_text.h"
#include "server/audit_checkpoint.h"
#include "server/config.h"

namespace tpmma::server {

using nlohmann::json;

namespace {

constexpr std::string_view kArchiveFormat = "tpm-ma audit archive 1";
constexpr size_t kMaxCheckpointFile = 4096;
constexpr size_t kMaxArchiveFile = size_t{1} << 30;

Result<Config> StateConfig(const std::string& state_dir) {
  auto cfg = LoadConfig(state_dir + "/config.toml");
  if (!cfg) return Error(cfg.error().WithContext("the MA in " + state_dir));
  return cfg;
}

Result<EvpPkeyPtr> SigningKey(const Config& cfg, Env* env) {
  if (cfg.audit_checkpoint_key.empty()) {
    return Error(Code::kNotFound,
                 "this MA has no audit checkpoint key (audit.checkpoint_key); make one with "
                 "`ma-admin audit checkpoint-key`");
  }
  return LoadCheckpointKey(cfg.audit_checkpoint_key, env);
}

std::string Text(const Bytes& b) {
  return std::string(b.begin(), b.end());
}

json RecordJson(const storage::AuditRecord& r) {
  return {{"seq", r.seq},
          {"time", r.event.time},
          {"actor", r.event.actor},
          {"action", r.event.action},
          {"object", r.event.object},
          {"outcome", r.event.outcome},
          {"detail", r.event.detail},
          {"prev_hash", HexEncode(r.prev_hash)},
          {"hash", HexEncode(r.hash)}};
}

Result<storage::AuditRecord> RecordFromJson(const json& j) {
  storage::AuditRecord r;
  try {
    r.seq = j.at("seq").get<int64_t>();
    r.event =
        storage::AuditEvent{j.at("time").get<int64_t>(),        j.at("actor").get<std::string>(),
                            j.at("action").get<std::string>(),  j.at("object").get<std::string>(),
                            j.at("outcome").get<std::string>(), j.at("detail").get<std::string>()};
    auto prev = HexDecode(j.at("prev_hash").get<std::string>());
    auto hash = HexDecode(j.at("hash").get<std::string>());
    if (!prev || !hash) return Error(Code::kInvalidArgument, "a hash is not hex");
    r.prev_hash = std::move(*prev);
    r.hash = std::move(*hash);
  } catch (const json::exception&) {
    return Error(Code::kInvalidArgument, "a record lacks a field or has one of the wrong type");
  }
  return r;
}

// The highest seq an archive may reach: what was asked, and never the head.
Result<int64_t> ArchiveEnd(storage::Vault& vault, const ArchiveOptions& o) {
  if (o.through_seq.has_value() == o.before.has_value()) {
    return Error(Code::kInvalidArgument, "give exactly one of --through SEQ and --before TIME");
  }
  if (o.through_seq) return *o.through_seq;
  storage::AuditFilter f;
  f.time_to = *o.before;
  f.page_size = 1000;
  int64_t last = 0;
  do {
    TPMMA_ASSIGN_OR_RETURN(auto page, vault.ListAudit(f));
    if (!page.records.empty()) last = page.records.back().seq;
    f.page_token = page.next_page_token;
  } while (!f.page_token.empty());
  if (last == 0) return Error(Code::kNotFound, "no audit record is older than --before");
  TPMMA_ASSIGN_OR_RETURN(storage::AuditHead head, vault.GetAuditHead());
  return std::min(last, head.seq - 1);
}

Result<std::vector<storage::AuditRecord>> RecordsThrough(storage::Vault& vault, int64_t last) {
  std::vector<storage::AuditRecord> out;
  storage::AuditFilter f;
  f.page_size = 1000;
  do {
    TPMMA_ASSIGN_OR_RETURN(auto page, vault.ListAudit(f));
    for (auto& r : page.records) {
      if (r.seq > last) return out;
      out.push_back(std::move(r));
    }
    f.page_token = page.next_page_token;
  } while (!f.page_token.empty());
  return out;
}

Bytes Sha256(ByteView data) {
  Bytes out(SHA256_DIGEST_LENGTH);
  SHA256(data.data(), data.size(), out.data());
  return out;
}

// Each record's hash is its own, and each links to the one before it.
Status CheckArchivedChain(const std::vector<storage::AuditRecord>& records) {
  for (size_t i = 0; i < records.size(); ++i) {
    const storage::AuditRecord& r = records[i];
    TPMMA_ASSIGN_OR_RETURN(Bytes computed, storage::AuditRecordHash(r.seq, r.event, r.prev_hash));
    if (computed != r.hash) {
      return Status(Code::kCorruption, fmt::format("archived record {} was altered", r.seq));
    }
    if (i > 0 && (r.seq != records[i - 1].seq + 1 || r.prev_hash != records[i - 1].hash)) {
      return Status(Code::kCorruption,
                    fmt::format("archived records are not one chain at seq {}", r.seq));
    }
  }
  return Status::Ok();
}

}  // namespace

std::string DefaultCheckpointPublicKey(const std::string& state_dir) {
  return state_dir + "/audit/checkpoint-pub.pem";
}

Status VerifyAudit(const AdminContext& ctx, const std::string& state_dir,
                   const AuditVerifyOptions& o) {
  TPMMA_ASSIGN_OR_RETURN(storage::AuditChainReport chain, ctx.vault->CheckAuditChain());
  json out = {{"ok", true},
              {"vault_id", HexEncode(chain.vault_id)},
              {"first_seq", chain.first_seq},
              {"last_seq", chain.last_seq},
              {"genesis_seq", chain.genesis_seq},
              {"archived_through", chain.archived_through},
              {"verified_rows", chain.last_seq - chain.first_seq + 1},
              {"triggers", "intact"}};
  std::string text = fmt::format(
      "Audit log intact: records {}..{}, hash chain verified, genesis {}, append-only triggers "
      "as made.",
      chain.first_seq, chain.last_seq,
      chain.genesis_seq != 0 ? fmt::format("at seq {}", chain.genesis_seq)
                             : fmt::format("archived (records 1..{})", chain.archived_through));
  std::string more;
  if (!o.checkpoint.empty()) {
    const std::string key_path =
        o.public_key.empty() ? DefaultCheckpointPublicKey(state_dir) : o.public_key;
    TPMMA_ASSIGN_OR_RETURN(EvpPkeyPtr key, LoadCheckpointPublicKey(key_path, ctx.env));
    TPMMA_ASSIGN_OR_RETURN(Bytes file, ctx.env->ReadFile(o.checkpoint, kMaxCheckpointFile));
    TPMMA_ASSIGN_OR_RETURN(AuditCheckpoint cp, ReadCheckpoint(Text(file), key.get()));
    TPMMA_ASSIGN_OR_RETURN(CheckpointVerdict v, VerifyAgainstCheckpoint(*ctx.vault, cp));
    out["checkpoint"] = {
        {"seq", v.seq}, {"time", Iso(cp.time)}, {"records_after", v.records_after}};
    more = fmt::format(
        "Checkpoint of {} verified: no record up to seq {} was changed, removed or "
        "inserted; {} record(s) appended since.",
        Iso(cp.time), v.seq, v.records_after);
  }
  if (ctx.json) {
    Print(ctx, out);
  } else {
    Line(ctx, text);
    if (!more.empty()) Line(ctx, more);
  }
  return Status::Ok();
}

Status WriteAuditCheckpoint(const AdminContext& ctx, const std::string& state_dir,
                            const std::string& out) {
  TPMMA_ASSIGN_OR_RETURN(Config cfg, StateConfig(state_dir));
  TPMMA_ASSIGN_OR_RETURN(EvpPkeyPtr key, SigningKey(cfg, ctx.env));
  std::string path;
  if (out.empty()) {
    TPMMA_ASSIGN_OR_RETURN(
        path, WriteCheckpoint(*ctx.vault, key.get(), cfg.audit_checkpoint_dir, ctx.env));
  } else {
    TPMMA_ASSIGN_OR_RETURN(storage::AuditHead head, ctx.vault->GetAuditHead());
    TPMMA_ASSIGN_OR_RETURN(std::string text,
                           SignCheckpoint(head, ctx.env->NowUnixSeconds(), key.get()));
    TPMMA_RETURN_IF_ERROR(ctx.env->WriteFileAtomic(out, View(text), 0644));
    path = out;
  }
  TPMMA_ASSIGN_OR_RETURN(storage::AuditHead head, ctx.vault->GetAuditHead());
  if (ctx.json) {
    Print(ctx, {{"ok", true}, {"file", path}, {"seq", head.seq}});
  } else {
    Line(ctx, fmt::format("Checkpoint of the audit log at seq {} written to {}. Keep a copy off "
                          "this host: `ma-admin audit verify --checkpoint {}` checks the log "
                          "against it.",
                          head.seq, path, path));
  }
  return Status::Ok();
}

Status CreateAuditCheckpointKey(const AdminContext& ctx, const std::string& state_dir) {
  const std::string config_path = state_dir + "/config.toml";
  TPMMA_ASSIGN_OR_RETURN(Config cfg, StateConfig(state_dir));
  if (!cfg.audit_checkpoint_key.empty()) {
    return Status(Code::kAlreadyExists,
                  "this MA already has an audit checkpoint key: " + cfg.audit_checkpoint_key);
  }
  TPMMA_RETURN_IF_ERROR(ctx.env->CreateDirs(state_dir + "/audit", 0700));
  const std::string key_path = state_dir + "/audit/checkpoint-key.pem";
  TPMMA_RETURN_IF_ERROR(
      CreateCheckpointKey(key_path, DefaultCheckpointPublicKey(state_dir), ctx.env));
  cfg.audit_checkpoint_key = key_path;
  cfg.audit_checkpoint_dir = state_dir + "/audit/checkpoints";
  RelativeTo(state_dir, cfg);
  const std::string toml = ConfigToToml(cfg);
  TPMMA_RETURN_IF_ERROR(ParseConfig(toml, state_dir, config_path));
  TPMMA_RETURN_IF_ERROR(ctx.vault->AppendAudit(
      AdminEvent(ctx, "AuditCheckpointKey", "audit/checkpoint-key.pem", "created")));
  TPMMA_RETURN_IF_ERROR(ctx.env->WriteFileAtomic(config_path, View(toml), 0600));
  if (ctx.json) {
    Print(ctx, {{"ok", true},
                {"private_key", key_path},
                {"public_key", DefaultCheckpointPublicKey(state_dir)}});
  } else {
    Line(ctx, "Checkpoint key made: " + key_path +
                  " (public: " + DefaultCheckpointPublicKey(state_dir) +
                  "). Restart ma-server to write checkpoints; give the public key to whoever "
                  "verifies them.");
  }
  return Status::Ok();
}

Status ArchiveAuditLog(const AdminContext& ctx, const std::string& state_dir,
                       const ArchiveOptions& o) {
  if (o.out_dir.empty()) return Status(Code::kInvalidArgument, "--out DIR is required");
  TPMMA_ASSIGN_OR_RETURN(Config cfg, StateConfig(state_dir));
  TPMMA_ASSIGN_OR_RETURN(EvpPkeyPtr key, SigningKey(cfg, ctx.env));
  // The log must be sound before any of it leaves the vault.
  TPMMA_ASSIGN_OR_RETURN(storage::AuditChainReport chain, ctx.vault->CheckAuditChain());
  TPMMA_ASSIGN_OR_RETURN(int64_t last, ArchiveEnd(*ctx.vault, o));
  if (last < chain.first_seq || last >= chain.last_seq) {
    return Status(
        Code::kInvalidArgument,
        fmt::format("can archive records {}..{} only (the head stays); asked for up to {}",
                    chain.first_seq, chain.last_seq - 1, last));
  }
  TPMMA_ASSIGN_OR_RETURN(auto records, RecordsThrough(*ctx.vault, last));
  const storage::AuditRecord& tail = records.back();
  storage::AuditHead at{chain.vault_id, tail.seq, tail.hash, tail.event.time};
  TPMMA_ASSIGN_OR_RETURN(std::string checkpoint,
                         SignCheckpoint(at, ctx.env->NowUnixSeconds(), key.get()));
  json rows = json::array();
  for (const auto& r : records) rows.push_back(RecordJson(r));
  json doc = {{"format", kArchiveFormat},         {"vault_id", HexEncode(chain.vault_id)},
              {"first_seq", records.front().seq}, {"last_seq", tail.seq},
              {"records", std::move(rows)},       {"checkpoint", checkpoint}};
  const std::string text = doc.dump(1) + "\n";
  const std::string path =
      fmt::format("{}/audit-{}-{}.json", o.out_dir, records.front().seq, tail.seq);
  TPMMA_RETURN_IF_ERROR(ctx.env->CreateDirs(o.out_dir, 0700));
  // On disk (fsynced) before anything is removed from the vault.
  TPMMA_RETURN_IF_ERROR(ctx.env->WriteFileAtomic(path, View(text), 0600));
  const Bytes digest = Sha256(View(text));
  TPMMA_RETURN_IF_ERROR(ctx.vault->ArchiveAudit(
      tail.seq, digest,
      storage::AuditEvent{
          ctx.env->NowUnixSeconds(), "system", std::string(storage::kAuditArchiveAction),
          std::to_string(tail.seq), "ok",
          fmt::format("records {}..{} archived by {} to {} (sha256 {})", records.front().seq,
                      tail.seq, ctx.actor, path, HexEncode(digest))}));
  if (ctx.json) {
    Print(ctx, {{"ok", true},
                {"file", path},
                {"first_seq", records.front().seq},
                {"last_seq", tail.seq},
                {"sha256", HexEncode(digest)}});
  } else {
    Line(ctx, fmt::format("Archived audit records {}..{} to {} (with a checkpoint of seq {}); "
                          "removed them from the vault. Keep the file: `ma-admin audit "
                          "verify-archive {}` checks it.",
                          records.front().seq, tail.seq, path, tail.seq, path));
  }
  return Status::Ok();
}

namespace {

struct ArchiveFile {
  Bytes vault_id;
  std::vector<storage::AuditRecord> records;
  std::string checkpoint;
};

Result<ArchiveFile> ParseArchive(std::string_view text) {
  json doc = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!doc.is_object() || doc.value("format", "") != kArchiveFormat || !doc.contains("records") ||
      !doc["records"].is_array() || doc["records"].empty() || !doc.contains("checkpoint") ||
      !doc["checkpoint"].is_string() || !doc.contains("vault_id") || !doc["vault_id"].is_string()) {
    return Error(Code::kInvalidArgument,
                 fmt::format("not an audit archive (expected \"format\": \"{}\")", kArchiveFormat));
  }
  ArchiveFile a;
  auto id = HexDecode(doc["vault_id"].get<std::string>());
  if (!id) return Error(Code::kInvalidArgument, "audit archive: vault_id is not hex");
  a.vault_id = std::move(*id);
  for (const json& j : doc["records"]) {
    auto r = RecordFromJson(j);
    if (!r) return Error(r.error().WithContext("audit archive"));
    a.records.push_back(std::move(*r));
  }
  a.checkpoint = doc["checkpoint"].get<std::string>();
  return a;
}

// The vault's word on the file, when it still has the segment.
Result<bool> SegmentMatches(storage::Vault& vault, int64_t last_seq, const Bytes& digest) {
  TPMMA_ASSIGN_OR_RETURN(auto segments, vault.ListAuditSegments());
  for (const auto& s : segments) {
    if (s.last_seq != last_seq) continue;
    if (s.archive_sha256 != digest) {
      return Error(Code::kCorruption,
                   fmt::format("the vault archived records {}..{} to a file with another "
                               "SHA-256 than this one",
                               s.first_seq, s.last_seq));
    }
    return true;
  }
  return false;
}

}  // namespace

Status VerifyAuditArchive(const AdminContext& ctx, const std::string& state_dir,
                          const std::string& file, const std::string& public_key) {
  TPMMA_ASSIGN_OR_RETURN(Bytes bytes, ctx.env->ReadFile(file, kMaxArchiveFile));
  TPMMA_ASSIGN_OR_RETURN(ArchiveFile a, ParseArchive(Text(bytes)));
  TPMMA_RETURN_IF_ERROR(CheckArchivedChain(a.records));
  const std::string key_path =
      public_key.empty() ? DefaultCheckpointPublicKey(state_dir) : public_key;
  TPMMA_ASSIGN_OR_RETURN(EvpPkeyPtr key, LoadCheckpointPublicKey(key_path, ctx.env));
  TPMMA_ASSIGN_OR_RETURN(AuditCheckpoint cp, ReadCheckpoint(a.checkpoint, key.get()));
  const storage::AuditRecord& tail = a.records.back();
  if (cp.vault_id != a.vault_id || cp.seq != tail.seq || cp.head_hash != tail.hash) {
    return Status(Code::kCorruption,
                  "the archive's checkpoint does not sign its last record: records were "
                  "changed, removed or added after it was written");
  }
  TPMMA_ASSIGN_OR_RETURN(bool known, SegmentMatches(*ctx.vault, tail.seq, Sha256(bytes)));
  if (ctx.json) {
    Print(ctx, {{"ok", true},
                {"first_seq", a.records.front().seq},
                {"last_seq", tail.seq},
                {"vault_knows_it", known}});
  } else {
    Line(ctx, fmt::format("Archive intact: records {}..{}, hash chain and signed checkpoint "
                          "verified{}.",
                          a.records.front().seq, tail.seq,
                          known ? "; it is the file this vault archived" : ""));
  }
  return Status::Ok();
}

}  // namespace tpmma::server
