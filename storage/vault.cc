// SPDX-License-Identifier: GPL-2.0-or-later
#include "storage/vault.h"

#include <openssl/evp.h>

#include "common/openssl.h"

namespace tpmma::storage {
namespace {

void PutU64(Bytes& out, uint64_t v) {
  for (int i = 7; i >= 0; --i) out.push_back(static_cast<uint8_t>(v >> (8 * i)));
}

// Length-prefixed so that moving bytes between adjacent fields changes the hash.
void PutField(Bytes& out, ByteView field) {
  PutU64(out, field.size());
  out.insert(out.end(), field.begin(), field.end());
}

}  // namespace

Result<Bytes> AuditRecordHash(int64_t seq, const AuditEvent& event, ByteView prev_hash) {
  Bytes encoded;
  PutField(encoded, View("tpm-ma audit v1"));
  PutU64(encoded, static_cast<uint64_t>(seq));
  PutU64(encoded, static_cast<uint64_t>(event.time));
  PutField(encoded, View(event.actor));
  PutField(encoded, View(event.action));
  PutField(encoded, View(event.object));
  PutField(encoded, View(event.outcome));
  PutField(encoded, View(event.detail));
  PutField(encoded, prev_hash);
  Bytes digest(EVP_MAX_MD_SIZE);
  unsigned int len = 0;
  if (EVP_Digest(encoded.data(), encoded.size(), digest.data(), &len, EVP_sha256(), nullptr) != 1) {
    return Error(OpensslError("EVP_Digest(SHA-256) for audit record"));
  }
  digest.resize(len);
  return digest;
}

namespace {

// Length of the UTF-8 sequence at s[i] and its code point; 0 if it is not valid UTF-8
// (overlong, surrogate, beyond U+10FFFF, truncated).
size_t DecodeUtf8(std::string_view s, size_t i, uint32_t* cp) {
  const auto b = [&](size_t k) { return static_cast<unsigned char>(s[i + k]); };
  const unsigned char c = b(0);
  size_t n = 0;
  uint32_t v = 0, min = 0;
  if (c < 0x80) {
    *cp = c;
    return 1;
  } else if ((c & 0xE0) == 0xC0) {
    n = 2, v = c & 0x1F, min = 0x80;
  } else if ((c & 0xF0) == 0xE0) {
    n = 3, v = c & 0x0F, min = 0x800;
  } else if ((c & 0xF8) == 0xF0) {
    n = 4, v = c & 0x07, min = 0x10000;
  } else {
    return 0;
  }
  if (i + n > s.size()) return 0;
  for (size_t k = 1; k < n; ++k) {
    if ((b(k) & 0xC0) != 0x80) return 0;
    v = (v << 6) | (b(k) & 0x3F);
  }
  if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) return 0;
  *cp = v;
  return n;
}

}  // namespace

std::vector<std::pair<std::string_view, const std::string*>> InventoryFields(
    const PlatformInventory& i) {
  return {{"Hostname", &i.hostname},
          {"OsName", &i.os_name},
          {"KernelRelease", &i.kernel_release},
          {"SystemVendor", &i.system_vendor},
          {"ProductName", &i.product_name},
          {"SerialNumber", &i.serial_number},
          {"AssetTag", &i.asset_tag},
          {"MachineId", &i.machine_id},
          {"TpmManufacturer", &i.tpm_manufacturer},
          {"TpmVendor", &i.tpm_vendor},
          {"TpmFirmware", &i.tpm_firmware},
          {"OwnerLabel", &i.owner_label}};
}

Status CheckInventoryText(std::string_view field, std::string_view value) {
  size_t chars = 0;
  for (size_t i = 0; i < value.size(); ++chars) {
    uint32_t cp = 0;
    const size_t n = DecodeUtf8(value, i, &cp);
    if (n == 0) return Status(Code::kInvalidArgument, std::string(field) + " is not valid UTF-8");
    if (cp < 0x20 || (cp >= 0x7F && cp <= 0x9F)) {
      return Status(Code::kInvalidArgument, std::string(field) + " contains a control character");
    }
    i += n;
  }
  // Characters, as xsd:maxLength counts them.
  if (chars > kMaxInventoryField) {
    return Status(Code::kInvalidArgument, std::string(field) + " is longer than " +
                                              std::to_string(kMaxInventoryField) + " characters");
  }
  return Status();
}

Status CheckPlatformInventory(const PlatformInventory& inventory) {
  for (const auto& [name, value] : InventoryFields(inventory)) {
    TPMMA_RETURN_IF_ERROR(CheckInventoryText(name, *value));
  }
  return Status();
}

std::string_view ToString(PlatformState v) {
  switch (v) {
    case PlatformState::kActive:
      return "active";
    case PlatformState::kRevoked:
      return "revoked";
    case PlatformState::kPending:
      return "pending";
  }
  return "?";
}
std::string_view ToString(RegistrationKind v) {
  return v == RegistrationKind::kEkKeyId ? "ek-key-id" : "ek-cert-sha256";
}
std::string_view ToString(ChallengeKind v) {
  return v == ChallengeKind::kAuthenticate ? "authenticate" : "download-nonce";
}
std::string_view ToString(CustodyMode v) {
  return v == CustodyMode::kRecoveryCode ? "recovery-code" : "escrow";
}
std::string_view ToString(ApprovalState v) {
  switch (v) {
    case ApprovalState::kPending:
      return "pending";
    case ApprovalState::kActive:
      return "active";
    case ApprovalState::kUsed:
      return "used";
    case ApprovalState::kRevoked:
      return "revoked";
  }
  return "?";
}
std::string_view ToString(OperatorRole v) {
  switch (v) {
    case OperatorRole::kHelpdesk:
      return "helpdesk";
    case OperatorRole::kAuditor:
      return "auditor";
    case OperatorRole::kAdmin:
      return "admin";
  }
  return "?";
}

Status CheckCallerAuditAction(const AuditEvent& event) {
  if (event.action.starts_with("Audit.")) {
    return Status(Code::kInvalidArgument,
                  "audit actions starting with \"Audit.\" are reserved for the vault");
  }
  return Status();
}

Status CheckAuthCompletion(const AuthCompletion& a) {
  if (a.session.platform_id != a.platform.id) {
    return Status(Code::kInvalidArgument, "session and platform name different platforms");
  }
  if (a.proof_hash.size() != kAuditHashSize) {
    return Status(Code::kInvalidArgument, "proof hash must be 32 bytes (SHA-256)");
  }
  if (a.inventory) return CheckPlatformInventory(*a.inventory);
  return Status();
}

}  // namespace tpmma::storage
