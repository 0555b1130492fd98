// SPDX-License-Identifier: GPL-2.0-or-later
// The MRK's persistent handle (issue #11): key files that applications use (TSS2 PRIVATE KEY
// PEMs, the tpm2-pkcs11 token) name their parent by handle, so the MRK must sit at the same
// handle on every TPM the keys are restored to. lms keeps its own copy of the MRK's blobs as
// well: the handle is for applications, lms itself never depends on it.
#pragma once

#include <cstdint>
#include <string>

#include "common/bytes.h"
#include "common/status.h"
#include "tpm/esys/esys.h"

namespace tpmma::lms {

// What holds a persistent handle, compared with the MRK's Name.
enum class HandleHolder { kEmpty, kThisMrk, kOther };

struct MrkHandleProbe {
  HandleHolder holder = HandleHolder::kEmpty;
  Bytes name;  // the Name of what holds it (empty when kEmpty)
};

Result<MrkHandleProbe> ProbeMrkHandle(esys::Tpm& tpm, uint32_t handle, ByteView mrk_name);

// kAlreadyExists, naming the object and how to free the handle, when something other than
// the MRK named `mrk_name` holds `handle` (an empty name: anything at all).
Status CheckMrkHandleFree(esys::Tpm& tpm, uint32_t handle, ByteView mrk_name);

// Makes the loaded `mrk` persistent at `handle`. Nothing to do when it is there already;
// kAlreadyExists, naming the object and how to free the handle, when something else is.
Status PersistMrk(esys::Tpm& tpm, const esys::Object& mrk, ByteView mrk_name, uint32_t handle);

// Evicts `handle` if (and only if) it holds the MRK named `mrk_name`.
Status EvictMrk(esys::Tpm& tpm, uint32_t handle, ByteView mrk_name);

// "0x81000100"; ParseMrkHandle also takes "none" (0: no persistent MRK).
std::string HandleText(uint32_t handle);
Result<uint32_t> ParseMrkHandle(std::string_view text);

}  // namespace tpmma::lms
