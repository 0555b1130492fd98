// SPDX-License-Identifier: GPL-2.0-or-later
#include "client/ma/ma_client.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <mutex>

#include "soapMigrationAuthorityBindingProxy.h"
#include "wsdl/soap_context.h"

namespace tpmma::ma {

using wsdl::FromBase64Binary;
using wsdl::ToBase64Binary;

std::string_view CustodyName(Custody custody) {
  return custody == Custody::kEscrow ? "Escrow" : "RecoveryCode";
}

std::string_view AccessName(Access access) {
  return access == Access::kApproved ? "Approved" : "Own";
}

namespace {

Custody CustodyOf(ma__CustodyMode m) {
  return m == ma__CustodyMode__Escrow ? Custody::kEscrow : Custody::kRecoveryCode;
}

}  // namespace

Result<Bytes> ChallengeProof(ByteView secret, ByteView challenge_id) {
  Bytes out(EVP_MAX_MD_SIZE);
  unsigned int len = 0;
  if (HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()), challenge_id.data(),
           challenge_id.size(), out.data(), &len) == nullptr) {
    return Error(Code::kCryptoError, "HMAC-SHA256 for the challenge proof failed");
  }
  out.resize(len);
  return out;
}

MaClient::MaClient(const MaClientOptions& options)
    : options_(options), proxy_(std::make_unique<MigrationAuthorityBindingProxy>()) {}

MaClient::~MaClient() {
  if (proxy_) {
    proxy_->destroy();
    // The session token went out in the request buffer; gSOAP keeps no copy of it after
    // soap_end, but the send buffer may still hold the last request.
    OPENSSL_cleanse(proxy_->soap->buf, sizeof(proxy_->soap->buf));
  }
}

Result<std::unique_ptr<MaClient>> MaClient::Create(const MaClientOptions& options) {
  if (!options.url.starts_with("https://") || options.url.size() <= 8) {
    return Error(Code::kInvalidArgument,
                 "the MA URL must be https://HOST:PORT (got \"" + options.url + "\")");
  }
  if (options.ca_file.empty()) {
    return Error(Code::kInvalidArgument,
                 "no CA file to trust the MA's TLS certificate with (--ma-ca FILE)");
  }
  if (::access(options.ca_file.c_str(), R_OK) != 0) {
    return Error(Code::kInvalidArgument, "cannot read the MA CA file " + options.ca_file);
  }
  if (options.timeout_s <= 0) {
    return Error(Code::kInvalidArgument, "the MA timeout must be positive");
  }
  static std::once_flag ssl_once;
  std::call_once(ssl_once, [] {
    soap_ssl_init();
    // gSOAP's TLS path writes with write(2) (through OpenSSL's socket BIO), so an MA that
    // goes away mid-request would kill the whole process with SIGPIPE instead of giving a
    // kUnavailable Status. Ignore SIGPIPE unless the program installed its own handler.
    struct sigaction old {};
    if (::sigaction(SIGPIPE, nullptr, &old) == 0 && old.sa_handler == SIG_DFL) {
      ::signal(SIGPIPE, SIG_IGN);
    }
  });
  return std::unique_ptr<MaClient>(new MaClient(options));
}

Status MaClient::Prepare() {
  struct soap* soap = proxy_->soap;
  proxy_->destroy();  // frees the previous reply
  if (!tls_ready_) {
    wsdl::SoapLimits limits;
    limits.connect_timeout_s = options_.timeout_s;
    limits.recv_timeout_s = options_.timeout_s;
    limits.send_timeout_s = options_.timeout_s;
    limits.transfer_timeout_s = options_.timeout_s * 4;
    wsdl::HardenContext(soap, limits);
    if (options_.keep_alive) soap_set_mode(soap, SOAP_IO_KEEPALIVE);
    soap->socket_flags = MSG_NOSIGNAL;  // plain sends too
    // TLS 1.2+, server certificate verified against ca_file only (not the system store),
    // host name checked against the certificate (gSOAP does not skip it without the flag).
    if (soap_ssl_client_context(soap,
                                SOAP_SSL_REQUIRE_SERVER_AUTHENTICATION |
                                    SOAP_SSL_NO_DEFAULT_CA_PATH | SOAP_TLSv1_2 | SOAP_TLSv1_3,
                                nullptr, nullptr, options_.ca_file.c_str(), nullptr,
                                nullptr) != SOAP_OK) {
      return Status(Code::kInvalidArgument, "cannot use " + options_.ca_file + " as the MA CA: " +
                                                wsdl::StatusFromSoap(soap).message());
    }
    proxy_->soap_endpoint = options_.url.c_str();
    tls_ready_ = true;
  }
  return Status::Ok();
}

