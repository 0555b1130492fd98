// SPDX-License-Identifier: GPL-2.0-or-later
// A private, freshly provisioned swtpm TPM 2.0 for tests: its own state, its own
// swtpm-localca CA (EK and platform certificates), free loopback ports, and helpers to
// run tpm2-tools against it. Killed and removed on destruction.
//
//   std::string why;
//   auto tpm = tpmma::testing::Swtpm::Start(&why);
//   if (!tpm) GTEST_SKIP() << why;          // only when swtpm/tpm2-tools are not installed
//   tpm->Tools({"tpm2_createprimary", "-C", "o", "-c", tpm->File("srk.ctx")});
//   Esys/TctiLdr users: tpm->tcti()  ==  "swtpm:host=127.0.0.1,port=P"
//
// Provisioning takes about a second (the CA key is made once per fixture). Share instances
// across a test binary with SharedSwtpm(i) rather than starting one per test.
#pragma once

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "tests/support/testutil.h"

namespace tpmma::testing {

// A test binary's shared fixture: built by `build` the first time a test asks for it, then
// the same for every test. Null with *skip set when swtpm is not installed (the only reason
// a test may skip); null with *error when building failed.
template <typename World>
World* BuildOnce(std::string (*build)(World&), std::string* error, bool* skip);

class Swtpm {
 public:
  // Checks that swtpm, swtpm_setup, swtpm_localca and tpm2-tools are installed; if not,
  // returns false and says which is missing (the only reason tests may skip).
  static bool Available(std::string* why_not);

  // Provisions and starts a TPM. On failure returns nullptr and the reason (with the
  // swtpm_setup/swtpm log tail) in *error.
  static std::unique_ptr<Swtpm> Start(std::string* error);

  ~Swtpm();
  Swtpm(const Swtpm&) = delete;
  Swtpm& operator=(const Swtpm&) = delete;

  const std::string& tcti() const { return tcti_; }
  int port() const { return port_; }
  // Scratch directory for this TPM's files (removed on destruction).
  const std::string& dir() const { return dir_.path(); }
  std::string File(const std::string& name) const { return dir_.File(name); }

  // Faults (tests/support/tpm_cut_proxy.h). Kill: SIGKILL now, as a power cut would; the
  // TPM keeps what it had written to its NV state, nothing volatile. Stop: SIGTERM, for a
  // quiet state directory to copy. Restart: the same TPM (its state as left) on new ports,
  // so tcti() and port() change; false and *error if it does not come up.
  void Kill();
  void Stop();
  bool Restart(std::string* error);

  // swtpm-localca chain: EK certificates are issued by the intermediate, which the root signs.
  std::string RootCaCertPath() const;
  std::string IntermediateCaCertPath() const;

  // Runs a tpm2-tools command against this TPM (TPM2TOOLS_TCTI set), then flushes all
  // transient objects: without a resource manager tpm2-tools leave them loaded and swtpm
  // holds only three (TPM_RC_OBJECT_MEMORY). Saved .ctx files stay usable.
  CommandResult Tools(const std::vector<std::string>& argv) const;
  // Same, without the flush (for sessions that must survive to the next command).
  CommandResult ToolsNoFlush(const std::vector<std::string>& argv) const;

 private:
  Swtpm() = default;
  bool Launch(std::string* error);

  TempDir dir_;
  std::string tcti_;
  int port_ = 0;
  pid_t pid_ = -1;
};

// Lazily provisioned TPMs shared by all tests of one binary (index 0, 1, ...): provisioning
// and key creation are the slow part of TPM tests. Returns nullptr (and *why) if swtpm is
// unavailable or failed to start.
Swtpm* SharedSwtpm(int index, std::string* why);

template <typename World>
World* BuildOnce(std::string (*build)(World&), std::string* error, bool* skip) {
  static World world;
  static std::string why;
  static bool ready = false, unavailable = false, done = false;
  if (!done) {
    done = true;
    unavailable = !Swtpm::Available(&why);
    if (!unavailable) {
      why = build(world);
      ready = why.empty();
    }
  }
  *skip = unavailable;
  *error = why;
  return ready ? &world : nullptr;
}

}  // namespace tpmma::testing
