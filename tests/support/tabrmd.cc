// SPDX-License-Identifier: GPL-2.0-or-later
#include "tests/support/tabrmd.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <mutex>
#include <sstream>
#include <string_view>
#include <thread>

extern char** environ;

namespace tpmma::testing {

namespace {

using Clock = std::chrono::steady_clock;

// The program's path in $PATH, or in /usr/sbin and /sbin (tpm2-abrmd lives there and a
// non-root PATH may lack it); "" if absent.
std::string FindProgram(const std::string& prog) {
  const char* path = std::getenv("PATH");
  std::stringstream ss(std::string(path ? path : "/usr/bin:/bin") + ":/usr/sbin:/sbin");
  std::string dir;
  while (std::getline(ss, dir, ':')) {
    std::string full = dir + "/" + prog;
    if (!dir.empty() && ::access(full.c_str(), X_OK) == 0) return full;
  }
  return {};
}

std::string Tail(const std::string& path) {
  std::string all = Slurp(path);
  return all.size() > 2000 ? all.substr(all.size() - 2000) : all;
}

// Creates (or truncates) `path` so that a later Tail never reads a file the child has not
// made yet; false if it cannot be created.
bool CreateEmpty(const std::string& path) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  if (fd < 0) return false;
  ::close(fd);
  return true;
}

// fork+exec of argv[0] (an absolute path) with stdout to `out` and stderr to `err` (both
// appended) and `extra_env` added to this process's environment. Everything exec needs is
// built before fork, so the child only calls async-signal-safe functions.
pid_t Spawn(const std::vector<std::string>& argv, const std::vector<std::string>& extra_env,
            const std::string& out, const std::string& err) {
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  std::vector<std::string> env_storage = extra_env;
  std::vector<char*> env;
  for (auto& e : env_storage) env.push_back(e.data());
  for (char** e = environ; *e != nullptr; ++e) {
    std::string_view entry(*e);
    bool overridden = false;
    for (const auto& x : extra_env) {
      if (entry.substr(0, entry.find('=') + 1) == x.substr(0, x.find('=') + 1)) overridden = true;
    }
    if (!overridden) env.push_back(*e);
  }
  env.push_back(nullptr);
  pid_t pid = ::fork();
  if (pid != 0) return pid;
  // Never outlive a crashed test binary.
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  int fd_out = ::open(out.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
  int fd_err = ::open(err.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
  if (fd_out >= 0) ::dup2(fd_out, 1);
  if (fd_err >= 0) ::dup2(fd_err, 2);
  ::execve(args[0], args.data(), env.data());
  ::_exit(127);
}

bool Exited(pid_t pid) {
  int status = 0;
  return ::waitpid(pid, &status, WNOHANG) == pid;
}

// SIGTERM, then SIGKILL if `pid` (our child) has not exited within 5 s; reaps it.
void Stop(pid_t pid) {
  if (pid <= 0) return;
  ::kill(pid, SIGTERM);
  const auto deadline = Clock::now() + std::chrono::seconds(5);
  while (Clock::now() < deadline) {
    if (Exited(pid)) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ::kill(pid, SIGKILL);
  ::waitpid(pid, nullptr, 0);
}

// The process's private D-Bus session daemon: started on first use, stopped (and its
// socket directory removed) at process exit.
class SessionBus {
 public:
  ~SessionBus() { Stop(pid_); }

  // The bus, started if need be; nullptr and *error if it cannot start.
  static SessionBus* Get(std::string* error) {
    static std::mutex mu;
    static std::unique_ptr<SessionBus> bus;
    static std::string failure;
    std::lock_guard<std::mutex> lock(mu);
    if (!bus && failure.empty()) {
      auto b = std::unique_ptr<SessionBus>(new SessionBus());
      failure = b->Launch();
      if (failure.empty()) bus = std::move(b);
    }
    if (!bus && error) *error = failure;
    return bus.get();
  }

  const std::string& address() const { return address_; }

 private:
  SessionBus() = default;

  // "" on success, else why not.
  std::string Launch() {
    const std::string out = dir_.File("address"), log = dir_.File("dbus-daemon.log");
    if (!CreateEmpty(out) || !CreateEmpty(log)) return "cannot create files in " + dir_.path();
    // --nofork keeps it our child (so PDEATHSIG and waitpid apply); --print-address writes
    // the address once the bus listens, which is the readiness condition we wait for.
    pid_ = Spawn({FindProgram("dbus-daemon"), "--session", "--nofork", "--nopidfile",
                  "--address=unix:path=" + dir_.File("bus"), "--print-address=1"},
                 {}, out, log);
    if (pid_ < 0) return "cannot fork dbus-daemon";
    const auto deadline = Clock::now() + std::chrono::seconds(10);
    while (Clock::now() < deadline) {
      std::string printed = Slurp(out);
      if (!printed.empty() && printed.back() == '\n') {
        address_ = printed.substr(0, printed.find('\n'));
        // See tabrmd.h: the tabrmd TCTI in this process finds the bus only through this.
        ::setenv("DBUS_SESSION_BUS_ADDRESS", address_.c_str(), 1);
        return {};
      }
      if (Exited(pid_)) {
        pid_ = -1;
        return "dbus-daemon exited: " + Tail(log);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    Stop(pid_);
    pid_ = -1;
    return "dbus-daemon printed no address within 10 s: " + Tail(log);
  }

  TempDir dir_;
  std::string address_;
  pid_t pid_ = -1;
};

}  // namespace

bool ResourceManager::Available(std::string* why_not) {
  if (!Swtpm::Available(why_not)) return false;
  for (const char* prog : {"tpm2-abrmd", "dbus-daemon"}) {
    if (FindProgram(prog).empty()) {
      if (why_not)
        *why_not = std::string(prog) +
                   " is not installed (apt install tpm2-abrmd libtss2-tcti-tabrmd0 dbus)";
      return false;
    }
  }
  return true;
}

std::unique_ptr<ResourceManager> ResourceManager::Start(const Swtpm& tpm, std::string* error) {
  if (!Available(error)) return nullptr;
  SessionBus* bus = SessionBus::Get(error);
  if (bus == nullptr) return nullptr;
  static std::atomic<int> counter{0};
  const int n = counter++;
  std::unique_ptr<ResourceManager> rm(new ResourceManager());
  // The pid keeps names apart even if two test processes ever shared a bus.
  rm->bus_name_ =
      "com.intel.tss2.Tabrmd.test" + std::to_string(::getpid()) + "_" + std::to_string(n);
  rm->tcti_ = "tabrmd:bus_name=" + rm->bus_name_ + ",bus_type=session";
  rm->dbus_address_ = bus->address();
  rm->log_ = tpm.File("tabrmd-" + std::to_string(n) + ".log");
  if (!CreateEmpty(rm->log_)) {
    if (error) *error = "cannot create " + rm->log_;
    return nullptr;
  }
  // --allow-root: tests may run as root, which tpm2-abrmd refuses by default.
  rm->pid_ = Spawn({FindProgram("tpm2-abrmd"), "--session", "--allow-root", "--tcti=" + tpm.tcti(),
                    "--dbus-name=" + rm->bus_name_},
                   {"DBUS_SESSION_BUS_ADDRESS=" + rm->dbus_address_}, rm->log_, rm->log_);
  if (rm->pid_ < 0) {
    if (error) *error = "cannot fork tpm2-abrmd";
    return nullptr;
  }
  // Up as soon as a command goes through it; given up on as soon as it has exited.
  const auto deadline = Clock::now() + std::chrono::seconds(10);
  CommandResult probe;
  while (Clock::now() < deadline) {
    probe = rm->Tools({"tpm2_getcap", "properties-fixed"});
    if (probe.exit_code == 0) return rm;
    if (Exited(rm->pid_)) {
      rm->pid_ = -1;
      if (error) *error = "tpm2-abrmd exited: " + Tail(rm->log_);
      return nullptr;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  if (error) *error = "tpm2-abrmd did not answer within 10 s: " + probe.output + Tail(rm->log_);
  return nullptr;  // the destructor stops it
}

ResourceManager::~ResourceManager() {
  Stop(pid_);
}

CommandResult ResourceManager::Tools(const std::vector<std::string>& argv) const {
  std::vector<std::string> full = {"env", "DBUS_SESSION_BUS_ADDRESS=" + dbus_address_,
                                   "TPM2TOOLS_TCTI=" + tcti_};
  full.insert(full.end(), argv.begin(), argv.end());
  return RunCommand(full);
}

}  // namespace tpmma::testing
