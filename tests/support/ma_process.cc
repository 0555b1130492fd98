// SPDX-License-Identifier: GPL-2.0-or-later
#include "tests/support/ma_process.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <regex>
#include <sstream>

namespace tpmma::testing {

using std::chrono::milliseconds;

ServerProcess::ServerProcess(std::vector<std::string> argv) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return;
  pid_ = ::fork();
  if (pid_ == 0) {
    ::dup2(fds[1], 2);
    std::vector<char*> args;
    for (auto& a : argv) args.push_back(a.data());
    args.push_back(nullptr);
    ::execv(args[0], args.data());
    ::_exit(127);
  }
  ::close(fds[1]);
  fd_ = fds[0];
}

ServerProcess::~ServerProcess() {
  if (pid_ > 0 && !reaped_) {
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
  }
  if (fd_ >= 0) ::close(fd_);
}

std::optional<uint16_t> ServerProcess::WaitListening(milliseconds timeout) {
  // The port counts only with the character after it: a read may end inside the line.
  static const std::regex kListening(R"(listening on https://127\.0\.0\.1:(\d+)\D)");
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    std::smatch m;
    if (std::regex_search(output_, m, kListening)) {
      return static_cast<uint16_t>(std::stoi(m[1].str()));
    }
    auto left =
        std::chrono::duration_cast<milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left <= milliseconds(0) || !ReadSome(left)) return std::nullopt;
  }
}

int ServerProcess::SignalAndWait(int sig, milliseconds timeout) {
  ::kill(pid_, sig);
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      reaped_ = true;
      while (ReadSome(milliseconds(100))) {
      }
      return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    }
    ReadSome(milliseconds(20));
  }
  return -1;
}

bool ServerProcess::ReadSome(milliseconds timeout) {
  pollfd p{fd_, POLLIN, 0};
  int ready;
  do {
    ready = ::poll(&p, 1, static_cast<int>(timeout.count()));
  } while (ready < 0 && errno == EINTR);  // a signal is not the server's answer
  if (ready <= 0) return false;
  char buf[4096];
  ssize_t n;
  do {
    n = ::read(fd_, buf, sizeof buf);
  } while (n < 0 && errno == EINTR);
  if (n <= 0) return false;
  output_.append(buf, static_cast<size_t>(n));
  return true;
}

namespace {

// Adds `url = "..."` under [vault]: the key is the only one init does not write, so the
// line goes right after the table's header (TOML has no other table of that name).
bool PointVaultAt(const std::string& config, const std::string& url, std::string* error) {
  std::ifstream in(config);
  std::stringstream text;
  text << in.rdbuf();
  std::string toml = text.str();
  const size_t at = toml.find("[vault]\n");
  if (at == std::string::npos) {
    *error = "no [vault] table in " + config;
    return false;
  }
  std::string quoted;
  for (char c : url) {
    if (c == '"' || c == '\\') quoted += '\\';
    quoted += c;
  }
  toml.insert(at + 8, "url = \"" + quoted + "\"\n");
  std::ofstream out(config, std::ios::trunc);
  out << toml;
  return static_cast<bool>(out.flush());
}

}  // namespace

std::unique_ptr<MaInstance> MaInstance::Start(const MaBinaries& bins, const std::string& dir,
                                              const std::vector<std::string>& ek_roots,
                                              std::string* error,
                                              const std::vector<std::string>& init_args,
                                              const std::string& vault_url) {
  auto ma = std::make_unique<MaInstance>();
  ma->bins_ = bins;
  ma->state_dir_ = dir + "/ma";
  std::vector<std::string> argv = {bins.ma_admin,  "init",     "--dir",
                                   ma->state_dir_, "--listen", "127.0.0.1:0"};
  for (const auto& r : ek_roots) {
    argv.push_back("--ek-root");
    argv.push_back(r);
  }
  argv.insert(argv.end(), init_args.begin(), init_args.end());
  CommandResult r = RunCommand(argv);
  if (r.exit_code != 0) {
    *error = "ma-admin init failed: " + r.output;
    return nullptr;
  }
  ma->config_ = ma->state_dir_ + "/config.toml";
  if (!vault_url.empty() && !PointVaultAt(ma->config_, vault_url, error)) return nullptr;
  ma->ca_file_ = ma->state_dir_ + "/ca/ca-cert.pem";
  if (!ma->Restart(error)) return nullptr;
  return ma;
}

bool MaInstance::Restart(std::string* error) {
  server_.reset();
  server_ = std::make_unique<ServerProcess>(
      std::vector<std::string>{bins_.ma_server, "--config", config_});
  auto port = server_->WaitListening(milliseconds(20000));
  if (!port) {
    *error = "ma-server did not start: " + server_->output();
    return false;
  }
  port_ = *port;
  return true;
}

void MaInstance::Kill9() {
  if (server_) server_->SignalAndWait(SIGKILL, milliseconds(10000));
}

int MaInstance::Stop() {
  return server_ ? server_->SignalAndWait(SIGTERM, milliseconds(20000)) : -1;
}

}  // namespace tpmma::testing
