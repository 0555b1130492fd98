// SPDX-License-Identifier: GPL-2.0-or-later
// `ma-admin ma-key`: the MA storage key's lifecycle (docs/operations.md, "MA key lifecycle").
// rotate makes a new current key and keeps the old one retiring; reencipher moves the outer
// wrap of every package a retiring key still holds to the current key, in audited batches,
// resumable; retire destroys a retiring key nothing needs any more; status says which key
// holds how many packages and which platforms' MRKs are bound to which key.
#pragma once

#include <string>

#include "common/status.h"
#include "server/admin_commands.h"

namespace tpmma::server {

// A new software-custody storage key (RSA-2048, certified by the MA CA, ma/<id>-key.pem and
// -cert.pem) made current in config.toml; the current one moves to [[ma.retiring]]. With a
// policy-signing key ([policy]) its private half (policy/policy-key.pem, brought back if it
// is kept offline) signs the new key's approval (policy/<id>.approval), so that MRKs which
// follow the MA duplicate to it from their next backup on. `new_key_id` empty: ma-<N+1>.
// Packages stored before the vault recorded wrap keys are recorded as the old key's first.
// ma-server uses the new key after a restart.
struct RotateOptions {
  std::string key_id;  // empty: ma-<N+1>
  // "software", or "tpm": the new key is also imported into the MA's TPM (at tpm_tcti, under
  // the persistent parent tpm_parent) as ma/<id>-tpm.pub/.priv, and [ma] names those; the PEM
  // stays beside them as the disaster-recovery copy, to be moved offline.
  std::string custody = "software";
  std::string tpm_tcti;
  uint32_t tpm_parent = 0x81000001;
};
Status RotateMaKey(const AdminContext& ctx, const std::string& state_dir,
                   const RotateOptions& options);

// Every storage key, its state (current, retiring) and the packages it holds; the platforms
// whose latest package's MRK is bound to a retiring key (legacy MRKs: they keep that key
// needed).
Status MaKeyStatus(const AdminContext& ctx, const std::string& state_dir);

struct ReencipherOptions {
  size_t batch = 100;        // packages per transaction (and audit record)
  bool have_backup = false;  // --i-have-a-backup: no `ma-admin vault backup` since rotate
  // Fault injection for the drill: SIGKILL itself after this many batches (0: never).
  size_t kill_after_batches = 0;
};

// Re-enciphers, batch by batch, every package a retiring key holds to the current key, each
// checked to open under it before anything is replaced. Refused without a vault backup taken
// after the last rotation (or `have_backup`); stops at the first package that fails, naming
// it; run again, it continues where it stopped.
Status ReencipherPackages(const AdminContext& ctx, const std::string& state_dir,
                          const ReencipherOptions& options);

// Destroys retiring key `key_id` (its private key file, or its TPM blob, overwritten and
// removed) and drops it from config.toml. Refused while any package is wrapped to it or any
// platform's MRK is bound to it.
Status RetireMaKey(const AdminContext& ctx, const std::string& state_dir,
                   const std::string& key_id);

// `ma-admin policy-key import-tpm`: the policy-signing key (policy/policy-key.pem) imported into
// the MA's TPM at `tcti` under the persistent parent (policy/policy-key-tpm.pub/.priv), checked
// to sign an approval that verifies, and [policy] custody = "tpm" from then on: rotations sign
// with TPM2_Sign, and the PEM can stay offline for good.
Status ImportPolicyKeyToTpm(const AdminContext& ctx, const std::string& state_dir,
                            const std::string& tcti, uint32_t parent_handle);

// The Name of storage key `k` (what PolicyDuplicationSelect binds), from its certificate: the
// same for software and TPM custody.
Result<Bytes> StorageKeyNameOf(Env* env, const TpmKeyConfig& k);

}  // namespace tpmma::server
