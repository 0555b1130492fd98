// SPDX-License-Identifier: GPL-2.0-or-later
// The seven MA operations (docs/protocol.md) as plain C++ over domain structs: what a
// platform may do, checked against the vault, the MA key custody and the escrow keys, and
// audited. No gSOAP type appears here: ma_service.cc decodes a SOAP request into these
// structs, calls, and encodes the result or the fault. Tests call these functions directly
// (tests/server/ma_operations_test.cc).
//
// Every call takes a CallContext: the operation fills in who (actor) and what (object) as
// soon as it knows, for the audit record and the request log line. Every refusal is audited
// by the operation itself (a state change audits its success in its own transaction); a
// refusal found before an operation ran (a request the adapter could not decode) goes
// through Refuse(), so that it is on record the same way.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/bytes.h"
#include "common/env.h"
#include "common/status.h"
#include "server/auth.h"
#include "server/config.h"
#include "server/ma_key.h"
#include "server/refusal_limiter.h"
#include "storage/vault.h"

namespace tpmma::server {

struct MaServiceOptions {
  // Audit successful GetMAKey/GetMAServiceInfo/Query calls too. Every refusal and every
  // state change is audited regardless; reads are many and each audit row is a durable
  // commit, so a deployment chasing read throughput may turn this off (the structured
  // request log still records them).
  bool audit_successful_reads = true;
  // Expired challenges, download nonces and sessions are deleted this often by a
  // background thread (0: never), so those tables stay the size of the live ones.
  uint32_t purge_interval_s = 60;
  // Refusals of anonymous callers (no valid session, no operator certificate): the first
  // few per peer address and window are audited, the rest counted into one summary row
  // (refusal_limiter.h). Authenticated callers' refusals are each audited.
  RefusalLimits anonymous_refusals;
};

struct CallContext {
  std::string op = "(unparsed)";  // "Upload", "Download.Prepare", ...
  std::string actor = "anonymous";
  std::string object;
  std::string peer;  // in the detail of read and refusal records
};

struct ServiceInfo {
  std::string service_version;
  std::vector<std::string> protocol_versions;
  std::vector<std::string> operations;
  std::vector<std::string> algorithms;
  uint64_t max_package_bytes = 0;
  uint32_t max_child_keys = 0;
  uint64_t max_request_bytes = 0;
  std::vector<storage::CustodyMode> custody_modes;
  std::vector<std::string> ma_key_ids;  // the storage key first, then the escrow key
  // Storage keys being replaced (docs/operations.md, "MA key lifecycle"): they still hold
  // packages and take uploads from MRKs bound to them, but new MRKs duplicate to ma_key_ids[0].
  std::vector<std::string> retiring_ma_key_ids;
};

struct MaKeyInfo {
  std::string key_id;
  Bytes certificate;  // DER
  Bytes public_area;  // TPM2B_PUBLIC
  Bytes name;         // TPM2B_NAME
  // A storage key of an MA with a policy-signing key (docs/protocol.md, "MRK policies"):
  // that key's TPM2B_PUBLIC and its approval of this key (a marshalled TPMT_SIGNATURE).
  // Both empty otherwise.
  Bytes policy_key;
  Bytes approval;
};

struct UploadRequest {
  std::string session_token;
  Bytes package;  // the signed package document
};

struct UploadResult {
  std::string package_id;
  std::string digest_hex;  // SHA-256 of the document
  bool already_stored = false;
};

struct QueryRequest {
  std::string session_token;
  size_t page_size = 100;
  std::string page_token;
  std::optional<std::string> source_platform_id;
  std::optional<int64_t> created_after, created_before;
  std::optional<std::string> label_contains;
};

enum class PackageAccess { kOwn, kApproved };

struct QueryItem {
  storage::PackageDescriptor descriptor;
  PackageAccess access = PackageAccess::kOwn;
};

struct QueryResult {
  std::vector<QueryItem> packages;
  std::string next_page_token;
};

struct DeleteRequest {
  std::string session_token;
  std::string package_id;
};

struct DownloadPrepareRequest {
  std::string session_token;
  std::string package_id;
  Bytes parent_name;  // TPM2B_NAME of the destination parent
};

struct DownloadPrepared {
  Bytes nonce;
  int64_t expires_at = 0;
};

struct DownloadCompleteRequest {
  std::string session_token;
  std::string package_id;
  Bytes nonce;
  Bytes parent_public;      // TPM2B_PUBLIC
  Bytes certify_info;       // TPM2B_ATTEST
  Bytes certify_signature;  // TPMT_SIGNATURE
};

struct DownloadedPackage {
  Bytes document;
  Bytes duplicate;           // TPM2B_PRIVATE, re-wrapped to the destination parent
  Bytes encrypted_seed;      // TPM2B_ENCRYPTED_SECRET
  Bytes signing_key_public;  // TPM2B_PUBLIC the package was verified with
  // Marshalled TPM2B_DATA (as TPM2_Import takes it), only under an approval.
  SecureBytes escrowed_inner_key;
};

class MaOperations {
 public:
  // `vault` and `custody` must outlive the operations. Errors name the config key at fault.
  static Result<std::unique_ptr<MaOperations>> Create(const Config& cfg, Env* env,
                                                      storage::Vault* vault, MaKeyCustody* custody,
                                                      const MaServiceOptions& options = {});
  ~MaOperations();
  MaOperations(const MaOperations&) = delete;
  MaOperations& operator=(const MaOperations&) = delete;

  Result<ServiceInfo> GetMAServiceInfo(CallContext* call);
  // No id: the storage key. The escrow key by its id.
  Result<MaKeyInfo> GetMAKey(const std::optional<std::string>& key_id, CallContext* call);
  Result<BeginResult> AuthenticateBegin(const BeginRequest& request, CallContext* call);
  Result<CompleteResult> AuthenticateComplete(const CompleteRequest& request, CallContext* call);
  // By value: the document is moved into the vault row, not copied.
  Result<UploadResult> Upload(UploadRequest request, CallContext* call);
  Result<QueryResult> Query(const QueryRequest& request, CallContext* call);
  Status Delete(const DeleteRequest& request, CallContext* call);
  Result<DownloadPrepared> DownloadPrepare(const DownloadPrepareRequest& request,
                                           CallContext* call);
  Result<DownloadedPackage> DownloadComplete(const DownloadCompleteRequest& request,
                                             CallContext* call);

  // Audits `refusal` as `call`'s and returns it (a failing audit write does not hide it).
  // An anonymous caller's refusal may only be counted (MaServiceOptions::anonymous_refusals).
  Status Refuse(const CallContext& call, Status refusal);

  // The per-peer counter of anonymous refusals, shared with the operator operations.
  RefusalLimiter* refusal_limiter() const;
  // Writes the summary rows of anonymous-refusal windows that have ended (every window if
  // `all`: at shutdown). Called by the service's periodic sweep and the destructor.
  void WriteRefusalSummaries(bool all = false);

  const Config& config() const;
  storage::Vault* vault() const;
  Env* env() const;

 private:
  struct State;
  explicit MaOperations(std::unique_ptr<State> state);
  std::unique_ptr<State> s_;
};

}  // namespace tpmma::server
