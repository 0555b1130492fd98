// SPDX-License-Identifier: GPL-2.0-or-later
// ma-admin: the helpdesk/admin tool: `init` creates an MA; platforms, packages,
// approve/approvals and audit work on an MA's state directory (--dir) on the MA host.
//
// Exit codes: 0 success, 1 the operation failed, 2 bad usage.
#include <charconv>
#include <cstdio>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <pwd.h>
#include <unistd.h>

#include "common/env.h"
#include "server/admin_commands.h"
#include "server/admin_init.h"
#include "server/config.h"
#include "server/operator_client.h"
#include "storage/sqlite_vault.h"

namespace {

int Fail(const tpmma::Status& s, bool json) {
  if (json) {
    nlohmann::json out = {
        {"ok", false}, {"code", std::string(tpmma::CodeName(s.code()))}, {"message", s.message()}};
    std::printf("%s\n", out.dump().c_str());
  } else {
    std::fprintf(stderr, "ma-admin: %s\n", s.ToString().c_str());
  }
  return 1;
}

// "admin:<login>": who did it, for the audit log.
std::string LocalActor() {
  const passwd* pw = ::getpwuid(::geteuid());
  return std::string("admin:") + (pw != nullptr ? pw->pw_name : std::to_string(::geteuid()));
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"ma-admin: administer a tpm-ma Migration Authority"};
  app.require_subcommand(1);
  bool json = false;
  app.add_flag("--json", json, "machine-readable output");
  app.footer("Exit codes: 0 success, 1 the operation failed, 2 bad usage.");

  tpmma::server::InitOptions init;
  std::string listen = "127.0.0.1:8443";
  auto* init_cmd = app.add_subcommand("init", "create a fresh MA state directory");
  init_cmd->add_option("--dir", init.dir, "state directory to create (must be empty or absent)")
      ->required();
  init_cmd->add_option("--listen", listen, "address:port ma-server will listen on")
      ->capture_default_str();
  init_cmd->add_option("--ek-root", init.ek_root_files,
                       "PEM certificate of a TPM manufacturer root to trust (repeatable)");
  init_cmd->add_option("--ma-key-id", init.ma_key_id, "identifier of the MA key")
      ->capture_default_str();
  init_cmd->add_option("--escrow-key-id", init.escrow_key_id, "identifier of the escrow key")
      ->capture_default_str();
  bool no_escrow = false;
  init_cmd->add_flag("--no-escrow", no_escrow,
                     "offer recovery-code custody only: make no escrow key");

  // --- commands on an existing MA's state directory
  std::string dir = "/var/lib/tpm-ma";
  auto add_dir = [&](CLI::App* c) {
    c->add_option("--dir", dir, "the MA state directory (holds config.toml)")
        ->capture_default_str();
  };
  std::string id, reason;
  std::optional<std::string> platform_filter;

  auto* platforms = app.add_subcommand("platforms", "list, show or revoke platforms (TPMs)");
  platforms->require_subcommand(1);
  auto* pl_list = platforms->add_subcommand("list", "every platform that ever authenticated");
  auto* pl_show = platforms->add_subcommand("show", "one platform and its packages");
  pl_show->add_option("ID", id, "platform id")->required();
  auto* pl_revoke = platforms->add_subcommand(
      "revoke", "block a platform (stolen laptop): its sessions and downloads stop at once");
  pl_revoke->add_option("ID", id, "platform id")->required();
  pl_revoke->add_option("--reason", reason, "why (recorded in the audit log)")->required();
  for (auto* c : {pl_list, pl_show, pl_revoke}) add_dir(c);

  auto* packages = app.add_subcommand("packages", "list, show or delete vaulted packages");
  packages->require_subcommand(1);
  auto* pk_list = packages->add_subcommand("list", "packages, newest last");
  pk_list->add_option("--platform", platform_filter, "only packages of this source platform");
  auto* pk_show = packages->add_subcommand("show", "one package's descriptor and keys");
  pk_show->add_option("ID", id, "package id")->required();
  auto* pk_delete = packages->add_subcommand("delete", "delete a package (securely)");
  pk_delete->add_option("ID", id, "package id")->required();
  pk_delete->add_option("--reason", reason, "why (recorded in the audit log)")->required();
  for (auto* c : {pk_list, pk_show, pk_delete}) add_dir(c);

