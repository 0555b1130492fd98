// SPDX-License-Identifier: GPL-2.0-or-later
#include "server/vault_open.h"

#include <algorithm>
#include <utility>

#include "common/bytes.h"
#include "common/file_mode.h"
#include "storage/postgres_vault.h"
#include "storage/sqlite_vault.h"

namespace tpmma::server {
namespace {

constexpr size_t kMaxPasswordFile = 4096;

// The whole file is the password, less one trailing newline (what `echo pw > file` leaves).
// Kept in wiping memory until it is handed to libpq's parameters.
Result<std::string> ReadPasswordFile(const std::string& path, Env* env) {
  TPMMA_RETURN_IF_ERROR(CheckOwnerOnlySecret(path, "vault.password_file"));
  auto raw = env->ReadFile(path, kMaxPasswordFile);
  if (!raw) return Error(raw.error().WithContext("vault.password_file"));
  SecureBytes bytes(raw->begin(), raw->end());
  Wipe(raw->data(), raw->size());
  if (!bytes.empty() && bytes.back() == '\n') bytes.pop_back();
  if (!bytes.empty() && bytes.back() == '\r') bytes.pop_back();
  if (bytes.empty() || std::find_if(bytes.begin(), bytes.end(), [](uint8_t c) {
                         return c == '\0' || c == '\n' || c == '\r';
                       }) != bytes.end()) {
    return Error(Code::kInvalidArgument,
                 "vault.password_file " + path + " must hold the password alone, on one line");
  }
  return std::string(bytes.begin(), bytes.end());
}

}  // namespace

Result<storage::PostgresVaultOptions> PostgresOptionsFor(const std::string& url,
                                                         const std::string& password_file,
                                                         Env* env) {
  auto has_password = storage::PostgresVault::ConnInfoHasPassword(url);
  if (!has_password) return Error(has_password.error().WithContext("vault.url"));
  if (*has_password) {
    // Config files are read by operators, copied into tickets and backed up; the password
    // belongs in a file of its own that only the service user can read.
    return Error(Code::kInvalidArgument,
                 "vault.url must not contain a password: put it in vault.password_file "
                 "(mode 0600) or PGPASSFILE");
  }
  storage::PostgresVaultOptions options;
  if (!password_file.empty()) {
    TPMMA_ASSIGN_OR_RETURN(options.password, ReadPasswordFile(password_file, env));
  }
  return options;
}

Result<std::unique_ptr<storage::Vault>> OpenPostgresVault(const std::string& url,
                                                          const std::string& password_file,
                                                          size_t connections, Env* env,
                                                          size_t max_batch) {
  TPMMA_ASSIGN_OR_RETURN(storage::PostgresVaultOptions options,
                         PostgresOptionsFor(url, password_file, env));
  TPMMA_ASSIGN_OR_RETURN(std::string where, storage::PostgresVault::DescribeConnInfo(url));
  options.connections = std::max<size_t>(connections, 1);
  options.max_batch = max_batch;
  auto vault = storage::PostgresVault::Open(url, std::move(options));
  if (!vault) return Error(vault.error().WithContext("vault.url " + where));
  return std::unique_ptr<storage::Vault>(std::move(*vault));
}

Result<std::unique_ptr<storage::Vault>> OpenVault(const Config& cfg, Env* env) {
  if (!cfg.vault_url.empty()) {
    return OpenPostgresVault(cfg.vault_url, cfg.vault_password_file, cfg.vault_read_connections,
                             env, cfg.vault_max_batch);
  }
  storage::SqliteVaultOptions options;
  options.max_batch = cfg.vault_max_batch;
  options.read_connections = cfg.vault_read_connections;
  options.max_deferred_audit = cfg.vault_max_deferred_audit;
  options.deferred_audit_delay_ms = cfg.vault_deferred_audit_delay_ms;
  auto vault = storage::SqliteVault::Open(cfg.vault_path, std::move(options));
  if (!vault) return Error(vault.error().WithContext("vault.path " + cfg.vault_path));
  return std::unique_ptr<storage::Vault>(std::move(*vault));
}

Status CheckVaultAnswers(const Config& cfg, Env* env) {
  Config one = cfg;
  one.vault_read_connections = 1;  // a question, not a pool
  TPMMA_ASSIGN_OR_RETURN(auto vault, OpenVault(one, env));
  if (auto head = vault->GetAuditHead(); !head) return head.error().WithContext("vault");
  return Status::Ok();
}

}  // namespace tpmma::server
