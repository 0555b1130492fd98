// SPDX-License-Identifier: GPL-2.0-or-later
#include "storage/vault_copy.h"

#include <iterator>

#include "common/text.h"

namespace tpmma::storage {
namespace {

using T = CopyType;

// Column by column from storage/sqlite/migrations/000[1-7]*.sql and
// storage/postgres/migrations/000[12]*.sql (SQLite's platforms.pending is folded into
// state; PostgreSQL's schema_version and audit_head are the importer's to write).
constexpr CopyColumn kPlatforms[] = {
    {"id", T::kText},
    {"ek_public", T::kBytes},
    {"ek_certificate", T::kBytes},
    {"ak_public", T::kBytes},
    {"ak_name", T::kBytes},
    {"signing_key_public", T::kBytes, true},
    {"state", T::kText},
    {"created_at", T::kInt},
    {"last_seen_at", T::kInt},
    {"ek_key_id", T::kBytes, true},
    {"srk_public", T::kBytes, true},
    {"srk_certified_at", T::kInt, true},
};
constexpr CopyColumn kRegistrations[] = {
    {"kind", T::kText}, {"digest", T::kBytes}, {"label", T::kText}, {"created_at", T::kInt}};
constexpr CopyColumn kInventory[] = {
    {"platform_id", T::kText},         {"hostname", T::kText, true},
    {"os_name", T::kText, true},       {"kernel_release", T::kText, true},
    {"system_vendor", T::kText, true}, {"product_name", T::kText, true},
    {"serial_number", T::kText, true}, {"asset_tag", T::kText, true},
    {"machine_id", T::kText, true},    {"tpm_manufacturer", T::kText, true},
    {"tpm_vendor", T::kText, true},    {"tpm_firmware", T::kText, true},
    {"owner_label", T::kText, true},   {"reported_at", T::kInt},
};
constexpr CopyColumn kChallenges[] = {
    {"id", T::kBytes},          {"kind", T::kText},
    {"platform_id", T::kText},  {"expected_hash", T::kBytes},
    {"nonce", T::kBytes},       {"associated_data", T::kBytes},
    {"created_at", T::kInt},    {"expires_at", T::kInt},
    {"used_at", T::kInt, true},
};
constexpr CopyColumn kSessions[] = {{"token_hash", T::kBytes},
                                    {"platform_id", T::kText},
                                    {"created_at", T::kInt},
                                    {"expires_at", T::kInt}};
constexpr CopyColumn kPackages[] = {
    {"pk", T::kInt},
    {"package_id", T::kText},
    {"source_platform_id", T::kText},
    {"format_version", T::kText},
    {"created_at", T::kInt},
    {"uploaded_at", T::kInt},
    {"sha256", T::kBytes},
    {"size", T::kInt},
    {"custody", T::kText},
    {"signing_key", T::kBytes, true},
    {"wrap_key_id", T::kText, true},
    {"wrap_duplicate", T::kBytes, true},
    {"wrap_seed", T::kBytes, true},
};
constexpr CopyColumn kBodies[] = {{"package_pk", T::kInt}, {"body", T::kBytes}};
constexpr CopyColumn kKeys[] = {{"package_pk", T::kInt},
                                {"ordinal", T::kInt},
                                {"key_id", T::kText},
                                {"label", T::kText},
                                {"usage", T::kText}};
constexpr CopyColumn kApprovals[] = {
    {"id", T::kInt},
    {"old_platform_id", T::kText},
    {"new_platform_id", T::kText},
    {"all_packages", T::kFlag},
    {"reason", T::kText},
    {"created_by", T::kText},
    {"created_at", T::kInt},
    {"expires_at", T::kInt},
    {"confirmed_by", T::kText, true},
    {"state", T::kText},
    {"used_at", T::kInt, true},
};
constexpr CopyColumn kApprovalPackages[] = {{"approval_id", T::kInt}, {"package_id", T::kText}};
constexpr CopyColumn kOperators[] = {{"name", T::kText},
                                     {"role", T::kText},
                                     {"cert_fingerprint", T::kText},
                                     {"created_at", T::kInt},
                                     {"revoked_at", T::kInt, true}};
constexpr CopyColumn kVaultMeta[] = {{"key", T::kText}, {"value", T::kBytes}};
constexpr CopyColumn kSegments[] = {{"last_seq", T::kInt},
                                    {"first_seq", T::kInt},
                                    {"last_hash", T::kBytes},
                                    {"archived_at", T::kInt},
                                    {"archive_sha256", T::kBytes}};
constexpr CopyColumn kAuditLog[] = {
    {"seq", T::kInt},     {"time", T::kInt},        {"actor", T::kText},
    {"action", T::kText}, {"object", T::kText},     {"outcome", T::kText},
    {"detail", T::kText}, {"prev_hash", T::kBytes}, {"hash", T::kBytes},
};

constexpr CopyTable kTables[] = {
    {"platforms", kPlatforms},
    {"platform_registrations", kRegistrations},
    {"platform_inventory", kInventory},
    {"challenges", kChallenges},
    {"sessions", kSessions},
    {"packages", kPackages},
    {"package_bodies", kBodies},
    {"package_keys", kKeys},
    {"approvals", kApprovals},
    {"approval_packages", kApprovalPackages},
    {"operators", kOperators},
    {"vault_meta", kVaultMeta},
    {"audit_segments", kSegments},
    {"audit_log", kAuditLog},
};

bool Fits(CopyType type, const CopyValue& v) {
  switch (type) {
    case CopyType::kInt:
      return std::holds_alternative<int64_t>(v);
    case CopyType::kFlag:
      return std::holds_alternative<int64_t>(v) &&
             (std::get<int64_t>(v) == 0 || std::get<int64_t>(v) == 1);
    case CopyType::kText:
      return std::holds_alternative<std::string>(v);
    case CopyType::kBytes:
      return std::holds_alternative<Bytes>(v);
  }
  return false;
}

}  // namespace

std::span<const CopyTable> CopyTables() {
  return kTables;
}

Status CheckCopyRow(const CopyTable& table, const CopyRow& row) {
  if (row.size() != table.columns.size()) {
    return Status(Code::kCorruption, Cat("copy of table ", table.name, ": a row has ", row.size(),
                                         " values, the table ", table.columns.size(), " columns"));
  }
  for (size_t i = 0; i < row.size(); ++i) {
    const CopyColumn& c = table.columns[i];
    const bool null = std::holds_alternative<std::monostate>(row[i]);
    if (null ? !c.nullable : !Fits(c.type, row[i])) {
      return Status(Code::kCorruption, Cat("copy of table ", table.name, ": column ", c.name,
                                           null ? " is NULL" : " has a value of the wrong type"));
    }
  }
  return Status();
}

Status CountingSink::BeginTable(const CopyTable& table) {
  counts_.emplace_back(std::string(table.name), 0);
  return next_->BeginTable(table);
}

Status CountingSink::Row(const CopyTable& table, const CopyRow& row) {
  TPMMA_RETURN_IF_ERROR(CheckCopyRow(table, row));
  ++counts_.back().second;
  return next_->Row(table, row);
}

}  // namespace tpmma::storage
