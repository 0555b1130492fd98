// SPDX-License-Identifier: GPL-2.0-or-later
#include "tpm/esys/esys.h"

#include <tss2/tss2_tctildr.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "common/text.h"
#include "tpm/esys/esys_internal.h"
#include "tpm/marshal.h"
#include "tpm/public.h"
#include "tpm/tss_error.h"

namespace tpmma::esys {

namespace {

using tpm::CheckRc;
using namespace internal;  // NOLINT: this folder's shared helpers (esys_internal.h)

}  // namespace

// ---------------------------------------------------------------- Context

// One TCTI connection and its ESYS_CONTEXT, closed when the last Tpm, Handle or EVP_PKEY
// holding it goes. The parameter-encryption session lives here, not in a Handle: a Handle
// holds its Context, so the Context holding one would never close.
class Context {
 public:
  explicit Context(std::string tcti_string) : tcti(std::move(tcti_string)) {}
  ~Context() {
    SetEncSession(ESYS_TR_NONE);
    if (esys != nullptr) Esys_Finalize(&esys);
    if (tcti_ctx != nullptr) Tss2_TctiLdr_Finalize(&tcti_ctx);
  }
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;

  // Flushes the session in use (if any) and uses `tr` from now on.
  void SetEncSession(ESYS_TR tr) {
    if (enc_session != ESYS_TR_NONE && esys != nullptr) Esys_FlushContext(esys, enc_session);
    enc_session = tr;
  }

