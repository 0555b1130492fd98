// SPDX-License-Identifier: GPL-2.0-or-later
#include "common/process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <map>

extern char** environ;

namespace tpmma {

namespace {

// A pipe's two ends, closed on destruction.
struct Pipe {
  int fd[2] = {-1, -1};
  ~Pipe() {
    for (int f : fd) {
      if (f >= 0) ::close(f);
    }
  }
  void Close(int end) {
    if (fd[end] >= 0) ::close(fd[end]);
    fd[end] = -1;
  }
};

std::vector<std::string> MergedEnvironment(const std::vector<std::string>& extra) {
  std::map<std::string, std::string> vars;
  for (char** e = environ; *e != nullptr; ++e) {
    std::string kv(*e);
    vars[kv.substr(0, kv.find('='))] = kv;
  }
  for (const std::string& kv : extra) vars[kv.substr(0, kv.find('='))] = kv;
  std::vector<std::string> out;
  for (auto& [name, kv] : vars) out.push_back(std::move(kv));
  return out;
}

std::vector<char*> CStrings(std::vector<std::string>& v) {
  std::vector<char*> out;
  for (std::string& s : v) out.push_back(s.data());
  out.push_back(nullptr);
  return out;
}

// Feeds stdin and drains stdout/stderr until both close, or the deadline.
Status Pump(Pipe& in, Pipe& out, Pipe& err, const ProcessOptions& o, ProcessResult& r) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(o.timeout_ms);
  size_t written = 0;
  if (o.input.empty()) in.Close(1);
  while (out.fd[0] >= 0 || err.fd[0] >= 0) {
    pollfd fds[3] = {{out.fd[0], POLLIN, 0}, {err.fd[0], POLLIN, 0}, {in.fd[1], POLLOUT, 0}};
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return Status(Code::kUnavailable, "timed out");
    if (::poll(fds, 3, static_cast<int>(left.count())) < 0 && errno != EINTR) {
      return Status(Code::kIoError, std::string("poll: ") + std::strerror(errno));
    }
    if (fds[2].revents != 0) {
      // Non-blocking: a child busy writing its output must not find us stuck writing input.
      ssize_t n = ::write(in.fd[1], o.input.data() + written, o.input.size() - written);
      if (n > 0) written += static_cast<size_t>(n);
      if ((n < 0 && errno != EAGAIN && errno != EINTR) || written == o.input.size()) in.Close(1);
    }
    Pipe* pipes[2] = {&out, &err};
    std::string* sinks[2] = {&r.out, &r.err};
    for (int i = 0; i < 2; ++i) {
      if (fds[i].revents == 0) continue;
      char buf[4096];
      ssize_t n = ::read(pipes[i]->fd[0], buf, sizeof buf);
      if (n <= 0) {
        pipes[i]->Close(0);
        continue;
      }
      sinks[i]->append(buf, static_cast<size_t>(n));
      if (sinks[i]->size() > o.max_output) {
        return Status(Code::kLimitExceeded,
                      "more than " + std::to_string(o.max_output) + " bytes of output");
      }
    }
  }
  return Status::Ok();
}

}  // namespace

Result<ProcessResult> RunProcess(const std::vector<std::string>& argv, const ProcessOptions& o) {
  if (argv.empty()) return Error(Code::kInvalidArgument, "no program to run");
  Pipe in, out, err;
  if (::pipe2(in.fd, O_CLOEXEC) != 0 || ::pipe2(out.fd, O_CLOEXEC) != 0 ||
      ::pipe2(err.fd, O_CLOEXEC) != 0) {
    return Error(Code::kIoError, std::string("pipe2: ") + std::strerror(errno));
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, in.fd[0], STDIN_FILENO);
  posix_spawn_file_actions_adddup2(&actions, out.fd[1], STDOUT_FILENO);
  posix_spawn_file_actions_adddup2(&actions, err.fd[1], STDERR_FILENO);
  std::vector<std::string> args = argv;
  std::vector<std::string> env = MergedEnvironment(o.extra_env);
  std::vector<char*> cargs = CStrings(args), cenv = CStrings(env);
  pid_t pid = -1;
  const int rc = ::posix_spawnp(&pid, cargs[0], &actions, nullptr, cargs.data(), cenv.data());
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) {
    return Error(Code::kUnavailable, "cannot run " + argv[0] + ": " + std::strerror(rc));
  }
  in.Close(0);
  out.Close(1);
  err.Close(1);
  ::fcntl(in.fd[1], F_SETFL, ::fcntl(in.fd[1], F_GETFL) | O_NONBLOCK);
  // A child that exits early must not kill us with SIGPIPE while we feed its stdin.
  struct sigaction ignore {
  }, previous{};
  ignore.sa_handler = SIG_IGN;
  ::sigaction(SIGPIPE, &ignore, &previous);
  ProcessResult r;
  Status pumped = Pump(in, out, err, o, r);
  ::sigaction(SIGPIPE, &previous, nullptr);
  if (!pumped.ok()) ::kill(pid, SIGKILL);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (!pumped.ok()) return Error(pumped.WithContext(argv[0]));
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return r;
}

}  // namespace tpmma
