// SPDX-License-Identifier: GPL-2.0-or-later
#include "storage/sqlite/migrations.h"

#include <chrono>
#include <iterator>

#include "common/text.h"
#include "storage/sqlite/audit_chain.h"
#include "storage/sqlite/embedded.h"
#include "storage/sqlite/txn.h"

namespace tpmma::storage::sqlite {
namespace {

std::string_view Text(const unsigned char* data, size_t size) {
  return std::string_view(reinterpret_cast<const char*>(data), size);
}

// Migration i takes user_version i to i+1; append, never edit a released entry.
const std::string_view kMigrations[] = {
    Text(embedded::kMigration1, embedded::kMigration1Size),
    Text(embedded::kMigration2, embedded::kMigration2Size),
    Text(embedded::kMigration3, embedded::kMigration3Size),
    Text(embedded::kMigration4, embedded::kMigration4Size),
    Text(embedded::kMigration5, embedded::kMigration5Size),
    Text(embedded::kMigration6, embedded::kMigration6Size),
    Text(embedded::kMigration7, embedded::kMigration7Size),
    Text(embedded::kMigration8, embedded::kMigration8Size),
};

constexpr int kSchemaVersion = static_cast<int>(std::size(kMigrations));

// What a migration needs that SQL cannot do, in the migration's own transaction.
Status AfterMigration(sqlite3* db, int64_t new_version) {
  if (new_version == 6) {
    // The genesis record needs the chain hash: made once, here, so that an emptied log
    // is never given a fresh start by a later open.
    const int64_t now = std::chrono::duration_cast<std::chrono::seconds>(
                            std::chrono::system_clock::now().time_since_epoch())
                            .count();
    return AppendGenesisLocked(db, now);
  }
  return Status();
}

}  // namespace

int SchemaVersion() {
  return kSchemaVersion;
}

Result<int64_t> ReadPragmaInt(sqlite3* db, std::string_view pragma) {
  TPMMA_ASSIGN_OR_RETURN(Stmt s,
                         Stmt::Prepare(db, Cat("read PRAGMA ", pragma), Cat("PRAGMA ", pragma)));
  TPMMA_ASSIGN_OR_RETURN(bool row, s.Step());
  if (!row) return Error(Code::kInternal, Cat("PRAGMA ", pragma, " returned no row"));
  return s.Int(0);
}

Status CheckIdentity(sqlite3* db, const std::string& path) {
  auto app_id = ReadPragmaInt(db, "application_id");
  if (!app_id) {
    if (app_id.error().code() == Code::kCorruption) {
      return Status(Code::kCorruption,
                    Cat(path, " is not a SQLite database: ", app_id.error().message()));
    }
    return app_id.error();
  }
  if (*app_id == kApplicationId) return Status();
  if (*app_id != 0) {
    return Status(Code::kInvalidArgument,
                  Cat(path, " is not a tpm-ma vault (SQLite application_id ",
                      Hex32(static_cast<uint32_t>(*app_id)), ", expected ",
                      Hex32(static_cast<uint32_t>(kApplicationId)), ")"));
  }
  TPMMA_ASSIGN_OR_RETURN(int64_t objects, [&]() -> Result<int64_t> {
    TPMMA_ASSIGN_OR_RETURN(
        Stmt s, Stmt::Prepare(db, "count schema objects", "SELECT count(*) FROM sqlite_schema"));
    TPMMA_RETURN_IF_ERROR(s.Step());
    return s.Int(0);
  }());
  TPMMA_ASSIGN_OR_RETURN(int64_t version, ReadPragmaInt(db, "user_version"));
  if (objects != 0 || version != 0) {
    return Status(Code::kInvalidArgument, Cat(path,
                                              " is a SQLite database of another program (no tpm-ma "
                                              "application_id); refusing to use it as a vault"));
  }
  return Status();
}

Status Migrate(sqlite3* db, const std::string& path) {
  while (true) {
    auto step = InTxn(db, true, "schema migration", [&]() -> Result<bool> {
      // Re-read inside the write lock: another process may have migrated meanwhile.
      TPMMA_ASSIGN_OR_RETURN(int64_t version, ReadPragmaInt(db, "user_version"));
      if (version > kSchemaVersion) {
        return Error(Code::kVersionTooNew, Cat("vault ", path, " has schema version ", version,
                                               ", newer than this build supports (", kSchemaVersion,
                                               "); upgrade tpm-ma"));
      }
      if (version == kSchemaVersion) return false;
      TPMMA_RETURN_IF_ERROR(Exec(db, Cat("schema migration ", version, " to ", version + 1),
                                 std::string(kMigrations[version])));
      TPMMA_RETURN_IF_ERROR(AfterMigration(db, version + 1));
      TPMMA_RETURN_IF_ERROR(
          Exec(db, "set application_id", Cat("PRAGMA application_id = ", kApplicationId)));
      TPMMA_RETURN_IF_ERROR(
          Exec(db, "set user_version", Cat("PRAGMA user_version = ", version + 1)));
      return true;
    });
    if (!step) return step.error();
    if (!*step) return Status();
  }
}

}  // namespace tpmma::storage::sqlite
