// SPDX-License-Identifier: GPL-2.0-or-later
#include "storage/postgres/query.h"

#include <cstring>

namespace tpmma::storage::postgres {
namespace {

uint64_t ReadBigEndian(const char* p, int n) {
  uint64_t v = 0;
  for (int i = 0; i < n; ++i) v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}

Code CodeOfSqlState(std::string_view state) {
  if (state.starts_with("23")) return Code::kConflict;
  if (state == "40001" || state == "40P01" || state == "55P03" || state == "57014" ||
      state.starts_with("08") || state == "53300" || state == "57P01" || state == "57P03") {
    return Code::kUnavailable;
  }
  if (state == "XX001" || state == "XX002") return Code::kCorruption;
  // The role may not create or change the vault's tables: an operator's setting to fix.
  if (state == "42501") return Code::kPermissionDenied;
  if (state == "22021" || state == "22P05") return Code::kInvalidArgument;
  return Code::kIoError;
}

// libpq's message ends with a newline; keep messages on one line.
std::string OneLine(const char* text) {
  std::string s = text == nullptr ? "" : text;
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  for (char& c : s) {
    if (c == '\n') c = ' ';
  }
  return s;
}

}  // namespace

std::string SqlState(const PGresult* result) {
  const char* s = result == nullptr ? nullptr : PQresultErrorField(result, PG_DIAG_SQLSTATE);
  return s == nullptr ? "" : s;
}

Status PgError(PGconn* conn, const PGresult* result, std::string_view purpose) {
  const std::string state = SqlState(result);
  const char* primary =
      result == nullptr ? nullptr : PQresultErrorField(result, PG_DIAG_MESSAGE_PRIMARY);
  if (state.empty()) {
    // No server error: libpq itself failed (connection lost, out of memory). Its message
    // names the socket or host, never the password.
    return Status(Code::kUnavailable,
                  Cat(purpose, ": PostgreSQL connection failed: ", OneLine(PQerrorMessage(conn))));
  }
  return Status(CodeOfSqlState(state),
                Cat(purpose, ": ", OneLine(primary), " (SQLSTATE ", state, ")"));
}

void Params::AddInt(int64_t v) {
  std::string be(8, '\0');
  const auto u = static_cast<uint64_t>(v);
  for (int i = 0; i < 8; ++i) be[i] = static_cast<char>(u >> (8 * (7 - i)));
  Push(kInt8, std::move(be));
}

std::vector<const char*> Params::Values() const {
  std::vector<const char*> out;
  for (const auto& v : values_) out.push_back(v ? v->data() : nullptr);
  return out;
}

std::vector<int> Params::Lengths() const {
  std::vector<int> out;
  for (const auto& v : values_) out.push_back(v ? static_cast<int>(v->size()) : 0);
  return out;
}

int64_t Rows::Affected() const {
  const char* n = PQcmdTuples(r_.get());
  return (n == nullptr || *n == '\0') ? 0 : std::strtoll(n, nullptr, 10);
}

int64_t Rows::Int(int row, int col) const {
  if (IsNull(row, col)) return 0;
  const int n = PQgetlength(r_.get(), row, col);
  const uint64_t u = ReadBigEndian(PQgetvalue(r_.get(), row, col), n);
  // Sign-extend int2/int4 (count(*) is int8, but a schema column might not be).
  if (n == 4) return static_cast<int32_t>(static_cast<uint32_t>(u));
  if (n == 2) return static_cast<int16_t>(static_cast<uint16_t>(u));
  return static_cast<int64_t>(u);
}

bool Rows::Bool(int row, int col) const {
  return !IsNull(row, col) && PQgetlength(r_.get(), row, col) == 1 &&
         PQgetvalue(r_.get(), row, col)[0] != 0;
}

std::string Rows::Text(int row, int col) const {
  if (IsNull(row, col)) return "";
  return std::string(PQgetvalue(r_.get(), row, col),
                     static_cast<size_t>(PQgetlength(r_.get(), row, col)));
}

Bytes Rows::Blob(int row, int col) const {
  if (IsNull(row, col)) return {};
  const auto* p = reinterpret_cast<const uint8_t*>(PQgetvalue(r_.get(), row, col));
  return Bytes(p, p + PQgetlength(r_.get(), row, col));
}

Result<Rows> Query(PGconn* conn, std::string_view purpose, const std::string& sql,
                   const Params& params) {
  const std::vector<const char*> values = params.Values();
  const std::vector<int> lengths = params.Lengths();
  const std::vector<int> formats(values.size(), 1);
  ResultPtr r(PQexecParams(conn, sql.c_str(), params.size(), params.types(), values.data(),
                           lengths.data(), formats.data(), /*resultFormat=*/1));
  const ExecStatusType st = PQresultStatus(r.get());
  if (r == nullptr || (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK)) {
    return Error(PgError(conn, r.get(), purpose));
  }
  return Rows(std::move(r));
}

Result<int64_t> Command(PGconn* conn, std::string_view purpose, const std::string& sql,
                        const Params& params) {
  TPMMA_ASSIGN_OR_RETURN(Rows rows, Query(conn, purpose, sql, params));
  return rows.Affected();
}

Status Script(PGconn* conn, std::string_view purpose, const std::string& sql) {
  ResultPtr r(PQexec(conn, sql.c_str()));
  const ExecStatusType st = PQresultStatus(r.get());
  if (r == nullptr || (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK)) {
    return PgError(conn, r.get(), purpose);
  }
  return Status();
}

}  // namespace tpmma::storage::postgres
