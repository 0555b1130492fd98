// SPDX-License-Identifier: GPL-2.0-or-later
// The one place a TSS2_RC becomes a tpmma::Status. Every tss2 call (MU, ESAPI, TCTI) in
// tpm-ma goes through CheckRc so that operators see the same plain words for the same fault.
#pragma once

#include <cstdint>
#include <string_view>

#include <tss2/tss2_common.h>

#include "common/status.h"

namespace tpmma::tpm {

// OK for TSS2_RC_SUCCESS. Otherwise a Status naming `call` (e.g. "Esys_Import"), the hex
// code, Tss2_RC_Decode's text and, for codes we know, what it means in our protocols. The
// call name doubles as context: a TPM_RC_FAILURE from an Import means "wrapped for another
// TPM", from anything else it means a TPM failure.
// Codes: MU-layer errors -> kMalformed, TCTI connection errors (and ESAPI's BAD_SEQUENCE,
// which our synchronous calls see only after such an error broke the context) ->
// kUnavailable, every other error -> kTpmError.
Status CheckRc(std::string_view call, TSS2_RC rc);

// Whether `s` is CheckRc's for a command to a TPM on this host (it names the call, "Esys_..."
// or "Tss2_Tcti..."; not Tss2_MU, which parses bytes from anywhere). The MA's faults never name one
// (server/ma_service.cc words them over), so a client can tell "this TPM failed mid-exchange" from
// "the MA refused".
bool FromLocalTpm(const Status& s);

// The format-one/format-zero base of a TPM-layer response code with the parameter,
// handle and session numbers stripped (0x3DF -> 0x09F TPM_RC_INTEGRITY); 0 for non-TPM layers
// other than the resource manager's TPM pass-through.
uint32_t TpmBaseRc(TSS2_RC rc);

}  // namespace tpmma::tpm
