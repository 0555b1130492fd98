// SPDX-License-Identifier: GPL-2.0-or-later
// The ESAPI layer of lms: one Tpm per TCTI connection, RAII for every TPM handle, and the
// TPM commands the Local Migration Service needs (key hierarchy, attestation, MRK and
// children, duplication and import). Every tss2 return code goes through tpm::CheckRc.
//
//   TPMMA_ASSIGN_OR_RETURN(auto tpm, esys::Tpm::Open(flag_tcti));
//   TPMMA_ASSIGN_OR_RETURN(esys::Object srk, tpm->GetOrCreateSrk(esys::KeyAlg::kRsa2048));
//   TPMMA_ASSIGN_OR_RETURN(esys::KeyBlob mrk, tpm->CreateMrk(srk, ma_name, KeyAlg::kRsa2048));
//
// Lifetimes: the ESAPI context (TCTI connection, ESYS_CONTEXT and the parameter-encryption
// session) is a Context shared by the Tpm that opened it and every Handle, Object and
// TPM-backed EVP_PKEY made from it; it closes when the last of them is gone, in any order.
// So an Object or EVP_PKEY that outlives its Tpm keeps working (Tpm::Of gives a Tpm for it
// again) and is flushed through its own context when destroyed; there is nothing to
// use-after-free. The price: a forgotten Object keeps the connection open, and swtpm (one
// TCP connection at a time) or /dev/tpm0 (one opener) stay busy until it goes.
// Transient objects and sessions are flushed from the TPM when their owner is destroyed;
// swtpm and many real TPMs hold only three transient objects, so keep them short-lived.
// Not thread-safe: an ESYS_CONTEXT is single-threaded, so everything sharing one Context
// (a Tpm, its Objects, its EVP_PKEYs, a Tpm::Of) is used from one thread at a time.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <tss2/tss2_esys.h>
#include <tss2/tss2_tcti.h>

#include "common/bytes.h"
#include "common/status.h"
#include "tpm/approval.h"
#include "tpm/ek_templates.h"
#include "tpm/esys/templates.h"
#include "tpm/rewrap.h"

namespace tpmma::esys {

inline constexpr TPM2_HANDLE kSrkHandle = 0x81000001;     // TCG-reserved RSA SRK handle
inline constexpr TPM2_HANDLE kSrkEccHandle = 0x81000002;  // ours for the ECC variant
inline constexpr TPM2_HANDLE kEkCertRsaNvIndex = 0x01c00002;

// Esys_Free for ESAPI outputs.
struct EsysFree {
  void operator()(void* p) const { Esys_Free(p); }
};
template <typename T>
using EsysPtr = std::unique_ptr<T, EsysFree>;

// The shared ESAPI context (see Lifetimes above); defined in esys.cc, so nothing outside
// this layer reaches the raw ESYS_CONTEXT.
class Context;

// A transient or persistent object handle, or a session. Transient objects and sessions
// are flushed on destruction; persistent handles only drop ESAPI's bookkeeping
// (Esys_TR_Close), never the persistent object. A non-empty Handle keeps its Context open.
class Handle {
 public:
  enum class Kind { kTransient, kPersistent, kSession };
  Handle() = default;
  Handle(std::shared_ptr<Context> ctx, ESYS_TR tr, Kind kind)
      : ctx_(std::move(ctx)), tr_(tr), kind_(kind) {}
  ~Handle() { reset(); }
  Handle(Handle&& o) noexcept { *this = std::move(o); }
  Handle& operator=(Handle&& o) noexcept;
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;

  ESYS_TR get() const { return tr_; }
  Kind kind() const { return kind_; }
  explicit operator bool() const { return tr_ != ESYS_TR_NONE; }
  // Flushes (or closes) now, and lets go of the Context.
  void reset();

 private:
  friend class Tpm;
  std::shared_ptr<Context> ctx_;
  ESYS_TR tr_ = ESYS_TR_NONE;
  Kind kind_ = Kind::kTransient;
};

// A loaded key: its handle, public area and Name.
class Object {
 public:
  Object() = default;
  ESYS_TR handle() const { return handle_.get(); }
  const TPM2B_PUBLIC& public_area() const { return public_; }
  const Bytes& name() const { return name_; }
  bool persistent() const { return handle_.kind() == Handle::Kind::kPersistent; }
  explicit operator bool() const { return static_cast<bool>(handle_); }
  // Flushes a transient object now (the destructor would).
  void reset() { handle_.reset(); }

