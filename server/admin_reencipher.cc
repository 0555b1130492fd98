// SPDX-License-Identifier: GPL-2.0-or-later
// `ma-admin ma-key reencipher` and `ma-key retire` (admin_ma_key.h): the second and last steps
// of a rotation, after `ma-key rotate` (admin_ma_key.cc).
#include <algorithm>
#include <csignal>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "server/admin_ma_key.h"
#include "server/admin_ma_key_internal.h"
#include "server/admin_text.h"
#include "server/ma_key_ring.h"
#include "tpm/marshal.h"

namespace tpmma::server {

using nlohmann::json;

namespace {

// One package's wrap, moved from `from` to the ring's current key and checked to open there.
Result<storage::WrapUpdate> ReencipherOne(const AdminContext& ctx, const MaKeyRing& ring,
                                          const RingKey& from, const std::string& package_id) {
  TPMMA_ASSIGN_OR_RETURN(storage::Package p, ctx.vault->GetPackage(package_id));
  TPMMA_ASSIGN_OR_RETURN(schema::MigrationPackage model, ReadVerifiedPackage(*ctx.vault, p));
  TPMMA_ASSIGN_OR_RETURN(TPM2B_PUBLIC mrk, tpm::Unmarshal<TPM2B_PUBLIC>(model.mrk.public_area));
  const storage::OuterWrap wrap =
      p.rewrap.value_or(storage::OuterWrap{model.mrk.duplicate, model.mrk.encrypted_seed});
  auto moved = ring.Reencipher(from, mrk, wrap);
  // Recorded under `from` by an instance not yet restarted after the rotation, but made for
  // the current key already: only the record moves.
  if (!moved && moved.error().code() == Code::kIntegrityFailure &&
      ring.CheckOpens(ring.current(), mrk, wrap).ok()) {
    moved = wrap;
  }
  if (!moved) return Error(moved.error());
  return storage::WrapUpdate{package_id, from.custody->key_id(), ring.current().custody->key_id(),
                             std::move(*moved)};
}

struct Progress {
  int64_t moved = 0;
  size_t batches = 0;
};

// Every package `from` holds, batch by batch; each batch one transaction with its audit
// record, so that a job killed at any point leaves whole batches behind and a rerun lists
// only what is left.
Status DrainKey(const AdminContext& ctx, const MaKeyRing& ring, const RingKey& from,
                const ReencipherOptions& o, Progress& done) {
  const std::string& from_id = from.custody->key_id();
  const std::string& to_id = ring.current().custody->key_id();
  while (true) {
    TPMMA_ASSIGN_OR_RETURN(std::vector<std::string> ids,
                           ctx.vault->ListPackagesWrappedTo(from_id, std::max<size_t>(1, o.batch)));
    if (ids.empty()) return Status::Ok();
    std::vector<storage::WrapUpdate> updates;
    for (const std::string& id : ids) {
      auto u = ReencipherOne(ctx, ring, from, id);
      if (!u) {
        return Status(u.error().code(),
                      fmt::format("re-encipherment stopped at package {} (on {}): {}; {} "
                                  "package(s) moved to {} so far, nothing of this batch was; "
                                  "run `ma-admin ma-key reencipher` again once it is fixed",
                                  id, from_id, u.error().message(), done.moved, to_id));
      }
      updates.push_back(std::move(*u));
    }
    TPMMA_ASSIGN_OR_RETURN(
        int64_t n,
        ctx.vault->ReplaceOuterWraps(
            updates, AdminEvent(ctx, "ReencipherPackages", from_id,
                                fmt::format("{} package(s) from {} to {}: {} .. {}", updates.size(),
                                            from_id, to_id, ids.front(), ids.back()))));
    done.moved += n;
    ++done.batches;
    if (!ctx.json) Line(ctx, fmt::format("  {} package(s) moved from {} to {}", n, from_id, to_id));
    // Fault injection (TPMMA_REENCIPHER_KILL_AFTER_BATCHES): killed as by `kill -9`, mid-job.
    if (o.kill_after_batches != 0 && done.batches >= o.kill_after_batches) std::raise(SIGKILL);
  }
}

}  // namespace

Status ReencipherPackages(const AdminContext& ctx, const std::string& state_dir,
                          const ReencipherOptions& o) {
  TPMMA_ASSIGN_OR_RETURN(Config cfg, LoadConfig(state_dir + "/config.toml"));
  Progress done;
  if (!cfg.ma_retiring.empty()) {
    TPMMA_RETURN_IF_ERROR(CheckBackedUp(ctx, cfg, o.have_backup));
    TPMMA_ASSIGN_OR_RETURN(auto current, LoadMaKeyCustody(cfg.ma, "ma", ctx.env));
    TPMMA_ASSIGN_OR_RETURN(auto ring, MaKeyRing::Create(current.get(), cfg.ma_retiring, ctx.env));
    for (size_t i = 1; i < ring->keys().size(); ++i) {
      TPMMA_RETURN_IF_ERROR(DrainKey(ctx, *ring, ring->keys()[i], o, done));
    }
  }
  TPMMA_ASSIGN_OR_RETURN(auto counts, WrapCounts(*ctx.vault));
  std::vector<std::string> left;
  for (const TpmKeyConfig& k : cfg.ma_retiring) {
    if (counts[k.key_id] > 0) left.push_back(k.key_id);
  }
  if (ctx.json) {
    Print(ctx, {{"ok", true},
                {"moved", done.moved},
                {"batches", done.batches},
                {"ma_key_id", cfg.ma.key_id},
                {"unrecorded_packages", counts[""]}});
    return Status::Ok();
  }
  Line(ctx, fmt::format("{} package(s) re-enciphered to {} in {} batch(es).", done.moved,
                        cfg.ma.key_id, done.batches));
  if (!cfg.ma_retiring.empty()) {
    Line(ctx,
         "Retiring keys now hold no package; `ma-admin ma-key status` says which can be "
         "retired (no platform's MRK bound to it).");
  }
  return Status::Ok();
}

Status RetireMaKey(const AdminContext& ctx, const std::string& state_dir,
                   const std::string& key_id) {
  TPMMA_ASSIGN_OR_RETURN(Config cfg, LoadConfig(state_dir + "/config.toml"));
  if (key_id == cfg.ma.key_id) {
    return Status(Code::kConflict,
                  key_id + " is the MA's current storage key: `ma-admin ma-key rotate` first");
  }
  auto it = std::find_if(cfg.ma_retiring.begin(), cfg.ma_retiring.end(),
                         [&](const TpmKeyConfig& k) { return k.key_id == key_id; });
  if (it == cfg.ma_retiring.end()) {
    return Status(Code::kNotFound, "no retiring MA key " + key_id + " ([[ma.retiring]])");
  }
  TPMMA_ASSIGN_OR_RETURN(auto counts, WrapCounts(*ctx.vault));
  if (counts[key_id] > 0 || counts[""] > 0) {
    return Status(Code::kConflict,
                  fmt::format("{} package(s) are still wrapped to {} ({} not recorded): run "
                              "`ma-admin ma-key reencipher` first; nothing was destroyed",
                              counts[key_id], key_id, counts[""]));
  }
  TPMMA_ASSIGN_OR_RETURN(auto bound, BoundPlatforms(ctx, cfg));
  if (!bound[key_id].empty()) {
    return Status(Code::kConflict,
                  fmt::format("{} platform(s) have MRKs bound to {} (PolicyDuplicationSelect), "
                              "which can back up to it and nothing else (first: {}): their "
                              "stores must be made again, or the platforms revoked; nothing "
                              "was destroyed",
                              bound[key_id].size(), key_id, bound[key_id].front()));
  }
  const TpmKeyConfig gone = *it;
  cfg.ma_retiring.erase(it);
  TPMMA_RETURN_IF_ERROR(WriteConfig(
      ctx, state_dir, cfg,
      AdminEvent(ctx, "RetireMaKey", key_id, "destroyed (" + gone.custody + " custody)")));
  // After config.toml no longer names it: a failure here leaves a key nothing uses.
  const std::string& secret = gone.custody == "tpm" ? gone.tpm_private : gone.private_key;
  Status destroyed = ctx.env->DestroyFile(secret);
  if (!destroyed.ok()) {
    return destroyed.WithContext("MA key " + key_id + " is retired in config.toml, but " + secret +
                                 " could not be destroyed: remove it by hand");
  }
  if (ctx.json) {
    Print(ctx, {{"ok", true}, {"retired", key_id}, {"destroyed", secret}});
  } else {
    Line(ctx, "MA key " + key_id + " retired: " + secret +
                  " overwritten and removed. Restart ma-server (every instance) to drop it "
                  "from memory too.");
  }
  return Status::Ok();
}

}  // namespace tpmma::server