  const std::string tcti;
  TSS2_TCTI_CONTEXT* tcti_ctx = nullptr;
  ESYS_CONTEXT* esys = nullptr;
  ESYS_TR enc_session = ESYS_TR_NONE;
};

// ---------------------------------------------------------------- Handle

Handle& Handle::operator=(Handle&& o) noexcept {
  if (this != &o) {
    reset();
    ctx_ = std::move(o.ctx_);
    tr_ = o.tr_;
    kind_ = o.kind_;
    o.tr_ = ESYS_TR_NONE;
  }
  return *this;
}

void Handle::reset() {
  if (tr_ != ESYS_TR_NONE && ctx_ != nullptr && ctx_->esys != nullptr) {
    // Errors are ignored: there is nobody to report them to, and a handle the TPM already
    // dropped (e.g. flushed by a TPM reset) only needs ESAPI's bookkeeping released.
    if (kind_ == Kind::kPersistent || Esys_FlushContext(ctx_->esys, tr_) != TSS2_RC_SUCCESS) {
      Esys_TR_Close(ctx_->esys, &tr_);
    }
  }
  tr_ = ESYS_TR_NONE;
  ctx_.reset();  // after the flush: this may close the connection
}

// ---------------------------------------------------------------- Tpm: connection

std::string Tpm::ResolveTcti(std::string_view tcti) {
  if (!tcti.empty()) return std::string(tcti);
  for (const char* var : {"TPM2TOOLS_TCTI", "TCTI"}) {
    const char* v = std::getenv(var);
    if (v != nullptr && *v != '\0') return v;
  }
  return "device:/dev/tpmrm0";
}

Result<std::unique_ptr<Tpm>> Tpm::Open(std::string_view tcti_arg) {
  // tpm2-tss prints every failed command to stderr; our Status carries the same facts in
  // plain words, so its log stays quiet unless the user asked for it (TSS2_LOG=all+debug).
  // Not overwritten if set; Open runs at start-up, before threads that read the env.
  ::setenv("TSS2_LOG", "all+none", 0);
  auto ctx = std::make_shared<Context>(ResolveTcti(tcti_arg));
  // A copy: `ctx` is moved into the Tpm before the first command, which may fail.
  auto unavailable = [tcti = ctx->tcti](const Status& s) {
    return Error(Code::kUnavailable,
                 "cannot reach the TPM at '" + tcti +
                     "' (is it running, and may this user open it?): " + s.message());
  };
  Status s = CheckRc("Tss2_TctiLdr_Initialize",
                     Tss2_TctiLdr_Initialize(ctx->tcti.c_str(), &ctx->tcti_ctx));
  if (!s.ok()) return unavailable(s);
  s = CheckRc("Esys_Initialize", Esys_Initialize(&ctx->esys, ctx->tcti_ctx, nullptr));
  if (!s.ok()) return unavailable(s);
  auto tpm = std::make_unique<Tpm>(PrivateTag{}, std::move(ctx));
  // Some TCTIs connect lazily: one cheap command tells a dead TPM from a live one now,
  // not in the middle of a backup.
  TPMI_YES_NO more = TPM2_NO;
  EsysPtr<TPMS_CAPABILITY_DATA> caps;
  s = CheckRc("Esys_GetCapability", Esys_GetCapability(tpm->ctx_, ESYS_TR_NONE, ESYS_TR_NONE,
                                                       ESYS_TR_NONE, TPM2_CAP_TPM_PROPERTIES,
                                                       TPM2_PT_MANUFACTURER, 1, &more, Out(caps)));
  if (!s.ok()) return s.code() == Code::kUnavailable ? unavailable(s) : Error(s);
  return tpm;
}

Tpm::Tpm(PrivateTag, std::shared_ptr<Context> ctx)
    : context_(std::move(ctx)), ctx_(context_->esys) {}

Tpm::~Tpm() = default;  // the Context closes with its last holder

Result<std::unique_ptr<Tpm>> Tpm::Of(const Object& object) {
  if (!object || object.handle_.ctx_ == nullptr) {
    return Error(Code::kInvalidArgument, "Tpm::Of needs a loaded object");
  }
  return std::make_unique<Tpm>(PrivateTag{}, object.handle_.ctx_);
}

const std::string& Tpm::tcti() const {
  return context_->tcti;
}

bool Tpm::Owns(const Object& object) const {
  return object && object.handle_.ctx_ == context_;
}

bool Tpm::parameter_encryption() const {
  return context_->enc_session != ESYS_TR_NONE;
}

// ---------------------------------------------------------------- Tpm: helpers

Result<Object> Tpm::WrapObject(ESYS_TR tr, Handle::Kind kind, const TPM2B_PUBLIC* known_public) {
  Object obj;
  obj.handle_ = Handle(context_, tr, kind);
  if (known_public != nullptr) {
    obj.public_ = *known_public;
  } else {
    EsysPtr<TPM2B_PUBLIC> pub;
    EsysPtr<TPM2B_NAME> name, qualified;
    TPMMA_RETURN_IF_ERROR(CheckRc(
        "Esys_ReadPublic", Esys_ReadPublic(ctx_, tr, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
                                           Out(pub), Out(name), Out(qualified))));
    obj.public_ = *pub;
  }
  EsysPtr<TPM2B_NAME> name;
  TPMMA_RETURN_IF_ERROR(CheckRc("Esys_TR_GetName", Esys_TR_GetName(ctx_, tr, Out(name))));
  obj.name_.assign(name->name, name->name + name->size);
  return obj;
}

Result<Handle> Tpm::StartPolicySession(TPM2_SE type) {
  ESYS_TR tr = ESYS_TR_NONE;
  TPMMA_RETURN_IF_ERROR(CheckRc(
      "Esys_StartAuthSession",
      Esys_StartAuthSession(ctx_, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
                            ESYS_TR_NONE, nullptr, type, &kNoSymmetric, TPM2_ALG_SHA256, &tr)));
  return Handle(context_, tr, Handle::Kind::kSession);
}

Result<ESYS_TR> Tpm::UserAuth(const Object& object, Handle* holder) {
  if (!object.endorsement_policy_) return ESYS_TR_PASSWORD;
  TPMMA_ASSIGN_OR_RETURN(*holder, StartPolicySession(TPM2_SE_POLICY));
  TPM2B_NONCE nonce_tpm{};
  TPM2B_DIGEST cp_hash{};
  TPM2B_NONCE policy_ref{};
  EsysPtr<TPM2B_TIMEOUT> timeout;
  EsysPtr<TPMT_TK_AUTH> ticket;
  TPMMA_RETURN_IF_ERROR(
      CheckRc("Esys_PolicySecret(endorsement)",
              Esys_PolicySecret(ctx_, ESYS_TR_RH_ENDORSEMENT, holder->get(), ESYS_TR_PASSWORD,
                                ESYS_TR_NONE, ESYS_TR_NONE, &nonce_tpm, &cp_hash, &policy_ref, 0,
                                Out(timeout), Out(ticket))));
  return holder->get();
}

Result<Object> Tpm::CreatePrimary(ESYS_TR hierarchy, const TPM2B_PUBLIC& tmpl) {
  TPM2B_SENSITIVE_CREATE sensitive{};
  TPM2B_DATA outside{};
  TPML_PCR_SELECTION pcrs{};
  ESYS_TR tr = ESYS_TR_NONE;
  EsysPtr<TPM2B_PUBLIC> pub;
  EsysPtr<TPM2B_CREATION_DATA> creation_data;
  EsysPtr<TPM2B_DIGEST> creation_hash;
  EsysPtr<TPMT_TK_CREATION> ticket;
  TPMMA_RETURN_IF_ERROR(
      CheckRc("Esys_CreatePrimary",
              Esys_CreatePrimary(ctx_, hierarchy, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE,
                                 &sensitive, &tmpl, &outside, &pcrs, &tr, Out(pub),
                                 Out(creation_data), Out(creation_hash), Out(ticket))));
  return WrapObject(tr, Handle::Kind::kTransient, pub.get());
}

Status Tpm::EnableParameterEncryption(const Object& salt_key) {
  const TPMT_SYM_DEF aes = {TPM2_ALG_AES, {.aes = 128}, {.aes = TPM2_ALG_CFB}};
  ESYS_TR tr = ESYS_TR_NONE;
  TPMMA_RETURN_IF_ERROR(CheckRc(
      "Esys_StartAuthSession(salted, parameter encryption)",
      Esys_StartAuthSession(ctx_, salt_key.handle(), ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
                            ESYS_TR_NONE, nullptr, TPM2_SE_HMAC, &aes, TPM2_ALG_SHA256, &tr)));
  context_->SetEncSession(tr);
  return Status::Ok();
}

Result<ESYS_TR> Tpm::EncSession(TPMA_SESSION attributes) {
  const ESYS_TR session = context_->enc_session;
  if (session == ESYS_TR_NONE) return ESYS_TR_NONE;
  TPMMA_RETURN_IF_ERROR(
      CheckRc("Esys_TRSess_SetAttributes",
              Esys_TRSess_SetAttributes(
                  ctx_, session, attributes | TPMA_SESSION_CONTINUESESSION,
                  TPMA_SESSION_DECRYPT | TPMA_SESSION_ENCRYPT | TPMA_SESSION_CONTINUESESSION)));
  return session;
}

// ---------------------------------------------------------------- identity

std::string TpmInfo::FirmwareString() const {
  return std::to_string(firmware1 >> 16) + "." + std::to_string(firmware1 & 0xffff) + "." +
         std::to_string(firmware2 >> 16) + "." + std::to_string(firmware2 & 0xffff);
}

namespace {
// A TPM_PT value that holds up to four ASCII characters, big-endian (Part 2, 6.13).
std::string PropertyChars(uint32_t value) {
  std::string out;
  for (int shift = 24; shift >= 0; shift -= 8) {
    char c = static_cast<char>((value >> shift) & 0xff);
    if (c == '\0') continue;
    // Untrusted bytes from the chip end up in the MA's inventory and on terminals.
    out.push_back(c >= 0x20 && c < 0x7f ? c : '?');
  }
  return out;
}
}  // namespace

Result<TpmInfo> Tpm::Info() {
  TPMI_YES_NO more = TPM2_NO;
  EsysPtr<TPMS_CAPABILITY_DATA> caps;
  TPMMA_RETURN_IF_ERROR(CheckRc(
      "Esys_GetCapability(TPM properties)",
      Esys_GetCapability(ctx_, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, TPM2_CAP_TPM_PROPERTIES,
                         TPM2_PT_MANUFACTURER,
                         TPM2_PT_FIRMWARE_VERSION_2 - TPM2_PT_MANUFACTURER + 1, &more, Out(caps))));
  TpmInfo info;
  const TPML_TAGGED_TPM_PROPERTY& props = caps->data.tpmProperties;
  for (uint32_t i = 0; i < props.count && i < TPM2_MAX_TPM_PROPERTIES; ++i) {
    const uint32_t v = props.tpmProperty[i].value;
    switch (props.tpmProperty[i].property) {
      case TPM2_PT_MANUFACTURER:
        info.manufacturer = PropertyChars(v);
        break;
      case TPM2_PT_VENDOR_STRING_1:
      case TPM2_PT_VENDOR_STRING_2:
      case TPM2_PT_VENDOR_STRING_3:
      case TPM2_PT_VENDOR_STRING_4:
        info.vendor += PropertyChars(v);
        break;
      case TPM2_PT_FIRMWARE_VERSION_1:
        info.firmware1 = v;
        break;
      case TPM2_PT_FIRMWARE_VERSION_2:
        info.firmware2 = v;
        break;
      default:
        break;
    }
  }
  while (!info.manufacturer.empty() && info.manufacturer.back() == ' ')
    info.manufacturer.pop_back();
  while (!info.vendor.empty() && info.vendor.back() == ' ') info.vendor.pop_back();
  return info;
}

// ---------------------------------------------------------------- key hierarchy

Result<bool> Tpm::HandleExists(TPM2_HANDLE handle) {
  TPMI_YES_NO more = TPM2_NO;
  EsysPtr<TPMS_CAPABILITY_DATA> caps;
  TPMMA_RETURN_IF_ERROR(CheckRc("Esys_GetCapability(handles)",
                                Esys_GetCapability(ctx_, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
                                                   TPM2_CAP_HANDLES, handle, 1, &more, Out(caps))));
  const TPML_HANDLE& h = caps->data.handles;
  return h.count > 0 && h.handle[0] == handle;
}

Result<Object> Tpm::FromPersistent(TPM2_HANDLE handle) {
  ESYS_TR tr = ESYS_TR_NONE;
  TPMMA_RETURN_IF_ERROR(
      CheckRc("Esys_TR_FromTPMPublic(" + Hex32(handle) + ")",
              Esys_TR_FromTPMPublic(ctx_, handle, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &tr)));
  return WrapObject(tr, Handle::Kind::kPersistent, nullptr);
}

Result<Object> Tpm::GetOrCreateSrk(KeyAlg alg, TPM2_HANDLE handle) {
  if (handle == 0) handle = alg == KeyAlg::kRsa2048 ? kSrkHandle : kSrkEccHandle;
  TPMMA_ASSIGN_OR_RETURN(bool exists, HandleExists(handle));
  if (exists) {
    TPMMA_ASSIGN_OR_RETURN(Object srk, FromPersistent(handle));
    const TPMT_PUBLIC& p = srk.public_area().publicArea;
    const TPM2_ALG_ID want = alg == KeyAlg::kRsa2048 ? TPM2_ALG_RSA : TPM2_ALG_ECC;
    // Someone else's key at our handle must not silently become the parent of our keys.
    Status st = tpm::CheckStorageParent(p);
    if (!st.ok() || p.type != want || !(p.objectAttributes & TPMA_OBJECT_FIXEDTPM)) {
      return Error(Code::kConflict,
                   "persistent handle " + Hex32(handle) + " holds a key that is not a " +
                       KeyAlgName(alg) +
                       " fixedTPM storage key; evict it (tpm2_evictcontrol) or pick another "
                       "handle");
    }
    return srk;
  }
  TPMMA_ASSIGN_OR_RETURN(Object transient, CreatePrimary(ESYS_TR_RH_OWNER, SrkTemplate(alg)));
  auto persisted = Persist(transient, handle);
  if (!persisted.has_value()) {
    // Another process (a second lms, tpm2-tools) may have persisted a key there since we
    // looked: use it if it qualifies, rather than failing the first run on a busy machine.
    auto now = HandleExists(handle);
    if (now.has_value() && *now) return GetOrCreateSrk(alg, handle);
  }
  return persisted;
}

Result<Object> Tpm::Persist(const Object& transient, TPM2_HANDLE handle) {
  ESYS_TR tr = ESYS_TR_NONE;
  TPMMA_RETURN_IF_ERROR(
      CheckRc("Esys_EvictControl(" + Hex32(handle) + ")",
              Esys_EvictControl(ctx_, ESYS_TR_RH_OWNER, transient.handle(), ESYS_TR_PASSWORD,
                                ESYS_TR_NONE, ESYS_TR_NONE, handle, &tr)));
  return WrapObject(tr, Handle::Kind::kPersistent, &transient.public_area());
}

Status Tpm::EvictPersistent(Object persistent) {
  if (!persistent.persistent()) {
    return Status(Code::kInvalidArgument, "EvictPersistent needs a persistent object");
  }
  TPM2_HANDLE handle = 0;
  TPMMA_RETURN_IF_ERROR(
      CheckRc("Esys_TR_GetTpmHandle", Esys_TR_GetTpmHandle(ctx_, persistent.handle(), &handle)));
  ESYS_TR none = ESYS_TR_NONE;
  return CheckRc("Esys_EvictControl(" + Hex32(handle) + ")",
                 Esys_EvictControl(ctx_, ESYS_TR_RH_OWNER, persistent.handle(), ESYS_TR_PASSWORD,
                                   ESYS_TR_NONE, ESYS_TR_NONE, handle, &none));
}

Result<PublicInfo> Tpm::ReadPublic(const Object& object) {
  EsysPtr<TPM2B_PUBLIC> pub;
  EsysPtr<TPM2B_NAME> name, qualified;
  TPMMA_RETURN_IF_ERROR(CheckRc(
      "Esys_ReadPublic", Esys_ReadPublic(ctx_, object.handle(), ESYS_TR_NONE, ESYS_TR_NONE,
                                         ESYS_TR_NONE, Out(pub), Out(name), Out(qualified))));
  PublicInfo info;
  info.public_area = *pub;
  TPMMA_ASSIGN_OR_RETURN(info.marshalled, tpm::Marshal(*pub));
  info.name.assign(name->name, name->name + name->size);
  return info;
}

Result<Object> Tpm::CreateEk() {
  return CreateEk(tpm::TcgEkTemplate("L-1"));
}

Result<Object> Tpm::CreateEk(const tpm::EkTemplate& tmpl) {
  TPM2B_PUBLIC p{};
  p.publicArea = tmpl.public_area;
  TPMMA_ASSIGN_OR_RETURN(Object ek, CreatePrimary(ESYS_TR_RH_ENDORSEMENT, p));
  ek.endorsement_policy_ = !(tmpl.public_area.objectAttributes & TPMA_OBJECT_USERWITHAUTH);
  return ek;
}

Result<Bytes> Tpm::ReadEkCertificate() {
  auto cert = ReadNvCertificate(kEkCertRsaNvIndex);
  if (!cert && cert.error().code() == Code::kNotFound) {
    return Error(Code::kNotFound, "this TPM has no RSA EK certificate (NV index " +
                                      Hex32(kEkCertRsaNvIndex) + " is not defined)");
  }
  if (!cert) return cert;
  // Some vendors pad the index; the DER SEQUENCE header says where the certificate ends.
  if (cert->size() >= 4 && (*cert)[0] == 0x30 && (*cert)[1] == 0x82) {
    const size_t der_len = 4 + ((size_t{(*cert)[2]} << 8) | (*cert)[3]);
    if (der_len <= cert->size()) cert->resize(der_len);
  }
  return cert;
}

Result<Bytes> Tpm::ReadNvCertificate(TPM2_HANDLE index) {
  TPMMA_ASSIGN_OR_RETURN(bool exists, HandleExists(index));
  if (!exists) return Error(Code::kNotFound, "NV index " + Hex32(index) + " is not defined");
  ESYS_TR tr = ESYS_TR_NONE;
  TPMMA_RETURN_IF_ERROR(
      CheckRc("Esys_TR_FromTPMPublic(NV " + Hex32(index) + ")",
              Esys_TR_FromTPMPublic(ctx_, index, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &tr)));
  Handle nv(context_, tr, Handle::Kind::kPersistent);
  EsysPtr<TPM2B_NV_PUBLIC> nv_public;
  EsysPtr<TPM2B_NAME> nv_name;
  TPMMA_RETURN_IF_ERROR(CheckRc("Esys_NV_ReadPublic",
                                Esys_NV_ReadPublic(ctx_, nv.get(), ESYS_TR_NONE, ESYS_TR_NONE,
                                                   ESYS_TR_NONE, Out(nv_public), Out(nv_name))));
  const uint16_t size = nv_public->nvPublic.dataSize;
  Bytes cert;
  cert.reserve(size);
  // 512 is the smallest NV buffer a PC-client TPM may have.
  constexpr uint16_t kChunk = 512;
  while (cert.size() < size) {
    const auto n = static_cast<uint16_t>(std::min<size_t>(kChunk, size - cert.size()));
    EsysPtr<TPM2B_MAX_NV_BUFFER> data;
    TPMMA_RETURN_IF_ERROR(
        CheckRc("Esys_NV_Read(" + Hex32(index) + ")",
                Esys_NV_Read(ctx_, ESYS_TR_RH_OWNER, nv.get(), ESYS_TR_PASSWORD, ESYS_TR_NONE,
                             ESYS_TR_NONE, n, static_cast<uint16_t>(cert.size()), Out(data))));
    if (data->size == 0) break;
    cert.insert(cert.end(), data->buffer, data->buffer + data->size);
  }
  return cert;
}

Result<KeyBlob> Tpm::CreateAk(const Object& ek, KeyAlg alg) {
  return Create(ek, AkTemplate(alg));
}

Result<SecureBytes> Tpm::ActivateCredential(const Object& ak, const Object& ek,
                                            const TPM2B_ID_OBJECT& credential_blob,
                                            const TPM2B_ENCRYPTED_SECRET& secret) {
  Handle ak_session, ek_session;
  TPMMA_ASSIGN_OR_RETURN(ESYS_TR ak_auth, UserAuth(ak, &ak_session));
  TPMMA_ASSIGN_OR_RETURN(ESYS_TR ek_auth, UserAuth(ek, &ek_session));
  TPMMA_ASSIGN_OR_RETURN(ESYS_TR enc, EncSession(TPMA_SESSION_ENCRYPT));
  EsysSecretPtr<TPM2B_DIGEST> cert_info;
  TPMMA_RETURN_IF_ERROR(
      CheckRc("Esys_ActivateCredential",
              Esys_ActivateCredential(ctx_, ak.handle(), ek.handle(), ak_auth, ek_auth, enc,
                                      &credential_blob, &secret, Out(cert_info))));
  return SecretFrom(*cert_info);
}

Result<Attestation> Tpm::Certify(const Object& object, const Object& ak, ByteView qualifying_data) {
  TPM2B_DATA qualifying{};
  TPMMA_RETURN_IF_ERROR(Fill(qualifying, qualifying_data, "qualifying data"));
  Handle object_session, ak_session;
  TPMMA_ASSIGN_OR_RETURN(ESYS_TR object_auth, UserAuth(object, &object_session));
  TPMMA_ASSIGN_OR_RETURN(ESYS_TR ak_auth, UserAuth(ak, &ak_session));
  TPMT_SIG_SCHEME scheme{};
  scheme.scheme = TPM2_ALG_NULL;
  EsysPtr<TPM2B_ATTEST> info;
  EsysPtr<TPMT_SIGNATURE> sig;
  TPMMA_RETURN_IF_ERROR(CheckRc(
      "Esys_Certify", Esys_Certify(ctx_, object.handle(), ak.handle(), object_auth, ak_auth,
                                   ESYS_TR_NONE, &qualifying, &scheme, Out(info), Out(sig))));
  Attestation out;
  out.attest.assign(info->attestationData, info->attestationData + info->size);
  TPMMA_ASSIGN_OR_RETURN(out.signature, tpm::Marshal(*sig));
  return out;
}

Result<Attestation> Tpm::Quote(const Object& ak, ByteView nonce, const std::vector<int>& pcrs) {
  TPM2B_DATA qualifying{};
  TPMMA_RETURN_IF_ERROR(Fill(qualifying, nonce, "nonce"));
  TPML_PCR_SELECTION selection{};
  selection.count = 1;
  selection.pcrSelections[0].hash = TPM2_ALG_SHA256;
  selection.pcrSelections[0].sizeofSelect = 3;
  for (int pcr : pcrs) {
    if (pcr < 0 || pcr > 23) return Error(Code::kInvalidArgument, "PCR index out of range");
    selection.pcrSelections[0].pcrSelect[pcr / 8] |= static_cast<uint8_t>(1u << (pcr % 8));
  }
  Handle session;
  TPMMA_ASSIGN_OR_RETURN(ESYS_TR auth, UserAuth(ak, &session));
  TPMT_SIG_SCHEME scheme{};
  scheme.scheme = TPM2_ALG_NULL;
  EsysPtr<TPM2B_ATTEST> quoted;
  EsysPtr<TPMT_SIGNATURE> sig;
  TPMMA_RETURN_IF_ERROR(
      CheckRc("Esys_Quote", Esys_Quote(ctx_, ak.handle(), auth, ESYS_TR_NONE, ESYS_TR_NONE,
                                       &qualifying, &scheme, &selection, Out(quoted), Out(sig))));
  Attestation out;
  out.attest.assign(quoted->attestationData, quoted->attestationData + quoted->size);
  TPMMA_ASSIGN_OR_RETURN(out.signature, tpm::Marshal(*sig));
  return out;
}

// ---------------------------------------------------------------- MRK and children

Result<TPM2B_DIGEST> Tpm::TrialDuplicationSelectPolicy(ByteView new_parent_name) {
  TPMMA_ASSIGN_OR_RETURN(Handle trial, StartPolicySession(TPM2_SE_TRIAL));
  TPM2B_NAME object_name{};  // includeObject = NO: not hashed
  TPM2B_NAME parent_name{};
  TPMMA_RETURN_IF_ERROR(FillName(parent_name, new_parent_name));
  TPMMA_RETURN_IF_ERROR(
      CheckRc("Esys_PolicyDuplicationSelect(trial)",
              Esys_PolicyDuplicationSelect(ctx_, trial.get(), ESYS_TR_NONE, ESYS_TR_NONE,
                                           ESYS_TR_NONE, &object_name, &parent_name, TPM2_NO)));
  EsysPtr<TPM2B_DIGEST> digest;
  TPMMA_RETURN_IF_ERROR(CheckRc("Esys_PolicyGetDigest",
                                Esys_PolicyGetDigest(ctx_, trial.get(), ESYS_TR_NONE, ESYS_TR_NONE,
                                                     ESYS_TR_NONE, Out(digest))));
  return *digest;
}

Result<KeyBlob> Tpm::Create(const Object& parent, const TPM2B_PUBLIC& tmpl,
                            const SecureBytes& seal_data) {
  Wiped<TPM2B_SENSITIVE_CREATE> sensitive;
  TPMMA_RETURN_IF_ERROR(Fill(sensitive.value.sensitive.data, seal_data, "data to seal"));
  Handle session;
  TPMMA_ASSIGN_OR_RETURN(ESYS_TR auth, UserAuth(parent, &session));
  TPMMA_ASSIGN_OR_RETURN(ESYS_TR enc, EncSession(TPMA_SESSION_DECRYPT));
  TPM2B_DATA outside{};
  TPML_PCR_SELECTION pcrs{};
  EsysPtr<TPM2B_PRIVATE> priv;
  EsysPtr<TPM2B_PUBLIC> pub;
  EsysPtr<TPM2B_CREATION_DATA> creation_data;
  EsysPtr<TPM2B_DIGEST> creation_hash;
  EsysPtr<TPMT_TK_CREATION> ticket;
  TPMMA_RETURN_IF_ERROR(CheckRc(
      "Esys_Create", Esys_Create(ctx_, parent.handle(), auth, enc, ESYS_TR_NONE, &sensitive.value,
                                 &tmpl, &outside, &pcrs, Out(priv), Out(pub), Out(creation_data),
                                 Out(creation_hash), Out(ticket))));
  return KeyBlob{*pub, *priv};
}

Result<KeyBlob> Tpm::CreateChild(const Object& mrk, ChildType type, const SecureBytes& seal_data) {
  const TPMT_PUBLIC& parent = mrk.public_area().publicArea;
  TPMMA_RETURN_IF_ERROR(tpm::CheckStorageParent(parent).WithContext("MRK"));
  if (type == ChildType::kSealed) {
    if (seal_data.empty() || seal_data.size() > sizeof(TPM2B_SENSITIVE_DATA::buffer)) {
      return Error(Code::kInvalidArgument,
                   "sealed data must be 1 to 128 bytes, got " + std::to_string(seal_data.size()));
    }
  } else if (!seal_data.empty()) {
    return Error(Code::kInvalidArgument, "only sealed-data objects take data");
  }
  const bool ed = (parent.objectAttributes & TPMA_OBJECT_ENCRYPTEDDUPLICATION) != 0;
  return Create(mrk, ChildTemplate(type, ed), seal_data);
}

Result<Object> Tpm::Load(const Object& parent, const KeyBlob& blob) {
  Handle session;
  TPMMA_ASSIGN_OR_RETURN(ESYS_TR auth, UserAuth(parent, &session));
  ESYS_TR tr = ESYS_TR_NONE;
  TPMMA_RETURN_IF_ERROR(
      CheckRc("Esys_Load", Esys_Load(ctx_, parent.handle(), auth, ESYS_TR_NONE, ESYS_TR_NONE,
                                     &blob.private_area, &blob.public_area, &tr)));
  return WrapObject(tr, Handle::Kind::kTransient, &blob.public_area);
}

Result<Object> Tpm::LoadExternal(const TPM2B_PUBLIC& public_area) {
  ESYS_TR tr = ESYS_TR_NONE;
  TPMMA_RETURN_IF_ERROR(
      CheckRc("Esys_LoadExternal", Esys_LoadExternal(ctx_, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
                                                     nullptr, &public_area, ESYS_TR_RH_NULL, &tr)));
  return WrapObject(tr, Handle::Kind::kTransient, &public_area);
}

Result<TPMT_SIGNATURE> Tpm::Sign(const Object& key, ByteView digest) {
  if (digest.size() != 32) {
    return Error(Code::kInvalidArgument, "TPM keys here sign SHA-256 digests (32 bytes), got " +
                                             std::to_string(digest.size()) + " bytes");
  }
  TPM2B_DIGEST d{};
  TPMMA_RETURN_IF_ERROR(Fill(d, digest, "digest"));
  TPMT_SIG_SCHEME scheme{};
  scheme.scheme = TPM2_ALG_NULL;  // the key's own scheme
  const TPMT_PUBLIC& pub = key.public_area().publicArea;
  const bool schemeless = pub.type == TPM2_ALG_RSA
                              ? pub.parameters.rsaDetail.scheme.scheme == TPM2_ALG_NULL
                              : pub.parameters.eccDetail.scheme.scheme == TPM2_ALG_NULL;
  if (schemeless) {  // an application key: the caller's scheme, here the SHA-256 default
    scheme.scheme = pub.type == TPM2_ALG_RSA ? TPM2_ALG_RSASSA : TPM2_ALG_ECDSA;
    scheme.details.any.hashAlg = TPM2_ALG_SHA256;
  }
  // A NULL ticket is fine for unrestricted keys; restricted ones refuse external digests.
  TPMT_TK_HASHCHECK ticket{};
  ticket.tag = TPM2_ST_HASHCHECK;
  ticket.hierarchy = TPM2_RH_NULL;
  Handle session;
  TPMMA_ASSIGN_OR_RETURN(ESYS_TR auth, UserAuth(key, &session));
  EsysPtr<TPMT_SIGNATURE> sig;
  TPMMA_RETURN_IF_ERROR(
      CheckRc("Esys_Sign", Esys_Sign(ctx_, key.handle(), auth, ESYS_TR_NONE, ESYS_TR_NONE, &d,
                                     &scheme, &ticket, Out(sig))));
  return *sig;
}

Result<Bytes> Tpm::RsaEncrypt(const Object& key, ByteView message) {
  TPM2B_PUBLIC_KEY_RSA in{};
  TPMMA_RETURN_IF_ERROR(Fill(in, message, "message"));
  TPMT_RSA_DECRYPT scheme{};
  scheme.scheme = TPM2_ALG_NULL;
  TPM2B_DATA label{};
  EsysPtr<TPM2B_PUBLIC_KEY_RSA> out;
  TPMMA_RETURN_IF_ERROR(
      CheckRc("Esys_RSA_Encrypt", Esys_RSA_Encrypt(ctx_, key.handle(), ESYS_TR_NONE, ESYS_TR_NONE,
                                                   ESYS_TR_NONE, &in, &scheme, &label, Out(out))));
  return Bytes(out->buffer, out->buffer + out->size);
}

Result<SecureBytes> Tpm::RsaDecrypt(const Object& key, ByteView ciphertext) {
  TPMT_RSA_DECRYPT scheme{};
  scheme.scheme = TPM2_ALG_NULL;
  return RsaDecrypt(key, ciphertext, scheme, {});
}

Result<SecureBytes> Tpm::RsaDecryptOaep(const Object& key, ByteView ciphertext, ByteView label) {
  TPMT_RSA_DECRYPT scheme{};
  scheme.scheme = TPM2_ALG_OAEP;
  scheme.details.oaep.hashAlg = TPM2_ALG_SHA256;
  return RsaDecrypt(key, ciphertext, scheme, label);
}

Result<SecureBytes> Tpm::RsaDecrypt(const Object& key, ByteView ciphertext,
                                    const TPMT_RSA_DECRYPT& scheme, ByteView label_bytes) {
  TPM2B_PUBLIC_KEY_RSA in{};
  TPMMA_RETURN_IF_ERROR(Fill(in, ciphertext, "ciphertext"));
  TPM2B_DATA label{};
  TPMMA_RETURN_IF_ERROR(Fill(label, label_bytes, "OAEP label"));
  Handle session;
  TPMMA_ASSIGN_OR_RETURN(ESYS_TR auth, UserAuth(key, &session));
  TPMMA_ASSIGN_OR_RETURN(ESYS_TR enc, EncSession(TPMA_SESSION_ENCRYPT));
  EsysSecretPtr<TPM2B_PUBLIC_KEY_RSA> out;
  TPMMA_RETURN_IF_ERROR(
      CheckRc("Esys_RSA_Decrypt", Esys_RSA_Decrypt(ctx_, key.handle(), auth, enc, ESYS_TR_NONE, &in,
                                                   &scheme, &label, Out(out))));
  return SecretFrom(*out);
}

Result<SecureBytes> Tpm::Unseal(const Object& sealed) {
  Handle session;
  TPMMA_ASSIGN_OR_RETURN(ESYS_TR auth, UserAuth(sealed, &session));
  TPMMA_ASSIGN_OR_RETURN(ESYS_TR enc, EncSession(TPMA_SESSION_ENCRYPT));
  EsysSecretPtr<TPM2B_SENSITIVE_DATA> out;
  TPMMA_RETURN_IF_ERROR(CheckRc(
      "Esys_Unseal", Esys_Unseal(ctx_, sealed.handle(), auth, enc, ESYS_TR_NONE, Out(out))));
  return SecretFrom(*out);
}

Result<TPM2B_PRIVATE> Tpm::Import(const Object& parent, const TPM2B_PUBLIC& object_public,
                                  const TPM2B_PRIVATE& duplicate,
                                  const TPM2B_ENCRYPTED_SECRET& encrypted_seed,
                                  const SecureBytes& inner_key) {
  if (!inner_key.empty() && inner_key.size() != kInnerKeySize) {
    return Error(Code::kInvalidArgument, "the inner wrapper key must be 16 bytes (AES-128), got " +
                                             std::to_string(inner_key.size()));
  }
  Wiped<TPM2B_DATA> key;
  TPMMA_RETURN_IF_ERROR(Fill(key.value, inner_key, "inner key"));
  TPMT_SYM_DEF_OBJECT sym{};
  sym.algorithm = TPM2_ALG_NULL;
  if (!inner_key.empty()) sym = Aes128Cfb();
  Handle session;
  TPMMA_ASSIGN_OR_RETURN(ESYS_TR auth, UserAuth(parent, &session));
  TPMMA_ASSIGN_OR_RETURN(ESYS_TR enc, EncSession(TPMA_SESSION_DECRYPT));
  EsysPtr<TPM2B_PRIVATE> out;
  TPMMA_RETURN_IF_ERROR(CheckRc(
      "Esys_Import", Esys_Import(ctx_, parent.handle(), auth, enc, ESYS_TR_NONE, &key.value,
                                 &object_public, &duplicate, &encrypted_seed, &sym, Out(out))));
  return *out;
}

Result<tpm::Rewrapped> Tpm::Rewrap(const Object& old_parent, const Object& new_parent,
                                   const TPM2B_PRIVATE& duplicate, ByteView object_name,
                                   const TPM2B_ENCRYPTED_SECRET& encrypted_seed) {
  TPM2B_NAME name{};
  TPMMA_RETURN_IF_ERROR(FillName(name, object_name));
  Handle session;
  TPMMA_ASSIGN_OR_RETURN(ESYS_TR auth, UserAuth(old_parent, &session));
  EsysPtr<TPM2B_PRIVATE> out_dup;
  EsysPtr<TPM2B_ENCRYPTED_SECRET> out_seed;
  const TSS2_RC rc =
      Esys_Rewrap(ctx_, old_parent.handle(), new_parent.handle(), auth, ESYS_TR_NONE, ESYS_TR_NONE,
                  &duplicate, &name, &encrypted_seed, Out(out_dup), Out(out_seed));
  Status st = CheckRc("Esys_Rewrap", rc);
  // The duplicate was not made for this old parent and object: the same code the software
  // re-wrap (tpm/rewrap.h) gives, so callers need not know which one ran. A seed encrypted
  // to another key fails its RSA/ECC decryption (VALUE, SIZE, or ECC_POINT) before any HMAC
  // is checked; the new parent was checked in software before the TPM saw it.
  const uint32_t base = tpm::TpmBaseRc(rc);
  if (!st.ok() && (base == TPM2_RC_INTEGRITY || base == TPM2_RC_VALUE || base == TPM2_RC_SIZE ||
                   base == TPM2_RC_ECC_POINT)) {
    return Error(Code::kIntegrityFailure, st.message());
  }
  TPMMA_RETURN_IF_ERROR(st);
  return tpm::Rewrapped{.duplicate = *out_dup, .encrypted_seed = *out_seed};
}

Result<std::vector<TPM2_HANDLE>> Tpm::TransientHandles() {
  TPMI_YES_NO more = TPM2_NO;
  EsysPtr<TPMS_CAPABILITY_DATA> caps;
  TPMMA_RETURN_IF_ERROR(
      CheckRc("Esys_GetCapability(transient handles)",
              Esys_GetCapability(ctx_, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, TPM2_CAP_HANDLES,
                                 TPM2_TRANSIENT_FIRST, TPM2_MAX_CAP_HANDLES, &more, Out(caps))));
  const TPML_HANDLE& h = caps->data.handles;
  return std::vector<TPM2_HANDLE>(h.handle, h.handle + h.count);
}

}  // namespace tpmma::esys