 private:
  friend class Tpm;
  Handle handle_;
  TPM2B_PUBLIC public_{};
  Bytes name_;
  // The user role needs PolicySecret(TPM_RH_ENDORSEMENT) (the EK) instead of a password.
  bool endorsement_policy_ = false;
};

// What TPM2_Create returns and lms stores: loadable under the parent it was made under.
struct KeyBlob {
  TPM2B_PUBLIC public_area{};
  TPM2B_PRIVATE private_area{};
};

struct PublicInfo {
  TPM2B_PUBLIC public_area{};
  Bytes marshalled;  // TPM2B_PUBLIC as tpm2_readpublic -o writes it
  Bytes name;        // as tpm2_readpublic -n writes it
};

// What TPM2_GetCapability(TPM_PROPERTIES) says the TPM is (TPM 2.0 Part 2, 6.13).
struct TpmInfo {
  std::string
      manufacturer;    // TPM_PT_MANUFACTURER as its four ASCII letters, e.g. "INTC", "AMD", "IFX"
  std::string vendor;  // TPM_PT_VENDOR_STRING_1..4, trailing NULs and spaces dropped
  uint32_t firmware1 = 0;  // TPM_PT_FIRMWARE_VERSION_1 and _2, vendor-defined
  uint32_t firmware2 = 0;
  // "MAJOR.MINOR.x.y" the way tpm2_getcap prints firmware for most vendors (the high and
  // low 16 bits of each word); vendors differ, so the raw words are kept too.
  std::string FirmwareString() const;
};

struct Attestation {
  Bytes attest;     // the TPMS_ATTEST as signed (body of the TPM2B_ATTEST)
  Bytes signature;  // marshalled TPMT_SIGNATURE
};

enum class InnerWrap {
  kNone,          // outer wrapper only (refused by the TPM for encryptedDuplication keys)
  kTpmGenerated,  // AES-128-CFB, key chosen by the TPM and returned
  kGiven,         // AES-128-CFB with the caller's 16-byte key (recovery-code custody)
};

struct Duplicated {
  TPM2B_PRIVATE duplicate{};
  TPM2B_ENCRYPTED_SECRET encrypted_seed{};
  SecureBytes inner_key;  // empty for InnerWrap::kNone
};

class Tpm {
  struct PrivateTag {
    explicit PrivateTag() = default;
  };

 public:
  Tpm(PrivateTag, std::shared_ptr<Context> ctx);  // use Open() or Of()
  // TCTI string in tpm2-tools syntax ("swtpm:host=127.0.0.1,port=2321",
  // "device:/dev/tpmrm0", "tabrmd:"); empty: $TPM2TOOLS_TCTI, else $TCTI, else
  // "device:/dev/tpmrm0". kUnavailable if the TPM cannot be reached.
  static Result<std::unique_ptr<Tpm>> Open(std::string_view tcti = {});
  static std::string ResolveTcti(std::string_view tcti);
  // A Tpm on the context `object` was loaded on (same connection, same parameter-encryption
  // session), for code that holds an Object but not the Tpm that made it, or holds it longer.
  static Result<std::unique_ptr<Tpm>> Of(const Object& object);

  ~Tpm();
  Tpm(const Tpm&) = delete;
  Tpm& operator=(const Tpm&) = delete;

  const std::string& tcti() const;
  // Manufacturer, vendor string and firmware version (one GetCapability).
  Result<TpmInfo> Info();
  // Whether `object` lives on this Tpm's context (a handle from another context means
  // nothing here).
  bool Owns(const Object& object) const;

  // From now on, secrets crossing the TPM bus (sealed data and inner keys going in;
  // unsealed data, TPM-made inner keys, credential secrets and RSA plaintexts coming out)
  // are AES-128-CFB encrypted in an HMAC session salted with `salt_key` (normally the
  // SRK), so a passive observer of /dev/tpm* or the swtpm socket sees only ciphertext.
  // lms enables it right after GetOrCreateSrk; it costs one salt exchange per context.
  // The session belongs to the shared Context: every Tpm on it (Of) uses it too.
  Status EnableParameterEncryption(const Object& salt_key);
  bool parameter_encryption() const;

  // ---- key hierarchy
  // The storage primary at `handle` (0: kSrkHandle for RSA, kSrkEccHandle for ECC). If the
  // handle is empty, creates it from SrkTemplate(alg) and persists it (owner auth empty).
  // An existing key there must be a fixedTPM storage parent of the asked algorithm.
  Result<Object> GetOrCreateSrk(KeyAlg alg, TPM2_HANDLE handle = 0);
  // Whether a persistent object or NV index exists at `handle`.
  Result<bool> HandleExists(TPM2_HANDLE handle);
  // A handle for an existing persistent object.
  Result<Object> FromPersistent(TPM2_HANDLE handle);
  Result<PublicInfo> ReadPublic(const Object& object);

