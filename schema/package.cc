// SPDX-License-Identifier: GPL-2.0-or-later
#include "schema/package.h"

#include <fmt/format.h>
#include <cstdio>
#include <ctime>

namespace tpmma::schema {
namespace {

bool IsLowerHex(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
}

// Counts code points and refuses what XML 1.0 cannot carry or what the parser would
// normalize away (CR, other C0 controls): a label must survive the round trip byte for byte.
Result<size_t> CountLabelChars(std::string_view s) {
  size_t count = 0;
  for (size_t i = 0; i < s.size();) {
    auto c = static_cast<unsigned char>(s[i]);
    size_t len = c < 0x80           ? 1
                 : (c >> 5) == 0x6  ? 2
                 : (c >> 4) == 0xe  ? 3
                 : (c >> 3) == 0x1e ? 4
                                    : 0;
    if (len == 0 || i + len > s.size()) return Error(Code::kInvalidArgument, "not UTF-8");
    uint32_t cp = len == 1 ? c : c & (0x7f >> len);
    for (size_t k = 1; k < len; ++k) {
      auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xc0) != 0x80) return Error(Code::kInvalidArgument, "not UTF-8");
      cp = (cp << 6) | (cc & 0x3f);
    }
    static constexpr uint32_t kMin[] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < kMin[len] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
      return Error(Code::kInvalidArgument, "not UTF-8");
    if (cp < 0x20 || cp == 0x7f || cp == 0xfffe || cp == 0xffff)
      return Error(Code::kInvalidArgument, "contains a control character");
    ++count;
    i += len;
  }
  return count;
}

Status CheckSize(std::string_view field, const Bytes& b, size_t min, size_t max) {
  if (b.size() < min || b.size() > max) {
    return Status(Code::kInvalidArgument,
                  fmt::format("{}: {} octets, allowed {}..{}", field, b.size(), min, max));
  }
  return Status::Ok();
}

}  // namespace

bool IsCanonicalUuid(std::string_view s) {
  if (s.size() != 36) return false;
  for (size_t i = 0; i < s.size(); ++i) {
    if (i == 8 || i == 13 || i == 18 || i == 23) {
      if (s[i] != '-') return false;
    } else if (!IsLowerHex(s[i])) {
      return false;
    }
  }
  return true;
}

Result<std::string> NewUuid() {
  TPMMA_ASSIGN_OR_RETURN(Bytes r, RandomBytes(16));
  r[6] = (r[6] & 0x0f) | 0x40;
  r[8] = (r[8] & 0x3f) | 0x80;
  std::string hex = HexEncode(r);
  return hex.substr(0, 8) + "-" + hex.substr(8, 4) + "-" + hex.substr(12, 4) + "-" +
         hex.substr(16, 4) + "-" + hex.substr(20);
}

std::string_view ToString(SymmetricAlgorithm v) {
  switch (v) {
    case SymmetricAlgorithm::kAes128Cfb:
      return "AES-128-CFB";
    case SymmetricAlgorithm::kAes256Cfb:
      return "AES-256-CFB";
    case SymmetricAlgorithm::kNull:
      return "NULL";
  }
  return "?";
}
std::string_view ToString(KeyUsage v) {
  switch (v) {
    case KeyUsage::kSign:
      return "Sign";
    case KeyUsage::kDecrypt:
      return "Decrypt";
    case KeyUsage::kSeal:
      return "Seal";
    case KeyUsage::kStorage:
      return "Storage";
  }
  return "?";
}
std::string_view ToString(ApplicationDataType v) {
  switch (v) {
    case ApplicationDataType::kX509Certificate:
      return "X509Certificate";
    case ApplicationDataType::kOpaque:
      return "Opaque";
  }
  return "?";
}
std::string_view ToString(AuthEncryption v) {
  switch (v) {
    case AuthEncryption::kAes256Gcm:
      return "AES-256-GCM";
  }
  return "?";
}
std::string_view ToString(EscrowAlgorithm v) {
  switch (v) {
    case EscrowAlgorithm::kRsaOaepSha256:
      return "RSA-OAEP-SHA256";
    case EscrowAlgorithm::kEcdhP256HkdfSha256Aes256Gcm:
      return "ECDH-P256-HKDF-SHA256-AES-256-GCM";
  }
  return "?";
}

