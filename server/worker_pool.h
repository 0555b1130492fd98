// SPDX-License-Identifier: GPL-2.0-or-later
// The front end's workers (server/http_server.cc): they call Endpoint::Handle, so the I/O
// threads never block on a vault commit or a TPM.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace tpmma::server {

// A fixed pool of worker threads with a bounded queue. TryPost refuses instead of
// blocking: the caller is an I/O thread, which must never wait.
class WorkerPool {
 public:
  WorkerPool(int threads, size_t max_queued)
      : max_queued_(max_queued), thread_count_(static_cast<size_t>(threads)) {
    for (int i = 0; i < threads; ++i) threads_.emplace_back([this] { Loop(); });
  }
  ~WorkerPool() { Shutdown(); }
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  bool TryPost(std::function<void()> job) {
    {
      std::lock_guard lock(mu_);
      if (stopping_ || queue_.size() >= max_queued_) return false;
      queue_.push_back(std::move(job));
    }
    cv_.notify_one();
    return true;
  }

  size_t queued() const {
    std::lock_guard lock(mu_);
    return queue_.size();
  }

  // Every worker is busy and a request is waiting: a request now would wait too. /healthz
  // says so, so that a load balancer sends the next one elsewhere.
  bool saturated() const {
    std::lock_guard lock(mu_);
    return busy_ >= thread_count_ && !queue_.empty();
  }

  // Runs what is already queued, then joins.
  void Shutdown() {
    {
      std::lock_guard lock(mu_);
      if (stopping_ && threads_.empty()) return;
      stopping_ = true;
    }
    cv_.notify_all();
    for (std::thread& t : threads_) t.join();
    threads_.clear();
  }

 private:
  void Loop() {
    for (;;) {
      std::function<void()> job;
      {
        std::unique_lock lock(mu_);
        cv_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
        if (queue_.empty()) return;
        job = std::move(queue_.front());
        queue_.pop_front();
        ++busy_;
      }
      job();
      std::lock_guard lock(mu_);
      --busy_;
    }
  }

  const size_t max_queued_;
  const size_t thread_count_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> queue_;
  bool stopping_ = false;
  size_t busy_ = 0;
  std::vector<std::thread> threads_;
};

}  // namespace tpmma::server
