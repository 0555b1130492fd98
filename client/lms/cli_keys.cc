// SPDX-License-Identifier: GPL-2.0-or-later
// The local key commands (operations.h does the work): init, keygen, import-tpm2, keys,
// pubkey, sign, encrypt, decrypt, unseal. One Add...Command per command.
#include <openssl/evp.h>
#include <unistd.h>

#include <cstdio>
#include <map>
#include <memory>
#include <string>

#include "client/lms/app_keys.h"
#include "client/lms/cli.h"
#include "client/lms/mrk_handle.h"
#include "client/lms/remote.h"
#include "common/openssl.h"
#include "common/text.h"

namespace tpmma::lms::cli {

namespace {

using nlohmann::json;

constexpr uint32_t kSecretFileMode = 0600;

// The base64 of a secret, in wiped memory.
SecureString SecretBase64(ByteView data) {
  SecureString out;
  out.resize(4 * ((data.size() + 2) / 3) + 1);
  const int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()), data.data(),
                                static_cast<int>(data.size()));
  out.resize(n > 0 ? static_cast<size_t>(n) : 0);
  return out;
}

std::string TypeHelp() {
  return "ecc-sign | rsa-sign | rsa-decrypt | sealed (lms's own: fixed schemes), or ecc-app | "
         "rsa-app (for applications: OpenSSL, PKCS#11, ssh pick the scheme; rsa-app also "
         "decrypts)";
}

Result<esys::ChildType> ChildTypeFromName(const std::string& name) {
  static const std::map<std::string, esys::ChildType> kTypes = {
      {"ecc-sign", esys::ChildType::kEccSign},       {"rsa-sign", esys::ChildType::kRsaSign},
      {"rsa-decrypt", esys::ChildType::kRsaDecrypt}, {"sealed", esys::ChildType::kSealed},
      {"ecc-app", esys::ChildType::kEccApp},         {"rsa-app", esys::ChildType::kRsaApp}};
  auto it = kTypes.find(name);
  if (it == kTypes.end()) {
    return Error(Code::kInvalidArgument,
                 "unknown key type '" + name + "' (one of " + TypeHelp() + ")");
  }
  return it->second;
}

std::string KeyLine(const KeyRecord& k) {
  return k.id + "  " + std::string(KeyTypeName(k.type)) + "  " + k.label + "\n";
}

// decrypt and unseal: their output is the user's secret: raw to --out (mode 0600) or
// stdout; under --json it is in the object (base64) only when it is not written to a file.
int SecretResult(const Globals& g, const KeyRecord& k, const std::string& out,
                 const SecureBytes& data, const char* field) {
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
}

struct InitArgs {
  std::string ma_key_public, ma_key_id;
  std::string mrk_alg = "rsa2048";
  std::string mrk_policy = "auto";  // follow | fixed | auto (follow when the MA offers it)
  std::string mrk_handle = "0x81000100";
  std::string custody = "recovery-code";  // CustodyModeName spelling
  std::string escrow_key_id;
  bool force = false, discard = false;
};

// init: the MA storage key, from --ma-key-public or fetched from the MA (with the MA's
// approval of it when it has a policy-signing key).
Result<FetchedMaKey> InitMaKey(const Globals& g, const InitArgs& a, Lms& lms,
                               const Result<MaSettings>& settings) {
  if (!a.ma_key_public.empty()) {
    FetchedMaKey given;
    TPMMA_ASSIGN_OR_RETURN(given.public_area, ReadInput(g, a.ma_key_public, kMaxSmallInput));
    return given;
  }
  if (!settings) {
    return Error(Code::kInvalidArgument,
                 "init needs the MA key: --ma-key-public FILE, or the MA to fetch it from (" +
                     settings.error().message() + ")");
  }
  lms.Progress("fetching the MA key from " + settings->url);
  return FetchMaKey(*settings, a.ma_key_id);
}

// init: an MRK that follows the MA (PolicyAuthorize) when asked or, by default, when the MA
// offers it; bound to the MA key (PolicyDuplicationSelect) otherwise.
Status InitMrkPolicy(const InitArgs& a, const FetchedMaKey& key, InitOptions& o) {
  const bool offered = !key.policy_key.empty();
  if (a.mrk_policy == "follow" && !offered) {
    return Status(Code::kInvalidArgument,
                  a.ma_key_public.empty()
                      ? "--mrk-policy follow: this MA publishes no policy-signing key (made with "
                        "--no-policy-key, or before it had one); use --mrk-policy fixed"
                      : "--mrk-policy follow needs the MA's approval, which only the MA gives: "
                        "drop --ma-key-public");
  }
  if (a.mrk_policy != "fixed" && offered) {
    o.policy_key_public = key.policy_key;
    o.ma_key_approval = key.approval;
  }
  return Status::Ok();
}

