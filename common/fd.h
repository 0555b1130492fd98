// SPDX-License-Identifier: GPL-2.0-or-later
// Owns a POSIX file descriptor: closed when this goes (the Env's files, the vault's backups).
#pragma once

#include <unistd.h>

#include <utility>

namespace tpmma {

class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  int release() { return std::exchange(fd_, -1); }

 private:
  int fd_;
};

}  // namespace tpmma
