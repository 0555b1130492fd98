// SPDX-License-Identifier: GPL-2.0-or-later
// ma-server: loads the config, builds the SOAP endpoint, serves until SIGTERM/SIGINT.
#include <utility>

#include <malloc.h>

#include <csignal>
#include <cstdio>
#include <memory>
#include <string>

#include <spdlog/spdlog.h>
#include <CLI/CLI.hpp>

#include "common/env.h"
#include "common/status.h"
#include "server/config.h"
#include "server/http_server.h"
#include "server/log.h"
#include "server/ma_service.h"
#include "server/vault_open.h"

namespace {

constexpr int kExitOk = 0;
constexpr int kExitRuntime = 1;
constexpr int kExitConfig = 2;

int Fail(int code, const tpmma::Status& status) {
  std::fprintf(stderr, "ma-server: %s\n", status.ToString().c_str());
  return code;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace tpmma;
  using namespace tpmma::server;

  CLI::App app{"ma-server: the tpm-ma Migration Authority, SOAP over HTTPS."};
  app.footer(
      "Exit codes:\n"
      "  0  stopped cleanly after SIGTERM/SIGINT, or --check-config found the config OK\n"
      "  1  runtime failure (cannot listen, vault or MA key unusable)\n"
      "  2  bad configuration or usage\n"
      "Logs go to stderr.");
  std::string config_path;
  bool check_only = false;
  app.add_option("--config", config_path, "configuration file (TOML)")->type_name("FILE");
  app.add_flag("--check-config", check_only,
               "check the configuration and the files it names, print \"config OK\", exit");
  app.set_version_flag("--version", std::string("ma-server ") + TPMMA_VERSION);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? kExitOk : kExitConfig;  // --help and --version exit 0
  }
  if (config_path.empty()) {
    std::fprintf(stderr, "ma-server: --config FILE is required (see --help)\n");
    return kExitConfig;
  }

  Result<Config> config = LoadConfig(config_path);
  if (!config) return Fail(kExitConfig, config.error());
  if (Status s = CheckConfigFiles(*config); !s.ok()) return Fail(kExitConfig, s);
  if (Status s = CheckTlsConfig(*config, Env::Default()); !s.ok()) return Fail(kExitConfig, s);
  if (check_only) {
    if (Status s = CheckMaServiceConfig(*config, Env::Default()); !s.ok()) {
      return Fail(kExitConfig, s);
    }
    // A database that does not answer would stop the start just after this check; a SQLite
    // file is the service's own and is made at the first start, so only PostgreSQL is asked.
    if (!config->vault_url.empty()) {
      if (Status s = CheckVaultAnswers(*config, Env::Default()); !s.ok()) {
        return Fail(kExitRuntime, s);
      }
    }
    std::printf("config OK\n");
    return kExitOk;
  }
  if (Status s = InitLogging(config->log_level); !s.ok()) return Fail(kExitConfig, s);
  // Before any thread starts: with glibc's default (8 arenas per core) each busy worker
  // thread grows a heap of its own, and RSS with it.
  if (config->malloc_arenas > 0) mallopt(M_ARENA_MAX, config->malloc_arenas);
  // Asio sends with MSG_NOSIGNAL; this covers anything else that writes to a dead peer.
  std::signal(SIGPIPE, SIG_IGN);

  Env* env = Env::Default();
  Result<std::unique_ptr<Endpoint>> made = MakeMaService(*config, env);
  if (!made) {
    spdlog::error("{}", made.error().ToString());
    return made.error().code() == Code::kInvalidArgument ? kExitConfig : kExitRuntime;
  }
  std::unique_ptr<Endpoint> endpoint = std::move(*made);

  Result<std::unique_ptr<HttpServer>> server = HttpServer::Create(*config, endpoint.get(), env);
  if (!server) {
    spdlog::error("{}", server.error().ToString());
    return server.error().code() == Code::kInvalidArgument ? kExitConfig : kExitRuntime;
  }
  if (Status s = (*server)->Start(/*handle_signals=*/true); !s.ok()) {
    spdlog::error("{}", s.ToString());
    return kExitRuntime;
  }
  (*server)->Wait();
  // The server first (no request can reach the endpoint any more), then the endpoint, which
  // closes the vault cleanly.
  server->reset();
  endpoint.reset();
  spdlog::info("exiting");
  return kExitOk;
}
