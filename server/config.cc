// SPDX-License-Identifier: GPL-2.0-or-later
#include "server/config.h"

#include <arpa/inet.h>
#include <unistd.h>

#include <toml++/toml.h>
#include <algorithm>
#include <filesystem>
#include <set>
#include <sstream>

#include <fmt/format.h>

#include "common/env.h"
#include "common/file_mode.h"
#include "server/toml_guard.h"

namespace tpmma::server {
namespace {

namespace fs = std::filesystem;

// A config file is a few KB; anything much larger is a mistake (or an attack on the parser).
constexpr size_t kMaxConfigBytes = 1 << 20;

size_t EditDistance(std::string_view a, std::string_view b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] != b[j - 1])});
    }
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

std::string Describe(const toml::node& node) {
  switch (node.type()) {
    case toml::node_type::string:
      return fmt::format("\"{}\"", *node.value<std::string>());
    case toml::node_type::integer:
      return fmt::format("{}", *node.value<int64_t>());
    case toml::node_type::floating_point:
      return fmt::format("{}", *node.value<double>());
    case toml::node_type::boolean:
      return *node.value<bool>() ? "true" : "false";
    case toml::node_type::table:
      return "a table";
    case toml::node_type::array:
      return "an array";
    default:
      return "a date/time";
  }
}

// Reads one section.key at a time, remembering every key it was asked about so that
// whatever is left in the file afterwards is, by definition, unknown (a typo must not
// silently fall back to a default).
class Reader {
 public:
  Reader(const toml::table& root, std::string base_dir)
      : root_(root), base_dir_(std::move(base_dir)) {}

  template <typename T>
  void Int(std::string_view sec, std::string_view key, T& out, int64_t lo, int64_t hi) {
    const toml::node* node = Find(sec, key);
    if (node == nullptr) return;
    std::optional<int64_t> v = node->is_integer() ? node->value<int64_t>() : std::nullopt;
    if (!v || *v < lo || *v > hi) {
      Fail(fmt::format("{}.{} must be an integer between {} and {}, got {}", sec, key, lo, hi,
                       Describe(*node)));
      return;
    }
    out = static_cast<T>(*v);
  }

  void Bool(std::string_view sec, std::string_view key, bool& out) {
    const toml::node* node = Find(sec, key);
    if (node == nullptr) return;
    if (!node->is_boolean()) {
      Fail(fmt::format("{}.{} must be true or false, got {}", sec, key, Describe(*node)));
      return;
    }
    out = *node->value<bool>();
  }

  // `what` describes the allowed values for the error message.
  template <typename Pred>
  void String(std::string_view sec, std::string_view key, std::string& out, Pred valid,
              std::string_view what) {
    const toml::node* node = Find(sec, key);
    if (node == nullptr) return;
    if (!node->is_string() || !valid(*node->value<std::string>())) {
      Fail(fmt::format("{}.{} must be {}, got {}", sec, key, what, Describe(*node)));
      return;
    }
    out = *node->value<std::string>();
  }

  void Path(std::string_view sec, std::string_view key, std::string& out) {
    std::string raw;
    bool present = Find(sec, key) != nullptr;
    String(
        sec, key, raw, [](const std::string& s) { return !s.empty() && IsClean(s); },
        "a non-empty path");
    if (present && !raw.empty()) out = Resolve(raw);
  }

  void PathList(std::string_view sec, std::string_view key, std::vector<std::string>& out) {
    const toml::node* node = Find(sec, key);
    if (node == nullptr) return;
    const toml::array* arr = node->as_array();
    std::vector<std::string> paths;
    bool ok = arr != nullptr;
    if (ok) {
      for (const toml::node& item : *arr) {
        if (!item.is_string() || item.value<std::string>()->empty() ||
            !IsClean(*item.value<std::string>())) {
          ok = false;
          break;
        }
        paths.push_back(Resolve(*item.value<std::string>()));
      }
    }
    if (!ok) {
      Fail(fmt::format("{}.{} must be an array of non-empty paths, got {}", sec, key,
                       Describe(*node)));
      return;
    }
    out = std::move(paths);
  }