Status MaClient::Finish(int rc) {
  if (rc == SOAP_OK) return Status::Ok();
  Status s = wsdl::StatusFromSoap(proxy_->soap);
  // A broken connection must not be reused for the next call.
  if (s.code() == Code::kUnavailable) proxy_->soap_close_socket();
  if (s.code() == Code::kUnavailable && s.message().empty()) {
    return Status(Code::kUnavailable, "the MA at " + options_.url + " did not answer");
  }
  if (s.code() == Code::kUnavailable) {
    return Status(Code::kUnavailable, "the MA at " + options_.url + ": " + s.message());
  }
  return s;
}

Result<ServiceInfo> MaClient::GetMAServiceInfo() {
  TPMMA_RETURN_IF_ERROR(Prepare());
  _ma__GetMAServiceInfoRequest req;
  _ma__GetMAServiceInfoResponse resp;
  TPMMA_RETURN_IF_ERROR(Finish(proxy_->GetMAServiceInfo(&req, resp)));
  ServiceInfo out;
  out.service_version = resp.ServiceVersion;
  out.protocol_versions = resp.ProtocolVersion;
  out.operations = resp.Operation;
  out.algorithms = resp.Algorithm;
  out.ma_key_ids = resp.MAKeyId;
  out.retiring_ma_key_ids = resp.RetiringMAKeyId;
  for (auto m : resp.CustodyMode) out.custody_modes.push_back(CustodyOf(m));
  if (resp.Limits != nullptr) {
    out.max_package_bytes = resp.Limits->MaxPackageBytes;
    out.max_request_bytes = resp.Limits->MaxRequestBytes;
    out.max_child_keys = resp.Limits->MaxChildKeys;
  }
  return out;
}

Result<MaKeyInfo> MaClient::GetMAKey(std::string_view key_id) {
  TPMMA_RETURN_IF_ERROR(Prepare());
  _ma__GetMAKeyRequest req;
  std::string id(key_id);
  if (!id.empty()) req.KeyId = &id;
  _ma__GetMAKeyResponse resp;
  TPMMA_RETURN_IF_ERROR(Finish(proxy_->GetMAKey(&req, resp)));
  MaKeyInfo out{.key_id = resp.KeyId,
                .certificate = FromBase64Binary(resp.Certificate),
                .public_area = FromBase64Binary(resp.Public),
                .name = FromBase64Binary(resp.Name),
                .policy_key = {},
                .approval = {}};
  if (resp.PolicySigningKey != nullptr && resp.Approval != nullptr) {
    out.policy_key = FromBase64Binary(*resp.PolicySigningKey);
    out.approval = FromBase64Binary(*resp.Approval);
  }
  return out;
}