Result<std::string> FormatUtc(int64_t unix_seconds) {
  time_t t = static_cast<time_t>(unix_seconds);
  struct tm tm {};
  if (gmtime_r(&t, &tm) == nullptr || tm.tm_year + 1900 < 1 || tm.tm_year + 1900 > 9999) {
    return Error(Code::kInvalidArgument,
                 fmt::format("creation_time {} out of range", unix_seconds));
  }
  return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z", tm.tm_year + 1900, tm.tm_mon + 1,
                     tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

Result<int64_t> ParseUtc(std::string_view text) {
  int y = 0, mo = 0, d = 0, h = 0, mi = 0, s = 0;
  char z = 0;
  int consumed = 0;
  std::string copy(text);
  if (copy.size() != 20 ||
      std::sscanf(copy.c_str(), "%4d-%2d-%2dT%2d:%2d:%2d%c%n", &y, &mo, &d, &h, &mi, &s, &z,
                  &consumed) != 7 ||
      consumed != 20 || z != 'Z') {
    return Error(Code::kMalformed, "CreationTime: not of the form YYYY-MM-DDTHH:MM:SSZ");
  }
  struct tm tm {};
  tm.tm_year = y - 1900;
  tm.tm_mon = mo - 1;
  tm.tm_mday = d;
  tm.tm_hour = h;
  tm.tm_min = mi;
  tm.tm_sec = s;
  time_t t = timegm(&tm);
  // timegm normalizes out-of-range fields; a real date maps back to itself.
  if (tm.tm_year != y - 1900 || tm.tm_mon != mo - 1 || tm.tm_mday != d || tm.tm_hour != h ||
      tm.tm_min != mi || tm.tm_sec != s) {
    return Error(Code::kMalformed, "CreationTime: not a valid date and time");
  }
  return static_cast<int64_t>(t);
}

Status ValidateModel(const MigrationPackage& p) {
  if (!IsCanonicalUuid(p.package_id))
    return Status(Code::kInvalidArgument, "package_id: not a lower-case UUID");
  if (p.format_version != kFormatVersion) {
    return Status(Code::kUnsupported, fmt::format("format_version {} (this build writes {})",
                                                  p.format_version, kFormatVersion));
  }
  const auto& id = p.source_platform_id;
  if (id.size() < 44 || id.size() > 132 || id.size() % 2 != 0 ||
      id.find_first_not_of("0123456789abcdef") != std::string::npos) {
    return Status(Code::kInvalidArgument,
                  "source_platform_id: want lower-case hex of a TPM Name (22..66 octets)");
  }
  TPMMA_RETURN_IF_ERROR(FormatUtc(p.creation_time));
  TPMMA_RETURN_IF_ERROR(CheckSize("mrk.public_area", p.mrk.public_area, 2, kMaxTpm2bPublic));
  TPMMA_RETURN_IF_ERROR(CheckSize("mrk.duplicate", p.mrk.duplicate, 2, kMaxTpm2bPrivate));
  TPMMA_RETURN_IF_ERROR(
      CheckSize("mrk.encrypted_seed", p.mrk.encrypted_seed, 2, kMaxTpm2bEncryptedSecret));
  for (size_t j = 0; j < p.mrk.application_data.size(); ++j) {
    TPMMA_RETURN_IF_ERROR(CheckSize(fmt::format("mrk.application_data[{}]", j),
                                    p.mrk.application_data[j].value, 1, kMaxApplicationData));
  }
  for (size_t i = 0; i < p.child_keys.size(); ++i) {
    const ChildKey& k = p.child_keys[i];
    std::string f = fmt::format("child_keys[{}]", i);
    if (!IsCanonicalUuid(k.key_id))
      return Status(Code::kInvalidArgument, f + ".key_id: not a lower-case UUID");
    auto chars = CountLabelChars(k.label);
    if (!chars) return Status(Code::kInvalidArgument, f + ".label: " + chars.error().message());
    if (*chars < 1 || *chars > kMaxLabelChars) {
      return Status(Code::kInvalidArgument, fmt::format("{}.label: {} characters, allowed 1..{}", f,
                                                        *chars, kMaxLabelChars));
    }
    TPMMA_RETURN_IF_ERROR(CheckSize(f + ".public_area", k.public_area, 2, kMaxTpm2bPublic));
    TPMMA_RETURN_IF_ERROR(CheckSize(f + ".private_area", k.private_area, 2, kMaxTpm2bPrivate));
    for (size_t j = 0; j < k.application_data.size(); ++j) {
      TPMMA_RETURN_IF_ERROR(CheckSize(fmt::format("{}.application_data[{}]", f, j),
                                      k.application_data[j].value, 1, kMaxApplicationData));
    }
    if (k.encrypted_auth) {
      TPMMA_RETURN_IF_ERROR(CheckSize(f + ".encrypted_auth.ciphertext",
                                      k.encrypted_auth->ciphertext, 1, kMaxEncryptedAuth));
    }
  }
  if (const auto* rc = std::get_if<RecoveryCodeCustody>(&p.custody)) {
    if (rc->kdf != "scrypt")
      return Status(Code::kUnsupported, "custody.kdf: only \"scrypt\" is supported");
    TPMMA_RETURN_IF_ERROR(CheckSize("custody.salt", rc->salt, kMinSalt, kMaxSalt));
    if (rc->n < 2 || rc->r < 1 || rc->p < 1)
      return Status(Code::kInvalidArgument, "custody: scrypt N must be >= 2, r and p >= 1");
    if (rc->verifier)
      TPMMA_RETURN_IF_ERROR(CheckSize("custody.verifier", *rc->verifier, 1, kMaxVerifier));
  } else {
    const auto& e = std::get<EscrowCustody>(p.custody);
    const auto& kid = e.escrow_key_id;
    if (kid.empty() || kid.size() > 128 ||
        kid.find_first_not_of(
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:-") !=
            std::string::npos) {
      return Status(Code::kInvalidArgument,
                    "custody.escrow_key_id: want 1..128 of [A-Za-z0-9._:-]");
    }
    TPMMA_RETURN_IF_ERROR(
        CheckSize("custody.encrypted_inner_key", e.encrypted_inner_key, 1, kMaxEncryptedInnerKey));
  }
  return Status::Ok();
}

}  // namespace tpmma::schema
