// SPDX-License-Identifier: GPL-2.0-or-later
// Runs a helper program (no shell): lms drives tpm2-pkcs11's own tools this way. Secrets go
// on stdin, never on the command line (any user can read argv in /proc).
#pragma once

#include <string>
#include <vector>

#include "common/bytes.h"
#include "common/status.h"

namespace tpmma {

struct ProcessResult {
  int exit_code = -1;  // the program's exit status; 128+N when killed by signal N
  std::string out;     // stdout
  std::string err;     // stderr
};

struct ProcessOptions {
  std::vector<std::string> extra_env;  // "NAME=value", added to (or replacing in) ours
  ByteView input;                      // written to its stdin, which is then closed
  int timeout_ms = 120000;             // then it is killed: kUnavailable
  size_t max_output = 1 << 20;         // per stream; more is kLimitExceeded
};

// argv[0] is looked up on PATH unless it holds a '/'. Errors only when the program could not
// run, timed out or said too much; a non-zero exit is a result, not an error.
Result<ProcessResult> RunProcess(const std::vector<std::string>& argv,
                                 const ProcessOptions& options = {});

}  // namespace tpmma
