// SPDX-License-Identifier: GPL-2.0-or-later
#include "storage/postgres/connection.h"

namespace tpmma::storage::postgres {
namespace {

struct OptionsFree {
  void operator()(PQconninfoOption* o) const { PQconninfoFree(o); }
};

struct Parsed {
  std::string description;
  std::string password;
};

Result<Parsed> Parse(const std::string& conninfo) {
  char* err = nullptr;
  std::unique_ptr<PQconninfoOption, OptionsFree> opts(PQconninfoParse(conninfo.c_str(), &err));
  if (err != nullptr) PQfreemem(err);  // it quotes the string, which may hold the password
  if (!opts) {
    return Error(Code::kInvalidArgument, "the PostgreSQL connection string does not parse");
  }
  Parsed p;
  for (PQconninfoOption* o = opts.get(); o->keyword != nullptr; ++o) {
    if (o->val == nullptr || *o->val == '\0') continue;
    const std::string_view key = o->keyword;
    if (key == "password") {
      p.password = o->val;
    } else if (key == "host" || key == "hostaddr" || key == "port" || key == "dbname" ||
               key == "user") {
      p.description += Cat(p.description.empty() ? "" : " ", key, "=", o->val);
    }
  }
  if (p.description.empty()) p.description = "(libpq defaults)";
  return p;
}

// libpq does not echo the password; scrubbed anyway, so that no future message can.
std::string Scrub(std::string msg, const std::string& password) {
  if (password.empty()) return msg;
  for (size_t at = msg.find(password); at != std::string::npos; at = msg.find(password, at)) {
    msg.replace(at, password.size(), "***");
  }
  while (!msg.empty() && (msg.back() == '\n' || msg.back() == ' ')) msg.pop_back();
  return msg;
}

Status Configure(PGconn* conn, int lock_timeout_ms) {
  // libpq prints NOTICEs and WARNINGs to stderr by default. The vault has no log, and what
  // a caller must know comes back as a Status; a library writing to the server's stderr
  // would only put unreviewed text into its journal.
  PQsetNoticeProcessor(
      conn, [](void*, const char*) {}, nullptr);
  return Script(conn, "configure connection",
                Cat("SET client_encoding = 'UTF8'; SET synchronous_commit = on; "
                    "SET lock_timeout = ",
                    lock_timeout_ms, "; SET default_transaction_isolation = 'read committed'"));
}

}  // namespace

Result<std::string> DescribeConnInfo(const std::string& conninfo) {
  TPMMA_ASSIGN_OR_RETURN(Parsed p, Parse(conninfo));
  return p.description;
}

Result<bool> ConnInfoHasPassword(const std::string& conninfo) {
  TPMMA_ASSIGN_OR_RETURN(Parsed p, Parse(conninfo));
  return !p.password.empty();
}

Result<std::string> ConnInfoWithPassword(const std::string& conninfo, std::string_view password) {
  char* err = nullptr;
  std::unique_ptr<PQconninfoOption, OptionsFree> opts(PQconninfoParse(conninfo.c_str(), &err));
  if (err != nullptr) PQfreemem(err);  // it quotes the string
  if (!opts) {
    return Error(Code::kInvalidArgument, "the PostgreSQL connection string does not parse");
  }
  // Keyword values in single quotes, with ' and \ escaped (libpq's conninfo syntax).
  auto quoted = [](std::string_view v) {
    std::string q = "'";
    for (char ch : v) {
      if (ch == '\'' || ch == '\\') q += '\\';
      q += ch;
    }
    return q + "'";
  };
  std::string out;
  for (PQconninfoOption* o = opts.get(); o->keyword != nullptr; ++o) {
    if (o->val == nullptr || *o->val == '\0' || std::string_view(o->keyword) == "password") {
      continue;
    }
    out += Cat(out.empty() ? "" : " ", o->keyword, "=", quoted(o->val));
  }
  return Cat(out, out.empty() ? "" : " ", "password=", quoted(password));
}

Result<ConnPtr> Connect(const std::string& conninfo, int lock_timeout_ms) {
  TPMMA_ASSIGN_OR_RETURN(Parsed p, Parse(conninfo));
  ConnPtr conn(PQconnectdb(conninfo.c_str()));
  if (conn == nullptr) return Error(Code::kUnavailable, "PostgreSQL: out of memory connecting");
  if (PQstatus(conn.get()) != CONNECTION_OK) {
    return Error(Code::kUnavailable, Cat("cannot connect to PostgreSQL (", p.description,
                                         "): ", Scrub(PQerrorMessage(conn.get()), p.password)));
  }
  TPMMA_RETURN_IF_ERROR(Configure(conn.get(), lock_timeout_ms));
  return conn;
}

ConnPool::ConnPool(std::string conninfo, int lock_timeout_ms, std::vector<ConnPtr> conns)
    : conninfo_(std::move(conninfo)), lock_timeout_ms_(lock_timeout_ms), all_(std::move(conns)) {
  for (const ConnPtr& c : all_) idle_.push_back(c.get());
}

Result<ConnPool::Lease> ConnPool::Acquire() {
  PGconn* conn = nullptr;
  {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return !idle_.empty(); });
    conn = idle_.back();
    idle_.pop_back();
  }
  Lease lease(this, conn);
  if (PQstatus(conn) != CONNECTION_OK) TPMMA_RETURN_IF_ERROR(Remake(conn));
  return lease;
}

Status ConnPool::Remake(PGconn* conn) {
  PQreset(conn);
  if (PQstatus(conn) != CONNECTION_OK) {
    TPMMA_ASSIGN_OR_RETURN(Parsed p, Parse(conninfo_));
    return Status(Code::kUnavailable, Cat("PostgreSQL connection lost (", p.description,
                                          "): ", Scrub(PQerrorMessage(conn), p.password)));
  }
  return Configure(conn, lock_timeout_ms_);
}

Status Begin(PGconn* conn, TxnKind kind, std::string_view purpose, ConnPool* pool) {
  const char* begin =
      kind == TxnKind::kWrite ? "BEGIN" : "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY";
  Status s = Script(conn, Cat("begin ", purpose), begin);
  if (s.ok() || pool == nullptr || PQstatus(conn) == CONNECTION_OK) return s;
  TPMMA_RETURN_IF_ERROR(pool->Remake(conn));
  return Script(conn, Cat("begin ", purpose), begin);
}

void ConnPool::Release(PGconn* conn) {
  // A call that failed half-way may have left a transaction open (or aborted).
  if (PQstatus(conn) == CONNECTION_OK && PQtransactionStatus(conn) != PQTRANS_IDLE) {
    (void)Script(conn, "rollback on release", "ROLLBACK");
  }
  {
    std::lock_guard lock(mu_);
    idle_.push_back(conn);
  }
  cv_.notify_one();
}

}  // namespace tpmma::storage::postgres
