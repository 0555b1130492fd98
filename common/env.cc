// SPDX-License-Identifier: GPL-2.0-or-later
#include "common/env.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/rand.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <memory>

#include "common/fd.h"
#include "common/openssl.h"

namespace tpmma {
namespace {

Status PosixError(const std::string& what, const std::string& path, int err) {
  return Status(Code::kIoError, what + " " + path + ": " + std::strerror(err));
}

std::string DirName(const std::string& path) {
  auto slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

}  // namespace

Env* Env::Default() {
  static Env* env = new Env();  // NOLINT: intentionally leaked singleton
  return env;
}

Result<Bytes> Env::ReadFile(const std::string& path, size_t max_size) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) {
    if (errno == ENOENT) return Error(Code::kNotFound, "no such file: " + path);
    return Error(PosixError("cannot open", path, errno));
  }
  Bytes out;
  uint8_t buf[65536];
  for (;;) {
    ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Error(PosixError("cannot read", path, errno));
    }
    if (n == 0) break;
    if (out.size() + static_cast<size_t>(n) > max_size) {
      return Error(Code::kLimitExceeded,
                   path + " is larger than the limit of " + std::to_string(max_size) + " bytes");
    }
    out.insert(out.end(), buf, buf + n);
  }
  Wipe(buf, sizeof buf);
  return out;
}

Status Env::WriteFileAtomic(const std::string& path, ByteView data, uint32_t mode) {
  // Replacing by rename would put a regular file where a device or FIFO was (/dev/null).
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0 && (S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode) ||
                                         S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode))) {
    return Status(Code::kInvalidArgument,
                  path + " is a device or FIFO, not a file; files are written by replacing them");
  }
  std::string tmp = path + ".tmp." + std::to_string(::getpid());
  {
    Fd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode));
    if (fd.get() < 0) return PosixError("cannot create", tmp, errno);
    // open() honours the umask; make the mode exact (0600 must not become 0644 or 0400).
    if (::fchmod(fd.get(), mode) != 0) return PosixError("cannot chmod", tmp, errno);
    size_t off = 0;
    while (off < data.size()) {
      ssize_t n = ::write(fd.get(), data.data() + off, data.size() - off);
      if (n < 0) {
        if (errno == EINTR) continue;
        int err = errno;
        ::unlink(tmp.c_str());
        return PosixError("cannot write", tmp, err);
      }
      off += static_cast<size_t>(n);
    }
    if (::fsync(fd.get()) != 0) {
      int err = errno;
      ::unlink(tmp.c_str());
      return PosixError("cannot fsync", tmp, err);
    }
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    int err = errno;
    ::unlink(tmp.c_str());
    return PosixError("cannot rename into place", path, err);
  }
  std::string dir = DirName(path);
  Fd dfd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (dfd.get() < 0 || ::fsync(dfd.get()) != 0) return PosixError("cannot fsync", dir, errno);
  return Status::Ok();
}

bool Env::FileExists(const std::string& path) {
  return ::access(path.c_str(), F_OK) == 0;
}

Status Env::RemoveFile(const std::string& path) {
  if (::unlink(path.c_str()) != 0) {
    if (errno == ENOENT) return Status(Code::kNotFound, "no such file: " + path);
    return PosixError("cannot remove", path, errno);
  }
  return Status::Ok();
}

namespace {

Status OverwriteWith(int fd, const std::string& path, off_t size, bool random) {
  uint8_t buf[4096];
  if (::lseek(fd, 0, SEEK_SET) != 0) return PosixError("cannot seek", path, errno);
  for (off_t left = size; left > 0;) {
    const size_t n = static_cast<size_t>(std::min<off_t>(left, sizeof buf));
    if (random) {
      if (RAND_bytes(buf, static_cast<int>(n)) != 1) return OpensslError("RAND_bytes");
    } else {
      std::memset(buf, 0, n);
    }
    const ssize_t w = ::write(fd, buf, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return PosixError("cannot overwrite", path, errno);
    left -= w;
  }
  if (::fsync(fd) != 0) return PosixError("cannot fsync", path, errno);
  return Status::Ok();
}

}  // namespace

Status Env::DestroyFile(const std::string& path) {
  {
    Fd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC | O_NOFOLLOW));
    if (fd.get() < 0) {
      if (errno == ENOENT) return Status(Code::kNotFound, "no such file: " + path);
      return PosixError("cannot open", path, errno);
    }
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0) return PosixError("cannot stat", path, errno);
    if (!S_ISREG(st.st_mode)) return Status(Code::kInvalidArgument, path + " is not a file");
    TPMMA_RETURN_IF_ERROR(OverwriteWith(fd.get(), path, st.st_size, true));
    TPMMA_RETURN_IF_ERROR(OverwriteWith(fd.get(), path, st.st_size, false));
  }
  TPMMA_RETURN_IF_ERROR(RemoveFile(path));
  std::string dir = DirName(path);
  Fd dfd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (dfd.get() < 0 || ::fsync(dfd.get()) != 0) return PosixError("cannot fsync", dir, errno);
  return Status::Ok();
}

Status Env::CreateDirs(const std::string& path, uint32_t mode) {
  if (path.empty()) return Status(Code::kInvalidArgument, "empty directory path");
  for (size_t pos = 1;; ++pos) {
    pos = path.find('/', pos);
    std::string part = path.substr(0, pos);
    if (::mkdir(part.c_str(), mode) != 0 && errno != EEXIST) {
      return PosixError("cannot create directory", part, errno);
    }
    if (pos == std::string::npos) break;
  }
  struct stat st;
  if (::stat(path.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return Status(Code::kIoError, path + " exists and is not a directory");
  }
  return Status::Ok();
}

Result<std::vector<std::string>> Env::ListDir(const std::string& path) {
  std::unique_ptr<DIR, int (*)(DIR*)> dir(::opendir(path.c_str()), ::closedir);
  if (!dir) return Error(PosixError("cannot list", path, errno));
  std::vector<std::string> out;
  while (struct dirent* e = ::readdir(dir.get())) {
    std::string name = e->d_name;
    if (name != "." && name != "..") out.push_back(std::move(name));
  }
  return out;
}

int64_t Env::NowUnixSeconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

uint64_t Env::NowMicros() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(
                                   std::chrono::steady_clock::now().time_since_epoch())
                                   .count());
}

}  // namespace tpmma
