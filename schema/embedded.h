// SPDX-License-Identifier: GPL-2.0-or-later
// Files compiled into the library by cmake/embed_file.cmake (internal to schema/).
#pragma once

#include <cstddef>

namespace tpmma::schema::internal {
extern const unsigned char kPackageXsd[];
extern const size_t kPackageXsdSize;
}  // namespace tpmma::schema::internal
