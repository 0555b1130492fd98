// SPDX-License-Identifier: GPL-2.0-or-later
#include "client/lms/cli.h"

#include <openssl/evp.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>

#include "client/lms/remote.h"
#include "common/openssl.h"
#include "common/text.h"
#include "schema/package.h"
#include "tpm/esys/templates.h"

namespace tpmma::lms::cli {

namespace {

using nlohmann::json;

constexpr size_t kMaxSmallInput = 64 * 1024;  // ciphertexts, TPM files, sealed data
constexpr uint32_t kSecretFileMode = 0600;
constexpr uint32_t kPublicFileMode = 0644;

// The base64 of a secret, in wiped memory.
SecureString SecretBase64(ByteView data) {
  SecureString out;
  out.resize(4 * ((data.size() + 2) / 3) + 1);
  const int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()), data.data(),
                                static_cast<int>(data.size()));
  out.resize(n > 0 ? static_cast<size_t>(n) : 0);
  return out;
}

void WriteStdout(const void* data, size_t size) {
  if (size > 0) std::fwrite(data, 1, size, stdout);
  std::fflush(stdout);
}

std::string TypeHelp() {
  return "ecc-sign | rsa-sign | rsa-decrypt | sealed";
}

Result<esys::ChildType> ChildTypeFromName(const std::string& name) {
  static const std::map<std::string, esys::ChildType> kTypes = {
      {"ecc-sign", esys::ChildType::kEccSign},
      {"rsa-sign", esys::ChildType::kRsaSign},
      {"rsa-decrypt", esys::ChildType::kRsaDecrypt},
      {"sealed", esys::ChildType::kSealed}};
  auto it = kTypes.find(name);
  if (it == kTypes.end()) {
    return Error(Code::kInvalidArgument,
                 "unknown key type '" + name + "' (one of " + TypeHelp() + ")");
  }
  return it->second;
}

Result<std::unique_ptr<Lms>> OpenLms(const Globals& g) {
  return Lms::Open(g.LmsOptions());
}

std::string KeyLine(const KeyRecord& k) {
  return k.id + "  " + std::string(KeyTypeName(k.type)) + "  " + k.label + "\n";
}

}  // namespace

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
          {"name", HexEncode(k.name)}};
}

void RecordMaSettings(Lms& lms, const MaSettings& settings) {
  std::error_code ec;
  StoreConfig config;
  config.ma_url = settings.url;
  config.ma_ca = std::filesystem::absolute(settings.ca_file, ec).string();
  for (const std::string& f : settings.ek_intermediates) {
    config.ek_intermediates.push_back(std::filesystem::absolute(f, ec).string());
  }
  Status saved = lms.store().WriteConfig(config);
  if (!saved.ok()) {
    std::fprintf(stderr, "lms: warning: the MA settings were not recorded: %s\n",
                 saved.message().c_str());
  }
}

