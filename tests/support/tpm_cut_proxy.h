// SPDX-License-Identifier: GPL-2.0-or-later
// A loopback proxy between a TSS and a swtpm that kills the swtpm at a chosen TPM command:
// the "TPM died in the middle" fault of tests/README.md. It forwards swtpm's two ports (the
// raw TPM command channel and the control channel, port + 1, as tcti-swtpm expects), counts
// the commands that pass, and, once armed, kills the TPM (through `kill`, e.g. Swtpm::Kill)
// either before the chosen command reaches it or after the TPM executed it but before the
// caller sees the response (the nastier case: the TPM's state moved, the caller cannot know).
// It then drops every connection and stays up: after the test restarts the swtpm it points
// the proxy at the new port (Retarget) and callers that reconnect get through again.
//
//   auto proxy = TpmCutProxy::Start(tpm->port(), [&] { tpm->Kill(); }, &why);
//   proxy->Arm({.at_code = TPM2_CC_Import, .after_execute = true});
//   ... lms restore --tcti proxy->tcti() fails ...
//   tpm->Restart(&why); proxy->Retarget(tpm->port());
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace tpmma::testing {

class TpmCutProxy {
 public:
  struct Cut {
    // The cut falls on the first command, after arming, that is the `skip`+1-th command
    // seen since arming (at_code == 0) or the first with this command code (at_code != 0).
    int skip = 0;
    uint32_t at_code = 0;
    bool after_execute = false;
  };

  // Listens on two consecutive free loopback ports, forwarding to swtpm at `target_port`
  // (and target_port + 1). Null and *error on failure.
  static std::unique_ptr<TpmCutProxy> Start(int target_port, std::function<void()> kill,
                                            std::string* error);
  ~TpmCutProxy();
  TpmCutProxy(const TpmCutProxy&) = delete;
  TpmCutProxy& operator=(const TpmCutProxy&) = delete;

  // "swtpm:host=127.0.0.1,port=P" for the proxy's own port.
  std::string tcti() const;
  void Arm(Cut cut);
  void Retarget(int target_port);
  // Whether the armed cut fell, and the command codes that passed since Start (the cut
  // command included when after_execute).
  bool fired() const;
  std::vector<uint32_t> commands() const;

 private:
  struct Impl;
  explicit TpmCutProxy(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace tpmma::testing
