// SPDX-License-Identifier: GPL-2.0-or-later
// Copying a whole vault from one engine to another (`ma-admin vault migrate`, issue #14):
// every table as a stream of rows in one engine-neutral shape, so that neither backend
// knows the other's SQL. The exporter (storage/sqlite_backup.h) reads each table of
// CopyTables() in order inside one read snapshot and hands its rows to a CopySink; the
// importer (storage/postgres_vault.h) is such a sink, inside one transaction of its own.
//
// The shape is the vault's, not either schema's: a platform's state is "pending" itself
// (SQLite stores active + pending = 1), a challenge id is bytes (SQLite TEXT, PostgreSQL
// BYTEA), a flag is an integer 0/1 (SQLite INTEGER, PostgreSQL BOOLEAN). Nothing is
// recomputed: ids, times, the audit log's seq and hashes, the vault id and the genesis
// record travel as stored.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "common/bytes.h"
#include "common/status.h"

namespace tpmma::storage {

enum class CopyType {
  kInt,    // int64
  kText,   // UTF-8 text (SQLite may hold other bytes; PostgreSQL refuses them)
  kBytes,  // opaque bytes
  kFlag,   // 0 or 1
};

struct CopyColumn {
  std::string_view name;
  CopyType type;
  bool nullable = false;
};

struct CopyTable {
  std::string_view name;
  std::span<const CopyColumn> columns;
};

// Every table of a vault, parents before children (foreign keys hold after each insert),
// the audit log last. Both engines' schemas have these tables with these column names.
std::span<const CopyTable> CopyTables();

// One column's value: NULL, an integer (kInt, kFlag), text or bytes.
using CopyValue = std::variant<std::monostate, int64_t, std::string, Bytes>;
using CopyRow = std::vector<CopyValue>;

// Receives the tables in CopyTables() order, each table's rows in its key order.
class CopySink {
 public:
  virtual ~CopySink() = default;
  virtual Status BeginTable(const CopyTable& table) = 0;
  // `row` has one value per column of `table`, of the column's type (or NULL if nullable).
  virtual Status Row(const CopyTable& table, const CopyRow& row) = 0;
};

// Rows per table, in CopyTables() order.
using CopyCounts = std::vector<std::pair<std::string, int64_t>>;

// A sink that counts what passes through it and hands it on (to check that the target
// holds as many rows of each table as the source gave).
class CountingSink final : public CopySink {
 public:
  explicit CountingSink(CopySink* next) : next_(next) {}
  Status BeginTable(const CopyTable& table) override;
  Status Row(const CopyTable& table, const CopyRow& row) override;
  const CopyCounts& counts() const { return counts_; }

 private:
  CopySink* next_;
  CopyCounts counts_;
};

// kCorruption naming the table and column if `row` does not fit `table` (a source that
// handed over the wrong shape is a bug or a damaged file, never something to import).
Status CheckCopyRow(const CopyTable& table, const CopyRow& row);

}  // namespace tpmma::storage
