// SPDX-License-Identifier: GPL-2.0-or-later
#include "server/refusal_limiter.h"

#include <algorithm>

#include "common/text.h"

namespace tpmma::server {
namespace {

// A peer string longer than any address is clipped: the map's keys stay small.
constexpr size_t kMaxPeerKey = 64;

}  // namespace

RefusalLimiter::RefusalLimiter(RefusalLimits limits) : limits_(limits) {
  limits_.window_s = std::max<int64_t>(limits_.window_s, 1);
  limits_.max_peers = std::max<size_t>(limits_.max_peers, 1);
}

void RefusalLimiter::Close(const std::string& peer, const Entry& e,
                           std::vector<RefusalSummary>* out) const {
  if (e.count <= limits_.per_window) return;
  out->push_back(RefusalSummary{.peer = peer,
                                .window_start = e.window_start,
                                .window_end = e.window_start + limits_.window_s,
                                .recorded = limits_.per_window,
                                .suppressed = e.count - limits_.per_window});
}

RefusalLimiter::Decision RefusalLimiter::Admit(std::string_view peer_in, int64_t now) {
  const std::string peer(peer_in.substr(0, kMaxPeerKey));
  Decision d;
  std::lock_guard lock(mu_);
  auto it = peers_.find(peer);
  if (it != peers_.end() && now >= it->second.window_start + limits_.window_s) {
    // The window rolled over: its summary now, and a fresh window from this refusal.
    Close(peer, it->second, &d.summaries);
    order_.erase(it->second.order);
    peers_.erase(it);
    it = peers_.end();
  }
  if (it == peers_.end()) {
    while (peers_.size() >= limits_.max_peers && !order_.empty()) {
      auto oldest = peers_.find(order_.front());
      Close(oldest->first, oldest->second, &d.summaries);
      peers_.erase(oldest);
      order_.pop_front();
    }
    order_.push_back(peer);
    it = peers_.emplace(peer, Entry{now, 0, std::prev(order_.end())}).first;
  }
  ++it->second.count;
  d.record = it->second.count <= limits_.per_window;
  return d;
}

std::vector<RefusalSummary> RefusalLimiter::TakeEnded(int64_t now, bool all) {
  std::vector<RefusalSummary> out;
  std::lock_guard lock(mu_);
  // order_ is by window start, so the ended windows are a prefix (unless the clock went back).
  while (!order_.empty()) {
    auto it = peers_.find(order_.front());
    if (!all && now < it->second.window_start + limits_.window_s) break;
    Close(it->first, it->second, &out);
    peers_.erase(it);
    order_.pop_front();
  }
  return out;
}

size_t RefusalLimiter::tracked() const {
  std::lock_guard lock(mu_);
  return peers_.size();
}

std::string PeerAddress(std::string_view peer) {
  if (peer.starts_with('[')) {
    const size_t close = peer.find(']');
    if (close != std::string_view::npos) return std::string(peer.substr(1, close - 1));
  }
  const size_t colon = peer.rfind(':');
  // One colon: IPv4 with a port. More (a bare IPv6 address) or none: the whole string.
  if (colon != std::string_view::npos && peer.find(':') == colon) {
    return std::string(peer.substr(0, colon));
  }
  return std::string(peer);
}

bool IsAnonymousActor(std::string_view actor) {
  return actor == "anonymous" || actor.starts_with("claimed:");
}

storage::AuditEvent SummaryEvent(const RefusalSummary& s, int64_t now) {
  storage::AuditEvent e;
  e.time = now;
  e.actor = "anonymous";
  e.action = "AnonymousRefusals";
  e.object = ForAudit(s.peer.empty() ? "(no peer)" : s.peer, 256);
  e.outcome = "RateLimited";
  e.detail = std::to_string(s.suppressed) + " anonymous refusal(s) from peer " + e.object +
             " suppressed in window " + Utc(s.window_start) + " .. " + Utc(s.window_end) +
             " (the first " + std::to_string(s.recorded) + " were recorded)";
  return e;
}

}  // namespace tpmma::server
