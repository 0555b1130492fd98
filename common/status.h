// SPDX-License-Identifier: GPL-2.0-or-later
// One error style for all of tpm-ma: functions return Status (no value) or Result<T>
// (a value or a Status). A Status carries a stable machine-readable Code, which the server
// puts verbatim into SOAP Faults and the CLIs into --json output, and a human message that
// names what was wrong. Messages must never contain secrets.
#pragma once

#include <expected>
#include <string>
#include <string_view>
#include <utility>

namespace tpmma {

enum class Code {
  kOk = 0,
  kInvalidArgument,   // caller passed a bad value (CLI flag, config value, request field)
  kMalformed,         // bytes or XML that do not parse (bad base64, truncated TPM structure)
  kSchemaViolation,   // well-formed XML that the XSD refuses
  kLimitExceeded,     // size, depth or count limit hit
  kSignatureInvalid,  // XML Signature or TPM signature does not verify / does not cover
  kIntegrityFailure,  // HMAC or hash mismatch (tampered or wrongly wrapped TPM blob)
  kNotFound,
  kAlreadyExists,
  kConflict,          // same id, different content; state changed underneath
  kUnauthenticated,   // no/expired/unknown session or challenge
  kPermissionDenied,  // authenticated, but not allowed
  kExpired,           // challenge, session or approval past its TTL
  kCorruption,        // stored data is damaged (audit chain broken, bad row)
  kIoError,           // the OS said no (file, socket)
  kTpmError,          // a TPM or TSS call failed; message names the call
  kCryptoError,       // an OpenSSL call failed
  kUnsupported,       // algorithm, version or feature not supported
  kVersionTooNew,     // on-disk or on-wire format newer than this build understands
  kUnavailable,       // dependency unreachable (MA, TPM); retrying may help
  kInternal,          // a bug: an invariant did not hold; keep last (CodeFromName)
};

// Stable name used on the wire ("SchemaViolation"); never changes once released.
std::string_view CodeName(Code code);

// "SchemaViolation" -> Code::kSchemaViolation; kInternal for unknown names, so a newer
// peer cannot make an old one misread a code.
Code CodeFromName(std::string_view name);

// Codes the caller can act on (bad input, refused, not found, expired...): SOAP "Client"
// faults. The rest say the MA itself failed ("Server").
bool IsCallerError(Code code);

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(Code code, std::string message) : code_(code), message_(std::move(message)) {}

  // So that Error(...) can be returned from Status functions as from Result<T> ones.
  Status(std::unexpected<Status> u) : Status(std::move(u.error())) {}  // NOLINT: implicit

  static Status Ok() { return Status(); }

  bool ok() const { return code_ == Code::kOk; }
  Code code() const { return code_; }
  const std::string& message() const { return message_; }

  // "SchemaViolation: element 'ChildKey' ..."
  std::string ToString() const;

  // Prefix context while an error travels up: s.WithContext("package 1234").
  Status WithContext(std::string_view context) const;

 private:
  Code code_ = Code::kOk;
  std::string message_;
};

template <typename T>
using Result = std::expected<T, Status>;

// Lets `return Error(Code::kNotFound, "...")` work for both Status and Result<T>.
inline std::unexpected<Status> Error(Code code, std::string message) {
  return std::unexpected<Status>(Status(code, std::move(message)));
}
inline std::unexpected<Status> Error(Status status) {
  return std::unexpected<Status>(std::move(status));
}

namespace internal {
inline const Status& AsStatus(const Status& s) {
  return s;
}
template <typename T>
Status AsStatus(const Result<T>& r) {
  return r.has_value() ? Status() : r.error();
}
}  // namespace internal

}  // namespace tpmma

// Status-returning functions use `return Status(...)`; Result-returning functions may
// return a Status via Error(). These macros propagate either kind.
#define TPMMA_CONCAT_INNER(a, b) a##b
#define TPMMA_CONCAT(a, b) TPMMA_CONCAT_INNER(a, b)

#define TPMMA_RETURN_IF_ERROR(expr)                                           \
  do {                                                                        \
    ::tpmma::Status tpmma_status_ = ::tpmma::internal::AsStatus((expr));      \
    if (!tpmma_status_.ok()) return ::tpmma::Error(std::move(tpmma_status_)); \
  } while (0)

#define TPMMA_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr)                    \
  auto tmp = (expr);                                                   \
  if (!tmp.has_value()) return ::tpmma::Error(std::move(tmp.error())); \
  lhs = std::move(*tmp)

#define TPMMA_ASSIGN_OR_RETURN(lhs, expr) \
  TPMMA_ASSIGN_OR_RETURN_IMPL(TPMMA_CONCAT(tpmma_result_, __LINE__), lhs, expr)
