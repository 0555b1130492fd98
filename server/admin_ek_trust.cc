// SPDX-License-Identifier: GPL-2.0-or-later
#include "server/admin_ek_trust.h"

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <ctime>
#include <filesystem>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "server/admin_text.h"
#include "server/config.h"
#include "server/ek_trust.h"
#include "server/pki.h"

namespace tpmma::server {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr size_t kMaxCertFileBytes = 1024 * 1024;

std::string Day(int64_t t) {
  std::time_t tt = static_cast<std::time_t>(t);
  std::tm tm{};
  gmtime_r(&tt, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

std::string_view KindName(EkTrustKind k) {
  return k == EkTrustKind::kRoot ? "root" : "intermediate";
}

std::string AbsDir(const std::string& dir) {
  std::error_code ec;
  return fs::absolute(dir, ec).lexically_normal().string();
}

// The directories ek-trust writes to.
std::string ManagedDir(const std::string& state_dir, EkTrustKind k) {
  return AbsDir(state_dir) +
         (k == EkTrustKind::kRoot ? "/trust/ek-roots" : "/trust/ek-intermediates");
}

// One certificate the config names, with where it is.
struct TrustEntry {
  EkTrustKind kind;
  CertSummary cert;
  std::string file;
};

Status CollectFile(Env* env, const std::string& file, EkTrustKind kind,
                   std::vector<TrustEntry>& out) {
  TPMMA_ASSIGN_OR_RETURN(Bytes bytes, env->ReadFile(file, kMaxCertFileBytes));
  TPMMA_ASSIGN_OR_RETURN(std::vector<X509Ptr> certs, ParseCertificates(bytes, file));
  for (X509Ptr& c : certs) {
    TPMMA_ASSIGN_OR_RETURN(CertSummary s, Summarize(c.get()));
    out.push_back(TrustEntry{kind, std::move(s), file});
  }
  return Status::Ok();
}

Result<std::vector<TrustEntry>> Collect(Env* env, const Config& cfg) {
  std::vector<TrustEntry> out;
  for (auto [paths, kind] : {std::pair{&cfg.ek_roots, EkTrustKind::kRoot},
                             std::pair{&cfg.ek_intermediates, EkTrustKind::kIntermediate}}) {
    for (const std::string& path : *paths) {
      auto names = env->ListDir(path);
      if (!names) {
        TPMMA_RETURN_IF_ERROR(CollectFile(env, path, kind, out));
        continue;
      }
      std::sort(names->begin(), names->end());
      for (const std::string& n : *names) {
        if (!n.ends_with(".pem") && !n.ends_with(".crt")) continue;
        TPMMA_RETURN_IF_ERROR(CollectFile(env, path + "/" + n, kind, out));
      }
    }
  }
  return out;
}

bool SelfSigned(X509* c) {
  EVP_PKEY* key = X509_get0_pubkey(c);
  bool ok = X509_check_issued(c, c) == X509_V_OK && key != nullptr && X509_verify(c, key) == 1;
  ERR_clear_error();
  return ok;
}

// Why `c` may not be added as `kind` (empty: it may).
std::string Refusal(X509* c, const CertSummary& s, EkTrustKind kind, int64_t now) {
  const std::string who = "'" + s.subject + "'";
  if ((X509_get_extension_flags(c) & EXFLAG_CA) == 0) {
    return who +
           " is not a CA certificate (no basicConstraints CA:TRUE): only CA certificates are "
           "EK roots or intermediates; `ma-admin ek check FILE` checks an EK certificate";
  }
  if (s.not_after < now) return who + " expired on " + Day(s.not_after);
  if (s.not_before > now) return who + " is not valid before " + Day(s.not_before);
  const bool self = SelfSigned(c);
  if (kind == EkTrustKind::kRoot && !self) {
    return who + " is issued by '" + s.issuer +
           "', not self-signed: add it with --intermediate (a root is never needed in the "
           "pool), and its root with --root";
  }
  if (kind == EkTrustKind::kIntermediate && self) {
    return who +
           " is self-signed: a root, which the pool never trusts; add it with --root if "
           "you trust it";
  }
  return "";
}

// config.toml names the managed directory for `kind` (added when an older init did not).
Status EnsureConfigured(const AdminContext& ctx, const std::string& state_dir, Config& cfg,
                        EkTrustKind kind) {
  const std::string dir = ManagedDir(state_dir, kind);
  std::vector<std::string>& paths =
      kind == EkTrustKind::kRoot ? cfg.ek_roots : cfg.ek_intermediates;
  for (const std::string& p : paths) {
    if (AbsDir(p) == dir) return Status::Ok();
  }
  paths.push_back(dir);
  const std::string config_path = state_dir + "/config.toml";
  RelativeTo(AbsDir(state_dir), cfg);
  const std::string toml = ConfigToToml(cfg);
  TPMMA_RETURN_IF_ERROR(ParseConfig(toml, AbsDir(state_dir), config_path));
  return ctx.env->WriteFileAtomic(config_path, View(toml), 0600);
}

json EntryJson(const TrustEntry& e) {
  return {{"kind", std::string(KindName(e.kind))},
          {"subject", e.cert.subject},
          {"issuer", e.cert.issuer},
          {"fingerprint", e.cert.fingerprint},
          {"not_after", Day(e.cert.not_after)},
          {"file", e.file}};
}

}  // namespace

Status EkTrustAdd(const AdminContext& ctx, const std::string& state_dir, const std::string& file,
                  EkTrustKind kind) {
  TPMMA_ASSIGN_OR_RETURN(Config cfg, LoadConfig(state_dir + "/config.toml"));
  TPMMA_ASSIGN_OR_RETURN(Bytes bytes, ctx.env->ReadFile(file, kMaxCertFileBytes));
  TPMMA_ASSIGN_OR_RETURN(std::vector<X509Ptr> certs, ParseCertificates(bytes, file));
  if (certs.size() != 1) {
    return Status(Code::kInvalidArgument, fmt::format("{} holds {} certificates: add them one at "
                                                      "a time, each with its kind",
                                                      file, certs.size()));
  }
  X509* cert = certs.front().get();
  TPMMA_ASSIGN_OR_RETURN(CertSummary s, Summarize(cert));
  if (std::string why = Refusal(cert, s, kind, ctx.env->NowUnixSeconds()); !why.empty()) {
    return Status(Code::kInvalidArgument, file + ": " + why);
  }
  TPMMA_ASSIGN_OR_RETURN(std::vector<TrustEntry> have, Collect(ctx.env, cfg));
  for (const TrustEntry& e : have) {
    if (e.cert.fingerprint != s.fingerprint) continue;
    if (e.kind != kind) {
      return Status(Code::kConflict,
                    fmt::format("'{}' is already trusted as {} ({}): remove it "
                                "first with `ma-admin ek-trust remove {}`",
                                s.subject, KindName(e.kind), e.file, s.fingerprint));
    }
    if (ctx.json) {
      std::fprintf(ctx.out, "%s\n", json{{"ok", true}, {"already", EntryJson(e)}}.dump(2).c_str());
    } else {
      Line(ctx, fmt::format("{} '{}' is already in {}", KindName(kind), s.subject, e.file));
    }
    return Status::Ok();
  }
  const std::string dir = ManagedDir(state_dir, kind);
  TPMMA_RETURN_IF_ERROR(ctx.env->CreateDirs(dir, 0700));
  TPMMA_ASSIGN_OR_RETURN(std::string pem, CertificateToPem(cert));
  const std::string path = dir + "/" + s.fingerprint + ".pem";
  TPMMA_RETURN_IF_ERROR(ctx.env->WriteFileAtomic(path, View(pem), 0644));
  TPMMA_RETURN_IF_ERROR(EnsureConfigured(ctx, state_dir, cfg, kind));
  TPMMA_RETURN_IF_ERROR(ctx.vault->AppendAudit(
      AdminEvent(ctx, "EkTrustAdd", s.fingerprint, std::string(KindName(kind)) + " " + s.subject)));
  TrustEntry added{kind, s, path};
  if (ctx.json) {
    std::fprintf(ctx.out, "%s\n", json{{"ok", true}, {"added", EntryJson(added)}}.dump(2).c_str());
    return Status::Ok();
  }
  Line(ctx, fmt::format("added {} '{}'\n  fingerprint {}\n  valid until {}\n  file {}",
                        KindName(kind), s.subject, s.fingerprint, Day(s.not_after), path));
  Line(ctx, "restart ma-server to use it (it reads its EK trust at start)");
  return Status::Ok();
}

Status EkTrustList(const AdminContext& ctx, const std::string& state_dir) {
  TPMMA_ASSIGN_OR_RETURN(Config cfg, LoadConfig(state_dir + "/config.toml"));
  TPMMA_ASSIGN_OR_RETURN(std::vector<TrustEntry> all, Collect(ctx.env, cfg));
  if (ctx.json) {
    json list = json::array();
    for (const TrustEntry& e : all) list.push_back(EntryJson(e));
    std::fprintf(ctx.out, "%s\n", json{{"ok", true}, {"ek_trust", list}}.dump(2).c_str());
    return Status::Ok();
  }
  Line(ctx, fmt::format("{:<12} {:<20} {:<64} {}", "KIND", "NOT AFTER", "FINGERPRINT", "SUBJECT"));
  for (const TrustEntry& e : all) {
    Line(ctx, fmt::format("{:<12} {:<20} {:<64} {}", KindName(e.kind), Day(e.cert.not_after),
                          e.cert.fingerprint, e.cert.subject));
  }
  if (all.empty()) Line(ctx, "(no EK roots: no TPM can authenticate)");
  return Status::Ok();
}

Status EkTrustRemove(const AdminContext& ctx, const std::string& state_dir,
                     const std::string& fingerprint) {
  std::string want = fingerprint;
  std::transform(want.begin(), want.end(), want.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  want.erase(std::remove(want.begin(), want.end(), ':'), want.end());
  if (want.size() < 8) {
    return Status(Code::kInvalidArgument, "give at least 8 hex digits of the fingerprint");
  }
  TPMMA_ASSIGN_OR_RETURN(Config cfg, LoadConfig(state_dir + "/config.toml"));
  TPMMA_ASSIGN_OR_RETURN(std::vector<TrustEntry> all, Collect(ctx.env, cfg));
  std::vector<const TrustEntry*> hits;
  for (const TrustEntry& e : all) {
    if (e.cert.fingerprint.starts_with(want)) hits.push_back(&e);
  }
  if (hits.empty()) return Status(Code::kNotFound, "no EK root or intermediate " + fingerprint);
  for (const TrustEntry* h : hits) {
    if (h->cert.fingerprint != hits.front()->cert.fingerprint) {
      return Status(Code::kInvalidArgument, "fingerprint prefix " + fingerprint +
                                                " is ambiguous: give more digits (ek-trust list)");
    }
  }
  const TrustEntry& e = *hits.front();
  const std::string managed = AbsDir(state_dir) + "/trust/";
  const size_t in_file =
      std::count_if(all.begin(), all.end(), [&](const TrustEntry& o) { return o.file == e.file; });
  if (!AbsDir(e.file).starts_with(managed) || in_file != 1) {
    return Status(Code::kPermissionDenied,
                  fmt::format("'{}' is in {} ({} certificates), which ek-trust does not manage: "
                              "edit that file or trust.{} in config.toml",
                              e.cert.subject, e.file, in_file,
                              e.kind == EkTrustKind::kRoot ? "ek_roots" : "ek_intermediates"));
  }
  TPMMA_RETURN_IF_ERROR(ctx.env->RemoveFile(e.file));
  TPMMA_RETURN_IF_ERROR(
      ctx.vault->AppendAudit(AdminEvent(ctx, "EkTrustRemove", e.cert.fingerprint,
                                        std::string(KindName(e.kind)) + " " + e.cert.subject)));
  if (ctx.json) {
    std::fprintf(ctx.out, "%s\n", json{{"ok", true}, {"removed", EntryJson(e)}}.dump(2).c_str());
  } else {
    Line(ctx, fmt::format("removed {} '{}' ({}); restart ma-server to apply", KindName(e.kind),
                          e.cert.subject, e.file));
  }
  return Status::Ok();
}

Status EkCheck(const AdminContext& ctx, const std::string& state_dir, const std::string& cert_file,
               const std::vector<std::string>& chain_files) {
  TPMMA_ASSIGN_OR_RETURN(Config cfg, LoadConfig(state_dir + "/config.toml"));
  TPMMA_ASSIGN_OR_RETURN(std::unique_ptr<EkTrust> trust,
                         EkTrust::Load(cfg.ek_roots, cfg.ek_intermediates, ctx.env));
  TPMMA_ASSIGN_OR_RETURN(Bytes bytes, ctx.env->ReadFile(cert_file, kMaxCertFileBytes));
  TPMMA_ASSIGN_OR_RETURN(std::vector<X509Ptr> leaf, ParseCertificates(bytes, cert_file));
  if (leaf.size() != 1) {
    return Status(Code::kInvalidArgument,
                  cert_file +
                      " holds several certificates: give the EK certificate alone and "
                      "the others with --chain");
  }
  std::vector<X509Ptr> chain;
  std::vector<X509*> sent;
  for (const std::string& f : chain_files) {
    TPMMA_ASSIGN_OR_RETURN(Bytes b, ctx.env->ReadFile(f, kMaxCertFileBytes));
    TPMMA_ASSIGN_OR_RETURN(std::vector<X509Ptr> certs, ParseCertificates(b, f));
    for (X509Ptr& c : certs) {
      sent.push_back(c.get());
      chain.push_back(std::move(c));
    }
  }
  TPMMA_ASSIGN_OR_RETURN(VerifiedPath path,
                         trust->Verify(leaf.front().get(), sent, ctx.env->NowUnixSeconds()));
  if (ctx.json) {
    json list = json::array();
    for (size_t i = 0; i < path.certs.size(); ++i) {
      list.push_back({{"subject", path.certs[i].subject},
                      {"fingerprint", path.certs[i].fingerprint},
                      {"not_after", Day(path.certs[i].not_after)},
                      {"from", std::string(PathSourceName(path.sources[i]))}});
    }
    json out = {{"ok", true}, {"trusted", true}, {"path", list}, {"anchor", list.back()}};
    std::fprintf(ctx.out, "%s\n", out.dump(2).c_str());
    return Status::Ok();
  }
  Line(ctx, fmt::format("trusted: '{}' chains to the trusted root '{}'", path.certs.front().subject,
                        path.certs.back().subject));
  for (size_t i = 0; i < path.certs.size(); ++i) {
    Line(ctx, fmt::format("  {} {:<11} {}  (sha256 {}, until {})", i,
                          PathSourceName(path.sources[i]), path.certs[i].subject,
                          path.certs[i].fingerprint.substr(0, 16), Day(path.certs[i].not_after)));
  }
  Line(ctx,
       "(from: certificate = the EK certificate, sent = --chain, pool = the MA's "
       "intermediate pool, root = the anchor)");
  return Status::Ok();
}

}  // namespace tpmma::server