// init: the custody of the inner key; escrow fetches the MA's escrow key.
Status InitCustody(const InitArgs& a, CustodyMode custody, Lms& lms,
                   const Result<MaSettings>& settings, InitOptions& o) {
  if (custody != CustodyMode::kEscrow) {
    if (!a.escrow_key_id.empty()) {
      return Status(Code::kInvalidArgument, "--escrow-key-id is only for --custody escrow");
    }
    return Status::Ok();
  }
  if (!settings) {
    return Status(Code::kInvalidArgument,
                  "--custody escrow needs the MA, to fetch its escrow key (" +
                      settings.error().message() + ")");
  }
  lms.Progress("fetching the MA escrow key from " + settings->url);
  TPMMA_ASSIGN_OR_RETURN(FetchedMaKey key, FetchEscrowKey(*settings, a.escrow_key_id));
  o.custody = CustodyMode::kEscrow;
  o.escrow_key_id = std::move(key.key_id);
  o.escrow_public = std::move(key.public_area);
  return Status::Ok();
}

// init's report: the store, SRK and MRK, and the recovery code shown once (or, for escrow
// custody, what a restore will need instead).
int InitSucceeded(const Globals& g, const InitArgs& a, Lms& lms, const InitResult& r) {
  const bool escrow = r.state.custody.mode == CustodyMode::kEscrow;
  json j = {{"store", lms.store().dir()},
            {"srk_handle", Hex32(r.state.srk_handle)},
            {"srk_name", HexEncode(r.state.srk_name)},
            {"mrk", KeyJson(r.mrk)},
            {"ma_key_name", HexEncode(r.state.ma_key_name)},
            {"mrk_policy", r.state.policy_key_public.empty() ? "fixed" : "follow"},
            {"custody", CustodyModeName(r.state.custody.mode)},
            {"retired_to", r.retired_to ? json(*r.retired_to) : json(nullptr)}};
  if (escrow) j["escrow_key_id"] = r.state.custody.escrow_key_id;
  SecureString text;
  auto append = [&text](const std::string& s) { text.append(s.begin(), s.end()); };
  append("Initialised the key store " + lms.store().dir() + "\n");
  if (r.retired_to) append("  the previous store was set aside in " + *r.retired_to + "\n");
  append("  SRK  " + Hex32(r.state.srk_handle) + "  " + HexEncode(r.state.srk_name) + "\n");
  append(
      "  MRK  " + r.mrk.id + "  (" + a.mrk_alg +
      (r.state.policy_key_public.empty()
           ? ", duplicable only to MA key " + HexEncode(r.state.ma_key_name)
           : ", follows the MA: duplicable to each MA key its policy-signing key approves, now " +
                 HexEncode(r.state.ma_key_name)) +
      ")\n\n");
  if (escrow) {
    append("Inner key custody: escrow (MA escrow key " + r.state.custody.escrow_key_id +
           "). There is no recovery code: restoring these keys on a new or cleared "
           "TPM needs a helpdesk approval (ma-admin approve) for this platform.\n");
    return Succeed(g, j, std::string(text.begin(), text.end()));
  }
  append(
      "RECOVERY CODE (shown only now; it is stored nowhere). Write it "
      "down and keep it offline:\n\n    ");
  text += r.recovery_code;
  append(
      "\n\nIt is needed to restore these keys on a new or cleared TPM. "
      "The MA cannot recover it.\n");
  return SucceedWithSecret(g, j, "recovery_code", r.recovery_code, text);
}

int RunInit(const Globals& g, const InitArgs& a) {
  auto lms = OpenLms(g);
  if (!lms) return Fail(g, lms.error());
  ShowProgress(g, **lms);
  auto settings = ResolveMaSettings((*lms)->store(), FlagsOf(g));
  auto ma_key = InitMaKey(g, a, **lms, settings);
  if (!ma_key) return Fail(g, ma_key.error());
  // --custody is checked against the CustodyModeName spellings by CLI11.
  const CustodyMode custody = CustodyModeFromName(a.custody).value_or(CustodyMode::kRecoveryCode);
  InitOptions o;
  Status custody_ok = InitCustody(a, custody, **lms, settings, o);
  if (!custody_ok.ok()) return Fail(g, custody_ok);
  Status policy_ok = InitMrkPolicy(a, *ma_key, o);
  if (!policy_ok.ok()) return Fail(g, policy_ok);
  o.ma_key_public = std::move(ma_key->public_area);
  o.mrk_alg = a.mrk_alg == "ecc-p256" ? esys::KeyAlg::kEccP256 : esys::KeyAlg::kRsa2048;
  auto handle = ParseMrkHandle(a.mrk_handle);
  if (!handle) return Fail(g, handle.error());
  o.mrk_handle = *handle;
  o.force = a.force;
  o.discard_unbacked = a.discard;
  auto r = (*lms)->Init(o);
  if (!r) return Fail(g, r.error());
  if (settings) RecordMaSettings(**lms, *settings);
  return InitSucceeded(g, a, **lms, *r);
}

}  // namespace

