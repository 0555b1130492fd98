// SPDX-License-Identifier: GPL-2.0-or-later
#include "common/text.h"

#include <charconv>
#include <cstdio>
#include <ctime>

namespace tpmma {

std::string Hex32(uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%08x", v);
  return buf;
}

std::string Utc(int64_t unix_seconds) {
  const std::time_t t = static_cast<std::time_t>(unix_seconds);
  std::tm tm{};
  char buf[32];
  if (gmtime_r(&t, &tm) == nullptr || tm.tm_year + 1900 < 1 || tm.tm_year + 1900 > 9999 ||
      std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0) {
    return std::to_string(unix_seconds);
  }
  return buf;
}

Result<int64_t> ParseUtc(std::string_view text) {
  int64_t n = 0;
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
  if (!text.empty() && ec == std::errc() && ptr == text.data() + text.size()) return n;
  std::tm tm{};
  const std::string s(text);
  const char* end = strptime(s.c_str(), "%Y-%m-%dT%H:%M:%SZ", &tm);
  if (end == nullptr || *end != '\0') {
    tm = {};
    end = strptime(s.c_str(), "%Y-%m-%d", &tm);
    if (end == nullptr || *end != '\0') {
      return Error(
          Code::kInvalidArgument,
          "a time is YYYY-MM-DD, YYYY-MM-DDTHH:MM:SSZ (UTC) or Unix seconds, got '" + s + "'");
    }
  }
  return static_cast<int64_t>(timegm(&tm));
}

std::string EscapeForTerminal(std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    const auto next = i + 1 < s.size() ? static_cast<unsigned char>(s[i + 1]) : 0;
    if (c == '\\') {
      out += "\\\\";
    } else if (c < 0x20 || c == 0x7f) {
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 0xf];
    } else if (c == 0xc2 && next >= 0x80 && next <= 0x9f) {
      out += "\\u00";
      out += kHex[next >> 4];
      out += kHex[next & 0xf];
      ++i;
    } else {
      out.push_back(static_cast<char>(c));
    }
  }
  return out;
}

bool HasControlCharacter(std::string_view s) {
  for (size_t i = 0; i < s.size(); ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    const auto next = i + 1 < s.size() ? static_cast<unsigned char>(s[i + 1]) : 0;
    if (c < 0x20 || c == 0x7f || (c == 0xc2 && next >= 0x80 && next <= 0x9f)) return true;
  }
  return false;
}

std::string ForAudit(std::string_view s, size_t max_bytes) {
  std::string out = EscapeForTerminal(s);
  if (out.size() <= max_bytes) return out;
  static constexpr std::string_view kCut = "...";
  const size_t limit = max_bytes > kCut.size() ? max_bytes - kCut.size() : 0;
  // Walk whole units (an escape: "\\", "\x1b", "\u009b"; a UTF-8 sequence; a byte) and cut
  // at the last unit boundary within the limit, never inside one.
  size_t end = 0;
  for (size_t i = 0; i < out.size();) {
    const auto c = static_cast<unsigned char>(out[i]);
    size_t len = 1;
    if (c == '\\') {
      len = out[i + 1] == 'x' ? 4 : out[i + 1] == 'u' ? 6 : 2;
    } else if (c >= 0xf0) {
      len = 4;
    } else if (c >= 0xe0) {
      len = 3;
    } else if (c >= 0xc0) {
      len = 2;
    }
    if (i + len > limit) break;
    i += len;
    end = i;
  }
  out.resize(end);
  out += kCut;
  return out;
}

}  // namespace tpmma
