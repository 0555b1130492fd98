// SPDX-License-Identifier: GPL-2.0-or-later
// All operating-system access (files, clock) goes through an Env, as in LevelDB, so that
// tests can inject faults (a full disk, a failed rename) and move time forward (TTLs).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/bytes.h"
#include "common/status.h"

namespace tpmma {

class Env {
 public:
  virtual ~Env() = default;

  // The process-wide POSIX implementation. Never destroyed.
  static Env* Default();

  virtual Result<Bytes> ReadFile(const std::string& path, size_t max_size);
  // Writes to a temporary file in the same directory, fsyncs it, renames it over `path`
  // and fsyncs the directory: after success the new content survives power loss; after
  // failure the old content (if any) is still there, whole.
  virtual Status WriteFileAtomic(const std::string& path, ByteView data, uint32_t mode);
  virtual bool FileExists(const std::string& path);
  virtual Status RemoveFile(const std::string& path);
  // For key material: overwrites the file's bytes in place (random, then zeros), fsyncs and
  // removes it. On flash or copy-on-write file systems old blocks may survive anyway
  // (docs/operations.md says what that means for a retired key).
  virtual Status DestroyFile(const std::string& path);
  // Creates the directory (and parents) with `mode` for any it creates.
  virtual Status CreateDirs(const std::string& path, uint32_t mode);
  virtual Result<std::vector<std::string>> ListDir(const std::string& path);

  // Wall-clock time in seconds since the Unix epoch (for TTLs and timestamps).
  virtual int64_t NowUnixSeconds();
  // Monotonic microseconds (for latency and deadlines).
  virtual uint64_t NowMicros();
};

// Forwards everything to another Env; tests subclass it to fail or fake selected calls.
class EnvWrapper : public Env {
 public:
  explicit EnvWrapper(Env* target) : target_(target) {}
  Result<Bytes> ReadFile(const std::string& path, size_t max_size) override {
    return target_->ReadFile(path, max_size);
  }
  Status WriteFileAtomic(const std::string& path, ByteView data, uint32_t mode) override {
    return target_->WriteFileAtomic(path, data, mode);
  }
  bool FileExists(const std::string& path) override { return target_->FileExists(path); }
  Status RemoveFile(const std::string& path) override { return target_->RemoveFile(path); }
  Status DestroyFile(const std::string& path) override { return target_->DestroyFile(path); }
  Status CreateDirs(const std::string& path, uint32_t mode) override {
    return target_->CreateDirs(path, mode);
  }
  Result<std::vector<std::string>> ListDir(const std::string& path) override {
    return target_->ListDir(path);
  }
  int64_t NowUnixSeconds() override { return target_->NowUnixSeconds(); }
  uint64_t NowMicros() override { return target_->NowMicros(); }

 protected:
  Env* target() const { return target_; }

 private:
  Env* target_;
};

}  // namespace tpmma
