// SPDX-License-Identifier: GPL-2.0-or-later
// Migration Package <-> signed XML bytes.
//
// Writing (lms):  SignPackage(model, key) -> canonical, enveloped-signed bytes.
// Reading (MA):   PackageReader::Open(bytes, limits)   parse safely + XSD-validate
//                 reader.UnverifiedHeader()            ids only, to look up the platform key
//                 reader.Verify(platform_public_key)   -> the full model, read from the
//                                                         very DOM that was verified.
// There is no other way to get a MigrationPackage out of XML: signature wrapping (verifying
// one element, reading another) has nothing to hold on to.
#pragma once

#include <cstddef>
#include <memory>
#include <string>

#include <openssl/evp.h>

#include "common/bytes.h"
#include "common/status.h"
#include "schema/package.h"

namespace tpmma::schema {

inline constexpr std::string_view kNamespace = "urn:tpm-ma:package:1";

struct ParseLimits {
  size_t max_document_bytes = 8 * 1024 * 1024;
  // Our deepest element is at depth 6 (ds:Signature/SignedInfo/Reference/Transforms/...);
  // libxml2 itself stops at 256 whatever this says.
  size_t max_depth = 16;
  size_t max_child_keys = 1000;
  size_t max_application_data_per_key = 16;
  // Every element in the document, so a flood of tiny elements is cut off before the XSD
  // validator walks it.
  size_t max_elements = 100000;
};

// The XSD text embedded at build time (no runtime path).
std::string_view EmbeddedSchema();

// The unsigned document with an empty ds:Signature template for `key`'s algorithm
// (RSA -> rsa-sha256, EC -> ecdsa-sha256), exactly what SignPackage fills in. Deterministic:
// the same model gives the same bytes. Exposed for tests and for external signers
// (e.g. `xmlsec1 --sign`).
Result<Bytes> SerializeTemplate(const MigrationPackage& package, EVP_PKEY* key);

// Validates the model, serializes it and signs it with xmlsec (enveloped, URI="",
// exc-c14n, SHA-256). `key` is only used through xmlSecOpenSSLEvpKeyAdopt, so a
// provider-backed (TPM) EVP_PKEY works. No KeyInfo is written: the verifier must already
// know the platform's key.
Result<Bytes> SignPackage(const MigrationPackage& package, EVP_PKEY* key);

// SHA-256 over the exact package bytes (vault key, audit records, idempotent uploads).
Result<Bytes> PackageDigest(ByteView package_bytes);

// Fields a server may look at before verification, to find the key to verify with.
// They are NOT authenticated; never act on them beyond the key lookup.
struct UnverifiedHeader {
  std::string package_id;
  std::string source_platform_id;
  uint32_t format_version = 0;
};

class PackageReader {
 public:
  // Size limit, strict UTF-8, no DOCTYPE, no network, no entity expansion, depth and count
  // limits, then XSD validation. Errors: kLimitExceeded (names the limit and its value),
  // kMalformed, kSchemaViolation (line and element from libxml2).
  static Result<PackageReader> Open(ByteView bytes, const ParseLimits& limits = {});

  PackageReader(PackageReader&&) noexcept;
  PackageReader& operator=(PackageReader&&) noexcept;
  ~PackageReader();

  const UnverifiedHeader& UnverifiedHeaderFields() const { return header_; }

  // Verifies the one enveloped signature with `public_key` only (KeyInfo is ignored), then
  // reads the model from the verified document. kSignatureInvalid for a bad, missing,
  // misplaced or non-covering signature; kUnsupported for algorithms outside
  // {rsa-sha256, ecdsa-sha256} x {sha256} x {enveloped, exc-c14n, c14n}.
  Result<MigrationPackage> Verify(EVP_PKEY* public_key) const;

 private:
  struct Doc;
  explicit PackageReader(std::unique_ptr<Doc> doc, UnverifiedHeader header);
  std::unique_ptr<Doc> doc_;
  UnverifiedHeader header_;
};

}  // namespace tpmma::schema
