// SPDX-License-Identifier: GPL-2.0-or-later
// The lms command line (CLI11). Each command registers itself on the app with the runner
// to call if it was chosen (one Add...Command per command: the local key commands in
// cli_keys.cc, application key files in cli_apps.cc, the MA commands in cli_ma.cc, restore
// in cli_restore.cc); Run() parses,
// runs and maps the outcome to an exit code.
//
// Exit codes (every command): 0 success, 1 the operation failed (the message says why in
// plain words; with --json it is {"ok":false,"code":...,"message":...} on stdout),
// 2 bad usage (unknown command or option, missing or malformed argument).
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "client/lms/keystore.h"
#include "client/lms/operations.h"
#include "client/lms/remote.h"
#include "common/bytes.h"
#include "common/env.h"
#include "common/status.h"

namespace tpmma::lms::cli {

inline constexpr int kExitOk = 0;
inline constexpr int kExitFailed = 1;
inline constexpr int kExitUsage = 2;

// Options every command takes (they may come before or after the command name).
struct Globals {
  std::string store = kDefaultStoreDir;  // --store, else $LMS_STORE
  std::string tcti;                      // --tcti, else $TPM2TOOLS_TCTI, $TCTI, the device
  bool json = false;                     // --json
  bool quiet = false;                    // --quiet: no progress lines on stderr
  // --ma, --ma-ca, --ek-intermediate (else $LMS_MA_URL, $LMS_MA_CA, the store's config.json)
  std::string ma_url;
  std::string ma_ca;
  std::vector<std::string> ek_intermediates;
  std::string ek_cert;                  // --ek-cert
  std::string owner_label;              // --owner-label (else the store's config.json)
  bool ma_connection_per_call = false;  // --ma-connection-per-call
  Env* env = nullptr;

  std::string srk_alg = "rsa2048";  // --srk-alg
  Options LmsOptions() const {
    return {.store_dir = store,
            .tcti = tcti,
            .srk_alg = srk_alg == "ecc-p256" ? esys::KeyAlg::kEccP256 : esys::KeyAlg::kRsa2048,
            .env = env};
  }
};

// A command: its CLI11 subcommand, and what runs when it was chosen.
struct Command {
  CLI::App* app = nullptr;
  std::function<int()> run;
};

// A subcommand of `app` that takes the global options after its name too.
CLI::App* AddSubcommand(CLI::App& app, const char* name, const char* help);

inline constexpr size_t kMaxSmallInput = 64 * 1024;  // ciphertexts, TPM files, key files
inline constexpr uint32_t kPublicFileMode = 0644;

// The store and its TPM, for the local commands.
inline Result<std::unique_ptr<Lms>> OpenLms(const Globals& g) {
  return Lms::Open(g.LmsOptions());
}

// ---- output helpers for command implementations
// Success: `json` (with "ok": true added) on stdout under --json, else `text` as is.
int Succeed(const Globals& g, nlohmann::json json, const std::string& text);
// Failure: message on stderr ("lms: ..."), or the JSON error object on stdout; returns 1.
int Fail(const Globals& g, const Status& status);
// `json` plus one secret string field, written without leaving unwiped copies behind.
int SucceedWithSecret(const Globals& g, nlohmann::json json, const char* field,
                      const SecureString& secret, const SecureString& text);
// Bytes to `path` (atomically, with `mode`), or to stdout for "" or "-".
Status WriteOutput(const Globals& g, const std::string& path, ByteView data, uint32_t mode);
// A file (or stdin for "-"), at most `max` bytes.
Result<Bytes> ReadInput(const Globals& g, const std::string& path, size_t max);
// The same for secret input (data to seal): only wiped buffers hold it.
Result<SecureBytes> ReadSecretInput(const Globals& g, const std::string& path, size_t max);
// SHA-256 of a file or stdin ("-"), streamed.
Result<Bytes> Sha256OfInput(const std::string& path);
// A key's certificate: {"subject", "not_after"}, or null.
nlohmann::json CertificateJson(const KeyRecord& key);
// The JSON view of a key (no blobs).
nlohmann::json KeyJson(const KeyRecord& key);

// Progress lines ("lms: authenticating to ...") on stderr, unless --json or --quiet.
void ShowProgress(const Globals& g, Lms& lms);

// Records the MA settings in the store's config.json (files as absolute paths), so that
// later commands, the backup timer among them, need no flags (init, restore --new-store).
// A failure is a warning on stderr: the command itself has succeeded.
void RecordMaSettings(Lms& lms, const MaSettings& settings);

// ---- for the MA commands
// The --ma/--ma-ca/--ek-intermediate flags.
MaFlags FlagsOf(const Globals& g);
// The store, its TPM and the MA settings every MA command starts from.
struct MaContext {
  std::unique_ptr<Lms> lms;
  MaSettings settings;
};
Result<MaContext> OpenWithMa(const Globals& g);
// {"from": OLD, "to": NEW} when a backup or restore moved the store to the MA's new escrow
// key, else null.
nlohmann::json RotationJson(const std::optional<EscrowKeyRotation>& rotation);

// ---- the commands, in the order `lms --help` lists them. `g` must outlive the runners.
// Local key commands (cli_keys.cc).
Command AddInitCommand(CLI::App& app, const Globals& g);
Command AddKeygenCommand(CLI::App& app, const Globals& g);
Command AddImportTpm2Command(CLI::App& app, const Globals& g);
Command AddKeysCommand(CLI::App& app, const Globals& g);
Command AddPubkeyCommand(CLI::App& app, const Globals& g);
Command AddSignCommand(CLI::App& app, const Globals& g);
Command AddEncryptCommand(CLI::App& app, const Globals& g);
Command AddDecryptCommand(CLI::App& app, const Globals& g);
Command AddUnsealCommand(CLI::App& app, const Globals& g);
// Keys for applications (cli_apps.cc): TSS2 PEM files, certificates, the PKCS#11 token.
Command AddExportCommand(CLI::App& app, const Globals& g);
Command AddImportCommand(CLI::App& app, const Globals& g);
Command AddCertCommand(CLI::App& app, const Globals& g);
Command AddPkcs11Command(CLI::App& app, const Globals& g);
// The --pem-out/--cert-out files of keygen and export.
Status WriteKeyFiles(const Globals& g, Lms& lms, const KeyRecord& key, const std::string& pem_out,
                     const std::string& cert_out, nlohmann::json& out);
// With the MA (cli_ma.cc; restore: cli_restore.cc).
Command AddAuthenticateCommand(CLI::App& app, const Globals& g);
Command AddBackupCommand(CLI::App& app, const Globals& g);
Command AddQueryCommand(CLI::App& app, const Globals& g);
Command AddRestoreCommand(CLI::App& app, const Globals& g);
Command AddDeleteCommand(CLI::App& app, const Globals& g);
Command AddStatusCommand(CLI::App& app, const Globals& g);
// The EK certificate from the TPM vendor's online service (cli_ek.cc): ek fetch.
Command AddEkCommand(CLI::App& app, const Globals& g);
// This TPM's EK (cli_ek_public.cc): `lms ek public --out FILE`; joins the `ek` group.
Command AddEkPublicCommand(CLI::App& app, const Globals& g);

// The whole program: returns the exit code.
int Run(int argc, char** argv, Env* env = nullptr);

}  // namespace tpmma::lms::cli