  // An array of strings, each `valid`; `what` describes one element.
  template <typename Pred>
  void StringList(std::string_view sec, std::string_view key, std::vector<std::string>& out,
                  Pred valid, std::string_view what) {
    const toml::node* node = Find(sec, key);
    if (node == nullptr) return;
    const toml::array* arr = node->as_array();
    std::vector<std::string> items;
    for (size_t i = 0; arr != nullptr && i < arr->size(); ++i) {
      const toml::node& item = *arr->get(i);
      if (!item.is_string() || !valid(*item.value<std::string>())) {
        Fail(fmt::format("{}.{}[{}] must be {}, got {}", sec, key, i, what, Describe(item)));
        return;
      }
      items.push_back(*item.value<std::string>());
    }
    if (arr == nullptr) {
      Fail(fmt::format("{}.{} must be an array of {}, got {}", sec, key, what, Describe(*node)));
      return;
    }
    out = std::move(items);
  }

  // A key read by the caller in its own way (an array of tables); counts as known.
  const toml::node* Node(std::string_view sec, std::string_view key) { return Find(sec, key); }

  void Require(std::string_view sec, std::string_view key, const std::string& value) {
    if (value.empty() && !present_.contains(fmt::format("{}.{}", sec, key))) {
      Fail(fmt::format("{}.{} is required", sec, key));
    }
  }

  void Fail(std::string message) { errors_.push_back(std::move(message)); }

  // Everything in the file that no Find() asked about.
  void CheckUnknown() {
    for (const auto& [sec_key, sec_node] : root_) {
      std::string sec(sec_key.str());
      if (!sections_.contains(sec)) {
        Fail(fmt::format("unknown section [{}]{}", sec, Suggest(sec, sections_)));
        continue;
      }
      const toml::table* table = sec_node.as_table();
      if (table == nullptr) {
        Fail(fmt::format("{} must be a table ([{}]), got {}", sec, sec, Describe(sec_node)));
        continue;
      }
      for (const auto& [key, node] : *table) {
        std::string full = fmt::format("{}.{}", sec, key.str());
        if (!known_.contains(full)) {
          Fail(fmt::format("unknown key {}{}", full, Suggest(full, known_)));
        }
      }
    }
  }

  const std::vector<std::string>& errors() const { return errors_; }

 private:
  static bool IsClean(const std::string& s) {
    return std::none_of(s.begin(), s.end(), [](unsigned char c) { return c < 0x20; });
  }

  static std::string Suggest(const std::string& name, const std::set<std::string>& known) {
    std::string best;
    size_t best_d = 3;  // only close misspellings; otherwise the hint is noise
    for (const std::string& k : known) {
      size_t d = EditDistance(name, k);
      if (d < best_d) best_d = d, best = k;
    }
    return best.empty() ? "" : fmt::format(" (did you mean {}?)", best);
  }

  const toml::node* Find(std::string_view sec, std::string_view key) {
    sections_.insert(std::string(sec));
    known_.insert(fmt::format("{}.{}", sec, key));
    const toml::node* node = root_.get(sec);
    if (node == nullptr || !node->is_table()) return nullptr;  // CheckUnknown reports it
    const toml::node* v = node->as_table()->get(key);
    if (v != nullptr) present_.insert(fmt::format("{}.{}", sec, key));
    return v;
  }

  std::string Resolve(const std::string& p) const {
    fs::path path(p);
    if (path.is_relative()) path = fs::path(base_dir_) / path;
    return path.lexically_normal().string();
  }

  const toml::table& root_;
  std::string base_dir_;
  std::set<std::string> sections_;
  std::set<std::string> known_;
  std::set<std::string> present_;
  std::vector<std::string> errors_;
};

bool IsIpAddress(const std::string& s) {
  unsigned char buf[16];
  return inet_pton(AF_INET, s.c_str(), buf) == 1 || inet_pton(AF_INET6, s.c_str(), buf) == 1;
}

bool IsKeyId(const std::string& s) {
  return !s.empty() && s.size() <= 64 && std::all_of(s.begin(), s.end(), [](unsigned char c) {
    return std::isalnum(c) || c == '-' || c == '_' || c == '.';
  });
}

bool IsLogLevel(const std::string& s) {
  return s == "trace" || s == "debug" || s == "info" || s == "warn" || s == "error";
}

Status CheckReadable(std::string_view key, const std::string& path) {
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) {
    return Status(Code::kInvalidArgument, fmt::format("{}: {} is not a file", key, path));
  }
  if (::access(path.c_str(), R_OK) != 0) {
    return Status(Code::kInvalidArgument, fmt::format("{}: {} is not readable", key, path));
  }
  return Status::Ok();
}

