// SPDX-License-Identifier: GPL-2.0-or-later
// ma-bench --mix: a long, mixed run (the soak of issue #13). Each of N keep-alive TLS
// connections cycles through every listed operation in turn, the hostile requests of
// bench_hostile.h included, until the duration is up; a connection the server closes (a
// refusal with Connection: close, or a failure) is opened again. Every answer is checked;
// a successful Upload's package id is appended to a file, so that a script can check
// afterwards that the vault holds every upload the server acknowledged.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "server/bench/bench_ops.h"

namespace tpmma::bench {

struct SoakOptions {
  std::string host, port, target;  // the SOAP endpoint
  int connections = 64;
  int threads = 1;  // client I/O threads
  double duration_s = 1800;
  double report_every_s = 60;  // a progress line (cumulative counts) this often
  // The cycle: names of MakeOperation, and "hostile" (one kind per turn, in rotation).
  std::vector<std::string> ops;
  std::string acked_uploads;  // file: one package id per acknowledged Upload, appended
  uint64_t max_body_bytes = 16 * 1024 * 1024;  // the server's limits.max_body_bytes
  double upload_rate = 100;                    // packages signed per second (0: no cap)
  size_t upload_ready = 2048;                  // signed bodies kept waiting at most
  bool json = false;
};

// The operation names --mix accepts, and its default cycle (all of them).
std::string MixOperationNames();
std::vector<std::string> MixDefaultOperations();

// Sets up every operation (TPM sessions as MakeOperation does), runs the mix, prints the
// progress lines and the summary. Exit code: 0 every answer as expected and every
// operation answered at least once, 1 otherwise, 2 bad usage.
int RunSoak(const SoakOptions& options, const SetupOptions& setup);

}  // namespace tpmma::bench
