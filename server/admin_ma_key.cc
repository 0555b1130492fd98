// SPDX-License-Identifier: GPL-2.0-or-later
#include "server/admin_ma_key.h"

#include <csignal>
#include <map>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "schema/package_xml.h"
#include "server/admin_ma_key_internal.h"
#include "server/admin_text.h"
#include "server/key_files.h"
#include "server/ma_key_ring.h"
#include "server/pki.h"
#include "server/policy_key.h"
#include "tpm/esys/esys.h"
#include "tpm/import.h"
#include "tpm/marshal.h"
#include "tpm/policy.h"
#include "tpm/public.h"

namespace tpmma::server {

using nlohmann::json;

namespace {

constexpr size_t kMaxPem = 64 * 1024;

// The configured storage keys, current first.
std::vector<const TpmKeyConfig*> StorageKeys(const Config& cfg) {
  std::vector<const TpmKeyConfig*> keys = {&cfg.ma};
  for (const TpmKeyConfig& k : cfg.ma_retiring) keys.push_back(&k);
  return keys;
}

}  // namespace

Result<schema::MigrationPackage> ReadVerifiedPackage(storage::Vault& vault,
                                                     const storage::Package& p) {
  Bytes signer = p.descriptor.signing_key;
  if (signer.empty()) {
    TPMMA_ASSIGN_OR_RETURN(storage::Platform source,
                           vault.GetPlatform(p.descriptor.source_platform_id));
    if (!source.signing_key_public) {
      return Error(Code::kConflict, "its platform has no package-signing key");
    }
    signer = *source.signing_key_public;
  }
  TPMMA_ASSIGN_OR_RETURN(TPM2B_PUBLIC pub, tpm::Unmarshal<TPM2B_PUBLIC>(signer));
  TPMMA_ASSIGN_OR_RETURN(EvpPkeyPtr key, tpm::PublicToEvp(pub.publicArea));
  schema::ParseLimits limits;
  limits.max_document_bytes = p.body.size();
  limits.max_child_keys = 1'000'000;
  TPMMA_ASSIGN_OR_RETURN(schema::PackageReader reader, schema::PackageReader::Open(p.body, limits));
  return reader.Verify(key.get());
}

namespace {

// Each platform's newest package (by creation time, then upload time).
Result<std::map<std::string, storage::PackageDescriptor>> NewestPackages(storage::Vault& vault) {
  std::map<std::string, storage::PackageDescriptor> newest;
  storage::PackageQuery q;
  q.page_size = 1000;
  q.with_keys = false;
  do {
    TPMMA_ASSIGN_OR_RETURN(storage::PackagePage page, vault.QueryPackages(q));
    for (storage::PackageDescriptor& d : page.packages) {
      auto it = newest.find(d.source_platform_id);
      if (it == newest.end() || std::pair(d.created_at, d.uploaded_at) >=
                                    std::pair(it->second.created_at, it->second.uploaded_at)) {
        newest[d.source_platform_id] = std::move(d);
      }
    }
    q.page_token = page.next_page_token;
  } while (!q.page_token.empty());
  return newest;
}

}  // namespace

Result<std::map<std::string, std::vector<std::string>>> BoundPlatforms(const AdminContext& ctx,
                                                                       const Config& cfg) {
  std::vector<std::pair<std::string, Bytes>> policies;
  for (const TpmKeyConfig* k : StorageKeys(cfg)) {
    TPMMA_ASSIGN_OR_RETURN(Bytes name, StorageKeyNameOf(ctx.env, *k));
    TPMMA_ASSIGN_OR_RETURN(Bytes policy, DuplicationSelectPolicyDigest(name));
    policies.emplace_back(k->key_id, std::move(policy));
  }
  std::map<std::string, std::vector<std::string>> bound;
  TPMMA_ASSIGN_OR_RETURN(auto newest, NewestPackages(*ctx.vault));
  for (const auto& [platform, d] : newest) {
    TPMMA_ASSIGN_OR_RETURN(storage::Platform p, ctx.vault->GetPlatform(platform));
    if (p.state == storage::PlatformState::kRevoked) continue;
    TPMMA_ASSIGN_OR_RETURN(storage::Package pkg, ctx.vault->GetPackage(d.package_id));
    auto model = ReadVerifiedPackage(*ctx.vault, pkg);
    if (!model) return Error(model.error().WithContext("package " + d.package_id));
    TPMMA_ASSIGN_OR_RETURN(TPM2B_PUBLIC mrk, tpm::Unmarshal<TPM2B_PUBLIC>(model->mrk.public_area));
    const ByteView policy = tpm::Tpm2bView(mrk.publicArea.authPolicy);
    for (const auto& [key_id, select] : policies) {
      if (std::ranges::equal(select, policy)) bound[key_id].push_back(platform);
    }
  }
  return bound;
}

Result<std::map<std::string, int64_t>> WrapCounts(storage::Vault& vault) {
  TPMMA_ASSIGN_OR_RETURN(std::vector<storage::WrapCount> counts, vault.CountPackagesByWrapKey());
  std::map<std::string, int64_t> out;
  for (const storage::WrapCount& c : counts) out[c.key_id] = c.packages;
  return out;
}

namespace {

// The seq of the newest audit record with `action`, 0 if there is none.
Result<int64_t> LatestAudit(storage::Vault& vault, const std::string& action) {
  storage::AuditFilter f;
  f.action = action;
  f.page_size = 1000;
  int64_t latest = 0;
  do {
    TPMMA_ASSIGN_OR_RETURN(storage::AuditPage page, vault.ListAudit(f));
    for (const storage::AuditRecord& r : page.records) latest = std::max(latest, r.seq);
    f.page_token = page.next_page_token;
  } while (!f.page_token.empty());
  return latest;
}

}  // namespace

Status CheckBackedUp(const AdminContext& ctx, const Config& cfg, bool have_backup) {
  if (have_backup) return Status::Ok();
  if (!cfg.vault_url.empty()) {
    return Status(Code::kConflict,
                  "this vault is PostgreSQL: ma-admin does not see its pg_dump backups; take one "
                  "(and copy the MA key files), then run again with --i-have-a-backup");
  }
  TPMMA_ASSIGN_OR_RETURN(int64_t rotated, LatestAudit(*ctx.vault, "RotateMaKey"));
  TPMMA_ASSIGN_OR_RETURN(int64_t backed_up, LatestAudit(*ctx.vault, "Vault.Backup"));
  if (backed_up > rotated) return Status::Ok();
  return Status(Code::kConflict,
                "no vault backup since the last MA key rotation (audit seq " +
                    std::to_string(rotated) +
                    "): run `ma-admin vault backup --out FILE` and keep it with the key files it "
                    "lists, or pass --i-have-a-backup; nothing was changed");
}

Result<Bytes> StorageKeyNameOf(Env* env, const TpmKeyConfig& k) {
  TPMMA_ASSIGN_OR_RETURN(Bytes cert_pem, env->ReadFile(k.certificate, kMaxPem));
  TPMMA_ASSIGN_OR_RETURN(X509Ptr cert, CertificateFromPem(cert_pem));
  TPMMA_ASSIGN_OR_RETURN(TPM2B_PUBLIC pub, tpm::MaStoragePublic(X509_get0_pubkey(cert.get())));
  return tpm::ComputeName(pub.publicArea);
}

Status WriteConfig(const AdminContext& ctx, const std::string& state_dir, Config cfg,
                   const storage::AuditEvent& audit) {
  const std::string config_path = state_dir + "/config.toml";
  RelativeTo(state_dir, cfg);
  const std::string toml = ConfigToToml(cfg);
  TPMMA_RETURN_IF_ERROR(ParseConfig(toml, state_dir, config_path));
  TPMMA_RETURN_IF_ERROR(ctx.vault->AppendAudit(audit));
  return ctx.env->WriteFileAtomic(config_path, View(toml), 0600);
}

namespace {

// `key` (public area `pub`) imported into the TPM at `tcti` under the persistent parent, as
// `tpm2_import` would, and checked to load there.
Result<esys::KeyBlob> ImportKey(const std::string& tcti, uint32_t parent_handle,
                                const TPM2B_PUBLIC& pub, const EVP_PKEY* key) {
  auto tpm = esys::Tpm::Open(tcti);
  if (!tpm) return Error(tpm.error().WithContext("the MA's TPM at " + tcti));
  TPMMA_ASSIGN_OR_RETURN(esys::Object parent, (*tpm)->FromPersistent(parent_handle));
  TPMMA_ASSIGN_OR_RETURN(tpm::Importable wrapped,
                         tpm::WrapKeyForImport(parent.public_area().publicArea, pub, key));
  TPMMA_ASSIGN_OR_RETURN(TPM2B_PRIVATE priv, (*tpm)->Import(parent, pub, wrapped.duplicate,
                                                            wrapped.encrypted_seed, {}));
  esys::KeyBlob blob{pub, priv};
  TPMMA_ASSIGN_OR_RETURN(esys::Object loaded, (*tpm)->Load(parent, blob));
  return blob;
}

// `blob` written as `tpm2_import -u/-r` would beside the key's other files; `k` names it.
Status WriteBlob(const AdminContext& ctx, const esys::KeyBlob& blob, const std::string& stem,
                 TpmKeyConfig& k) {
  TPMMA_ASSIGN_OR_RETURN(Bytes pub_bytes, tpm::Marshal(blob.public_area));
  TPMMA_ASSIGN_OR_RETURN(Bytes priv_bytes, tpm::Marshal(blob.private_area));
  k.custody = "tpm";
  k.tpm_public = stem + "-tpm.pub";
  k.tpm_private = stem + "-tpm.priv";
  TPMMA_RETURN_IF_ERROR(ctx.env->WriteFileAtomic(k.tpm_public, pub_bytes, 0644));
  return ctx.env->WriteFileAtomic(k.tpm_private, priv_bytes, 0600);
}

// `next` (a software key just made) imported into the MA's TPM and named by its TPM blobs
// from now on.
Status ImportIntoTpm(const AdminContext& ctx, const std::string& state_dir, const RotateOptions& o,
                     TpmKeyConfig& next) {
  TPMMA_ASSIGN_OR_RETURN(EvpPkeyPtr key, ReadPrivateKeyFile(next.private_key, "MA", ctx.env));
  TPMMA_ASSIGN_OR_RETURN(TPM2B_PUBLIC pub, tpm::MaStoragePublic(key.get()));
  TPMMA_ASSIGN_OR_RETURN(esys::KeyBlob blob, ImportKey(o.tpm_tcti, o.tpm_parent, pub, key.get()));
  next.tpm_tcti = o.tpm_tcti;
  next.tpm_parent = o.tpm_parent;
  TPMMA_RETURN_IF_ERROR(WriteBlob(ctx, blob, state_dir + "/ma/" + next.key_id, next));
  next.private_key.clear();  // [ma] names the TPM blobs; the PEM is the offline copy
  return Status::Ok();
}

std::string PolicyKeyPem(const std::string& state_dir) {
  return state_dir + "/policy/policy-key.pem";
}

// Whether the policy-signing key can sign now: in the MA's TPM, or its PEM brought back.
Status PolicySignerHere(const AdminContext& ctx, const std::string& state_dir, const Config& cfg) {
  if (cfg.policy_signer.custody == "tpm" || ctx.env->FileExists(PolicyKeyPem(state_dir))) {
    return Status::Ok();
  }
  return Status(Code::kNotFound,
                "the policy-signing key (" + PolicyKeyPem(state_dir) +
                    ") approves the new key, or MRKs that follow the MA could not duplicate to "
                    "it: bring the offline copy back for the rotation; nothing was changed");
}

// [policy]: the policy-signing key approves storage key `name` (policy/<id>.approval), and
// the approval is checked as ma-server will.
Status ApproveStorageKey(const AdminContext& ctx, const std::string& state_dir, Config& cfg,
                         const std::string& id, const Bytes& name) {
  TPMMA_RETURN_IF_ERROR(PolicySignerHere(ctx, state_dir, cfg));
  cfg.policy_approval = state_dir + "/policy/" + id + ".approval";
  TPMMA_RETURN_IF_ERROR(
      cfg.policy_signer.custody == "tpm"
          ? WriteApprovalInTpm(cfg.policy_signer, name, cfg.policy_approval, ctx.env)
          : WriteApproval(PolicyKeyPem(state_dir), name, cfg.policy_approval, ctx.env));
  return internal::AsStatus(LoadApproval(cfg, name, ctx.env));
}

}  // namespace

Status RotateMaKey(const AdminContext& ctx, const std::string& state_dir, const RotateOptions& o) {
  TPMMA_ASSIGN_OR_RETURN(Config cfg, LoadConfig(state_dir + "/config.toml"));
  if (o.custody != "software" && o.custody != "tpm") {
    return Status(Code::kInvalidArgument, "--custody must be software or tpm");
  }
  if (o.custody == "tpm" && o.tpm_tcti.empty()) {
    return Status(Code::kInvalidArgument, "--custody tpm needs --tpm-tcti (the MA's TPM)");
  }
  const std::string id = o.key_id.empty() ? NextKeyId(StorageKeys(cfg), "ma-") : o.key_id;
  const std::vector<std::string> taken = TakenKeyIds(cfg);
  if (std::find(taken.begin(), taken.end(), id) != taken.end()) {
    return Status(Code::kAlreadyExists,
                  "key id " + id +
                      " is in use by this MA (a key id is never reused: the vault "
                      "and the audit log name keys by it)");
  }
  if (!cfg.policy_public_key.empty()) TPMMA_RETURN_IF_ERROR(PolicySignerHere(ctx, state_dir, cfg));
  // Packages stored before the vault recorded wrap keys went to the one key there was.
  if (cfg.ma_retiring.empty()) {
    TPMMA_RETURN_IF_ERROR(ctx.vault->AssignUnrecordedWraps(
        cfg.ma.key_id, AdminEvent(ctx, "RecordWrapKeys", cfg.ma.key_id, "before rotation")));
  }
  const std::string key_file = "ma/" + id + "-key.pem";
  const std::string cert_file = "ma/" + id + "-cert.pem";
  TPMMA_RETURN_IF_ERROR(
      IssueCaCertifiedKey(ctx, state_dir, "tpm-ma MA storage key " + id, key_file, cert_file));
  TpmKeyConfig next = TpmKeyConfig::Named("software", id);
  next.private_key = state_dir + "/" + key_file;
  next.certificate = state_dir + "/" + cert_file;
  if (o.custody == "tpm") TPMMA_RETURN_IF_ERROR(ImportIntoTpm(ctx, state_dir, o, next));
  TPMMA_ASSIGN_OR_RETURN(Bytes name, StorageKeyNameOf(ctx.env, next));
  if (!cfg.policy_public_key.empty()) {
    TPMMA_RETURN_IF_ERROR(ApproveStorageKey(ctx, state_dir, cfg, id, name));
  }
  const std::string old = cfg.ma.key_id;
  cfg.ma_retiring.push_back(cfg.ma);
  cfg.ma = next;
  std::vector<std::string> retiring;
  for (const TpmKeyConfig& k : cfg.ma_retiring) retiring.push_back(k.key_id);
  TPMMA_RETURN_IF_ERROR(WriteConfig(
      ctx, state_dir, cfg,
      AdminEvent(ctx, "RotateMaKey", id, "Name " + HexEncode(name) + "; " + old + " retiring")));
  if (ctx.json) {
    Print(ctx, {{"ok", true},
                {"ma_key_id", id},
                {"name", HexEncode(name)},
                {"custody", next.custody},
                {"private_key", state_dir + "/" + key_file},
                {"approved", !cfg.policy_public_key.empty()},
                {"retiring", retiring}});
    return Status::Ok();
  }
  Line(ctx, "MA storage key " + id + " made (" + state_dir + "/" + key_file + "), Name " +
                HexEncode(name) + "; " + old + " is retiring.");
  if (next.custody == "tpm") {
    Line(ctx, "It is in the MA's TPM (" + next.tpm_private + "); move " + state_dir + "/" +
                  key_file + " offline: it is the disaster-recovery copy.");
  }
  Line(ctx,
       "Next: restart ma-server (every instance); `ma-admin vault backup --out FILE`; then "
       "`ma-admin ma-key reencipher` moves the packages " +
           old + " holds; `ma-admin ma-key status` says when it can be retired.");
  if (cfg.policy_public_key.empty()) {
    Line(ctx,
         "This MA has no policy-signing key: every MRK is bound to the key it was made for, "
         "so " +
             old + " stays needed until those stores are made again.");
  }
  return Status::Ok();
}

Status MaKeyStatus(const AdminContext& ctx, const std::string& state_dir) {
  TPMMA_ASSIGN_OR_RETURN(Config cfg, LoadConfig(state_dir + "/config.toml"));
  TPMMA_ASSIGN_OR_RETURN(auto counts, WrapCounts(*ctx.vault));
  TPMMA_ASSIGN_OR_RETURN(auto bound, BoundPlatforms(ctx, cfg));
  json keys = json::array();
  for (const TpmKeyConfig* k : StorageKeys(cfg)) {
    const bool current = k == &cfg.ma;
    const bool needed = current || counts[k->key_id] > 0 || !bound[k->key_id].empty();
    keys.push_back({{"key_id", k->key_id},
                    {"state", current ? "current" : "retiring"},
                    {"custody", k->custody},
                    {"packages", counts[k->key_id]},
                    {"bound_platforms", bound[k->key_id]},
                    {"retirable", !needed}});
  }
  if (ctx.json) {
    Print(ctx, {{"ok", true}, {"keys", keys}, {"unrecorded_packages", counts[""]}});
    return Status::Ok();
  }
  Line(ctx, fmt::format("{:<16} {:<9} {:<9} {:>9} {:>16}  {}", "KEY", "STATE", "CUSTODY",
                        "PACKAGES", "BOUND PLATFORMS", "RETIRE"));
  for (const json& k : keys) {
    Line(ctx, fmt::format("{:<16} {:<9} {:<9} {:>9} {:>16}  {}", k["key_id"].get<std::string>(),
                          k["state"].get<std::string>(), k["custody"].get<std::string>(),
                          k["packages"].get<int64_t>(), k["bound_platforms"].size(),
                          k["retirable"].get<bool>() ? "yes" : "no"));
    for (const json& p : k["bound_platforms"]) Line(ctx, "  bound: " + p.get<std::string>());
  }
  if (counts[""] > 0) {
    Line(ctx, fmt::format("{} package(s) stored before wrap keys were recorded", counts[""]));
  }
  return Status::Ok();
}

Status ImportPolicyKeyToTpm(const AdminContext& ctx, const std::string& state_dir,
                            const std::string& tcti, uint32_t parent_handle) {
  TPMMA_ASSIGN_OR_RETURN(Config cfg, LoadConfig(state_dir + "/config.toml"));
  if (cfg.policy_public_key.empty()) {
    return Status(Code::kNotFound,
                  "this MA has no policy-signing key (`ma-admin policy-key init`)");
  }
  if (cfg.policy_signer.custody == "tpm") {
    return Status(Code::kAlreadyExists, "the policy-signing key is in the MA's TPM already (" +
                                            cfg.policy_signer.tpm_private + ")");
  }
  TPMMA_RETURN_IF_ERROR(PolicySignerHere(ctx, state_dir, cfg));
  TPMMA_ASSIGN_OR_RETURN(EvpPkeyPtr key,
                         ReadPrivateKeyFile(PolicyKeyPem(state_dir), "policy-signing", ctx.env));
  TPMMA_ASSIGN_OR_RETURN(TPM2B_PUBLIC pub, tpm::PolicyKeyPublic(key.get()));
  TPMMA_ASSIGN_OR_RETURN(EvpPkeyPtr published, ReadPublicKeyFile(cfg.policy_public_key, ctx.env));
  TPMMA_ASSIGN_OR_RETURN(TPM2B_PUBLIC expected, tpm::PolicyKeyPublic(published.get()));
  TPMMA_ASSIGN_OR_RETURN(Bytes name, tpm::ComputeName(pub.publicArea));
  if (name != tpm::ComputeName(expected.publicArea).value_or(Bytes())) {
    return Status(Code::kConflict, PolicyKeyPem(state_dir) + " is not the key policy.public_key " +
                                       "publishes; nothing was imported");
  }
  TPMMA_ASSIGN_OR_RETURN(esys::KeyBlob blob, ImportKey(tcti, parent_handle, pub, key.get()));
  cfg.policy_signer.tpm_tcti = tcti;
  cfg.policy_signer.tpm_parent = parent_handle;
  TPMMA_RETURN_IF_ERROR(WriteBlob(ctx, blob, state_dir + "/policy/policy-key", cfg.policy_signer));
  // The TPM signs the current key's approval again: it works before anything depends on it.
  TPMMA_ASSIGN_OR_RETURN(Bytes ma_name, StorageKeyNameOf(ctx.env, cfg.ma));
  TPMMA_RETURN_IF_ERROR(
      WriteApprovalInTpm(cfg.policy_signer, ma_name, cfg.policy_approval + ".tpm-check", ctx.env));
  Config check = cfg;
  check.policy_approval += ".tpm-check";
  TPMMA_RETURN_IF_ERROR(internal::AsStatus(LoadApproval(check, ma_name, ctx.env)));
  TPMMA_RETURN_IF_ERROR(ctx.env->RemoveFile(check.policy_approval));
  TPMMA_RETURN_IF_ERROR(WriteConfig(ctx, state_dir, cfg,
                                    AdminEvent(ctx, "ImportPolicyKeyToTpm", HexEncode(name),
                                               "into " + cfg.policy_signer.tpm_private)));
  if (ctx.json) {
    Print(ctx, {{"ok", true},
                {"policy_key_name", HexEncode(name)},
                {"tpm_private", cfg.policy_signer.tpm_private}});
  } else {
    Line(ctx, "Policy-signing key " + HexEncode(name) + " is in the MA's TPM (" +
                  cfg.policy_signer.tpm_private + "); `ma-key rotate` signs with it there. Move " +
                  PolicyKeyPem(state_dir) + " offline: it is the disaster-recovery copy.");
  }
  return Status::Ok();
}

}  // namespace tpmma::server
