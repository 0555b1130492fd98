// SPDX-License-Identifier: GPL-2.0-or-later
// The commands for applications' key files (docs/applications.md): export, import, cert,
// pkcs11. The work is in app_keys.h and pkcs11_token.h.
#include <memory>
#include <string>

#include "client/lms/app_keys.h"
#include "client/lms/cli.h"
#include "client/lms/pkcs11_token.h"
#include "common/text.h"

namespace tpmma::lms::cli {

namespace {

using nlohmann::json;

constexpr const char* kDefaultToken = "tpm-ma";

// A PIN from a file (or "-": stdin), without its trailing newline.
Result<SecureString> ReadPin(const Globals& g, const std::string& path, const char* which) {
  if (path.empty()) {
    return Error(Code::kInvalidArgument, std::string("give the ") + which + " in a file (--" +
                                             which + "-file F, - for stdin)");
  }
  TPMMA_ASSIGN_OR_RETURN(SecureBytes raw, ReadSecretInput(g, path, 256));
  SecureString pin(raw.begin(), raw.end());
  while (!pin.empty() && (pin.back() == '\n' || pin.back() == '\r')) pin.pop_back();
  return pin;
}

}  // namespace

Status WriteKeyFiles(const Globals& g, Lms& lms, const KeyRecord& key, const std::string& pem_out,
                     const std::string& cert_out, json& out) {
  if (!pem_out.empty()) {
    TPMMA_ASSIGN_OR_RETURN(std::string pem, ExportTss2Pem(lms, key.id));
    TPMMA_RETURN_IF_ERROR(WriteOutput(g, pem_out, ToBytes(pem), 0600));
    out["pem"] = pem_out;
  }
  if (!cert_out.empty()) {
    if (key.certificate.empty()) {
      return Status(Code::kNotFound, "key " + key.id + " ('" + key.label +
                                         "') has no certificate (lms cert KEY --set FILE)");
    }
    TPMMA_ASSIGN_OR_RETURN(CertificateInfo info, DescribeCertificate(key.certificate));
    TPMMA_RETURN_IF_ERROR(WriteOutput(g, cert_out, ToBytes(info.pem), kPublicFileMode));
    out["certificate"] = cert_out;
  }
  return Status::Ok();
}

Command AddExportCommand(CLI::App& app, const Globals& g) {
  struct Args {
    std::string id, format = "tss2-pem", out, cert_out;
  };
  auto a = std::make_shared<Args>();
  CLI::App* c = AddSubcommand(
      app, "export",
      "Write a key as a TSS2 PRIVATE KEY PEM for OpenSSL's tpm2 provider (curl, nginx, "
      "OpenVPN, openssl s_client): its parent is the MRK's persistent handle, so the same file "
      "works after a restore on a new TPM");
  c->add_option("id", a->id, "key id or label")->required();
  c->add_option("--format", a->format, "tss2-pem")
      ->check(CLI::IsMember({"tss2-pem"}))
      ->capture_default_str();
  c->add_option("--out", a->out, "the PEM file (default: stdout)");
  c->add_option("--cert-out", a->cert_out, "also write the key's certificate (PEM) here");
  return {c, [&g, a]() -> int {
            auto lms = OpenLms(g);
            if (!lms) return Fail(g, lms.error());
            auto k = (*lms)->Find(a->id);
            if (!k) return Fail(g, k.error());
            json out = {{"id", k->id}};
            const std::string pem_out = a->out.empty() ? "-" : a->out;
            if (pem_out == "-" && g.json) {
              auto pem = ExportTss2Pem(**lms, k->id);
              if (!pem) return Fail(g, pem.error());
              out["pem"] = *pem;
            } else {
              Status s = WriteKeyFiles(g, **lms, *k, pem_out, {}, out);
              if (!s.ok()) return Fail(g, s);
            }
            Status s = WriteKeyFiles(g, **lms, *k, {}, a->cert_out, out);
            if (!s.ok()) return Fail(g, s);
            return Succeed(g, out, "");
          }};
}

Command AddImportCommand(CLI::App& app, const Globals& g) {
  struct Args {
    std::string pem, pub, priv, label;
  };
  auto a = std::make_shared<Args>();
  CLI::App* c = AddSubcommand(
      app, "import",
      "Register a key made as a child of this store's MRK, so lms backs it up: a TSS2 PRIVATE "
      "KEY PEM (--pem) or tpm2_create's files (--public/--private)");
  c->add_option("--pem", a->pem, "TSS2 PRIVATE KEY file whose parent is the MRK's handle");
  c->add_option("--public", a->pub, "TPM2B_PUBLIC file (tpm2_create -u)");
  c->add_option("--private", a->priv, "TPM2B_PRIVATE file (tpm2_create -r)");
  c->add_option("--label", a->label, "a name for the key, unique in the store")->required();
  return {c, [&g, a]() -> int {
            if (a->pem.empty() == (a->pub.empty() || a->priv.empty())) {
              return Fail(g, Status(Code::kInvalidArgument,
                                    "give either --pem FILE or both --public and --private"));
            }
            auto lms = OpenLms(g);
            if (!lms) return Fail(g, lms.error());
            Result<KeyRecord> k = Error(Code::kInternal, "unreachable");
            if (!a->pem.empty()) {
              auto pem = ReadInput(g, a->pem, kMaxSmallInput);
              if (!pem) return Fail(g, pem.error());
              k = ImportTss2Pem(**lms, std::string(pem->begin(), pem->end()), a->label);
            } else {
              auto pub = ReadInput(g, a->pub, kMaxSmallInput);
              if (!pub) return Fail(g, pub.error());
              auto priv = ReadInput(g, a->priv, kMaxSmallInput);
              if (!priv) return Fail(g, priv.error());
              k = (*lms)->ImportTpm2(*pub, *priv, a->label);
            }
            if (!k) return Fail(g, k.error());
            return Succeed(
                g, {{"key", KeyJson(*k)}},
                k->id + "  " + std::string(KeyTypeName(k->type)) + "  " + k->label + "\n");
          }};
}

Command AddCertCommand(CLI::App& app, const Globals& g) {
  struct Args {
    std::string id, set, out;
  };
  auto a = std::make_shared<Args>();
  CLI::App* c = AddSubcommand(
      app, "cert",
      "Keep a key's X.509 certificate with it (--set FILE, PEM or DER; backed up and restored "
      "with the key), or show it (--out FILE: write it as PEM)");
  c->add_option("id", a->id, "key id or label")->required();
  c->add_option("--set", a->set, "the certificate; its public key must be the key's");
  c->add_option("--out", a->out, "write the certificate (PEM) here (- for stdout)");
  return {c, [&g, a]() -> int {
            auto lms = OpenLms(g);
            if (!lms) return Fail(g, lms.error());
            Result<KeyRecord> k = (*lms)->Find(a->id);
            if (k && !a->set.empty()) {
              auto cert = ReadInput(g, a->set, kMaxSmallInput);
              if (!cert) return Fail(g, cert.error());
              k = SetCertificate(**lms, k->id, *cert);
            }
            if (!k) return Fail(g, k.error());
            json out = {{"id", k->id}, {"certificate", CertificateJson(*k)}};
            if (!a->out.empty()) {
              // WriteKeyFiles names the file it wrote as "certificate"; here that key holds
              // the certificate's description, so the file goes under "out".
              json written;
              Status s = WriteKeyFiles(g, **lms, *k, {}, a->out, written);
              if (!s.ok()) return Fail(g, s);
              if (a->out == "-") return kExitOk;
              out["out"] = a->out;
            }
            const json& cj = out["certificate"];
            std::string text = cj.is_null() ? "no certificate\n"
                               : cj.contains("subject")
                                   ? cj["subject"].get<std::string>() + "  expires " +
                                         cj["not_after"].get<std::string>() + "\n"
                                   : cj["error"].get<std::string>() + "\n";
            return Succeed(g, out, text);
          }};
}

Command AddPkcs11Command(CLI::App& app, const Globals& g) {
  struct Args {
    std::string label = kDefaultToken, so_pin_file, user_pin_file, key, id;
  };
  auto a = std::make_shared<Args>();
  CLI::App* c = AddSubcommand(
      app, "pkcs11",
      "The store's tpm2-pkcs11 token on the MRK (for ssh -I, pkcs11-tool, p11-kit): "
      "`pkcs11 init` makes it, `pkcs11 link KEY` adds an application key. Programs find it "
      "with TPM2_PKCS11_STORE=<store>/pkcs11");
  c->require_subcommand(1);
  CLI::App* init = c->add_subcommand("init", "make the token (the MRK must be at its handle)");
  init->add_option("--label", a->label, "token label")->capture_default_str();
  init->add_option("--so-pin-file", a->so_pin_file, "file holding the SO PIN (- for stdin)");
  init->add_option("--user-pin-file", a->user_pin_file, "file holding the user PIN");
  CLI::App* link = c->add_subcommand("link", "add an application key (ecc-app, rsa-app)");
  link->add_option("key", a->key, "key id or label")->required();
  link->add_option("--label", a->label, "token label")->capture_default_str();
  link->add_option("--id", a->id, "CKA_ID in hex (default: from the key's Name)");
  link->add_option("--user-pin-file", a->user_pin_file, "file holding the user PIN");
  return {c, [&g, a, init]() -> int {
            auto lms = OpenLms(g);
            if (!lms) return Fail(g, lms.error());
            const std::string path = Pkcs11StorePath((*lms)->store());
            auto user = ReadPin(g, a->user_pin_file, "user-pin");
            if (!user) return Fail(g, user.error());
            json out = {{"token", a->label}, {"store", path}};
            if (init->parsed()) {
              auto so = ReadPin(g, a->so_pin_file, "so-pin");
              if (!so) return Fail(g, so.error());
              Status s = Pkcs11Init(**lms, a->label, {.so_pin = *so, .user_pin = *user});
              if (!s.ok()) return Fail(g, s);
              return Succeed(g, out,
                             "token '" + a->label +
                                 "' made on the MRK; programs use it with "
                                 "TPM2_PKCS11_STORE=" +
                                 path + "\n");
            }
            auto id = Pkcs11Link(**lms, a->label, a->key, a->id, *user);
            if (!id) return Fail(g, id.error());
            out["id"] = *id;
            return Succeed(g, out, "linked into token '" + a->label + "' with id " + *id + "\n");
          }};
}

}  // namespace tpmma::lms::cli