Command AddInitCommand(CLI::App& app, const Globals& g) {
  auto a = std::make_shared<InitArgs>();
  CLI::App* c =
      AddSubcommand(app, "init",
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
  c->add_option("--mrk-policy", a->mrk_policy,
                "follow: the MRK follows the MA through key rotations (PolicyAuthorize by the "
                "MA's policy-signing key); fixed: bound to this MA key for good "
                "(PolicyDuplicationSelect); auto: follow when the MA offers it")
      ->check(CLI::IsMember({"auto", "follow", "fixed"}))
      ->capture_default_str();
  c->add_option("--mrk-handle", a->mrk_handle,
                "also keep the MRK persistent at this handle, the parent that key files "
                "(TSS2 PRIVATE KEY PEMs, the PKCS#11 token) name; 'none': only lms uses the MRK")
      ->capture_default_str();
  c->add_flag("--force", a->force,
              "re-initialise an initialised store (the old one is set aside in retired/); "
              "refused while keys exist that were never backed up");
  c->add_flag("--discard-unbacked-keys", a->discard,
              "with --force: re-initialise even though some keys were never backed up (they "
              "are set aside in retired/, not deleted, but no backup will carry them)");
  return {c, [&g, a]() { return RunInit(g, *a); }};
}

Command AddKeygenCommand(CLI::App& app, const Globals& g) {
  struct Args {
    std::string type, label, data, pem_out;
  };
  auto a = std::make_shared<Args>();
  CLI::App* c = AddSubcommand(app, "keygen", "Create a key under the MRK");
  c->add_option("--pem-out", a->pem_out,
                "also write it as a TSS2 PRIVATE KEY PEM for OpenSSL (lms export)");
  c->add_option("--type", a->type, TypeHelp())
      ->required()
      ->check(
          CLI::IsMember({"ecc-sign", "rsa-sign", "rsa-decrypt", "sealed", "ecc-app", "rsa-app"}));
  c->add_option("--label", a->label, "a name for the key, unique in the store")->required();
  c->add_option("--data", a->data,
                "sealed: the file holding the data to seal (1 to 128 bytes); - or absent: "
                "stdin");
  return {c, [&g, a]() -> int {
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
            json out = {{"key", KeyJson(*k)}};
            Status files = WriteKeyFiles(g, **lms, *k, a->pem_out, {}, out);
            // The key exists either way; say so, with why its file could not be written.
            if (!files.ok()) {
              return Fail(g, files.WithContext("key " + k->id + " was made, but its PEM file"));
            }
            return Succeed(g, out, KeyLine(*k));
          }};
}

Command AddImportTpm2Command(CLI::App& app, const Globals& g) {
  struct Args {
    std::string pub, priv, label;
  };
  auto a = std::make_shared<Args>();
  CLI::App* c =
      AddSubcommand(app, "import-tpm2",
                    "Register a key made with tpm2_create under this store's MRK, so lms uses "
                    "and backs it up");
  c->add_option("--public", a->pub, "TPM2B_PUBLIC file (tpm2_create -u)")->required();
  c->add_option("--private", a->priv, "TPM2B_PRIVATE file (tpm2_create -r)")->required();
  c->add_option("--label", a->label, "a name for the key, unique in the store")->required();
  return {c, [&g, a]() -> int {
            auto pub = ReadInput(g, a->pub, kMaxSmallInput);
            if (!pub) return Fail(g, pub.error());
            auto priv = ReadInput(g, a->priv, kMaxSmallInput);
            if (!priv) return Fail(g, priv.error());
            auto lms = OpenLms(g);
            if (!lms) return Fail(g, lms.error());
            auto k = (*lms)->ImportTpm2(*pub, *priv, a->label);
            if (!k) return Fail(g, k.error());
            return Succeed(g, {{"key", KeyJson(*k)}}, KeyLine(*k));
          }};
}

Command AddKeysCommand(CLI::App& app, const Globals& g) {
  CLI::App* c =
      AddSubcommand(app, "keys", "List the keys: id, label, type, parent, migratable, backed up");
  return {c, [&g]() -> int {
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
              if (!k.certificate.empty()) {
                auto cert = DescribeCertificate(k.certificate);
                text += "    certificate: " +
                        (cert ? cert->subject + ", expires " + Utc(cert->not_after)
                              : cert.error().message()) +
                        "\n";
              }
            }
            return Succeed(g, {{"keys", list}}, text);
          }};
}

