// SPDX-License-Identifier: GPL-2.0-or-later
#include "server/admin_init.h"

#include <algorithm>

#include "common/bytes.h"
#include "server/audit_checkpoint.h"
#include "server/config.h"
#include "server/pki.h"
#include "server/policy_key.h"
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

// A key and its certificate, as made and as written to DIR/<key_file> and DIR/<cert_file>.
struct Issued {
  EvpPkeyPtr key;
  X509Ptr cert;
};

// A certificate with no DNS or IP names (CAs, the MA and escrow keys).
CertRequest Request(std::string common_name, CertProfile profile, int valid_days) {
  return CertRequest{.common_name = std::move(common_name),
                     .profile = profile,
                     .dns_names = {},
                     .ip_addresses = {},
                     .valid_days = valid_days};
}

// A fresh key of `type` certified by `ca` (null: self-signed, a CA).
Result<Issued> Issue(KeyType type, const CertRequest& req, const Issued* ca) {
  TPMMA_ASSIGN_OR_RETURN(EvpPkeyPtr key, GenerateKey(type));
  EVP_PKEY* signer = ca != nullptr ? ca->key.get() : key.get();
  TPMMA_ASSIGN_OR_RETURN(X509Ptr cert, IssueCertificate(req, key.get(), signer,
                                                        ca != nullptr ? ca->cert.get() : nullptr));
  return Issued{std::move(key), std::move(cert)};
}

Status WriteIssued(Env* env, const std::string& dir, const Issued& issued,
                   const std::string& key_file, const std::string& cert_file) {
  TPMMA_ASSIGN_OR_RETURN(SecureString key_pem, PrivateKeyToPem(issued.key.get()));
  TPMMA_ASSIGN_OR_RETURN(std::string cert_pem, CertificateToPem(issued.cert.get()));
  TPMMA_RETURN_IF_ERROR(WriteSecret(env, dir + "/" + key_file, key_pem));
  return WritePublic(env, dir + "/" + cert_file, cert_pem);
}

// An existing MA key is what every vaulted package is wrapped to: never initialise over it.
Status CheckInitOptions(const InitOptions& opts, Env* env) {
  if (opts.dir.empty()) return Status(Code::kInvalidArgument, "--dir is required");
  if (env->FileExists(opts.dir)) {
    TPMMA_ASSIGN_OR_RETURN(auto entries, env->ListDir(opts.dir));
    if (!entries.empty()) {
      return Status(Code::kAlreadyExists,
                    opts.dir +
                        " is not empty; refusing to initialise over it (an existing MA key "
                        "is what every vaulted package is wrapped to). Choose a new --dir.");
    }
  }
  if (opts.escrow && opts.escrow_key_id == opts.ma_key_id) {
    return Status(Code::kInvalidArgument, "--escrow-key-id must differ from --ma-key-id");
  }
  return Status::Ok();
}

// The TLS server certificate names the listen address (unless it is a wildcard) and
// 127.0.0.1, and the DNS names asked for.
Result<Issued> IssueTlsCertificate(const InitOptions& opts, const Issued& ca) {
  std::vector<std::string> ips;
  if (opts.listen_address != "0.0.0.0" && opts.listen_address != "::") {
    ips.push_back(opts.listen_address);
  }
  if (std::find(ips.begin(), ips.end(), "127.0.0.1") == ips.end()) ips.push_back("127.0.0.1");
  return Issue(
      KeyType::kEcP256,
      {.common_name = opts.tls_dns_names.empty() ? opts.listen_address : opts.tls_dns_names.front(),
       .profile = CertProfile::kTlsServer,
       .dns_names = opts.tls_dns_names,
       .ip_addresses = ips,
       .valid_days = 825},
      &ca);
}

// Numbered: roots from different vendors are often all called "root.pem" (swtpm's
// are), and one must not overwrite another.
Status CopyEkRoots(const InitOptions& opts, Env* env) {
  for (size_t i = 0; i < opts.ek_root_files.size(); ++i) {
    const std::string& root = opts.ek_root_files[i];
    TPMMA_ASSIGN_OR_RETURN(Bytes pem, env->ReadFile(root, kMaxRootFileBytes));
    TPMMA_RETURN_IF_ERROR(CertificateFromPem(pem));  // refuse a file that is not a cert
    TPMMA_RETURN_IF_ERROR(env->WriteFileAtomic(
        opts.dir + "/trust/ek-roots/" + std::to_string(i + 1) + "-" + BaseName(root), pem,
        kPublicMode));
  }
  return Status::Ok();
}

// The vault with its schema and the first audit row: which MA key this MA was made with.
Status CreateVault(const InitOptions& opts, const Bytes& ma_name, Env* env) {
  TPMMA_ASSIGN_OR_RETURN(auto vault, storage::SqliteVault::Open(opts.dir + "/vault.db"));
  TPMMA_RETURN_IF_ERROR(
      vault->AppendAudit(storage::AuditEvent{.time = env->NowUnixSeconds(),
                                             .actor = "system",
                                             .action = "InitMA",
                                             .object = opts.ma_key_id,
                                             .outcome = "ok",
                                             .detail = "MA key Name " + HexEncode(ma_name)}));
  return Status::Ok();
}

// config.toml's contents: every path relative to DIR, so the directory can be moved.
Config InitialConfig(const InitOptions& opts) {
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
    cfg.escrow = TpmKeyConfig::Named("software", opts.escrow_key_id);
    cfg.escrow.private_key = "escrow/escrow-key.pem";
    cfg.escrow.certificate = "escrow/escrow-cert.pem";
  }
  if (opts.policy_key) {
    cfg.policy_public_key = "policy/policy-key.pub.pem";
    cfg.policy_approval = "policy/" + opts.ma_key_id + ".approval";
  }
  cfg.vault_path = "vault.db";
  cfg.ek_roots = {"trust/ek-roots"};
  cfg.ek_intermediates = {"trust/ek-intermediates"};
  cfg.audit_checkpoint_key = "audit/checkpoint-key.pem";
  cfg.audit_checkpoint_dir = "audit/checkpoints";
  return cfg;
}

