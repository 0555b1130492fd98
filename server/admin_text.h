// SPDX-License-Identifier: GPL-2.0-or-later
// How ma-admin's local commands (admin_commands.cc, admin_platforms.cc) print text.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <utility>

#include <nlohmann/json.hpp>

#include "common/text.h"
#include "server/admin_commands.h"

namespace tpmma::server {

// A time column: "-" for never, else UTC as every JSON output writes it.
inline std::string Iso(int64_t t) {
  return t == 0 ? "-" : Utc(t);
}

// Every text line ma-admin prints holds values callers chose (KeyIds, audit details,
// inventory): escaped, so none can forge a line or run a terminal escape (issue #13).
inline void Line(const AdminContext& ctx, const std::string& s) {
  std::fprintf(ctx.out, "%s\n", EscapeForTerminal(s).c_str());
}

// A JSON answer (--json).
inline void Print(const AdminContext& ctx, const nlohmann::json& j) {
  std::fprintf(ctx.out, "%s\n", j.dump(2).c_str());
}

// The audit event of a change an administrator made on the MA host.
inline storage::AuditEvent AdminEvent(const AdminContext& ctx, std::string action,
                                      std::string object, std::string detail) {
  return storage::AuditEvent{.time = ctx.env->NowUnixSeconds(),
                             .actor = ctx.actor,
                             .action = std::move(action),
                             .object = std::move(object),
                             .outcome = "ok",
                             .detail = std::move(detail)};
}

}  // namespace tpmma::server
