// SPDX-License-Identifier: GPL-2.0-or-later
// What ma-bench sends: one RequestSource per operation. Sources that need a session or a
// TPM do their setup (authenticate, certify, pre-sign packages) before the clock starts.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "common/status.h"

namespace tpmma::bench {

class RequestSource {
 public:
  virtual ~RequestSource() = default;
  // The body of request number `seq` on connection `conn`; called from I/O threads.
  virtual std::string Next(size_t conn, uint64_t seq) = 0;
  // Whether a 200 reply is a success for this operation (e.g. not a Fault).
  virtual bool Accept(std::string_view reply) const = 0;
};

struct SetupOptions {
  std::string url;
  std::string ca_file;
  std::string tcti;            // a TPM for session-bound operations
  std::string ek_certificate;  // its EK certificate (DER)
};

std::unique_ptr<RequestSource> MakeEcho();
// kInvalidArgument for an unknown name; kUnsupported if its setup needs what is missing.
Result<std::unique_ptr<RequestSource>> MakeOperation(const std::string& name,
                                                     const SetupOptions& setup);
std::string OperationNames();

}  // namespace tpmma::bench
