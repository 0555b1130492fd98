// SPDX-License-Identifier: GPL-2.0-or-later
// The real ma-server as a child process, for tests that go over the wire:
//
//   ServerProcess   fork/exec with stderr on a pipe; waits for the "listening on" line.
//   MaInstance      `ma-admin init` into a fresh directory (ephemeral port, given EK roots),
//                   then ma-server from its config.toml; restartable (after kill -9 too).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "tests/support/testutil.h"

namespace tpmma::testing {

class ServerProcess {
 public:
  explicit ServerProcess(std::vector<std::string> argv);
  ~ServerProcess();  // SIGKILL and reap if still running
  ServerProcess(const ServerProcess&) = delete;
  ServerProcess& operator=(const ServerProcess&) = delete;

  pid_t pid() const { return pid_; }
  // Reads stderr until "listening on https://127.0.0.1:PORT" (or EOF/timeout).
  std::optional<uint16_t> WaitListening(std::chrono::milliseconds timeout);
  // Sends `sig` and returns the exit code (-1 if killed by a signal or still running after
  // `timeout`).
  int SignalAndWait(int sig, std::chrono::milliseconds timeout);
  const std::string& output() const { return output_; }

 private:
  bool ReadSome(std::chrono::milliseconds timeout);

  pid_t pid_ = -1;
  int fd_ = -1;
  bool reaped_ = false;
  std::string output_;
};

struct MaBinaries {
  std::string ma_admin, ma_server;
};

class MaInstance {
 public:
  // Creates DIR/ma with `ma-admin init --listen 127.0.0.1:0 --ek-root ...` and starts the
  // server. nullptr and *error on failure (with the tools' output).
  // `init_args` go to `ma-admin init` as well (e.g. "--no-escrow"). `vault_url`: a
  // PostgreSQL conninfo written into config.toml's [vault] (the server and every ma-admin
  // command then use that database; init's SQLite file stays unused).
  static std::unique_ptr<MaInstance> Start(const MaBinaries& bins, const std::string& dir,
                                           const std::vector<std::string>& ek_roots,
                                           std::string* error,
                                           const std::vector<std::string>& init_args = {},
                                           const std::string& vault_url = "");
  // Starts the server again from the same state (after Kill9 or Stop); new port.
  bool Restart(std::string* error);
  void Kill9();
  int Stop();  // SIGTERM; the exit code

  std::string url() const { return "https://127.0.0.1:" + std::to_string(port_); }
  uint16_t port() const { return port_; }
  const std::string& ca_file() const { return ca_file_; }
  const std::string& state_dir() const { return state_dir_; }
  std::string vault_path() const { return state_dir_ + "/vault.db"; }
  const std::string& config_path() const { return config_; }
  ServerProcess* process() { return server_.get(); }

 private:
  MaBinaries bins_;
  std::string state_dir_, config_, ca_file_;
  uint16_t port_ = 0;
  std::unique_ptr<ServerProcess> server_;
};

}  // namespace tpmma::testing
