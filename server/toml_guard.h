// SPDX-License-Identifier: GPL-2.0-or-later
// A byte-level check run before toml++ parses a config file: it refuses the inputs that
// drive toml++ 3.3.0 (Debian bookworm) into TOML_UNREACHABLE or a broken
// TOML_ASSERT_ASSUME, which in a release build is undefined behaviour and in a debug build
// an abort (issue #13, found by fuzzing). Nothing it refuses is valid TOML 1.0.
#pragma once

#include <string_view>

#include "common/status.h"

namespace tpmma::server {

// kInvalidArgument "<origin>:<line>: ..." for the first such pattern; Ok otherwise (the
// text may still be invalid TOML: toml++ says so).
Status CheckTomlAvoidsParserBugs(std::string_view text, std::string_view origin);

}  // namespace tpmma::server
