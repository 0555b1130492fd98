// SPDX-License-Identifier: GPL-2.0-or-later
// MaClient: the MA's seven SOAP operations as typed C++ calls over HTTPS, through the gSOAP
// proxy generated from wsdl/migration.wsdl (the same contract a stock client uses).
//
//   TPMMA_ASSIGN_OR_RETURN(auto ma, MaClient::Create({.url = "https://ma:8443",
//                                                      .ca_file = "ma-ca.pem"}));
//   TPMMA_ASSIGN_OR_RETURN(MaKeyInfo key, ma->GetMAKey());
//
// Every call returns the server's Fault as a Status with the Fault's Code (wsdl/
// soap_context.h) and message; transport failures are kUnavailable. TLS 1.2+ only, the
// server certificate must chain to `ca_file` and name the host of the URL. One connection,
// kept alive between calls. Not thread-safe: one MaClient per thread.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/bytes.h"
#include "common/status.h"
#include "storage/vault.h"  // PlatformInventory: one record on both sides of the wire

class MigrationAuthorityBindingProxy;  // generated

namespace tpmma::ma {

struct MaClientOptions {
  std::string url;      // https://host:port[/path]
  std::string ca_file;  // PEM bundle trusted for the MA's TLS certificate
  int timeout_s = 30;   // connect, each read/write
  // false: every call on its own TCP + TLS connection, so that a load balancer spreads even
  // the two rounds of one Authenticate over its instances (deploy/ha-demo.sh).
  bool keep_alive = true;
};

// A custody mode of the inner wrapper key, as the MA offers it and a package records it.
enum class Custody { kRecoveryCode, kEscrow };
// The wire spelling: "RecoveryCode" | "Escrow" (JSON output spells it "recovery-code", "escrow").
std::string_view CustodyName(Custody custody);

// Why this platform may restore a package Query lists: its own, or another platform's a
// helpdesk approved for it.
enum class Access { kOwn, kApproved };
// The wire spelling: "Own" | "Approved".
std::string_view AccessName(Access access);

struct ServiceInfo {
  std::string service_version;
  std::vector<std::string> protocol_versions, operations, algorithms, ma_key_ids;
  std::vector<std::string> retiring_ma_key_ids;  // storage keys a rotation is replacing
  std::vector<Custody> custody_modes;
  uint64_t max_package_bytes = 0, max_request_bytes = 0;
  uint32_t max_child_keys = 0;
};

struct MaKeyInfo {
  std::string key_id;
  Bytes certificate;  // DER
  Bytes public_area;  // TPM2B_PUBLIC, the duplication target
  Bytes name;         // TPM2B_NAME as the server computed it; callers recompute and compare
  // A storage key of an MA with a policy-signing key (docs/protocol.md, "MRK policies"):
  // that key's TPM2B_PUBLIC and its approval of this key (a marshalled TPMT_SIGNATURE).
  // Both empty otherwise.
  Bytes policy_key;
  Bytes approval;
};

struct AuthBegin {
  Bytes ek_public;  // TPM2B_PUBLIC
  Bytes ek_certificate;
  std::vector<Bytes> ek_intermediates;
  Bytes ak_public;  // TPM2B_PUBLIC
};

struct AuthChallenge {
  Bytes challenge_id;
  Bytes credential_blob;   // TPM2B_ID_OBJECT
  Bytes encrypted_secret;  // TPM2B_ENCRYPTED_SECRET
  Bytes nonce;             // for TPM2_Certify of the package-signing key
  int64_t expires_at = 0;
};

// A key of the platform's TPM (the package-signing key, the SRK) with TPM2_Certify by the
// AK over the challenge's nonce: the MA learns the key lives in the TPM whose EK it checked.
struct CertifiedKeyProof {
  Bytes public_area;        // TPM2B_PUBLIC
  Bytes certify_info;       // TPM2B_ATTEST
  Bytes certify_signature;  // TPMT_SIGNATURE
};

// AuthenticateComplete's Inventory (wsdl/migration.wsdl PlatformInventory): what the
// platform says about itself so that an operator can find it; the vault's record, whose
// reported_at the MA sets (the platform leaves it 0). Empty fields are not sent.
using PlatformInventory = storage::PlatformInventory;

struct AuthComplete {
  Bytes challenge_id;
  Bytes proof;  // HMAC-SHA256(activated secret, challenge id): ChallengeProof()
  std::optional<CertifiedKeyProof> signing_key;
  std::optional<CertifiedKeyProof> srk;  // the parent a Download re-wraps to
  std::optional<PlatformInventory> inventory;
};

struct MaSession {
  std::string platform_id;
  SecureString token;
  int64_t expires_at = 0;
};

struct UploadResult {
  std::string package_id;
  std::string digest_hex;
  bool already_stored = false;
};

struct QueryFilter {
  std::optional<std::string> source_platform_id;
  std::optional<int64_t> created_after, created_before;
  std::optional<std::string> label_contains;
};

struct PackageDescriptor {
  std::string package_id, source_platform_id;
  Custody custody_mode = Custody::kRecoveryCode;
  Access access = Access::kOwn;
  int64_t created_at = 0, uploaded_at = 0;
  uint32_t key_count = 0;
  uint64_t size_bytes = 0;
};

struct QueryPage {
  std::vector<PackageDescriptor> packages;
  std::string next_page_token;  // empty on the last page
};

struct DownloadProof {
  Bytes nonce;               // from DownloadPrepare
  Bytes destination_public;  // TPM2B_PUBLIC of the new parent (the SRK)
  Bytes certify_info;        // TPM2B_ATTEST: the SRK certified by the session's AK
  Bytes certify_signature;   // TPMT_SIGNATURE
};

struct DownloadedPackage {
  Bytes document;        // the signed package as uploaded
  Bytes duplicate;       // TPM2B_PRIVATE, outer wrapper re-made for the destination
  Bytes encrypted_seed;  // TPM2B_ENCRYPTED_SECRET for the destination
  // Escrow custody, and only for a Download a helpdesk approved: the inner key the MA
  // opened from the package's escrow blob (the buffer of the TPM2B_DATA on the wire).
  // Empty otherwise.
  SecureBytes escrowed_inner_key;
  // TPM2B_PUBLIC of the package-signing key the MA verified the package with at Upload
  // (certified by the uploading platform's AK). Empty when the MA did not say (an older
  // MA). Only a client with no signing key of its own to check with (a new key store)
  // uses it, and so trusts the MA for it.
  Bytes signing_key_public;
};

// HMAC-SHA256(secret, challenge_id): what round two of Authenticate proves.
Result<Bytes> ChallengeProof(ByteView secret, ByteView challenge_id);

class MaClient {
 public:
  // Checks the options (https URL, readable CA file); connects on the first call.
  static Result<std::unique_ptr<MaClient>> Create(const MaClientOptions& options);
  ~MaClient();
  MaClient(const MaClient&) = delete;
  MaClient& operator=(const MaClient&) = delete;

