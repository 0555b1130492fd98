// SPDX-License-Identifier: GPL-2.0-or-later
// ma-admin: the helpdesk/admin tool: `init` creates an MA; platforms, packages,
// approve/approvals, audit, ek-trust and ek check work on an MA's state directory (--dir) on the MA
// host, or, with --ma and an operator certificate, through the MA's operator operations.
//
// Exit codes: 0 success, 1 the operation failed, 2 bad usage.
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <pwd.h>
#include <unistd.h>

#include "common/env.h"
#include "common/text.h"
#include "server/admin_audit.h"
#include "server/admin_commands.h"
#include "server/admin_ek_trust.h"
#include "server/admin_enrollment.h"
#include "server/admin_init.h"
#include "server/admin_ma_key.h"
#include "server/admin_vault.h"
#include "server/config.h"
#include "server/operator_client.h"
#include "server/vault_open.h"

namespace {

namespace s = tpmma::server;
using nlohmann::json;

constexpr int kFailed = 1;
constexpr int kUsage = 2;

// Every option of every command, bound by the Add*Commands functions and read by the Run*
// functions after parsing; one value per option, whichever subcommand it belongs to.
struct Cli {
  CLI::App app{"ma-admin: administer a tpm-ma Migration Authority"};
  bool json = false;

  s::InitOptions init;
  std::string listen = "127.0.0.1:8443";
  bool no_escrow = false;
  bool no_policy_key = false;
  CLI::App* init_cmd = nullptr;

  std::string dir = "/var/lib/tpm-ma";
  std::string id, reason;
  std::optional<std::string> platform_filter;
  CLI::App *pl_list = nullptr, *pl_show = nullptr, *pl_revoke = nullptr, *pl_find = nullptr;
  s::RegisterOptions reg;
  CLI::App *pl_register = nullptr, *pl_registrations = nullptr, *pl_accept = nullptr;
  CLI::App *pk_list = nullptr, *pk_show = nullptr, *pk_delete = nullptr;

  s::ApprovalGrant approve;
  std::string expires = "24h";
  CLI::App* approve_cmd = nullptr;
  int64_t approval_id = 0;
  std::string new_filter;
  CLI::App *ap_list = nullptr, *ap_confirm = nullptr, *ap_revoke = nullptr;

  std::string op_name, op_role, op_out = ".";
  CLI::App *op_issue = nullptr, *op_revoke = nullptr, *op_list = nullptr;

  std::string escrow_key_id;
  CLI::App* escrow_rotate = nullptr;
  CLI::App* policy_init = nullptr;
  CLI::App* policy_import_tpm = nullptr;
  std::string policy_tcti;
  uint32_t policy_parent = 0x81000001;
  std::string ma_key_id;
  s::RotateOptions rotate;
  s::ReencipherOptions reencipher;
  CLI::App *mk_rotate = nullptr, *mk_status = nullptr, *mk_reencipher = nullptr,
           *mk_retire = nullptr;

  std::string ek_add_root, ek_add_intermediate, ek_fingerprint, ek_cert;
  std::vector<std::string> ek_chain;
  CLI::App *ekt_add = nullptr, *ekt_list = nullptr, *ekt_remove = nullptr, *ek_check = nullptr;

  s::OperatorClientOptions remote;
  CLI::App* whoami = nullptr;

  s::AuditQuery audit_q;
  std::string since, until;
  CLI::App *audit = nullptr, *audit_verify = nullptr;
  s::AuditVerifyOptions audit_verify_opts;
  std::string checkpoint_out, archive_file, archive_before;
  s::ArchiveOptions archive;
  CLI::App *audit_checkpoint = nullptr, *audit_checkpoint_key = nullptr, *audit_archive = nullptr,
           *audit_verify_archive = nullptr;

