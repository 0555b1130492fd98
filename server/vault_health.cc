// SPDX-License-Identifier: GPL-2.0-or-later
#include "server/vault_health.h"

#include <spdlog/spdlog.h>

namespace tpmma::server {

using Clock = std::chrono::steady_clock;

VaultHealth::VaultHealth(storage::Vault* vault, Options options)
    : vault_(vault), options_(options) {
  Probe();
  thread_ = std::jthread([this](std::stop_token stop) { Loop(stop); });
}

VaultHealth::~VaultHealth() {
  thread_.request_stop();
  cv_.notify_all();
}

bool VaultHealth::Answering() const {
  const int64_t last = last_ok_.load(std::memory_order_relaxed);
  if (last == 0) return false;
  return Clock::now() - Clock::time_point(Clock::duration(last)) <= options_.max_age;
}

void VaultHealth::Probe() {
  auto head = vault_->GetAuditHead();
  if (head) {
    if (reported_down_) spdlog::info("vault answers again");
    reported_down_ = false;
    last_ok_.store(Clock::now().time_since_epoch().count(), std::memory_order_relaxed);
    return;
  }
  last_ok_.store(0, std::memory_order_relaxed);
  // The vault's messages name the database (host, port, name, user), never its password.
  if (!reported_down_) spdlog::warn("vault does not answer: {}", head.error().ToString());
  reported_down_ = true;
}

void VaultHealth::Loop(std::stop_token stop) {
  std::unique_lock lock(mu_);
  while (!stop.stop_requested()) {
    if (cv_.wait_for(lock, stop, options_.interval, [] { return false; })) break;
    if (stop.stop_requested()) break;
    lock.unlock();
    Probe();
    lock.lock();
  }
}

}  // namespace tpmma::server