  // RSA EK from the TCG default template (transient; same key as `tpm2_createek -G rsa`).
  Result<Object> CreateEk();
  // The EK of `tmpl` (tpm/ek_templates.h: L-1, L-2, H-1..H-7), transient. Its user role is
  // authorized by PolicySecret(TPM_RH_ENDORSEMENT) for the low range (no userWithAuth), by
  // the empty password for the high range (userWithAuth set; PolicyB guards only the admin
  // role, which lms never uses).
  Result<Object> CreateEk(const tpm::EkTemplate& tmpl);
  // DER certificate of the RSA EK from NV 0x01c00002, NV padding after the DER length
  // trimmed. kNotFound if the index is absent.
  Result<Bytes> ReadEkCertificate();
  // The whole contents of NV index `index` (an EK certificate index: owner-readable), as
  // stored, padding included. kNotFound if the index is not defined.
  Result<Bytes> ReadNvCertificate(TPM2_HANDLE index);
  // Restricted signing key under the EK (RSASSA-SHA256 or ECDSA-P256-SHA256), as
  // tpm2_createak. Load it with Load(ek, blob).
  Result<KeyBlob> CreateAk(const Object& ek, KeyAlg alg);
  // The challenge secret of a credential made for this EK and the AK's Name.
  Result<SecureBytes> ActivateCredential(const Object& ak, const Object& ek,
                                         const TPM2B_ID_OBJECT& credential_blob,
                                         const TPM2B_ENCRYPTED_SECRET& secret);
  // TPM2_Certify of `object` by `ak` over qualifying_data (the MA nonce), AK's scheme.
  Result<Attestation> Certify(const Object& object, const Object& ak, ByteView qualifying_data);
  // TPM2_Quote of SHA-256 PCRs `pcrs` over `nonce` by `ak`.
  Result<Attestation> Quote(const Object& ak, ByteView nonce, const std::vector<int>& pcrs);

  // ---- MRK and children (docs/protocol.md, "Keys on the platform")
  // Same digest as DuplicationSelectPolicy(), computed by the TPM in a trial session.
  Result<TPM2B_DIGEST> TrialDuplicationSelectPolicy(ByteView new_parent_name);
  Result<KeyBlob> CreateMrk(const Object& srk, ByteView ma_name, KeyAlg alg);
  // An MRK that follows the MA's key rotations: authPolicy = PolicyAuthorize(policy_key_name,
  // tpm::DuplicationPolicyRef()); it duplicates to every storage key that key approves.
  Result<KeyBlob> CreateMrkFollowingMa(const Object& srk, ByteView policy_key_name, KeyAlg alg);
  // seal_data only for kSealed (1..128 bytes).
  Result<KeyBlob> CreateChild(const Object& mrk, ChildType type, const SecureBytes& seal_data = {});
  // Generic TPM2_Create under `parent` from a template (for callers with their own).
  Result<KeyBlob> Create(const Object& parent, const TPM2B_PUBLIC& tmpl,
                         const SecureBytes& seal_data = {});
  Result<Object> Load(const Object& parent, const KeyBlob& blob);
  // A public area into the NULL hierarchy (the MA key as a duplication target).
  Result<Object> LoadExternal(const TPM2B_PUBLIC& public_area);

  // Signs a SHA-256 digest with the key's own scheme; a key without one (ChildType::kEccApp,
  // kRsaApp) signs ECDSA-SHA256 or RSASSA-PKCS1-v1_5-SHA256.
  Result<TPMT_SIGNATURE> Sign(const Object& key, ByteView digest);
  // RSA with the key's scheme (OAEP-SHA256 for kRsaDecrypt children), empty label.
  Result<Bytes> RsaEncrypt(const Object& key, ByteView message);
  Result<SecureBytes> RsaDecrypt(const Object& key, ByteView ciphertext);
  // RSA-OAEP-SHA256 whatever the key's scheme, with `label` (NUL-terminated, as the TPM
  // requires of a non-empty label): the escrow key's decryption (tpm/escrow.h).
  Result<SecureBytes> RsaDecryptOaep(const Object& key, ByteView ciphertext, ByteView label);
  Result<SecureBytes> Unseal(const Object& sealed);

