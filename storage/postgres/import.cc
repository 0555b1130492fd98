// SPDX-License-Identifier: GPL-2.0-or-later
// PostgresVault::ImportIntoEmpty: a whole vault copied into an empty database in one
// transaction (`ma-admin vault migrate`, storage/vault_copy.h).
#include <string>

#include "storage/postgres/audit_chain.h"
#include "storage/postgres/connection.h"
#include "storage/postgres/migrations.h"
#include "storage/postgres/rows.h"
#include "storage/postgres_vault.h"

namespace tpmma::storage {

using postgres::Command;
using postgres::ConnPtr;
using postgres::Params;
using postgres::Query;
using postgres::Rows;

namespace {

// Tables whose key is an identity column: the source's ids are kept (OVERRIDING SYSTEM
// VALUE), and the sequence is moved past them afterwards.
bool HasIdentity(std::string_view table) {
  return table == "packages" || table == "approvals";
}

void AddValue(Params& p, const CopyColumn& column, const CopyValue& v) {
  const bool null = std::holds_alternative<std::monostate>(v);
  switch (column.type) {
    case CopyType::kInt:
      return null ? p.Add(std::optional<int64_t>()) : p.Add(std::get<int64_t>(v));
    case CopyType::kFlag:
      return null ? p.Add(std::optional<bool>()) : p.Add(std::get<int64_t>(v) != 0);
    case CopyType::kText:
      return null ? p.Add(std::nullopt) : p.Add(std::get<std::string>(v));
    case CopyType::kBytes:
      return null ? p.Add(std::optional<Bytes>()) : p.Add(std::get<Bytes>(v));
  }
}

// Inserts each row it is given, as given, and remembers what the checks need.
class InsertSink final : public CopySink {
 public:
  explicit InsertSink(PGconn* c) : c_(c) {}

  Status BeginTable(const CopyTable& table) override {
    std::string cols, values;
    for (size_t i = 0; i < table.columns.size(); ++i) {
      cols += Cat(i == 0 ? "" : ", ", table.columns[i].name);
      values += Cat(i == 0 ? "$" : ", $", i + 1);
    }
    sql_ = Cat("INSERT INTO ", table.name, " (", cols, ")",
               HasIdentity(table.name) ? " OVERRIDING SYSTEM VALUE" : "", " VALUES (", values, ")");
    counts_.emplace_back(std::string(table.name), 0);
    return Status();
  }

  Status Row(const CopyTable& table, const CopyRow& row) override {
    TPMMA_RETURN_IF_ERROR(CheckCopyRow(table, row));
    Params p;
    for (size_t i = 0; i < row.size(); ++i) AddValue(p, table.columns[i], row[i]);
    // The row's key values stay out of the message (PgError never quotes DETAIL).
    auto n = Command(c_, Cat("import into ", table.name), sql_, p);
    if (!n) return n.error();
    ++counts_.back().second;
    if (table.name == "audit_log") {
      last_seq_ = std::get<int64_t>(row[0]);
      last_hash_ = std::get<Bytes>(row[8]);
    }
    return Status();
  }

  const CopyCounts& counts() const { return counts_; }
  int64_t last_seq() const { return last_seq_; }
  const Bytes& last_hash() const { return last_hash_; }

 private:
  PGconn* c_;
  std::string sql_;
  CopyCounts counts_;
  int64_t last_seq_ = 0;
  Bytes last_hash_;
};

// What the schema's own writes would have left: identity sequences past the copied ids, and
// the head row on the last record. The head's trigger lets it move one record at a time
// (what appends do); a copy moves it once, with the trigger off inside this transaction
// only (the schema was made by it), and CheckAuditChain then finds the trigger enabled.
Status FinishImport(PGconn* c, const InsertSink& sink) {
  for (std::string_view t : {"packages", "approvals"}) {
    const std::string_view col = t == "packages" ? "pk" : "id";
    TPMMA_RETURN_IF_ERROR(Query(c, Cat("move the ", t, " id sequence"),
                                Cat("SELECT setval(pg_get_serial_sequence('", t, "', '", col,
                                    "'), max(", col, ")) FROM ", t)));
  }
  if (sink.last_seq() == 0) {
    return Status(Code::kCorruption, "the source has no audit records (not even its genesis)");
  }
  TPMMA_RETURN_IF_ERROR(
      postgres::Script(c, "hold the audit head's trigger",
                       "ALTER TABLE audit_head DISABLE TRIGGER audit_head_advance"));
  auto moved = Command(c, "move the audit head", "UPDATE audit_head SET seq = $1, hash = $2",
                       Params(sink.last_seq(), sink.last_hash()));
  if (!moved) return moved.error();
  return postgres::Script(c, "restore the audit head's trigger",
                          "ALTER TABLE audit_head ENABLE TRIGGER audit_head_advance");
}

// The target read back: every table as many rows as it was given, the chain verifying and
// ending at the last record given.
Result<PostgresImportReport> CheckImport(PGconn* c, const InsertSink& sink) {
  PostgresImportReport report;
  for (const auto& [table, given] : sink.counts()) {
    TPMMA_ASSIGN_OR_RETURN(Rows n,
                           Query(c, Cat("count ", table), Cat("SELECT count(*) FROM ", table)));
    if (n.Int(0, 0) != given) {
      return Error(Code::kInternal, Cat("import: table ", table, " holds ", n.Int(0, 0),
                                        " rows, the source gave ", given));
    }
    report.counts.emplace_back(table, n.Int(0, 0));
  }
  TPMMA_ASSIGN_OR_RETURN(report.chain, postgres::CheckAuditChainLocked(c));
  TPMMA_ASSIGN_OR_RETURN(Rows head, Query(c, "read audit head", "SELECT hash FROM audit_head"));
  report.head_hash = head.Blob(0, 0);
  if (report.chain.last_seq != sink.last_seq() || report.head_hash != sink.last_hash()) {
    return Error(Code::kInternal, "import: the copied chain does not end where the source's does");
  }
  return report;
}

}  // namespace

Result<PostgresImportReport> PostgresVault::ImportIntoEmpty(
    const std::string& given, const PostgresVaultOptions& options,
    const std::function<Status(CopySink&)>& source) {
  TPMMA_ASSIGN_OR_RETURN(std::string where, postgres::DescribeConnInfo(given));
  std::string conninfo = given;
  if (!options.password.empty()) {
    TPMMA_ASSIGN_OR_RETURN(conninfo, postgres::ConnInfoWithPassword(given, options.password));
  }
  TPMMA_ASSIGN_OR_RETURN(ConnPtr conn, postgres::Connect(conninfo, options.lock_timeout_ms));
  PGconn* c = conn.get();
  return postgres::InTxn(c, postgres::TxnKind::kWrite, "import vault",
                         [&]() -> Result<PostgresImportReport> {
                           TPMMA_RETURN_IF_ERROR(postgres::CreateSchemaForImportLocked(c, where));
                           InsertSink sink(c);
                           TPMMA_RETURN_IF_ERROR(source(sink));
                           TPMMA_RETURN_IF_ERROR(FinishImport(c, sink));
                           return CheckImport(c, sink);
                         });
}

}  // namespace tpmma::storage
