// SPDX-License-Identifier: GPL-2.0-or-later
#include "schema/xml_input.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <string>
#include <string_view>

namespace tpmma::schema::internal {

namespace {

Status CheckUtf8(ByteView b) {
  for (size_t i = 0; i < b.size();) {
    uint8_t c = b[i];
    size_t len = c < 0x80           ? 1
                 : (c >> 5) == 0x6  ? 2
                 : (c >> 4) == 0xe  ? 3
                 : (c >> 3) == 0x1e ? 4
                                    : 0;
    bool ok = len != 0 && i + len <= b.size();
    uint32_t cp = ok ? (len == 1 ? c : c & (0x7f >> len)) : 0;
    for (size_t k = 1; ok && k < len; ++k) {
      ok = (b[i + k] & 0xc0) == 0x80;
      cp = (cp << 6) | (b[i + k] & 0x3f);
    }
    static constexpr uint32_t kMin[] = {0, 0, 0x80, 0x800, 0x10000};
    if (!ok || cp < kMin[len] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) {
      return Status(Code::kMalformed, fmt::format("invalid UTF-8 at byte offset {}", i));
    }
    // XML 1.0 has no U+0000, and a NUL among ASCII is what UTF-16 and UTF-32 look like.
    if (cp == 0) {
      return Status(Code::kMalformed,
                    fmt::format("NUL byte at offset {}: not UTF-8 text (UTF-16 or UTF-32?); "
                                "packages are UTF-8",
                                i));
    }
    i += len;
  }
  return Status::Ok();
}

bool StartsWith(ByteView b, std::initializer_list<uint8_t> prefix) {
  return b.size() >= prefix.size() && std::equal(prefix.begin(), prefix.end(), b.begin());
}

// The encoding pseudo-attribute of a leading XML declaration, or "" if there is none.
std::string DeclaredEncoding(std::string_view text) {
  if (!text.starts_with("<?xml") || text.size() < 6 ||
      !std::isspace(static_cast<unsigned char>(text[5]))) {
    return {};
  }
  const size_t end = text.find("?>");
  if (end == std::string_view::npos) return {};
  std::string_view decl = text.substr(0, end);
  size_t at = decl.find("encoding");
  if (at == std::string_view::npos) return {};
  at += 8;
  auto skip_space = [&] {
    while (at < decl.size() && std::isspace(static_cast<unsigned char>(decl[at]))) ++at;
  };
  skip_space();
  if (at >= decl.size() || decl[at] != '=') return {};
  ++at;
  skip_space();
  if (at >= decl.size() || (decl[at] != '"' && decl[at] != '\'')) return {};
  const size_t close = decl.find(decl[at], at + 1);
  if (close == std::string_view::npos) return {};
  return std::string(decl.substr(at + 1, close - at - 1));
}

}  // namespace

Status CheckXmlIsUtf8(ByteView bytes) {
  if (StartsWith(bytes, {0x00, 0x00, 0xfe, 0xff}) || StartsWith(bytes, {0xff, 0xfe, 0x00, 0x00})) {
    return Status(Code::kMalformed,
                  "document starts with a UTF-32 byte order mark; packages are "
                  "UTF-8");
  }
  if (StartsWith(bytes, {0xfe, 0xff}) || StartsWith(bytes, {0xff, 0xfe})) {
    return Status(Code::kMalformed,
                  "document starts with a UTF-16 byte order mark; packages are "
                  "UTF-8");
  }
  TPMMA_RETURN_IF_ERROR(CheckUtf8(bytes));
  std::string_view text(reinterpret_cast<const char*>(bytes.data()), bytes.size());
  if (text.starts_with("\xEF\xBB\xBF")) text.remove_prefix(3);
  const std::string encoding = DeclaredEncoding(text);
  std::string lower = encoding;
  for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (!encoding.empty() && lower != "utf-8") {
    return Status(Code::kMalformed,
                  fmt::format("the XML declaration names encoding '{}'; packages are UTF-8",
                              encoding.substr(0, 40)));
  }
  return Status::Ok();
}

}  // namespace tpmma::schema::internal
