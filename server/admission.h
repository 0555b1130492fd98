// SPDX-License-Identifier: GPL-2.0-or-later
// Who may take the front end's connection slots and memory (issue #13, finding 7): without
// these, one peer could hold every one of server.max_connections, and 1,024 connections with
// 16 MiB bodies each would be 16 GiB in flight.
//
// - A peer (one IP address) holds at most server.max_connections_per_peer connections;
//   beyond that its new connections are closed at accept, before the handshake.
// - The request bodies being read or handled hold at most limits.max_inflight_bytes in all;
//   a request that would pass it gets 503 + Retry-After on its header, before its body is
//   read. Each request reserves its Content-Length until its reply is written.
//
// Thread-safe: I/O threads admit and reserve, connections release from any thread.
#pragma once

#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>

namespace tpmma::server {

class Admission {
 public:
  // 0 for either: no limit of that kind.
  Admission(int max_per_peer, uint64_t max_inflight_bytes)
      : max_per_peer_(max_per_peer), max_inflight_bytes_(max_inflight_bytes) {}
  Admission(const Admission&) = delete;
  Admission& operator=(const Admission&) = delete;

  // A connection slot of one peer, given back when destroyed.
  class PeerSlot {
   public:
    PeerSlot(PeerSlot&& other) noexcept
        : owner_(std::exchange(other.owner_, nullptr)), peer_(std::move(other.peer_)) {}
    PeerSlot& operator=(PeerSlot&& other) noexcept {
      if (this != &other) {
        Release();
        owner_ = std::exchange(other.owner_, nullptr);
        peer_ = std::move(other.peer_);
      }
      return *this;
    }
    ~PeerSlot() { Release(); }

   private:
    friend class Admission;
    void Release();
    PeerSlot(Admission* owner, std::string peer) : owner_(owner), peer_(std::move(peer)) {}
    Admission* owner_;
    std::string peer_;
  };

  // Bytes of the in-flight budget, given back when destroyed.
  class Reservation {
   public:
    Reservation(Reservation&& other) noexcept
        : owner_(std::exchange(other.owner_, nullptr)), bytes_(other.bytes_) {}
    Reservation& operator=(Reservation&& other) noexcept {
      if (this != &other) {
        Release();
        owner_ = std::exchange(other.owner_, nullptr);
        bytes_ = other.bytes_;
      }
      return *this;
    }
    ~Reservation() { Release(); }

   private:
    friend class Admission;
    void Release();
    Reservation(Admission* owner, uint64_t bytes) : owner_(owner), bytes_(bytes) {}
    Admission* owner_;
    uint64_t bytes_;
  };

  // nullopt: `peer` (an address, without port) already holds max_per_peer connections.
  std::optional<PeerSlot> AdmitPeer(const std::string& peer);
  // A slot counted against no peer: a connection from a trusted load balancer until its
  // PROXY line names the client, whose slot then replaces this one.
  static PeerSlot Unmetered() { return PeerSlot(nullptr, {}); }
  // nullopt: `bytes` more would pass max_inflight_bytes.
  std::optional<Reservation> Reserve(uint64_t bytes);

  uint64_t inflight_bytes() const;
  int connections_of(const std::string& peer) const;

 private:
  void ReleasePeer(const std::string& peer);
  void ReleaseBytes(uint64_t bytes);

  const int max_per_peer_;
  const uint64_t max_inflight_bytes_;
  mutable std::mutex mu_;
  std::unordered_map<std::string, int> per_peer_;
  uint64_t inflight_bytes_ = 0;
};

}  // namespace tpmma::server
