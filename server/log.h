// SPDX-License-Identifier: GPL-2.0-or-later
// ma-server's logging: spdlog to stderr (journald or the container runtime adds the rest),
// UTC timestamps, and one structured line per request. Request bodies, tokens and keys are
// never logged: a request line carries only what RequestLog holds.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "common/status.h"

namespace tpmma::server {

// Sets up the process-wide logger on stderr. `level`: trace, debug, info, warn, error.
Status InitLogging(std::string_view level);

struct RequestLog {
  std::string_view op;        // SOAP operation, "healthz", "echo", or "-" (refused early)
  std::string_view platform;  // platform id from the endpoint, or empty
  std::string_view outcome;   // "ok" or a CodeName()
  unsigned http_status = 0;
  uint64_t latency_micros = 0;
  std::string_view peer;  // "127.0.0.1:53422"
};

// One line: `request op=Upload platform=000b4f.. outcome=ok status=200 latency_ms=1.234
// peer=127.0.0.1:53422`. Values are sanitized so a client cannot forge log lines.
void LogRequest(const RequestLog& r);

// The same line, as text (for tests).
std::string FormatRequestLog(const RequestLog& r);

}  // namespace tpmma::server
