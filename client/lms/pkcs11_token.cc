// SPDX-License-Identifier: GPL-2.0-or-later
#include "client/lms/pkcs11_token.h"

#include <unistd.h>

#include <filesystem>

#include "client/lms/app_keys.h"
#include "client/lms/mrk_handle.h"
#include "common/process.h"

namespace tpmma::lms {

namespace {

constexpr size_t kMaxDb = 16 << 20;

// The provisioning program: $LMS_PKCS11_TOKEN_TOOL, else beside the lms binary (the build
// tree, /usr/bin), else where the package installs it.
std::string TokenTool() {
  if (const char* env = std::getenv("LMS_PKCS11_TOKEN_TOOL"); env != nullptr && *env != 0) {
    return env;
  }
  std::error_code ec;
  const auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    const auto beside = self.parent_path() / "tpmma-pkcs11-token";
    if (std::filesystem::exists(beside, ec)) return beside.string();
  }
  return "/usr/libexec/tpm-ma/tpmma-pkcs11-token";
}

// A PIN goes into the JSON on the program's stdin as is, so it is kept to characters that
// need no escaping.
Status CheckPin(const SecureString& pin, const char* which) {
  if (pin.size() < 4 || pin.size() > 64) {
    return Status(Code::kInvalidArgument, std::string(which) + " must have 4 to 64 characters");
  }
  for (char c : pin) {
    if (c < 0x20 || c > 0x7e || c == '"' || c == '\\') {
      return Status(
          Code::kInvalidArgument,
          std::string(which) + " may hold printable ASCII characters other than \" and \\ only");
    }
  }
  return Status::Ok();
}

// Runs the program; its error line (never a PIN) becomes the message.
Result<std::string> RunTool(Lms& lms, std::vector<std::string> args, const SecureString& input) {
  args.insert(args.begin(), TokenTool());
  ProcessOptions o;
  o.input = ByteView(reinterpret_cast<const uint8_t*>(input.data()), input.size());
  const std::string tcti = esys::Tpm::ResolveTcti(lms.tcti());
  o.extra_env.push_back("TPM2_PKCS11_TCTI=" + tcti);
  o.extra_env.push_back("TPM2TOOLS_TCTI=" + tcti);
  lms.CloseTpm();
  TPMMA_ASSIGN_OR_RETURN(ProcessResult r, RunProcess(args, o));
  if (r.exit_code == 0) return r.out;
  std::string why = r.err;
  while (!why.empty() && (why.back() == '\n' || why.back() == '\r')) why.pop_back();
  if (const size_t nl = why.rfind('\n'); nl != std::string::npos) why = why.substr(nl + 1);
  const Code code = r.exit_code == 5   ? Code::kPermissionDenied
                    : r.exit_code == 4 ? Code::kAlreadyExists
                    : r.exit_code == 3 ? Code::kConflict
                                       : Code::kUnavailable;
  return Error(code, why.empty() ? args[0] + " exited with " + std::to_string(r.exit_code) : why);
}

// A CKA_ID that stays the same whenever the key is linked: 8 bytes of its Name's digest.
std::string StableId(const KeyRecord& k) {
  const size_t skip = 2;  // the nameAlg
  ByteView digest(k.name.data() + skip, k.name.size() > skip + 8 ? 8 : 0);
  return HexEncode(digest);
}

}  // namespace

std::string Pkcs11StorePath(const KeyStore& store) {
  return store.dir() + "/" + kPkcs11Dir;
}

Status Pkcs11Init(Lms& lms, const std::string& label, const Pkcs11Pins& pins) {
  TPMMA_RETURN_IF_ERROR(CheckPin(pins.so_pin, "the SO PIN"));
  TPMMA_RETURN_IF_ERROR(CheckPin(pins.user_pin, "the user PIN"));
  TPMMA_ASSIGN_OR_RETURN(MrkHandleReport mrk, ReportMrkHandle(lms));
  if (!mrk.present) {
    return Status(Code::kConflict,
                  mrk.handle == 0
                      ? "a PKCS#11 token needs the MRK at a persistent handle; this store keeps "
                        "none (lms init --mrk-handle)"
                      : "this store's MRK is not at " + HandleText(mrk.handle) + " on this TPM (" +
                            mrk.state + "); restore the keys first (lms restore)");
  }
  TPMMA_RETURN_IF_ERROR(lms.store().Lock());
  SecureString input = "{\"sopin\":\"";
  input += pins.so_pin;
  input += "\",\"userpin\":\"";
  input += pins.user_pin;
  input += "\"}";
  auto made = RunTool(lms,
                      {"init", "--path", Pkcs11StorePath(lms.store()), "--primary-handle",
                       HandleText(mrk.handle), "--label", label},
                      input);
  return made ? Status::Ok() : made.error();
}

Result<std::string> Pkcs11Link(Lms& lms, const std::string& label, std::string_view id_or_label,
                               const std::string& id_hex, const SecureString& user_pin) {
  TPMMA_ASSIGN_OR_RETURN(KeyRecord k, lms.Find(id_or_label));
  if (k.type != KeyType::kEccApp && k.type != KeyType::kRsaApp) {
    return Error(Code::kInvalidArgument,
                 "key " + k.id + " is a " + std::string(KeyTypeName(k.type)) +
                     " key; tpm2-pkcs11 takes application keys only (lms keygen --type ecc-app "
                     "or rsa-app): a key with a fixed scheme maps to no PKCS#11 mechanism");
  }
  if (!lms.env()->FileExists(Pkcs11StorePath(lms.store()) + "/" + kPkcs11Db)) {
    return Error(Code::kNotFound,
                 "this store has no PKCS#11 token yet; make one first (lms pkcs11 init)");
  }
  TPMMA_ASSIGN_OR_RETURN(std::string pem, ExportTss2Pem(lms, k.id));
  TPMMA_RETURN_IF_ERROR(lms.store().Lock());
  // The PEM is not secret (TPM-encrypted); the program reads key files by path.
  const std::string dir = Pkcs11StorePath(lms.store());
  const std::string file = dir + "/.link-" + k.id + ".pem";
  TPMMA_RETURN_IF_ERROR(lms.env()->WriteFileAtomic(file, ToBytes(pem), 0600));
  const std::string id = id_hex.empty() ? StableId(k) : id_hex;
  SecureString input = "{\"userpin\":\"";
  input += user_pin;
  input += "\"}";
  auto linked = RunTool(
      lms, {"link", "--path", dir, "--label", label, "--key-label", k.label, "--id", id, file},
      input);
  (void)lms.env()->RemoveFile(file);
  if (!linked) return Error(linked.error());
  return id;
}

Result<std::optional<Bytes>> ReadPkcs11Db(const KeyStore& store) {
  const std::string path = Pkcs11StorePath(store) + "/" + kPkcs11Db;
  if (!store.env()->FileExists(path)) return std::optional<Bytes>();
  TPMMA_ASSIGN_OR_RETURN(Bytes db, store.env()->ReadFile(path, kMaxDb));
  return std::optional<Bytes>(std::move(db));
}

Status WritePkcs11Db(KeyStore& store, ByteView db) {
  TPMMA_RETURN_IF_ERROR(store.env()->CreateDirs(Pkcs11StorePath(store), 0700));
  return store.env()->WriteFileAtomic(Pkcs11StorePath(store) + "/" + kPkcs11Db, db, 0600);
}

}  // namespace tpmma::lms
