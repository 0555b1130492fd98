// SPDX-License-Identifier: GPL-2.0-or-later
#include "server/proxy_header.h"

#include <arpa/inet.h>

#include <charconv>
#include <vector>

namespace tpmma::server {
namespace {

std::unexpected<Status> Bad(std::string_view why) {
  return Error(Code::kInvalidArgument, "PROXY header: " + std::string(why));
}

std::vector<std::string_view> SplitSpaces(std::string_view s) {
  std::vector<std::string_view> out;
  size_t start = 0;
  while (start <= s.size()) {
    size_t end = s.find(' ', start);
    if (end == std::string_view::npos) end = s.size();
    out.push_back(s.substr(start, end - start));
    start = end + 1;
  }
  return out;
}

// The address in canonical form if it is one of `family`; inet_pton is strict (no leading
// zeros in IPv4 octets, no zone ids), which is what the spec asks of the sender.
std::optional<std::string> Address(std::string_view text, int family) {
  std::string s(text);
  unsigned char raw[16];
  if (inet_pton(family, s.c_str(), raw) != 1) return std::nullopt;
  char out[INET6_ADDRSTRLEN];
  if (inet_ntop(family, raw, out, sizeof out) == nullptr) return std::nullopt;
  return std::string(out);
}

std::optional<uint16_t> Port(std::string_view text) {
  if (text.empty() || text.size() > 5 || (text.size() > 1 && text[0] == '0')) return std::nullopt;
  unsigned value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || value > 65535) return std::nullopt;
  return static_cast<uint16_t>(value);
}

}  // namespace

Result<std::optional<ProxyClient>> ParseProxyV1(std::string_view line) {
  if (line.size() > kProxyV1MaxBytes) return Bad("longer than 107 bytes");
  if (line.size() < 2 || line.substr(line.size() - 2) != "\r\n") return Bad("no CRLF at the end");
  line.remove_suffix(2);
  if (line.find_first_of("\r\n") != std::string_view::npos) return Bad("a stray CR or LF");
  if (!line.starts_with("PROXY ")) return Bad("does not start with \"PROXY \"");
  std::vector<std::string_view> f = SplitSpaces(line);
  if (f[1] == "UNKNOWN") return std::optional<ProxyClient>();  // the rest is ignored (spec)
  int family = f[1] == "TCP4" ? AF_INET : f[1] == "TCP6" ? AF_INET6 : 0;
  if (family == 0) return Bad("protocol must be TCP4, TCP6 or UNKNOWN");
  if (f.size() != 6) return Bad("TCP4/TCP6 need exactly 4 fields after the protocol");
  std::optional<std::string> source = Address(f[2], family);
  if (!source || !Address(f[3], family)) return Bad("an address is not of the named family");
  std::optional<uint16_t> source_port = Port(f[4]);
  if (!source_port || !Port(f[5])) return Bad("a port is not a number from 0 to 65535");
  return std::optional<ProxyClient>(ProxyClient{.address = *source, .port = *source_port});
}

}  // namespace tpmma::server
