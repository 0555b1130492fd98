// SPDX-License-Identifier: GPL-2.0-or-later
// The lms commands that talk to the Migration Authority (remote.h does the work):
// authenticate, backup, query, delete, status; restore is cli_restore.cc. One
// Add...Command per command.
#include <cstdio>
#include <memory>
#include <string>

#include "client/lms/cli.h"
#include "client/lms/inventory.h"
#include "client/lms/remote.h"
#include "common/text.h"
#include "schema/package.h"

namespace tpmma::lms::cli {

namespace {

using nlohmann::json;

json OptUtc(const std::optional<int64_t>& t) {
  return t ? json(Utc(*t)) : json(nullptr);
}

std::string SizeText(uint64_t bytes) {
  if (bytes < 10 * 1024) return std::to_string(bytes) + " B";
  return std::to_string((bytes + 512) / 1024) + " KB";
}

// Enums as every JSON of lms and ma-admin spells them ("recovery-code", "own"), not as the
// WSDL does ("RecoveryCode", "Own").
json DescriptorJson(const ma::PackageDescriptor& d) {
  return {{"package_id", d.package_id},
          {"source_platform_id", d.source_platform_id},
          {"access", d.access == ma::Access::kApproved ? "approved" : "own"},
          {"custody",
           CustodyModeName(d.custody_mode == ma::Custody::kEscrow ? CustodyMode::kEscrow
                                                                  : CustodyMode::kRecoveryCode)},
          {"created_at", Utc(d.created_at)},
          {"uploaded_at", Utc(d.uploaded_at)},
          {"keys", d.key_count},
          {"size_bytes", d.size_bytes}};
}

// An initialised store's custody as store.json spells it ("" if store.json did not read).
std::string CustodyText(const StatusReport& r) {
  return r.custody ? std::string(CustodyModeName(*r.custody)) : std::string();
}

json StatusJson(const StatusReport& r, bool healthy) {
  json j = {{"ok", healthy},
            {"store",
             {{"dir", r.store_dir},
              {"initialised", r.initialised},
              {"keys", r.keys},
              {"not_backed_up", r.not_backed_up},
              {"custody", r.initialised ? json(CustodyText(r)) : json(nullptr)},
              {"escrow_key_id", r.escrow_key_id.empty() ? json(nullptr) : json(r.escrow_key_id)},
              {"mrk_policy", r.mrk_policy.empty() ? json(nullptr) : json(r.mrk_policy)}}},
            {"last_backup_at", OptUtc(r.last_backup_at)},
            {"last_backup_package_id",
             r.last_backup_package_id ? json(*r.last_backup_package_id) : json(nullptr)},
            {"tpm",
             {{"reachable", r.tpm_reachable},
              {"srk_matches_store", r.srk_matches_store},
              {"mrk_handle", r.mrk_handle != 0 ? json(Hex32(r.mrk_handle)) : json(nullptr)},
              {"mrk_handle_state", r.mrk_handle_state},
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
  // What the next Authenticate reports (wire names, as ma-admin platforms show prints them).
  const ma::PlatformInventory& i = r.inventory;
  j["inventory"] = {{"hostname", i.hostname},
                    {"os_name", i.os_name},
                    {"kernel_release", i.kernel_release},
                    {"system_vendor", i.system_vendor},
                    {"product_name", i.product_name},
                    {"serial_number", i.serial_number},
                    {"asset_tag", i.asset_tag},
                    {"machine_id", i.machine_id},
                    {"tpm_manufacturer", i.tpm_manufacturer},
                    {"tpm_vendor", i.tpm_vendor},
                    {"tpm_firmware", i.tpm_firmware},
                    {"owner_label", i.owner_label}};
  if (!healthy) {
    const bool other_tpm = r.tpm_reachable && r.initialised && !r.srk_matches_store;
    j["code"] = other_tpm ? "Conflict" : "Unavailable";
    j["message"] = !r.tpm_reachable ? "the TPM cannot be used: " + r.tpm_error
                   : other_tpm      ? std::string(
                                          "the TPM's SRK is not the store's (cleared, or another "
                                               "TPM): run lms restore")
                   : !r.ma_reachable ? "the MA cannot be reached: " + r.ma_error
                                     : "the MA did not accept this platform: " + r.enroll_error;
  }
  return j;
}

std::string StatusText(const StatusReport& r) {
  std::string t;
  t += "key store    " + r.store_dir;
  if (r.initialised) {
    t += " (" + std::to_string(r.keys) + " keys, " + std::to_string(r.not_backed_up) +
         " not backed up)\n";
  } else {
    t += " (not initialised)\n";
  }
  if (r.initialised) {
    t += "custody      " + CustodyText(r) +
         (r.escrow_key_id.empty() ? std::string() : " (MA escrow key " + r.escrow_key_id + ")") +
         "\n";
    if (!r.mrk_policy.empty()) {
      t += "MRK policy   " +
           std::string(r.mrk_policy == "follow"
                           ? "follows the MA (its policy-signing key approves each MA key)"
                           : "fixed to one MA key (PolicyDuplicationSelect)") +
           "\n";
    }
  }
  t += "last backup  " +
       (r.last_backup_at
            ? Utc(*r.last_backup_at) + "  package " + r.last_backup_package_id.value_or("?")
            : std::string("never")) +
       "\n";
  t += "TPM          " +
       (!r.tpm_reachable      ? "cannot be used: " + r.tpm_error
        : !r.initialised      ? std::string("reachable")
        : r.srk_matches_store ? std::string("reachable, the store's SRK")
                              : std::string("reachable, but its SRK is not the store's (cleared or "
                                            "another TPM): run lms restore")) +
       "\n";
  if (r.tpm_reachable && r.initialised) {
    t += "MRK handle   " +
         (r.mrk_handle == 0 ? std::string("none (key files cannot name the MRK)")
          : r.mrk_handle_state == "present"
              ? Hex32(r.mrk_handle) + " (the store's MRK; key files work)"
          : r.mrk_handle_state == "empty"
              ? Hex32(r.mrk_handle) + " empty: key files will not work here until lms restore"
              : Hex32(r.mrk_handle) + " " + r.mrk_handle_state) +
         "\n";
  }
  t += "MA           " +
       (r.ma_url.empty() ? std::string("not configured: ") + r.ma_error
        : r.ma_reachable ? r.ma_url + " reachable (" + r.ma_service_version + ")"
                         : r.ma_url + " cannot be reached: " + r.ma_error) +
       "\n";
  t += "platform     " +
       (r.enrolled              ? r.platform_id + " (enrolled)"
        : r.platform_id.empty() ? std::string("unknown")
                                : r.platform_id + " (as last seen; not checked now)") +
       (r.enroll_error.empty() ? "" : "\n             not enrolled: " + r.enroll_error) + "\n";
  t += "reports      (to the MA with each authentication)\n" + InventoryText(r.inventory, "  ");
  if (r.enrolled) {
    t += "on the MA    " + std::to_string(r.packages_on_ma) + " package(s)" +
         (r.newest_on_ma ? ", newest " + Utc(*r.newest_on_ma) : std::string()) + "\n";
  }
  return t;
}

}  // namespace

MaFlags FlagsOf(const Globals& g) {
  return {.url = g.ma_url,
          .ca_file = g.ma_ca,
          .ek_intermediates = g.ek_intermediates,
          .ek_cert = g.ek_cert,
          .owner_label = g.owner_label,
          .connection_per_call = g.ma_connection_per_call};
}

Result<MaContext> OpenWithMa(const Globals& g) {
  MaContext c;
  TPMMA_ASSIGN_OR_RETURN(c.lms, Lms::Open(g.LmsOptions()));
  ShowProgress(g, *c.lms);
  TPMMA_ASSIGN_OR_RETURN(c.settings, ResolveMaSettings(c.lms->store(), FlagsOf(g)));
  return c;
}

json RotationJson(const std::optional<EscrowKeyRotation>& r) {
  return r ? json{{"from", r->from}, {"to", r->to}} : json(nullptr);
}

Command AddAuthenticateCommand(CLI::App& app, const Globals& g) {
  CLI::App* c =
      AddSubcommand(app, "authenticate",
                    "Prove this TPM to the MA (EK certificate, credential activation with an "
                    "AK kept in the store) and print this platform's id");
  return {c, [&g]() -> int {
            auto ctx = OpenWithMa(g);
            if (!ctx) return Fail(g, ctx.error());
            auto r = Authenticate(*ctx->lms, ctx->settings);
            if (!r) return Fail(g, r.error());
            // Settings that worked are kept (--ek-intermediate above all), so that the backup
            // timer and later commands need no flags.
            if (!g.ma_url.empty() || !g.ma_ca.empty() || !g.ek_intermediates.empty() ||
                !g.ek_cert.empty() || !g.owner_label.empty()) {
              RecordMaSettings(*ctx->lms, ctx->settings);
            }
            return Succeed(g,
                           {{"platform_id", r->platform_id},
                            {"ma_url", ctx->settings.url},
                            {"new_ak", r->new_ak},
                            {"session_expires_at", Utc(r->expires_at)}},
                           "Authenticated to " + ctx->settings.url + "\nplatform id  " +
                               r->platform_id + "\n");
          }};
}

Command AddBackupCommand(CLI::App& app, const Globals& g) {
  struct Args {
    bool full = false, if_changed = false;
    int retries = 3;
    double retry_delay = 5;
  };
  auto a = std::make_shared<Args>();
  CLI::App* c =
      AddSubcommand(app, "backup",
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
  return {c, [&g, a]() -> int {
            auto ctx = OpenWithMa(g);
            if (!ctx) return Fail(g, ctx.error());
            BackupOptions o;
            o.full = a->full;
            o.attempts = a->if_changed ? a->retries : 1;
            o.retry_delay_ms = static_cast<int>(a->retry_delay * 1000);
            auto r = Backup(*ctx->lms, ctx->settings, o);
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
                      {"escrow_key_rotated", RotationJson(r->escrow_key_rotated)},
                      {"ma_key_moved",
                       r->ma_key_moved_to ? json{{"to", *r->ma_key_moved_to}} : json(nullptr)}};
            std::string text;
            if (!r->uploaded) {
              text = r->reason + (a->if_changed ? "\n" : "; --full uploads anyway\n");
            } else {
              text = "Backed up the MRK and " + std::to_string(r->child_keys) + " key(s) to " +
                     ctx->settings.url + "\npackage   " + r->package_id + "\nplatform  " +
                     r->platform_id + "\nsha256    " + r->digest_hex + "\n";
              if (r->escrow_key_rotated) {
                text += "escrow    the MA replaced escrow key " + r->escrow_key_rotated->from +
                        " with " + r->escrow_key_rotated->to + ": this package is escrowed to " +
                        r->escrow_key_rotated->to + ", and the store pins it from now on\n";
              }
              if (r->ma_key_moved_to) {
                text += "MA key    the MA rotated its storage key: this package is duplicated to " +
                        *r->ma_key_moved_to + ", and the store pins it from now on\n";
              }
            }
            return Succeed(g, j, text);
          }};
}

Command AddQueryCommand(CLI::App& app, const Globals& g) {
  struct Args {
    std::string from;
  };
  auto a = std::make_shared<Args>();
  CLI::App* c =
      AddSubcommand(app, "query",
                    "List the packages this platform may restore: its own backups, and those "
                    "of other platforms a helpdesk approved for it");
  c->add_option("--from", a->from, "only packages of this source platform");
  return {c, [&g, a]() -> int {
            auto ctx = OpenWithMa(g);
            if (!ctx) return Fail(g, ctx.error());
            QueryOptions o;
            if (!a->from.empty()) o.from_platform = a->from;
            auto r = Query(*ctx->lms, ctx->settings, o);
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
                            std::string(ma::AccessName(d.access)).c_str(),
                            Utc(d.created_at).c_str(), d.key_count, SizeText(d.size_bytes).c_str(),
                            d.source_platform_id.c_str());
              text += line;
            }
            if (r->packages.empty()) text += "  (none)\n";
            return Succeed(g, {{"platform_id", r->platform_id}, {"packages", list}}, text);
          }};
}

Command AddDeleteCommand(CLI::App& app, const Globals& g) {
  struct Args {
    std::string id;
  };
  auto a = std::make_shared<Args>();
  CLI::App* c = AddSubcommand(app, "delete", "Delete one of this platform's packages from the MA");
  c->add_option("ID", a->id, "the package id (lms query lists them)")->required();
  return {c, [&g, a]() -> int {
            if (!schema::IsCanonicalUuid(a->id)) {
              return Fail(g, Status(Code::kInvalidArgument, "'" + a->id + "' is not a package id"));
            }
            auto ctx = OpenWithMa(g);
            if (!ctx) return Fail(g, ctx.error());
            Status s = DeletePackage(*ctx->lms, ctx->settings, a->id);
            if (!s.ok()) return Fail(g, s);
            return Succeed(g, {{"package_id", a->id}, {"deleted", true}},
                           "Deleted package " + a->id + " from the MA\n");
          }};
}

Command AddStatusCommand(CLI::App& app, const Globals& g) {
  CLI::App* c =
      AddSubcommand(app, "status",
                    "Is the MA reachable, this platform enrolled, and when was the last "
                    "backup (exit 1 if the MA or the TPM cannot be used, or the TPM is not "
                    "the store's)");
  return {c, [&g]() -> int {
            auto lms = Lms::Open(g.LmsOptions());
            if (!lms) return Fail(g, lms.error());
            ShowProgress(g, **lms);
            auto settings = ResolveMaSettings((*lms)->store(), FlagsOf(g));
            StatusReport r = GetStatus(**lms, settings);
            // A TPM that is not the store's (cleared, or a new board) cannot use the keys.
            const bool healthy = r.ma_reachable && r.tpm_reachable && r.enrolled &&
                                 (!r.initialised || r.srk_matches_store);
            const std::string out = g.json ? StatusJson(r, healthy).dump() + "\n" : StatusText(r);
            std::fwrite(out.data(), 1, out.size(), stdout);
            std::fflush(stdout);
            return healthy ? kExitOk : kExitFailed;
          }};
}

}  // namespace tpmma::lms::cli
