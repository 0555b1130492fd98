// SPDX-License-Identifier: GPL-2.0-or-later
#include "client/lms/keystore.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <tuple>
#include <utility>

#include <nlohmann/json.hpp>

#include "schema/package.h"

namespace tpmma::lms {

namespace {

using nlohmann::json;

constexpr size_t kMaxFileBytes = 1 << 20;
constexpr uint32_t kDirMode = 0700;
constexpr uint32_t kFileMode = 0600;

// Reads typed fields out of a JSON object; the first problem wins and names the file and
// the field.
class Fields {
 public:
  // `what` is copied: callers pass temporaries such as std::string(what) + " ak" (issue #13:
  // a view of one was read after it was freed).
  Fields(const json& j, std::string_view what) : j_(j), what_(what) {}

  std::string Str(const char* key) {
    const json* v = Find(key);
    if (v == nullptr) return {};
    if (!v->is_string()) return Bad(key, "is not a string"), std::string();
    return v->get<std::string>();
  }
  std::optional<std::string> OptStr(const char* key) {
    if (!Has(key)) return std::nullopt;
    return Str(key);
  }
  int64_t Int(const char* key) {
    const json* v = Find(key);
    if (v == nullptr) return 0;
    if (!v->is_number_integer()) return Bad(key, "is not an integer"), 0;
    return v->get<int64_t>();
  }
  std::optional<int64_t> OptInt(const char* key) {
    if (!Has(key)) return std::nullopt;
    return Int(key);
  }
  bool Bool(const char* key) {
    const json* v = Find(key);
    if (v == nullptr) return false;
    if (!v->is_boolean()) return Bad(key, "is not true or false"), false;
    return v->get<bool>();
  }
  Bytes Base64(const char* key) {
    std::string s = Str(key);
    if (!status_.ok()) return {};
    auto b = Base64Decode(s);
    if (!b) return Bad(key, "is not base64"), Bytes();
    return *b;
  }
  Bytes Hex(const char* key) {
    std::string s = Str(key);
    if (!status_.ok()) return {};
    auto b = HexDecode(s);
    if (!b) return Bad(key, "is not hex"), Bytes();
    return *b;
  }
  const json* Object(const char* key) {
    const json* v = Find(key);
    if (v != nullptr && !v->is_object()) return Bad(key, "is not an object"), nullptr;
    return v;
  }
  void Bad(std::string_view key, std::string_view why) {
    if (status_.ok()) {
      status_ = Status(Code::kCorruption,
                       what_ + ": field '" + std::string(key) + "' " + std::string(why));
    }
  }
  const Status& status() const { return status_; }

 private:
  bool Has(const char* key) const { return j_.contains(key) && !j_.at(key).is_null(); }
  const json* Find(const char* key) {
    if (!status_.ok()) return nullptr;
    if (!j_.contains(key)) return Bad(key, "is missing"), nullptr;
    return &j_.at(key);
  }

