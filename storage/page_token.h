// SPDX-License-Identifier: GPL-2.0-or-later
// Page tokens and page sizes of the List/Query calls. Tokens are opaque to callers: hex of
// "<kind>:<last key>", one kind letter per listing, so a token of one listing is refused
// by another (kInvalidArgument). Internal to storage/: every backend's, so that a token means
// the same whichever engine issued it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "common/status.h"

namespace tpmma::storage {

inline constexpr size_t kDefaultPageSize = 100;
inline constexpr size_t kMaxPageSize = 1000;

// 0 → kDefaultPageSize, capped at kMaxPageSize.
size_t ClampPageSize(size_t n);

std::string MakePageToken(char kind, std::string_view last);
Result<std::string> ParsePageToken(char kind, std::string_view token);
// An empty token is 0 (the first page); otherwise a non-negative decimal key.
Result<int64_t> ParseIntPageToken(char kind, std::string_view token);

}  // namespace tpmma::storage
