// SPDX-License-Identifier: GPL-2.0-or-later
// One TPM (swtpm) playing an LMS platform for ma-bench's setup, done the way
// tests/server/ma_service_swtpm_test.cc (MaServiceTpmTest) does it: EK certificate from NV,
// AK under the EK, both rounds of Authenticate (ActivateCredential; proof =
// HMAC-SHA256(secret, challenge id)), a package-signing key certified by the AK over the
// Begin nonce, an MRK duplicated by the TPM to the MA key, packages signed in the TPM.
// Everything here runs before the clock starts.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "common/bytes.h"
#include "common/status.h"
#include "server/bench/bench_http.h"
#include "server/bench/bench_ops.h"

namespace tpmma::bench {

class BenchPlatform {
 public:
  // Opens the TPM, reads its EK certificate, creates the AK.
  static Result<std::unique_ptr<BenchPlatform>> Open(const SetupOptions& options);
  virtual ~BenchPlatform() = default;

  // The SOAP envelope of an AuthenticateRequest/Begin for this TPM (same bytes every time;
  // the MA answers each with a fresh challenge).
  virtual Result<std::string> BeginBody() = 0;

  // Both rounds over `http`; with_signing_key: a new package-signing key in the TPM,
  // certified by the AK over the Begin nonce, so that Upload accepts this platform's
  // packages. Afterwards token() is the session token.
  virtual Status Authenticate(SyncHttps& http, bool with_signing_key) = 0;
  virtual const std::string& token() const = 0;
  virtual const std::string& platform_id() const = 0;

  // `count` distinct packages (fresh UUIDs) of this platform, each at least `min_bytes`:
  // one MRK duplicated by the TPM to the MA key (GetMAKey over `http`), one real child key
  // listed as often as needed to reach the size, each package signed in the TPM by the
  // certified key. Needs Authenticate(with_signing_key = true) first.
  virtual Result<std::vector<Bytes>> MakePackages(SyncHttps& http, size_t count,
                                                  size_t min_bytes) = 0;

  // SOAP envelopes with the session token.
  virtual Result<std::string> UploadBody(const Bytes& package) = 0;
  virtual Result<std::string> QueryBody(int page_size) = 0;
};

}  // namespace tpmma::bench
