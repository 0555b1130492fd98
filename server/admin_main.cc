// SPDX-License-Identifier: GPL-2.0-or-later
// ma-admin: the helpdesk/admin tool. Today: `init`. Platforms, packages, approvals and
// audit commands arrive with issue #5.
//
// Exit codes: 0 success, 1 the operation failed, 2 bad usage.
#include <charconv>
#include <cstdio>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "common/env.h"
#include "server/admin_init.h"

namespace {

int Fail(const tpmma::Status& s, bool json) {
  if (json) {
    nlohmann::json out = {
        {"ok", false}, {"code", std::string(tpmma::CodeName(s.code()))}, {"message", s.message()}};
    std::printf("%s\n", out.dump().c_str());
  } else {
    std::fprintf(stderr, "ma-admin: %s\n", s.ToString().c_str());
  }
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"ma-admin: administer a tpm-ma Migration Authority"};
  app.require_subcommand(1);
  bool json = false;
  app.add_flag("--json", json, "machine-readable output");
  app.footer("Exit codes: 0 success, 1 the operation failed, 2 bad usage.");

  tpmma::server::InitOptions init;
  std::string listen = "127.0.0.1:8443";
  auto* init_cmd = app.add_subcommand("init", "create a fresh MA state directory");
  init_cmd->add_option("--dir", init.dir, "state directory to create (must be empty or absent)")
      ->required();
  init_cmd->add_option("--listen", listen, "address:port ma-server will listen on")
      ->capture_default_str();
  init_cmd->add_option("--ek-root", init.ek_root_files,
                       "PEM certificate of a TPM manufacturer root to trust (repeatable)");
  init_cmd->add_option("--ma-key-id", init.ma_key_id, "identifier of the MA key")
      ->capture_default_str();

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }

  if (*init_cmd) {
    // Port 0 is allowed: ma-server then binds a free port and logs it (tests use that).
    auto colon = listen.rfind(':');
    unsigned port = 0;
    const char* first = colon == std::string::npos ? nullptr : listen.c_str() + colon + 1;
    const char* last = listen.c_str() + listen.size();
    auto parsed = first ? std::from_chars(first, last, port) : std::from_chars_result{};
    if (first == nullptr || colon == 0 || parsed.ec != std::errc() || parsed.ptr != last ||
        first == last || port > 65535) {
      std::fprintf(stderr, "ma-admin: --listen must be address:port, got '%s'\n", listen.c_str());
      return 2;
    }
    init.listen_address = listen.substr(0, colon);
    init.listen_port = static_cast<uint16_t>(port);
    auto report = tpmma::server::InitMaState(init, tpmma::Env::Default());
    if (!report) return Fail(report.error(), json);
    if (json) {
      nlohmann::json out = {{"ok", true},
                            {"config", report->config_path},
                            {"ca_certificate", report->ca_certificate_path},
                            {"url", report->url},
                            {"ma_key_id", report->ma_key_id},
                            {"ma_name", report->ma_name_hex}};
      std::printf("%s\n", out.dump().c_str());
    } else {
      std::printf(
          "Created a new Migration Authority in %s\n"
          "  config:          %s\n"
          "  MA URL:          %s\n"
          "  trust (CA cert): %s   (lms --ma-ca)\n"
          "  MA key %s Name: %s\n"
          "Start it with: ma-server --config %s\n",
          init.dir.c_str(), report->config_path.c_str(), report->url.c_str(),
          report->ca_certificate_path.c_str(), report->ma_key_id.c_str(),
          report->ma_name_hex.c_str(), report->config_path.c_str());
    }
    return 0;
  }
  return 2;
}