  // Duplicates `object` (the MRK, authPolicy = PolicyDuplicationSelect(new parent)) to
  // `new_parent` (loaded as an external public) in a PolicyDuplicationSelect session.
  Result<Duplicated> Duplicate(const Object& object, const TPM2B_PUBLIC& new_parent,
                               InnerWrap inner, const SecureBytes& given_inner_key = {});
  // The same for an MRK from CreateMrkFollowingMa (tpm/approval.h): the TPM checks `approval` with
  // TPM2_VerifySignature (the policy key loaded in the owner hierarchy, so that it gets a
  // ticket), then PolicyDuplicationSelect(new_parent) and PolicyAuthorize with that ticket.
  // A signature from another key, or an approval of another storage key, is refused by the
  // TPM (TPM_RC_SIGNATURE, TPM_RC_VALUE).
  Result<Duplicated> DuplicateAuthorized(const Object& object, const TPM2B_PUBLIC& new_parent,
                                         const tpm::Approval& approval, InnerWrap inner,
                                         const SecureBytes& given_inner_key = {});
  // TPM2_Import under `parent`; inner_key empty means no inner wrapper. Returns the new
  // private blob, loadable with Load(parent, {object_public, result}).
  Result<TPM2B_PRIVATE> Import(const Object& parent, const TPM2B_PUBLIC& object_public,
                               const TPM2B_PRIVATE& duplicate,
                               const TPM2B_ENCRYPTED_SECRET& encrypted_seed,
                               const SecureBytes& inner_key);

  // TPM2_Rewrap: moves the outer wrapper of `duplicate` from `old_parent` (a loaded storage
  // key with its private half: the MA key in the MA's TPM) to `new_parent` (loaded, usually
  // with LoadExternal). `object_name` is the duplicated object's Name, which binds the outer
  // wrapper; an inner wrapper passes through unopened. kIntegrityFailure (TPM_RC_INTEGRITY)
  // if the duplicate was not made for old_parent and that Name. No parameter encryption:
  // what crosses the bus is outer-wrapped both ways.
  Result<tpm::Rewrapped> Rewrap(const Object& old_parent, const Object& new_parent,
                                const TPM2B_PRIVATE& duplicate, ByteView object_name,
                                const TPM2B_ENCRYPTED_SECRET& encrypted_seed);

  // Persist / un-persist with owner auth. EvictControl of a persistent handle removes it.
  Result<Object> Persist(const Object& transient, TPM2_HANDLE handle);
  Status EvictPersistent(Object persistent);

  // Transient object handles currently loaded in the TPM (for leak checks).
  Result<std::vector<TPM2_HANDLE>> TransientHandles();

 private:
  // The session to authorize the user role of `object`: ESYS_TR_PASSWORD, or a policy
  // session satisfying PolicySecret(TPM_RH_ENDORSEMENT) held in *holder.
  Result<ESYS_TR> UserAuth(const Object& object, Handle* holder);
  Result<Object> CreatePrimary(ESYS_TR hierarchy, const TPM2B_PUBLIC& tmpl);
  // The parameter-encryption session with `attributes` (TPMA_SESSION_DECRYPT: first
  // command parameter, _ENCRYPT: first response parameter) for the next command, or
  // ESYS_TR_NONE when parameter encryption is off.
  Result<ESYS_TR> EncSession(TPMA_SESSION attributes);
  Result<Handle> StartPolicySession(TPM2_SE type);
  // A policy session with PolicyDuplicationSelect(object, parent) run in it.
  Result<Handle> DuplicationSelectSession(const Object& object, const Object& parent);
  // TPM2_Duplicate of `object` to `parent` in `session` (PolicyDuplicationSelect done).
  Result<Duplicated> DuplicateIn(const Object& object, const Object& parent, const Handle& session,
                                 InnerWrap inner, const SecureBytes& given_inner_key);
  // TPM2_VerifySignature of `approval` (esys_duplicate.cc): the ticket PolicyAuthorize takes.
  Result<TPMT_TK_VERIFIED> VerifyApproval(const tpm::Approval& approval);
  Result<Object> WrapObject(ESYS_TR tr, Handle::Kind kind, const TPM2B_PUBLIC* known_public);
  Result<SecureBytes> RsaDecrypt(const Object& key, ByteView ciphertext,
                                 const TPMT_RSA_DECRYPT& scheme, ByteView label);

  std::shared_ptr<Context> context_;
  ESYS_CONTEXT* ctx_ = nullptr;  // context_'s, valid as long as context_ is
};

}  // namespace tpmma::esys
