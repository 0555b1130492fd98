// SPDX-License-Identifier: GPL-2.0-or-later
// The gSOAP adapter: decode the request into ma_operations' structs (checking the schema
// facets gSOAP does not), call the operation, encode the result or the MAFault.
#include "server/ma_service.h"

#include <algorithm>
#include <cctype>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <sstream>
#include <stop_token>
#include <streambuf>
#include <string>
#include <thread>
#include <vector>

#include <spdlog/spdlog.h>

#include "common/text.h"
#include "schema/package_xml.h"
#include "server/audit_checkpoint.h"
#include "server/console/console.h"
#include "server/ek_identity.h"
#include "server/ek_trust.h"
#include "server/escrow_key.h"
#include "server/ma_key_ring.h"
#include "server/ma_key_tpm.h"
#include "server/ma_operations.h"
#include "server/operator_operations.h"
#include "server/operator_service.h"
#include "server/vault_health.h"
#include "server/vault_open.h"
#include "soapMigrationAuthorityBindingService.h"
#include "storage/counting_vault.h"
#include "wsdl/soap_context.h"
#include "wsdl/soap_fault.h"

namespace tpmma::server {
namespace {

using wsdl::FromBase64Binary;
using wsdl::ToBase64Binary;

// In a service method: `lhs` from a Result, or the fault (audited by whoever refused).
#define TPMMA_ASSIGN_OR_FAULT_IMPL(tmp, lhs, expr)   \
  auto tmp = (expr);                                 \
  if (!tmp.has_value()) return Faulted(tmp.error()); \
  lhs = std::move(*tmp)
#define TPMMA_ASSIGN_OR_RETURN_FAULT(lhs, expr) \
  TPMMA_ASSIGN_OR_FAULT_IMPL(TPMMA_CONCAT(tpmma_fault_, __LINE__), lhs, expr)

constexpr int kMaxTpmBlob = 4096;
constexpr int kMaxDer = 16384;

// Reads the request body in place: gSOAP pulls from an istream, and copying a 16 MB body
// into an istringstream first would double the peak memory of every Upload.
class ViewBuf : public std::streambuf {
 public:
  explicit ViewBuf(std::string_view s) {
    char* p = const_cast<char*>(s.data());  // never written: get area only
    setg(p, p, p + s.size());
  }
};

// Facets gSOAP 2.8 does not enforce on its own (measured with tests/wsdl/examples): xsd:length
// and min/maxLength on base64Binary, xsd:pattern, and a choice with no branch. Checked here,
// before anything else reads the field, with the code a validating parser would give.
Status CheckBlob(const xsd__base64Binary& b, int min, int max, std::string_view field) {
  if (b.__size < min || b.__size > max) {
    return Status(Code::kSchemaViolation, std::string(field) + " must be " + std::to_string(min) +
                                              ".." + std::to_string(max) + " octets, got " +
                                              std::to_string(b.__size));
  }
  return Status::Ok();
}

Status CheckToken(const std::string& t) {
  bool ok = t.size() >= 16 && t.size() <= 128 && std::all_of(t.begin(), t.end(), [](char c) {
              return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-';
            });
  return ok ? Status::Ok()
            : Status(Code::kSchemaViolation, "SessionToken is not 16..128 base64url characters");
}

Status CheckPackageId(const std::string& id) {
  return schema::IsCanonicalUuid(id)
             ? Status::Ok()
             : Status(Code::kSchemaViolation, "PackageId is not a lower-case UUID");
}

Status CheckPlatformId(const std::string& id) {
  bool ok = id.size() % 2 == 0 && id.size() >= 68 && id.size() <= 132 &&
            std::all_of(id.begin(), id.end(),
                        [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
  return ok ? Status::Ok()
            : Status(Code::kSchemaViolation, "PlatformId is not the lower-case hex of an EK Name");
}

ma__CustodyMode WireCustody(storage::CustodyMode m) {
  return m == storage::CustodyMode::kEscrow ? ma__CustodyMode__Escrow
                                            : ma__CustodyMode__RecoveryCode;
}

// ---- decoding: wire struct -> domain struct, schema facets first

Result<BeginRequest> DecodeBegin(const ma__AuthenticateBegin& b) {
  TPMMA_RETURN_IF_ERROR(CheckBlob(b.EKPublic, 1, kMaxTpmBlob, "EKPublic"));
  // Optional: a TPM without an EK certificate omits it (wsdl/migration.wsdl).
  if (b.EKCertificate != nullptr) {
    TPMMA_RETURN_IF_ERROR(CheckBlob(*b.EKCertificate, 1, kMaxDer, "EKCertificate"));
  }
  for (const auto& c : b.EKIntermediateCertificate) {
    TPMMA_RETURN_IF_ERROR(CheckBlob(c, 1, kMaxDer, "EKIntermediateCertificate"));
  }
  TPMMA_RETURN_IF_ERROR(CheckBlob(b.AKPublic, 1, kMaxTpmBlob, "AKPublic"));
  BeginRequest r;
  r.ek_public = FromBase64Binary(b.EKPublic);
  if (b.EKCertificate != nullptr) r.ek_certificate = FromBase64Binary(*b.EKCertificate);
  for (const auto& c : b.EKIntermediateCertificate)
    r.ek_intermediates.push_back(FromBase64Binary(c));
  r.ak_public = FromBase64Binary(b.AKPublic);
  return r;
}

// Self-reported text an operator will read on a terminal: bounded, valid UTF-8, no control
// characters (an escape sequence in a hostname must not reach `ma-admin platforms list`).
Result<storage::PlatformInventory> DecodeInventory(const ma__PlatformInventory& w) {
  storage::PlatformInventory inv;
  const std::pair<std::string* const*, std::string*> wire[] = {
      {&w.Hostname, &inv.hostname},
      {&w.OsName, &inv.os_name},
      {&w.KernelRelease, &inv.kernel_release},
      {&w.SystemVendor, &inv.system_vendor},
      {&w.ProductName, &inv.product_name},
      {&w.SerialNumber, &inv.serial_number},
      {&w.AssetTag, &inv.asset_tag},
      {&w.MachineId, &inv.machine_id},
      {&w.TpmManufacturer, &inv.tpm_manufacturer},
      {&w.TpmVendor, &inv.tpm_vendor},
      {&w.TpmFirmware, &inv.tpm_firmware},
      {&w.OwnerLabel, &inv.owner_label}};
  for (const auto& [from, to] : wire) {
    if (*from != nullptr) *to = **from;
  }
  Status checked = storage::CheckPlatformInventory(inv);
  if (!checked.ok()) return Error(Code::kMalformed, "Inventory/" + checked.message());
  return inv;
}

Result<CompleteRequest> DecodeComplete(const ma__AuthenticateComplete& c) {
  TPMMA_RETURN_IF_ERROR(CheckBlob(c.ChallengeId, 16, 64, "ChallengeId"));
  TPMMA_RETURN_IF_ERROR(CheckBlob(c.Proof, 32, 32, "Proof"));
  if (const ma__PackageSigningKey* k = c.PackageSigningKey) {
    TPMMA_RETURN_IF_ERROR(CheckBlob(k->Public, 1, kMaxTpmBlob, "PackageSigningKey/Public"));
    TPMMA_RETURN_IF_ERROR(
        CheckBlob(k->CertifyInfo, 1, kMaxTpmBlob, "PackageSigningKey/CertifyInfo"));
    TPMMA_RETURN_IF_ERROR(
        CheckBlob(k->CertifySignature, 1, kMaxTpmBlob, "PackageSigningKey/CertifySignature"));
  }
  if (const ma__CertifiedStorageRootKey* k = c.StorageRootKey) {
    TPMMA_RETURN_IF_ERROR(CheckBlob(k->Public, 1, kMaxTpmBlob, "StorageRootKey/Public"));
    TPMMA_RETURN_IF_ERROR(CheckBlob(k->CertifyInfo, 1, kMaxTpmBlob, "StorageRootKey/CertifyInfo"));
    TPMMA_RETURN_IF_ERROR(
        CheckBlob(k->CertifySignature, 1, kMaxTpmBlob, "StorageRootKey/CertifySignature"));
  }
  CompleteRequest r;
  if (c.Inventory != nullptr) {
    TPMMA_ASSIGN_OR_RETURN(r.inventory, DecodeInventory(*c.Inventory));
  }
  r.challenge_id = FromBase64Binary(c.ChallengeId);
  r.proof = FromBase64Binary(c.Proof);
  if (c.PackageSigningKey != nullptr) {
    r.signing_key = CertifiedKeyProof{FromBase64Binary(c.PackageSigningKey->Public),
                                      FromBase64Binary(c.PackageSigningKey->CertifyInfo),
                                      FromBase64Binary(c.PackageSigningKey->CertifySignature)};
  }
  if (c.StorageRootKey != nullptr) {
    r.srk = CertifiedKeyProof{FromBase64Binary(c.StorageRootKey->Public),
                              FromBase64Binary(c.StorageRootKey->CertifyInfo),
                              FromBase64Binary(c.StorageRootKey->CertifySignature)};
  }
  return r;
}

Result<UploadRequest> DecodeUpload(const _ma__UploadRequest& req) {
  TPMMA_RETURN_IF_ERROR(CheckToken(req.SessionToken));
  return UploadRequest{req.SessionToken, FromBase64Binary(req.Package)};
}

Result<QueryRequest> DecodeQuery(const _ma__QueryRequest& req) {
  TPMMA_RETURN_IF_ERROR(CheckToken(req.SessionToken));
  if (req.PageSize < 1 || req.PageSize > 500) {
    return Error(Code::kSchemaViolation, "PageSize must be 1..500");
  }
  if (req.PageToken != nullptr && (req.PageToken->empty() || req.PageToken->size() > 512)) {
    return Error(Code::kSchemaViolation, "PageToken must be 1..512 characters");
  }
  const ma__QueryFilter* f = req.Filter;
  if (f != nullptr && f->SourcePlatformId != nullptr) {
    TPMMA_RETURN_IF_ERROR(CheckPlatformId(*f->SourcePlatformId));
  }
  if (f != nullptr && f->LabelContains != nullptr && f->LabelContains->size() > 256) {
    return Error(Code::kSchemaViolation, "LabelContains must be at most 256 characters");
  }
  QueryRequest q;
  q.session_token = req.SessionToken;
  q.page_size = static_cast<size_t>(req.PageSize);
  if (req.PageToken != nullptr) q.page_token = *req.PageToken;
  if (f != nullptr) {
    if (f->SourcePlatformId != nullptr) q.source_platform_id = *f->SourcePlatformId;
    if (f->CreatedAfter != nullptr) q.created_after = static_cast<int64_t>(*f->CreatedAfter);
    if (f->CreatedBefore != nullptr) q.created_before = static_cast<int64_t>(*f->CreatedBefore);
    if (f->LabelContains != nullptr) q.label_contains = *f->LabelContains;
  }
  return q;
}

Result<DeleteRequest> DecodeDelete(const _ma__DeleteRequest& req) {
  TPMMA_RETURN_IF_ERROR(CheckToken(req.SessionToken));
  TPMMA_RETURN_IF_ERROR(CheckPackageId(req.PackageId));
  return DeleteRequest{req.SessionToken, req.PackageId};
}

Result<DownloadPrepareRequest> DecodePrepare(const _ma__DownloadRequest& req,
                                             const ma__DownloadPrepare& p) {
  TPMMA_RETURN_IF_ERROR(CheckToken(req.SessionToken));
  TPMMA_RETURN_IF_ERROR(CheckPackageId(req.PackageId));
  TPMMA_RETURN_IF_ERROR(
      CheckBlob(p.DestinationParentName, 1, kMaxTpmBlob, "DestinationParentName"));
  return DownloadPrepareRequest{req.SessionToken, req.PackageId,
                                FromBase64Binary(p.DestinationParentName)};
}

Result<DownloadCompleteRequest> DecodeDownloadComplete(const _ma__DownloadRequest& req,
                                                       const ma__DownloadComplete& c) {
  TPMMA_RETURN_IF_ERROR(CheckToken(req.SessionToken));
  TPMMA_RETURN_IF_ERROR(CheckPackageId(req.PackageId));
  TPMMA_RETURN_IF_ERROR(CheckBlob(c.Nonce, 16, 64, "Nonce"));
  TPMMA_RETURN_IF_ERROR(
      CheckBlob(c.DestinationParentPublic, 1, kMaxTpmBlob, "DestinationParentPublic"));
  TPMMA_RETURN_IF_ERROR(CheckBlob(c.CertifyInfo, 1, kMaxTpmBlob, "CertifyInfo"));
  TPMMA_RETURN_IF_ERROR(CheckBlob(c.CertifySignature, 1, kMaxTpmBlob, "CertifySignature"));
  return DownloadCompleteRequest{req.SessionToken,
                                 req.PackageId,
                                 FromBase64Binary(c.Nonce),
                                 FromBase64Binary(c.DestinationParentPublic),
                                 FromBase64Binary(c.CertifyInfo),
                                 FromBase64Binary(c.CertifySignature)};
}

// ---- what a client reads in a fault (issue #13, finding 9)

bool IsIdentChar(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || c == '_';
}

// tpm/ names the tss2 call that failed ("Tss2_MU_TPM2B_PUBLIC_Unmarshal failed: 0x000a000a
// (...): malformed or truncated TPM structure"): the log and lms want that, a client gets the
// structure's name ("malformed TPM2B_PUBLIC") and an ESAPI call becomes its TPM command
// ("Esys_Rewrap" -> "TPM2_Rewrap"). Everything else in the message stays.
std::string WithoutTssNames(std::string_view m) {
  static constexpr std::string_view kMuFailed = ": malformed or truncated TPM structure";
  std::string out;
  while (true) {
    const size_t tss = m.find("Tss2_"), esys = m.find("Esys_");
    const size_t at = std::min(tss, esys);
    if (at == std::string_view::npos) break;
    size_t end = at;
    while (end < m.size() && IsIdentChar(m[end])) ++end;
    const std::string_view ident = m.substr(at, end - at);
    out += m.substr(0, at);
    m.remove_prefix(end);
    if (ident.starts_with("Tss2_MU_")) {
      std::string_view type = ident.substr(8);
      for (std::string_view suffix : {"_Unmarshal", "_Marshal"}) {
        if (type.ends_with(suffix)) type.remove_suffix(suffix.size());
      }
      const size_t cut = m.starts_with(" failed: ") ? m.find(kMuFailed) : std::string_view::npos;
      if (cut != std::string_view::npos) {
        out += "malformed " + std::string(type);
        m.remove_prefix(cut + kMuFailed.size());
      } else {
        out += type;
      }
    } else if (ident.starts_with("Esys_")) {
      out += "TPM2_" + std::string(ident.substr(5));
    } else {
      out += "a TPM call";
    }
  }
  out += m;
  return out;
}

// gSOAP refused the body: its error number in plain words (its own text says "gSOAP error
// 44" or names its internals), with the element it stopped at. The code stays.
std::string PlainSoapError(const struct soap* soap, Code code) {
  std::string what;
  switch (soap->error) {
    case SOAP_NO_METHOD:
      what = "the SOAP Body holds no operation of this service";
      break;
    case SOAP_OCCURS:
      what = "an element is missing or occurs too often";
      break;
    case SOAP_TAG_MISMATCH:
    case SOAP_NO_TAG:
      what = "an element is not the one the schema expects here";
      break;
    case SOAP_TYPE:
      what = "a value is not of its schema type";
      break;
    case SOAP_LENGTH:
    case SOAP_PATTERN:
    case SOAP_FIXED:
    case SOAP_EMPTY:
      what = "a value breaks a facet of the schema (length, pattern or fixed value)";
      break;
    case SOAP_REQUIRED:
    case SOAP_PROHIBITED:
      what = "an attribute is missing or not allowed";
      break;
    case SOAP_LEVEL:
      what = "elements nested too deeply";
      break;
    default:
      what = code == Code::kLimitExceeded ? "the request exceeds a size limit"
             : code == Code::kMalformed   ? "the request is not well-formed XML"
                                          : "the request does not match the schema";
  }
  if (soap->tag[0] != '\0' && soap->error != SOAP_NO_METHOD) {
    what += " (at element '" + ForAudit(soap->tag, 80) + "')";
  }
  return (code == Code::kLimitExceeded ? "SOAP request over a limit: "
                                       : "malformed SOAP request: ") +
         what;
}

// Everything the handlers share; thread-safe (the operations and the vault are).
struct Core {
  std::unique_ptr<storage::Vault> owned_vault;
  std::unique_ptr<MaKeyCustody> owned_custody;
  // What the operations are given instead of the vault itself: the same calls, with the
  // vault's failures counted for GET /metrics (storage/counting_vault.h).
  std::unique_ptr<storage::CountingVault> counted_vault;
  std::unique_ptr<MaOperations> ops;
  std::unique_ptr<OperatorOperations> operator_ops;
  std::unique_ptr<console::Console> console;  // the helpdesk console's pages, on operator_ops
  MaServiceOptions options;
  wsdl::SoapLimits limits;
  std::unique_ptr<AuditCheckpointer> checkpointer;  // after owned_vault: stopped before it
};

class Handler final : public MigrationAuthorityBindingService {
 public:
  explicit Handler(Core* core) : core_(core), operator_calls_(soap, core->operator_ops.get()) {
    wsdl::HardenContext(soap, core_->limits);
    soap_set_mode(soap, SOAP_ENC_PLAIN);
  }

  void Serve(std::string_view body, const RequestInfo& info, Reply* reply);

  // ---- operations: decode, call, encode

  int GetMAServiceInfo(_ma__GetMAServiceInfoRequest*,
                       _ma__GetMAServiceInfoResponse& resp) override {
    TPMMA_ASSIGN_OR_RETURN_FAULT(ServiceInfo info, ops().GetMAServiceInfo(&call_));
    resp.ServiceVersion = info.service_version;
    resp.ProtocolVersion = info.protocol_versions;
    resp.Operation = info.operations;
    resp.Algorithm = info.algorithms;
    resp.Limits = soap_new_ma__ServiceLimits(soap);
    resp.Limits->MaxPackageBytes = info.max_package_bytes;
    resp.Limits->MaxChildKeys = info.max_child_keys;
    resp.Limits->MaxRequestBytes = info.max_request_bytes;
    for (storage::CustodyMode m : info.custody_modes) resp.CustodyMode.push_back(WireCustody(m));
    resp.MAKeyId = info.ma_key_ids;
    resp.RetiringMAKeyId = info.retiring_ma_key_ids;
    return SOAP_OK;
  }

  int GetMAKey(_ma__GetMAKeyRequest* req, _ma__GetMAKeyResponse& resp) override {
    call_.op = "GetMAKey";
    if (req->KeyId != nullptr && req->KeyId->size() > 256) {
      return Refused(Status(Code::kSchemaViolation, "KeyId must be at most 256 characters"));
    }
    // An id, never text: a line feed or a terminal escape in it is refused (finding 4).
    if (req->KeyId != nullptr && HasControlCharacter(*req->KeyId)) {
      return Refused(Status(Code::kSchemaViolation, "KeyId holds a control character"));
    }
    std::optional<std::string> id;
    if (req->KeyId != nullptr) id = *req->KeyId;
    TPMMA_ASSIGN_OR_RETURN_FAULT(MaKeyInfo k, ops().GetMAKey(id, &call_));
    resp.KeyId = k.key_id;
    resp.Certificate = ToBase64Binary(soap, k.certificate);
    resp.Public = ToBase64Binary(soap, k.public_area);
    resp.Name = ToBase64Binary(soap, k.name);
    if (!k.policy_key.empty()) {
      resp.PolicySigningKey = soap_new_xsd__base64Binary(soap);
      *resp.PolicySigningKey = ToBase64Binary(soap, k.policy_key);
      resp.Approval = soap_new_xsd__base64Binary(soap);
      *resp.Approval = ToBase64Binary(soap, k.approval);
    }
    return SOAP_OK;
  }

  int Authenticate(_ma__AuthenticateRequest* req, _ma__AuthenticateResponse& resp) override {
    const auto which = req->__union_AuthenticateRequest;
    if (which == SOAP_UNION__ma__union_AuthenticateRequest_Begin &&
        req->union_AuthenticateRequest.Begin != nullptr) {
      call_.op = "Authenticate.Begin";
      TPMMA_ASSIGN_OR_RETURN_FAULT(BeginRequest r,
                                   Decoded(DecodeBegin(*req->union_AuthenticateRequest.Begin)));
      TPMMA_ASSIGN_OR_RETURN_FAULT(BeginResult out, ops().AuthenticateBegin(r, &call_));
      auto* ch = soap_new_ma__AuthenticateChallenge(soap);
      ch->ChallengeId = ToBase64Binary(soap, out.challenge_id);
      ch->CredentialBlob = ToBase64Binary(soap, out.credential_blob);
      ch->EncryptedSecret = ToBase64Binary(soap, out.encrypted_secret);
      ch->Nonce = ToBase64Binary(soap, out.nonce);
      ch->ExpiresAt = static_cast<time_t>(out.expires_at);
      resp.__union_AuthenticateResponse = SOAP_UNION__ma__union_AuthenticateResponse_Challenge;
      resp.union_AuthenticateResponse.Challenge = ch;
      return SOAP_OK;
    }
    if (which == SOAP_UNION__ma__union_AuthenticateRequest_Complete &&
        req->union_AuthenticateRequest.Complete != nullptr) {
      call_.op = "Authenticate.Complete";
      TPMMA_ASSIGN_OR_RETURN_FAULT(
          CompleteRequest r, Decoded(DecodeComplete(*req->union_AuthenticateRequest.Complete)));
      TPMMA_ASSIGN_OR_RETURN_FAULT(CompleteResult out, ops().AuthenticateComplete(r, &call_));
      auto* s = soap_new_ma__AuthenticateSession(soap);
      s->SessionToken.assign(out.token.data(), out.token.size());
      s->PlatformId = out.platform_id;
      s->ExpiresAt = static_cast<time_t>(out.expires_at);
      resp.__union_AuthenticateResponse = SOAP_UNION__ma__union_AuthenticateResponse_Session;
      resp.union_AuthenticateResponse.Session = s;
      return SOAP_OK;
    }
    call_.op = "Authenticate";
    return Refused(Status(Code::kSchemaViolation, "AuthenticateRequest needs Begin or Complete"));
  }

  int Upload(_ma__UploadRequest* req, _ma__UploadResponse& resp) override {
    call_.op = "Upload";
    TPMMA_ASSIGN_OR_RETURN_FAULT(UploadRequest r, Decoded(DecodeUpload(*req)));
    TPMMA_ASSIGN_OR_RETURN_FAULT(UploadResult out, ops().Upload(std::move(r), &call_));
    resp.PackageId = out.package_id;
    resp.Digest = out.digest_hex;
    resp.AlreadyStored = out.already_stored;
    return SOAP_OK;
  }

  int Query(_ma__QueryRequest* req, _ma__QueryResponse& resp) override {
    call_.op = "Query";
    TPMMA_ASSIGN_OR_RETURN_FAULT(QueryRequest r, Decoded(DecodeQuery(*req)));
    TPMMA_ASSIGN_OR_RETURN_FAULT(QueryResult page, ops().Query(r, &call_));
    for (const QueryItem& item : page.packages) {
      const storage::PackageDescriptor& d = item.descriptor;
      auto* out = soap_new_ma__PackageDescriptor(soap);
      out->PackageId = d.package_id;
      out->SourcePlatformId = d.source_platform_id;
      out->CreatedAt = static_cast<time_t>(d.created_at);
      out->UploadedAt = static_cast<time_t>(d.uploaded_at);
      out->KeyCount = static_cast<unsigned int>(d.key_count);
      out->SizeBytes = static_cast<ULONG64>(d.size);
      out->CustodyMode = WireCustody(d.custody);
      out->Access = item.access == PackageAccess::kOwn ? ma__Access__Own : ma__Access__Approved;
      resp.PackageDescriptor.push_back(out);
    }
    if (!page.next_page_token.empty()) {
      resp.NextPageToken = soap_new_std__string(soap);
      *resp.NextPageToken = page.next_page_token;
    }
    return SOAP_OK;
  }

  int Delete(_ma__DeleteRequest* req, _ma__DeleteResponse& resp) override {
    call_.op = "Delete";
    TPMMA_ASSIGN_OR_RETURN_FAULT(DeleteRequest r, Decoded(DecodeDelete(*req)));
    if (Status s = ops().Delete(r, &call_); !s.ok()) return Faulted(s);
    resp.Deleted = true;
    return SOAP_OK;
  }

  int Download(_ma__DownloadRequest* req, _ma__DownloadResponse& resp) override {
    const auto which = req->__union_DownloadRequest;
    if (which == SOAP_UNION__ma__union_DownloadRequest_Prepare &&
        req->union_DownloadRequest.Prepare != nullptr) {
      call_.op = "Download.Prepare";
      TPMMA_ASSIGN_OR_RETURN_FAULT(
          DownloadPrepareRequest r,
          Decoded(DecodePrepare(*req, *req->union_DownloadRequest.Prepare)));
      TPMMA_ASSIGN_OR_RETURN_FAULT(DownloadPrepared out, ops().DownloadPrepare(r, &call_));
      auto* p = soap_new_ma__DownloadPrepared(soap);
      p->Nonce = ToBase64Binary(soap, out.nonce);
      p->ExpiresAt = static_cast<time_t>(out.expires_at);
      resp.__union_DownloadResponse = SOAP_UNION__ma__union_DownloadResponse_Prepared;
      resp.union_DownloadResponse.Prepared = p;
      return SOAP_OK;
    }
    if (which == SOAP_UNION__ma__union_DownloadRequest_Complete &&
        req->union_DownloadRequest.Complete != nullptr) {
      call_.op = "Download.Complete";
      TPMMA_ASSIGN_OR_RETURN_FAULT(
          DownloadCompleteRequest r,
          Decoded(DecodeDownloadComplete(*req, *req->union_DownloadRequest.Complete)));
      TPMMA_ASSIGN_OR_RETURN_FAULT(DownloadedPackage out, ops().DownloadComplete(r, &call_));
      resp.__union_DownloadResponse = SOAP_UNION__ma__union_DownloadResponse_Package;
      resp.union_DownloadResponse.Package = EncodeDownloaded(out);
      return SOAP_OK;
    }
    call_.op = "Download";
    return Refused(Status(Code::kSchemaViolation, "DownloadRequest needs Prepare or Complete"));
  }

 private:
  MaOperations& ops() { return *core_->ops; }

  ma__DownloadedPackage* EncodeDownloaded(const DownloadedPackage& out) {
    auto* p = soap_new_ma__DownloadedPackage(soap);
    p->Document = ToBase64Binary(soap, out.document);
    p->DuplicateRewrapped = ToBase64Binary(soap, out.duplicate);
    p->EncryptedSeedRewrapped = ToBase64Binary(soap, out.encrypted_seed);
    p->SigningKeyPublic = soap_new_xsd__base64Binary(soap);
    *p->SigningKeyPublic = ToBase64Binary(soap, out.signing_key_public);
    if (!out.escrowed_inner_key.empty()) {
      p->EscrowedInnerKey = soap_new_xsd__base64Binary(soap);
      *p->EscrowedInnerKey = ToBase64Binary(soap, out.escrowed_inner_key);
      wipe_after_reply_ = *p->EscrowedInnerKey;
    }
    return p;
  }

  // The operation refused (and audited it): remember the fault for Serve.
  int Faulted(const Status& s) {
    fault_ = s;
    return SOAP_FAULT;
  }
  // A refusal before the operation ran: audited here, as the operation would have.
  int Refused(Status s) { return Faulted(ops().Refuse(call_, std::move(s))); }
  template <typename T>
  Result<T> Decoded(Result<T> r) {
    if (!r) return Error(ops().Refuse(call_, r.error()));
    return r;
  }

  Core* core_;
  OperatorCalls operator_calls_;
  xsd__base64Binary wipe_after_reply_{};  // secret bytes in the arena, cleansed after the reply
  CallContext call_;
  std::optional<Status> fault_;
};

void Handler::Serve(std::string_view body, const RequestInfo& info, Reply* reply) {
  call_ = CallContext{};
  call_.peer = info.peer;
  fault_.reset();

  ViewBuf in(body);
  std::istream is(&in);
  std::ostringstream os;
  soap->is = &is;
  soap->os = &os;
  // The front end's 413 is the authoritative size check (before the body is read); this
  // is the endpoint's own defence, for callers of Handle other than the front end (tests,
  // embedders), with the same code the front end's limit means. Without it gSOAP would
  // refuse the body too, but as a SchemaViolation of the one oversized string.
  const uint64_t max_body = core_->ops->config().max_body_bytes;
  Status pre = body.size() > max_body
                   ? Status(Code::kLimitExceeded,
                            "request body larger than max_body_bytes=" + std::to_string(max_body))
                   : wsdl::PrecheckSoapRequest(body);
  if (pre.ok()) {
    int rc = soap_begin_serve(soap);
    if (rc == SOAP_OK) rc = dispatch();
    if (rc == SOAP_NO_METHOD) {
      // Not one of the seven: maybe an operator call (operator.wsdl), which authenticates
      // by TLS client certificate only (operator_service.h).
      soap->error = SOAP_OK;
      OperatorCallLog log;
      rc = operator_calls_.Dispatch(info, &log);
      if (!log.op.empty()) {
        call_.op = log.op;
        call_.actor = log.actor;
        if (log.fault) fault_ = *log.fault;
      }
    }
    if (rc != SOAP_OK && !fault_) {
      // gSOAP refused the XML (schema, size, syntax) before any operation ran: give it
      // the same MAFault shape as every other error.
      Status s = wsdl::StatusFromSoap(soap);
      // The body is complete and in memory: running out of it is a truncated message,
      // not a network failure.
      if (s.code() == Code::kUnavailable) {
        s = Status(Code::kMalformed, "request body ends inside the SOAP envelope");
      } else {
        spdlog::debug("SOAP request from {} refused by the parser: {}",
                      EscapeForTerminal(info.peer), EscapeForTerminal(s.message()));
        s = Status(s.code(), PlainSoapError(soap, s.code()));
      }
      fault_ = s;
    }
  } else {
    fault_ = pre;
  }
  if (fault_) {
    // The one place every fault of this endpoint passes: no internal name goes out.
    std::string plain = WithoutTssNames(fault_->message());
    if (plain != fault_->message()) {
      spdlog::debug("fault to {}: {}", EscapeForTerminal(info.peer),
                    EscapeForTerminal(fault_->message()));
      fault_ = Status(fault_->code(), std::move(plain));
    }
  }
  reply->body = fault_ ? wsdl::SoapFaultXml(*fault_, pre.ok() && soap->version == 2 ? 2 : 1)
                       : std::move(os).str();
  reply->http_status = fault_ ? 500 : 200;
  reply->log_op = call_.op;
  reply->log_platform = call_.actor == "anonymous" ? std::string() : call_.actor;
  reply->log_outcome = fault_ ? std::string(CodeName(fault_->code())) : "ok";
  // A released escrowed key was serialised from gSOAP's arena: wipe it before soap_end
  // hands the memory back (the reply body itself is the front end's to send and free).
  if (wipe_after_reply_.__ptr != nullptr) {
    Wipe(wipe_after_reply_.__ptr, static_cast<size_t>(wipe_after_reply_.__size));
    wipe_after_reply_ = {};
  }
  // The generated serve loop never frees between requests; we do, every time.
  soap_destroy(soap);
  soap_end(soap);
  soap->is = nullptr;
  soap->os = nullptr;
}

class MaService final : public Endpoint {
 public:
  explicit MaService(std::unique_ptr<Core> core)
      : core_(std::move(core)),
        health_(std::make_unique<VaultHealth>(core_->ops->vault(), VaultHealth::Options{})) {
    if (core_->options.purge_interval_s > 0) {
      purger_ = std::jthread([this](std::stop_token stop) { PurgeLoop(stop); });
    }
  }
  ~MaService() override {
    purger_.request_stop();
    purge_cv_.notify_all();
    if (purger_.joinable()) purger_.join();  // before core_ (the vault) goes
  }

  bool Ready() const override { return health_->Answering(); }
  std::optional<storage::VaultStats> GetVaultStats() const override {
    return core_->counted_vault->Stats();
  }

  Reply HandleWeb(const WebRequest& request, const RequestInfo& info) override {
    return core_->console->Serve(request, info);
  }

  Reply Handle(std::string_view body, const RequestInfo& info) override {
    // A pool rather than thread_local: contexts belong to this endpoint (tests create
    // several) and die with it, and a worker thread only ever holds one at a time.
    std::unique_ptr<Handler> h;
    {
      std::lock_guard lock(mu_);
      if (!idle_.empty()) {
        h = std::move(idle_.back());
        idle_.pop_back();
      }
    }
    if (!h) h = std::make_unique<Handler>(core_.get());
    Reply reply;
    h->Serve(body, info, &reply);
    std::lock_guard lock(mu_);
    idle_.push_back(std::move(h));
    return reply;
  }

 private:
  void PurgeLoop(std::stop_token stop) {
    const auto interval = std::chrono::seconds(core_->options.purge_interval_s);
    storage::Vault* vault = core_->ops->vault();
    Env* env = core_->ops->env();
    std::unique_lock lock(purge_mu_);
    while (!stop.stop_requested()) {
      if (purge_cv_.wait_for(lock, stop, interval, [] { return false; })) break;
      if (stop.stop_requested()) break;
      lock.unlock();
      // A failure (busy vault, disk full) is retried next round; the rows only take space.
      (void)vault->PurgeExpired(env->NowUnixSeconds());
      // A peer that stopped refusing still gets its summary row within one interval.
      core_->ops->WriteRefusalSummaries();
      lock.lock();
    }
  }

  std::unique_ptr<Core> core_;
  std::unique_ptr<VaultHealth> health_;  // after core_: stops probing before the vault goes
  std::mutex mu_;
  std::vector<std::unique_ptr<Handler>> idle_;
  std::mutex purge_mu_;
  std::condition_variable_any purge_cv_;
  std::jthread purger_;  // last: stopped first
};

Result<std::unique_ptr<Endpoint>> Build(std::unique_ptr<Core> core, const Config& cfg, Env* env,
                                        storage::Vault* backend, MaKeyCustody* custody) {
  core->counted_vault = std::make_unique<storage::CountingVault>(backend);
  storage::Vault* vault = core->counted_vault.get();
  TPMMA_ASSIGN_OR_RETURN(core->ops, MaOperations::Create(cfg, env, vault, custody, core->options));
  // One per-peer count of anonymous refusals for both sides of the port.
  core->operator_ops = std::make_unique<OperatorOperations>(vault, env, ApprovalRulesOf(cfg),
                                                            core->ops->refusal_limiter());
  core->console = std::make_unique<console::Console>(core->operator_ops.get(), env);
  core->limits.max_message_bytes = cfg.max_body_bytes;
  core->limits.max_string_bytes = static_cast<long>(cfg.max_body_bytes);
  return std::unique_ptr<Endpoint>(std::make_unique<MaService>(std::move(core)));
}

}  // namespace

Result<std::unique_ptr<Endpoint>> MakeMaService(const Config& cfg, Env* env, storage::Vault* vault,
                                                MaKeyCustody* custody,
                                                const MaServiceOptions& options) {
  auto core = std::make_unique<Core>();
  core->options = options;
  return Build(std::move(core), cfg, env, vault, custody);
}

namespace {

Result<std::unique_ptr<MaKeyCustody>> LoadMaCustody(const Config& cfg, Env* env) {
  return LoadMaKeyCustody(cfg.ma, "ma", env);
}

}  // namespace

Status CheckMaServiceConfig(const Config& cfg, Env* env) {
  auto custody = LoadMaCustody(cfg, env);
  if (!custody) return custody.error();
  if (auto ring = MaKeyRing::Create(custody->get(), cfg.ma_retiring, env); !ring) {
    return ring.error();
  }
  if (cfg.escrow.custody != "none") {
    auto escrow = LoadEscrowKey(cfg.escrow, env);
    if (!escrow) return escrow.error().WithContext("escrow");
  }
  for (size_t i = 0; i < cfg.escrow_retired.size(); ++i) {
    auto retired = LoadEscrowKey(cfg.escrow_retired[i], env);
    if (!retired) return retired.error().WithContext("escrow.retired[" + std::to_string(i) + "]");
  }
  if (auto trust = EkTrust::Load(cfg.ek_roots, cfg.ek_intermediates, env); !trust) {
    return trust.error().WithContext("trust.ek_roots / trust.ek_intermediates");
  }
  if (auto templates = LoadEkTemplates(cfg.ek_templates, env); !templates) {
    return templates.error();
  }
  if (auto policy = ParseEnrollmentPolicy(cfg.enrollment_policy); !policy) return policy.error();
  if (!cfg.audit_checkpoint_key.empty()) {
    if (auto key = LoadCheckpointKey(cfg.audit_checkpoint_key, env); !key) {
      return key.error().WithContext("audit.checkpoint_key");
    }
  }
  return Status::Ok();
}

Result<std::unique_ptr<Endpoint>> MakeMaService(const Config& cfg, Env* env,
                                                const MaServiceOptions& options) {
  auto core = std::make_unique<Core>();
  core->options = options;
  TPMMA_ASSIGN_OR_RETURN(core->owned_custody, LoadMaCustody(cfg, env));
  TPMMA_ASSIGN_OR_RETURN(core->owned_vault, OpenVault(cfg, env));
  storage::Vault* v = core->owned_vault.get();
  MaKeyCustody* c = core->owned_custody.get();
  if (!cfg.audit_checkpoint_key.empty()) {
    auto key = LoadCheckpointKey(cfg.audit_checkpoint_key, env);
    if (!key) return Error(key.error().WithContext("audit.checkpoint_key"));
    core->checkpointer = std::make_unique<AuditCheckpointer>(
        v, std::move(*key), cfg.audit_checkpoint_dir, cfg.audit_checkpoint_interval_s, env);
  }
  return Build(std::move(core), cfg, env, v, c);
}

}  // namespace tpmma::server
