// SPDX-License-Identifier: GPL-2.0-or-later
// Small text forms that several folders print the same way (CLI output, error messages).
#pragma once

#include <cstdint>
#include <string>

namespace tpmma {

// A TPM handle or NV index as tpm2-tools prints it: "0x81000001" (always 8 hex digits).
std::string Hex32(uint32_t v);

// Unix seconds as "YYYY-MM-DDTHH:MM:SSZ" (UTC), the form the package format and every
// JSON output use; a value gmtime cannot represent comes back as its decimal number.
std::string Utc(int64_t unix_seconds);

}  // namespace tpmma