  const json& j_;
  std::string what_;
  Status status_;
};

Result<json> ParseObject(std::string_view text, std::string_view what) {
  json j = json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return Error(Code::kCorruption, std::string(what) + " is not a JSON object");
  }
  return j;
}

Status CheckFormat(const json& j, std::string_view what) {
  if (!j.contains("format") || !j.at("format").is_number_unsigned()) {
    return Status(Code::kCorruption, std::string(what) + ": no format number");
  }
  const auto format = j.at("format").get<uint64_t>();
  if (format > kStoreFormat) {
    return Status(Code::kVersionTooNew, std::string(what) + " has format " +
                                            std::to_string(format) + "; this lms reads up to " +
                                            std::to_string(kStoreFormat));
  }
  return Status::Ok();
}

json OptionalInt(const std::optional<int64_t>& v) {
  return v ? json(*v) : json(nullptr);
}

std::string UtcStamp(int64_t t) {
  std::time_t tt = static_cast<std::time_t>(t);
  std::tm tm{};
  gmtime_r(&tt, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y%m%dT%H%M%SZ", &tm);
  return buf;
}

}  // namespace

bool IsPersistentHandle(int64_t handle) {
  // TPM2_PERSISTENT_FIRST..LAST; the owner's range (TCG Handles spec: 0x81000000-0x817FFFFF).
  return handle >= 0x81000000LL && handle <= 0x817fffffLL;
}

std::string_view KeyTypeName(KeyType type) {
  switch (type) {
    case KeyType::kMrk:
      return "mrk";
    case KeyType::kEccSign:
      return "ecc-sign";
    case KeyType::kRsaSign:
      return "rsa-sign";
    case KeyType::kRsaDecrypt:
      return "rsa-decrypt";
    case KeyType::kSealed:
      return "sealed";
    case KeyType::kEccApp:
      return "ecc-app";
    case KeyType::kRsaApp:
      return "rsa-app";
  }
  return "unknown";
}

Result<KeyType> KeyTypeFromName(std::string_view name) {
  for (KeyType t : {KeyType::kMrk, KeyType::kEccSign, KeyType::kRsaSign, KeyType::kRsaDecrypt,
                    KeyType::kSealed, KeyType::kEccApp, KeyType::kRsaApp}) {
    if (KeyTypeName(t) == name) return t;
  }
  return Error(Code::kInvalidArgument, "unknown key type '" + std::string(name) + "'");
}

std::string_view CustodyModeName(CustodyMode mode) {
  return mode == CustodyMode::kEscrow ? "escrow" : "recovery-code";
}

Result<CustodyMode> CustodyModeFromName(std::string_view name) {
  for (CustodyMode m : {CustodyMode::kRecoveryCode, CustodyMode::kEscrow}) {
    if (CustodyModeName(m) == name) return m;
  }
  return Error(Code::kInvalidArgument, "unknown custody mode '" + std::string(name) + "'");
}

std::string KeyRecordToJson(const KeyRecord& k) {
  json j = {{"format", kStoreFormat},
            {"id", k.id},
            {"label", k.label},
            {"type", KeyTypeName(k.type)},
            {"parent", k.parent},
            {"migratable", k.migratable},
            {"origin", k.origin},
            {"created", k.created},
            {"backed_up_at", OptionalInt(k.backed_up_at)},
            {"name", HexEncode(k.name)},
            {"public", Base64Encode(k.public_area)},
            {"private", Base64Encode(k.private_area)}};
  if (!k.certificate.empty()) j["certificate"] = Base64Encode(k.certificate);
  return j.dump(2) + "\n";
}

Result<KeyRecord> KeyRecordFromJson(std::string_view text, std::string_view what) {
  TPMMA_ASSIGN_OR_RETURN(json j, ParseObject(text, what));
  TPMMA_RETURN_IF_ERROR(CheckFormat(j, what));
  Fields f(j, what);
  KeyRecord k;
  k.id = f.Str("id");
  k.label = f.Str("label");
  const std::string type = f.Str("type");
  k.parent = f.Str("parent");
  k.migratable = f.Bool("migratable");
  k.origin = f.Str("origin");
  k.created = f.Int("created");
  k.backed_up_at = f.OptInt("backed_up_at");
  k.name = f.Hex("name");
  k.public_area = f.Base64("public");
  k.private_area = f.Base64("private");
  if (f.OptStr("certificate")) k.certificate = f.Base64("certificate");
  if (!f.status().ok()) return Error(f.status());
  auto t = KeyTypeFromName(type);
  if (!t) return Error(Code::kCorruption, std::string(what) + ": unknown key type '" + type + "'");
  k.type = *t;
  if (!schema::IsCanonicalUuid(k.id)) {
    return Error(Code::kCorruption, std::string(what) + ": id is not a UUID");
  }
  return k;
}

std::string StoreStateToJson(const StoreState& s) {
  const InnerKeyCustody& c = s.custody;
  json custody = {{"mode", CustodyModeName(c.mode)}};
  if (c.mode == CustodyMode::kEscrow) {
    custody["escrow_key_id"] = c.escrow_key_id;
    custody["escrow_public"] = Base64Encode(c.escrow_public);
  } else {
    custody["kdf"] = c.kdf;
    custody["salt"] = Base64Encode(c.salt);
    custody["n"] = c.n;
    custody["r"] = c.r;
    custody["p"] = c.p;
    custody["verifier"] = Base64Encode(c.verifier);
  }
  custody["sealed_public"] = Base64Encode(c.sealed_public);
  custody["sealed_private"] = Base64Encode(c.sealed_private);
  json j = {
      {"format", kStoreFormat},
      {"initialized_at", s.initialized_at},
      {"srk", {{"handle", s.srk_handle}, {"alg", s.srk_alg}, {"name", HexEncode(s.srk_name)}}},
      {"mrk_id", s.mrk_id},
      {"ma_key", {{"public", Base64Encode(s.ma_key_public)}, {"name", HexEncode(s.ma_key_name)}}},
      {"custody", custody},
      {"last_backup_at", OptionalInt(s.last_backup_at)},
      {"last_backup_package_id",
       s.last_backup_package_id ? json(*s.last_backup_package_id) : json(nullptr)}};
  // Written only when set, so that a store without them reads (and writes) as before.
  if (s.mrk_handle != 0) j["mrk_handle"] = s.mrk_handle;
  if (!s.pkcs11_sha256.empty()) j["pkcs11_sha256"] = HexEncode(s.pkcs11_sha256);
  if (!s.policy_key_public.empty()) {
    j["ma_key"]["policy_key"] = Base64Encode(s.policy_key_public);
    j["ma_key"]["approval"] = Base64Encode(s.ma_key_approval);
  }
  return j.dump(2) + "\n";
}

Result<StoreState> StoreStateFromJson(std::string_view text, std::string_view what) {
  TPMMA_ASSIGN_OR_RETURN(json j, ParseObject(text, what));
  TPMMA_RETURN_IF_ERROR(CheckFormat(j, what));
  Fields f(j, what);
  StoreState s;
  s.initialized_at = f.Int("initialized_at");
  s.mrk_id = f.Str("mrk_id");
  const std::optional<int64_t> mrk_handle = f.OptInt("mrk_handle");  // absent before issue #11
  s.last_backup_at = f.OptInt("last_backup_at");
  s.last_backup_package_id = f.OptStr("last_backup_package_id");
  if (f.OptStr("pkcs11_sha256")) s.pkcs11_sha256 = f.Hex("pkcs11_sha256");
  const json* srk = f.Object("srk");
  const json* ma = f.Object("ma_key");
  const json* custody = f.Object("custody");
  if (!f.status().ok()) return Error(f.status());
  const std::string srk_what = std::string(what) + " srk";
  Fields fs(*srk, srk_what);
  const int64_t handle = fs.Int("handle");
  s.srk_alg = fs.Str("alg");
  s.srk_name = fs.Hex("name");
  if (!fs.status().ok()) return Error(fs.status());
  if (handle <= 0 || handle > 0xffffffffLL) {
    return Error(Code::kCorruption, srk_what + ": bad handle");
  }
  s.srk_handle = static_cast<uint32_t>(handle);
  if (mrk_handle) {
    if (!IsPersistentHandle(*mrk_handle)) {
      return Error(Code::kCorruption,
                   std::string(what) + ": mrk_handle is not a persistent handle");
    }
    s.mrk_handle = static_cast<uint32_t>(*mrk_handle);
  }
  const std::string ma_what = std::string(what) + " ma_key";
  Fields fm(*ma, ma_what);
  s.ma_key_public = fm.Base64("public");
  s.ma_key_name = fm.Hex("name");
  if (fm.OptStr("policy_key")) {  // absent before issue #16, and for bound MRKs
    s.policy_key_public = fm.Base64("policy_key");
    s.ma_key_approval = fm.Base64("approval");
  }
  if (!fm.status().ok()) return Error(fm.status());
  const std::string c_what = std::string(what) + " custody";
  Fields fc(*custody, c_what);
  const std::string mode = fc.Str("mode");
  if (!fc.status().ok()) return Error(fc.status());
  auto m = CustodyModeFromName(mode);
  if (!m) {
    return Error(Code::kUnsupported, c_what + ": custody mode '" + mode + "' is not supported");
  }
  InnerKeyCustody& c = s.custody;
  c.mode = *m;
  int64_t n = 0, r = 0, p = 0;
  if (c.mode == CustodyMode::kEscrow) {
    c.escrow_key_id = fc.Str("escrow_key_id");
    c.escrow_public = fc.Base64("escrow_public");
  } else {
    c.kdf = fc.Str("kdf");
    c.salt = fc.Base64("salt");
    n = fc.Int("n");
    r = fc.Int("r");
    p = fc.Int("p");
    c.verifier = fc.Base64("verifier");
  }
  c.sealed_public = fc.Base64("sealed_public");
  c.sealed_private = fc.Base64("sealed_private");
  if (!fc.status().ok()) return Error(fc.status());
  if (c.mode == CustodyMode::kEscrow) {
    if (c.escrow_key_id.empty() || c.escrow_public.empty()) {
      return Error(Code::kCorruption, c_what + ": escrow custody without the escrow key");
    }
    return s;
  }
  if (n <= 0 || r <= 0 || p <= 0 || r > 0xffffffffLL || p > 0xffffffffLL) {
    return Error(Code::kCorruption, c_what + ": bad scrypt parameters");
  }
  c.n = static_cast<uint64_t>(n);
  c.r = static_cast<uint32_t>(r);
  c.p = static_cast<uint32_t>(p);
  return s;
}

std::string StoreConfigToJson(const StoreConfig& c) {
  json j = {{"format", kStoreFormat},
            {"ma_url", c.ma_url},
            {"ma_ca", c.ma_ca},
            {"ek_intermediates", c.ek_intermediates}};
  if (!c.ek_cert.empty()) j["ek_cert"] = c.ek_cert;
  if (!c.owner_label.empty()) j["owner_label"] = c.owner_label;
  return j.dump(2) + "\n";
}

Result<StoreConfig> StoreConfigFromJson(std::string_view text, std::string_view what) {
  TPMMA_ASSIGN_OR_RETURN(json j, ParseObject(text, what));
  TPMMA_RETURN_IF_ERROR(CheckFormat(j, what));
  Fields f(j, what);
  StoreConfig c;
  c.ma_url = f.OptStr("ma_url").value_or("");
  c.ma_ca = f.OptStr("ma_ca").value_or("");
  c.ek_cert = f.OptStr("ek_cert").value_or("");
  c.owner_label = f.OptStr("owner_label").value_or("");
  if (!f.status().ok()) return Error(f.status());
  if (j.contains("ek_intermediates") && !j.at("ek_intermediates").is_null()) {
    const json& list = j.at("ek_intermediates");
    if (!list.is_array()) {
      return Error(Code::kCorruption, std::string(what) + ": ek_intermediates is not a list");
    }
    for (const json& e : list) {
      if (!e.is_string()) {
        return Error(Code::kCorruption,
                     std::string(what) + ": ek_intermediates holds something not a file name");
      }
      c.ek_intermediates.push_back(e.get<std::string>());
    }
  }
  return c;
}

std::string MaStateToJson(const MaState& m) {
  json signers = json::array();
  for (const KnownSigner& k : m.signers) {
    signers.push_back({{"platform_id", k.platform_id}, {"public", Base64Encode(k.public_area)}});
  }
  json j = {
      {"format", kStoreFormat},
      {"platform_id", m.platform_id},
      {"authenticated_at", m.authenticated_at},
      {"ak",
       {{"public", Base64Encode(m.ak_public)},
        {"private", Base64Encode(m.ak_private)},
        {"srk_name", HexEncode(m.ak_srk_name)}}},
      {"signing_key",
       {{"public", Base64Encode(m.signing_public)}, {"private", Base64Encode(m.signing_private)}}},
      {"signers", signers}};
  return j.dump(2) + "\n";
}

Result<MaState> MaStateFromJson(std::string_view text, std::string_view what) {
  TPMMA_ASSIGN_OR_RETURN(json j, ParseObject(text, what));
  TPMMA_RETURN_IF_ERROR(CheckFormat(j, what));
  Fields f(j, what);
  MaState m;
  m.platform_id = f.Str("platform_id");
  m.authenticated_at = f.Int("authenticated_at");
  const json* ak = f.Object("ak");
  const json* sk = f.Object("signing_key");
  if (!f.status().ok()) return Error(f.status());
  Fields fa(*ak, std::string(what) + " ak");
  m.ak_public = fa.Base64("public");
  m.ak_private = fa.Base64("private");
  m.ak_srk_name = fa.Hex("srk_name");
  if (!fa.status().ok()) return Error(fa.status());
  Fields fs(*sk, std::string(what) + " signing_key");
  m.signing_public = fs.Base64("public");
  m.signing_private = fs.Base64("private");
  if (!fs.status().ok()) return Error(fs.status());
  if (!j.contains("signers") || !j.at("signers").is_array()) {
    return Error(Code::kCorruption, std::string(what) + ": signers is not a list");
  }
  for (const json& e : j.at("signers")) {
    if (!e.is_object()) return Error(Code::kCorruption, std::string(what) + ": bad signer");
    Fields fk(e, std::string(what) + " signers[]");
    KnownSigner k;
    k.platform_id = fk.Str("platform_id");
    k.public_area = fk.Base64("public");
    if (!fk.status().ok()) return Error(fk.status());
    m.signers.push_back(std::move(k));
  }
  return m;
}

KeyStore::KeyStore(std::string dir, Env* env) : dir_(std::move(dir)), env_(env) {
  while (dir_.size() > 1 && dir_.back() == '/') dir_.pop_back();
}

KeyStore::KeyStore(KeyStore&& o) noexcept {
  *this = std::move(o);
}

KeyStore& KeyStore::operator=(KeyStore&& o) noexcept {
  if (this != &o) {
    Unlock();
    dir_ = std::move(o.dir_);
    env_ = o.env_;
    lock_fd_ = std::exchange(o.lock_fd_, -1);
  }
  return *this;
}

KeyStore::~KeyStore() {
  Unlock();
}

Status KeyStore::CreateLayout() {
  TPMMA_RETURN_IF_ERROR(env_->CreateDirs(dir_ + "/keys", kDirMode));
  return Status::Ok();
}

bool KeyStore::Initialized() const {
  return env_->FileExists(dir_ + "/store.json");
}

Status KeyStore::Lock(int timeout_ms) {
  if (lock_fd_ >= 0) return Status::Ok();
  const std::string path = dir_ + "/.lock";
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, kFileMode);
  if (fd < 0) {
    return Status(Code::kIoError, "cannot open " + path + ": " + std::strerror(errno));
  }
  for (int waited = 0;; waited += 50) {
    if (::flock(fd, LOCK_EX | LOCK_NB) == 0) break;
    if (errno != EWOULDBLOCK || waited >= timeout_ms) {
      ::close(fd);
      return Status(Code::kUnavailable,
                    "another lms is changing the store " + dir_ + "; try again when it is done");
    }
    ::usleep(50 * 1000);
  }
  lock_fd_ = fd;
  return Status::Ok();
}

