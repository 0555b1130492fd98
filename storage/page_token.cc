// SPDX-License-Identifier: GPL-2.0-or-later
#include "storage/page_token.h"

#include <algorithm>
#include <charconv>

#include "common/bytes.h"

namespace tpmma::storage {

size_t ClampPageSize(size_t n) {
  if (n == 0) return kDefaultPageSize;
  return std::min(n, kMaxPageSize);
}

std::string MakePageToken(char kind, std::string_view last) {
  std::string raw = std::string(1, kind) + ":" + std::string(last);
  return HexEncode(View(raw));
}

Result<std::string> ParsePageToken(char kind, std::string_view token) {
  auto raw = HexDecode(token);
  if (!raw || raw->size() < 2 || (*raw)[0] != static_cast<uint8_t>(kind) || (*raw)[1] != ':') {
    return Error(Code::kInvalidArgument, "page token was not issued by this vault");
  }
  return std::string(raw->begin() + 2, raw->end());
}

Result<int64_t> ParseIntPageToken(char kind, std::string_view token) {
  if (token.empty()) return 0;
  TPMMA_ASSIGN_OR_RETURN(std::string s, ParsePageToken(kind, token));
  int64_t v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size() || v < 0) {
    return Error(Code::kInvalidArgument, "page token was not issued by this vault");
  }
  return v;
}

}  // namespace tpmma::storage