// The TPM-key block (TpmKeyConfig) of section `sec`: [ma], [escrow], or one
// [[escrow.retired]] read through a Reader whose "escrow" section is that table.
// `allow_none`: whether custody may be "none" (no key; [escrow] only).
void ReadTpmKey(Reader& r, std::string_view sec, TpmKeyConfig& k, bool allow_none) {
  r.String(
      sec, "custody", k.custody,
      [&](const std::string& v) {
        return (v == "none" && allow_none) || v == "software" || v == "tpm";
      },
      allow_none ? "\"none\", \"software\" or \"tpm\"" : "\"software\" or \"tpm\"");
  r.String(sec, "key_id", k.key_id, IsKeyId, "1 to 64 characters of A-Z a-z 0-9 . _ -");
  r.Path(sec, "private_key", k.private_key);
  r.Path(sec, "certificate", k.certificate);
  r.String(
      sec, "tpm_tcti", k.tpm_tcti,
      [](const std::string& v) { return !v.empty() && v.size() <= 256; },
      "a TCTI string such as \"device:/dev/tpmrm0\"");
  r.Path(sec, "tpm_public", k.tpm_public);
  r.Path(sec, "tpm_private", k.tpm_private);
  r.Int(sec, "tpm_parent", k.tpm_parent, 0x81000000u, 0x81FFFFFFu);
}

// What a TPM-key block must name for its custody: the TPM blobs and where the TPM is, or
// the key file; and the certificate, unless there is no key.
void RequireTpmKey(Reader& r, std::string_view sec, const TpmKeyConfig& k) {
  if (k.custody == "tpm") {
    r.Require(sec, "tpm_tcti", k.tpm_tcti);
    r.Require(sec, "tpm_public", k.tpm_public);
    r.Require(sec, "tpm_private", k.tpm_private);
  } else if (k.custody == "software") {
    r.Require(sec, "private_key", k.private_key);
  }
  if (k.custody != "none") r.Require(sec, "certificate", k.certificate);
}

// [policy]: the policy-signing key's public half and its approval of [ma]'s key, together.
void ReadPolicy(Reader& r, Config& c) {
  r.Path("policy", "public_key", c.policy_public_key);
  r.Path("policy", "approval", c.policy_approval);
  ReadTpmKey(r, "policy", c.policy_signer, /*allow_none=*/true);
  if (c.policy_signer.custody == "software") {
    r.Fail("policy.custody: \"none\" (the PEM, kept offline) or \"tpm\"");
  }
  if (c.policy_signer.custody == "tpm") {  // a signing key: no certificate
    r.Require("policy", "tpm_tcti", c.policy_signer.tpm_tcti);
    r.Require("policy", "tpm_public", c.policy_signer.tpm_public);
    r.Require("policy", "tpm_private", c.policy_signer.tpm_private);
  }
  if (c.policy_public_key.empty() != c.policy_approval.empty()) {
    r.Fail("policy.public_key and policy.approval go together: set both, or neither");
  }
}

// An escrow key ([escrow] or a retired one) must not be the MA key under another name.
void CheckEscrowKeyApart(Reader& r, const TpmKeyConfig& k, const TpmKeyConfig& ma) {
  if (k.custody == "none") return;
  if (k.key_id == ma.key_id) {
    r.Fail("escrow.key_id must differ from ma.key_id (GetMAKey tells them apart by id)");
  }
  if (!k.private_key.empty() && k.private_key == ma.private_key) {
    r.Fail(
        "escrow.private_key must be a different file from ma.private_key (one stolen key "
        "file must not open a package: docs/operations.md, Inner-key custody)");
  }
}

