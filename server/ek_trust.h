// SPDX-License-Identifier: GPL-2.0-or-later
// The MA's EK trust: the trusted roots (trust.ek_roots, the only anchors) and the intermediate
// pool (trust.ek_intermediates: untrusted helpers for path building, never anchors). The MA
// completes an EK chain itself from the pool and what the endpoint sent; a chain that cannot
// be completed names the issuer that is missing and the `ma-admin ek-trust add` command that
// adds it. Shared by ma-server (server/auth.cc) and `ma-admin ek check`.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/bytes.h"
#include "common/env.h"
#include "common/openssl.h"
#include "common/status.h"
#include "server/ek_cert_quirks.h"

namespace tpmma::server {

// One certificate as a person reads it.
struct CertSummary {
  std::string subject;      // RFC 2253, "CN=..,O=.."; "(empty subject)" when empty
  std::string issuer;       // the same for the issuer
  std::string fingerprint;  // SHA-256 of the DER, lower-case hex
  int64_t not_before = 0;
  int64_t not_after = 0;
};
Result<CertSummary> Summarize(X509* cert);
// The RFC 2253 form of a name ("(empty subject)" for an empty one).
std::string NameText(const X509_NAME* name);

// Every certificate in `bytes`: one DER certificate, or one or more PEM ones.
// `what` names the bytes in errors ("ek-trust add FILE").
Result<std::vector<X509Ptr>> ParseCertificates(ByteView bytes, const std::string& what);
// The same for a file, or every *.pem / *.crt file of a directory.
Result<std::vector<X509Ptr>> LoadCertificates(Env* env, const std::string& path);

// Where a certificate of a verified path came from.
enum class PathSource { kLeaf, kSent, kPool, kRoot };
std::string_view PathSourceName(PathSource s);  // "certificate", "sent", "pool", "root"

struct VerifiedPath {
  std::vector<CertSummary> certs;  // leaf first, the anchor (a root) last
  std::vector<PathSource> sources;
  int64_t not_before = 0;  // the verification holds while not_before <= now <= not_after
  int64_t not_after = 0;
};

class EkTrust {
 public:
  // `roots` and `intermediates`: PEM files or directories of *.pem / *.crt files.
  static Result<std::unique_ptr<EkTrust>> Load(const std::vector<std::string>& roots,
                                               const std::vector<std::string>& intermediates,
                                               Env* env);

  // Builds and verifies the chain from `leaf` to a trusted root at `now`, with `sent` (what
  // the endpoint sent, untrusted) and the pool as untrusted helpers. Refusal: kUnauthenticated
  // "EK certificate not trusted: <reason>: ..." naming the missing issuer and the command that
  // adds it. Thread-safe (the stores are read only).
  Result<VerifiedPath> Verify(X509* leaf, const std::vector<X509*>& sent, int64_t now) const;
  // The same for an EK certificate that may be a canonical copy (server/ek_cert_quirks.h):
  // the whole chain is verified by OpenSSL except the copy's own signature, which is checked
  // over the TBS as issued with the key of the issuer OpenSSL put above it in the chain.
  Result<VerifiedPath> Verify(const EkCertificate& leaf, const std::vector<X509*>& sent,
                              int64_t now) const;

  size_t root_count() const { return roots_.size(); }
  size_t pool_count() const { return pool_.size(); }

 private:
  EkTrust() = default;

  X509StorePtr store_;
  std::vector<X509Ptr> roots_;
  std::vector<X509Ptr> pool_;
  std::vector<std::string> root_fingerprints_, pool_fingerprints_;
};

}  // namespace tpmma::server
