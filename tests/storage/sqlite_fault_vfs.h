// SPDX-License-Identifier: GPL-2.0-or-later
// A SQLite VFS for tests that passes everything to the default VFS and, on command, fails
// what a full disk, a failing fsync or a file system remounted read-only would fail: the
// vault's Env, in LevelDB's sense (SqliteVaultOptions::vfs names it).
#pragma once

#include <atomic>
#include <string>

namespace tpmma::storage::testing {

class FaultVfs {
 public:
  // Registers the VFS (once per process) under kName; not the default.
  static FaultVfs& Get();
  static constexpr const char* kName = "tpmma-fault";

  // Each write (xWrite, xTruncate) returns this SQLite code; 0: writes succeed.
  // SQLITE_FULL is a full disk, SQLITE_IOERR_WRITE a failing device, SQLITE_READONLY a
  // file system that was remounted read-only.
  void FailWrites(int sqlite_code) { write_error_.store(sqlite_code); }
  // Each xSync returns this code (SQLITE_IOERR_FSYNC); 0: syncs succeed.
  void FailSyncs(int sqlite_code) { sync_error_.store(sqlite_code); }
  void Clear() {
    write_error_.store(0);
    sync_error_.store(0);
  }
  int failed_writes() const { return failed_writes_.load(); }
  int failed_syncs() const { return failed_syncs_.load(); }

  int write_error() const { return write_error_.load(); }
  int sync_error() const { return sync_error_.load(); }
  void CountWrite() { ++failed_writes_; }
  void CountSync() { ++failed_syncs_; }

 private:
  FaultVfs();
  std::atomic<int> write_error_{0};
  std::atomic<int> sync_error_{0};
  std::atomic<int> failed_writes_{0};
  std::atomic<int> failed_syncs_{0};
};

}  // namespace tpmma::storage::testing