void KeyStore::Unlock() {
  if (lock_fd_ >= 0) {
    ::flock(lock_fd_, LOCK_UN);
    ::close(lock_fd_);
    lock_fd_ = -1;
  }
}

Result<StoreState> KeyStore::ReadState() const {
  const std::string path = dir_ + "/store.json";
  if (!env_->FileExists(path)) {
    return Error(Code::kNotFound,
                 "the key store " + dir_ + " is not initialised (run `lms init` first)");
  }
  TPMMA_ASSIGN_OR_RETURN(Bytes text, env_->ReadFile(path, kMaxFileBytes));
  return StoreStateFromJson(ToString(text), path);
}

Status KeyStore::WriteState(const StoreState& state) {
  return env_->WriteFileAtomic(dir_ + "/store.json", View(StoreStateToJson(state)), kFileMode);
}

Result<StoreConfig> KeyStore::ReadConfig() const {
  const std::string path = dir_ + "/config.json";
  if (!env_->FileExists(path)) return StoreConfig{};
  TPMMA_ASSIGN_OR_RETURN(Bytes text, env_->ReadFile(path, kMaxFileBytes));
  return StoreConfigFromJson(ToString(text), path);
}

Status KeyStore::WriteConfig(const StoreConfig& config) {
  return env_->WriteFileAtomic(dir_ + "/config.json", View(StoreConfigToJson(config)), kFileMode);
}

