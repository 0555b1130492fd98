// SPDX-License-Identifier: GPL-2.0-or-later
// What a backup carries for applications, besides the keys themselves (docs/protocol.md,
// "Application data"):
//
//   per key (ChildKey/ApplicationData)         the key's X.509 certificate (X509Certificate, DER)
//   per store (MigratableRootKey/ApplicationData, Opaque, "tpm-ma:<item>\n<payload>"):
//     tpm-ma:mrk-handle     "0x81000100": where key files expect the MRK
//     tpm-ma:pkcs11-store   the tpm2-pkcs11 token store (its SQLite file)
//
// An Opaque item whose name lms does not know is kept by the MA and ignored by a restore.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

#include "client/lms/keystore.h"
#include "common/bytes.h"
#include "common/status.h"
#include "schema/package.h"

namespace tpmma::lms {

inline constexpr std::string_view kMrkHandleItem = "tpm-ma:mrk-handle";
inline constexpr std::string_view kPkcs11StoreItem = "tpm-ma:pkcs11-store";

schema::ApplicationData OpaqueItem(std::string_view name, ByteView payload);
// The payload of the Opaque item called `name`, if there is one.
std::optional<Bytes> FindOpaqueItem(const std::vector<schema::ApplicationData>& items,
                                    std::string_view name);

// The MRK handle a package records (0: none, as in packages made before issue #11).
Result<uint32_t> MrkHandleOf(const std::vector<schema::ApplicationData>& items);

// The tpm2-pkcs11 token store as a package item (zlib, RFC 1950: a token's SQLite file
// is mostly empty pages) and back; kLimitExceeded when it does not fit in one item, or
// unpacks to more than 16 MiB.
Result<schema::ApplicationData> Pkcs11StoreItem(ByteView db);
Result<std::optional<Bytes>> Pkcs11StoreOf(const std::vector<schema::ApplicationData>& items);

// A key's application data for a package, and back.
std::vector<schema::ApplicationData> KeyApplicationData(const KeyRecord& key);
Bytes CertificateOf(const std::vector<schema::ApplicationData>& items);

}  // namespace tpmma::lms