  tpmma::server::ApproveOptions approve;
  std::string expires = "24h";
  auto* approve_cmd = app.add_subcommand(
      "approve", "let platform NEW restore packages of platform OLD (motherboard swap)");
  approve_cmd->add_option("--old", approve.old_platform, "the old platform's id")->required();
  approve_cmd->add_option("--new", approve.new_platform, "the new platform's id")->required();
  approve_cmd->add_option("--package", approve.package_ids,
                          "only this package (repeatable; default: all of OLD's)");
  approve_cmd->add_option("--expires", expires, "validity, e.g. 4h, 2d")->capture_default_str();
  approve_cmd->add_option("--reason", approve.reason, "ticket or reason (audited)")->required();
  approve_cmd->add_flag("--two-person", approve.require_confirmation,
                        "stay pending until a second operator confirms");
  add_dir(approve_cmd);

  int64_t approval_id = 0;
  auto* approvals = app.add_subcommand("approvals", "list, confirm or revoke approvals");
  approvals->require_subcommand(1);
  auto* ap_list = approvals->add_subcommand("list", "approvals, newest first");
  std::string new_filter;
  ap_list->add_option("--new", new_filter, "only approvals for this new platform");
  auto* ap_confirm = approvals->add_subcommand("confirm", "second operator confirms (two-person)");
  ap_confirm->add_option("ID", approval_id, "approval id")->required();
  auto* ap_revoke = approvals->add_subcommand("revoke", "withdraw an approval");
  ap_revoke->add_option("ID", approval_id, "approval id")->required();
  ap_revoke->add_option("--reason", reason, "why (audited)")->required();
  for (auto* c : {ap_list, ap_confirm, ap_revoke}) add_dir(c);

  std::string op_name, op_role, op_out = ".";
  auto* operators = app.add_subcommand("operator", "issue, revoke or list operator certificates");
  operators->require_subcommand(1);
  auto* op_issue = operators->add_subcommand(
      "issue", "new helpdesk/auditor/admin: key + client certificate from the operator CA");
  op_issue->add_option("--name", op_name, "operator name (a-z0-9._-)")->required();
  op_issue->add_option("--role", op_role, "helpdesk, auditor or admin")->required();
  op_issue->add_option("--out", op_out, "directory for NAME.key/.crt/.pem")->capture_default_str();
  auto* op_revoke =
      operators->add_subcommand("revoke", "refuse an operator's certificate from now on");
  op_revoke->add_option("--name", op_name, "operator name")->required();
  op_revoke->add_option("--reason", reason, "why (audited)")->required();
  auto* op_list = operators->add_subcommand("list", "every operator and its role");
  for (auto* c : {op_issue, op_revoke, op_list}) add_dir(c);

  std::string escrow_key_id;
  auto* escrow_cmd = app.add_subcommand("escrow", "the escrow key (escrow custody of inner keys)");
  escrow_cmd->require_subcommand(1);
  auto* escrow_rotate = escrow_cmd->add_subcommand(
      "rotate",
      "make a new escrow key for new packages; the current one is retired and still releases "
      "what it escrowed (restart ma-server afterwards)");
  escrow_rotate->add_option("--key-id", escrow_key_id, "id of the new key (default: escrow-<N+1>)");
  add_dir(escrow_rotate);

  // Remote mode: the operator operations over HTTPS with an operator certificate, for
  // helpdesk and auditors who have no access to the MA host.
  tpmma::server::OperatorClientOptions remote;
  app.add_option("--ma", remote.url, "remote mode: the MA URL (https://host:port)");
  app.add_option("--ma-ca", remote.ca_file,
                 "remote mode: CA file trusting the MA's TLS certificate");
  app.add_option("--operator-cert", remote.bundle_file,
                 "remote mode: your key + certificate (NAME.pem from `operator issue`)");
  auto* whoami = app.add_subcommand("whoami", "remote mode: the operator and role the MA sees");

