// SPDX-License-Identifier: GPL-2.0-or-later
// Internal to restore.cc: what a restore does for applications' key files besides bringing
// the keys back (issue #11). The MRK goes back to the persistent handle the key files name,
// and each key gets its certificate back.
#pragma once

#include <cstdint>

#include "client/lms/keystore.h"
#include "client/lms/operations.h"
#include "common/bytes.h"
#include "common/status.h"
#include "schema/package.h"

namespace tpmma::lms {

// The handle the restored MRK must sit at: the store's, or for a new store (or a store made
// before handles) the package's; 0: none. Refused, before anything changes, when another
// object holds it on this TPM.
Result<uint32_t> ChooseMrkHandle(Lms& lms, const StoreState* state,
                                 const schema::MigrationPackage& model, ByteView mrk_name);

// The imported MRK made persistent at `handle` (nothing when 0, or when it is there already).
Status PersistRestoredMrk(Lms& lms, const TPM2B_PUBLIC& mrk_public,
                          const TPM2B_PRIVATE& mrk_private, ByteView mrk_name, uint32_t handle);

// A key's application data from the package into its store record: the certificate (a key
// whose package copy has none keeps the store's).
void RestoreKeyAppData(const schema::ChildKey& from, KeyRecord& to);

// The package's PKCS#11 token store, written where the store has none (a new store, or a
// store whose pkcs11/ was lost). A store that has one keeps it: it moved with the disk and
// may be newer than the backup.
Status RestorePkcs11Store(KeyStore& store, const schema::MigrationPackage& model);

}  // namespace tpmma::lms
