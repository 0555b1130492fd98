// SPDX-License-Identifier: GPL-2.0-or-later
// What ma-bench sends: one RequestSource per operation. Sources that need a session or a
// TPM do their setup (authenticate, certify, pre-sign packages) before the clock starts.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace tpmma::bench {

class RequestSource {
 public:
  virtual ~RequestSource() = default;
  // The body of request number `seq` on connection `conn`; called from I/O threads.
  // nullopt: nothing left to send (e.g. every pre-signed package has been uploaded once).
  virtual std::optional<std::string> Next(size_t conn, uint64_t seq) = 0;
  // Whether a 200 reply is a success for this operation (e.g. not a Fault).
  virtual bool Accept(std::string_view reply) const = 0;
};

struct SetupOptions {
  std::string url;      // https://host:port/ (SOAP endpoint)
  std::string ca_file;  // CA of the server's TLS certificate
  std::string tcti;     // a TPM for session-bound operations
  // The TPM's EK certificate (DER). Empty: read from NV 0x01c00002.
  std::string ek_certificate;
  // Certificates (PEM files) between the EK certificate and the root the MA trusts.
  std::vector<std::string> ek_intermediates;
  size_t packages = 20000;       // upload: distinct packages signed before the clock starts
  size_t package_bytes = 8192;   // upload: each signed package at least this big
  int page_size = 10;            // query: PageSize (the session's platform owns this many)
  std::string sign_alg = "ecc";  // package-signing key in the TPM: ecc (ECDSA P-256) or rsa
  bool verbose = true;           // setup progress on stderr
};

// Upload for long runs (ma-bench --mix): a pool signed up front would run out, so a thread
// of its own signs packages while the load runs, at most `rate_per_s` a second (0: as fast
// as the TPM signs), keeping at most `ready` request bodies waiting. Next returns nullopt
// when none is ready: the caller moves on to its next operation.
class UploadStream : public RequestSource {
 public:
  // Authenticates, checks one upload, then starts signing.
  static Result<std::unique_ptr<UploadStream>> Start(const SetupOptions& setup, double rate_per_s,
                                                     size_t ready);
  virtual uint64_t signed_count() const = 0;
  // Empty while the signer is fine; else why it stopped.
  virtual std::string failure() const = 0;
  virtual void Stop() = 0;  // joins the signer thread
};

// The PackageId an UploadResponse names (empty if it names none).
std::string UploadedPackageId(std::string_view reply);

std::unique_ptr<RequestSource> MakeEcho();
// kInvalidArgument for an unknown name; kUnsupported if its setup needs what is missing
// (a TPM); other codes if the setup itself failed.
Result<std::unique_ptr<RequestSource>> MakeOperation(const std::string& name,
                                                     const SetupOptions& setup);
std::string OperationNames();

}  // namespace tpmma::bench
