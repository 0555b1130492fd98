// SPDX-License-Identifier: GPL-2.0-or-later
// Anonymous refusals are counted per peer, not each written as an audit row (issue #13,
// finding 3). A caller with no valid session and no operator certificate costs the MA one
// durable audit row per refused request otherwise: about 4,800 rows/s from one client into
// an append-only table. Here the first `per_window` anonymous refusals of a peer address in
// a window are recorded as before; the rest of that window are only counted, and when the
// window ends (the peer's next refusal, the periodic sweep, eviction or shutdown) one
// summary row says how many were suppressed. Refusals of authenticated callers (a platform
// session, an operator) are never limited: each stays on record.
//
// Memory is bounded: at most `max_peers` peers are tracked; a new one evicts the one whose
// window started first (its summary is returned for writing). Time is what the caller
// passes (Env::NowUnixSeconds), so tests move it.
#pragma once

#include <cstdint>
#include <list>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "storage/vault.h"

namespace tpmma::server {

struct RefusalLimits {
  uint32_t per_window = 5;  // anonymous refusals recorded per peer and window
  int64_t window_s = 60;
  size_t max_peers = 4096;
};

// One peer's window whose refusals beyond the limit were only counted.
struct RefusalSummary {
  std::string peer;
  int64_t window_start = 0;
  int64_t window_end = 0;
  uint64_t recorded = 0;
  uint64_t suppressed = 0;
};

class RefusalLimiter {
 public:
  explicit RefusalLimiter(RefusalLimits limits = {});

  struct Decision {
    bool record = true;                     // write this refusal's own row
    std::vector<RefusalSummary> summaries;  // windows that ended: write one row each
  };
  // One anonymous refusal from `peer` (an address, see PeerAddress) at `now`. Thread-safe.
  Decision Admit(std::string_view peer, int64_t now);
  // The summaries of windows ended by `now` (all of them if `all`), forgotten once returned.
  std::vector<RefusalSummary> TakeEnded(int64_t now, bool all = false);

  size_t tracked() const;

 private:
  struct Entry {
    int64_t window_start = 0;
    uint64_t count = 0;  // refusals in this window, recorded or not
    std::list<std::string>::iterator order;
  };
  // The summary of `e` if it suppressed anything.
  void Close(const std::string& peer, const Entry& e, std::vector<RefusalSummary>* out) const;

  RefusalLimits limits_;
  mutable std::mutex mu_;
  std::unordered_map<std::string, Entry> peers_;  // guarded by mu_
  std::list<std::string> order_;                  // by window start, oldest first; guarded by mu_
};

// The address part of a RequestInfo peer: "192.0.2.1:5000" -> "192.0.2.1", "[::1]:443" ->
// "::1". Limits are per address: a client gets a new port with every connection.
std::string PeerAddress(std::string_view peer);

// Not an authenticated platform or operator: "anonymous", or "claimed:<name>" (an
// Authenticate.Begin refused before its EK chain checked).
bool IsAnonymousActor(std::string_view actor);

// The summary's audit row: actor "anonymous", action "AnonymousRefusals", object the peer,
// outcome "RateLimited", detail the count and the window; written at `now`.
storage::AuditEvent SummaryEvent(const RefusalSummary& s, int64_t now);

}  // namespace tpmma::server