Result<MaState> KeyStore::ReadMaState() const {
  const std::string path = dir_ + "/ma.json";
  if (!env_->FileExists(path)) return MaState{};
  TPMMA_ASSIGN_OR_RETURN(Bytes text, env_->ReadFile(path, kMaxFileBytes));
  return MaStateFromJson(ToString(text), path);
}

Status KeyStore::WriteMaState(const MaState& state) {
  return env_->WriteFileAtomic(dir_ + "/ma.json", View(MaStateToJson(state)), kFileMode);
}

std::string KeyStore::KeyPath(std::string_view id) const {
  return dir_ + "/keys/" + std::string(id) + ".json";
}

Result<std::vector<KeyRecord>> KeyStore::ListKeys() const {
  std::vector<KeyRecord> out;
  const std::string keys_dir = dir_ + "/keys";
  if (!env_->FileExists(keys_dir)) return out;
  TPMMA_ASSIGN_OR_RETURN(std::vector<std::string> names, env_->ListDir(keys_dir));
  for (const std::string& name : names) {
    // Only <uuid>.json: temp files of an interrupted atomic write are not keys.
    if (name.size() != 41 || !name.ends_with(".json") ||
        !schema::IsCanonicalUuid(std::string_view(name).substr(0, 36))) {
      continue;
    }
    const std::string path = keys_dir + "/" + name;
    TPMMA_ASSIGN_OR_RETURN(Bytes text, env_->ReadFile(path, kMaxFileBytes));
    TPMMA_ASSIGN_OR_RETURN(KeyRecord k, KeyRecordFromJson(ToString(text), path));
    if (k.id != name.substr(0, 36)) {
      return Error(Code::kCorruption,
                   path + ": holds key " + k.id + ", not the one it is named for");
    }
    out.push_back(std::move(k));
  }
  std::sort(out.begin(), out.end(), [](const KeyRecord& a, const KeyRecord& b) {
    return std::tie(a.created, a.id) < std::tie(b.created, b.id);
  });
  return out;
}

