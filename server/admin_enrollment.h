// SPDX-License-Identifier: GPL-2.0-or-later
// The enrollment policy's ma-admin commands (docs/operations.md, "Enrollment policy"):
//
//   ma-admin platforms register --ek-public FILE | --ek-cert FILE [--label TEXT]
//   ma-admin platforms register --csv FILE
//   ma-admin platforms registrations
//   ma-admin platforms accept ID
//
// `register` is for the "registered" policy: the EK public (a TPM2B_PUBLIC file, registered
// by its EK key id, server/ek_identity.h) or the EK certificate (PEM or DER, registered by
// the SHA-256 of its DER), or a CSV file (a header row naming the columns ek_key_id or
// ek_cert_sha256 (64 hex digits) and label; no quoting). A CSV file is registered all or
// nothing: any bad line refuses the whole file, naming every bad line. `accept` lets a
// platform left pending by the "approve-first" policy authenticate. All audited.
#pragma once

#include <string>

#include "common/status.h"
#include "server/admin_commands.h"

namespace tpmma::server {

struct RegisterOptions {
  std::string ek_public;  // exactly one of these three
  std::string ek_cert;
  std::string csv;
  std::string label;  // not with csv (the file has its own)
};

Status RegisterPlatforms(const AdminContext& ctx, const RegisterOptions& options);
Status ListRegistrations(const AdminContext& ctx);
Status AcceptPlatform(const AdminContext& ctx, const std::string& id);

// The registrations a CSV text stands for (`origin` names it in errors: "FILE:LINE: ...").
// kInvalidArgument listing every bad line.
Result<std::vector<storage::PlatformRegistration>> ParseRegistrationCsv(std::string_view text,
                                                                        const std::string& origin,
                                                                        int64_t now);

}  // namespace tpmma::server
