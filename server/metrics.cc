// SPDX-License-Identifier: GPL-2.0-or-later
#include "server/metrics.h"

#include <algorithm>
#include <array>

#include <fmt/format.h>

#include "common/status.h"

namespace tpmma::server {

namespace {

// Operations ma_service.cc and operator_service.cc name in Reply::log_op, and the front
// end's own. Fixed at build time: at most Metrics::kMaxOps.
constexpr auto kOperations = std::to_array<std::string_view>({
    "GetMAServiceInfo",
    "GetMAKey",
    "Authenticate",
    "Authenticate.Begin",
    "Authenticate.Complete",
    "Upload",
    "Query",
    "Delete",
    "Download",
    "Download.Prepare",
    "Download.Complete",
    "Operator.WhoAmI",
    "Operator.ListPlatforms",
    "Operator.RevokePlatform",
    "Operator.ListPackages",
    "Operator.Approve",
    "Operator.ConfirmApproval",
    "Operator.RevokeApproval",
    "Operator.ListApprovals",
    "Operator.ListAudit",
    "Operator.VerifyAudit",
    "soap",     // an endpoint that did not name the operation
    "healthz",  // GET /healthz
    "metrics",  // GET /metrics
    "echo",     // POST /echo (bench.echo)
    "-",        // refused before an operation was known (HTTP errors, timeouts)
    "other",    // anything else: last
});
static_assert(kOperations.size() <= Metrics::kMaxOps);
// "ok", the codes after kOk up to kInternal, "Timeout", "other".
static_assert(static_cast<size_t>(Code::kInternal) + 3 <= Metrics::kMaxOutcomes);

std::vector<std::string_view> MakeOutcomes() {
  std::vector<std::string_view> v = {"ok"};
  for (int i = static_cast<int>(Code::kOk) + 1; i <= static_cast<int>(Code::kInternal); ++i) {
    v.push_back(CodeName(static_cast<Code>(i)));
  }
  v.push_back("Timeout");  // the front end's: a request not complete within read_timeout_ms
  v.push_back("other");    // last
  return v;
}

std::string FormatDouble(double v) {
  // Shortest text that reads back as the same double ("0.0025", "10"); Prometheus parses
  // Go's ParseFloat syntax, which this is.
  return fmt::format("{}", v);
}

double Seconds(uint64_t micros) {
  return static_cast<double>(micros) / 1e6;
}

}  // namespace

std::string EscapeLabelValue(std::string_view value) {
  std::string out;
  out.reserve(value.size());
  for (char c : value) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

std::string EscapeHelp(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

void MetricsText::Family(std::string_view name, std::string_view type, std::string_view help) {
  out_ += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, EscapeHelp(help), name, type);
}

void MetricsText::Series(std::string_view name, const Labels& labels, std::string_view extra_name,
                         std::string_view extra_value) {
  out_ += name;
  if (labels.empty() && extra_name.empty()) return;
  out_ += '{';
  bool first = true;
  auto add = [&](std::string_view k, std::string_view v) {
    if (!first) out_ += ',';
    first = false;
    out_ += fmt::format("{}=\"{}\"", k, EscapeLabelValue(v));
  };
  for (const auto& [k, v] : labels) add(k, v);
  if (!extra_name.empty()) add(extra_name, extra_value);
  out_ += '}';
}

void MetricsText::Sample(std::string_view name, const Labels& labels, uint64_t value) {
  Series(name, labels);
  out_ += fmt::format(" {}\n", value);
}

void MetricsText::Sample(std::string_view name, const Labels& labels, double value) {
  Series(name, labels);
  out_ += ' ' + FormatDouble(value) + '\n';
}

void MetricsText::Histogram(std::string_view name, const Labels& labels,
                            const std::vector<double>& bounds, const std::vector<uint64_t>& counts,
                            double sum) {
  const std::string bucket = fmt::format("{}_bucket", name);
  uint64_t cumulative = 0;
  for (size_t i = 0; i < counts.size(); ++i) {
    cumulative += counts[i];
    Series(bucket, labels, "le", i < bounds.size() ? FormatDouble(bounds[i]) : "+Inf");
    out_ += fmt::format(" {}\n", cumulative);
  }
  Series(fmt::format("{}_sum", name), labels);
  out_ += ' ' + FormatDouble(sum) + '\n';
  // _count from the same bucket reads as +Inf, so the two always agree within one scrape.
  Series(fmt::format("{}_count", name), labels);
  out_ += fmt::format(" {}\n", cumulative);
}

const std::vector<std::string_view>& Metrics::Operations() {
  static const std::vector<std::string_view> ops(kOperations.begin(), kOperations.end());
  return ops;
}

const std::vector<std::string_view>& Metrics::Outcomes() {
  static const std::vector<std::string_view> outcomes = MakeOutcomes();
  return outcomes;
}

size_t Metrics::OpIndex(std::string_view op) {
  const auto& ops = Operations();
  if (op.empty()) op = "-";
  auto it = std::find(ops.begin(), ops.end(), op);
  return it == ops.end() ? ops.size() - 1 : static_cast<size_t>(it - ops.begin());
}

size_t Metrics::OutcomeIndex(std::string_view outcome) {
  const auto& outcomes = Outcomes();
  auto it = std::find(outcomes.begin(), outcomes.end(), outcome);
  return it == outcomes.end() ? outcomes.size() - 1 : static_cast<size_t>(it - outcomes.begin());
}

void Metrics::Record(std::string_view op, std::string_view outcome, uint64_t latency_micros) {
  const size_t o = OpIndex(op);
  requests_[o][OutcomeIndex(outcome)].fetch_add(1, std::memory_order_relaxed);
  size_t b = 0;
  while (b < kLatencyBounds.size() && Seconds(latency_micros) > kLatencyBounds[b]) ++b;
  latency_[o].buckets[b].fetch_add(1, std::memory_order_relaxed);
  latency_[o].sum_micros.fetch_add(latency_micros, std::memory_order_relaxed);
}

void Metrics::RenderRequests(MetricsText& out) const {
  const auto& ops = Operations();
  const auto& outcomes = Outcomes();
  // Only series that counted something: a few dozen, not every op x outcome pair.
  out.Family("tpmma_requests_total", "counter",
             "Requests by operation and outcome (\"ok\" or the error code), as logged.");
  for (size_t o = 0; o < ops.size(); ++o) {
    for (size_t r = 0; r < outcomes.size(); ++r) {
      uint64_t n = requests_[o][r].load(std::memory_order_relaxed);
      if (n != 0) out.Sample("tpmma_requests_total", {{"op", ops[o]}, {"outcome", outcomes[r]}}, n);
    }
  }
  out.Family("tpmma_request_duration_seconds", "histogram",
             "Request latency by operation, from the first byte of the request to the reply "
             "written.");
  const std::vector<double> bounds(kLatencyBounds.begin(), kLatencyBounds.end());
  for (size_t o = 0; o < ops.size(); ++o) {
    std::vector<uint64_t> counts;
    uint64_t total = 0;
    for (const auto& b : latency_[o].buckets) {
      counts.push_back(b.load(std::memory_order_relaxed));
      total += counts.back();
    }
    if (total == 0) continue;
    out.Histogram("tpmma_request_duration_seconds", {{"op", ops[o]}}, bounds, counts,
                  Seconds(latency_[o].sum_micros.load(std::memory_order_relaxed)));
  }
}

void Metrics::RenderVault(MetricsText& out, const storage::VaultStats& v, bool healthy) {
  auto counter = [&](std::string_view name, std::string_view help, uint64_t value) {
    out.Family(name, "counter", help);
    out.Sample(name, {}, value);
  };
  auto gauge = [&](std::string_view name, std::string_view help, uint64_t value) {
    out.Family(name, "gauge", help);
    out.Sample(name, {}, value);
  };
  gauge("tpmma_vault_healthy", "1 if the vault answered its last health probe, else 0.",
        healthy ? 1 : 0);
  counter("tpmma_vault_write_calls_total", "Vault write calls completed, whatever their outcome.",
          v.calls);
  counter("tpmma_vault_commits_total", "Vault transactions committed (one durable flush each).",
          v.commits);
  out.Family("tpmma_vault_batch_size", "histogram",
             "Write calls per vault transaction (group commit; 1 without it).");
  const std::vector<double> bounds(storage::kBatchSizeBounds.begin(),
                                   storage::kBatchSizeBounds.end());
  const std::vector<uint64_t> counts(v.batch_sizes.begin(), v.batch_sizes.end());
  out.Histogram("tpmma_vault_batch_size", {}, bounds, counts, static_cast<double>(v.batch_calls));
  gauge("tpmma_vault_largest_batch", "Most write calls that ever shared one vault transaction.",
        v.largest_batch);
  gauge("tpmma_vault_queued_calls", "Vault write calls waiting for a transaction.", v.queued);
  gauge("tpmma_vault_deferred_audit_queued", "Read-audit records waiting to be committed.",
        v.deferred_queued);
  counter("tpmma_vault_deferred_audit_committed_total",
          "Read-audit records committed to the audit chain.", v.deferred_committed);
  counter("tpmma_vault_deferred_audit_lost_total",
          "Read-audit records given up because their batch failed to commit.", v.deferred_lost);
  counter("tpmma_vault_errors_total",
          "Vault calls that failed with IoError, Corruption or Unavailable.", v.errors);
}

std::string Metrics::Render(const MetricsSnapshot& s) const {
  MetricsText out;
  out.Family("tpmma_build_info", "gauge", "The ma-server version; always 1.");
  out.Sample("tpmma_build_info", {{"version", version_}}, uint64_t{1});
  RenderRequests(out);
  out.Family("tpmma_http_connections_open", "gauge", "TLS connections open.");
  out.Sample("tpmma_http_connections_open", {},
             static_cast<uint64_t>(std::max(s.connections_open, 0)));
  out.Family("tpmma_http_connections_rejected_total", "counter",
             "Connections closed at accept: server.max_connections or "
             "server.max_connections_per_peer reached.");
  out.Sample("tpmma_http_connections_rejected_total", {}, s.connections_rejected);
  out.Family("tpmma_requests_queued", "gauge", "Requests waiting for a worker thread.");
  out.Sample("tpmma_requests_queued", {}, static_cast<uint64_t>(s.requests_queued));
  out.Family("tpmma_inflight_body_bytes", "gauge",
             "Request body bytes admitted against limits.max_inflight_bytes.");
  out.Sample("tpmma_inflight_body_bytes", {}, s.inflight_body_bytes);
  if (s.vault) RenderVault(out, *s.vault, s.vault_healthy);
  return out.Take();
}

}  // namespace tpmma::server
