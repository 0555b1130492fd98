// SPDX-License-Identifier: GPL-2.0-or-later
// Which MRK a store has and how it duplicates (docs/protocol.md, "MRK policies"): bound to
// one MA key (PolicyDuplicationSelect), or following the MA (PolicyAuthorize by the MA's
// policy-signing key, under that key's approval of the MA key it duplicates to).
#pragma once

#include "client/lms/keystore.h"
#include "client/lms/operations.h"
#include "client/lms/remote.h"
#include "common/status.h"
#include "tpm/esys/esys.h"

namespace tpmma::lms {

// init: the MRK `o` asks for (following when it carries the MA's approval, checked).
Result<esys::KeyBlob> CreateMrkFor(esys::Tpm& tpm, const esys::Object& srk, const InitOptions& o,
                                   const Bytes& ma_name);

// backup: the MRK duplicated to the store's MA key, as its policy requires.
Result<esys::Duplicated> DuplicateMrkFor(esys::Tpm& tpm, const StoreState& state,
                                         const esys::Object& mrk, const SecureBytes& inner);

// restore --new-store: whether an MRK with `auth_policy` is one a store on `ma_key` can back
// up: bound to it (then `ma_key`'s policy key and approval are cleared: the new store's MRK is
// bound) or following its policy-signing key. kConflict, naming `package_id`, otherwise.
Status CheckMrkPolicyFor(FetchedMaKey& ma_key, ByteView auth_policy, const std::string& package_id);

}  // namespace tpmma::lms
