// SPDX-License-Identifier: GPL-2.0-or-later
#include "storage/postgres/migrations.h"

#include <openssl/rand.h>

#include <chrono>
#include <iterator>
#include <string_view>

#include "storage/postgres/audit_chain.h"
#include "storage/postgres/connection.h"
#include "storage/postgres/embedded.h"
#include "storage/postgres/rows.h"

namespace tpmma::storage::postgres {
namespace {

std::string_view Text(const unsigned char* data, size_t size) {
  return std::string_view(reinterpret_cast<const char*>(data), size);
}

// Migration i takes version i to i+1; append, never edit a released entry.
const std::string_view kMigrations[] = {
    Text(embedded::kMigration1, embedded::kMigration1Size),
    Text(embedded::kMigration2, embedded::kMigration2Size),
    Text(embedded::kMigration3, embedded::kMigration3Size),
};

constexpr int kSchemaVersion = static_cast<int>(std::size(kMigrations));

// pg_advisory_xact_lock key: "TPMA", as SQLite's application_id.
constexpr int64_t kMigrationLock = 0x54504d41;

// What a migration needs that SQL cannot do, in the migration's own transaction.
Status AfterMigration(PGconn* c, int new_version) {
  if (new_version != 1) return Status();
  Bytes vault_id(16);
  if (RAND_bytes(vault_id.data(), static_cast<int>(vault_id.size())) != 1) {
    return Status(Code::kCryptoError, "RAND_bytes for the vault id");
  }
  TPMMA_RETURN_IF_ERROR(Command(c, "write vault id",
                                "INSERT INTO vault_meta (key, value) VALUES ('vault_id', $1)",
                                Params(vault_id)));
  // The genesis record needs the chain hash: made once, here, so that an emptied log is
  // never given a fresh start by a later open.
  const int64_t now = std::chrono::duration_cast<std::chrono::seconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count();
  return AppendGenesisLocked(c, now);
}

// Inside the migration transaction, holding the advisory lock.
Result<int64_t> ReadVersion(PGconn* c, const std::string& where) {
  TPMMA_ASSIGN_OR_RETURN(
      Rows tables, Query(c, "look for the schema version",
                         "SELECT count(*), count(*) FILTER (WHERE tablename = 'schema_version') "
                         "FROM pg_tables WHERE schemaname = current_schema()"));
  if (tables.Int(0, 1) == 0) {
    if (tables.Int(0, 0) != 0) {
      return Error(Code::kInvalidArgument,
                   Cat("database ", where,
                       " holds tables of another program (no schema_version); refusing to use "
                       "it as a vault"));
    }
    return 0;
  }
  TPMMA_ASSIGN_OR_RETURN(
      Rows v, Query(c, "read schema version", "SELECT application, version FROM schema_version"));
  if (v.size() != 1 || v.Text(0, 0) != "tpm-ma vault") {
    return Error(Code::kInvalidArgument,
                 Cat("database ", where, " has a schema_version that is not a tpm-ma vault's"));
  }
  return v.Int(0, 1);
}

}  // namespace

Status CreateSchemaForImportLocked(PGconn* c, const std::string& where) {
  TPMMA_RETURN_IF_ERROR(Query(c, "lock for schema migration", "SELECT pg_advisory_xact_lock($1)",
                              Params(kMigrationLock)));
  TPMMA_ASSIGN_OR_RETURN(int64_t version, ReadVersion(c, where));
  if (version != 0) {
    return Status(Code::kAlreadyExists,
                  Cat("database ", where,
                      " already holds a tpm-ma vault (its vault id and genesis record are "
                      "write-once); migrate into an empty database (createdb)"));
  }
  for (int v = 0; v < kSchemaVersion; ++v) {
    TPMMA_RETURN_IF_ERROR(
        Script(c, Cat("schema migration ", v, " to ", v + 1), std::string(kMigrations[v])));
  }
  auto set = Command(c, "set schema version", "UPDATE schema_version SET version = $1",
                     Params(int64_t{kSchemaVersion}));
  return set ? Status() : set.error();
}

int SchemaVersion() {
  return kSchemaVersion;
}

Status Migrate(PGconn* c, const std::string& where) {
  while (true) {
    auto step = InTxn(c, TxnKind::kWrite, "schema migration", [&]() -> Result<bool> {
      TPMMA_RETURN_IF_ERROR(Query(c, "lock for schema migration",
                                  "SELECT pg_advisory_xact_lock($1)", Params(kMigrationLock)));
      // Read under the lock: another instance may have migrated meanwhile.
      TPMMA_ASSIGN_OR_RETURN(int64_t version, ReadVersion(c, where));
      if (version > kSchemaVersion) {
        return Error(Code::kVersionTooNew, Cat("vault database ", where, " has schema version ",
                                               version, ", newer than this build supports (",
                                               kSchemaVersion, "); upgrade tpm-ma"));
      }
      if (version == kSchemaVersion) return false;
      TPMMA_RETURN_IF_ERROR(Script(c, Cat("schema migration ", version, " to ", version + 1),
                                   std::string(kMigrations[version])));
      TPMMA_RETURN_IF_ERROR(AfterMigration(c, static_cast<int>(version + 1)));
      TPMMA_RETURN_IF_ERROR(Command(c, "set schema version",
                                    "UPDATE schema_version SET version = $1", Params(version + 1)));
      return true;
    });
    if (!step) return step.error();
    if (!*step) return Status();
  }
}

}  // namespace tpmma::storage::postgres
