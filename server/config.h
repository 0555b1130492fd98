// SPDX-License-Identifier: GPL-2.0-or-later
// ma-server's configuration: one TOML file (written by `ma-admin init`, read by
// `ma-server --config`). Relative paths are resolved against the file's directory, so a
// state directory can be moved as a whole.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/status.h"

namespace tpmma::server {

// One key held in software or in a TPM: the block [ma], [escrow] and each
// [[escrow.retired]] have in common (docs/operations.md, "MA key custody" and "Inner-key
// custody"). custody "software": private_key is the key. "tpm": the same key imported into
// a TPM with tpm2_import (the MA's own, or another), so private_key is not needed on this
// host. "none" ([escrow] only): no escrow key, this MA offers recovery-code custody only.
struct TpmKeyConfig {
  std::string custody;
  std::string key_id;
  std::string private_key;           // PEM, mode 0600, readable only by the service user
  std::string certificate;           // PEM X.509 of the key
  std::string tpm_tcti;              // e.g. "device:/dev/tpmrm0"
  std::string tpm_public;            // TPM2B_PUBLIC from tpm2_import -u
  std::string tpm_private;           // TPM2B_PRIVATE from tpm2_import -r
  uint32_t tpm_parent = 0x81000001;  // persistent parent it was imported under

