// SPDX-License-Identifier: GPL-2.0-or-later
// ma-admin's audit commands on the MA host (--dir): verifying the chain (against a signed
// checkpoint too), writing checkpoints, the checkpoint key, and archiving old records
// (retention). See docs/reliability.md, "The audit chain", for what each one detects.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "common/status.h"
#include "server/admin_commands.h"

namespace tpmma::server {

// Where the checkpoint key's public half is unless --key says otherwise.
std::string DefaultCheckpointPublicKey(const std::string& state_dir);

struct AuditVerifyOptions {
  std::string checkpoint;  // a checkpoint file; empty: the chain alone
  std::string public_key;  // empty: DefaultCheckpointPublicKey
};
// The chain, its genesis, segments and triggers; with a checkpoint also that the log
// still holds, unchanged, every record the checkpoint vouches for.
Status VerifyAudit(const AdminContext& ctx, const std::string& state_dir,
                   const AuditVerifyOptions& options);

// Signs the head now: to `out` if given, else into audit.checkpoint_dir.
Status WriteAuditCheckpoint(const AdminContext& ctx, const std::string& state_dir,
                            const std::string& out);

// For an MA made before checkpoints: makes DIR/audit/checkpoint-key.pem (+ -pub.pem) and
// names it in config.toml. Refuses if a key is configured or the files exist.
Status CreateAuditCheckpointKey(const AdminContext& ctx, const std::string& state_dir);

struct ArchiveOptions {
  std::optional<int64_t> through_seq;  // archive records up to this seq, or
  std::optional<int64_t> before;       // every record older than this time
  std::string out_dir;                 // where the archive file goes
};
// Writes the records and a signed checkpoint of the last one to OUT/audit-F-L.json
// (fsynced), then removes them from the vault in one transaction with an Audit.Archive
// record. The vault keeps the segment's bounds, last hash and the file's SHA-256.
Status ArchiveAuditLog(const AdminContext& ctx, const std::string& state_dir,
                       const ArchiveOptions& options);

// An archive file: its records chain, its checkpoint verifies and signs its last record,
// and (when the vault still knows the segment) the file is the one archived.
Status VerifyAuditArchive(const AdminContext& ctx, const std::string& state_dir,
                          const std::string& file, const std::string& public_key);

}  // namespace tpmma::server
