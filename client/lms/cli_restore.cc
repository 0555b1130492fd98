// SPDX-License-Identifier: GPL-2.0-or-later
// lms restore (restore.h does the work): the recovery code asked on the terminal, the
// report, and the helpdesk advice when the restore needs an approval.
#include <fcntl.h>
#include <termios.h>
#include <unistd.h>

#include <memory>
#include <string>

#include "client/lms/cli.h"
#include "client/lms/restore.h"
#include "common/text.h"

namespace tpmma::lms::cli {

namespace {

using nlohmann::json;

constexpr size_t kMaxRecoveryCodeInput = 1024;

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

// What to ask the helpdesk for: `ma-admin approve --old OLD --new NEW`, in the words of the
// failure it follows. Same code, the library's message, then the advice.
Status WithApprovalAdvice(const Status& s, const ApprovalNeeded& a) {
  const std::string approve = "ma-admin approve --old ";
  std::string advice;
  switch (a.why) {
    case ApprovalNeeded::Why::kNoOwnBackup:
      advice = "; this key store's keys were last backed up by platform " + a.source_platform_id +
               ": once the helpdesk approved (" + approve + a.source_platform_id + " --new " +
               a.platform_id + "), run lms restore --from " + a.source_platform_id;
      break;
    case ApprovalNeeded::Why::kNoApprovedPackage:
      advice = "; the helpdesk approves that with " + approve + a.source_platform_id + " --new " +
               a.platform_id;
      break;
    case ApprovalNeeded::Why::kDownloadRefused:
      advice =
          " (a package of another platform needs a helpdesk approval: " + approve +
          (a.source_platform_id.empty() ? std::string("<its platform>") : a.source_platform_id) +
          " --new " + a.platform_id + ")";
      break;
    case ApprovalNeeded::Why::kEscrowNotReleased:
      advice = "; ask the helpdesk to approve platform " + a.platform_id + " (" + approve +
               a.source_platform_id + " --new " + a.platform_id + "); nothing was changed";
      break;
  }
  return Status(s.code(), s.message() + advice);
}

std::string_view InnerKeySourceText(InnerKeySource source) {
  switch (source) {
    case InnerKeySource::kSealed:
      return "this TPM (sealed copy)";
    case InnerKeySource::kEscrow:
      return "the MA's escrow (helpdesk approval)";
    case InnerKeySource::kRecoveryCode:
      break;
  }
  return "the recovery code";
}

size_t CountOutcome(const RestoreResult& r, KeyOutcome outcome) {
  size_t n = 0;
  for (const RestoredKey& k : r.keys) n += k.outcome == outcome ? 1 : 0;
  return n;
}

json RestoreJson(const RestoreResult& r, const std::string& store_dir) {
  json keys = json::array();
  for (const RestoredKey& k : r.keys) {
    json kj = KeyJson(k.key);
    kj["outcome"] = KeyOutcomeName(k.outcome);
    keys.push_back(kj);
  }
  json j = {{"package_id", r.package_id},
            {"source_platform_id", r.source_platform_id},
            {"platform_id", r.platform_id},
            {"package_created_at", Utc(r.package_created_at)},
            {"custody", CustodyModeName(r.custody)},
            {"inner_key_source", InnerKeySourceName(r.inner_key_source)},
            {"used_recovery_code", r.used_recovery_code},
            {"srk_changed", r.srk_changed},
            {"keys", keys},
            {"added", CountOutcome(r, KeyOutcome::kAdded)},
            {"updated", CountOutcome(r, KeyOutcome::kUpdated)},
            {"kept", r.kept},
            {"new_store", r.new_store},
            {"escrow_key_rotated", RotationJson(r.escrow_key_rotated)}};
  if (r.new_store) {
    j["store"] = store_dir;
    j["retired_to"] = r.retired_to ? json(*r.retired_to) : json(nullptr);
  }
  return j;
}

std::string RestoreText(const RestoreResult& r, const std::string& store_dir) {
  std::string text = "Restored package " + r.package_id + " (platform " + r.source_platform_id +
                     ", " + Utc(r.package_created_at) + "): the MRK and " +
                     std::to_string(r.keys.size()) + " key(s), " +
                     std::to_string(CountOutcome(r, KeyOutcome::kAdded)) + " added, " +
                     std::to_string(CountOutcome(r, KeyOutcome::kUpdated)) + " updated";
  if (r.kept > 0) text += "; " + std::to_string(r.kept) + " newer key(s) kept from the store";
  text += "\ninner key from " + std::string(InnerKeySourceText(r.inner_key_source)) + "\n";
  if (r.escrow_key_rotated) {
    text += "the package is escrowed to " + r.escrow_key_rotated->from +
            ", which the MA has replaced: the store pins its escrow key " +
            r.escrow_key_rotated->to + " for the next backups\n";
  }
  if (r.new_store) {
    text += "into the new key store " + store_dir +
            " (the MRK under a new id; the MA settings recorded in its config.json)\n";
    if (r.retired_to) {
      text += "  key files of an earlier attempt were set aside in " + *r.retired_to + "\n";
    }
  }
  for (const RestoredKey& k : r.keys) {
    text += "  " + k.key.id + "  " + std::string(KeyTypeName(k.key.type)) + "  " +
            std::string(KeyOutcomeName(k.outcome)) + "  " + k.key.label + "\n";
  }
  return text;
}

struct RestoreArgs {
  std::string package_id, from, code_file;
  bool new_store = false;
};

int RunRestore(const Globals& g, const RestoreArgs& a) {
  auto ctx = OpenWithMa(g);
  if (!ctx) return Fail(g, ctx.error());
  RestoreOptions o;
  o.package_id = a.package_id;
  o.from_platform = a.from;
  o.new_store = a.new_store;
  const std::string file = a.code_file;
  const Globals* gp = &g;
  o.recovery_code = [gp, file]() { return RecoveryCodeFrom(*gp, file); };
  std::optional<ApprovalNeeded> approval;
  auto r = Restore(*ctx->lms, ctx->settings, o, &approval);
  if (!r) return Fail(g, approval ? WithApprovalAdvice(r.error(), *approval) : r.error());
  if (r->new_store) RecordMaSettings(*ctx->lms, ctx->settings);
  const std::string& dir = ctx->lms->store().dir();
  return Succeed(g, RestoreJson(*r, dir), RestoreText(*r, dir));
}

}  // namespace

Command AddRestoreCommand(CLI::App& app, const Globals& g) {
  auto a = std::make_shared<RestoreArgs>();
  CLI::App* c = AddSubcommand(app, "restore",
                              "Bring the keys back from the MA after a TPM clear or onto a new "
                              "board: download re-wrapped for this TPM, import the MRK, "
                              "re-register every key (--new-store: into a new key store, when "
                              "the disk was replaced too)");
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
  return {c, [&g, a]() { return RunRestore(g, *a); }};
}

}  // namespace tpmma::lms::cli
