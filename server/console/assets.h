// SPDX-License-Identifier: GPL-2.0-or-later
// The console's templates (templates/*.mustache) and style.css, compiled in (embed.cmake).
#pragma once

#include <string_view>

namespace tpmma::server::console {

// The file's text by its name ("platform.mustache", "style.css"); empty if there is none.
std::string_view Asset(std::string_view name);

}  // namespace tpmma::server::console