Result<AuthChallenge> MaClient::AuthenticateBegin(const AuthBegin& request) {
  TPMMA_RETURN_IF_ERROR(Prepare());
  struct soap* soap = proxy_->soap;
  _ma__AuthenticateRequest req;
  auto* b = soap_new_ma__AuthenticateBegin(soap);
  b->EKPublic = ToBase64Binary(soap, request.ek_public);
  if (!request.ek_certificate.empty()) {  // a TPM without one sends none
    b->EKCertificate = soap_new_xsd__base64Binary(soap);
    *b->EKCertificate = ToBase64Binary(soap, request.ek_certificate);
  }
  for (const auto& c : request.ek_intermediates) {
    b->EKIntermediateCertificate.push_back(ToBase64Binary(soap, c));
  }
  b->AKPublic = ToBase64Binary(soap, request.ak_public);
  req.__union_AuthenticateRequest = SOAP_UNION__ma__union_AuthenticateRequest_Begin;
  req.union_AuthenticateRequest.Begin = b;
  _ma__AuthenticateResponse resp;
  TPMMA_RETURN_IF_ERROR(Finish(proxy_->Authenticate(&req, resp)));
  if (resp.__union_AuthenticateResponse != SOAP_UNION__ma__union_AuthenticateResponse_Challenge ||
      resp.union_AuthenticateResponse.Challenge == nullptr) {
    return Error(Code::kMalformed, "the MA answered Authenticate round one without a challenge");
  }
  const auto* ch = resp.union_AuthenticateResponse.Challenge;
  return AuthChallenge{.challenge_id = FromBase64Binary(ch->ChallengeId),
                       .credential_blob = FromBase64Binary(ch->CredentialBlob),
                       .encrypted_secret = FromBase64Binary(ch->EncryptedSecret),
                       .nonce = FromBase64Binary(ch->Nonce),
                       .expires_at = static_cast<int64_t>(ch->ExpiresAt)};
}

namespace {

// Empty fields are left out (minOccurs="0"), not sent empty.
ma__PlatformInventory* WireInventory(struct soap* soap, const PlatformInventory& i) {
  auto* w = soap_new_ma__PlatformInventory(soap);
  const std::pair<std::string**, const std::string*> fields[] = {
      {&w->Hostname, &i.hostname},
      {&w->OsName, &i.os_name},
      {&w->KernelRelease, &i.kernel_release},
      {&w->SystemVendor, &i.system_vendor},
      {&w->ProductName, &i.product_name},
      {&w->SerialNumber, &i.serial_number},
      {&w->AssetTag, &i.asset_tag},
      {&w->MachineId, &i.machine_id},
      {&w->TpmManufacturer, &i.tpm_manufacturer},
      {&w->TpmVendor, &i.tpm_vendor},
      {&w->TpmFirmware, &i.tpm_firmware},
      {&w->OwnerLabel, &i.owner_label}};
  for (const auto& [to, from] : fields) {
    if (from->empty()) continue;
    *to = soap_new_std__string(soap);
    **to = *from;
  }
  return w;
}

}  // namespace

Result<MaSession> MaClient::AuthenticateComplete(const AuthComplete& request) {
  TPMMA_RETURN_IF_ERROR(Prepare());
  struct soap* soap = proxy_->soap;
  _ma__AuthenticateRequest req;
  auto* m = soap_new_ma__AuthenticateComplete(soap);
  m->ChallengeId = ToBase64Binary(soap, request.challenge_id);
  m->Proof = ToBase64Binary(soap, request.proof);
  if (request.signing_key) {
    m->PackageSigningKey = soap_new_ma__PackageSigningKey(soap);
    m->PackageSigningKey->Public = ToBase64Binary(soap, request.signing_key->public_area);
    m->PackageSigningKey->CertifyInfo = ToBase64Binary(soap, request.signing_key->certify_info);
    m->PackageSigningKey->CertifySignature =
        ToBase64Binary(soap, request.signing_key->certify_signature);
  }
  if (request.srk) {
    m->StorageRootKey = soap_new_ma__CertifiedStorageRootKey(soap);
    m->StorageRootKey->Public = ToBase64Binary(soap, request.srk->public_area);
    m->StorageRootKey->CertifyInfo = ToBase64Binary(soap, request.srk->certify_info);
    m->StorageRootKey->CertifySignature = ToBase64Binary(soap, request.srk->certify_signature);
  }
  if (request.inventory) m->Inventory = WireInventory(soap, *request.inventory);
  req.__union_AuthenticateRequest = SOAP_UNION__ma__union_AuthenticateRequest_Complete;
  req.union_AuthenticateRequest.Complete = m;
  _ma__AuthenticateResponse resp;
  TPMMA_RETURN_IF_ERROR(Finish(proxy_->Authenticate(&req, resp)));
  if (resp.__union_AuthenticateResponse != SOAP_UNION__ma__union_AuthenticateResponse_Session ||
      resp.union_AuthenticateResponse.Session == nullptr) {
    return Error(Code::kMalformed, "the MA answered Authenticate round two without a session");
  }
  auto* s = resp.union_AuthenticateResponse.Session;
  MaSession out;
  out.platform_id = s->PlatformId;
  out.token.assign(s->SessionToken.begin(), s->SessionToken.end());
  out.expires_at = static_cast<int64_t>(s->ExpiresAt);
  OPENSSL_cleanse(s->SessionToken.data(), s->SessionToken.size());
  return out;
}

