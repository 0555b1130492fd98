// SPDX-License-Identifier: GPL-2.0-or-later
#include "server/admin_init.h"

#include <algorithm>

#include "common/bytes.h"
#include "server/config.h"
#include "server/pki.h"
#include "storage/sqlite_vault.h"
#include "tpm/marshal.h"
#include "tpm/public.h"

namespace tpmma::server {
namespace {

constexpr uint32_t kSecretMode = 0600;
constexpr uint32_t kPublicMode = 0644;
constexpr uint32_t kDirMode = 0700;
constexpr size_t kMaxRootFileBytes = 1 << 20;

Status WriteSecret(Env* env, const std::string& path, const SecureString& pem) {
  return env->WriteFileAtomic(path, View(std::string_view(pem.data(), pem.size())), kSecretMode);
}

Status WritePublic(Env* env, const std::string& path, const std::string& text) {
  return env->WriteFileAtomic(path, View(text), kPublicMode);
}

std::string BaseName(const std::string& path) {
  auto slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

}  // namespace

Result<InitReport> InitMaState(const InitOptions& opts, Env* env) {
  if (opts.dir.empty()) return Error(Code::kInvalidArgument, "--dir is required");
  const std::string& dir = opts.dir;
  if (env->FileExists(dir)) {
    TPMMA_ASSIGN_OR_RETURN(auto entries, env->ListDir(dir));
    if (!entries.empty()) {
      return Error(Code::kAlreadyExists,
                   dir +
                       " is not empty; refusing to initialise over it (an existing MA key "
                       "is what every vaulted package is wrapped to). Choose a new --dir.");
    }
  }
  if (opts.escrow && opts.escrow_key_id == opts.ma_key_id) {
    return Error(Code::kInvalidArgument, "--escrow-key-id must differ from --ma-key-id");
  }
  for (const char* sub : {"", "/ca", "/ma", "/escrow", "/tls", "/trust", "/trust/ek-roots"}) {
    TPMMA_RETURN_IF_ERROR(env->CreateDirs(dir + sub, kDirMode));
  }

  // The MA CA signs the TLS and MA key certificates, so clients need to trust one file.
  TPMMA_ASSIGN_OR_RETURN(EvpPkeyPtr ca_key, GenerateKey(KeyType::kEcP256));
  TPMMA_ASSIGN_OR_RETURN(X509Ptr ca_cert, IssueCertificate({.common_name = "tpm-ma MA CA",
                                                            .profile = CertProfile::kCa,
                                                            .dns_names = {},
                                                            .ip_addresses = {},
                                                            .valid_days = 3650},
                                                           ca_key.get(), ca_key.get(), nullptr));

  // The MA storage key is RSA-2048: the MRK's PolicyDuplicationSelect binds to the Name
  // of its TPM2B_PUBLIC (restricted|decrypt, AES-128-CFB), which tpm/public.h builds.
  TPMMA_ASSIGN_OR_RETURN(EvpPkeyPtr ma_key, GenerateKey(KeyType::kRsa2048));
  TPMMA_ASSIGN_OR_RETURN(X509Ptr ma_cert,
                         IssueCertificate({.common_name = "tpm-ma MA storage key " + opts.ma_key_id,
                                           .profile = CertProfile::kMaStorage,
                                           .dns_names = {},
                                           .ip_addresses = {},
                                           .valid_days = 3650},
                                          ma_key.get(), ca_key.get(), ca_cert.get()));
  TPMMA_ASSIGN_OR_RETURN(TPM2B_PUBLIC ma_public, tpm::MaStoragePublic(ma_key.get()));
  TPMMA_ASSIGN_OR_RETURN(Bytes ma_name, tpm::ComputeName(ma_public.publicArea));

  // The escrow key: RSA-2048 so that it can also live in a TPM (TPM2_RSA_Decrypt). A key
  // of its own, never the MA key: one stolen key file must not open a package.
  EvpPkeyPtr escrow_key;
  X509Ptr escrow_cert;
  if (opts.escrow) {
    TPMMA_ASSIGN_OR_RETURN(escrow_key, GenerateKey(KeyType::kRsa2048));
    TPMMA_ASSIGN_OR_RETURN(
        escrow_cert, IssueCertificate({.common_name = "tpm-ma escrow key " + opts.escrow_key_id,
                                       .profile = CertProfile::kMaStorage,
                                       .dns_names = {},
                                       .ip_addresses = {},
                                       .valid_days = 3650},
                                      escrow_key.get(), ca_key.get(), ca_cert.get()));
  }

  std::vector<std::string> ips;
  if (opts.listen_address != "0.0.0.0" && opts.listen_address != "::") {
    ips.push_back(opts.listen_address);
  }
  if (std::find(ips.begin(), ips.end(), "127.0.0.1") == ips.end()) ips.push_back("127.0.0.1");
  TPMMA_ASSIGN_OR_RETURN(EvpPkeyPtr tls_key, GenerateKey(KeyType::kEcP256));
  TPMMA_ASSIGN_OR_RETURN(
      X509Ptr tls_cert,
      IssueCertificate({.common_name = opts.tls_dns_names.empty() ? opts.listen_address
                                                                  : opts.tls_dns_names.front(),
                        .profile = CertProfile::kTlsServer,
                        .dns_names = opts.tls_dns_names,
                        .ip_addresses = ips,
                        .valid_days = 825},
                       tls_key.get(), ca_key.get(), ca_cert.get()));

  // A separate CA for operator client certificates (helpdesk, auditor, admin): the
  // server trusts it for client authentication only, so no TLS server or MA-key
  // certificate can double as an operator, and the operator CA key can be kept apart.
  TPMMA_ASSIGN_OR_RETURN(EvpPkeyPtr op_ca_key, GenerateKey(KeyType::kEcP256));
  TPMMA_ASSIGN_OR_RETURN(X509Ptr op_ca_cert,
                         IssueCertificate({.common_name = "tpm-ma operator CA",
                                           .profile = CertProfile::kCa,
                                           .dns_names = {},
                                           .ip_addresses = {},
                                           .valid_days = 3650},
                                          op_ca_key.get(), op_ca_key.get(), nullptr));
  TPMMA_ASSIGN_OR_RETURN(SecureString op_ca_key_pem, PrivateKeyToPem(op_ca_key.get()));
  TPMMA_ASSIGN_OR_RETURN(std::string op_ca_cert_pem, CertificateToPem(op_ca_cert.get()));
  TPMMA_RETURN_IF_ERROR(WriteSecret(env, dir + "/ca/operator-ca-key.pem", op_ca_key_pem));
  TPMMA_RETURN_IF_ERROR(WritePublic(env, dir + "/ca/operator-ca-cert.pem", op_ca_cert_pem));

  TPMMA_ASSIGN_OR_RETURN(SecureString ca_key_pem, PrivateKeyToPem(ca_key.get()));
  TPMMA_ASSIGN_OR_RETURN(SecureString ma_key_pem, PrivateKeyToPem(ma_key.get()));
  TPMMA_ASSIGN_OR_RETURN(SecureString tls_key_pem, PrivateKeyToPem(tls_key.get()));
  TPMMA_ASSIGN_OR_RETURN(std::string ca_cert_pem, CertificateToPem(ca_cert.get()));
  TPMMA_ASSIGN_OR_RETURN(std::string ma_cert_pem, CertificateToPem(ma_cert.get()));
  TPMMA_ASSIGN_OR_RETURN(std::string tls_cert_pem, CertificateToPem(tls_cert.get()));
  TPMMA_RETURN_IF_ERROR(WriteSecret(env, dir + "/ca/ca-key.pem", ca_key_pem));
  TPMMA_RETURN_IF_ERROR(WritePublic(env, dir + "/ca/ca-cert.pem", ca_cert_pem));
  TPMMA_RETURN_IF_ERROR(WriteSecret(env, dir + "/ma/ma-key.pem", ma_key_pem));
  TPMMA_RETURN_IF_ERROR(WritePublic(env, dir + "/ma/ma-cert.pem", ma_cert_pem));
  if (opts.escrow) {
    TPMMA_ASSIGN_OR_RETURN(SecureString escrow_key_pem, PrivateKeyToPem(escrow_key.get()));
    TPMMA_ASSIGN_OR_RETURN(std::string escrow_cert_pem, CertificateToPem(escrow_cert.get()));
    TPMMA_RETURN_IF_ERROR(WriteSecret(env, dir + "/escrow/escrow-key.pem", escrow_key_pem));
    TPMMA_RETURN_IF_ERROR(WritePublic(env, dir + "/escrow/escrow-cert.pem", escrow_cert_pem));
  }
  TPMMA_RETURN_IF_ERROR(WriteSecret(env, dir + "/tls/server-key.pem", tls_key_pem));
  TPMMA_RETURN_IF_ERROR(WritePublic(env, dir + "/tls/server-cert.pem", tls_cert_pem));
  // Numbered: roots from different vendors are often all called "root.pem" (swtpm's
  // are), and one must not overwrite another.
  for (size_t i = 0; i < opts.ek_root_files.size(); ++i) {
    const std::string& root = opts.ek_root_files[i];
    TPMMA_ASSIGN_OR_RETURN(Bytes pem, env->ReadFile(root, kMaxRootFileBytes));
    TPMMA_RETURN_IF_ERROR(CertificateFromPem(pem));  // refuse a file that is not a cert
    TPMMA_RETURN_IF_ERROR(env->WriteFileAtomic(
        dir + "/trust/ek-roots/" + std::to_string(i + 1) + "-" + BaseName(root), pem, kPublicMode));
  }

  {
    TPMMA_ASSIGN_OR_RETURN(auto vault, storage::SqliteVault::Open(dir + "/vault.db"));
    TPMMA_RETURN_IF_ERROR(
        vault->AppendAudit(storage::AuditEvent{.time = env->NowUnixSeconds(),
                                               .actor = "system",
                                               .action = "InitMA",
                                               .object = opts.ma_key_id,
                                               .outcome = "ok",
                                               .detail = "MA key Name " + HexEncode(ma_name)}));
  }

  Config cfg;
  cfg.listen_address = opts.listen_address;
  cfg.listen_port = opts.listen_port;
  cfg.tls_certificate = "tls/server-cert.pem";
  cfg.tls_private_key = "tls/server-key.pem";
  cfg.tls_client_ca = "ca/operator-ca-cert.pem";
  cfg.ma.key_id = opts.ma_key_id;
  cfg.ma.private_key = "ma/ma-key.pem";
  cfg.ma.certificate = "ma/ma-cert.pem";
  if (opts.escrow) {
    cfg.escrow.custody = "software";
    cfg.escrow.key_id = opts.escrow_key_id;
    cfg.escrow.private_key = "escrow/escrow-key.pem";
    cfg.escrow.certificate = "escrow/escrow-cert.pem";
  }
  cfg.vault_path = "vault.db";
  cfg.ek_roots = {"trust/ek-roots"};
  // Written last: a directory without config.toml is not an MA, and ma-server says so.
  TPMMA_RETURN_IF_ERROR(
      env->WriteFileAtomic(dir + "/config.toml", View(ConfigToToml(cfg)), kSecretMode));

  std::string host = opts.listen_address == "0.0.0.0" ? "127.0.0.1" : opts.listen_address;
  return InitReport{.config_path = dir + "/config.toml",
                    .ca_certificate_path = dir + "/ca/ca-cert.pem",
                    .url = "https://" + host + ":" + std::to_string(opts.listen_port) + "/",
                    .ma_key_id = opts.ma_key_id,
                    .ma_name_hex = HexEncode(ma_name),
                    .escrow_key_id = opts.escrow ? opts.escrow_key_id : std::string()};
}

}  // namespace tpmma::server
