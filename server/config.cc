// SPDX-License-Identifier: GPL-2.0-or-later
#include "server/config.h"

#include <arpa/inet.h>
#include <unistd.h>

#include <toml++/toml.h>
#include <algorithm>
#include <filesystem>
#include <set>

#include <fmt/format.h>

#include "common/env.h"

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

// TOML basic string: quotes, backslashes and control characters escaped.
std::string Quote(std::string_view s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20 || c == 0x7f) {
      out += fmt::format("\\u{:04X}", c);
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + "\"";
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

}  // namespace

// The keys of one escrow key, in [escrow] or in one [[escrow.retired]] (read through a
// Reader whose "escrow" section is that table). `c` is the rest of the configuration,
// for the checks against the MA key.
void ReadEscrowKey(Reader& r, EscrowKeyConfig& k, const Config& c, bool retired = false) {
  r.String(
      "escrow", "custody", k.custody,
      [&](const std::string& v) {
        return (v == "none" && !retired) || v == "software" || v == "tpm";
      },
      retired ? "\"software\" or \"tpm\"" : "\"none\", \"software\" or \"tpm\"");
  r.String("escrow", "key_id", k.key_id, IsKeyId, "1 to 64 characters of A-Z a-z 0-9 . _ -");
  r.Path("escrow", "private_key", k.private_key);
  r.Path("escrow", "certificate", k.certificate);
  r.String(
      "escrow", "tpm_tcti", k.tpm_tcti,
      [](const std::string& v) { return !v.empty() && v.size() <= 256; },
      "a TCTI string such as \"device:/dev/tpmrm0\"");
  r.Path("escrow", "tpm_public", k.tpm_public);
  r.Path("escrow", "tpm_private", k.tpm_private);
  r.Int("escrow", "tpm_parent", k.tpm_parent, 0x81000000u, 0x81FFFFFFu);
  if (retired) r.Require("escrow", "custody", std::string());
  if (k.custody == "tpm") {
    r.Require("escrow", "tpm_tcti", k.tpm_tcti);
    r.Require("escrow", "tpm_public", k.tpm_public);
    r.Require("escrow", "tpm_private", k.tpm_private);
  } else if (k.custody == "software") {
    r.Require("escrow", "private_key", k.private_key);
  }
  if (k.custody == "none") return;
  if (retired) r.Require("escrow", "key_id", std::string());
  r.Require("escrow", "certificate", k.certificate);
  if (k.key_id == c.ma_key_id) {
    r.Fail("escrow.key_id must differ from ma.key_id (GetMAKey tells them apart by id)");
  }
  if (!k.private_key.empty() && k.private_key == c.ma_private_key) {
    r.Fail("escrow.private_key must be a different file from ma.private_key (DESIGN 4.4)");
  }
}

// [[escrow.retired]]: escrow keys `ma-admin escrow rotate` replaced. Each is read like
// [escrow]; its errors say which entry they are about.
void ReadRetiredEscrowKeys(const toml::node& node, const std::string& base_dir, Config& c,
                           Reader& r) {
  const toml::array* arr = node.as_array();
  if (arr == nullptr || !arr->is_array_of_tables()) {
    r.Fail(fmt::format("escrow.retired must be an array of tables ([[escrow.retired]]), got {}",
                       Describe(node)));
    return;
  }
  std::set<std::string> ids = {c.escrow.key_id};
  for (size_t i = 0; i < arr->size(); ++i) {
    toml::table wrapper;
    wrapper.insert("escrow", *arr->get(i)->as_table());
    Reader sub(wrapper, base_dir);
    EscrowKeyConfig k;
    k.custody.clear();
    k.key_id.clear();
    ReadEscrowKey(sub, k, c, /*retired=*/true);
    sub.CheckUnknown();
    if (!ids.insert(k.key_id).second && !k.key_id.empty()) {
      sub.Fail(fmt::format("key_id \"{}\" is used twice among the escrow keys", k.key_id));
    }
    for (const std::string& e : sub.errors()) r.Fail(fmt::format("escrow.retired[{}]: {}", i, e));
    c.escrow_retired.push_back(std::move(k));
  }
}