Result<KeyRecord> KeyStore::GetKey(std::string_view id) const {
  if (!schema::IsCanonicalUuid(id)) {
    return Error(Code::kInvalidArgument, "'" + std::string(id) + "' is not a key id (a UUID)");
  }
  const std::string path = KeyPath(id);
  if (!env_->FileExists(path)) {
    return Error(Code::kNotFound, "no key " + std::string(id) + " in " + dir_);
  }
  TPMMA_ASSIGN_OR_RETURN(Bytes text, env_->ReadFile(path, kMaxFileBytes));
  TPMMA_ASSIGN_OR_RETURN(KeyRecord k, KeyRecordFromJson(ToString(text), path));
  if (k.id != id) return Error(Code::kCorruption, path + ": holds key " + k.id);
  return k;
}

Result<KeyRecord> KeyStore::FindKey(std::string_view id_or_label) const {
  std::string lowered(id_or_label);
  std::transform(lowered.begin(), lowered.end(), lowered.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  if (schema::IsCanonicalUuid(lowered)) return GetKey(lowered);
  TPMMA_ASSIGN_OR_RETURN(std::vector<KeyRecord> keys, ListKeys());
  for (KeyRecord& k : keys) {
    if (k.label == id_or_label) return std::move(k);
  }
  return Error(Code::kNotFound, "no key with id or label '" + std::string(id_or_label) + "' in " +
                                    dir_ + " (`lms keys` lists them)");
}

Status KeyStore::PutKey(const KeyRecord& key) {
  if (!schema::IsCanonicalUuid(key.id)) {
    return Status(Code::kInvalidArgument, "key id is not a UUID");
  }
  return env_->WriteFileAtomic(KeyPath(key.id), View(KeyRecordToJson(key)), kFileMode);
}

Result<std::string> KeyStore::Retire() {
  const std::string stamp = UtcStamp(env_->NowUnixSeconds());
  std::string target;
  for (int n = 0;; ++n) {
    target = dir_ + "/retired/" + stamp + "-" + std::to_string(n);
    if (!env_->FileExists(target)) break;
  }
  TPMMA_RETURN_IF_ERROR(env_->CreateDirs(target + "/keys", kDirMode));
  std::vector<std::pair<std::string, std::string>> moves;  // from, to
  const std::string keys_dir = dir_ + "/keys";
  if (env_->FileExists(keys_dir)) {
    TPMMA_ASSIGN_OR_RETURN(std::vector<std::string> names, env_->ListDir(keys_dir));
    for (const std::string& name : names) {
      if (name.ends_with(".json"))
        moves.emplace_back(keys_dir + "/" + name, target + "/keys/" + name);
    }
  }
  // store.json last: until it moves, the store still reads as initialised.
  if (env_->FileExists(dir_ + "/store.json")) {
    moves.emplace_back(dir_ + "/store.json", target + "/store.json");
  }
  for (const auto& [from, to] : moves) {
    TPMMA_ASSIGN_OR_RETURN(Bytes content, env_->ReadFile(from, kMaxFileBytes));
    TPMMA_RETURN_IF_ERROR(env_->WriteFileAtomic(to, content, kFileMode));
    TPMMA_RETURN_IF_ERROR(env_->RemoveFile(from));
  }
  return target;
}

}  // namespace tpmma::lms