Command AddPubkeyCommand(CLI::App& app, const Globals& g) {
  struct Args {
    std::string id, format = "pem", out;
  };
  auto a = std::make_shared<Args>();
  CLI::App* c = AddSubcommand(app, "pubkey", "Print a key's public key");
  c->add_option("ID", a->id, "key id or label")->required();
  c->add_option("--format", a->format, "pem | openssh")
      ->check(CLI::IsMember({"pem", "openssh"}))
      ->capture_default_str();
  c->add_option("--out", a->out, "write it to FILE instead of stdout");
  return {c, [&g, a]() -> int {
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
          }};
}

Command AddSignCommand(CLI::App& app, const Globals& g) {
  struct Args {
    std::string id, in, out;
  };
  auto a = std::make_shared<Args>();
  CLI::App* c =
      AddSubcommand(app, "sign",
                    "Sign the SHA-256 of a file with a signing key (verify with `openssl dgst "
                    "-sha256 -verify PUB.pem -signature SIG FILE`)");
  c->add_option("ID", a->id, "key id or label")->required();
  c->add_option("--in", a->in, "the file to sign (- for stdin)")->required();
  c->add_option("--out", a->out,
                "write the signature (PKCS#1 v1.5 or DER ECDSA) to FILE; default stdout");
  return {c, [&g, a]() -> int {
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
            return Succeed(
                g,
                {{"id", k->id},
                 {"algorithm", k->type == KeyType::kRsaSign || k->type == KeyType::kRsaApp
                                   ? "rsassa-pkcs1v15-sha256"
                                   : "ecdsa-sha256"},
                 {"sha256", HexEncode(*digest)},
                 {"signature", Base64Encode(*sig)}},
                "");
          }};
}

Command AddEncryptCommand(CLI::App& app, const Globals& g) {
  struct Args {
    std::string id, in, out;
  };
  auto a = std::make_shared<Args>();
  CLI::App* c =
      AddSubcommand(app, "encrypt",
                    "Encrypt a short message (RSA-OAEP-SHA256, in software with the public "
                    "key) for an rsa-decrypt key");
  c->add_option("ID", a->id, "key id or label")->required();
  c->add_option("--in", a->in, "the message (- for stdin; at most 190 bytes)")->required();
  c->add_option("--out", a->out, "write the ciphertext to FILE; default stdout");
  return {c, [&g, a]() -> int {
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
          }};
}

Command AddDecryptCommand(CLI::App& app, const Globals& g) {
  struct Args {
    std::string id, in, out;
  };
  auto a = std::make_shared<Args>();
  CLI::App* c = AddSubcommand(app, "decrypt",
                              "Decrypt (in the TPM) a ciphertext made for an rsa-decrypt key");
  c->add_option("ID", a->id, "key id or label")->required();
  c->add_option("--in", a->in, "the ciphertext (- for stdin)")->required();
  c->add_option("--out", a->out, "write the plaintext to FILE (mode 0600); default stdout");
  return {c, [&g, a]() -> int {
            auto ct = ReadInput(g, a->in, kMaxSmallInput);
            if (!ct) return Fail(g, ct.error());
            auto lms = OpenLms(g);
            if (!lms) return Fail(g, lms.error());
            auto k = (*lms)->Find(a->id);
            if (!k) return Fail(g, k.error());
            auto pt = (*lms)->Decrypt(k->id, *ct);
            if (!pt) return Fail(g, pt.error());
            return SecretResult(g, *k, a->out, *pt, "plaintext");
          }};
}

Command AddUnsealCommand(CLI::App& app, const Globals& g) {
  struct Args {
    std::string id, out;
  };
  auto a = std::make_shared<Args>();
  CLI::App* c =
      AddSubcommand(app, "unseal", "Print (unsealed by the TPM) the data in a sealed key");
  c->add_option("ID", a->id, "key id or label")->required();
  c->add_option("--out", a->out, "write the data to FILE (mode 0600); default stdout");
  return {c, [&g, a]() -> int {
            auto lms = OpenLms(g);
            if (!lms) return Fail(g, lms.error());
            auto k = (*lms)->Find(a->id);
            if (!k) return Fail(g, k.error());
            auto data = (*lms)->Unseal(k->id);
            if (!data) return Fail(g, data.error());
            return SecretResult(g, *k, a->out, *data, "data");
          }};
}

}  // namespace tpmma::lms::cli
