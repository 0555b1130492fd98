// SPDX-License-Identifier: GPL-2.0-or-later
// A throw-away PostgreSQL cluster for tests (issue #14: a real PostgreSQL, no mock): initdb
// in a private temporary directory, a postmaster listening on a unix socket in that
// directory only (no TCP), stopped and removed when the object goes. Run as root, the
// cluster belongs to the `postgres` user (initdb refuses root) and the test connects as
// the `postgres` role over the private socket with trust authentication. One cluster per
// test binary (Shared()); each vault gets its own database (CreateDatabase).
#pragma once

#include <memory>
#include <string>

#include "common/status.h"

namespace tpmma::testing {

class PostgresCluster {
 public:
  // The process's cluster, started on first use and stopped at exit. nullptr when
  // PostgreSQL is not installed (then SkipReason() says what is missing); a cluster that is
  // installed but fails to start is a test failure, never a skip: the error is returned.
  static Result<PostgresCluster*> Shared();
  // Why Shared() returned nullptr ("" when PostgreSQL is installed).
  static std::string SkipReason();

  // initdb + pg_ctl start in a new temporary directory; waits until it accepts connections.
  static Result<std::unique_ptr<PostgresCluster>> Start();
  ~PostgresCluster();
  PostgresCluster(const PostgresCluster&) = delete;
  PostgresCluster& operator=(const PostgresCluster&) = delete;

  // A libpq conninfo string for `database` on this cluster.
  std::string ConnInfo(const std::string& database) const;
  // CREATE DATABASE (UTF8, C collation) unless it exists already.
  Status CreateDatabase(const std::string& database);
  // DROP DATABASE IF EXISTS, closing its connections first (a fresh one for a repeated test).
  Status DropDatabase(const std::string& database);
  // Runs SQL statements (no parameters) on `database`, for tests that tamper.
  Status Exec(const std::string& database, const std::string& sql);
  // The first column of the first row of a query, as text ("" for no row or NULL).
  Result<std::string> QueryValue(const std::string& database, const std::string& sql);

 private:
  PostgresCluster() = default;

  std::string bin_dir_;  // .../postgresql/<version>/bin
  std::string dir_;      // the temporary directory: data/, sock/, log
  bool as_postgres_ = false;
  bool running_ = false;
};

}  // namespace tpmma::testing
