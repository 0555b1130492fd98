// SPDX-License-Identifier: GPL-2.0-or-later
// The Migration Package as plain C++ values (schema/migration-package.xsd, format 1).
// Nothing here touches XML; package_xml.h turns a model into signed bytes and back.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "common/bytes.h"
#include "common/status.h"

namespace tpmma::schema {

inline constexpr uint32_t kFormatVersion = 1;

// Decoded-octet maxima; the XSD carries the same numbers (see its header comment).
inline constexpr size_t kMaxTpm2bPublic = 1024;
inline constexpr size_t kMaxTpm2bPrivate = 2048;
inline constexpr size_t kMaxTpm2bEncryptedSecret = 1024;
inline constexpr size_t kMaxApplicationData = 65536;
inline constexpr size_t kMaxEncryptedAuth = 256;
inline constexpr size_t kMaxLabelChars = 256;
inline constexpr size_t kMinSalt = 16;
inline constexpr size_t kMaxSalt = 64;
inline constexpr size_t kMaxVerifier = 64;
inline constexpr size_t kMaxEncryptedInnerKey = 1024;

enum class SymmetricAlgorithm { kAes128Cfb, kAes256Cfb, kNull };
enum class KeyUsage { kSign, kDecrypt, kSeal, kStorage };
enum class ApplicationDataType { kX509Certificate, kOpaque };
enum class AuthEncryption { kAes256Gcm };
enum class EscrowAlgorithm { kRsaOaepSha256, kEcdhP256HkdfSha256Aes256Gcm };

struct ApplicationData {
  ApplicationDataType type = ApplicationDataType::kOpaque;
  Bytes value;
  bool operator==(const ApplicationData&) const = default;
};

struct MigratableRootKey {
  Bytes public_area;     // TPM2B_PUBLIC, marshalled
  Bytes duplicate;       // TPM2B_PRIVATE from TPM2_Duplicate
  Bytes encrypted_seed;  // TPM2B_ENCRYPTED_SECRET
  SymmetricAlgorithm symmetric = SymmetricAlgorithm::kAes128Cfb;
  // Store-wide application data (the MRK's handle, a PKCS#11 token store): see
  // docs/protocol.md, "Application data".
  std::vector<ApplicationData> application_data;
  bool operator==(const MigratableRootKey&) const = default;
};

// There is deliberately no plaintext form: the schema cannot carry a password in clear.
struct EncryptedAuth {
  AuthEncryption algorithm = AuthEncryption::kAes256Gcm;
  Bytes ciphertext;
  bool operator==(const EncryptedAuth&) const = default;
};

struct ChildKey {
  std::string key_id;  // lower-case UUID
  std::string label;   // 1..256 characters of UTF-8, no control characters
  KeyUsage usage = KeyUsage::kSign;
  Bytes public_area;   // TPM2B_PUBLIC
  Bytes private_area;  // TPM2B_PRIVATE under the MRK, untouched
  std::vector<ApplicationData> application_data;
  std::optional<EncryptedAuth> encrypted_auth;
  bool operator==(const ChildKey&) const = default;
};

// High-assurance custody (docs/protocol.md, "Inner-key custody"): the code itself never leaves the
// endpoint.
struct RecoveryCodeCustody {
  std::string kdf = "scrypt";
  Bytes salt;
  uint64_t n = 0;
  uint32_t r = 0;
  uint32_t p = 0;
  std::optional<Bytes> verifier;
  bool operator==(const RecoveryCodeCustody&) const = default;
};

// Helpdesk custody (docs/protocol.md, "Inner-key custody"): the inner key encrypted to a separate
// escrow key.
struct EscrowCustody {
  std::string escrow_key_id;
  EscrowAlgorithm algorithm = EscrowAlgorithm::kRsaOaepSha256;
  Bytes encrypted_inner_key;
  bool operator==(const EscrowCustody&) const = default;
};

using Custody = std::variant<RecoveryCodeCustody, EscrowCustody>;

struct MigrationPackage {
  std::string package_id;  // lower-case UUID
  uint32_t format_version = kFormatVersion;
  std::string source_platform_id;  // lower-case hex of the EK Name
  int64_t creation_time = 0;       // Unix seconds, UTC, serialized as xsd:dateTime "...Z"
  MigratableRootKey mrk;
  std::vector<ChildKey> child_keys;
  Custody custody;
  bool operator==(const MigrationPackage&) const = default;
};

// Checks everything the XSD would check (forms, sizes, enumerations), so a builder finds out
// before signing. kInvalidArgument naming the field, e.g. "child_keys[3].label: empty".
Status ValidateModel(const MigrationPackage& package);

bool IsCanonicalUuid(std::string_view s);
// A fresh random (version 4) UUID in canonical lower-case form.
Result<std::string> NewUuid();

// Wire names, as in the XSD enumerations.
std::string_view ToString(SymmetricAlgorithm v);
std::string_view ToString(KeyUsage v);
std::string_view ToString(ApplicationDataType v);
std::string_view ToString(AuthEncryption v);
std::string_view ToString(EscrowAlgorithm v);

// "2026-11-22T06:58:05Z" and back; only that exact form is accepted.
Result<std::string> FormatUtc(int64_t unix_seconds);
Result<int64_t> ParseUtc(std::string_view text);

}  // namespace tpmma::schema
