// SPDX-License-Identifier: GPL-2.0-or-later
// libpq plumbing every other file here uses: errors as Status naming the SQLSTATE, binary
// parameters (bytea travels as raw bytes, never escaped into SQL text), results in binary
// format behind RAII (Rows), and statements that return nothing. Internal to storage/.
#pragma once

#include <libpq-fe.h>

#include <concepts>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <variant>
#include <vector>

#include "common/bytes.h"
#include "common/status.h"
#include "common/text.h"

namespace tpmma::storage::postgres {

struct ResultClearer {
  void operator()(PGresult* r) const { PQclear(r); }
};
using ResultPtr = std::unique_ptr<PGresult, ResultClearer>;

// A failed statement as Status: "<purpose>: <primary message> (SQLSTATE xxxxx)". Only the
// primary message: the DETAIL of a unique violation quotes the key's value. Codes: class 23
// (constraints, our triggers) kConflict; serialization failure, deadlock, lock timeout,
// statement cancelled, connection loss, too many connections, shutdown kUnavailable; data
// corrupted kCorruption; insufficient privilege kPermissionDenied; bad encoding
// kInvalidArgument; the rest kIoError. `result` may be null (connection lost).
Status PgError(PGconn* conn, const PGresult* result, std::string_view purpose);
// The SQLSTATE of a failed result ("" if none).
std::string SqlState(const PGresult* result);

// Parameters for PQexecParams, all in binary format with their types named: int8, bool,
// text, bytea; std::nullopt is NULL.
class Params {
 public:
  Params() = default;
  template <typename... Args>
  explicit Params(const Args&... args) {
    (Add(args), ...);
  }

  template <std::integral T>
  void Add(T v) {
    if constexpr (std::is_same_v<T, bool>) {
      Push(kBool, std::string(1, v ? '\1' : '\0'));
    } else {
      AddInt(static_cast<int64_t>(v));
    }
  }
  void Add(std::string_view v) { Push(kText, std::string(v)); }
  void Add(const std::string& v) { Add(std::string_view(v)); }
  void Add(const char* v) { Add(std::string_view(v)); }
  void Add(ByteView v) { Push(kBytea, std::string(v.begin(), v.end())); }
  void Add(const Bytes& v) { Add(ByteView(v)); }
  void Add(std::nullopt_t) { Push(kText, std::nullopt); }
  template <typename T>
  void Add(const std::optional<T>& v) {
    if (v) {
      Add(*v);
    } else {
      types_.push_back(NullType<T>());
      values_.emplace_back(std::nullopt);
    }
  }
  void Add(const std::variant<int64_t, std::string>& v) {
    std::visit([&](const auto& x) { Add(x); }, v);
  }

  int size() const { return static_cast<int>(values_.size()); }
  const Oid* types() const { return types_.data(); }
  // Pointers into this object: valid while it lives and is not added to.
  std::vector<const char*> Values() const;
  std::vector<int> Lengths() const;

 private:
  static constexpr Oid kBool = 16, kBytea = 17, kInt8 = 20, kText = 25;
  template <typename T>
  static Oid NullType() {
    if constexpr (std::is_same_v<T, bool>) return kBool;
    if constexpr (std::is_integral_v<T>) return kInt8;
    if constexpr (std::is_same_v<T, Bytes>) return kBytea;
    return kText;
  }
  void AddInt(int64_t v);
  void Push(Oid type, std::optional<std::string> value) {
    types_.push_back(type);
    values_.push_back(std::move(value));
  }

  std::vector<Oid> types_;
  std::vector<std::optional<std::string>> values_;
};

// A result in binary format. Column accessors expect the types the schema uses (bigint,
// boolean, text, bytea); a NULL reads as 0, false or empty.
class Rows {
 public:
  explicit Rows(ResultPtr r) : r_(std::move(r)) {}
  int size() const { return PQntuples(r_.get()); }
  bool empty() const { return size() == 0; }
  // Rows changed by INSERT/UPDATE/DELETE.
  int64_t Affected() const;

  bool IsNull(int row, int col) const { return PQgetisnull(r_.get(), row, col) != 0; }
  int64_t Int(int row, int col) const;
  bool Bool(int row, int col) const;
  std::string Text(int row, int col) const;
  Bytes Blob(int row, int col) const;
  std::optional<int64_t> OptInt(int row, int col) const {
    return IsNull(row, col) ? std::nullopt : std::optional<int64_t>(Int(row, col));
  }

 private:
  ResultPtr r_;
};

// One statement with parameters, binary results. `purpose` names it in errors.
Result<Rows> Query(PGconn* conn, std::string_view purpose, const std::string& sql,
                   const Params& params = Params());
// The same for statements whose rows do not matter; returns the rows changed.
Result<int64_t> Command(PGconn* conn, std::string_view purpose, const std::string& sql,
                        const Params& params = Params());
// A script with no parameters (BEGIN, COMMIT, a migration file), in text mode.
Status Script(PGconn* conn, std::string_view purpose, const std::string& sql);

}  // namespace tpmma::storage::postgres