// The keys and certificates of a new MA, written to DIR. Returns the MA key's Name.
Result<Bytes> MakeKeys(const InitOptions& opts, Env* env) {
  const std::string& dir = opts.dir;
  // The MA CA signs the TLS and MA key certificates, so clients need to trust one file.
  TPMMA_ASSIGN_OR_RETURN(
      Issued ca, Issue(KeyType::kEcP256, Request("tpm-ma MA CA", CertProfile::kCa, 3650), nullptr));
  // A separate CA for operator client certificates (helpdesk, auditor, admin): the
  // server trusts it for client authentication only, so no TLS server or MA-key
  // certificate can double as an operator, and the operator CA key can be kept apart.
  TPMMA_ASSIGN_OR_RETURN(
      Issued op_ca,
      Issue(KeyType::kEcP256, Request("tpm-ma operator CA", CertProfile::kCa, 3650), nullptr));
  // The MA storage key is RSA-2048: the MRK's PolicyDuplicationSelect binds to the Name
  // of its TPM2B_PUBLIC (restricted|decrypt, AES-128-CFB), which tpm/public.h builds.
  TPMMA_ASSIGN_OR_RETURN(Issued ma, Issue(KeyType::kRsa2048,
                                          Request("tpm-ma MA storage key " + opts.ma_key_id,
                                                  CertProfile::kMaStorage, 3650),
                                          &ca));
  TPMMA_ASSIGN_OR_RETURN(TPM2B_PUBLIC ma_public, tpm::MaStoragePublic(ma.key.get()));
  TPMMA_ASSIGN_OR_RETURN(Bytes ma_name, tpm::ComputeName(ma_public.publicArea));
  TPMMA_ASSIGN_OR_RETURN(Issued tls, IssueTlsCertificate(opts, ca));

  TPMMA_RETURN_IF_ERROR(
      WriteIssued(env, dir, op_ca, "ca/operator-ca-key.pem", "ca/operator-ca-cert.pem"));
  TPMMA_RETURN_IF_ERROR(WriteIssued(env, dir, ca, "ca/ca-key.pem", "ca/ca-cert.pem"));
  TPMMA_RETURN_IF_ERROR(WriteIssued(env, dir, ma, "ma/ma-key.pem", "ma/ma-cert.pem"));
  if (opts.escrow) {
    // RSA-2048 so that it can also live in a TPM (TPM2_RSA_Decrypt). A key of its own,
    // never the MA key: one stolen key file must not open a package.
    TPMMA_ASSIGN_OR_RETURN(Issued escrow, Issue(KeyType::kRsa2048,
                                                Request("tpm-ma escrow key " + opts.escrow_key_id,
                                                        CertProfile::kMaStorage, 3650),
                                                &ca));
    TPMMA_RETURN_IF_ERROR(
        WriteIssued(env, dir, escrow, "escrow/escrow-key.pem", "escrow/escrow-cert.pem"));
  }
  TPMMA_RETURN_IF_ERROR(WriteIssued(env, dir, tls, "tls/server-key.pem", "tls/server-cert.pem"));
  if (opts.policy_key) {
    TPMMA_RETURN_IF_ERROR(CreatePolicyKey(dir + "/policy/policy-key.pem",
                                          dir + "/policy/policy-key.pub.pem", env));
    TPMMA_RETURN_IF_ERROR(WriteApproval(dir + "/policy/policy-key.pem", ma_name,
                                        dir + "/policy/" + opts.ma_key_id + ".approval", env));
  }
  return ma_name;
}

}  // namespace

Result<InitReport> InitMaState(const InitOptions& opts, Env* env) {
  TPMMA_RETURN_IF_ERROR(CheckInitOptions(opts, env));
  const std::string& dir = opts.dir;
  for (const char* sub : {"", "/ca", "/ma", "/escrow", "/policy", "/tls", "/trust",
                          "/trust/ek-roots", "/trust/ek-intermediates", "/audit"}) {
    TPMMA_RETURN_IF_ERROR(env->CreateDirs(dir + sub, kDirMode));
  }
  TPMMA_ASSIGN_OR_RETURN(Bytes ma_name, MakeKeys(opts, env));
  TPMMA_RETURN_IF_ERROR(CopyEkRoots(opts, env));
  // The key that signs audit checkpoints: a file of its own, never in the vault.
  TPMMA_RETURN_IF_ERROR(CreateCheckpointKey(dir + "/audit/checkpoint-key.pem",
                                            dir + "/audit/checkpoint-pub.pem", env));
  TPMMA_RETURN_IF_ERROR(CreateVault(opts, ma_name, env));
  // Written last: a directory without config.toml is not an MA, and ma-server says so.
  TPMMA_RETURN_IF_ERROR(env->WriteFileAtomic(dir + "/config.toml",
                                             View(ConfigToToml(InitialConfig(opts))), kSecretMode));

  std::string host = opts.listen_address == "0.0.0.0" ? "127.0.0.1" : opts.listen_address;
  return InitReport{.config_path = dir + "/config.toml",
                    .ca_certificate_path = dir + "/ca/ca-cert.pem",
                    .url = "https://" + host + ":" + std::to_string(opts.listen_port) + "/",
                    .ma_key_id = opts.ma_key_id,
                    .ma_name_hex = HexEncode(ma_name),
                    .escrow_key_id = opts.escrow ? opts.escrow_key_id : std::string()};
}

}  // namespace tpmma::server