Result<Config> ParseConfig(std::string_view toml_text, const std::string& base_dir,
                           const std::string& origin) {
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
  r.Int("server", "max_queued_requests", c.max_queued_requests, 1, 100'000);
  r.Int("server", "shutdown_timeout_ms", c.shutdown_timeout_ms, 0, 600'000);
  r.Int("server", "malloc_arenas", c.malloc_arenas, 0, 256);
  r.Path("tls", "certificate", c.tls_certificate);
  r.Path("tls", "private_key", c.tls_private_key);
  r.Path("tls", "client_ca", c.tls_client_ca);
  r.Bool("tls", "request_client_cert", c.tls_request_client_cert);
  r.Int("limits", "max_header_bytes", c.max_header_bytes, 1024, 1 << 20);
  r.Int("limits", "max_body_bytes", c.max_body_bytes, 1024, 256 << 20);
  r.Int("limits", "read_timeout_ms", c.read_timeout_ms, 100, 600'000);
  r.Int("limits", "idle_timeout_ms", c.idle_timeout_ms, 100, 3'600'000);
  r.Int("limits", "handshake_timeout_ms", c.handshake_timeout_ms, 100, 600'000);
  r.Int("limits", "max_package_bytes", c.max_package_bytes, 1024, 256 << 20);
  r.Int("limits", "max_child_keys", c.max_child_keys, 1, 100'000);
  r.String("ma", "key_id", c.ma_key_id, IsKeyId, "1 to 64 characters of A-Z a-z 0-9 . _ -");
  r.Path("ma", "private_key", c.ma_private_key);
  r.Path("ma", "certificate", c.ma_certificate);
  r.String(
      "ma", "custody", c.ma_custody,
      [](const std::string& v) { return v == "software" || v == "tpm"; },
      "\"software\" or \"tpm\"");
  r.String(
      "ma", "tpm_tcti", c.ma_tpm_tcti,
      [](const std::string& v) { return !v.empty() && v.size() <= 256; },
      "a TCTI string such as \"device:/dev/tpmrm0\"");
  r.Path("ma", "tpm_public", c.ma_tpm_public);
  r.Path("ma", "tpm_private", c.ma_tpm_private);
  r.Int("ma", "tpm_parent", c.ma_tpm_parent, 0x81000000u, 0x81FFFFFFu);
  ReadEscrowKey(r, c.escrow, c);
  if (const toml::node* retired = r.Node("escrow", "retired")) {
    ReadRetiredEscrowKeys(*retired, base_dir, c, r);
  }
  r.Bool("approvals", "two_person", c.approvals_two_person);
  r.Int("approvals", "max_ttl_s", c.approvals_max_ttl_s, 60, 366 * 86400);
  r.Bool("approvals", "single_use", c.approvals_single_use);
  r.Path("vault", "path", c.vault_path);
  r.Int("vault", "max_batch", c.vault_max_batch, 1, 4096);
  r.Int("vault", "read_connections", c.vault_read_connections, 1, 64);
  r.Int("vault", "max_deferred_audit", c.vault_max_deferred_audit, 1, 1'000'000);
  r.Int("vault", "deferred_audit_delay_ms", c.vault_deferred_audit_delay_ms, 0, 1000);
  r.PathList("trust", "ek_roots", c.ek_roots);
  r.Int("auth", "challenge_ttl_s", c.challenge_ttl_s, 1, 3600);
  r.Int("auth", "session_ttl_s", c.session_ttl_s, 1, 86'400);
  r.Int("auth", "download_nonce_ttl_s", c.download_nonce_ttl_s, 1, 3600);
  r.Int("auth", "max_pending_challenges", c.max_pending_challenges, 1, 1'000'000);
  r.Int("auth", "ek_cache_entries", c.ek_cache_entries, 0, 1'000'000);
  r.String(
      "audit", "reads", c.audit_reads,
      [](const std::string& v) { return v == "deferred" || v == "durable"; },
      "\"deferred\" or \"durable\"");
  r.String("log", "level", c.log_level, IsLogLevel, "one of trace, debug, info, warn, error");
  r.Bool("bench", "echo", c.bench_echo);

  r.Require("tls", "certificate", c.tls_certificate);
  r.Require("tls", "private_key", c.tls_private_key);
  if (c.ma_custody == "tpm") {
    r.Require("ma", "tpm_tcti", c.ma_tpm_tcti);
    r.Require("ma", "tpm_public", c.ma_tpm_public);
    r.Require("ma", "tpm_private", c.ma_tpm_private);
  } else {
    r.Require("ma", "private_key", c.ma_private_key);
  }
  r.Require("ma", "certificate", c.ma_certificate);
  r.Require("vault", "path", c.vault_path);
  if (c.max_package_bytes > c.max_body_bytes) {
    r.Fail(fmt::format("limits.max_package_bytes ({}) must not exceed limits.max_body_bytes ({})",
                       c.max_package_bytes, c.max_body_bytes));
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

std::string ConfigToToml(const Config& c) {
  std::string list;
  for (size_t i = 0; i < c.ek_roots.size(); ++i) {
    list += (i ? ", " : "") + Quote(c.ek_roots[i]);
  }
  auto opt_path = [](std::string_view key, const std::string& v) {
    return v.empty() ? fmt::format("# {} = \"\"\n", key) : fmt::format("{} = {}\n", key, Quote(v));
  };
  std::string out;
  out += "# ma-server configuration. Relative paths are relative to this file's directory.\n\n";
  out += "[server]\n";
  out += fmt::format("listen_address = {}\n", Quote(c.listen_address));
  out += fmt::format("listen_port = {}\n", c.listen_port);
  out += fmt::format("io_threads = {}\n", c.io_threads);
  out += fmt::format("worker_threads = {}\n", c.worker_threads);
  out += fmt::format("max_connections = {}\n", c.max_connections);
  out += fmt::format("max_queued_requests = {}\n", c.max_queued_requests);
  out += fmt::format("shutdown_timeout_ms = {}\n", c.shutdown_timeout_ms);
  out += fmt::format("malloc_arenas = {}\n", c.malloc_arenas);
  out += "\n[tls]\n";
  out += opt_path("certificate", c.tls_certificate);
  out += opt_path("private_key", c.tls_private_key);
  out += opt_path("client_ca", c.tls_client_ca);
  out += fmt::format("request_client_cert = {}\n", c.tls_request_client_cert);
  out += "\n[limits]\n";
  out += fmt::format("max_header_bytes = {}\n", c.max_header_bytes);
  out += fmt::format("max_body_bytes = {}\n", c.max_body_bytes);
  out += fmt::format("read_timeout_ms = {}\n", c.read_timeout_ms);
  out += fmt::format("idle_timeout_ms = {}\n", c.idle_timeout_ms);
  out += fmt::format("handshake_timeout_ms = {}\n", c.handshake_timeout_ms);
  out += fmt::format("max_package_bytes = {}\n", c.max_package_bytes);
  out += fmt::format("max_child_keys = {}\n", c.max_child_keys);
  out += "\n[ma]\n";
  out += fmt::format("key_id = {}\n", Quote(c.ma_key_id));
  out += opt_path("private_key", c.ma_private_key);
  out += opt_path("certificate", c.ma_certificate);
  out += fmt::format("custody = {}\n", Quote(c.ma_custody));
  if (!c.ma_tpm_tcti.empty()) out += fmt::format("tpm_tcti = {}\n", Quote(c.ma_tpm_tcti));
  if (!c.ma_tpm_public.empty()) out += opt_path("tpm_public", c.ma_tpm_public);
  if (!c.ma_tpm_private.empty()) out += opt_path("tpm_private", c.ma_tpm_private);
  if (c.ma_tpm_parent != 0x81000001) out += fmt::format("tpm_parent = {}\n", c.ma_tpm_parent);
  out += "\n[escrow]\n";
  out += fmt::format("custody = {}\n", Quote(c.escrow.custody));
  out += fmt::format("key_id = {}\n", Quote(c.escrow.key_id));
  out += opt_path("private_key", c.escrow.private_key);
  out += opt_path("certificate", c.escrow.certificate);
  if (!c.escrow.tpm_tcti.empty()) out += fmt::format("tpm_tcti = {}\n", Quote(c.escrow.tpm_tcti));
  if (!c.escrow.tpm_public.empty()) out += opt_path("tpm_public", c.escrow.tpm_public);
  if (!c.escrow.tpm_private.empty()) out += opt_path("tpm_private", c.escrow.tpm_private);
  if (c.escrow.tpm_parent != 0x81000001) {
    out += fmt::format("tpm_parent = {}\n", c.escrow.tpm_parent);
  }
  for (const EscrowKeyConfig& k : c.escrow_retired) {
    out +=
        "\n# Retired by ma-admin escrow rotate: releases what it escrowed, escrows nothing new.\n";
    out += "[[escrow.retired]]\n";
    out += fmt::format("custody = {}\n", Quote(k.custody));
    out += fmt::format("key_id = {}\n", Quote(k.key_id));
    out += opt_path("private_key", k.private_key);
    out += opt_path("certificate", k.certificate);
    if (!k.tpm_tcti.empty()) out += fmt::format("tpm_tcti = {}\n", Quote(k.tpm_tcti));
    if (!k.tpm_public.empty()) out += opt_path("tpm_public", k.tpm_public);
    if (!k.tpm_private.empty()) out += opt_path("tpm_private", k.tpm_private);
    if (k.tpm_parent != 0x81000001) out += fmt::format("tpm_parent = {}\n", k.tpm_parent);
  }
  out += "\n[approvals]\n";
  out += fmt::format("two_person = {}\n", c.approvals_two_person);
  out += fmt::format("max_ttl_s = {}\n", c.approvals_max_ttl_s);
  out += fmt::format("single_use = {}\n", c.approvals_single_use);
  out += "\n[vault]\n";
  out += opt_path("path", c.vault_path);
  out += fmt::format("max_batch = {}\n", c.vault_max_batch);
  out += fmt::format("read_connections = {}\n", c.vault_read_connections);
  out += fmt::format("max_deferred_audit = {}\n", c.vault_max_deferred_audit);
  out += fmt::format("deferred_audit_delay_ms = {}\n", c.vault_deferred_audit_delay_ms);
  out += "\n[trust]\n";
  out += fmt::format("ek_roots = [{}]\n", list);
  out += "\n[auth]\n";
  out += fmt::format("challenge_ttl_s = {}\n", c.challenge_ttl_s);
  out += fmt::format("session_ttl_s = {}\n", c.session_ttl_s);
  out += fmt::format("download_nonce_ttl_s = {}\n", c.download_nonce_ttl_s);
  out += fmt::format("max_pending_challenges = {}\n", c.max_pending_challenges);
  out += fmt::format("ek_cache_entries = {}\n", c.ek_cache_entries);
  out += "\n[audit]\n";
  out += fmt::format("reads = {}\n", Quote(c.audit_reads));
  out += "\n[log]\n";
  out += fmt::format("level = {}\n", Quote(c.log_level));
  out += "\n[bench]\n";
  out += fmt::format("echo = {}\n", c.bench_echo);
  return out;
}

Status CheckConfigFiles(const Config& c) {
  TPMMA_RETURN_IF_ERROR(CheckReadable("tls.certificate", c.tls_certificate));
  TPMMA_RETURN_IF_ERROR(CheckReadable("tls.private_key", c.tls_private_key));
  if (!c.tls_client_ca.empty()) {
    TPMMA_RETURN_IF_ERROR(CheckReadable("tls.client_ca", c.tls_client_ca));
  }
  if (c.ma_custody == "tpm") {
    TPMMA_RETURN_IF_ERROR(CheckReadable("ma.tpm_public", c.ma_tpm_public));
    TPMMA_RETURN_IF_ERROR(CheckReadable("ma.tpm_private", c.ma_tpm_private));
  } else {
    TPMMA_RETURN_IF_ERROR(CheckReadable("ma.private_key", c.ma_private_key));
  }
  TPMMA_RETURN_IF_ERROR(CheckReadable("ma.certificate", c.ma_certificate));
  std::vector<std::pair<std::string, const EscrowKeyConfig*>> escrow_keys = {{"escrow", &c.escrow}};
  for (size_t i = 0; i < c.escrow_retired.size(); ++i) {
    escrow_keys.emplace_back(fmt::format("escrow.retired[{}]", i), &c.escrow_retired[i]);
  }
  for (const auto& [name, k] : escrow_keys) {
    if (k->custody == "tpm") {
      TPMMA_RETURN_IF_ERROR(CheckReadable(name + ".tpm_public", k->tpm_public));
      TPMMA_RETURN_IF_ERROR(CheckReadable(name + ".tpm_private", k->tpm_private));
    } else if (k->custody == "software") {
      TPMMA_RETURN_IF_ERROR(CheckReadable(name + ".private_key", k->private_key));
    }
    if (k->custody != "none") {
      TPMMA_RETURN_IF_ERROR(CheckReadable(name + ".certificate", k->certificate));
    }
  }
  for (const std::string& root : c.ek_roots) {
    std::error_code ec;
    if (fs::is_directory(root, ec)) continue;
    TPMMA_RETURN_IF_ERROR(CheckReadable("trust.ek_roots", root));
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
