// SPDX-License-Identifier: GPL-2.0-or-later
// Small helpers shared by tests: a temporary directory, running a command, reading files.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "common/bytes.h"

namespace tpmma::testing {

// A fresh directory under $TMPDIR (or /tmp), removed with its contents on destruction
// unless TPMMA_KEEP_TEST_DIRS is set (for post-mortems).
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string File(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

struct CommandResult {
  int exit_code = -1;  // -1 if killed by a signal or not started
  std::string output;  // stdout and stderr, interleaved
};

// Runs argv (no shell) and captures its output.
CommandResult RunCommand(const std::vector<std::string>& argv);

Bytes ReadFileOrDie(const std::string& path);
// SHA-256 of `data` (32 bytes), what a stored package's descriptor carries.
Bytes Sha256Of(ByteView data);
// The first certificate of a PEM file as DER (empty if there is none).
Bytes PemCertificateFileToDer(const std::string& path);
void WriteFileOrDie(const std::string& path, ByteView data);
// A file as a string ("" when it cannot be read: tests compare, they do not branch on it),
// and a string written to a file (truncating it).
std::string Slurp(const std::string& path);
void Spit(const std::string& path, std::string_view data);

// The repository's source root (set by CMake), for schema files and fixtures.
std::string SourceDir();

}  // namespace tpmma::testing
