// SPDX-License-Identifier: GPL-2.0-or-later
#include "tests/support/postgres.h"

#include <libpq-fe.h>
#include <pwd.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <thread>
#include <vector>

#include "tests/support/testutil.h"

namespace tpmma::testing {
namespace {

namespace fs = std::filesystem;

constexpr int kPort = 5432;  // names the socket file only: the socket directory is private

struct ConnCloser {
  void operator()(PGconn* c) const { PQfinish(c); }
};
struct ResultClearer {
  void operator()(PGresult* r) const { PQclear(r); }
};

// The newest installed server, e.g. /usr/lib/postgresql/15/bin; "" if none.
std::string FindBinDir() {
  std::string best;
  int best_version = -1;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator("/usr/lib/postgresql", ec)) {
    const std::string name = entry.path().filename().string();
    const fs::path bin = entry.path() / "bin";
    if (!fs::exists(bin / "initdb") || !fs::exists(bin / "pg_ctl")) continue;
    char* end = nullptr;
    const long v = std::strtol(name.c_str(), &end, 10);
    if (end == name.c_str() || *end != '\0' || v <= best_version) continue;
    best_version = static_cast<int>(v);
    best = bin.string();
  }
  return best;
}

std::string Quote(const std::string& s) {
  return "'" + s + "'";
}

std::vector<std::string> AsClusterOwner(const std::string& bin, std::vector<std::string> argv) {
  argv[0] = bin + "/" + argv[0];
  if (::geteuid() == 0) argv.insert(argv.begin(), {"runuser", "-u", "postgres", "--"});
  return argv;
}

// A zombie (killed, not yet reaped by a parent that is still running) counts as gone.
bool ProcessAlive(long pid) {
  if (::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH) return false;
  const std::string stat = Slurp("/proc/" + std::to_string(pid) + "/stat");
  const size_t paren = stat.rfind(')');
  return paren == std::string::npos || paren + 2 >= stat.size() || stat[paren + 2] != 'Z';
}

// A test binary that was killed never ran its destructor: its cluster would keep running.
// Each cluster names its test process (owner.pid); one whose process is gone is stopped and
// removed by the next binary that starts one.
void StopOrphanedClusters(const std::string& bin) {
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator("/tmp", ec)) {
    const std::string dir = entry.path().string();
    if (entry.path().filename().string().rfind("tpmma-pg-", 0) != 0) continue;
    const std::string owner = Slurp(dir + "/owner.pid");
    const long pid = std::strtol(owner.c_str(), nullptr, 10);
    if (pid <= 0 || ProcessAlive(pid)) continue;
    RunCommand(
        AsClusterOwner(bin, {"pg_ctl", "-D", dir + "/data", "-m", "immediate", "-w", "stop"}));
    fs::remove_all(dir, ec);
  }
}

}  // namespace

std::string PostgresCluster::SkipReason() {
  if (FindBinDir().empty()) {
    return "PostgreSQL is not installed (no /usr/lib/postgresql/<version>/bin/initdb; "
           "deploy/install-deps.sh installs it)";
  }
  if (::geteuid() == 0 && ::getpwnam("postgres") == nullptr) {
    return "running as root and there is no postgres user to own the test cluster";
  }
  return "";
}

Result<PostgresCluster*> PostgresCluster::Shared() {
  static std::mutex mu;
  static std::unique_ptr<PostgresCluster> shared;
  static Status failed;
  std::lock_guard lock(mu);
  if (shared) return shared.get();
  if (!failed.ok()) return Error(failed);
  if (!SkipReason().empty()) return nullptr;
  auto c = Start();
  if (!c) {
    failed = c.error();
    return Error(failed);
  }
  shared = std::move(*c);
  return shared.get();
}

