// SPDX-License-Identifier: GPL-2.0-or-later
#include "tests/support/swtpm.h"

#include <arpa/inet.h>
#include <dlfcn.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>
#include <thread>

namespace tpmma::testing {

namespace {

// tss2 3.2.1's swtpm TCTI leaks its copy of the configuration string when it cannot connect
// (to a TPM a test has just killed), and tctildr then unloads the module, so LeakSanitizer
// can name neither the module nor a function and tests/lsan.supp could not match the report.
// Kept loaded (RTLD_NODELETE), the report names libtss2-tcti-swtpm.so, which it lists.
[[maybe_unused]] const bool kSwtpmTctiPinned = [] {
  return dlopen("libtss2-tcti-swtpm.so.0", RTLD_NOW | RTLD_NODELETE) != nullptr;
}();

bool InPath(const std::string& prog) {
  const char* path = std::getenv("PATH");
  std::stringstream ss(path ? path : "/usr/bin:/bin");
  std::string dir;
  while (std::getline(ss, dir, ':')) {
    if (::access((dir + "/" + prog).c_str(), X_OK) == 0) return true;
  }
  return false;
}

std::string Tail(const std::string& path) {
  std::ifstream in(path);
  std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return all.size() > 2000 ? all.substr(all.size() - 2000) : all;
}

void WriteText(const std::string& path, const std::string& text) {
  std::ofstream(path) << text;
}

// Binds 127.0.0.1:port (0 = any); returns the fd and the bound port, or -1.
int BindLoopback(int port, int* bound) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(static_cast<uint16_t>(port));
  socklen_t len = sizeof a;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    ::close(fd);
    return -1;
  }
  *bound = ntohs(a.sin_port);
  return fd;
}

// Two consecutive free ports (server, ctrl), free at the time of the check; Launch retries
// if swtpm loses the race for them.
int PickPortPair() {
  for (int attempt = 0; attempt < 50; ++attempt) {
    int p = 0;
    int fd1 = BindLoopback(0, &p);
    if (fd1 < 0) continue;
    int p2 = 0;
    int fd2 = p < 65535 ? BindLoopback(p + 1, &p2) : -1;
    ::close(fd1);
    if (fd2 >= 0) {
      ::close(fd2);
      return p;
    }
  }
  return -1;
}

bool Accepts(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return false;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(static_cast<uint16_t>(port));
  bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  ::close(fd);
  return ok;
}

pid_t Spawn(const std::vector<std::string>& argv, const std::string& log) {
  pid_t pid = ::fork();
  if (pid != 0) return pid;
  // Never outlive a crashed test binary.
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
  if (fd >= 0) {
    ::dup2(fd, 1);
    ::dup2(fd, 2);
    ::close(fd);
  }
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  ::execvp(args[0], args.data());
  ::_exit(127);
}

}  // namespace

bool Swtpm::Available(std::string* why_not) {
  for (const char* prog :
       {"swtpm", "swtpm_setup", "swtpm_localca", "tpm2_getcap", "tpm2_flushcontext"}) {
    if (!InPath(prog)) {
      if (why_not)
        *why_not =
            std::string(prog) + " is not installed (apt install swtpm swtpm-tools tpm2-tools)";
      return false;
    }
  }
  return true;
}

std::string Swtpm::RootCaCertPath() const {
  return File("localca/swtpm-localca-rootca-cert.pem");
}
std::string Swtpm::IntermediateCaCertPath() const {
  return File("localca/issuercert.pem");
}

