// SPDX-License-Identifier: GPL-2.0-or-later
#include "server/admin_commands.h"

#include <charconv>
#include <ctime>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "common/bytes.h"
#include "server/admin_ma_key.h"
#include "server/admin_text.h"
#include "server/config.h"
#include "server/pki.h"
#include "server/policy_key.h"
#include "tpm/public.h"

namespace tpmma::server {

using nlohmann::json;
using storage::AuditEvent;

namespace {

json DescriptorJson(const storage::PackageDescriptor& d) {
  json keys = json::array();
  for (const auto& k : d.keys)
    keys.push_back({{"id", k.key_id}, {"label", k.label}, {"usage", k.usage}});
  return {{"id", d.package_id},
          {"source_platform", d.source_platform_id},
          {"created_at", Iso(d.created_at)},
          {"uploaded_at", Iso(d.uploaded_at)},
          {"size", d.size},
          {"sha256", HexEncode(d.sha256)},
          {"custody", std::string(storage::ToString(d.custody))},
          {"wrap_key_id", d.wrap_key_id},
          {"keys", keys}};
}

// "state" as stored; "status" what it is now ("expired" for an active one past its expiry).
json ApprovalJson(const storage::Approval& a, int64_t now) {
  json j = {{"id", a.id},
            {"old_platform", a.old_platform_id},
            {"new_platform", a.new_platform_id},
            {"all_packages", a.all_packages},
            {"packages", a.package_ids},
            {"reason", a.reason},
            {"created_by", a.created_by},
            {"created_at", Iso(a.created_at)},
            {"expires_at", Iso(a.expires_at)},
            {"state", std::string(storage::ToString(a.state))},
            {"status", std::string(ApprovalStatusAt(a, now))}};
  if (a.confirmed_by) j["confirmed_by"] = *a.confirmed_by;
  if (a.used_at) j["used_at"] = Iso(*a.used_at);
  return j;
}

}  // namespace

void RelativeTo(const std::string& dir, Config& c) {
  const std::string prefix = dir + "/";
  auto rel = [&](std::string& p) {
    if (p.starts_with(prefix)) p = p.substr(prefix.size());
  };
  for (std::string* p : {&c.tls_certificate, &c.tls_private_key, &c.tls_client_ca, &c.vault_path,
                         &c.audit_checkpoint_key, &c.audit_checkpoint_dir, &c.policy_public_key,
                         &c.policy_approval}) {
    rel(*p);
  }
  std::vector<TpmKeyConfig*> keys = {&c.ma, &c.escrow, &c.policy_signer};
  for (TpmKeyConfig& k : c.escrow_retired) keys.push_back(&k);
  for (TpmKeyConfig& k : c.ma_retiring) keys.push_back(&k);
  for (TpmKeyConfig* k : keys) {
    for (std::string* p : {&k->private_key, &k->certificate, &k->tpm_public, &k->tpm_private}) {
      rel(*p);
    }
  }
  for (std::string& p : c.ek_roots) rel(p);
  for (std::string& p : c.ek_intermediates) rel(p);
  for (std::string& p : c.ek_templates) rel(p);
}

namespace {

// escrow-<N+1> after the highest escrow-<N> in use (escrow-1 when there is none).
std::string NextEscrowKeyId(const Config& c) {
  std::vector<const TpmKeyConfig*> keys = {&c.escrow};
  for (const TpmKeyConfig& k : c.escrow_retired) keys.push_back(&k);
  return NextKeyId(keys, "escrow-");
}

}  // namespace

std::string NextKeyId(const std::vector<const TpmKeyConfig*>& keys, const std::string& prefix) {
  int highest = 0;
  for (const TpmKeyConfig* k : keys) {
    if (k->custody == "none" || !k->key_id.starts_with(prefix)) continue;
    int n = 0;
    const char* begin = k->key_id.data() + prefix.size();
    const char* end = k->key_id.data() + k->key_id.size();
    auto [ptr, ec] = std::from_chars(begin, end, n);
    if (ec == std::errc() && ptr == end) highest = std::max(highest, n);
  }
  return prefix + std::to_string(highest + 1);
}

std::vector<std::string> TakenKeyIds(const Config& c) {
  std::vector<std::string> taken = {c.ma.key_id};
  for (const TpmKeyConfig& k : c.ma_retiring) taken.push_back(k.key_id);
  if (c.escrow.custody != "none") taken.push_back(c.escrow.key_id);
  for (const TpmKeyConfig& k : c.escrow_retired) taken.push_back(k.key_id);
  return taken;
}

Status InitPolicyKey(const AdminContext& ctx, const std::string& state_dir) {
  const std::string config_path = state_dir + "/config.toml";
  TPMMA_ASSIGN_OR_RETURN(Config cfg, LoadConfig(config_path));
  if (!cfg.policy_public_key.empty()) {
    return Status(Code::kAlreadyExists, "this MA has a policy-signing key (" +
                                            cfg.policy_public_key +
                                            "): a new one would strand every MRK that follows it");
  }
  TPMMA_ASSIGN_OR_RETURN(Bytes ma_name, StorageKeyNameOf(ctx.env, cfg.ma));
  const std::string key = state_dir + "/policy/policy-key.pem";
  cfg.policy_public_key = state_dir + "/policy/policy-key.pub.pem";
  cfg.policy_approval = state_dir + "/policy/" + cfg.ma.key_id + ".approval";
  TPMMA_RETURN_IF_ERROR(ctx.env->CreateDirs(state_dir + "/policy", 0700));
  TPMMA_RETURN_IF_ERROR(CreatePolicyKey(key, cfg.policy_public_key, ctx.env));
  TPMMA_RETURN_IF_ERROR(WriteApproval(key, ma_name, cfg.policy_approval, ctx.env));
  TPMMA_ASSIGN_OR_RETURN(std::optional<tpm::Approval> approval,
                         LoadApproval(cfg, ma_name, ctx.env));  // as ma-server will
  TPMMA_ASSIGN_OR_RETURN(Bytes policy_name, tpm::PolicyKeyName(*approval));
  RelativeTo(state_dir, cfg);
  const std::string toml = ConfigToToml(cfg);
  TPMMA_RETURN_IF_ERROR(ParseConfig(toml, state_dir, config_path));
  TPMMA_RETURN_IF_ERROR(ctx.vault->AppendAudit(
      AdminEvent(ctx, "InitPolicyKey", HexEncode(policy_name), "approves " + cfg.ma.key_id)));
  TPMMA_RETURN_IF_ERROR(ctx.env->WriteFileAtomic(config_path, View(toml), 0600));
  if (ctx.json) {
    Print(ctx, {{"ok", true}, {"policy_key_name", HexEncode(policy_name)}, {"private_key", key}});
  } else {
    Line(ctx, "Policy-signing key " + HexEncode(policy_name) + " made (" + key +
                  "), approving MA key " + cfg.ma.key_id +
                  ". Restart ma-server; new lms stores then make MRKs that follow the MA. Keep " +
                  key + " offline: ma-server does not need it.");
  }
  return Status::Ok();
}

Status IssueCaCertifiedKey(const AdminContext& ctx, const std::string& state_dir,
                           const std::string& common_name, const std::string& key_file,
                           const std::string& cert_file) {
  for (const std::string& f : {key_file, cert_file}) {
    if (ctx.env->FileExists(state_dir + "/" + f)) {
      return Status(Code::kAlreadyExists, state_dir + "/" + f + " exists; choose another --key-id");
    }
  }
  constexpr size_t kMaxPem = 64 * 1024;
  auto ca_key_pem = ctx.env->ReadFile(state_dir + "/ca/ca-key.pem", kMaxPem);
  if (!ca_key_pem) {
    return Status(Code::kNotFound,
                  "the MA CA key (" + state_dir +
                      "/ca/ca-key.pem) certifies the new key: bring the offline copy back "
                      "for the rotation (" +
                      ca_key_pem.error().message() + ")");
  }
  SecureBytes ca_key_secure(ca_key_pem->begin(), ca_key_pem->end());
  Wipe(ca_key_pem->data(), ca_key_pem->size());
  TPMMA_ASSIGN_OR_RETURN(EvpPkeyPtr ca_key, PrivateKeyFromPem(ca_key_secure));
  TPMMA_ASSIGN_OR_RETURN(Bytes ca_cert_pem,
                         ctx.env->ReadFile(state_dir + "/ca/ca-cert.pem", kMaxPem));
  TPMMA_ASSIGN_OR_RETURN(X509Ptr ca_cert, CertificateFromPem(ca_cert_pem));

  // RSA-2048 so that it can live in a TPM too (TPM2_RSA_Decrypt, TPM2_Rewrap), like the
  // ones init makes.
  TPMMA_ASSIGN_OR_RETURN(EvpPkeyPtr key, GenerateKey(KeyType::kRsa2048));
  TPMMA_ASSIGN_OR_RETURN(X509Ptr cert, IssueCertificate({.common_name = common_name,
                                                         .profile = CertProfile::kMaStorage,
                                                         .dns_names = {},
                                                         .ip_addresses = {},
                                                         .valid_days = 3650},
                                                        key.get(), ca_key.get(), ca_cert.get()));
  TPMMA_ASSIGN_OR_RETURN(SecureString key_pem, PrivateKeyToPem(key.get()));
  TPMMA_ASSIGN_OR_RETURN(std::string cert_pem, CertificateToPem(cert.get()));
  const std::string dir = state_dir + "/" + key_file.substr(0, key_file.rfind('/'));
  TPMMA_RETURN_IF_ERROR(ctx.env->CreateDirs(dir, 0700));
  TPMMA_RETURN_IF_ERROR(ctx.env->WriteFileAtomic(
      state_dir + "/" + key_file,
      ByteView(reinterpret_cast<const uint8_t*>(key_pem.data()), key_pem.size()), 0600));
  return ctx.env->WriteFileAtomic(state_dir + "/" + cert_file, View(cert_pem), 0644);
}

Status RotateEscrowKey(const AdminContext& ctx, const std::string& state_dir,
                       const std::string& new_key_id) {
  const std::string config_path = state_dir + "/config.toml";
  TPMMA_ASSIGN_OR_RETURN(Config cfg, LoadConfig(config_path));
  const std::string id = new_key_id.empty() ? NextEscrowKeyId(cfg) : new_key_id;
  std::vector<std::string> taken = TakenKeyIds(cfg);
  if (std::find(taken.begin(), taken.end(), id) != taken.end()) {
    return Status(Code::kAlreadyExists, "key id " + id +
                                            " is in use by this MA (a key id is never reused: "
                                            "packages name the key they were escrowed to)");
  }
  const std::string key_file = "escrow/" + id + "-key.pem";
  const std::string cert_file = "escrow/" + id + "-cert.pem";
  TPMMA_RETURN_IF_ERROR(
      IssueCaCertifiedKey(ctx, state_dir, "tpm-ma escrow key " + id, key_file, cert_file));

  std::string retired = "none";
  if (cfg.escrow.custody != "none") {
    retired = cfg.escrow.key_id;
    cfg.escrow_retired.push_back(cfg.escrow);
  }
  cfg.escrow = TpmKeyConfig::Named("software", id);
  cfg.escrow.private_key = state_dir + "/" + key_file;
  cfg.escrow.certificate = state_dir + "/" + cert_file;
  RelativeTo(state_dir, cfg);
  // The new file must be one ma-server accepts; config.toml is replaced last, atomically.
  const std::string toml = ConfigToToml(cfg);
  TPMMA_RETURN_IF_ERROR(ParseConfig(toml, state_dir, config_path));
  TPMMA_RETURN_IF_ERROR(
      ctx.vault->AppendAudit(AdminEvent(ctx, "RotateEscrowKey", id, "retired " + retired)));
  TPMMA_RETURN_IF_ERROR(ctx.env->WriteFileAtomic(config_path, View(toml), 0600));

  std::vector<std::string> retired_ids;
  for (const TpmKeyConfig& k : cfg.escrow_retired) retired_ids.push_back(k.key_id);
  if (ctx.json) {
    Print(ctx, {{"ok", true},
                {"escrow_key_id", id},
                {"private_key", state_dir + "/" + key_file},
                {"retired", retired_ids}});
  } else {
    Line(ctx, "Escrow key " + id + " made (" + state_dir + "/" + key_file + ")" +
                  (retired == "none"
                       ? std::string(": this MA now offers escrow custody.")
                       : "; " + retired + " is retired: it still releases what it escrowed."));
    Line(ctx,
         "Restart ma-server to use it. lms stores in escrow custody move to it at their next "
         "backup. Keep the retired keys as long as any package uses them.");
  }
  return Status::Ok();
}

Result<int64_t> ParseDuration(std::string_view text) {
  if (text.empty()) return Error(Code::kInvalidArgument, "empty duration");
  int64_t unit = 1;
  switch (text.back()) {
    case 's':
      unit = 1;
      text.remove_suffix(1);
      break;
    case 'm':
      unit = 60;
      text.remove_suffix(1);
      break;
    case 'h':
      unit = 3600;
      text.remove_suffix(1);
      break;
    case 'd':
      unit = 86400;
      text.remove_suffix(1);
      break;
    default:
      break;
  }
  int64_t n = 0;
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
  if (text.empty() || ec != std::errc() || ptr != text.data() + text.size() || n <= 0 ||
      n > 366 * 86400 / unit) {
    return Error(Code::kInvalidArgument,
                 "a duration is a positive number with s, m, h or d (e.g. 24h), at most a year");
  }
  return n * unit;
}

Status RevokePlatform(const AdminContext& ctx, const std::string& id, const std::string& reason) {
  TPMMA_RETURN_IF_ERROR(
      ctx.vault->RevokePlatform(id, AdminEvent(ctx, "RevokePlatform", id, reason)));
  if (ctx.json) {
    Print(ctx, {{"ok", true}, {"revoked", id}});
  } else {
    Line(ctx, "Revoked platform " + id + ": its sessions and downloads are refused from now on.");
  }
  return Status::Ok();
}

Status ListPackages(const AdminContext& ctx, const std::optional<std::string>& platform) {
  json all = json::array();
  storage::PackageQuery q;
  q.source_platform_id = platform;
  q.page_size = 1000;
  do {
    TPMMA_ASSIGN_OR_RETURN(auto page, ctx.vault->QueryPackages(q));
    for (const auto& d : page.packages) all.push_back(DescriptorJson(d));
    q.page_token = page.next_page_token;
  } while (!q.page_token.empty());
  if (ctx.json) {
    Print(ctx, {{"ok", true}, {"packages", all}});
    return Status::Ok();
  }
  Line(ctx, fmt::format("{:<37} {:>5} {:>8} {:<13} {:<21} {}", "PACKAGE", "KEYS", "BYTES",
                        "CUSTODY", "UPLOADED", "PLATFORM"));
  for (const auto& d : all) {
    Line(ctx,
         fmt::format("{:<37} {:>5} {:>8} {:<13} {:<21} {}", d["id"].get<std::string>(),
                     d["keys"].size(), d["size"].get<int64_t>(), d["custody"].get<std::string>(),
                     d["uploaded_at"].get<std::string>(), d["source_platform"].get<std::string>()));
  }
  Line(ctx, fmt::format("{} package(s)", all.size()));
  return Status::Ok();
}

Status ShowPackage(const AdminContext& ctx, const std::string& id) {
  TPMMA_ASSIGN_OR_RETURN(storage::PackageDescriptor d, ctx.vault->GetPackageDescriptor(id));
  json j = DescriptorJson(d);
  if (ctx.json) {
    Print(ctx, {{"ok", true}, {"package", j}});
    return Status::Ok();
  }
  Line(ctx, "package:  " + d.package_id);
  Line(ctx, "platform: " + d.source_platform_id);
  Line(ctx, "created:  " + Iso(d.created_at) + "   uploaded: " + Iso(d.uploaded_at));
  Line(ctx, fmt::format("size:     {} bytes, sha256 {}", d.size, HexEncode(d.sha256)));
  Line(ctx, "custody:  " + std::string(storage::ToString(d.custody)));
  Line(ctx,
       "wrapped:  to MA key " + (d.wrap_key_id.empty() ? "(not recorded yet)" : d.wrap_key_id));
  for (const auto& k : d.keys)
    Line(ctx, fmt::format("  key {}  {:<8} {}", k.key_id, k.usage, k.label));
  return Status::Ok();
}

Status DeletePackage(const AdminContext& ctx, const std::string& id, const std::string& reason) {
  TPMMA_RETURN_IF_ERROR(ctx.vault->DeletePackage(id, AdminEvent(ctx, "DeletePackage", id, reason)));
  if (ctx.json) {
    Print(ctx, {{"ok", true}, {"deleted", id}});
  } else {
    Line(ctx, "Deleted package " + id + ".");
  }
  return Status::Ok();
}

Status Approve(const AdminContext& ctx, const ApprovalGrant& g) {
  TPMMA_ASSIGN_OR_RETURN(
      storage::Approval a,
      GrantApproval(
          *ctx.vault, ctx.approvals, g, ctx.actor, ctx.env->NowUnixSeconds(),
          AdminEvent(ctx, "ApproveRestore", "",
                     fmt::format("{} -> {}: {}", g.old_platform_id, g.new_platform_id, g.reason))));
  if (ctx.json) {
    Print(ctx, {{"ok", true}, {"approval", ApprovalJson(a, ctx.env->NowUnixSeconds())}});
    return Status::Ok();
  }
  if (a.old_platform_id == a.new_platform_id) {
    Line(ctx, fmt::format("Approval {} ({}): the escrowed inner keys of {}'s packages may be "
                          "released to it (a restore after a TPM clear) until {}.",
                          a.id, storage::ToString(a.state), a.old_platform_id, Iso(a.expires_at)));
  } else {
    Line(ctx, fmt::format("Approval {} ({}): packages of {} may be restored to {} until {}.", a.id,
                          storage::ToString(a.state), a.old_platform_id, a.new_platform_id,
                          Iso(a.expires_at)));
  }
  if (a.state == storage::ApprovalState::kPending) {
    Line(ctx,
         "A second operator must confirm it: ma-admin approvals confirm " + std::to_string(a.id));
  }
  return Status::Ok();
}

Status ConfirmApproval(const AdminContext& ctx, int64_t id) {
  TPMMA_ASSIGN_OR_RETURN(
      storage::Approval a,
      ctx.vault->ConfirmApproval(id, ctx.actor, ctx.env->NowUnixSeconds(),
                                 AdminEvent(ctx, "ConfirmApproval", std::to_string(id), "")));
  if (ctx.json) {
    Print(ctx, {{"ok", true}, {"approval", ApprovalJson(a, ctx.env->NowUnixSeconds())}});
  } else {
    Line(ctx, fmt::format("Approval {} is now {}.", a.id, storage::ToString(a.state)));
  }
  return Status::Ok();
}

Status RevokeApproval(const AdminContext& ctx, int64_t id, const std::string& reason) {
  TPMMA_RETURN_IF_ERROR(
      ctx.vault->RevokeApproval(id, AdminEvent(ctx, "RevokeApproval", std::to_string(id), reason)));
  if (ctx.json) {
    Print(ctx, {{"ok", true}, {"revoked", id}});
  } else {
    Line(ctx, fmt::format("Revoked approval {}.", id));
  }
  return Status::Ok();
}

Status ListApprovals(const AdminContext& ctx, const std::string& new_platform) {
  TPMMA_ASSIGN_OR_RETURN(auto list, ctx.vault->ListApprovals(new_platform));
  json all = json::array();
  const int64_t now = ctx.env->NowUnixSeconds();
  for (const auto& a : list) all.push_back(ApprovalJson(a, now));
  if (ctx.json) {
    Print(ctx, {{"ok", true}, {"approvals", all}});
    return Status::Ok();
  }
  // Full platform ids: an operator pastes them back into approve and platforms show.
  Line(ctx, fmt::format("{:>4} {:<8} {:<21} {:<68} {:<68} {}", "ID", "STATUS", "EXPIRES", "OLD",
                        "NEW", "REASON"));
  for (const auto& a : list) {
    Line(ctx, fmt::format("{:>4} {:<8} {:<21} {:<68} {:<68} {}", a.id, ApprovalStatusAt(a, now),
                          Iso(a.expires_at), a.old_platform_id, a.new_platform_id, a.reason));
  }
  return Status::Ok();
}

Status ListAudit(const AdminContext& ctx, const AuditQuery& query) {
  // The vault filters on one actor/object; a platform appears as either, so filter here.
  storage::AuditFilter f;
  f.action = query.action;
  f.time_from = query.since;
  f.time_to = query.until;
  if (query.operator_name) f.actor = *query.operator_name;
  f.page_size = 1000;
  json all = json::array();
  std::vector<storage::AuditRecord> rows;
  do {
    TPMMA_ASSIGN_OR_RETURN(auto page, ctx.vault->ListAudit(f));
    for (auto& r : page.records) {
      if (query.platform && r.event.actor != *query.platform && r.event.object != *query.platform) {
        continue;
      }
      rows.push_back(std::move(r));
    }
    f.page_token = page.next_page_token;
  } while (!f.page_token.empty());
  // The newest `limit` rows.
  if (rows.size() > query.limit) rows.erase(rows.begin(), rows.end() - query.limit);
  for (const auto& r : rows) {
    all.push_back({{"seq", r.seq},
                   {"time", Iso(r.event.time)},
                   {"actor", r.event.actor},
                   {"action", r.event.action},
                   {"object", r.event.object},
                   {"outcome", r.event.outcome},
                   {"detail", r.event.detail},
                   {"hash", HexEncode(r.hash)}});
  }
  if (ctx.json) {
    Print(ctx, {{"ok", true}, {"records", all}});
    return Status::Ok();
  }
  for (const auto& r : rows) {
    Line(ctx, fmt::format("{:>6} {} {:<22} {:<18} {} {} {}", r.seq, Iso(r.event.time),
                          r.event.action, r.event.outcome, r.event.actor,
                          r.event.object.empty() ? "-" : r.event.object, r.event.detail));
  }
  return Status::Ok();
}

Status IssueOperator(const AdminContext& ctx, const std::string& state_dir, const std::string& name,
                     const std::string& role_text, const std::string& out_dir) {
  const bool name_ok =
      !name.empty() && name.size() <= 64 && name[0] >= 'a' && name[0] <= 'z' &&
      std::all_of(name.begin(), name.end(), [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
      });
  if (!name_ok) {
    return Status(Code::kInvalidArgument,
                  "an operator name is 1-64 of a-z 0-9 . _ - and starts with a letter");
  }
  storage::OperatorRole role;
  if (role_text == "helpdesk") {
    role = storage::OperatorRole::kHelpdesk;
  } else if (role_text == "auditor") {
    role = storage::OperatorRole::kAuditor;
  } else if (role_text == "admin") {
    role = storage::OperatorRole::kAdmin;
  } else {
    return Status(Code::kInvalidArgument, "--role must be helpdesk, auditor or admin");
  }
  if (auto existing = ctx.vault->GetOperator(name); existing.has_value()) {
    return Status(Code::kAlreadyExists,
                  "operator " + name + " exists (revoked or not): pick another name");
  }
  // The bundle is the operator's login: a directory made for it is the owner's alone.
  TPMMA_RETURN_IF_ERROR(ctx.env->CreateDirs(out_dir, 0700).WithContext("--out"));
  constexpr size_t kMaxPem = 64 * 1024;
  TPMMA_ASSIGN_OR_RETURN(Bytes ca_key_pem,
                         ctx.env->ReadFile(state_dir + "/ca/operator-ca-key.pem", kMaxPem));
  SecureBytes ca_key_secure(ca_key_pem.begin(), ca_key_pem.end());
  Wipe(ca_key_pem.data(), ca_key_pem.size());
  TPMMA_ASSIGN_OR_RETURN(EvpPkeyPtr ca_key, PrivateKeyFromPem(ca_key_secure));
  TPMMA_ASSIGN_OR_RETURN(Bytes ca_cert_pem,
                         ctx.env->ReadFile(state_dir + "/ca/operator-ca-cert.pem", kMaxPem));
  TPMMA_ASSIGN_OR_RETURN(X509Ptr ca_cert, CertificateFromPem(ca_cert_pem));

  TPMMA_ASSIGN_OR_RETURN(EvpPkeyPtr key, GenerateKey(KeyType::kEcP256));
  TPMMA_ASSIGN_OR_RETURN(X509Ptr cert,
                         IssueCertificate({.common_name = name + " (" + role_text + ")",
                                           .profile = CertProfile::kTlsClient,
                                           .dns_names = {},
                                           .ip_addresses = {},
                                           .valid_days = 365},
                                          key.get(), ca_key.get(), ca_cert.get()));
  TPMMA_ASSIGN_OR_RETURN(std::string fingerprint, CertificateFingerprint(cert.get()));
  TPMMA_ASSIGN_OR_RETURN(SecureString key_pem, PrivateKeyToPem(key.get()));
  TPMMA_ASSIGN_OR_RETURN(std::string cert_pem, CertificateToPem(cert.get()));
  SecureString bundle = key_pem;
  bundle.append(cert_pem.begin(), cert_pem.end());
  auto view = [](const auto& s) {
    return ByteView(reinterpret_cast<const uint8_t*>(s.data()), s.size());
  };
  // Files first, registration last: a crash in between leaves an unregistered (useless)
  // certificate, never a registered one nobody has.
  TPMMA_RETURN_IF_ERROR(
      ctx.env->WriteFileAtomic(out_dir + "/" + name + ".key", view(key_pem), 0600));
  TPMMA_RETURN_IF_ERROR(
      ctx.env->WriteFileAtomic(out_dir + "/" + name + ".crt", view(cert_pem), 0600));
  TPMMA_RETURN_IF_ERROR(
      ctx.env->WriteFileAtomic(out_dir + "/" + name + ".pem", view(bundle), 0600));
  const int64_t now = ctx.env->NowUnixSeconds();
  TPMMA_RETURN_IF_ERROR(ctx.vault->AddOperator(
      storage::Operator{.name = name,
                        .role = role,
                        .cert_fingerprint = fingerprint,
                        .created_at = now,
                        .revoked_at = std::nullopt},
      AdminEvent(ctx, "AddOperator", "operator:" + name, "role " + role_text)));
  if (ctx.json) {
    Print(ctx, {{"ok", true},
                {"operator", name},
                {"role", role_text},
                {"fingerprint", fingerprint},
                {"bundle", out_dir + "/" + name + ".pem"}});
  } else {
    Line(ctx, fmt::format("Operator {} ({}) registered; certificate SHA-256 {}.", name, role_text,
                          fingerprint));
    Line(ctx, "Give " + out_dir + "/" + name +
                  ".pem (private key + certificate) to the operator only; it is their login.");
  }
  return Status::Ok();
}

Status RevokeOperator(const AdminContext& ctx, const std::string& name, const std::string& reason) {
  TPMMA_RETURN_IF_ERROR(
      ctx.vault->RevokeOperator(name, ctx.env->NowUnixSeconds(),
                                AdminEvent(ctx, "RevokeOperator", "operator:" + name, reason)));
  if (ctx.json) {
    Print(ctx, {{"ok", true}, {"revoked", name}});
  } else {
    Line(ctx, "Revoked operator " + name + ": their certificate is refused from now on.");
  }
  return Status::Ok();
}

Status ListOperators(const AdminContext& ctx) {
  TPMMA_ASSIGN_OR_RETURN(auto ops, ctx.vault->ListOperators());
  json all = json::array();
  for (const auto& o : ops) {
    json j = {{"name", o.name},
              {"role", std::string(storage::ToString(o.role))},
              {"fingerprint", o.cert_fingerprint},
              {"created_at", Iso(o.created_at)}};
    if (o.revoked_at) j["revoked_at"] = Iso(*o.revoked_at);
    all.push_back(j);
  }
  if (ctx.json) {
    Print(ctx, {{"ok", true}, {"operators", all}});
    return Status::Ok();
  }
  Line(ctx, fmt::format("{:<20} {:<9} {:<21} {}", "NAME", "ROLE", "REVOKED", "FINGERPRINT"));
  for (const auto& o : ops) {
    Line(ctx,
         fmt::format("{:<20} {:<9} {:<21} {}", o.name, storage::ToString(o.role),
                     o.revoked_at ? Iso(*o.revoked_at) : "-", o.cert_fingerprint.substr(0, 16)));
  }
  return Status::Ok();
}

}  // namespace tpmma::server
