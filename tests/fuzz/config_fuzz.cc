// SPDX-License-Identifier: GPL-2.0-or-later
// server::ParseConfig (ma-server's config.toml, through toml++). Invariant: a config or a
// plain error, never a crash; libFuzzer's UBSan build also catches toml++'s
// TOML_UNREACHABLE (issue #13). An accepted config written back out parses again.
#include <cstdint>
#include <string_view>

#include "server/config.h"
#include "tests/fuzz/fuzz_check.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto config = tpmma::server::ParseConfig(text, "/srv/ma", "fuzz.toml");
  if (!config.has_value()) {
    TPMMA_FUZZ_CHECK(!config.error().message().empty());
    return 0;
  }
  const std::string again = tpmma::server::ConfigToToml(*config);
  TPMMA_FUZZ_CHECK(tpmma::server::ParseConfig(again, "/srv/ma", "fuzz.toml").has_value());
  return 0;
}
