// SPDX-License-Identifier: GPL-2.0-or-later
#include "client/lms/cli.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>

#include "client/lms/app_keys.h"
#include "client/lms/remote.h"
#include "common/openssl.h"
#include "common/text.h"
#include "schema/package.h"
#include "tpm/esys/templates.h"

namespace tpmma::lms::cli {

namespace {

using nlohmann::json;

void WriteStdout(const void* data, size_t size) {
  if (size > 0) std::fwrite(data, 1, size, stdout);
  std::fflush(stdout);
}

}  // namespace

CLI::App* AddSubcommand(CLI::App& app, const char* name, const char* help) {
  CLI::App* sub = app.add_subcommand(name, help);
  sub->fallthrough();  // --store/--tcti/--json after the command name too
  return sub;
}

void ShowProgress(const Globals& g, Lms& lms) {
  if (g.json || g.quiet) return;
  lms.set_progress([](std::string_view line) {
    std::fprintf(stderr, "lms: %.*s\n", static_cast<int>(line.size()), line.data());
    std::fflush(stderr);
  });
}

int Succeed(const Globals& g, json j, const std::string& text) {
  if (g.json) {
    json out = {{"ok", true}};
    out.update(j);
    const std::string s = out.dump() + "\n";
    WriteStdout(s.data(), s.size());
  } else {
    WriteStdout(text.data(), text.size());
  }
  return kExitOk;
}

int Fail(const Globals& g, const Status& status) {
  if (g.json) {
    json out = {{"ok", false},
                {"code", std::string(CodeName(status.code()))},
                {"message", status.message()}};
    const std::string s = out.dump() + "\n";
    WriteStdout(s.data(), s.size());
  } else {
    std::fprintf(stderr, "lms: %s\n", status.message().c_str());
  }
  return kExitFailed;
}

int SucceedWithSecret(const Globals& g, json j, const char* field, const SecureString& secret,
                      const SecureString& text) {
  if (!g.json) {
    WriteStdout(text.data(), text.size());
    return kExitOk;
  }
  json out = {{"ok", true}};
  out.update(j);
  // The secret is spliced in last, so that only wiped buffers ever hold it. Base64 and
  // recovery codes need no JSON escaping.
  std::string head = out.dump();
  head.pop_back();  // '}'
  SecureString line(head.begin(), head.end());
  line += ",\"";
  line += field;
  line += "\":\"";
  line += secret;
  line += "\"}\n";
  WriteStdout(line.data(), line.size());
  return kExitOk;
}

Status WriteOutput(const Globals& g, const std::string& path, ByteView data, uint32_t mode) {
  if (path.empty() || path == "-") {
    WriteStdout(data.data(), data.size());
    return Status::Ok();
  }
  // /dev/null, /dev/stdout, a FIFO: written in place (there is nothing to replace atomically).
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0 && (S_ISCHR(st.st_mode) || S_ISFIFO(st.st_mode))) {
    const int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
    if (fd < 0) return Status(Code::kIoError, "cannot open " + path + ": " + std::strerror(errno));
    size_t off = 0;
    while (off < data.size()) {
      const ssize_t n = ::write(fd, data.data() + off, data.size() - off);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      off += static_cast<size_t>(n);
    }
    ::close(fd);
    if (off != data.size()) return Status(Code::kIoError, "cannot write " + path);
    return Status::Ok();
  }
  return g.env->WriteFileAtomic(path, data, mode);
}

Result<Bytes> ReadInput(const Globals& g, const std::string& path, size_t max) {
  if (path != "-") {
    auto data = g.env->ReadFile(path, max);
    if (!data) return Error(data.error().WithContext("reading " + path));
    return data;
  }
  Bytes out;
  uint8_t buf[4096];
  size_t n = 0;
  while ((n = std::fread(buf, 1, sizeof buf, stdin)) > 0) {
    out.insert(out.end(), buf, buf + n);
    if (out.size() > max) {
      return Error(Code::kLimitExceeded, "more than " + std::to_string(max) + " bytes on stdin");
    }
  }
  return out;
}

Result<SecureBytes> ReadSecretInput(const Globals& g, const std::string& path, size_t max) {
  SecureBytes out;
  if (path != "-") {
    auto data = g.env->ReadFile(path, max);
    if (!data) return Error(data.error().WithContext("reading " + path));
    out.assign(data->begin(), data->end());
    Wipe(data->data(), data->size());
    return out;
  }
  out.reserve(max + 1);  // no reallocation: no unwiped copies
  int c = 0;
  while (out.size() <= max && (c = std::fgetc(stdin)) != EOF) {
    out.push_back(static_cast<uint8_t>(c));
  }
  if (out.size() > max) {
    return Error(Code::kLimitExceeded, "more than " + std::to_string(max) + " bytes on stdin");
  }
  return out;
}

Result<Bytes> Sha256OfInput(const std::string& path) {
  FILE* f = path == "-" ? stdin : std::fopen(path.c_str(), "rb");
  if (f == nullptr) return Error(Code::kIoError, "cannot open " + path + " for reading");
  EvpMdCtxPtr md(EVP_MD_CTX_new());
  bool ok = md && EVP_DigestInit_ex(md.get(), EVP_sha256(), nullptr) == 1;
  uint8_t buf[1 << 16];
  size_t n = 0;
  while (ok && (n = std::fread(buf, 1, sizeof buf, f)) > 0) {
    ok = EVP_DigestUpdate(md.get(), buf, n) == 1;
  }
  const bool read_error = std::ferror(f) != 0;
  if (f != stdin) std::fclose(f);
  if (read_error) return Error(Code::kIoError, "cannot read " + path);
  Bytes out(32);
  unsigned int len = 0;
  if (!ok || EVP_DigestFinal_ex(md.get(), out.data(), &len) != 1) {
    return Error(OpensslError("SHA-256"));
  }
  return out;
}

