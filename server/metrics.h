// SPDX-License-Identifier: GPL-2.0-or-later
// ma-server's metrics for GET /metrics, in the Prometheus text exposition format 0.0.4
// (docs/operations.md, "Metrics"). No Prometheus client library: the format is a few lines
// of text, and none is packaged for C++ in Debian.
//
// Recording is lock-free (relaxed atomics in fixed arrays), because it happens once per
// request on an I/O thread. Label sets are bounded by construction: an operation or an
// outcome not in the fixed lists below is counted as "other", so a client sending invented
// operation names cannot grow memory or the scrape. No label ever holds a peer address, a
// platform id or anything else a client chose.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "storage/vault_stats.h"

namespace tpmma::server {

// --- The text format (exposed for tests)

// A label value with `\`, `"` and newline escaped as the format requires.
std::string EscapeLabelValue(std::string_view value);
// A HELP text with `\` and newline escaped.
std::string EscapeHelp(std::string_view text);

using Labels = std::vector<std::pair<std::string_view, std::string_view>>;

// Writes metric families: each Family() line pair (# HELP, # TYPE), then its samples.
class MetricsText {
 public:
  void Family(std::string_view name, std::string_view type, std::string_view help);
  void Sample(std::string_view name, const Labels& labels, uint64_t value);
  void Sample(std::string_view name, const Labels& labels, double value);
  // A histogram's samples from per-bucket (non-cumulative) counts: one `_bucket` per bound
  // with the cumulative count, `le="+Inf"` (= `_count`), `_sum` and `_count`. `counts` has
  // one entry more than `bounds` (above every bound).
  void Histogram(std::string_view name, const Labels& labels, const std::vector<double>& bounds,
                 const std::vector<uint64_t>& counts, double sum);
  // The text, ending with a newline.
  std::string Take() { return std::move(out_); }

 private:
  void Series(std::string_view name, const Labels& labels, std::string_view extra_name = {},
              std::string_view extra_value = {});
  std::string out_;
};

// --- The registry

// What the front end and the endpoint know at scrape time (gauges, the vault's counters).
struct MetricsSnapshot {
  int connections_open = 0;
  uint64_t connections_rejected = 0;
  size_t requests_queued = 0;
  uint64_t inflight_body_bytes = 0;
  std::optional<storage::VaultStats> vault;  // none: the endpoint has no vault
  bool vault_healthy = false;
};

class Metrics {
 public:
  // Request latency buckets, in seconds.
  static constexpr std::array<double, 13> kLatencyBounds = {
      0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};

  // The operations counted by name (the request log's `op=`): the MA's and the operator
  // operations, the front end's own routes, and "-" for requests refused before an
  // operation was known. Anything else is "other".
  static const std::vector<std::string_view>& Operations();
  // "ok", every CodeName, and the front end's "Timeout"; anything else is "other".
  static const std::vector<std::string_view>& Outcomes();

  // Capacity of the fixed arrays; the lists above are checked against it at build time.
  static constexpr size_t kMaxOps = 32;
  static constexpr size_t kMaxOutcomes = 32;

  explicit Metrics(std::string version) : version_(std::move(version)) {}
  Metrics(const Metrics&) = delete;
  Metrics& operator=(const Metrics&) = delete;

  // One request, as its log line says (called where the line is written, so the two agree).
  void Record(std::string_view op, std::string_view outcome, uint64_t latency_micros);

  // The whole exposition, ending with a newline.
  std::string Render(const MetricsSnapshot& snapshot) const;

 private:
  struct LatencyHistogram {
    std::array<std::atomic<uint64_t>, kLatencyBounds.size() + 1> buckets{};
    std::atomic<uint64_t> sum_micros{0};
  };

  static size_t OpIndex(std::string_view op);
  static size_t OutcomeIndex(std::string_view outcome);
  void RenderRequests(MetricsText& out) const;
  static void RenderVault(MetricsText& out, const storage::VaultStats& v, bool healthy);

  const std::string version_;
  std::array<std::array<std::atomic<uint64_t>, kMaxOutcomes>, kMaxOps> requests_{};
  std::array<LatencyHistogram, kMaxOps> latency_{};
};

}  // namespace tpmma::server