Result<std::unique_ptr<PostgresCluster>> PostgresCluster::Start() {
  std::unique_ptr<PostgresCluster> c(new PostgresCluster());
  c->bin_dir_ = FindBinDir();
  if (c->bin_dir_.empty()) return Error(Code::kUnavailable, SkipReason());
  c->as_postgres_ = ::geteuid() == 0;
  StopOrphanedClusters(c->bin_dir_);
  // Not under $TMPDIR: the postgres user must be able to reach it.
  std::string tmpl = "/tmp/tpmma-pg-XXXXXX";
  if (::mkdtemp(tmpl.data()) == nullptr) return Error(Code::kIoError, "mkdtemp for PostgreSQL");
  c->dir_ = tmpl;
  fs::create_directory(c->dir_ + "/sock");
  Spit(c->dir_ + "/owner.pid", std::to_string(::getpid()));
  if (c->as_postgres_) {
    const passwd* pw = ::getpwnam("postgres");
    for (const std::string& p : {c->dir_, c->dir_ + "/sock"}) {
      if (::chown(p.c_str(), pw->pw_uid, pw->pw_gid) != 0) {
        return Error(Code::kIoError, "chown of the test cluster's directory to postgres");
      }
    }
  }
  auto run = [&](std::vector<std::string> argv, const std::string& what) -> Status {
    CommandResult r = RunCommand(AsClusterOwner(c->bin_dir_, std::move(argv)));
    if (r.exit_code != 0) {
      return Status(Code::kUnavailable, what + " failed (exit " + std::to_string(r.exit_code) +
                                            "): " + r.output + Slurp(c->dir_ + "/log"));
    }
    return Status();
  };
  // --no-sync and fsync=off: a test cluster need not survive a power cut, and fsyncs would
  // compete with the rest of the test run for the disk.
  TPMMA_RETURN_IF_ERROR(run({"initdb", "-D", c->dir_ + "/data", "-A", "trust", "-U", "postgres",
                             "-E", "UTF8", "--locale=C", "--no-sync"},
                            "initdb"));
  const std::string opts = "-k " + c->dir_ + "/sock -p " + std::to_string(kPort) +
                           " -c listen_addresses='' -c fsync=off -c max_connections=200";
  TPMMA_RETURN_IF_ERROR(run({"pg_ctl", "-D", c->dir_ + "/data", "-l", c->dir_ + "/log", "-w", "-t",
                             "60", "-o", opts, "start"},
                            "pg_ctl start"));
  c->running_ = true;
  // pg_ctl -w has waited for it already; this is the condition the tests need.
  const std::string info = c->ConnInfo("postgres");
  for (int i = 0; PQping(info.c_str()) != PQPING_OK; ++i) {
    if (i == 600) return Error(Code::kUnavailable, "test cluster does not accept connections");
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return c;
}

PostgresCluster::~PostgresCluster() {
  if (running_) {
    RunCommand(AsClusterOwner(bin_dir_,
                              {"pg_ctl", "-D", dir_ + "/data", "-m", "immediate", "-w", "stop"}));
  }
  if (!dir_.empty() && std::getenv("TPMMA_KEEP_TEST_DIRS") == nullptr) {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
}

std::string PostgresCluster::ConnInfo(const std::string& database) const {
  return "host=" + Quote(dir_ + "/sock") + " port=" + std::to_string(kPort) +
         " user=postgres dbname=" + Quote(database);
}

Status PostgresCluster::Exec(const std::string& database, const std::string& sql) {
  auto r = QueryValue(database, sql);
  return r ? Status() : r.error();
}

Result<std::string> PostgresCluster::QueryValue(const std::string& database,
                                                const std::string& sql) {
  std::unique_ptr<PGconn, ConnCloser> conn(PQconnectdb(ConnInfo(database).c_str()));
  if (PQstatus(conn.get()) != CONNECTION_OK) {
    return Error(Code::kUnavailable,
                 "connect to test database " + database + ": " + PQerrorMessage(conn.get()));
  }
  PQsetNoticeProcessor(
      conn.get(), [](void*, const char*) {}, nullptr);  // "... skipping"
  std::unique_ptr<PGresult, ResultClearer> r(PQexec(conn.get(), sql.c_str()));
  const ExecStatusType st = PQresultStatus(r.get());
  if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
    return Error(Code::kIoError, "test SQL on " + database + ": " + PQerrorMessage(conn.get()));
  }
  if (PQntuples(r.get()) == 0 || PQnfields(r.get()) == 0) return std::string();
  return std::string(PQgetvalue(r.get(), 0, 0));
}

namespace {

Status CheckDatabaseName(const std::string& database) {
  for (char ch : database) {
    if (!((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '_')) {
      return Status(Code::kInvalidArgument, "test database names are [a-z0-9_]: " + database);
    }
  }
  return Status();
}

}  // namespace

Status PostgresCluster::DropDatabase(const std::string& database) {
  TPMMA_RETURN_IF_ERROR(CheckDatabaseName(database));
  return Exec("postgres", "DROP DATABASE IF EXISTS " + database + " WITH (FORCE)");
}

Status PostgresCluster::CreateDatabase(const std::string& database) {
  TPMMA_RETURN_IF_ERROR(CheckDatabaseName(database));
  // CREATE DATABASE cannot run in a transaction block, so "unless it exists" is a
  // duplicate_database (42P04) error taken as success.
  Status s =
      Exec("postgres", "CREATE DATABASE " + database +
                           " TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C'");
  if (!s.ok() && s.message().find("already exists") != std::string::npos) return Status();
  return s;
}

}  // namespace tpmma::testing