Result<UploadResult> MaClient::Upload(std::string_view token, ByteView package) {
  TPMMA_RETURN_IF_ERROR(Prepare());
  _ma__UploadRequest req;
  req.SessionToken.assign(token);
  req.Package = ToBase64Binary(proxy_->soap, package);
  _ma__UploadResponse resp;
  int rc = proxy_->Upload(&req, resp);
  OPENSSL_cleanse(req.SessionToken.data(), req.SessionToken.size());
  TPMMA_RETURN_IF_ERROR(Finish(rc));
  return UploadResult{.package_id = resp.PackageId,
                      .digest_hex = resp.Digest,
                      .already_stored = resp.AlreadyStored};
}

Result<QueryPage> MaClient::Query(std::string_view token, const QueryFilter& filter,
                                  uint32_t page_size, std::string_view page_token) {
  TPMMA_RETURN_IF_ERROR(Prepare());
  _ma__QueryRequest req;
  req.SessionToken.assign(token);
  req.PageSize = static_cast<int>(page_size);
  std::string pt(page_token);
  if (!pt.empty()) req.PageToken = &pt;
  ma__QueryFilter f;
  std::string src, label;
  time_t after = 0, before = 0;
  if (filter.source_platform_id || filter.created_after || filter.created_before ||
      filter.label_contains) {
    if (filter.source_platform_id) f.SourcePlatformId = &(src = *filter.source_platform_id);
    if (filter.label_contains) f.LabelContains = &(label = *filter.label_contains);
    if (filter.created_after) f.CreatedAfter = &(after = *filter.created_after);
    if (filter.created_before) f.CreatedBefore = &(before = *filter.created_before);
    req.Filter = &f;
  }
  _ma__QueryResponse resp;
  int rc = proxy_->Query(&req, resp);
  OPENSSL_cleanse(req.SessionToken.data(), req.SessionToken.size());
  TPMMA_RETURN_IF_ERROR(Finish(rc));
  QueryPage out;
  for (const auto* d : resp.PackageDescriptor) {
    if (d == nullptr) continue;
    out.packages.push_back(PackageDescriptor{
        .package_id = d->PackageId,
        .source_platform_id = d->SourcePlatformId,
        .custody_mode = CustodyOf(d->CustodyMode),
        .access = d->Access == ma__Access__Approved ? Access::kApproved : Access::kOwn,
        .created_at = static_cast<int64_t>(d->CreatedAt),
        .uploaded_at = static_cast<int64_t>(d->UploadedAt),
        .key_count = d->KeyCount,
        .size_bytes = d->SizeBytes});
  }
  if (resp.NextPageToken != nullptr) out.next_page_token = *resp.NextPageToken;
  return out;
}

Result<Bytes> MaClient::DownloadPrepare(std::string_view token, std::string_view package_id,
                                        ByteView destination_parent_name) {
  TPMMA_RETURN_IF_ERROR(Prepare());
  struct soap* soap = proxy_->soap;
  _ma__DownloadRequest req;
  req.SessionToken.assign(token);
  req.PackageId.assign(package_id);
  auto* prep = soap_new_ma__DownloadPrepare(soap);
  prep->DestinationParentName = ToBase64Binary(soap, destination_parent_name);
  req.__union_DownloadRequest = SOAP_UNION__ma__union_DownloadRequest_Prepare;
  req.union_DownloadRequest.Prepare = prep;
  _ma__DownloadResponse resp;
  int rc = proxy_->Download(&req, resp);
  OPENSSL_cleanse(req.SessionToken.data(), req.SessionToken.size());
  TPMMA_RETURN_IF_ERROR(Finish(rc));
  if (resp.__union_DownloadResponse != SOAP_UNION__ma__union_DownloadResponse_Prepared ||
      resp.union_DownloadResponse.Prepared == nullptr) {
    return Error(Code::kMalformed, "the MA answered Download round one without a nonce");
  }
  return FromBase64Binary(resp.union_DownloadResponse.Prepared->Nonce);
}