json CertificateJson(const KeyRecord& k) {
  if (k.certificate.empty()) return nullptr;
  auto info = DescribeCertificate(k.certificate);
  if (!info) return {{"error", info.error().message()}};
  return {{"subject", info->subject}, {"not_after", Utc(info->not_after)}};
}

json KeyJson(const KeyRecord& k) {
  return {{"id", k.id},
          {"label", k.label},
          {"type", KeyTypeName(k.type)},
          {"parent", k.parent},
          {"migratable", k.migratable},
          {"origin", k.origin},
          {"created", Utc(k.created)},
          {"backed_up", k.backed_up_at.has_value()},
          {"backed_up_at", k.backed_up_at ? json(Utc(*k.backed_up_at)) : json(nullptr)},
          {"name", HexEncode(k.name)},
          {"certificate", CertificateJson(k)}};
}

void RecordMaSettings(Lms& lms, const MaSettings& settings) {
  std::error_code ec;
  StoreConfig config;
  config.ma_url = settings.url;
  config.ma_ca = std::filesystem::absolute(settings.ca_file, ec).string();
  for (const std::string& f : settings.ek_intermediates) {
    config.ek_intermediates.push_back(std::filesystem::absolute(f, ec).string());
  }
  if (!settings.ek_cert.empty()) config.ek_cert = std::filesystem::absolute(settings.ek_cert, ec);
  config.owner_label = settings.owner_label;
  Status saved = lms.store().WriteConfig(config);
  if (!saved.ok()) {
    std::fprintf(stderr, "lms: warning: the MA settings were not recorded: %s\n",
                 saved.message().c_str());
  }
}

int Run(int argc, char** argv, Env* env) {
  Globals g;
  g.env = env != nullptr ? env : Env::Default();
  if (const char* s = std::getenv("LMS_STORE"); s != nullptr && *s != '\0') g.store = s;

  CLI::App app{
      "lms: the tpm-ma Local Migration Service. Keeps migratable TPM keys under a "
      "Migratable Root Key and backs them up to the Migration Authority."};
  app.name("lms");
  app.require_subcommand(1);
  app.add_option("--store", g.store, "the key store directory ($LMS_STORE)")->capture_default_str();
  app.add_option("--tcti", g.tcti,
                 "TPM connection as in tpm2-tools: device:/dev/tpmrm0, tabrmd:, "
                 "swtpm:host=H,port=P (default: $TPM2TOOLS_TCTI, $TCTI, device:/dev/tpmrm0)");
  app.add_option("--srk-alg", g.srk_alg,
                 "SRK to create when the TPM has none (init, restore after a clear): rsa2048 "
                 "(0x81000001) or ecc-p256 (0x81000002); a store keeps the one it was made with")
      ->check(CLI::IsMember({"rsa2048", "ecc-p256"}))
      ->capture_default_str();
  app.add_flag("--json", g.json, "machine-readable output on stdout (and no progress lines)");
  app.add_flag("--quiet", g.quiet, "no progress lines on stderr");
  app.add_option("--ma", g.ma_url,
                 "the Migration Authority, https://HOST:PORT (default: $LMS_MA_URL, else the "
                 "store's config.json)");
  app.add_option("--ma-ca", g.ma_ca,
                 "PEM file trusted for the MA's TLS certificate (default: $LMS_MA_CA, else the "
                 "store's config.json)");
  app.add_flag("--ma-connection-per-call", g.ma_connection_per_call,
               "open a new TLS connection for every call to the MA instead of keeping one: "
               "behind a load balancer, every call may then reach another instance");
  app.add_option("--ek-intermediate", g.ek_intermediates,
                 "EK certificate intermediate CA the MA may need (PEM or DER file; repeatable)");
  app.add_option("--ek-cert", g.ek_cert,
                 "the EK certificate (PEM or DER) for a TPM that keeps none in NV, e.g. from "
                 "the TPM vendor's service (kept in the store's config.json)");
  app.add_option("--owner-label", g.owner_label,
                 "who or what this machine is for, e.g. \"Alice Example, finance\": sent to the "
                 "MA with every authentication so that a helpdesk can find it (kept in the "
                 "store's config.json; no control characters, at most 256 characters)");
  app.footer(
      "Exit codes: 0 success, 1 the operation failed (the message says why), 2 bad usage.\n"
      "With --json, failures are {\"ok\":false,\"code\":...,\"message\":...} on stdout.");

  const std::vector<Command> commands = {
      AddInitCommand(app, g),    AddKeygenCommand(app, g),       AddImportTpm2Command(app, g),
      AddKeysCommand(app, g),    AddPubkeyCommand(app, g),       AddSignCommand(app, g),
      AddEncryptCommand(app, g), AddDecryptCommand(app, g),      AddUnsealCommand(app, g),
      AddExportCommand(app, g),  AddImportCommand(app, g),       AddCertCommand(app, g),
      AddPkcs11Command(app, g),  AddAuthenticateCommand(app, g), AddBackupCommand(app, g),
      AddQueryCommand(app, g),   AddRestoreCommand(app, g),      AddDeleteCommand(app, g),
      AddStatusCommand(app, g),  AddEkCommand(app, g),           AddEkPublicCommand(app, g)};

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e) == 0 ? kExitOk : kExitUsage;
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e) == 0 ? kExitOk : kExitUsage;
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return kExitUsage;
  }
  for (const Command& c : commands) {
    if (c.app->parsed()) return c.run();
  }
  return kExitUsage;
}

}  // namespace tpmma::lms::cli