  // The defaults of a block: only custody and key id are set.
  static TpmKeyConfig Named(std::string custody, std::string key_id) {
    TpmKeyConfig k;
    k.custody = std::move(custody);
    k.key_id = std::move(key_id);
    return k;
  }
  bool operator==(const TpmKeyConfig&) const = default;
};

struct Config {
  // [server]
  std::string listen_address = "127.0.0.1";
  uint16_t listen_port = 8443;
  int io_threads = 2;
  int worker_threads = 8;
  int max_connections = 1024;
  // One IP address may hold at most this many (0: no limit). Behind a load balancer every
  // connection comes from its address: raise it or set 0 there.
  int max_connections_per_peer = 128;
  // Requests waiting for a worker; beyond this the front end answers 503 + Retry-After
  // rather than letting latency grow without bound.
  int max_queued_requests = 256;
  uint32_t shutdown_timeout_ms = 10'000;  // SIGTERM: how long in-flight requests may take
  // SIGTERM: how long the server goes on serving, with /healthz answering 503, before it
  // stops accepting; behind a load balancer at least its health check's interval x fall
  // count, so that it moves the traffic off before connections are refused. 0: stop at once.
  uint32_t drain_ms = 0;
  // Load balancers (IP addresses) that open every connection with a PROXY protocol v1 line
  // naming the real client (haproxy `send-proxy`). A connection from one of these must carry
  // the line; a connection from anyone else never may (it would fail the TLS handshake), so
  // a client cannot choose the address it is logged and rate-limited under.
  std::vector<std::string> trusted_proxies;
  // glibc malloc arenas (M_ARENA_MAX). Its default, 8 per core, lets every one of many
  // worker threads keep its own heap: measured +13 MB RSS with 64 workers. 0: glibc's default.
  int malloc_arenas = 2;
  // [tls]
  std::string tls_certificate;  // PEM chain
  std::string tls_private_key;  // PEM, mode 0600
  // Operators authenticate by client certificate (mTLS). With a CA file the certificate
  // must chain to it; with request_client_cert alone any certificate is taken and only its
  // fingerprint (RequestInfo) identifies the operator. Presenting one is never required.
  std::string tls_client_ca;
  bool tls_request_client_cert = false;
  // [limits]
  uint32_t max_header_bytes = 8 * 1024;
  uint64_t max_body_bytes = 16 * 1024 * 1024;
  // All request bodies being read or handled at once (server/admission.h); 0: no limit.
  // At least max_body_bytes.
  uint64_t max_inflight_bytes = 256 * 1024 * 1024;
  uint32_t read_timeout_ms = 10'000;  // whole request, headers + body (slowloris)
  uint32_t idle_timeout_ms = 60'000;  // between keep-alive requests
  uint32_t handshake_timeout_ms = 5'000;
  uint64_t max_package_bytes = 8 * 1024 * 1024;
  uint32_t max_child_keys = 1000;
  // [ma]: the MA storage key packages are duplicated to (server/ma_key.h,
  // server/ma_key_tpm.h). Its private_key must be a different file from any escrow key's.
  TpmKeyConfig ma = TpmKeyConfig::Named("software", "ma-1");
  // [[ma.retiring]]: storage keys `ma-admin ma-key rotate` replaced (server/ma_key_ring.h).
  // Each still opens the packages not yet re-enciphered and takes uploads from legacy MRKs
  // bound to it, until `ma-admin ma-key retire` destroys it.
  std::vector<TpmKeyConfig> ma_retiring;
  // [escrow] and [[escrow.retired]]: escrow custody of packages' inner keys
  // (server/escrow_key.h). `escrow` is the current key: new packages are escrowed to it.
  // Retired keys (`ma-admin escrow rotate`) still release what was escrowed to them.
  TpmKeyConfig escrow = TpmKeyConfig::Named("none", "escrow-1");
  std::vector<TpmKeyConfig> escrow_retired;
  // [policy]: MRKs that follow the MA (docs/protocol.md, "MRK policies"). public_key: the
  // policy-signing key's public PEM (its private half is ma-admin's, and may stay offline);
  // approval: its signature (a marshalled TPMT_SIGNATURE) approving duplication to [ma]'s key.
  // Both empty: this MA takes PolicyDuplicationSelect MRKs only.
  std::string policy_public_key;
  std::string policy_approval;
  // Where ma-admin finds the policy-signing key's private half to approve a new storage key:
  // custody "none" (the default), the PEM policy/policy-key.pem when it is brought back from
  // offline; "tpm", imported into the MA's TPM (`ma-admin policy-key import-tpm`): tpm_tcti,
  // tpm_public, tpm_private, tpm_parent. ma-server never reads it.
  TpmKeyConfig policy_signer = TpmKeyConfig::Named("none", "policy");
  // [approvals]
  bool approvals_two_person = false;         // a second operator must confirm each approval
  uint32_t approvals_max_ttl_s = 7 * 86400;  // longest validity an operator may grant
  // A Download under an approval uses it up (a second restore needs a new approval). false:
  // it stays active until it expires or is revoked, for users who restore several packages
  // or retry; every Download under it is still audited with its id.
  bool approvals_single_use = true;
  // [vault]
  // SQLite file (the default backend); required unless vault_url is set.
  std::string vault_path;
  // PostgreSQL (storage/postgres_vault.h): a postgresql:// URL or libpq keyword DSN without a
  // password. Set: the vault is PostgreSQL and vault_path is not used.
  std::string vault_url;
  // The database password, alone in a file readable by its owner only; empty: libpq's own
  // PGPASSFILE (~/.pgpass) or none (peer/cert authentication).
  std::string vault_password_file;
  // Group commit: at most this many write calls share one transaction and its fsync.
  uint32_t vault_max_batch = 64;
  // Read-only SQLite connections shared by the workers (each caches up to 2 MB of pages);
  // with PostgreSQL, the connections of the pool (every call borrows one).
  uint32_t vault_read_connections = 4;
  // Read-audit records waiting for the vault's writer (audit.reads = "deferred"); a full
  // queue makes reads wait (back-pressure). Also the most a crash can lose, beyond one batch.
  uint32_t vault_max_deferred_audit = 8192;
  // With only read-audit records to write, the vault waits up to this long for more before
  // one commit (fewer fsyncs); a crash can lose this much more of them. 0: commit at once.
  uint32_t vault_deferred_audit_delay_ms = 10;
  // [trust]
  std::vector<std::string> ek_roots;  // PEM files or directories of PEM files
  // Intermediate CA certificates the MA adds to what an endpoint sends when it builds an EK
  // chain: untrusted helpers for path building, never anchors (`ma-admin ek-trust`).
  std::vector<std::string> ek_intermediates;  // PEM files or directories of PEM files
  // EK public areas accepted besides the TCG default EK templates (tpm/ek_templates.h): each
  // file a TPM2B_PUBLIC (tpm2_createek -u, tpm2_readpublic -o); empty: TCG templates only.
  std::vector<std::string> ek_templates;
  // [auth]
  uint32_t challenge_ttl_s = 120;
  uint32_t session_ttl_s = 900;
  uint32_t download_nonce_ttl_s = 300;
  // Authenticate.Begin data kept in memory until its Complete (about 100 bytes each, plus
  // one EK/AK record per distinct platform); beyond this the oldest are dropped there and
  // their Complete reads the challenge row instead, as an instance does that did not issue it.
  uint32_t max_pending_challenges = 20000;
  // Verified EK certificate chains remembered (about 100 bytes each) so that a platform
  // authenticating again skips parsing and verifying its chain; 0: off.
  uint32_t ek_cache_entries = 4096;
  // [enrollment]
  // Which platforms whose EK chains to a trusted root may enroll (server/auth.h
  // EnrollmentPolicy): "open" (any), "registered" (only those registered with `ma-admin
  // platforms register`), "approve-first" (a first Authenticate leaves the platform pending
  // until `ma-admin platforms accept`).
  std::string enrollment_policy = "open";
  // [audit]
  // How records of successful reads (GetMAKey, GetMAServiceInfo, Query) and refused reads
  // reach the hash-chained audit log: "deferred" (queued, committed with the next batch,
  // the reply does not wait for the fsync; a crash can lose the last unsynced ones) or
  // "durable" (the reply waits, as for every state change and every refused write).
  std::string audit_reads = "deferred";
  // Signed checkpoints of the audit log's head (server/audit_checkpoint.h): the P-256 key
  // that signs them (empty: none are written), the directory they go to (ship it off the
  // host), and how often one is written while the head moves (also one at start and stop).
  std::string audit_checkpoint_key;
  std::string audit_checkpoint_dir;
  uint32_t audit_checkpoint_interval_s = 3600;
  // [log]
  std::string log_level = "info";  // trace, debug, info, warn, error
  // [metrics]
  // GET /metrics (Prometheus text format, server/metrics.h) on the server's own listener.
  bool metrics_enabled = false;
  // Peer IP addresses that may read it (exact addresses; an IPv4 peer seen on an IPv6
  // socket as ::ffff:a.b.c.d matches a.b.c.d); everyone else gets 403.
  std::vector<std::string> metrics_allow = {"127.0.0.1", "::1"};
  // [bench]
  bool bench_echo = false;  // POST /echo answers with the body (ma-bench baseline only)

  bool operator==(const Config&) const = default;
};

// Reads and checks the file; every bad value gives kInvalidArgument naming the key
// ("limits.max_body_bytes must be between 1024 and 268435456, got 0").
Result<Config> LoadConfig(const std::string& path);

// Parses TOML text; relative paths are resolved against `base_dir`. `origin` names the
// text in error messages (usually the file name).
Result<Config> ParseConfig(std::string_view toml_text, const std::string& base_dir,
                           const std::string& origin = "config");

// The TOML text for `cfg` (what `ma-admin init` and `escrow rotate` write), serialized by
// toml++; ParseConfig(ConfigToToml(c)) == c when c's paths are absolute (relative ones are
// written as given, so they stay relative to the file). Empty optional paths are left out.
std::string ConfigToToml(const Config& cfg);

// What --check-config adds to LoadConfig: the files the config names exist and are
// readable (TLS, MA key and certificate, EK roots, client CA) and the vault's directory
// exists (SQLite) or the password file is owner-only (PostgreSQL). kInvalidArgument naming
// the key and path.
Status CheckConfigFiles(const Config& cfg);

}  // namespace tpmma::server
