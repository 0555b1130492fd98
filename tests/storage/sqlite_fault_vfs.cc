// SPDX-License-Identifier: GPL-2.0-or-later
// The shim: each file opened through it is the default VFS's file with our io_methods in
// front; only xWrite, xTruncate and xSync look at the faults.
#include "tests/storage/sqlite_fault_vfs.h"

#include <sqlite3.h>

#include <cstring>
#include <mutex>

namespace tpmma::storage::testing {
namespace {

sqlite3_vfs* g_base = nullptr;

// Our file: the base VFS's file follows it in the same allocation (szOsFile covers both).
struct ShimFile {
  sqlite3_file base;  // our methods
  sqlite3_file* real() { return reinterpret_cast<sqlite3_file*>(this + 1); }
};

sqlite3_file* Real(sqlite3_file* f) {
  return reinterpret_cast<ShimFile*>(f)->real();
}

int Close(sqlite3_file* f) {
  return Real(f)->pMethods ? Real(f)->pMethods->xClose(Real(f)) : SQLITE_OK;
}
int Read(sqlite3_file* f, void* buf, int n, sqlite3_int64 off) {
  return Real(f)->pMethods->xRead(Real(f), buf, n, off);
}
int Write(sqlite3_file* f, const void* buf, int n, sqlite3_int64 off) {
  if (int code = FaultVfs::Get().write_error(); code != 0) {
    FaultVfs::Get().CountWrite();
    return code;
  }
  return Real(f)->pMethods->xWrite(Real(f), buf, n, off);
}
int Truncate(sqlite3_file* f, sqlite3_int64 size) {
  if (int code = FaultVfs::Get().write_error(); code != 0) {
    FaultVfs::Get().CountWrite();
    return code;
  }
  return Real(f)->pMethods->xTruncate(Real(f), size);
}
int Sync(sqlite3_file* f, int flags) {
  if (int code = FaultVfs::Get().sync_error(); code != 0) {
    FaultVfs::Get().CountSync();
    return code;
  }
  return Real(f)->pMethods->xSync(Real(f), flags);
}
int FileSize(sqlite3_file* f, sqlite3_int64* size) {
  return Real(f)->pMethods->xFileSize(Real(f), size);
}
int Lock(sqlite3_file* f, int level) {
  return Real(f)->pMethods->xLock(Real(f), level);
}
int Unlock(sqlite3_file* f, int level) {
  return Real(f)->pMethods->xUnlock(Real(f), level);
}
int CheckReservedLock(sqlite3_file* f, int* out) {
  return Real(f)->pMethods->xCheckReservedLock(Real(f), out);
}
int FileControl(sqlite3_file* f, int op, void* arg) {
  return Real(f)->pMethods->xFileControl(Real(f), op, arg);
}
int SectorSize(sqlite3_file* f) {
  return Real(f)->pMethods->xSectorSize(Real(f));
}
int DeviceCharacteristics(sqlite3_file* f) {
  return Real(f)->pMethods->xDeviceCharacteristics(Real(f));
}
int ShmMap(sqlite3_file* f, int region, int size, int extend, void volatile** out) {
  return Real(f)->pMethods->xShmMap(Real(f), region, size, extend, out);
}
int ShmLock(sqlite3_file* f, int offset, int n, int flags) {
  return Real(f)->pMethods->xShmLock(Real(f), offset, n, flags);
}
void ShmBarrier(sqlite3_file* f) {
  Real(f)->pMethods->xShmBarrier(Real(f));
}
int ShmUnmap(sqlite3_file* f, int del) {
  return Real(f)->pMethods->xShmUnmap(Real(f), del);
}
int Fetch(sqlite3_file* f, sqlite3_int64 off, int n, void** out) {
  return Real(f)->pMethods->xFetch(Real(f), off, n, out);
}
int Unfetch(sqlite3_file* f, sqlite3_int64 off, void* p) {
  return Real(f)->pMethods->xUnfetch(Real(f), off, p);
}

// Version 3 methods: WAL needs xShm*; memory-mapped I/O is forwarded too.
const sqlite3_io_methods kMethods = {3,
                                     Close,
                                     Read,
                                     Write,
                                     Truncate,
                                     Sync,
                                     FileSize,
                                     Lock,
                                     Unlock,
                                     CheckReservedLock,
                                     FileControl,
                                     SectorSize,
                                     DeviceCharacteristics,
                                     ShmMap,
                                     ShmLock,
                                     ShmBarrier,
                                     ShmUnmap,
                                     Fetch,
                                     Unfetch};

int Open(sqlite3_vfs* vfs, const char* name, sqlite3_file* f, int flags, int* out_flags) {
  (void)vfs;
  auto* shim = reinterpret_cast<ShimFile*>(f);
  std::memset(shim->real(), 0, static_cast<size_t>(g_base->szOsFile));
  int rc = g_base->xOpen(g_base, name, shim->real(), flags, out_flags);
  // SQLite calls xClose only when pMethods is set: set it only if the real open worked.
  shim->base.pMethods = rc == SQLITE_OK ? &kMethods : nullptr;
  return rc;
}

sqlite3_vfs g_vfs;

}  // namespace

FaultVfs::FaultVfs() {
  g_base = sqlite3_vfs_find(nullptr);
  g_vfs = *g_base;  // xDelete, xAccess, xFullPathname, randomness, time: the default's
  g_vfs.zName = kName;
  g_vfs.szOsFile = static_cast<int>(sizeof(ShimFile)) + g_base->szOsFile;
  g_vfs.xOpen = Open;
  g_vfs.pNext = nullptr;
  sqlite3_vfs_register(&g_vfs, /*makeDflt=*/0);
}

FaultVfs& FaultVfs::Get() {
  static FaultVfs vfs;  // registered once; SQLite keeps g_vfs, which outlives every vault
  return vfs;
}

}  // namespace tpmma::storage::testing
