// SPDX-License-Identifier: GPL-2.0-or-later
// PostgreSQL connections: opening one from a conninfo string or URL without ever printing
// its password, a fixed pool of them shared by the vault's calling threads, and InTxn.
// Internal to storage/.
#pragma once

#include <libpq-fe.h>

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "storage/postgres/query.h"

namespace tpmma::storage::postgres {

struct ConnCloser {
  void operator()(PGconn* c) const { PQfinish(c); }
};
using ConnPtr = std::unique_ptr<PGconn, ConnCloser>;

// What an error message may say about a conninfo: host, port, database and user, never the
// password (nor the string itself, which may hold one). kInvalidArgument if it does not
// parse, without libpq's text (it quotes the string).
Result<std::string> DescribeConnInfo(const std::string& conninfo);

// Whether `conninfo` (URL or keywords) carries a password. kInvalidArgument if it does not parse.
Result<bool> ConnInfoHasPassword(const std::string& conninfo);

// `conninfo` rewritten as keyword=value pairs with `password` added (replacing any in it), so
// that a password read from a file reaches libpq without ever being part of a URL the
// operator wrote or a command line. The result holds the password: never print it.
Result<std::string> ConnInfoWithPassword(const std::string& conninfo, std::string_view password);

// Connects and sets what every vault connection needs (UTF8 client encoding, synchronous
// commit, `lock_timeout_ms` as lock_timeout so that a stuck lock holder gives kUnavailable).
Result<ConnPtr> Connect(const std::string& conninfo, int lock_timeout_ms);

// A fixed set of connections; each is used by one thread at a time. A connection found
// broken is reset before it is lent again.
class ConnPool {
 public:
  ConnPool(std::string conninfo, int lock_timeout_ms, std::vector<ConnPtr> conns);
  ConnPool(const ConnPool&) = delete;
  ConnPool& operator=(const ConnPool&) = delete;

  class Lease {
   public:
    Lease(ConnPool* pool, PGconn* conn) : pool_(pool), conn_(conn) {}
    Lease(Lease&& o) noexcept : pool_(o.pool_), conn_(o.conn_) { o.conn_ = nullptr; }
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    Lease& operator=(Lease&&) = delete;
    ~Lease() {
      if (conn_ != nullptr) pool_->Release(conn_);
    }
    PGconn* get() const { return conn_; }

   private:
    ConnPool* pool_;
    PGconn* conn_;
  };

  // Waits for a free connection. kUnavailable if it was broken and cannot be re-made.
  Result<Lease> Acquire();
  // Connects `conn` again (PQreset) and configures it; the password never in the error.
  Status Remake(PGconn* conn);

 private:
  void Release(PGconn* conn);

  const std::string conninfo_;
  const int lock_timeout_ms_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<ConnPtr> all_;
  std::vector<PGconn*> idle_;
};

enum class TxnKind {
  kWrite,     // READ COMMITTED: rows are locked where a decision depends on them
  kSnapshot,  // REPEATABLE READ, READ ONLY: a multi-statement read sees one state
};

// BEGIN. With a pool: a connection the server closed while it was idle (a restart, a
// failover, an idle timeout) is only noticed when used; then it is made again and BEGIN
// retried once, which is safe because nothing of the call has run.
Status Begin(PGconn* conn, TxnKind kind, std::string_view purpose, ConnPool* pool);

// Runs f() inside BEGIN ... COMMIT; rolls back on any error of f or of the COMMIT.
template <typename F>
auto InTxn(PGconn* conn, TxnKind kind, std::string_view purpose, F&& f, ConnPool* pool = nullptr)
    -> decltype(f()) {
  if (Status s = Begin(conn, kind, purpose, pool); !s.ok()) return Error(std::move(s));
  auto r = f();
  if (!r.has_value()) {
    (void)Script(conn, "rollback", "ROLLBACK");
    return r;
  }
  if (Status s = Script(conn, Cat("commit ", purpose), "COMMIT"); !s.ok()) {
    (void)Script(conn, "rollback", "ROLLBACK");
    return Error(std::move(s));
  }
  return r;
}

inline Status ToStatus(const Result<void>& r) {
  return r.has_value() ? Status() : r.error();
}

}  // namespace tpmma::storage::postgres
