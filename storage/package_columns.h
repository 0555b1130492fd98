// SPDX-License-Identifier: GPL-2.0-or-later
// The nullable columns of a package row as both backends (sqlite/, postgres/) bind them: an
// unrecorded wrap key and the document's own outer wrap are NULL, not empty values.
#pragma once

#include <optional>
#include <string>

#include "common/bytes.h"
#include "storage/vault.h"

namespace tpmma::storage {

inline std::optional<std::string> WrapKeyColumn(const PackageDescriptor& d) {
  return d.wrap_key_id.empty() ? std::nullopt : std::optional<std::string>(d.wrap_key_id);
}
inline std::optional<Bytes> WrapDuplicateColumn(const Package& p) {
  return p.rewrap ? std::optional<Bytes>(p.rewrap->duplicate) : std::nullopt;
}
inline std::optional<Bytes> WrapSeedColumn(const Package& p) {
  return p.rewrap ? std::optional<Bytes>(p.rewrap->encrypted_seed) : std::nullopt;
}

}  // namespace tpmma::storage