  std::string vault_out, vault_from;
  bool vault_force = false;
  s::MigrateOptions migrate;
  CLI::App *vault_backup = nullptr, *vault_restore = nullptr, *vault_migrate = nullptr;
};

int Fail(const tpmma::Status& st, bool as_json) {
  if (as_json) {
    json out = {{"ok", false},
                {"code", std::string(tpmma::CodeName(st.code()))},
                {"message", st.message()}};
    std::printf("%s\n", out.dump().c_str());
  } else {
    std::fprintf(stderr, "ma-admin: %s\n", st.ToString().c_str());
  }
  return kFailed;
}

int Usage(const char* message) {
  std::fprintf(stderr, "ma-admin: %s\n", message);
  return kUsage;
}

// "admin:<login>": who did it, for the audit log.
std::string LocalActor() {
  const passwd* pw = ::getpwuid(::geteuid());
  return std::string("admin:") + (pw != nullptr ? pw->pw_name : std::to_string(::geteuid()));
}

void AddDir(Cli& c, CLI::App* cmd) {
  cmd->add_option("--dir", c.dir, "the MA state directory (holds config.toml)")
      ->capture_default_str();
}

void AddInitCommand(Cli& c) {
  c.init_cmd = c.app.add_subcommand("init", "create a fresh MA state directory");
  c.init_cmd->add_option("--dir", c.init.dir, "state directory to create (must be empty or absent)")
      ->required();
  c.init_cmd->add_option("--listen", c.listen, "address:port ma-server will listen on")
      ->capture_default_str();
  c.init_cmd->add_option("--ek-root", c.init.ek_root_files,
                         "PEM certificate of a TPM manufacturer root to trust (repeatable)");
  c.init_cmd->add_option("--ma-key-id", c.init.ma_key_id, "identifier of the MA key")
      ->capture_default_str();
  c.init_cmd->add_option("--escrow-key-id", c.init.escrow_key_id, "identifier of the escrow key")
      ->capture_default_str();
  c.init_cmd->add_flag("--no-escrow", c.no_escrow,
                       "offer recovery-code custody only: make no escrow key");
  c.init_cmd->add_flag("--no-policy-key", c.no_policy_key,
                       "make no policy-signing key: MRKs bind to this MA key for good");
}

constexpr const char* kPlatformHelp =
    "the platform: its id, a unique id prefix, or its hostname, serial number, asset tag, "
    "owner label or machine-id (in --dir mode)";

void AddPlatformCommands(Cli& c) {
  auto* platforms =
      c.app.add_subcommand("platforms", "list, show, revoke, register or accept platforms (TPMs)");
  platforms->require_subcommand(1);
  c.pl_list = platforms->add_subcommand("list", "every platform that ever authenticated");
  c.pl_show = platforms->add_subcommand("show", "one platform, its inventory and its packages");
  c.pl_show->add_option("ID", c.id, kPlatformHelp)->required();
  c.pl_find = platforms->add_subcommand(
      "find",
      "platforms whose hostname, serial, asset tag, owner label or machine-id contains "
      "TEXT (any case), or whose id starts with it");
  c.pl_find->add_option("TEXT", c.id, "what to look for")->required();
  c.pl_revoke = platforms->add_subcommand(
      "revoke", "block a platform (stolen laptop): its sessions and downloads stop at once");
  c.pl_revoke->add_option("ID", c.id, kPlatformHelp)->required();
  c.pl_revoke->add_option("--reason", c.reason, "why (recorded in the audit log)")->required();
  c.pl_register = platforms->add_subcommand(
      "register", "let a platform enroll under the enrollment policy \"registered\"");
  c.pl_register->add_option("--ek-public", c.reg.ek_public, "its EK public (TPM2B_PUBLIC file)");
  c.pl_register->add_option("--ek-cert", c.reg.ek_cert, "its EK certificate (PEM or DER)");
  c.pl_register->add_option("--csv", c.reg.csv,
                            "a CSV file: header row, columns ek_key_id or ek_cert_sha256 (hex), "
                            "label; all or nothing");
  c.pl_register->add_option("--label", c.reg.label, "a name for it (--ek-public / --ek-cert)");
  c.pl_registrations =
      platforms->add_subcommand("registrations", "the platforms registered so far");
  c.pl_accept = platforms->add_subcommand(
      "accept", "let a pending platform (enrollment policy \"approve-first\") authenticate");
  c.pl_accept->add_option("ID", c.id, kPlatformHelp)->required();
  for (auto* cmd : {c.pl_list, c.pl_show, c.pl_find, c.pl_revoke, c.pl_register, c.pl_registrations,
                    c.pl_accept}) {
    AddDir(c, cmd);
  }
}

void AddPackageCommands(Cli& c) {
  auto* packages = c.app.add_subcommand("packages", "list, show or delete vaulted packages");
  packages->require_subcommand(1);
  c.pk_list = packages->add_subcommand("list", "packages, newest last");
  c.pk_list->add_option("--platform", c.platform_filter, "only packages of this source platform");
  c.pk_show = packages->add_subcommand("show", "one package's descriptor and keys");
  c.pk_show->add_option("ID", c.id, "package id")->required();
  c.pk_delete = packages->add_subcommand("delete", "delete a package (securely)");
  c.pk_delete->add_option("ID", c.id, "package id")->required();
  c.pk_delete->add_option("--reason", c.reason, "why (recorded in the audit log)")->required();
  for (auto* cmd : {c.pk_list, c.pk_show, c.pk_delete}) AddDir(c, cmd);
}

void AddApprovalCommands(Cli& c) {
  c.approve_cmd = c.app.add_subcommand(
      "approve", "let platform NEW restore packages of platform OLD (motherboard swap)");
  c.approve_cmd->add_option("--old", c.approve.old_platform_id, kPlatformHelp)->required();
  c.approve_cmd->add_option("--new", c.approve.new_platform_id, kPlatformHelp)->required();
  c.approve_cmd->add_option("--package", c.approve.package_ids,
                            "only this package (repeatable; default: all of OLD's)");
  c.approve_cmd->add_option("--expires", c.expires, "validity, e.g. 4h, 2d")->capture_default_str();
  c.approve_cmd->add_option("--reason", c.approve.reason, "ticket or reason (audited)")->required();
  c.approve_cmd->add_flag("--two-person", c.approve.two_person,
                          "stay pending until a second operator confirms");
  AddDir(c, c.approve_cmd);

  auto* approvals = c.app.add_subcommand("approvals", "list, confirm or revoke approvals");
  approvals->require_subcommand(1);
  c.ap_list = approvals->add_subcommand("list", "approvals, newest first");
  c.ap_list->add_option("--new", c.new_filter, "only approvals for this new platform");
  c.ap_confirm = approvals->add_subcommand("confirm", "second operator confirms (two-person)");
  c.ap_confirm->add_option("ID", c.approval_id, "approval id")->required();
  c.ap_revoke = approvals->add_subcommand("revoke", "withdraw an approval");
  c.ap_revoke->add_option("ID", c.approval_id, "approval id")->required();
  c.ap_revoke->add_option("--reason", c.reason, "why (audited)")->required();
  for (auto* cmd : {c.ap_list, c.ap_confirm, c.ap_revoke}) AddDir(c, cmd);
}

void AddOperatorCommands(Cli& c) {
  auto* operators = c.app.add_subcommand("operator", "issue, revoke or list operator certificates");
  operators->require_subcommand(1);
  c.op_issue = operators->add_subcommand(
      "issue", "new helpdesk/auditor/admin: key + client certificate from the operator CA");
  c.op_issue->add_option("--name", c.op_name, "operator name (a-z0-9._-)")->required();
  c.op_issue->add_option("--role", c.op_role, "helpdesk, auditor or admin")->required();
  c.op_issue->add_option("--out", c.op_out, "directory for NAME.key/.crt/.pem")
      ->capture_default_str();
  c.op_revoke = operators->add_subcommand("revoke", "refuse an operator's certificate from now on");
  c.op_revoke->add_option("--name", c.op_name, "operator name")->required();
  c.op_revoke->add_option("--reason", c.reason, "why (audited)")->required();
  c.op_list = operators->add_subcommand("list", "every operator and its role");
  for (auto* cmd : {c.op_issue, c.op_revoke, c.op_list}) AddDir(c, cmd);
}

void AddMaKeyCommands(Cli& c) {
  auto* ma_key = c.app.add_subcommand(
      "ma-key", "the MA storage key's lifecycle: rotate, re-encipher, retire (docs/operations.md)");
  ma_key->require_subcommand(1);
  c.mk_rotate = ma_key->add_subcommand(
      "rotate",
      "make a new current storage key, approved by the policy-signing key; the current one "
      "is retiring (restart ma-server afterwards)");
  c.mk_rotate->add_option("--key-id", c.rotate.key_id, "id of the new key (default: ma-<N+1>)");
  c.mk_rotate->add_option("--custody", c.rotate.custody, "software (default) or tpm")
      ->check(CLI::IsMember({"software", "tpm"}));
  c.mk_rotate->add_option("--tpm-tcti", c.rotate.tpm_tcti,
                          "with --custody tpm: the MA's TPM, e.g. device:/dev/tpmrm0");
  c.mk_rotate->add_option("--tpm-parent", c.rotate.tpm_parent,
                          "with --custody tpm: its persistent storage parent (0x81000001)");
  c.mk_status = ma_key->add_subcommand(
      "status", "each storage key, the packages it holds, the platforms bound to it");
  c.mk_reencipher = ma_key->add_subcommand(
      "reencipher",
      "move the outer wrap of every package a retiring key holds to the current key "
      "(resumable; after `vault backup`)");
  c.mk_reencipher->add_option("--batch", c.reencipher.batch, "packages per transaction")
      ->check(CLI::Range(1, 10000));
  c.mk_reencipher->add_flag("--i-have-a-backup", c.reencipher.have_backup,
                            "start without a `vault backup` taken since the rotation");
  c.mk_retire = ma_key->add_subcommand(
      "retire", "destroy a retiring key once no package and no platform needs it");
  c.mk_retire->add_option("ID", c.ma_key_id, "the retiring key's id")->required();
  for (auto* cmd : {c.mk_rotate, c.mk_status, c.mk_reencipher, c.mk_retire}) AddDir(c, cmd);
}

void AddEscrowCommands(Cli& c) {
  auto* escrow = c.app.add_subcommand("escrow", "the escrow key (escrow custody of inner keys)");
  escrow->require_subcommand(1);
  c.escrow_rotate = escrow->add_subcommand(
      "rotate",
      "make a new escrow key for new packages; the current one is retired and still releases "
      "what it escrowed (restart ma-server afterwards)");
  c.escrow_rotate->add_option("--key-id", c.escrow_key_id,
                              "id of the new key (default: escrow-<N+1>)");
  AddDir(c, c.escrow_rotate);
  auto* policy = c.app.add_subcommand(
      "policy-key", "the policy-signing key that MRKs which follow the MA name (issue #16)");
  policy->require_subcommand(1);
  c.policy_init = policy->add_subcommand(
      "init",
      "give an MA made without one its policy-signing key and the key's approval of the MA "
      "key (restart ma-server afterwards)");
  AddDir(c, c.policy_init);
  c.policy_import_tpm = policy->add_subcommand(
      "import-tpm",
      "move the policy-signing key into the MA's TPM: rotations then sign with TPM2_Sign");
  c.policy_import_tpm->add_option("--tpm-tcti", c.policy_tcti, "the MA's TPM")->required();
  c.policy_import_tpm->add_option("--tpm-parent", c.policy_parent,
                                  "its persistent storage parent (0x81000001)");
  AddDir(c, c.policy_import_tpm);
  AddMaKeyCommands(c);
}

void AddEkTrustCommands(Cli& c) {
  auto* trust = c.app.add_subcommand(
      "ek-trust", "the TPM manufacturer roots and the intermediate pool EK chains are built with");
  trust->require_subcommand(1);
  c.ekt_add = trust->add_subcommand(
      "add", "trust a root, or add an intermediate to the pool (restart ma-server afterwards)");
  auto* root = c.ekt_add->add_option("--root", c.ek_add_root,
                                     "a vendor's self-signed EK root CA (PEM or DER): an anchor");
  auto* inter = c.ekt_add->add_option(
      "--intermediate", c.ek_add_intermediate,
      "an intermediate CA (PEM or DER): helps complete chains, never an anchor");
  root->excludes(inter);
  c.ekt_list = trust->add_subcommand("list", "every EK root and intermediate the MA uses");
  c.ekt_remove = trust->add_subcommand("remove", "stop trusting a root or drop an intermediate");
  c.ekt_remove->add_option("FINGERPRINT", c.ek_fingerprint, "SHA-256 from `ek-trust list`")
      ->required();
  for (auto* cmd : {c.ekt_add, c.ekt_list, c.ekt_remove}) AddDir(c, cmd);

  auto* ek = c.app.add_subcommand("ek", "EK certificates");
  ek->require_subcommand(1);
  c.ek_check = ek->add_subcommand(
      "check", "does CERT chain with the MA's current EK trust? (exit 0 trusted, 1 not)");
  c.ek_check->add_option("CERT", c.ek_cert, "EK certificate, PEM or DER")->required();
  c.ek_check->add_option("--chain", c.ek_chain,
                         "certificates the endpoint would send (repeatable)");
  AddDir(c, c.ek_check);
}

// Remote mode: the operator operations over HTTPS with an operator certificate, for
// helpdesk and auditors who have no access to the MA host.
void AddRemoteOptions(Cli& c) {
  c.app.add_option("--ma", c.remote.url, "remote mode: the MA URL (https://host:port)");
  c.app.add_option("--ma-ca", c.remote.ca_file,
                   "remote mode: CA file trusting the MA's TLS certificate");
  c.app.add_option("--operator-cert", c.remote.bundle_file,
                   "remote mode: your key + certificate (NAME.pem from `operator issue`)");
  c.whoami = c.app.add_subcommand("whoami", "remote mode: the operator and role the MA sees");
}

// Checkpoints and retention (server/admin_audit.h), on the MA host only.
void AddAuditAnchorCommands(Cli& c) {
  c.audit_checkpoint = c.audit->add_subcommand("checkpoint", "sign the log's head now");
  c.audit_checkpoint->add_option("--out", c.checkpoint_out,
                                 "write it here (default: audit.checkpoint_dir)");
  AddDir(c, c.audit_checkpoint);
  c.audit_checkpoint_key = c.audit->add_subcommand(
      "checkpoint-key", "make the checkpoint key of an MA created before checkpoints existed");
  AddDir(c, c.audit_checkpoint_key);
  c.audit_archive =
      c.audit->add_subcommand("archive", "move old records to a signed archive file (retention)");
  auto* through = c.audit_archive->add_option("--through", c.archive.through_seq,
                                              "archive records up to this seq");
  c.audit_archive->add_option("--before", c.archive_before, "archive records older than this time")
      ->excludes(through);
  c.audit_archive->add_option("--out", c.archive.out_dir, "directory for the archive file")
      ->required();
  AddDir(c, c.audit_archive);
  c.audit_verify_archive =
      c.audit->add_subcommand("verify-archive", "check an archive file and its checkpoint");
  c.audit_verify_archive->add_option("file", c.archive_file, "audit-F-L.json")->required();
  c.audit_verify_archive->add_option("--key", c.audit_verify_opts.public_key,
                                     "the checkpoint key's public PEM");
  AddDir(c, c.audit_verify_archive);
}

void AddAuditCommands(Cli& c) {
  c.audit = c.app.add_subcommand("audit", "read the audit log, or verify its hash chain");
  c.audit->add_option("--platform", c.audit_q.platform,
                      "rows where this platform acted or was acted on");
  c.audit->add_option("--operator", c.audit_q.operator_name,
                      "rows by this actor (e.g. admin:alice)");
  c.audit->add_option("--action", c.audit_q.action, "rows of this action (e.g. Upload)");
  c.audit->add_option("--since", c.since,
                      "from this time (YYYY-MM-DD[THH:MM:SSZ] or Unix seconds)");
  c.audit->add_option("--until", c.until, "before this time");
  c.audit->add_option("--limit", c.audit_q.limit, "newest N rows")->capture_default_str();
  AddDir(c, c.audit);
  c.audit_verify = c.audit->add_subcommand(
      "verify", "check the hash chain, its genesis and triggers; names the first bad row");
  c.audit_verify->add_option("--checkpoint", c.audit_verify_opts.checkpoint,
                             "also prove the log against this signed checkpoint (--dir only)");
  c.audit_verify->add_option(
      "--key", c.audit_verify_opts.public_key,
      "the checkpoint key's public PEM (default DIR/audit/checkpoint-pub.pem)");
  AddDir(c, c.audit_verify);
  AddAuditAnchorCommands(c);
}

// The vault as a whole (server/admin_vault.h), on the MA host only.
void AddVaultCommands(Cli& c) {
  auto* vault = c.app.add_subcommand("vault", "back up, restore or move the vault");
  vault->require_subcommand(1);
  c.vault_backup = vault->add_subcommand(
      "backup", "online, checked copy of the SQLite vault (PostgreSQL: use pg_dump)");
  c.vault_backup->add_option("--out", c.vault_out, "the backup file to create (must not exist)")
      ->required();
  c.vault_restore = vault->add_subcommand(
      "restore", "put a checked backup in place as the SQLite vault (ma-server stopped)");
  c.vault_restore->add_option("--from", c.vault_from, "the backup file")->required();
  c.vault_restore->add_flag("--force", c.vault_force, "replace the existing vault file");
  c.vault_migrate = vault->add_subcommand(
      "migrate", "copy the SQLite vault into an empty PostgreSQL database (ma-server stopped)");
  c.vault_migrate
      ->add_option("--to", c.migrate.to, "postgresql:// URL or libpq DSN, without a password")
      ->required();
  c.vault_migrate->add_option("--password-file", c.migrate.password_file,
                              "the database password alone in a file (mode 0600)");
  for (auto* cmd : {c.vault_backup, c.vault_restore, c.vault_migrate}) AddDir(c, cmd);
}

// --since/--until as Unix seconds (either may be absent).
tpmma::Status ParseAuditWindow(const Cli& c, std::optional<int64_t>& since,
                               std::optional<int64_t>& until) {
  for (auto [text, field] : {std::pair{&c.since, &since}, std::pair{&c.until, &until}}) {
    if (text->empty()) continue;
    TPMMA_ASSIGN_OR_RETURN(*field, tpmma::ParseUtc(*text));
  }
  return tpmma::Status::Ok();
}

// "address:port" into c.init; port 0 is allowed: ma-server then binds a free port and
// logs it (tests use that).
bool ParseListen(Cli& c) {
  const std::string& listen = c.listen;
  auto colon = listen.rfind(':');
  unsigned port = 0;
  const char* first = colon == std::string::npos ? nullptr : listen.c_str() + colon + 1;
  const char* last = listen.c_str() + listen.size();
  auto parsed = first ? std::from_chars(first, last, port) : std::from_chars_result{};
  if (first == nullptr || colon == 0 || parsed.ec != std::errc() || parsed.ptr != last ||
      first == last || port > 65535) {
    return false;
  }
  c.init.listen_address = listen.substr(0, colon);
  c.init.listen_port = static_cast<uint16_t>(port);
  return true;
}

void PrintInitReport(const Cli& c, const s::InitReport& report) {
  if (c.json) {
    json out = {{"ok", true},
                {"config", report.config_path},
                {"ca_certificate", report.ca_certificate_path},
                {"url", report.url},
                {"ma_key_id", report.ma_key_id},
                {"ma_name", report.ma_name_hex},
                {"escrow_key_id",
                 report.escrow_key_id.empty() ? json(nullptr) : json(report.escrow_key_id)}};
    std::printf("%s\n", out.dump().c_str());
    return;
  }
  const std::string escrow =
      report.escrow_key_id.empty()
          ? "none (recovery-code custody only)"
          : report.escrow_key_id + " (escrow/escrow-key.pem; keep it apart from ma/)";
  std::printf(
      "Created a new Migration Authority in %s\n"
      "  config:          %s\n"
      "  MA URL:          %s\n"
      "  trust (CA cert): %s   (lms --ma-ca)\n"
      "  MA key %s Name: %s\n"
      "  escrow key:      %s\n"
      "Start it with: ma-server --config %s\n",
      c.init.dir.c_str(), report.config_path.c_str(), report.url.c_str(),
      report.ca_certificate_path.c_str(), report.ma_key_id.c_str(), report.ma_name_hex.c_str(),
      escrow.c_str(), report.config_path.c_str());
}

int RunInit(Cli& c) {
  if (!ParseListen(c)) {
    std::fprintf(stderr, "ma-admin: --listen must be address:port, got '%s'\n", c.listen.c_str());
    return kUsage;
  }
  c.init.escrow = !c.no_escrow;
  c.init.policy_key = !c.no_policy_key;
  auto report = s::InitMaState(c.init, tpmma::Env::Default());
  if (!report) return Fail(report.error(), c.json);
  PrintInitReport(c, *report);
  return 0;
}

// `{"ok": true, <key>: <value>}` for a remote command that answers with a Status.
tpmma::Result<json> OkOr(const tpmma::Status& st, const char* key, const json& value) {
  if (!st.ok()) return tpmma::Error(st);
  return json{{"ok", true}, {key, value}};
}

// The command as an operator operation; nullopt: it has none (it needs the MA host).
std::optional<tpmma::Result<json>> RemoteCall(const Cli& c, s::OperatorClient& client) {
  if (*c.whoami) return client.WhoAmI();
  if (*c.pl_list) return client.ListPlatforms();
  if (*c.pl_revoke) return OkOr(client.RevokePlatform(c.id, c.reason), "revoked", c.id);
  if (*c.pk_list) return client.ListPackages(c.platform_filter);
  if (*c.approve_cmd) {
    auto ttl = s::ParseDuration(c.expires);
    if (!ttl) return tpmma::Error(ttl.error().WithContext("--expires"));
    return client.Approve(c.approve.old_platform_id, c.approve.new_platform_id,
                          c.approve.package_ids, *ttl, c.approve.reason);
  }
  if (*c.ap_list) return client.ListApprovals(c.new_filter);
  if (*c.ap_confirm) return client.ConfirmApproval(c.approval_id);
  if (*c.ap_revoke) {
    return OkOr(client.RevokeApproval(c.approval_id, c.reason), "revoked", c.approval_id);
  }
  if (*c.audit_checkpoint || *c.audit_checkpoint_key || *c.audit_archive ||
      *c.audit_verify_archive || (*c.audit_verify && !c.audit_verify_opts.checkpoint.empty())) {
    return std::nullopt;  // the checkpoint key and the vault file live on the MA host
  }
  if (*c.audit_verify) {
    auto rows = client.VerifyAudit();
    if (!rows) return tpmma::Error(rows.error());
    return json{{"ok", true}, {"verified_rows", *rows}};
  }
  if (*c.audit) {
    std::optional<int64_t> from, to;
    if (tpmma::Status st = ParseAuditWindow(c, from, to); !st.ok()) return tpmma::Error(st);
    return client.ListAudit(c.audit_q.operator_name, c.audit_q.platform, c.audit_q.action, from,
                            to);
  }
  return std::nullopt;
}

int RunRemote(const Cli& c) {
  auto client = s::OperatorClient::Create(c.remote);
  if (!client) return Fail(client.error(), c.json);
  if (*c.approve_cmd && c.approve.two_person) {
    return Usage(
        "--two-person is the MA's policy in remote mode "
        "(approvals.two_person in its config)");
  }
  std::optional<tpmma::Result<json>> out = RemoteCall(c, **client);
  if (!out) return Usage("this command works on the MA host only (--dir), not with --ma");
  if (!*out) return Fail(out->error(), c.json);
  // Remote answers print as JSON either way: one shape for scripts and people.
  std::printf("%s\n", (*out)->dump(c.json ? -1 : 2).c_str());
  return 0;
}

// `*name` (what the operator typed: id, id prefix, hostname, serial, owner, ...) becomes the
// platform's full id; stderr says so when it was not the id, so the operator sees which.
tpmma::Status Resolve(const s::AdminContext& ctx, std::string* name) {
  TPMMA_ASSIGN_OR_RETURN(std::string id, s::ResolvePlatform(ctx, *name));
  if (id != *name && !ctx.json)
    std::fprintf(stderr, "'%s' is platform %s\n", name->c_str(), id.c_str());
  *name = std::move(id);
  return tpmma::Status::Ok();
}

// The platform arguments of the command chosen, as full ids.
tpmma::Status ResolvePlatforms(Cli& c, const s::AdminContext& ctx) {
  if (*c.pl_show || *c.pl_revoke || *c.pl_accept) return Resolve(ctx, &c.id);
  if (*c.pk_list && c.platform_filter) return Resolve(ctx, &*c.platform_filter);
  if (*c.ap_list && !c.new_filter.empty()) return Resolve(ctx, &c.new_filter);
  if (*c.approve_cmd) {
    TPMMA_RETURN_IF_ERROR(Resolve(ctx, &c.approve.old_platform_id).WithContext("--old"));
    return Resolve(ctx, &c.approve.new_platform_id).WithContext("--new");
  }
  return tpmma::Status::Ok();
}

// The command on the MA host's state directory; nullopt: no such command.
std::optional<tpmma::Status> LocalCall(Cli& c, const s::AdminContext& ctx) {
  if (tpmma::Status st = ResolvePlatforms(c, ctx); !st.ok()) return st;
  if (*c.pl_list) return s::ListPlatforms(ctx);
  if (*c.pl_find) return s::FindPlatforms(ctx, c.id);
  if (*c.pl_show) return s::ShowPlatform(ctx, c.id);
  if (*c.pl_revoke) return s::RevokePlatform(ctx, c.id, c.reason);
  if (*c.pl_register) return s::RegisterPlatforms(ctx, c.reg);
  if (*c.pl_registrations) return s::ListRegistrations(ctx);
  if (*c.pl_accept) return s::AcceptPlatform(ctx, c.id);
  if (*c.pk_list) return s::ListPackages(ctx, c.platform_filter);
  if (*c.pk_show) return s::ShowPackage(ctx, c.id);
  if (*c.pk_delete) return s::DeletePackage(ctx, c.id, c.reason);
  if (*c.approve_cmd) {
    auto ttl = s::ParseDuration(c.expires);
    if (!ttl) return ttl.error().WithContext("--expires");
    c.approve.validity_s = *ttl;
    return s::Approve(ctx, c.approve);
  }
  if (*c.ap_list) return s::ListApprovals(ctx, c.new_filter);
  if (*c.ap_confirm) return s::ConfirmApproval(ctx, c.approval_id);
  if (*c.ap_revoke) return s::RevokeApproval(ctx, c.approval_id, c.reason);
  if (*c.op_issue) return s::IssueOperator(ctx, c.dir, c.op_name, c.op_role, c.op_out);
  if (*c.op_revoke) return s::RevokeOperator(ctx, c.op_name, c.reason);
  if (*c.op_list) return s::ListOperators(ctx);
  if (*c.escrow_rotate) return s::RotateEscrowKey(ctx, c.dir, c.escrow_key_id);
  if (*c.policy_init) return s::InitPolicyKey(ctx, c.dir);
  if (*c.policy_import_tpm) {
    return s::ImportPolicyKeyToTpm(ctx, c.dir, c.policy_tcti, c.policy_parent);
  }
  if (*c.mk_rotate) return s::RotateMaKey(ctx, c.dir, c.rotate);
  if (*c.mk_status) return s::MaKeyStatus(ctx, c.dir);
  if (*c.mk_reencipher) {
    // Fault injection for the rotation drill (tests/lms/lms_ma_key_rotation_test.cc).
    if (const char* kill = std::getenv("TPMMA_REENCIPHER_KILL_AFTER_BATCHES")) {
      c.reencipher.kill_after_batches = std::strtoul(kill, nullptr, 10);
    }
    return s::ReencipherPackages(ctx, c.dir, c.reencipher);
  }
  if (*c.mk_retire) return s::RetireMaKey(ctx, c.dir, c.ma_key_id);
  if (*c.ekt_add) {
    const bool root = !c.ek_add_root.empty();
    return s::EkTrustAdd(ctx, c.dir, root ? c.ek_add_root : c.ek_add_intermediate,
                         root ? s::EkTrustKind::kRoot : s::EkTrustKind::kIntermediate);
  }
  if (*c.ekt_list) return s::EkTrustList(ctx, c.dir);
  if (*c.ekt_remove) return s::EkTrustRemove(ctx, c.dir, c.ek_fingerprint);
  if (*c.ek_check) return s::EkCheck(ctx, c.dir, c.ek_cert, c.ek_chain);
  if (*c.audit_verify) return s::VerifyAudit(ctx, c.dir, c.audit_verify_opts);
  if (*c.audit_checkpoint) return s::WriteAuditCheckpoint(ctx, c.dir, c.checkpoint_out);
  if (*c.audit_checkpoint_key) return s::CreateAuditCheckpointKey(ctx, c.dir);
  if (*c.audit_archive) {
    if (!c.archive_before.empty()) {
      TPMMA_ASSIGN_OR_RETURN(c.archive.before, tpmma::ParseUtc(c.archive_before));
    }
    return s::ArchiveAuditLog(ctx, c.dir, c.archive);
  }
  if (*c.audit_verify_archive) {
    return s::VerifyAuditArchive(ctx, c.dir, c.archive_file, c.audit_verify_opts.public_key);
  }
  if (*c.audit) {
    TPMMA_RETURN_IF_ERROR(ParseAuditWindow(c, c.audit_q.since, c.audit_q.until));
    return s::ListAudit(ctx, c.audit_q);
  }
  return std::nullopt;
}

// Not through OpenVault first: each opens the vault file (or not) as it must.
int RunVault(const Cli& c) {
  auto cfg = s::LoadConfig(c.dir + "/config.toml");
  if (!cfg) return Fail(cfg.error().WithContext("the MA in " + c.dir), c.json);
  s::AdminContext ctx{.vault = nullptr,
                      .env = tpmma::Env::Default(),
                      .actor = LocalActor(),
                      .json = c.json,
                      .out = stdout,
                      .approvals = s::ApprovalRulesOf(*cfg)};
  tpmma::Status st;
  if (*c.vault_backup) st = s::BackupVault(ctx, *cfg, c.vault_out);
  if (*c.vault_restore) st = s::RestoreVault(ctx, *cfg, c.vault_from, c.vault_force);
  if (*c.vault_migrate) st = s::MigrateVault(ctx, *cfg, c.migrate);
  return st.ok() ? 0 : Fail(st, c.json);
}

int RunLocal(Cli& c) {
  auto cfg = s::LoadConfig(c.dir + "/config.toml");
  if (!cfg) return Fail(cfg.error().WithContext("the MA in " + c.dir), c.json);
  auto vault = s::OpenVault(*cfg, tpmma::Env::Default());
  if (!vault) return Fail(vault.error(), c.json);
  s::AdminContext ctx{.vault = vault->get(),
                      .env = tpmma::Env::Default(),
                      .actor = LocalActor(),
                      .json = c.json,
                      .out = stdout,
                      .approvals = s::ApprovalRulesOf(*cfg)};
  std::optional<tpmma::Status> st = LocalCall(c, ctx);
  if (!st) return kUsage;
  return st->ok() ? 0 : Fail(*st, c.json);
}

}  // namespace

