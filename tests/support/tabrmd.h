// SPDX-License-Identifier: GPL-2.0-or-later
// A resource manager (tpm2-abrmd) for a test's swtpm. swtpm alone holds three transient
// objects and serves one connection at a time; OpenSSL's tpm2 provider, tpm2-pkcs11 and
// tests that keep several keys loaded need the TPM virtualized, as /dev/tpmrm0 does on a
// real machine. Tests run one tpm2-abrmd per Swtpm on a private D-Bus session bus:
//
//   std::string why;
//   if (!ResourceManager::Available(&why)) GTEST_SKIP() << why;  // only when not installed
//   auto rm = ResourceManager::Start(*tpm, &why);                 // tpm: a running Swtpm
//   ASSERT_TRUE(rm) << why;
//   esys::Tpm::Open(rm->tcti());         // "tabrmd:bus_name=...,bus_type=session"
//   rm->Tools({"tpm2_getcap", "handles-persistent"});
//   child env: DBUS_SESSION_BUS_ADDRESS=rm->dbus_address() TPM2TOOLS_TCTI=rm->tcti()
//
// The bus: one dbus-daemon per test process, started on first use and shared by all its
// ResourceManagers, listening on a socket in its own TempDir (never the system bus or a
// user's session bus). Bus names contain the pid, so test processes never share one.
//
// DBUS_SESSION_BUS_ADDRESS: the tabrmd TCTI finds the bus through this variable (GDBus
// reads it once, on the process's first session-bus connection, and keeps that connection).
// Starting the bus therefore setenv()s it in this process, replacing any inherited value, so
// that ESAPI here and every child process talks to the private bus. Start the first
// ResourceManager before the first tabrmd TCTI is opened and before threads that read the
// environment exist.
//
// While a ResourceManager runs, tpm2-abrmd holds swtpm's only connection: reach that TPM
// through tcti()/Tools() only (Swtpm::Tools and the swtpm TCTI would wait for it). Close
// every ESAPI context on tcti() before destroying the ResourceManager.
#pragma once

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "tests/support/swtpm.h"
#include "tests/support/testutil.h"

namespace tpmma::testing {

class ResourceManager {
 public:
  // Checks Swtpm::Available, then that tpm2-abrmd and dbus-daemon are installed; if not,
  // returns false and says which is missing (the only reason tests may skip).
  static bool Available(std::string* why_not);

  // Starts the shared bus if need be, then a tpm2-abrmd in front of `tpm`, and returns once
  // `tpm2_getcap properties-fixed` answers through it (at most 10 s). On failure returns
  // nullptr and the reason (with the daemon's log tail) in *error. `tpm` must outlive it.
  static std::unique_ptr<ResourceManager> Start(const Swtpm& tpm, std::string* error);

  // Stops the tpm2-abrmd it started (SIGTERM, SIGKILL if it lingers). The bus stays up for
  // the other ResourceManagers of this process until the process exits.
  ~ResourceManager();
  ResourceManager(const ResourceManager&) = delete;
  ResourceManager& operator=(const ResourceManager&) = delete;

  // TCTI for ESAPI/TctiLdr and tpm2-tools: "tabrmd:bus_name=<bus_name()>,bus_type=session".
  const std::string& tcti() const { return tcti_; }
  // The daemon's well-known name on the bus, unique per process and instance.
  const std::string& bus_name() const { return bus_name_; }
  // What a child process needs in DBUS_SESSION_BUS_ADDRESS to reach tcti().
  const std::string& dbus_address() const { return dbus_address_; }
  pid_t pid() const { return pid_; }
  // Its stdout and stderr (in the Swtpm's directory).
  const std::string& log_path() const { return log_; }

  // Runs a tpm2-tools command through this resource manager (TPM2TOOLS_TCTI and
  // DBUS_SESSION_BUS_ADDRESS set). Transient objects it leaves are flushed by tpm2-abrmd
  // when the command's connection closes.
  CommandResult Tools(const std::vector<std::string>& argv) const;

 private:
  ResourceManager() = default;

  std::string tcti_;
  std::string bus_name_;
  std::string dbus_address_;
  std::string log_;
  pid_t pid_ = -1;
};

}  // namespace tpmma::testing