// [[escrow.retired]] (escrow keys `ma-admin escrow rotate` replaced) or [[ma.retiring]]
// (storage keys `ma-admin ma-key rotate` replaced): `sec`.`list`. Each entry is read like
// [sec] but has no defaults (custody and key_id are required); its errors say which entry
// they are about. `ids`: the key ids taken so far, which no entry may reuse.
std::vector<TpmKeyConfig> ReadKeyList(const toml::node& node, std::string_view sec,
                                      std::string_view list, const std::string& base_dir,
                                      const Config& c, std::set<std::string> ids, Reader& r) {
  std::vector<TpmKeyConfig> out;
  const toml::array* arr = node.as_array();
  if (arr == nullptr || !arr->is_array_of_tables()) {
    r.Fail(fmt::format("{0}.{1} must be an array of tables ([[{0}.{1}]]), got {2}", sec, list,
                       Describe(node)));
    return out;
  }
  for (size_t i = 0; i < arr->size(); ++i) {
    toml::table wrapper;
    wrapper.insert(sec, *arr->get(i)->as_table());
    Reader sub(wrapper, base_dir);
    TpmKeyConfig k;
    ReadTpmKey(sub, sec, k, /*allow_none=*/false);
    sub.Require(sec, "custody", std::string());
    sub.Require(sec, "key_id", std::string());
    RequireTpmKey(sub, sec, k);
    if (sec == "escrow") CheckEscrowKeyApart(sub, k, c.ma);
    sub.CheckUnknown();
    if (!ids.insert(k.key_id).second && !k.key_id.empty()) {
      sub.Fail(fmt::format("key_id \"{}\" is used twice among the {} keys", k.key_id, sec));
    }
    for (const std::string& e : sub.errors()) r.Fail(fmt::format("{}.{}[{}]: {}", sec, list, i, e));
    out.push_back(std::move(k));
  }
  return out;
}

// The MA's keys: [ma], [[ma.retiring]], [escrow], [[escrow.retired]] and [policy].
void ReadKeys(Reader& r, const std::string& base_dir, Config& c) {
  ReadTpmKey(r, "ma", c.ma, /*allow_none=*/false);
  ReadTpmKey(r, "escrow", c.escrow, /*allow_none=*/true);
  RequireTpmKey(r, "ma", c.ma);
  RequireTpmKey(r, "escrow", c.escrow);
  CheckEscrowKeyApart(r, c.escrow, c.ma);
  if (const toml::node* retired = r.Node("escrow", "retired")) {
    c.escrow_retired =
        ReadKeyList(*retired, "escrow", "retired", base_dir, c, {c.escrow.key_id}, r);
  }
  if (const toml::node* retiring = r.Node("ma", "retiring")) {
    // GetMAKey tells every key apart by its id: none may be an escrow key's.
    std::set<std::string> ids = {c.ma.key_id};
    if (c.escrow.custody != "none") ids.insert(c.escrow.key_id);
    for (const TpmKeyConfig& k : c.escrow_retired) ids.insert(k.key_id);
    c.ma_retiring = ReadKeyList(*retiring, "ma", "retiring", base_dir, c, std::move(ids), r);
  }
  ReadPolicy(r, c);
}

}  // namespace