  const std::string& url() const { return options_.url; }

  Result<ServiceInfo> GetMAServiceInfo();
  Result<MaKeyInfo> GetMAKey(std::string_view key_id = {});
  Result<AuthChallenge> AuthenticateBegin(const AuthBegin& request);
  Result<MaSession> AuthenticateComplete(const AuthComplete& request);
  Result<UploadResult> Upload(std::string_view token, ByteView package);
  Result<QueryPage> Query(std::string_view token, const QueryFilter& filter = {},
                          uint32_t page_size = 100, std::string_view page_token = {});
  // Round one of Download: the nonce the destination parent must be certified over.
  Result<Bytes> DownloadPrepare(std::string_view token, std::string_view package_id,
                                ByteView destination_parent_name);
  Result<DownloadedPackage> DownloadComplete(std::string_view token, std::string_view package_id,
                                             const DownloadProof& proof);
  Status Delete(std::string_view token, std::string_view package_id);

 private:
  explicit MaClient(const MaClientOptions& options);
  Status Prepare();  // per call: fresh arena, TLS context once
  Status Finish(int rc);

  MaClientOptions options_;
  std::unique_ptr<MigrationAuthorityBindingProxy> proxy_;
  bool tls_ready_ = false;
};

}  // namespace tpmma::ma
