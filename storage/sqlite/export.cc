// SPDX-License-Identifier: GPL-2.0-or-later
// Every row of a vault file as CopyRows (storage/vault_copy.h), for `ma-admin vault migrate`.
#include <string>

#include "storage/sqlite/file.h"
#include "storage/sqlite/migrations.h"
#include "storage/sqlite/txn.h"
#include "storage/sqlite_backup.h"

namespace tpmma::storage {

using sqlite::DbPtr;
using sqlite::Stmt;

namespace {

// What SQLite stores for a column of the neutral shape. Only the platform state differs:
// migration 4 added `pending` beside it because SQLite cannot alter a CHECK.
std::string ColumnSql(const CopyTable& table, const CopyColumn& column) {
  if (table.name == "platforms" && column.name == "state") {
    return "CASE WHEN state = 'active' AND pending <> 0 THEN 'pending' ELSE state END";
  }
  return std::string(column.name);
}

std::string SelectSql(const CopyTable& table) {
  std::string sql = "SELECT ";
  for (size_t i = 0; i < table.columns.size(); ++i) {
    sql += Cat(i == 0 ? "" : ", ", ColumnSql(table, table.columns[i]));
  }
  // Every vault table has a rowid; it is the key order (seq, pk, id) where the key is an
  // integer, insertion order otherwise. Any order would do: no table refers to itself.
  return Cat(sql, " FROM ", table.name, " ORDER BY rowid");
}

CopyValue ReadValue(const Stmt& s, int i, CopyType type) {
  if (s.IsNull(i)) return std::monostate{};
  switch (type) {
    case CopyType::kInt:
    case CopyType::kFlag:
      return s.Int(i);
    case CopyType::kText:
      return s.Text(i);
    case CopyType::kBytes:
      return s.Blob(i);  // a TEXT challenge id comes as its bytes
  }
  return std::monostate{};
}

Status ExportTable(sqlite3* db, const CopyTable& table, CopySink& sink) {
  TPMMA_RETURN_IF_ERROR(sink.BeginTable(table));
  TPMMA_ASSIGN_OR_RETURN(Stmt s, Stmt::Prepare(db, Cat("export ", table.name), SelectSql(table)));
  CopyRow row(table.columns.size());
  while (true) {
    TPMMA_ASSIGN_OR_RETURN(bool more, s.Step());
    if (!more) return Status();
    for (size_t i = 0; i < table.columns.size(); ++i) {
      row[i] = ReadValue(s, static_cast<int>(i), table.columns[i].type);
    }
    TPMMA_RETURN_IF_ERROR(sink.Row(table, row));
  }
}

}  // namespace

Status ExportSqliteVault(const std::string& path, CopySink& sink) {
  TPMMA_ASSIGN_OR_RETURN(DbPtr db, sqlite::OpenVaultFile(path, sqlite::FileAccess::kLive));
  sqlite3* c = db.get();
  TPMMA_RETURN_IF_ERROR(sqlite::CheckOwnFile(c, path));
  TPMMA_ASSIGN_OR_RETURN(int64_t version, sqlite::ReadPragmaInt(c, "user_version"));
  if (version != sqlite::SchemaVersion()) {
    return Status(Code::kInvalidArgument,
                  Cat(path, " has schema version ", version, "; this build exports version ",
                      sqlite::SchemaVersion(), " (open it with this build's ma-server first)"));
  }
  // One read transaction: every table from the same COMMIT.
  return sqlite::ToStatus(sqlite::InTxn(c, false, "export vault", [&]() -> Result<void> {
    for (const CopyTable& table : CopyTables()) {
      TPMMA_RETURN_IF_ERROR(ExportTable(c, table, sink));
    }
    return {};
  }));
}

}  // namespace tpmma::storage