Result<Config> ParseConfig(std::string_view toml_text, const std::string& base_dir,
                           const std::string& origin) {
  // Before toml++ sees the text: some malformed inputs are undefined behaviour in it.
  TPMMA_RETURN_IF_ERROR(CheckTomlAvoidsParserBugs(toml_text, origin));
  toml::table root;
  try {
    root = toml::parse(toml_text, origin);
  } catch (const toml::parse_error& e) {
    const auto& where = e.source().begin;
    return Error(Code::kInvalidArgument,
                 fmt::format("{}:{}:{}: {}", origin, where.line, where.column, e.description()));
  }

  Config c;
  Reader r(root, base_dir);
  r.String("server", "listen_address", c.listen_address, IsIpAddress,
           "an IPv4 or IPv6 address (\"127.0.0.1\", \"::\")");
  r.Int("server", "listen_port", c.listen_port, 0, 65535);
  r.Int("server", "io_threads", c.io_threads, 1, 64);
  r.Int("server", "worker_threads", c.worker_threads, 1, 256);
  r.Int("server", "max_connections", c.max_connections, 1, 100'000);
  r.Int("server", "max_connections_per_peer", c.max_connections_per_peer, 0, 100'000);
  r.Int("server", "max_queued_requests", c.max_queued_requests, 1, 100'000);
  r.Int("server", "shutdown_timeout_ms", c.shutdown_timeout_ms, 0, 600'000);
  r.Int("server", "drain_ms", c.drain_ms, 0, 600'000);
  r.StringList("server", "trusted_proxies", c.trusted_proxies, IsIpAddress,
               "an IPv4 or IPv6 address (the load balancer's source address)");
  r.Int("server", "malloc_arenas", c.malloc_arenas, 0, 256);
  r.Path("tls", "certificate", c.tls_certificate);
  r.Path("tls", "private_key", c.tls_private_key);
  r.Path("tls", "client_ca", c.tls_client_ca);
  r.Bool("tls", "request_client_cert", c.tls_request_client_cert);
  r.Int("limits", "max_header_bytes", c.max_header_bytes, 1024, 1 << 20);
  r.Int("limits", "max_body_bytes", c.max_body_bytes, 1024, 256 << 20);
  r.Int("limits", "max_inflight_bytes", c.max_inflight_bytes, 0, uint64_t{64} << 30);
  r.Int("limits", "read_timeout_ms", c.read_timeout_ms, 100, 600'000);
  r.Int("limits", "idle_timeout_ms", c.idle_timeout_ms, 100, 3'600'000);
  r.Int("limits", "handshake_timeout_ms", c.handshake_timeout_ms, 100, 600'000);
  r.Int("limits", "max_package_bytes", c.max_package_bytes, 1024, 256 << 20);
  r.Int("limits", "max_child_keys", c.max_child_keys, 1, 100'000);
  ReadKeys(r, base_dir, c);
  r.Bool("approvals", "two_person", c.approvals_two_person);
  r.Int("approvals", "max_ttl_s", c.approvals_max_ttl_s, 60, 366 * 86400);
  r.Bool("approvals", "single_use", c.approvals_single_use);
  r.Path("vault", "path", c.vault_path);
  r.String(
      "vault", "url", c.vault_url,
      [](const std::string& v) {
        return !v.empty() &&
               std::none_of(v.begin(), v.end(), [](unsigned char ch) { return ch < 0x20; });
      },
      "a non-empty postgresql:// URL or libpq connection string");
  r.Path("vault", "password_file", c.vault_password_file);
  r.Int("vault", "max_batch", c.vault_max_batch, 1, 4096);
  r.Int("vault", "read_connections", c.vault_read_connections, 1, 64);
  r.Int("vault", "max_deferred_audit", c.vault_max_deferred_audit, 1, 1'000'000);
  r.Int("vault", "deferred_audit_delay_ms", c.vault_deferred_audit_delay_ms, 0, 1000);
  r.PathList("trust", "ek_roots", c.ek_roots);
  r.PathList("trust", "ek_intermediates", c.ek_intermediates);
  r.PathList("trust", "ek_templates", c.ek_templates);
  r.Int("auth", "challenge_ttl_s", c.challenge_ttl_s, 1, 3600);
  r.Int("auth", "session_ttl_s", c.session_ttl_s, 1, 86'400);
  r.Int("auth", "download_nonce_ttl_s", c.download_nonce_ttl_s, 1, 3600);
  r.Int("auth", "max_pending_challenges", c.max_pending_challenges, 1, 1'000'000);
  r.Int("auth", "ek_cache_entries", c.ek_cache_entries, 0, 1'000'000);
  r.String(
      "enrollment", "policy", c.enrollment_policy,
      [](const std::string& v) { return v == "open" || v == "registered" || v == "approve-first"; },
      "\"open\", \"registered\" or \"approve-first\"");
  r.String(
      "audit", "reads", c.audit_reads,
      [](const std::string& v) { return v == "deferred" || v == "durable"; },
      "\"deferred\" or \"durable\"");
  r.Path("audit", "checkpoint_key", c.audit_checkpoint_key);
  r.Path("audit", "checkpoint_dir", c.audit_checkpoint_dir);
  r.Int("audit", "checkpoint_interval_s", c.audit_checkpoint_interval_s, 10, 86'400 * 7);
  r.String("log", "level", c.log_level, IsLogLevel, "one of trace, debug, info, warn, error");
  r.Bool("metrics", "enabled", c.metrics_enabled);
  r.StringList("metrics", "allow", c.metrics_allow, IsIpAddress,
               "an IPv4 or IPv6 address (\"127.0.0.1\", \"::1\")");
  r.Bool("bench", "echo", c.bench_echo);

  r.Require("tls", "certificate", c.tls_certificate);
  r.Require("tls", "private_key", c.tls_private_key);
  if (c.vault_url.empty()) r.Require("vault", "path", c.vault_path);
  if (c.vault_url.empty() && !c.vault_password_file.empty()) {
    r.Fail("vault.password_file is for PostgreSQL: set vault.url too, or remove it");
  }
  if (c.max_inflight_bytes != 0 && c.max_inflight_bytes < c.max_body_bytes) {
    r.Fail(
        fmt::format("limits.max_inflight_bytes ({}) must be 0 or at least limits.max_body_bytes "
                    "({}): a largest request could never be admitted",
                    c.max_inflight_bytes, c.max_body_bytes));
  }
  if (c.max_package_bytes > c.max_body_bytes) {
    r.Fail(fmt::format("limits.max_package_bytes ({}) must not exceed limits.max_body_bytes ({})",
                       c.max_package_bytes, c.max_body_bytes));
  }
  if (c.metrics_enabled && c.metrics_allow.empty()) {
    r.Fail("metrics.allow is empty: no peer could read /metrics (list addresses, or disable it)");
  }
  if (c.audit_checkpoint_key.empty() != c.audit_checkpoint_dir.empty()) {
    r.Fail("audit.checkpoint_key and audit.checkpoint_dir go together: set both, or neither");
  }
  r.CheckUnknown();

  if (!r.errors().empty()) {
    std::string msg = origin + ": " + r.errors().front();
    for (size_t i = 1; i < r.errors().size(); ++i) msg += "; " + r.errors()[i];
    return Error(Code::kInvalidArgument, std::move(msg));
  }
  return c;
}

Result<Config> LoadConfig(const std::string& path) {
  TPMMA_ASSIGN_OR_RETURN(Bytes text, Env::Default()->ReadFile(path, kMaxConfigBytes));
  std::error_code ec;
  fs::path abs = fs::absolute(path, ec);
  if (ec) return Error(Code::kIoError, fmt::format("{}: {}", path, ec.message()));
  std::string_view view(reinterpret_cast<const char*>(text.data()), text.size());
  return ParseConfig(view, abs.parent_path().string(), path);
}

namespace {

// Builds one section's table. toml++ (3.3) drops an integer's hexadecimal flag when a table
// is copied, so tables are only ever moved.
class TableBuilder {
 public:
  TableBuilder& Int(std::string_view key, int64_t v) {
    t_.insert(key, v);
    return *this;
  }
  TableBuilder& Hex(std::string_view key, uint32_t v) {
    t_.insert(key, int64_t{v}, toml::value_flags::format_as_hexadecimal);
    return *this;
  }
  TableBuilder& Bool(std::string_view key, bool v) {
    t_.insert(key, v);
    return *this;
  }
  TableBuilder& Str(std::string_view key, const std::string& v) {
    t_.insert(key, v);
    return *this;
  }
  // An empty optional path is left out rather than written as "" (which ParseConfig refuses).
  TableBuilder& OptStr(std::string_view key, const std::string& v) {
    return v.empty() ? *this : Str(key, v);
  }
  TableBuilder& Array(std::string_view key, const std::vector<std::string>& items) {
    toml::array a;
    for (const std::string& item : items) a.push_back(item);
    t_.insert(key, std::move(a));
    return *this;
  }
  TableBuilder& OptArray(std::string_view key, const std::vector<std::string>& items) {
    return items.empty() ? *this : Array(key, items);
  }
  TableBuilder& Tables(std::string_view key, toml::array&& tables) {
    t_.insert(key, std::move(tables));
    return *this;
  }
  toml::table Take() { return std::move(t_); }

 private:
  toml::table t_;
};

// The writer's half of ReadTpmKey: the same keys, the TPM ones only where they are set.
toml::table TpmKeyToml(const TpmKeyConfig& k) {
  TableBuilder b;
  b.Str("custody", k.custody).Str("key_id", k.key_id);
  b.OptStr("private_key", k.private_key).OptStr("certificate", k.certificate);
  b.OptStr("tpm_tcti", k.tpm_tcti).OptStr("tpm_public", k.tpm_public);
  b.OptStr("tpm_private", k.tpm_private);
  if (k.tpm_parent != TpmKeyConfig().tpm_parent) b.Hex("tpm_parent", k.tpm_parent);
  return b.Take();
}

toml::table MaToml(const Config& c) {
  toml::table t = TpmKeyToml(c.ma);
  if (!c.ma_retiring.empty()) {
    toml::array retiring;
    for (const TpmKeyConfig& k : c.ma_retiring) retiring.push_back(TpmKeyToml(k));
    t.insert("retiring", std::move(retiring));
  }
  return t;
}

toml::table EscrowToml(const Config& c) {
  toml::table t = TpmKeyToml(c.escrow);
  if (!c.escrow_retired.empty()) {
    toml::array retired;
    for (const TpmKeyConfig& k : c.escrow_retired) retired.push_back(TpmKeyToml(k));
    t.insert("retired", std::move(retired));
  }
  return t;
}

}  // namespace

std::string ConfigToToml(const Config& c) {
  std::ostringstream out;
  out << "# ma-server configuration. Relative paths are relative to this file's directory.\n"
         "# [[escrow.retired]]: keys replaced by `ma-admin escrow rotate`; each still releases\n"
         "# what was escrowed to it and escrows nothing new. [[ma.retiring]]: storage keys\n"
         "# replaced by `ma-admin ma-key rotate`; each opens what it still holds until\n"
         "# `ma-admin ma-key retire` destroys it.\n";
  // Section by section, in the order docs/operations.md describes them: one toml::table
  // holding them all would be written in key order.
  auto section = [&](std::string_view name, toml::table&& body) {
    toml::table root;
    root.insert(name, std::move(body));
    out << '\n'
        << toml::toml_formatter(root, toml::format_flags::allow_unicode_strings |
                                          toml::format_flags::allow_hexadecimal_integers)
        << '\n';
  };
  section("server", TableBuilder()
                        .Str("listen_address", c.listen_address)
                        .Int("listen_port", c.listen_port)
                        .Int("io_threads", c.io_threads)
                        .Int("worker_threads", c.worker_threads)
                        .Int("max_connections", c.max_connections)
                        .Int("max_connections_per_peer", c.max_connections_per_peer)
                        .Int("max_queued_requests", c.max_queued_requests)
                        .Int("shutdown_timeout_ms", c.shutdown_timeout_ms)
                        .Int("drain_ms", c.drain_ms)
                        .OptArray("trusted_proxies", c.trusted_proxies)
                        .Int("malloc_arenas", c.malloc_arenas)
                        .Take());
  section("tls", TableBuilder()
                     .OptStr("certificate", c.tls_certificate)
                     .OptStr("private_key", c.tls_private_key)
                     .OptStr("client_ca", c.tls_client_ca)
                     .Bool("request_client_cert", c.tls_request_client_cert)
                     .Take());
  section("limits", TableBuilder()
                        .Int("max_header_bytes", c.max_header_bytes)
                        .Int("max_body_bytes", static_cast<int64_t>(c.max_body_bytes))
                        .Int("max_inflight_bytes", static_cast<int64_t>(c.max_inflight_bytes))
                        .Int("read_timeout_ms", c.read_timeout_ms)
                        .Int("idle_timeout_ms", c.idle_timeout_ms)
                        .Int("handshake_timeout_ms", c.handshake_timeout_ms)
                        .Int("max_package_bytes", static_cast<int64_t>(c.max_package_bytes))
                        .Int("max_child_keys", c.max_child_keys)
                        .Take());
  section("ma", MaToml(c));
  section("escrow", EscrowToml(c));
  section("approvals", TableBuilder()
                           .Bool("two_person", c.approvals_two_person)
                           .Int("max_ttl_s", c.approvals_max_ttl_s)
                           .Bool("single_use", c.approvals_single_use)
                           .Take());
  section("vault", TableBuilder()
                       .OptStr("path", c.vault_path)
                       .OptStr("url", c.vault_url)
                       .OptStr("password_file", c.vault_password_file)
                       .Int("max_batch", c.vault_max_batch)
                       .Int("read_connections", c.vault_read_connections)
                       .Int("max_deferred_audit", c.vault_max_deferred_audit)
                       .Int("deferred_audit_delay_ms", c.vault_deferred_audit_delay_ms)
                       .Take());
  section("trust", TableBuilder()
                       .Array("ek_roots", c.ek_roots)
                       .OptArray("ek_intermediates", c.ek_intermediates)
                       .OptArray("ek_templates", c.ek_templates)
                       .Take());
  section("auth", TableBuilder()
                      .Int("challenge_ttl_s", c.challenge_ttl_s)
                      .Int("session_ttl_s", c.session_ttl_s)
                      .Int("download_nonce_ttl_s", c.download_nonce_ttl_s)
                      .Int("max_pending_challenges", c.max_pending_challenges)
                      .Int("ek_cache_entries", c.ek_cache_entries)
                      .Take());
  if (!c.policy_public_key.empty()) {
    toml::table policy =
        c.policy_signer.custody == "tpm" ? TpmKeyToml(c.policy_signer) : toml::table();
    policy.insert("public_key", c.policy_public_key);
    policy.insert("approval", c.policy_approval);
    section("policy", std::move(policy));
  }
  section("enrollment", TableBuilder().Str("policy", c.enrollment_policy).Take());
  section("audit", TableBuilder()
                       .Str("reads", c.audit_reads)
                       .OptStr("checkpoint_key", c.audit_checkpoint_key)
                       .OptStr("checkpoint_dir", c.audit_checkpoint_dir)
                       .Int("checkpoint_interval_s", c.audit_checkpoint_interval_s)
                       .Take());
  section("log", TableBuilder().Str("level", c.log_level).Take());
  section("metrics",
          TableBuilder().Bool("enabled", c.metrics_enabled).Array("allow", c.metrics_allow).Take());
  section("bench", TableBuilder().Bool("echo", c.bench_echo).Take());
  return out.str();
}

namespace {

// What CheckConfigFiles asks of one TPM-key block: the files its custody reads.
Status CheckTpmKeyFiles(const std::string& name, const TpmKeyConfig& k) {
  if (k.custody == "tpm") {
    TPMMA_RETURN_IF_ERROR(CheckReadable(name + ".tpm_public", k.tpm_public));
    TPMMA_RETURN_IF_ERROR(CheckReadable(name + ".tpm_private", k.tpm_private));
  } else if (k.custody == "software") {
    TPMMA_RETURN_IF_ERROR(CheckReadable(name + ".private_key", k.private_key));
  }
  if (k.custody != "none") {
    TPMMA_RETURN_IF_ERROR(CheckReadable(name + ".certificate", k.certificate));
  }
  return Status::Ok();
}

}  // namespace

Status CheckConfigFiles(const Config& c) {
  TPMMA_RETURN_IF_ERROR(CheckReadable("tls.certificate", c.tls_certificate));
  TPMMA_RETURN_IF_ERROR(CheckReadable("tls.private_key", c.tls_private_key));
  if (!c.tls_client_ca.empty()) {
    TPMMA_RETURN_IF_ERROR(CheckReadable("tls.client_ca", c.tls_client_ca));
  }
  TPMMA_RETURN_IF_ERROR(CheckTpmKeyFiles("ma", c.ma));
  for (size_t i = 0; i < c.ma_retiring.size(); ++i) {
    TPMMA_RETURN_IF_ERROR(CheckTpmKeyFiles(fmt::format("ma.retiring[{}]", i), c.ma_retiring[i]));
  }
  TPMMA_RETURN_IF_ERROR(CheckTpmKeyFiles("escrow", c.escrow));
  for (size_t i = 0; i < c.escrow_retired.size(); ++i) {
    TPMMA_RETURN_IF_ERROR(
        CheckTpmKeyFiles(fmt::format("escrow.retired[{}]", i), c.escrow_retired[i]));
  }
  for (const std::string& root : c.ek_roots) {
    std::error_code ec;
    if (fs::is_directory(root, ec)) continue;
    TPMMA_RETURN_IF_ERROR(CheckReadable("trust.ek_roots", root));
  }
  for (const std::string& pool : c.ek_intermediates) {
    std::error_code ec;
    if (fs::is_directory(pool, ec)) continue;
    TPMMA_RETURN_IF_ERROR(CheckReadable("trust.ek_intermediates", pool));
  }
  for (const std::string& t : c.ek_templates) {
    TPMMA_RETURN_IF_ERROR(CheckReadable("trust.ek_templates", t));
  }
  if (!c.vault_url.empty()) {
    if (c.vault_password_file.empty()) return Status::Ok();
    return CheckOwnerOnlySecret(c.vault_password_file, "vault.password_file");
  }
  std::error_code ec;
  fs::path dir = fs::path(c.vault_path).parent_path();
  if (!fs::is_directory(dir, ec)) {
    return Status(Code::kInvalidArgument,
                  fmt::format("vault.path: directory {} does not exist", dir.string()));
  }
  return Status::Ok();
}

}  // namespace tpmma::server