Result<DownloadedPackage> MaClient::DownloadComplete(std::string_view token,
                                                     std::string_view package_id,
                                                     const DownloadProof& proof) {
  TPMMA_RETURN_IF_ERROR(Prepare());
  struct soap* soap = proxy_->soap;
  _ma__DownloadRequest req;
  req.SessionToken.assign(token);
  req.PackageId.assign(package_id);
  auto* comp = soap_new_ma__DownloadComplete(soap);
  comp->Nonce = ToBase64Binary(soap, proof.nonce);
  comp->DestinationParentPublic = ToBase64Binary(soap, proof.destination_public);
  comp->CertifyInfo = ToBase64Binary(soap, proof.certify_info);
  comp->CertifySignature = ToBase64Binary(soap, proof.certify_signature);
  req.__union_DownloadRequest = SOAP_UNION__ma__union_DownloadRequest_Complete;
  req.union_DownloadRequest.Complete = comp;
  _ma__DownloadResponse resp;
  int rc = proxy_->Download(&req, resp);
  OPENSSL_cleanse(req.SessionToken.data(), req.SessionToken.size());
  TPMMA_RETURN_IF_ERROR(Finish(rc));
  if (resp.__union_DownloadResponse != SOAP_UNION__ma__union_DownloadResponse_Package ||
      resp.union_DownloadResponse.Package == nullptr) {
    return Error(Code::kMalformed, "the MA answered Download round two without a package");
  }
  const auto* p = resp.union_DownloadResponse.Package;
  DownloadedPackage out{.document = FromBase64Binary(p->Document),
                        .duplicate = FromBase64Binary(p->DuplicateRewrapped),
                        .encrypted_seed = FromBase64Binary(p->EncryptedSeedRewrapped),
                        .escrowed_inner_key = {},
                        .signing_key_public = {}};
  if (p->SigningKeyPublic != nullptr) {
    out.signing_key_public = FromBase64Binary(*p->SigningKeyPublic);
  }
  if (p->EscrowedInnerKey != nullptr && p->EscrowedInnerKey->__ptr != nullptr &&
      p->EscrowedInnerKey->__size > 0) {
    // A TPM2B_DATA holding a secret: its buffer straight into wiped memory, and the
    // decoded copy in gSOAP's arena wiped too.
    unsigned char* blob = p->EscrowedInnerKey->__ptr;
    const size_t size = static_cast<size_t>(p->EscrowedInnerKey->__size);
    const size_t declared = size >= 2 ? (static_cast<size_t>(blob[0]) << 8 | blob[1]) : 0;
    const bool well_formed = size >= 2 && declared == size - 2 && declared > 0;
    if (well_formed) out.escrowed_inner_key.assign(blob + 2, blob + size);
    OPENSSL_cleanse(blob, size);
    if (!well_formed) {
      return Error(Code::kMalformed, "the MA's EscrowedInnerKey is not a TPM2B_DATA");
    }
  }
  return out;
}

Status MaClient::Delete(std::string_view token, std::string_view package_id) {
  TPMMA_RETURN_IF_ERROR(Prepare());
  _ma__DeleteRequest req;
  req.SessionToken.assign(token);
  req.PackageId.assign(package_id);
  _ma__DeleteResponse resp;
  int rc = proxy_->Delete(&req, resp);
  OPENSSL_cleanse(req.SessionToken.data(), req.SessionToken.size());
  TPMMA_RETURN_IF_ERROR(Finish(rc));
  if (!resp.Deleted) return Status(Code::kNotFound, "the MA deleted nothing");
  return Status::Ok();
}

}  // namespace tpmma::ma
