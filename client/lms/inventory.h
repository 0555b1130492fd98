// SPDX-License-Identifier: GPL-2.0-or-later
// What lms tells the MA about this machine with every Authenticate Complete (issue #12), so
// that a helpdesk can find "Alice's laptop" by hostname, serial or owner label instead of
// the hex EK Name. Informational only: the MA identifies the platform by its EK.
#pragma once

#include <string>
#include <string_view>

#include "client/ma/ma_client.h"
#include "common/env.h"
#include "common/status.h"
#include "tpm/esys/esys.h"

namespace tpmma::lms {

// Where CollectInventory reads; tests point it at a fake tree.
struct InventorySources {
  std::string os_release = "/etc/os-release";
  std::string machine_id = "/etc/machine-id";
  std::string dmi_dir = "/sys/class/dmi/id";  // sys_vendor, product_name, product_serial, ...
};

// Hostname and kernel release from the OS, os-release PRETTY_NAME, DMI values, machine-id
// (through `env`), the TPM's manufacturer/vendor/firmware (if `tpm` is given) and
// `owner_label`. A file that is missing or unreadable (product_serial is root-only) leaves
// its field out; values with control characters or invalid UTF-8 are left out too, and long
// ones cut to 256 characters, so that the MA never refuses a report for what the machine
// says. Never fails.
ma::PlatformInventory CollectInventory(Env& env, esys::Tpm* tpm, std::string_view owner_label,
                                       const InventorySources& sources = {});

// The owner label as the MA accepts it: at most 256 characters of valid UTF-8, no control
// characters. kInvalidArgument saying which.
Status CheckOwnerLabel(std::string_view label);

// "field  value" lines of the fields that are set, for `lms status`.
std::string InventoryText(const ma::PlatformInventory& inventory, std::string_view indent);

}  // namespace tpmma::lms
