// SPDX-License-Identifier: GPL-2.0-or-later
// Private key files must be readable by their owner only: ma-server refuses to start on one
// any group or other permission bit is set on, and --check-config says so first.
#pragma once

#include <string>
#include <string_view>

#include "common/status.h"

namespace tpmma {

// kPermissionDenied, with the chmod to run, when `path` (the `what` private key) has any
// group/other permission bit set; kIoError if it cannot be stat'ed.
Status CheckOwnerOnlyFile(const std::string& path, std::string_view what);

// The same check for any secret file; `what` names it whole ("vault.password_file").
Status CheckOwnerOnlySecret(const std::string& path, std::string_view what);

}  // namespace tpmma
