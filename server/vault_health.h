// SPDX-License-Identifier: GPL-2.0-or-later
// Whether the vault answers, for GET /healthz. A load balancer asks every second or two, from
// every balancer, and the answer is given on an I/O thread: so the vault is never asked per
// health check. One thread asks it a cheap read (GetAuditHead) once per interval, and
// /healthz reads the last answer. A read that fails makes the vault "not answering" at
// once; a read that hangs (a database behind a dead network) does after `max_age`, so a stuck
// database is seen within a few seconds without any timeout in the vault itself.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>

#include "storage/vault.h"

namespace tpmma::server {

class VaultHealth {
 public:
  struct Options {
    std::chrono::milliseconds interval{1000};
    // The last good answer older than this: not answering (interval + the read's timeout).
    std::chrono::milliseconds max_age{3000};
  };

  // Starts the probing thread; `vault` must outlive this. The first probe runs before the
  // constructor returns, so a new MA answers /healthz truthfully from its first request.
  VaultHealth(storage::Vault* vault, Options options);
  ~VaultHealth();
  VaultHealth(const VaultHealth&) = delete;
  VaultHealth& operator=(const VaultHealth&) = delete;

  // Never blocks: for I/O threads.
  bool Answering() const;

 private:
  void Probe();
  void Loop(std::stop_token stop);

  storage::Vault* const vault_;
  const Options options_;
  // steady_clock ticks of the last good answer; 0: the last probe failed.
  std::atomic<int64_t> last_ok_{0};
  bool reported_down_ = false;  // the probe thread's own: one warning per outage
  std::mutex mu_;
  std::condition_variable_any cv_;
  std::jthread thread_;  // last: stopped first
};

}  // namespace tpmma::server
