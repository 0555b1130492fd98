// SPDX-License-Identifier: GPL-2.0-or-later
// The schema migrations (migrations/*.sql), compiled into the library by
// cmake/embed_file.cmake. Internal to storage/sqlite/.
#pragma once

#include <cstddef>

namespace tpmma::storage::sqlite::embedded {
extern const unsigned char kMigration1[];
extern const size_t kMigration1Size;
extern const unsigned char kMigration2[];
extern const size_t kMigration2Size;
extern const unsigned char kMigration3[];
extern const size_t kMigration3Size;
extern const unsigned char kMigration4[];
extern const size_t kMigration4Size;
extern const unsigned char kMigration5[];
extern const size_t kMigration5Size;
extern const unsigned char kMigration6[];
extern const size_t kMigration6Size;
extern const unsigned char kMigration7[];
extern const size_t kMigration7Size;
extern const unsigned char kMigration8[];
extern const size_t kMigration8Size;
}  // namespace tpmma::storage::sqlite::embedded
