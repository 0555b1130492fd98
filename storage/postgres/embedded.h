// SPDX-License-Identifier: GPL-2.0-or-later
// The PostgreSQL schema migrations (migrations/*.sql), compiled into the library by
// cmake/embed_file.cmake. Internal to storage/postgres/.
#pragma once

#include <cstddef>

namespace tpmma::storage::postgres::embedded {
extern const unsigned char kMigration1[];
extern const size_t kMigration1Size;
extern const unsigned char kMigration2[];
extern const size_t kMigration2Size;
extern const unsigned char kMigration3[];
extern const size_t kMigration3Size;
}  // namespace tpmma::storage::postgres::embedded
