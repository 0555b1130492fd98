// SPDX-License-Identifier: GPL-2.0-or-later
// The lms commands that talk to the Migration Authority: authenticate, backup, query,
// restore, delete, status (remote.h does the work).
#include <fcntl.h>
#include <termios.h>
#include <unistd.h>

#include <cstdio>
#include <string>

#include "client/lms/cli.h"
#include "client/lms/remote.h"
#include "common/text.h"
#include "schema/package.h"

namespace tpmma::lms::cli {

namespace {

using nlohmann::json;

constexpr size_t kMaxRecoveryCodeInput = 1024;

json OptUtc(const std::optional<int64_t>& t) {
  return t ? json(Utc(*t)) : json(nullptr);
}

// {"from": OLD, "to": NEW} when a backup or restore moved the store to the MA's new escrow
// key, else null.
json RotationJson(const std::optional<EscrowKeyRotation>& r) {
  return r ? json{{"from", r->from}, {"to", r->to}} : json(nullptr);
}

MaFlags FlagsOf(const Globals& g) {
  return {.url = g.ma_url, .ca_file = g.ma_ca, .ek_intermediates = g.ek_intermediates};
}

// The store, its TPM and the MA settings every MA command starts from.
struct Context {
  std::unique_ptr<Lms> lms;
  MaSettings ma;
};

Result<Context> Open(const Globals& g) {
  Context c;
  TPMMA_ASSIGN_OR_RETURN(c.lms, Lms::Open(g.LmsOptions()));
  ShowProgress(g, *c.lms);
  TPMMA_ASSIGN_OR_RETURN(c.ma, ResolveMaSettings(c.lms->store(), FlagsOf(g)));
  return c;
}

// Reads the recovery code from /dev/tty with echo off (never shown, never kept beyond
// wiped buffers).
Result<SecureString> PromptRecoveryCode() {
  const int fd = ::open("/dev/tty", O_RDWR | O_CLOEXEC | O_NOCTTY);
  if (fd < 0 || !::isatty(STDIN_FILENO)) {
    if (fd >= 0) ::close(fd);
    return Error(Code::kInvalidArgument,
                 "the recovery code shown at lms init is needed: give it with "
                 "--recovery-code-file FILE (or - for stdin), or run lms restore on a terminal");
  }
  const char prompt[] = "Recovery code (shown at lms init; not echoed): ";
  (void)!::write(fd, prompt, sizeof prompt - 1);
  termios old{};
  const bool have_termios = ::tcgetattr(fd, &old) == 0;
  if (have_termios) {
    termios quiet = old;
    quiet.c_lflag &= ~static_cast<tcflag_t>(ECHO);
    quiet.c_lflag |= ECHONL;
    ::tcsetattr(fd, TCSAFLUSH, &quiet);
  }
  SecureString code;
  code.reserve(kMaxRecoveryCodeInput + 1);
  char c = 0;
  while (code.size() <= kMaxRecoveryCodeInput && ::read(fd, &c, 1) == 1 && c != '\n') {
    code.push_back(c);
  }
  c = 0;
  if (have_termios) ::tcsetattr(fd, TCSAFLUSH, &old);
  ::close(fd);
  if (code.size() > kMaxRecoveryCodeInput) {
    return Error(Code::kInvalidArgument, "that is too long for a recovery code");
  }
  return code;
}

Result<SecureString> RecoveryCodeFrom(const Globals& g, const std::string& file) {
  if (file.empty()) return PromptRecoveryCode();
  TPMMA_ASSIGN_OR_RETURN(SecureBytes data, ReadSecretInput(g, file, kMaxRecoveryCodeInput));
  SecureString code(data.begin(), data.end());
  return code;
}

std::string SizeText(uint64_t bytes) {
  if (bytes < 10 * 1024) return std::to_string(bytes) + " B";
  return std::to_string((bytes + 512) / 1024) + " KB";
}

json DescriptorJson(const client::PackageDescriptor& d) {
  return {{"package_id", d.package_id},
          {"source_platform_id", d.source_platform_id},
          {"access", d.access},
          {"custody", d.custody_mode},
          {"created_at", Utc(d.created_at)},
          {"uploaded_at", Utc(d.uploaded_at)},
          {"keys", d.key_count},
          {"size_bytes", d.size_bytes}};
}

}  // namespace

void AddMaCommands(CLI::App& app, Globals& g, std::vector<Command>* commands) {
  auto add = [&](const char* name, const char* help) {
    CLI::App* sub = app.add_subcommand(name, help);
    sub->fallthrough();  // global options after the command name too
    return sub;
  };

  // ------------------------------------------------------------------ authenticate
  {
    CLI::App* c = add("authenticate",
                      "Prove this TPM to the MA (EK certificate, credential activation with an "
                      "AK kept in the store) and print this platform's id");
    commands->push_back({c, [&g]() -> int {
                           auto ctx = Open(g);
                           if (!ctx) return Fail(g, ctx.error());
                           auto r = Authenticate(*ctx->lms, ctx->ma);
                           if (!r) return Fail(g, r.error());
                           return Succeed(g,
                                          {{"platform_id", r->platform_id},
                                           {"ma_url", ctx->ma.url},
                                           {"new_ak", r->new_ak},
                                           {"session_expires_at", Utc(r->expires_at)}},
                                          "Authenticated to " + ctx->ma.url + "\nplatform id  " +
                                              r->platform_id + "\n");
                         }});
  }

  // ------------------------------------------------------------------ backup
  {
    struct Args {
      bool full = false, if_changed = false;
      int retries = 3;
      double retry_delay = 5;
    };
    auto a = std::make_shared<Args>();
    CLI::App* c = add("backup",
                      "Back up the MRK and every key under it to the MA (duplicated to the MA "
                      "key, inner-wrapped with the store's inner key, signed by this TPM); "
                      "only when something changed since the last backup unless --full");
    c->add_flag("--full", a->full, "upload even if nothing changed since the last backup");
    c->add_flag("--if-changed", a->if_changed,
                "agent mode (systemd timer): quietly do nothing when nothing changed, and try "
                "again with back-off while the MA cannot be reached");
    c->add_option("--retries", a->retries, "with --if-changed: tries in all (default 3)")
        ->check(CLI::Range(1, 20));
    c->add_option("--retry-delay", a->retry_delay,
                  "with --if-changed: seconds before the second try, doubled after each "
                  "(default 5)")
        ->check(CLI::Range(0.0, 3600.0));
    commands->push_back(
        {c, [&g, a]() -> int {
           auto ctx = Open(g);
           if (!ctx) return Fail(g, ctx.error());
           BackupOptions o;
           o.full = a->full;
           o.attempts = a->if_changed ? a->retries : 1;
           o.retry_delay_ms = static_cast<int>(a->retry_delay * 1000);
           auto r = Backup(*ctx->lms, ctx->ma, o);
           if (!r) return Fail(g, r.error());
           json j = {{"uploaded", r->uploaded},
                     {"package_id", r->package_id},
                     {"platform_id", r->platform_id},
                     {"child_keys", r->child_keys},
                     {"created_at", r->created_at ? json(Utc(r->created_at)) : json(nullptr)},
                     {"digest", r->digest_hex},
                     {"already_stored", r->already_stored},
                     {"attempts", r->attempts},
                     {"reason", r->reason},
                     {"escrow_key_rotated", RotationJson(r->escrow_key_rotated)}};
           std::string text;
           if (!r->uploaded) {
             text = r->reason + (a->if_changed ? "\n" : "; --full uploads anyway\n");
           } else {
             text = "Backed up the MRK and " + std::to_string(r->child_keys) + " key(s) to " +
                    ctx->ma.url + "\npackage   " + r->package_id + "\nplatform  " + r->platform_id +
                    "\nsha256    " + r->digest_hex + "\n";
             if (r->escrow_key_rotated) {
               text += "escrow    the MA replaced escrow key " + r->escrow_key_rotated->from +
                       " with " + r->escrow_key_rotated->to + ": this package is escrowed to " +
                       r->escrow_key_rotated->to + ", and the store pins it from now on\n";
             }
           }
           return Succeed(g, j, text);
         }});
  }

  // ------------------------------------------------------------------ query
  {
    struct Args {
      std::string from;
    };
    auto a = std::make_shared<Args>();
    CLI::App* c = add("query",
                      "List the packages this platform may restore: its own backups, and those "
                      "of other platforms a helpdesk approved for it");
    c->add_option("--from", a->from, "only packages of this source platform");
    commands->push_back(
        {c, [&g, a]() -> int {
           auto ctx = Open(g);
           if (!ctx) return Fail(g, ctx.error());
           QueryOptions o;
           if (!a->from.empty()) o.from_platform = a->from;
           auto r = Query(*ctx->lms, ctx->ma, o);
           if (!r) return Fail(g, r.error());
           std::optional<std::string> last;
           if (ctx->lms->store().Initialized()) {
             auto state = ctx->lms->store().ReadState();
             if (state) last = state->last_backup_package_id;
           }
           json list = json::array();
           std::string text = "platform " + r->platform_id + "\n";
           char line[512];
           std::snprintf(line, sizeof line, "  %-36s  %-8s  %-20s  %5s  %8s  %s\n", "PACKAGE",
                         "ACCESS", "CREATED", "KEYS", "SIZE", "SOURCE PLATFORM");
           text += line;
           for (const auto& d : r->packages) {
             json dj = DescriptorJson(d);
             dj["last_backup"] = last && *last == d.package_id;
             list.push_back(dj);
             std::snprintf(line, sizeof line, "%s %-36s  %-8s  %-20s  %5u  %8s  %s\n",
                           last && *last == d.package_id ? "*" : " ", d.package_id.c_str(),
                           d.access.c_str(), Utc(d.created_at).c_str(), d.key_count,
                           SizeText(d.size_bytes).c_str(), d.source_platform_id.c_str());
             text += line;
           }
           if (r->packages.empty()) text += "  (none)\n";
           return Succeed(g, {{"platform_id", r->platform_id}, {"packages", list}}, text);
         }});
  }

  // ------------------------------------------------------------------ restore
  {
    struct Args {
      std::string package_id, from, code_file;
      bool new_store = false;
    };
    auto a = std::make_shared<Args>();
    CLI::App* c = add("restore",
                      "Bring the keys back from the MA after a TPM clear or onto a new board: "
                      "download re-wrapped for this TPM, import the MRK, re-register every key "
                      "(--new-store: into a new key store, when the disk was replaced too)");
    c->add_option("--package", a->package_id, "this package (default: the newest one)");
    c->add_option("--from", a->from,
                  "a package of this (old) platform, which a helpdesk approved for this one");
    c->add_option("--recovery-code-file", a->code_file,
                  "read the recovery code from FILE (- for stdin) instead of asking on the "
                  "terminal; needed only for a recovery-code package when the TPM lost its "
                  "sealed copy of the inner key (an escrow package needs a helpdesk approval "
                  "instead)");
    c->add_flag("--new-store", a->new_store,
                "the disk was replaced too: build a new key store in --store (which must not be "
                "initialised) from the package, checked with the signing key the MA verified "
                "it with; needs --from or --package, and the MA settings (recorded in the new "
                "store's config.json)");
    commands->push_back(
        {c, [&g, a]() -> int {
           auto ctx = Open(g);
           if (!ctx) return Fail(g, ctx.error());
           RestoreOptions o;
           o.package_id = a->package_id;
           o.from_platform = a->from;
           o.new_store = a->new_store;
           const std::string file = a->code_file;
           const Globals* gp = &g;
           o.recovery_code = [gp, file]() { return RecoveryCodeFrom(*gp, file); };
           auto r = Restore(*ctx->lms, ctx->ma, o);
           if (!r) return Fail(g, r.error());
           if (r->new_store) RecordMaSettings(*ctx->lms, ctx->ma);
           json keys = json::array();
           size_t added = 0, updated = 0;
           std::string lines;
           for (const RestoredKey& k : r->keys) {
             json kj = KeyJson(k.key);
             kj["outcome"] = k.outcome;
             keys.push_back(kj);
             (k.outcome == "added" ? added : updated) += 1;
             lines += "  " + k.key.id + "  " + std::string(KeyTypeName(k.key.type)) + "  " +
                      k.outcome + "  " + k.key.label + "\n";
           }
           json j = {{"package_id", r->package_id},
                     {"source_platform_id", r->source_platform_id},
                     {"platform_id", r->platform_id},
                     {"package_created_at", Utc(r->package_created_at)},
                     {"custody", r->custody},
                     {"inner_key_source", r->inner_key_source},
                     {"used_recovery_code", r->used_recovery_code},
                     {"srk_changed", r->srk_changed},
                     {"keys", keys},
                     {"added", added},
                     {"updated", updated},
                     {"kept", r->kept},
                     {"new_store", r->new_store},
                     {"escrow_key_rotated", RotationJson(r->escrow_key_rotated)}};
           if (r->new_store) {
             j["store"] = ctx->lms->store().dir();
             j["retired_to"] = r->retired_to ? json(*r->retired_to) : json(nullptr);
           }
           std::string text = "Restored package " + r->package_id + " (platform " +
                              r->source_platform_id + ", " + Utc(r->package_created_at) +
                              "): the MRK and " + std::to_string(r->keys.size()) + " key(s), " +
                              std::to_string(added) + " added, " + std::to_string(updated) +
                              " updated";
           if (r->kept > 0) {
             text += "; " + std::to_string(r->kept) + " newer key(s) kept from the store";
           }
           text +=
               "\ninner key from " +
               std::string(r->inner_key_source == "sealed"   ? "this TPM (sealed copy)"
                           : r->inner_key_source == "escrow" ? "the MA's escrow (helpdesk approval)"
                                                             : "the recovery code") +
               "\n";
           if (r->escrow_key_rotated) {
             text += "the package is escrowed to " + r->escrow_key_rotated->from +
                     ", which the MA has replaced: the store pins its escrow key " +
                     r->escrow_key_rotated->to + " for the next backups\n";
           }
           if (r->new_store) {
             text += "into the new key store " + ctx->lms->store().dir() +
                     " (the MRK under a new id; the MA settings recorded in its config.json)\n";
             if (r->retired_to) {
               text +=
                   "  key files of an earlier attempt were set aside in " + *r->retired_to + "\n";
             }
           }
           text += lines;
           return Succeed(g, j, text);
         }});
  }

  // ------------------------------------------------------------------ delete
  {
    struct Args {
      std::string id;
    };
    auto a = std::make_shared<Args>();
    CLI::App* c = add("delete", "Delete one of this platform's packages from the MA");
    c->add_option("ID", a->id, "the package id (lms query lists them)")->required();
    commands->push_back(
        {c, [&g, a]() -> int {
           if (!package::IsCanonicalUuid(a->id)) {
             return Fail(g, Status(Code::kInvalidArgument, "'" + a->id + "' is not a package id"));
           }
           auto ctx = Open(g);
           if (!ctx) return Fail(g, ctx.error());
           Status s = DeletePackage(*ctx->lms, ctx->ma, a->id);
           if (!s.ok()) return Fail(g, s);
           return Succeed(g, {{"package_id", a->id}, {"deleted", true}},
                          "Deleted package " + a->id + " from the MA\n");
         }});
  }

  // ------------------------------------------------------------------ status
  {
    CLI::App* c = add("status",
                      "Is the MA reachable, this platform enrolled, and when was the last "
                      "backup (exit 1 if the MA or the TPM cannot be used)");
    commands->push_back(
        {c, [&g]() -> int {
           auto lms = Lms::Open(g.LmsOptions());
           if (!lms) return Fail(g, lms.error());
           ShowProgress(g, **lms);
           auto settings = ResolveMaSettings((*lms)->store(), FlagsOf(g));
           StatusReport r = GetStatus(**lms, settings);
           const bool healthy = r.ma_reachable && r.tpm_reachable && r.enrolled;
           json j = {{"ok", healthy},
                     {"store",
                      {{"dir", r.store_dir},
                       {"initialised", r.initialised},
                       {"keys", r.keys},
                       {"not_backed_up", r.not_backed_up},
                       {"custody", r.initialised ? json(r.custody) : json(nullptr)},
                       {"escrow_key_id",
                        r.escrow_key_id.empty() ? json(nullptr) : json(r.escrow_key_id)}}},
                     {"last_backup_at", OptUtc(r.last_backup_at)},
                     {"last_backup_package_id",
                      r.last_backup_package_id ? json(*r.last_backup_package_id) : json(nullptr)},
                     {"tpm",
                      {{"reachable", r.tpm_reachable},
                       {"srk_matches_store", r.srk_matches_store},
                       {"error", r.tpm_error}}},
                     {"ma",
                      {{"url", r.ma_url},
                       {"reachable", r.ma_reachable},
                       {"service_version", r.ma_service_version},
                       {"error", r.ma_error}}},
                     {"platform",
                      {{"id", r.platform_id},
                       {"enrolled", r.enrolled},
                       {"error", r.enroll_error},
                       {"packages_on_ma", r.packages_on_ma},
                       {"newest_on_ma", OptUtc(r.newest_on_ma)}}}};
           if (!healthy) {
             j["code"] = "Unavailable";
             j["message"] = !r.tpm_reachable ? "the TPM cannot be used: " + r.tpm_error
                            : !r.ma_reachable
                                ? "the MA cannot be reached: " + r.ma_error
                                : "the MA did not accept this platform: " + r.enroll_error;
           }
           std::string t;
           t += "key store    " + r.store_dir;
           if (r.initialised) {
             t += " (" + std::to_string(r.keys) + " keys, " + std::to_string(r.not_backed_up) +
                  " not backed up)\n";
           } else {
             t += " (not initialised)\n";
           }
           if (r.initialised) {
             t += "custody      " + r.custody +
                  (r.escrow_key_id.empty() ? std::string()
                                           : " (MA escrow key " + r.escrow_key_id + ")") +
                  "\n";
           }
           t += "last backup  " +
                (r.last_backup_at ? Utc(*r.last_backup_at) + "  package " +
                                        r.last_backup_package_id.value_or("?")
                                  : std::string("never")) +
                "\n";
           t += "TPM          " +
                (!r.tpm_reachable ? "cannot be used: " + r.tpm_error
                 : !r.initialised ? std::string("reachable")
                 : r.srk_matches_store
                     ? std::string("reachable, the store's SRK")
                     : std::string("reachable, but its SRK is not the store's (cleared or "
                                   "another TPM): run lms restore")) +
                "\n";
           t += "MA           " +
                (r.ma_url.empty() ? std::string("not configured: ") + r.ma_error
                 : r.ma_reachable ? r.ma_url + " reachable (" + r.ma_service_version + ")"
                                  : r.ma_url + " cannot be reached: " + r.ma_error) +
                "\n";
           t += "platform     " +
                (r.enrolled              ? r.platform_id + " (enrolled)"
                 : r.platform_id.empty() ? std::string("unknown")
                                         : r.platform_id + " (as last seen; not checked now)") +
                (r.enroll_error.empty() ? "" : "\n             not enrolled: " + r.enroll_error) +
                "\n";
           if (r.enrolled) {
             t += "on the MA    " + std::to_string(r.packages_on_ma) + " package(s)" +
                  (r.newest_on_ma ? ", newest " + Utc(*r.newest_on_ma) : std::string()) + "\n";
           }
           if (g.json) {
             const std::string s = j.dump() + "\n";
             std::fwrite(s.data(), 1, s.size(), stdout);
           } else {
             std::fwrite(t.data(), 1, t.size(), stdout);
           }
           std::fflush(stdout);
           return healthy ? kExitOk : kExitFailed;
         }});
  }
}

}  // namespace tpmma::lms::cli