  tpmma::server::AuditQuery audit_q;
  std::string since, until;
  auto* audit = app.add_subcommand("audit", "read the audit log, or verify its hash chain");
  audit->add_option("--platform", audit_q.platform,
                    "rows where this platform acted or was acted on");
  audit->add_option("--operator", audit_q.operator_name, "rows by this actor (e.g. admin:alice)");
  audit->add_option("--action", audit_q.action, "rows of this action (e.g. Upload)");
  audit->add_option("--since", since, "from this time (YYYY-MM-DD[THH:MM:SSZ] or Unix seconds)");
  audit->add_option("--until", until, "before this time");
  audit->add_option("--limit", audit_q.limit, "newest N rows")->capture_default_str();
  add_dir(audit);
  auto* audit_verify =
      audit->add_subcommand("verify", "check the hash chain; names the first bad row");
  add_dir(audit_verify);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }

  if (*init_cmd) {
    // Port 0 is allowed: ma-server then binds a free port and logs it (tests use that).
    auto colon = listen.rfind(':');
    unsigned port = 0;
    const char* first = colon == std::string::npos ? nullptr : listen.c_str() + colon + 1;
    const char* last = listen.c_str() + listen.size();
    auto parsed = first ? std::from_chars(first, last, port) : std::from_chars_result{};
    if (first == nullptr || colon == 0 || parsed.ec != std::errc() || parsed.ptr != last ||
        first == last || port > 65535) {
      std::fprintf(stderr, "ma-admin: --listen must be address:port, got '%s'\n", listen.c_str());
      return 2;
    }
    init.listen_address = listen.substr(0, colon);
    init.listen_port = static_cast<uint16_t>(port);
    init.escrow = !no_escrow;
    auto report = tpmma::server::InitMaState(init, tpmma::Env::Default());
    if (!report) return Fail(report.error(), json);
    if (json) {
      nlohmann::json out = {
          {"ok", true},
          {"config", report->config_path},
          {"ca_certificate", report->ca_certificate_path},
          {"url", report->url},
          {"ma_key_id", report->ma_key_id},
          {"ma_name", report->ma_name_hex},
          {"escrow_key_id", report->escrow_key_id.empty() ? nlohmann::json(nullptr)
                                                          : nlohmann::json(report->escrow_key_id)}};
      std::printf("%s\n", out.dump().c_str());
    } else {
      std::printf(
          "Created a new Migration Authority in %s\n"
          "  config:          %s\n"
          "  MA URL:          %s\n"
          "  trust (CA cert): %s   (lms --ma-ca)\n"
          "  MA key %s Name: %s\n"
          "  escrow key:      %s\n"
          "Start it with: ma-server --config %s\n",
          init.dir.c_str(), report->config_path.c_str(), report->url.c_str(),
          report->ca_certificate_path.c_str(), report->ma_key_id.c_str(),
          report->ma_name_hex.c_str(),
          report->escrow_key_id.empty()
              ? "none (recovery-code custody only)"
              : (report->escrow_key_id + " (escrow/escrow-key.pem; keep it apart from ma/)")
                    .c_str(),
          report->config_path.c_str());
    }
    return 0;
  }

  namespace s = tpmma::server;
  if (!remote.url.empty()) {
    auto client = s::OperatorClient::Create(remote);
    if (!client) return Fail(client.error(), json);
    auto& c = **client;
    tpmma::Result<nlohmann::json> out = nlohmann::json{{"ok", true}};
    if (*whoami) {
      out = c.WhoAmI();
    } else if (*pl_list) {
      out = c.ListPlatforms();
    } else if (*pl_revoke) {
      tpmma::Status st = c.RevokePlatform(id, reason);
      if (!st.ok())
        out = tpmma::Error(st);
      else
        out = nlohmann::json{{"ok", true}, {"revoked", id}};
    } else if (*pk_list) {
      out = c.ListPackages(platform_filter);
    } else if (*approve_cmd) {
      auto ttl = s::ParseDuration(expires);
      if (!ttl) return Fail(ttl.error().WithContext("--expires"), json);
      if (approve.require_confirmation) {
        std::fprintf(stderr,
                     "ma-admin: --two-person is the MA's policy in remote mode "
                     "(approvals.two_person in its config)\n");
        return 2;
      }
      out = c.Approve(approve.old_platform, approve.new_platform, approve.package_ids, *ttl,
                      approve.reason);
    } else if (*ap_list) {
      out = c.ListApprovals(new_filter);
    } else if (*ap_confirm) {
      out = c.ConfirmApproval(approval_id);
    } else if (*ap_revoke) {
      tpmma::Status st = c.RevokeApproval(approval_id, reason);
      if (!st.ok())
        out = tpmma::Error(st);
      else
        out = nlohmann::json{{"ok", true}, {"revoked", approval_id}};
    } else if (*audit_verify) {
      auto rows = c.VerifyAudit();
      if (!rows)
        out = tpmma::Error(rows.error());
      else
        out = nlohmann::json{{"ok", true}, {"verified_rows", *rows}};
    } else if (*audit) {
      std::optional<int64_t> from, to;
      for (auto [text, field] : {std::pair{&since, &from}, std::pair{&until, &to}}) {
        if (text->empty()) continue;
        auto t = s::ParseTime(*text);
        if (!t) return Fail(t.error(), json);
        *field = *t;
      }
      out = c.ListAudit(audit_q.operator_name, audit_q.platform, audit_q.action, from, to);
    } else {
      std::fprintf(stderr,
                   "ma-admin: this command works on the MA host only (--dir), not with --ma\n");
      return 2;
    }
    if (!out) return Fail(out.error(), json);
    // Remote answers print as JSON either way: one shape for scripts and people.
    std::printf("%s\n", out->dump(json ? -1 : 2).c_str());
    return 0;
  }
  if (*whoami) {
    std::fprintf(stderr, "ma-admin: whoami needs remote mode (--ma, --ma-ca, --operator-cert)\n");
    return 2;
  }

  // Everything else works on an existing MA.
  auto cfg = tpmma::server::LoadConfig(dir + "/config.toml");
  if (!cfg) return Fail(cfg.error().WithContext("the MA in " + dir), json);
  auto vault = tpmma::storage::SqliteVault::Open(cfg->vault_path);
  if (!vault) return Fail(vault.error(), json);
  tpmma::server::AdminContext ctx{.vault = vault->get(),
                                  .env = tpmma::Env::Default(),
                                  .actor = LocalActor(),
                                  .json = json,
                                  .out = stdout};
  tpmma::Status st;
  if (*pl_list) {
    st = s::ListPlatforms(ctx);
  } else if (*pl_show) {
    st = s::ShowPlatform(ctx, id);
  } else if (*pl_revoke) {
    st = s::RevokePlatform(ctx, id, reason);
  } else if (*pk_list) {
    st = s::ListPackages(ctx, platform_filter);
  } else if (*pk_show) {
    st = s::ShowPackage(ctx, id);
  } else if (*pk_delete) {
    st = s::DeletePackage(ctx, id, reason);
  } else if (*approve_cmd) {
    auto ttl = s::ParseDuration(expires);
    if (!ttl) return Fail(ttl.error().WithContext("--expires"), json);
    approve.ttl_s = *ttl;
    st = s::Approve(ctx, approve);
  } else if (*ap_list) {
    st = s::ListApprovals(ctx, new_filter);
  } else if (*ap_confirm) {
    st = s::ConfirmApproval(ctx, approval_id);
  } else if (*ap_revoke) {
    st = s::RevokeApproval(ctx, approval_id, reason);
  } else if (*op_issue) {
    st = s::IssueOperator(ctx, dir, op_name, op_role, op_out);
  } else if (*op_revoke) {
    st = s::RevokeOperator(ctx, op_name, reason);
  } else if (*op_list) {
    st = s::ListOperators(ctx);
  } else if (*escrow_rotate) {
    st = s::RotateEscrowKey(ctx, dir, escrow_key_id);
  } else if (*audit_verify) {
    st = s::VerifyAudit(ctx);
  } else if (*audit) {
    for (auto [text, field] :
         {std::pair{&since, &audit_q.since}, std::pair{&until, &audit_q.until}}) {
      if (text->empty()) continue;
      auto t = s::ParseTime(*text);
      if (!t) return Fail(t.error(), json);
      *field = *t;
    }
    st = s::ListAudit(ctx, audit_q);
  } else {
    return 2;
  }
  return st.ok() ? 0 : Fail(st, json);
}
