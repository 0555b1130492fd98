// SPDX-License-Identifier: GPL-2.0-or-later
// The ma-admin commands that work on an MA's state directory directly (run on the MA host
// by its administrator, with the service user's file access): platforms, packages,
// approvals, audit. Every change goes through the Vault, so it is one transaction with its
// audit row, exactly like a change made through the server.
//
// Each command prints a table (or one JSON document with --json) to `out` and returns a
// Status; main() maps it to the exit code.
#pragma once

#include <cstdint>
#include <cstdio>
#include <optional>
#include <string>
#include <vector>

#include "common/env.h"
#include "common/status.h"
#include "server/approvals.h"
#include "server/config.h"
#include "storage/vault.h"

namespace tpmma::server {

struct Config;

// Paths inside the state directory `dir` made relative to it, as `ma-admin init` writes them,
// so that the directory can still be moved as a whole (before ConfigToToml).
void RelativeTo(const std::string& dir, Config& c);

struct AdminContext {
  storage::Vault* vault = nullptr;
  Env* env = nullptr;
  std::string actor;  // "admin:<login>" in the audit log
  bool json = false;
  std::FILE* out = stdout;
  ApprovalRules approvals;  // [approvals] of the MA's config.toml
};

// Platforms (admin_platforms.cc). Tables show full ids: a person pastes them back.
Status ListPlatforms(const AdminContext& ctx);
// The platform, its latest inventory (with the time it was reported) and its packages.
Status ShowPlatform(const AdminContext& ctx, const std::string& id);
// Platforms whose hostname, serial, asset tag, owner label or machine-id contains `text`
// (case-insensitive), or whose id starts with it.
Status FindPlatforms(const AdminContext& ctx, const std::string& text);
// What an operator typed for a platform, as its full id: a full id, a unique id prefix, or
// a hostname, serial number, asset tag, owner label or machine-id (whole value, ASCII
// case-insensitive). kNotFound when nothing matches; kInvalidArgument when several do, the
// message listing every candidate (full id, hostname, serial, owner, last seen).
Result<std::string> ResolvePlatform(const AdminContext& ctx, const std::string& text);
Status RevokePlatform(const AdminContext& ctx, const std::string& id, const std::string& reason);

Status ListPackages(const AdminContext& ctx, const std::optional<std::string>& platform);
Status ShowPackage(const AdminContext& ctx, const std::string& id);
Status DeletePackage(const AdminContext& ctx, const std::string& id, const std::string& reason);

// Under the same rules (ctx.approvals) as an Approve through the operator side.
Status Approve(const AdminContext& ctx, const ApprovalGrant& grant);
Status ConfirmApproval(const AdminContext& ctx, int64_t id);
Status RevokeApproval(const AdminContext& ctx, int64_t id, const std::string& reason);
Status ListApprovals(const AdminContext& ctx, const std::string& new_platform);

struct AuditQuery {
  std::optional<std::string> platform;  // actor or object
  std::optional<std::string> operator_name;
  std::optional<std::string> action;
  std::optional<int64_t> since, until;
  size_t limit = 1000;
};
Status ListAudit(const AdminContext& ctx, const AuditQuery& query);

// Operators (helpdesk, auditor, admin) authenticate to ma-server with a TLS client
// certificate from the operator CA in `state_dir`/ca. Issue writes OUT_DIR/NAME.key,
// NAME.crt and NAME.pem (key + certificate, what `ma-admin --operator-cert` takes), all
// 0600, and registers the certificate's fingerprint with the role.
Status IssueOperator(const AdminContext& ctx, const std::string& state_dir, const std::string& name,
                     const std::string& role, const std::string& out_dir);
Status RevokeOperator(const AdminContext& ctx, const std::string& name, const std::string& reason);
Status ListOperators(const AdminContext& ctx);

// Makes a new escrow key (RSA-2048, certified by the MA CA in `state_dir`/ca, written to
// escrow/<id>-key.pem and -cert.pem) and makes it the current one in config.toml; the
// previous one moves to [[escrow.retired]], where it still releases what it escrowed
// (docs/operations.md, Inner-key custody). Also how an MA made with --no-escrow starts to
// offer escrow. `new_key_id` empty: escrow-<N+1>. ma-server uses the new key after a restart.
// `ma-admin policy-key init`: gives an MA made without one (init --no-policy-key, or before
// #16) its policy-signing key (policy/policy-key.pem, .pub.pem) and the key's approval of the
// MA key (policy/MAKEYID.approval), and [policy] in config.toml. Refused when it has one: a
// new key would strand the MRKs that follow the old. ma-server publishes it after a restart.
Status InitPolicyKey(const AdminContext& ctx, const std::string& state_dir);

Status RotateEscrowKey(const AdminContext& ctx, const std::string& state_dir,
                       const std::string& new_key_id);

// PREFIX<N+1> after the highest PREFIX<N> among `keys` (PREFIX1 when there is none).
std::string NextKeyId(const std::vector<const TpmKeyConfig*>& keys, const std::string& prefix);
// Every key id the MA's config names (storage, retiring, escrow, retired escrow keys): a
// key id is never reused, since packages and audit records name keys by it.
std::vector<std::string> TakenKeyIds(const Config& c);

// A new RSA-2048 key certified by the MA CA in `state_dir`/ca (profile kMaStorage), at
// `state_dir`/`key_file` (0600) and `cert_file` (0644), both relative; refused if either
// exists or the CA key is not there (kept offline: the message says to bring it back).
Status IssueCaCertifiedKey(const AdminContext& ctx, const std::string& state_dir,
                           const std::string& common_name, const std::string& key_file,
                           const std::string& cert_file);

// "24h", "90m", "7d", "3600" (seconds) -> seconds; kInvalidArgument otherwise.
Result<int64_t> ParseDuration(std::string_view text);

}  // namespace tpmma::server
