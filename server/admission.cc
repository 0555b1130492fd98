// SPDX-License-Identifier: GPL-2.0-or-later
#include "server/admission.h"

namespace tpmma::server {

void Admission::PeerSlot::Release() {
  if (owner_ != nullptr) owner_->ReleasePeer(peer_);
  owner_ = nullptr;
}

void Admission::Reservation::Release() {
  if (owner_ != nullptr) owner_->ReleaseBytes(bytes_);
  owner_ = nullptr;
}

std::optional<Admission::PeerSlot> Admission::AdmitPeer(const std::string& peer) {
  std::lock_guard lock(mu_);
  int& n = per_peer_[peer];
  if (max_per_peer_ > 0 && n >= max_per_peer_) {
    if (n == 0) per_peer_.erase(peer);
    return std::nullopt;
  }
  ++n;
  return PeerSlot(this, peer);
}

std::optional<Admission::Reservation> Admission::Reserve(uint64_t bytes) {
  std::lock_guard lock(mu_);
  if (max_inflight_bytes_ > 0 &&
      (bytes > max_inflight_bytes_ || inflight_bytes_ > max_inflight_bytes_ - bytes)) {
    return std::nullopt;
  }
  inflight_bytes_ += bytes;
  return Reservation(this, bytes);
}

uint64_t Admission::inflight_bytes() const {
  std::lock_guard lock(mu_);
  return inflight_bytes_;
}

int Admission::connections_of(const std::string& peer) const {
  std::lock_guard lock(mu_);
  auto it = per_peer_.find(peer);
  return it == per_peer_.end() ? 0 : it->second;
}

void Admission::ReleasePeer(const std::string& peer) {
  std::lock_guard lock(mu_);
  auto it = per_peer_.find(peer);
  if (it == per_peer_.end()) return;
  if (--it->second <= 0) per_peer_.erase(it);  // the map holds only peers with connections
}

void Admission::ReleaseBytes(uint64_t bytes) {
  std::lock_guard lock(mu_);
  inflight_bytes_ -= bytes < inflight_bytes_ ? bytes : inflight_bytes_;
}

}  // namespace tpmma::server
