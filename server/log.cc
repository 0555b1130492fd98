// SPDX-License-Identifier: GPL-2.0-or-later
#include "server/log.h"

#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <fmt/format.h>

namespace tpmma::server {
namespace {

// Keeps values to one printable token: op and platform come from the request, so without
// this a client could smuggle spaces, quotes or newlines into the log.
std::string Clean(std::string_view v, size_t max_len = 80) {
  if (v.empty()) return "-";
  std::string out;
  for (unsigned char c : v.substr(0, max_len)) {
    out += (c > 0x20 && c < 0x7f && c != '"' && c != '=') ? static_cast<char>(c) : '?';
  }
  if (v.size() > max_len) out += "...";
  return out;
}

}  // namespace

Status InitLogging(std::string_view level) {
  spdlog::level::level_enum lvl = spdlog::level::from_str(std::string(level));
  if (lvl == spdlog::level::off && level != "off") {
    return Status(Code::kInvalidArgument, fmt::format("unknown log level '{}'", level));
  }
  // stderr_sink_mt writes each line with one fwrite under a mutex: lines from io and worker
  // threads never interleave.
  auto logger = std::make_shared<spdlog::logger>("ma-server",
                                                 std::make_shared<spdlog::sinks::stderr_sink_mt>());
  logger->set_pattern("%Y-%m-%dT%H:%M:%S.%eZ %l %v", spdlog::pattern_time_type::utc);
  logger->set_level(lvl);
  logger->flush_on(spdlog::level::trace);  // stderr is unbuffered anyway; keep it explicit
  spdlog::set_default_logger(std::move(logger));
  return Status::Ok();
}

std::string FormatRequestLog(const RequestLog& r) {
  return fmt::format("request op={} platform={} outcome={} status={} latency_ms={:.3f} peer={}",
                     Clean(r.op), Clean(r.platform, 128), Clean(r.outcome), r.http_status,
                     static_cast<double>(r.latency_micros) / 1000.0, Clean(r.peer));
}

void LogRequest(const RequestLog& r) {
  // Health checks arrive every few seconds from each load balancer: debug only.
  auto level = r.op == "healthz" ? spdlog::level::debug : spdlog::level::info;
  if (!spdlog::should_log(level)) return;
  spdlog::log(level, "{}", FormatRequestLog(r));
}

}  // namespace tpmma::server
