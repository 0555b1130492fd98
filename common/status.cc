// SPDX-License-Identifier: GPL-2.0-or-later
#include "common/status.h"

namespace tpmma {

std::string_view CodeName(Code code) {
  switch (code) {
    case Code::kOk:
      return "OK";
    case Code::kInvalidArgument:
      return "InvalidArgument";
    case Code::kMalformed:
      return "Malformed";
    case Code::kSchemaViolation:
      return "SchemaViolation";
    case Code::kLimitExceeded:
      return "LimitExceeded";
    case Code::kSignatureInvalid:
      return "SignatureInvalid";
    case Code::kIntegrityFailure:
      return "IntegrityFailure";
    case Code::kNotFound:
      return "NotFound";
    case Code::kAlreadyExists:
      return "AlreadyExists";
    case Code::kConflict:
      return "Conflict";
    case Code::kUnauthenticated:
      return "Unauthenticated";
    case Code::kPermissionDenied:
      return "PermissionDenied";
    case Code::kExpired:
      return "Expired";
    case Code::kCorruption:
      return "Corruption";
    case Code::kIoError:
      return "IoError";
    case Code::kTpmError:
      return "TpmError";
    case Code::kCryptoError:
      return "CryptoError";
    case Code::kUnsupported:
      return "Unsupported";
    case Code::kVersionTooNew:
      return "VersionTooNew";
    case Code::kUnavailable:
      return "Unavailable";
    case Code::kInternal:
      return "Internal";
  }
  return "Internal";
}

bool IsCallerError(Code code) {
  switch (code) {
    case Code::kInvalidArgument:
    case Code::kMalformed:
    case Code::kSchemaViolation:
    case Code::kLimitExceeded:
    case Code::kSignatureInvalid:
    case Code::kIntegrityFailure:
    case Code::kNotFound:
    case Code::kAlreadyExists:
    case Code::kConflict:
    case Code::kUnauthenticated:
    case Code::kPermissionDenied:
    case Code::kExpired:
    case Code::kUnsupported:
    case Code::kVersionTooNew:
      return true;
    default:
      return false;
  }
}

Code CodeFromName(std::string_view name) {
  for (int i = static_cast<int>(Code::kOk); i <= static_cast<int>(Code::kInternal); ++i) {
    if (CodeName(static_cast<Code>(i)) == name) return static_cast<Code>(i);
  }
  return Code::kInternal;
}

std::string Status::ToString() const {
  if (ok()) return "OK";
  std::string out(CodeName(code_));
  out += ": ";
  out += message_;
  return out;
}

Status Status::WithContext(std::string_view context) const {
  if (ok()) return *this;
  std::string msg(context);
  msg += ": ";
  msg += message_;
  return Status(code_, std::move(msg));
}

}  // namespace tpmma