std::unique_ptr<Swtpm> Swtpm::Start(std::string* error) {
  if (!Available(error)) return nullptr;
  std::unique_ptr<Swtpm> t(new Swtpm());  // private constructor: make_unique cannot reach it
  const std::string ca = t->File("localca");
  const std::string state = t->File("state");
  std::filesystem::create_directories(ca);
  std::filesystem::create_directories(state);
  // A private swtpm-localca config keeps the CA in our temp dir, not /var/lib/swtpm-localca.
  WriteText(t->File("swtpm-localca.conf"),
            "statedir = " + ca + "\nsigningkey = " + ca + "/signkey.pem\nissuercert = " + ca +
                "/issuercert.pem\ncertserial = " + ca + "/certserial\n");
  WriteText(
      t->File("swtpm-localca.options"),
      "--platform-manufacturer tpm-ma-test\n--platform-version 2.1\n--platform-model swtpm-test\n");
  WriteText(t->File("swtpm_setup.conf"),
            "create_certs_tool = /usr/bin/swtpm_localca\ncreate_certs_tool_config = " +
                t->File("swtpm-localca.conf") + "\ncreate_certs_tool_options = " +
                t->File("swtpm-localca.options") + "\nactive_pcr_banks = sha256\n");
  CommandResult setup =
      RunCommand({"swtpm_setup", "--tpm2", "--tpmstate", state, "--config",
                  t->File("swtpm_setup.conf"), "--create-ek-cert", "--create-platform-cert",
                  "--overwrite", "--logfile", t->File("swtpm_setup.log")});
  if (setup.exit_code != 0) {
    if (error) *error = "swtpm_setup failed: " + setup.output + Tail(t->File("swtpm_setup.log"));
    return nullptr;
  }
  if (!t->Launch(error)) return nullptr;
  return t;
}

bool Swtpm::Launch(std::string* error) {
  const std::string log = File("swtpm.log");
  for (int attempt = 0; attempt < 5; ++attempt) {
    int p = PickPortPair();
    if (p < 0) continue;
    pid_t pid =
        Spawn({"swtpm", "socket", "--tpm2", "--tpmstate", "dir=" + File("state"), "--server",
               "type=tcp,port=" + std::to_string(p) + ",bindaddr=127.0.0.1", "--ctrl",
               "type=tcp,port=" + std::to_string(p + 1) + ",bindaddr=127.0.0.1", "--flags",
               "not-need-init,startup-clear", "--log", "file=" + log + ",level=1"},
              log);
    if (pid < 0) break;
    // Wait for the condition "swtpm accepts on both ports" or "swtpm exited" (lost the
    // port race: retry with new ports). Poll interval is short; the bound is generous.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    bool exited = false;
    while (std::chrono::steady_clock::now() < deadline) {
      int status = 0;
      if (::waitpid(pid, &status, WNOHANG) == pid) {
        exited = true;
        break;
      }
      if (Accepts(p + 1) && Accepts(p)) {
        pid_ = pid;
        port_ = p;
        tcti_ = "swtpm:host=127.0.0.1,port=" + std::to_string(p);
        return true;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    if (!exited) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
    }
  }
  if (error) *error = "swtpm did not start: " + Tail(log);
  return false;
}

Swtpm::~Swtpm() {
  Stop();
}

void Swtpm::Kill() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGKILL);
  ::waitpid(pid_, nullptr, 0);
  pid_ = -1;
}

void Swtpm::Stop() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGTERM);
  ::waitpid(pid_, nullptr, 0);
  pid_ = -1;
}

bool Swtpm::Restart(std::string* error) {
  Kill();
  return Launch(error);
}

CommandResult Swtpm::ToolsNoFlush(const std::vector<std::string>& argv) const {
  std::vector<std::string> full = {"env", "TPM2TOOLS_TCTI=" + tcti_};
  full.insert(full.end(), argv.begin(), argv.end());
  return RunCommand(full);
}

CommandResult Swtpm::Tools(const std::vector<std::string>& argv) const {
  CommandResult r = ToolsNoFlush(argv);
  ToolsNoFlush({"tpm2_flushcontext", "-t"});
  return r;
}

Swtpm* SharedSwtpm(int index, std::string* why) {
  static std::mutex mu;
  static std::map<int, std::unique_ptr<Swtpm>> tpms;
  static std::map<int, std::string> errors;
  std::lock_guard<std::mutex> lock(mu);
  if (!tpms.count(index) && !errors.count(index)) {
    std::string err;
    auto t = Swtpm::Start(&err);
    if (t) {
      tpms[index] = std::move(t);
    } else {
      errors[index] = err;
    }
  }
  if (tpms.count(index)) return tpms[index].get();
  if (why) *why = errors[index];
  return nullptr;
}

}  // namespace tpmma::testing
