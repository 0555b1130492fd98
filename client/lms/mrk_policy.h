// SPDX-License-Identifier: GPL-2.0-or-later
// Which MRK a store has and how it duplicates (docs/protocol.md, "MRK policies"): bound to
// one MA key (PolicyDuplicationSelect), or following the MA (PolicyAuthorize by the MA's
// policy-signing key, under that key's approval of the MA key it duplicates to).
#pragma once

#include "client/lms/keystore.h"
#include "client/lms/operations.h"
#include "client/lms/remote.h"
#include "client/ma/ma_client.h"
#include "common/status.h"
#include "tpm/esys/esys.h"

namespace tpmma::lms {

// init: the MRK `o` asks for (following when it carries the MA's approval, checked).
Result<esys::KeyBlob> CreateMrkFor(esys::Tpm& tpm, const esys::Object& srk, const InitOptions& o,
                                   const Bytes& ma_name);

// backup: the MRK duplicated to the store's MA key, as its policy requires.
Result<esys::Duplicated> DuplicateMrkFor(esys::Tpm& tpm, const StoreState& state,
                                         const esys::Object& mrk, const SecureBytes& inner);

// backup, for a store whose MRK follows the MA: the MA's current storage key when it is not
// the one the store pins (after `ma-admin ma-key rotate`), checked (ma::VerifyMaKey) and
// approved by the very policy-signing key the store's MRK names; std::nullopt while the MA's
// key is the pinned one. kIntegrityFailure when another key approves it, kConflict
// when nothing does: the store then duplicates nothing to it.
Result<std::optional<FetchedMaKey>> MovedMaKey(ma::MaClient& client, const MaSettings& settings,
                                               const StoreState& state);

// restore --new-store: whether an MRK with `auth_policy` is one a store on `ma_key` can back
// up: bound to it (then `ma_key`'s policy key and approval are cleared: the new store's MRK is
// bound) or following its policy-signing key. kConflict, naming `package_id`, otherwise.
Status CheckMrkPolicyFor(FetchedMaKey& ma_key, ByteView auth_policy, const std::string& package_id);

// restore --new-store: the MA key a store with an MRK of `auth_policy` backs up to: the MA's
// current key (CheckMrkPolicyFor), else a retiring key (GetMAServiceInfo's RetiringMAKeyId) a
// legacy MRK is bound to, which the MA still takes uploads for after `ma-admin ma-key rotate`.
Result<FetchedMaKey> MaKeyForMrk(ma::MaClient& client, const MaSettings& settings,
                                 ByteView auth_policy, const std::string& package_id);

}  // namespace tpmma::lms