void AddLocalCommands(CLI::App& app, Globals& g, std::vector<Command>* commands) {
  auto add = [&](const char* name, const char* help) {
    CLI::App* sub = app.add_subcommand(name, help);
    sub->fallthrough();  // --store/--tcti/--json after the command name too
    return sub;
  };

  // ------------------------------------------------------------------ init
  {
    struct Args {
      std::string ma_key_public, ma_key_id;
      std::string mrk_alg = "rsa2048";
      std::string custody = "recovery-code";
      std::string escrow_key_id;
      bool force = false, discard = false;
    };
    auto a = std::make_shared<Args>();
    CLI::App* c = add("init",
                      "Create the key store: the SRK (persistent at 0x81000001), a Migratable Root "
                      "Key bound to the MA key, and the inner key's custody: a recovery code "
                      "(shown once) or escrow with the MA (--custody escrow). The MA key "
                      "comes from the MA (--ma, GetMAKey, checked against its certificate) or "
                      "from a file; --ma/--ma-ca are recorded in the store for later commands");
    c->add_option("--ma-key-public", a->ma_key_public,
                  "the MA storage key's TPM2B_PUBLIC, as GetMAKey returns it (default: fetch it "
                  "from the MA)");
    c->add_option("--ma-key-id", a->ma_key_id,
                  "which MA key to fetch (default: the one the MA uses now)");
    c->add_option("--custody", a->custody,
                  "who can give the inner wrapper key back after a TPM clear or on a new board: "
                  "recovery-code (a code shown once, never sent) or escrow (encrypted to the "
                  "MA's escrow key, released only for a restore a helpdesk approved; needs "
                  "--ma)")
        ->check(CLI::IsMember({"recovery-code", "escrow"}))
        ->capture_default_str();
    c->add_option("--escrow-key-id", a->escrow_key_id,
                  "with --custody escrow: which MA escrow key (default: the one the MA lists)");
    c->add_option("--mrk-alg", a->mrk_alg, "MRK algorithm: rsa2048 | ecc-p256")
        ->check(CLI::IsMember({"rsa2048", "ecc-p256"}))
        ->capture_default_str();
    c->add_flag("--force", a->force,
                "re-initialise an initialised store (the old one is set aside in retired/); "
                "refused while keys exist that were never backed up");
    c->add_flag("--discard-unbacked-keys", a->discard,
                "with --force: re-initialise even though some keys were never backed up (they "
                "are set aside in retired/, not deleted, but no backup will carry them)");
    commands->push_back(
        {c, [&g, a]() -> int {
           auto lms = OpenLms(g);
           if (!lms) return Fail(g, lms.error());
           ShowProgress(g, **lms);
           auto settings = ResolveMaSettings(
               (*lms)->store(),
               {.url = g.ma_url, .ca_file = g.ma_ca, .ek_intermediates = g.ek_intermediates});
           Bytes ma_public;
           if (!a->ma_key_public.empty()) {
             auto ma = ReadInput(g, a->ma_key_public, kMaxSmallInput);
             if (!ma) return Fail(g, ma.error());
             ma_public = std::move(*ma);
           } else {
             if (!settings) {
               return Fail(g, Status(Code::kInvalidArgument,
                                     "init needs the MA key: --ma-key-public FILE, or the MA to "
                                     "fetch it from (" +
                                         settings.error().message() + ")"));
             }
             (*lms)->Progress("fetching the MA key from " + settings->url);
             auto key = FetchMaKey(*settings, a->ma_key_id);
             if (!key) return Fail(g, key.error());
             ma_public = std::move(key->public_area);
           }
           const bool escrow = a->custody == "escrow";
           if (!escrow && !a->escrow_key_id.empty()) {
             return Fail(
                 g, Status(Code::kInvalidArgument, "--escrow-key-id is only for --custody escrow"));
           }
           InitOptions o;
           if (escrow) {
             if (!settings) {
               return Fail(g, Status(Code::kInvalidArgument,
                                     "--custody escrow needs the MA, to fetch its escrow key (" +
                                         settings.error().message() + ")"));
             }
             (*lms)->Progress("fetching the MA escrow key from " + settings->url);
             auto key = FetchEscrowKey(*settings, a->escrow_key_id);
             if (!key) return Fail(g, key.error());
             o.custody = CustodyMode::kEscrow;
             o.escrow_key_id = std::move(key->key_id);
             o.escrow_public = std::move(key->public_area);
           }
           o.ma_key_public = ma_public;
           o.mrk_alg = a->mrk_alg == "ecc-p256" ? esys::KeyAlg::kEccP256 : esys::KeyAlg::kRsa2048;
           o.force = a->force;
           o.discard_unbacked = a->discard;
           auto r = (*lms)->Init(o);
           if (!r) return Fail(g, r.error());
           if (settings) RecordMaSettings(**lms, *settings);
           json j = {{"store", (*lms)->store().dir()},
                     {"srk_handle", Hex32(r->state.srk_handle)},
                     {"srk_name", HexEncode(r->state.srk_name)},
                     {"mrk", KeyJson(r->mrk)},
                     {"ma_key_name", HexEncode(r->state.ma_key_name)},
                     {"custody", CustodyModeName(r->state.custody.mode)},
                     {"retired_to", r->retired_to ? json(*r->retired_to) : json(nullptr)}};
           if (escrow) j["escrow_key_id"] = r->state.custody.escrow_key_id;
           SecureString text;
           auto append = [&text](const std::string& s) { text.append(s.begin(), s.end()); };
           append("Initialised the key store " + (*lms)->store().dir() + "\n");
           if (r->retired_to) {
             append("  the previous store was set aside in " + *r->retired_to + "\n");
           }
           append("  SRK  " + Hex32(r->state.srk_handle) + "  " + HexEncode(r->state.srk_name) +
                  "\n");
           append("  MRK  " + r->mrk.id + "  (" + a->mrk_alg + ", duplicable only to MA key " +
                  HexEncode(r->state.ma_key_name) + ")\n\n");
           if (escrow) {
             append("Inner key custody: escrow (MA escrow key " + r->state.custody.escrow_key_id +
                    "). There is no recovery code: restoring these keys on a new or cleared "
                    "TPM needs a helpdesk approval (ma-admin approve) for this platform.\n");
             return Succeed(g, j, std::string(text.begin(), text.end()));
           }
           append(
               "RECOVERY CODE (shown only now; it is stored nowhere). Write it "
               "down and keep it offline:\n\n    ");
           text += r->recovery_code;
           append(
               "\n\nIt is needed to restore these keys on a new or cleared TPM. "
               "The MA cannot recover it.\n");
           return SucceedWithSecret(g, j, "recovery_code", r->recovery_code, text);
         }});
  }

  // ------------------------------------------------------------------ keygen
  {
    struct Args {
      std::string type, label, data;
    };
    auto a = std::make_shared<Args>();
    CLI::App* c = add("keygen", "Create a key under the MRK");
    c->add_option("--type", a->type, TypeHelp())
        ->required()
        ->check(CLI::IsMember({"ecc-sign", "rsa-sign", "rsa-decrypt", "sealed"}));
    c->add_option("--label", a->label, "a name for the key, unique in the store")->required();
    c->add_option("--data", a->data,
                  "sealed: the file holding the data to seal (1 to 128 bytes); - or absent: "
                  "stdin");
    commands->push_back(
        {c, [&g, a]() -> int {
           auto type = ChildTypeFromName(a->type);
           if (!type) return Fail(g, type.error());
           SecureBytes data;
           if (*type == esys::ChildType::kSealed) {
             const std::string from = a->data.empty() ? "-" : a->data;
             if (from == "-" && ::isatty(STDIN_FILENO)) {
               return Fail(g, Status(Code::kInvalidArgument,
                                     "give the data to seal with --data FILE or "
                                     "on stdin"));
             }
             auto in = ReadSecretInput(g, from, 128 + 1);
             if (!in) return Fail(g, in.error());
             data = std::move(*in);
           } else if (!a->data.empty()) {
             return Fail(g, Status(Code::kInvalidArgument, "--data is only for --type sealed"));
           }
           auto lms = OpenLms(g);
           if (!lms) return Fail(g, lms.error());
           auto k = (*lms)->Keygen(*type, a->label, data);
           if (!k) return Fail(g, k.error());
           return Succeed(g, {{"key", KeyJson(*k)}}, KeyLine(*k));
         }});
  }

  // ------------------------------------------------------------------ import-tpm2
  {
    struct Args {
      std::string pub, priv, label;
    };
    auto a = std::make_shared<Args>();
    CLI::App* c = add("import-tpm2",
                      "Register a key made with tpm2_create under this store's MRK, so lms uses "
                      "and backs it up");
    c->add_option("--public", a->pub, "TPM2B_PUBLIC file (tpm2_create -u)")->required();
    c->add_option("--private", a->priv, "TPM2B_PRIVATE file (tpm2_create -r)")->required();
    c->add_option("--label", a->label, "a name for the key, unique in the store")->required();
    commands->push_back({c, [&g, a]() -> int {
                           auto pub = ReadInput(g, a->pub, kMaxSmallInput);
                           if (!pub) return Fail(g, pub.error());
                           auto priv = ReadInput(g, a->priv, kMaxSmallInput);
                           if (!priv) return Fail(g, priv.error());
                           auto lms = OpenLms(g);
                           if (!lms) return Fail(g, lms.error());
                           auto k = (*lms)->ImportTpm2(*pub, *priv, a->label);
                           if (!k) return Fail(g, k.error());
                           return Succeed(g, {{"key", KeyJson(*k)}}, KeyLine(*k));
                         }});
  }

  // ------------------------------------------------------------------ keys
  {
    CLI::App* c = add("keys", "List the keys: id, label, type, parent, migratable, backed up");
    commands->push_back(
        {c, [&g]() -> int {
           auto lms = OpenLms(g);
           if (!lms) return Fail(g, lms.error());
           auto keys = (*lms)->Keys();
           if (!keys) return Fail(g, keys.error());
           json list = json::array();
           std::string text;
           char line[512];
           std::snprintf(line, sizeof line, "%-36s  %-11s  %-6s  %-10s  %-20s  %s\n", "ID", "TYPE",
                         "PARENT", "MIGRATABLE", "BACKED UP", "LABEL");
           text += line;
           for (const KeyRecord& k : *keys) {
             list.push_back(KeyJson(k));
             const std::string backed = k.backed_up_at ? Utc(*k.backed_up_at) : std::string("no");
             std::snprintf(line, sizeof line, "%-36s  %-11s  %-6s  %-10s  %-20s  ", k.id.c_str(),
                           std::string(KeyTypeName(k.type)).c_str(),
                           k.parent == "srk" ? "srk" : "mrk", k.migratable ? "yes" : "no",
                           backed.c_str());
             text += line + k.label + "\n";
           }
           return Succeed(g, {{"keys", list}}, text);
         }});
  }

  // ------------------------------------------------------------------ pubkey
  {
    struct Args {
      std::string id, format = "pem", out;
    };
    auto a = std::make_shared<Args>();
    CLI::App* c = add("pubkey", "Print a key's public key");
    c->add_option("ID", a->id, "key id or label")->required();
    c->add_option("--format", a->format, "pem | openssh")
        ->check(CLI::IsMember({"pem", "openssh"}))
        ->capture_default_str();
    c->add_option("--out", a->out, "write it to FILE instead of stdout");
    commands->push_back(
        {c, [&g, a]() -> int {
           auto lms = OpenLms(g);
           if (!lms) return Fail(g, lms.error());
           auto k = (*lms)->Find(a->id);
           if (!k) return Fail(g, k.error());
           auto pub = (*lms)->PublicKey(
               k->id, a->format == "openssh" ? PublicFormat::kOpenSsh : PublicFormat::kPem);
           if (!pub) return Fail(g, pub.error());
           if (!a->out.empty() && a->out != "-") {
             Status s = WriteOutput(g, a->out, View(*pub), kPublicFileMode);
             if (!s.ok()) return Fail(g, s);
           }
           return Succeed(g, {{"id", k->id}, {"format", a->format}, {"public_key", *pub}},
                          a->out.empty() || a->out == "-" ? *pub : std::string());
         }});
  }

  // ------------------------------------------------------------------ sign
  {
    struct Args {
      std::string id, in, out;
    };
    auto a = std::make_shared<Args>();
    CLI::App* c = add("sign",
                      "Sign the SHA-256 of a file with a signing key (verify with `openssl dgst "
                      "-sha256 -verify PUB.pem -signature SIG FILE`)");
    c->add_option("ID", a->id, "key id or label")->required();
    c->add_option("--in", a->in, "the file to sign (- for stdin)")->required();
    c->add_option("--out", a->out,
                  "write the signature (PKCS#1 v1.5 or DER ECDSA) to FILE; default stdout");
    commands->push_back(
        {c, [&g, a]() -> int {
           auto digest = Sha256OfInput(a->in);
           if (!digest) return Fail(g, digest.error());
           auto lms = OpenLms(g);
           if (!lms) return Fail(g, lms.error());
           auto k = (*lms)->Find(a->id);
           if (!k) return Fail(g, k.error());
           auto sig = (*lms)->Sign(k->id, *digest);
           if (!sig) return Fail(g, sig.error());
           const bool to_file = !a->out.empty() && a->out != "-";
           if (to_file || !g.json) {
             Status s = WriteOutput(g, a->out, *sig, kPublicFileMode);
             if (!s.ok()) return Fail(g, s);
           }
           if (!g.json) return kExitOk;
           return Succeed(g,
                          {{"id", k->id},
                           {"algorithm", k->type == KeyType::kRsaSign ? "rsassa-pkcs1v15-sha256"
                                                                      : "ecdsa-sha256"},
                           {"sha256", HexEncode(*digest)},
                           {"signature", Base64Encode(*sig)}},
                          "");
         }});
  }

  // ------------------------------------------------------------------ encrypt
  {
    struct Args {
      std::string id, in, out;
    };
    auto a = std::make_shared<Args>();
    CLI::App* c = add("encrypt",
                      "Encrypt a short message (RSA-OAEP-SHA256, in software with the public "
                      "key) for an rsa-decrypt key");
    c->add_option("ID", a->id, "key id or label")->required();
    c->add_option("--in", a->in, "the message (- for stdin; at most 190 bytes)")->required();
    c->add_option("--out", a->out, "write the ciphertext to FILE; default stdout");
    commands->push_back(
        {c, [&g, a]() -> int {
           auto msg = ReadInput(g, a->in, kMaxSmallInput);
           if (!msg) return Fail(g, msg.error());
           auto lms = OpenLms(g);
           if (!lms) return Fail(g, lms.error());
           auto k = (*lms)->Find(a->id);
           if (!k) return Fail(g, k.error());
           auto ct = (*lms)->Encrypt(k->id, *msg);
           Wipe(msg->data(), msg->size());
           if (!ct) return Fail(g, ct.error());
           const bool to_file = !a->out.empty() && a->out != "-";
           if (to_file || !g.json) {
             Status s = WriteOutput(g, a->out, *ct, kPublicFileMode);
             if (!s.ok()) return Fail(g, s);
           }
           if (!g.json) return kExitOk;
           return Succeed(g, {{"id", k->id}, {"ciphertext", Base64Encode(*ct)}}, "");
         }});
  }

  // ------------------------------------------------------------------ decrypt, unseal
  // Their output is the user's secret: raw to --out (mode 0600) or stdout; under --json
  // it is in the object (base64) only when it is not written to a file.
  auto secret_result = [&g](const KeyRecord& k, const std::string& out, const SecureBytes& data,
                            const char* field) -> int {
    const bool to_file = !out.empty() && out != "-";
    if (to_file || !g.json) {
      Status s = WriteOutput(g, out, data, kSecretFileMode);
      if (!s.ok()) return Fail(g, s);
    }
    if (!g.json) return kExitOk;
    json j = {{"id", k.id}};
    if (to_file) {
      j["out"] = out;
      return Succeed(g, j, "");
    }
    return SucceedWithSecret(g, j, field, SecretBase64(data), {});
  };
  {
    struct Args {
      std::string id, in, out;
    };
    auto a = std::make_shared<Args>();
    CLI::App* c = add("decrypt", "Decrypt (in the TPM) a ciphertext made for an rsa-decrypt key");
    c->add_option("ID", a->id, "key id or label")->required();
    c->add_option("--in", a->in, "the ciphertext (- for stdin)")->required();
    c->add_option("--out", a->out, "write the plaintext to FILE (mode 0600); default stdout");
    commands->push_back({c, [&g, a, secret_result]() -> int {
                           auto ct = ReadInput(g, a->in, kMaxSmallInput);
                           if (!ct) return Fail(g, ct.error());
                           auto lms = OpenLms(g);
                           if (!lms) return Fail(g, lms.error());
                           auto k = (*lms)->Find(a->id);
                           if (!k) return Fail(g, k.error());
                           auto pt = (*lms)->Decrypt(k->id, *ct);
                           if (!pt) return Fail(g, pt.error());
                           return secret_result(*k, a->out, *pt, "plaintext");
                         }});
  }
  {
    struct Args {
      std::string id, out;
    };
    auto a = std::make_shared<Args>();
    CLI::App* c = add("unseal", "Print (unsealed by the TPM) the data in a sealed key");
    c->add_option("ID", a->id, "key id or label")->required();
    c->add_option("--out", a->out, "write the data to FILE (mode 0600); default stdout");
    commands->push_back({c, [&g, a, secret_result]() -> int {
                           auto lms = OpenLms(g);
                           if (!lms) return Fail(g, lms.error());
                           auto k = (*lms)->Find(a->id);
                           if (!k) return Fail(g, k.error());
                           auto data = (*lms)->Unseal(k->id);
                           if (!data) return Fail(g, data.error());
                           return secret_result(*k, a->out, *data, "data");
                         }});
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
  app.add_option("--ek-intermediate", g.ek_intermediates,
                 "EK certificate intermediate CA the MA may need (PEM or DER file; repeatable)");
  app.footer(
      "Exit codes: 0 success, 1 the operation failed (the message says why), 2 bad usage.\n"
      "With --json, failures are {\"ok\":false,\"code\":...,\"message\":...} on stdout.");

  std::vector<Command> commands;
  AddLocalCommands(app, g, &commands);
  AddMaCommands(app, g, &commands);

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