int main(int argc, char** argv) {
  Cli c;
  c.app.require_subcommand(1);
  // Options of ma-admin itself (--json, --ma, ...) may also follow the subcommand:
  // `ma-admin platforms list --json` as well as `ma-admin --json platforms list`.
  c.app.fallthrough();
  c.app.add_flag("--json", c.json, "machine-readable output");
  c.app.footer("Exit codes: 0 success, 1 the operation failed, 2 bad usage.");
  AddInitCommand(c);
  AddPlatformCommands(c);
  AddPackageCommands(c);
  AddApprovalCommands(c);
  AddOperatorCommands(c);
  AddEscrowCommands(c);
  AddEkTrustCommands(c);
  AddRemoteOptions(c);
  AddAuditCommands(c);
  AddVaultCommands(c);
  try {
    c.app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return c.app.exit(e) == 0 ? 0 : kUsage;
  }
  if (*c.init_cmd) return RunInit(c);
  if (*c.ekt_add && c.ek_add_root.empty() && c.ek_add_intermediate.empty()) {
    return Usage("ek-trust add needs --root FILE or --intermediate FILE");
  }
  if (!c.remote.url.empty()) return RunRemote(c);
  if (*c.vault_backup || *c.vault_restore || *c.vault_migrate) return RunVault(c);
  if (*c.whoami) return Usage("whoami needs remote mode (--ma, --ma-ca, --operator-cert)");
  return RunLocal(c);
}
