// SPDX-License-Identifier: GPL-2.0-or-later
#include "client/lms/operations.h"

#include <openssl/ecdsa.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

#include <algorithm>
#include <cstring>
#include <utility>

#include "client/lms/custody.h"
#include "client/lms/mrk_handle.h"
#include "client/lms/mrk_policy.h"
#include "common/openssl.h"
#include "common/text.h"
#include "schema/package.h"
#include "tpm/escrow.h"
#include "tpm/marshal.h"
#include "tpm/public.h"

namespace tpmma::lms {

namespace {

constexpr size_t kMaxLabelChars = 256;
constexpr size_t kMaxSealBytes = 128;

const char* AlgName(esys::KeyAlg alg) {
  return alg == esys::KeyAlg::kRsa2048 ? "rsa2048" : "ecc-p256";
}

KeyType FromChildType(esys::ChildType t) {
  switch (t) {
    case esys::ChildType::kEccSign:
      return KeyType::kEccSign;
    case esys::ChildType::kRsaSign:
      return KeyType::kRsaSign;
    case esys::ChildType::kRsaDecrypt:
      return KeyType::kRsaDecrypt;
    case esys::ChildType::kSealed:
      return KeyType::kSealed;
    case esys::ChildType::kEccApp:
      return KeyType::kEccApp;
    case esys::ChildType::kRsaApp:
      return KeyType::kRsaApp;
  }
  return KeyType::kSealed;
}

Result<esys::KeyBlob> BlobOf(const KeyRecord& k) {
  esys::KeyBlob blob;
  TPMMA_ASSIGN_OR_RETURN(blob.public_area, tpm::Unmarshal<TPM2B_PUBLIC>(k.public_area));
  TPMMA_ASSIGN_OR_RETURN(blob.private_area, tpm::Unmarshal<TPM2B_PRIVATE>(k.private_area));
  return blob;
}

Result<KeyRecord> RecordOf(const esys::KeyBlob& blob, KeyType type, const std::string& label,
                           const std::string& parent, std::string origin, int64_t now) {
  KeyRecord k;
  TPMMA_ASSIGN_OR_RETURN(k.id, schema::NewUuid());
  k.label = label;
  k.type = type;
  k.parent = parent;
  k.migratable = true;
  k.origin = std::move(origin);
  k.created = now;
  TPMMA_ASSIGN_OR_RETURN(k.public_area, tpm::Marshal(blob.public_area));
  TPMMA_ASSIGN_OR_RETURN(k.private_area, tpm::Marshal(blob.private_area));
  TPMMA_ASSIGN_OR_RETURN(k.name, tpm::ComputeName(blob.public_area.publicArea));
  return k;
}

size_t Utf8Chars(std::string_view s) {
  return static_cast<size_t>(
      std::count_if(s.begin(), s.end(), [](char c) { return (c & 0xc0) != 0x80; }));
}

// SSH wire encoding (RFC 4251): string and mpint.
void SshString(Bytes& out, ByteView data) {
  const uint32_t n = static_cast<uint32_t>(data.size());
  for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<uint8_t>(n >> shift));
  out.insert(out.end(), data.begin(), data.end());
}
void SshMpint(Bytes& out, ByteView magnitude) {
  size_t i = 0;
  while (i < magnitude.size() && magnitude[i] == 0) ++i;
  Bytes v(magnitude.begin() + static_cast<std::ptrdiff_t>(i), magnitude.end());
  if (!v.empty() && (v[0] & 0x80) != 0) v.insert(v.begin(), 0);
  SshString(out, v);
}

}  // namespace

TPM2B_PUBLIC SealedInnerKeyTemplate() {
  TPM2B_PUBLIC p = esys::ChildTemplate(esys::ChildType::kSealed, false);
  p.publicArea.objectAttributes =
      TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT | TPMA_OBJECT_USERWITHAUTH | TPMA_OBJECT_NODA;
  return p;
}

Result<KeyType> ClassifyChild(const TPMT_PUBLIC& pub) {
  const TPMA_OBJECT a = pub.objectAttributes;
  const bool sign = (a & TPMA_OBJECT_SIGN_ENCRYPT) != 0;
  const bool decrypt = (a & TPMA_OBJECT_DECRYPT) != 0;
  const bool restricted = (a & TPMA_OBJECT_RESTRICTED) != 0;
  if (restricted) {
    return Error(Code::kUnsupported,
                 "restricted keys (storage keys, attestation keys) are not lms keys");
  }
  if (pub.type == TPM2_ALG_ECC && sign && !decrypt &&
      pub.parameters.eccDetail.scheme.scheme == TPM2_ALG_NULL) {
    if (pub.parameters.eccDetail.curveID != TPM2_ECC_NIST_P256) {
      return Error(Code::kUnsupported, "an ECC application key must be on curve P-256");
    }
    return KeyType::kEccApp;
  }
  if (pub.type == TPM2_ALG_RSA && sign && pub.parameters.rsaDetail.scheme.scheme == TPM2_ALG_NULL) {
    return KeyType::kRsaApp;  // decrypt too or not: ssh needs it, TLS does not
  }
  if (pub.type == TPM2_ALG_ECC && sign && !decrypt) {
    const auto& e = pub.parameters.eccDetail;
    if (e.curveID != TPM2_ECC_NIST_P256 || e.scheme.scheme != TPM2_ALG_ECDSA ||
        e.scheme.details.ecdsa.hashAlg != TPM2_ALG_SHA256) {
      return Error(Code::kUnsupported,
                   "an ECC signing key must be P-256 with the ECDSA-SHA256 scheme (tpm2_create "
                   "-G ecc256:ecdsa-sha256)");
    }
    return KeyType::kEccSign;
  }
  if (pub.type == TPM2_ALG_RSA && sign && !decrypt) {
    const auto& s = pub.parameters.rsaDetail.scheme;
    if (s.scheme != TPM2_ALG_RSASSA || s.details.rsassa.hashAlg != TPM2_ALG_SHA256) {
      return Error(Code::kUnsupported,
                   "an RSA signing key must have the RSASSA-SHA256 scheme (tpm2_create -G "
                   "rsa2048:rsassa-sha256)");
    }
    return KeyType::kRsaSign;
  }
  if (pub.type == TPM2_ALG_RSA && decrypt && !sign) {
    const auto& s = pub.parameters.rsaDetail.scheme;
    if (s.scheme != TPM2_ALG_OAEP || s.details.oaep.hashAlg != TPM2_ALG_SHA256) {
      return Error(Code::kUnsupported,
                   "an RSA decryption key must have the OAEP-SHA256 scheme (tpm2_create -G "
                   "rsa2048:oaep-sha256)");
    }
    return KeyType::kRsaDecrypt;
  }
  if (pub.type == TPM2_ALG_KEYEDHASH && !sign && !decrypt &&
      pub.parameters.keyedHashDetail.scheme.scheme == TPM2_ALG_NULL) {
    return KeyType::kSealed;
  }
  return Error(Code::kUnsupported,
               "not a kind of key lms keeps (ECDSA-P256 or RSASSA signing, RSA-OAEP decryption, "
               "sealed data, or an application key: ECC P-256 sign or RSA sign[|decrypt] with no "
               "scheme)");
}

Result<std::string> OpenSshPublicKey(const TPMT_PUBLIC& pub, std::string_view comment) {
  Bytes blob;
  std::string type;
  if (pub.type == TPM2_ALG_RSA) {
    type = "ssh-rsa";
    const uint32_t e =
        pub.parameters.rsaDetail.exponent == 0 ? 65537 : pub.parameters.rsaDetail.exponent;
    const uint8_t e_bytes[4] = {static_cast<uint8_t>(e >> 24), static_cast<uint8_t>(e >> 16),
                                static_cast<uint8_t>(e >> 8), static_cast<uint8_t>(e)};
    SshString(blob, View(type));
    SshMpint(blob, e_bytes);
    SshMpint(blob, ByteView(pub.unique.rsa.buffer, pub.unique.rsa.size));
  } else if (pub.type == TPM2_ALG_ECC && pub.parameters.eccDetail.curveID == TPM2_ECC_NIST_P256) {
    type = "ecdsa-sha2-nistp256";
    const auto& x = pub.unique.ecc.x;
    const auto& y = pub.unique.ecc.y;
    if (x.size > 32 || y.size > 32) return Error(Code::kMalformed, "bad P-256 point");
    Bytes point(65, 0);
    point[0] = 0x04;  // uncompressed
    std::memcpy(point.data() + 1 + (32 - x.size), x.buffer, x.size);
    std::memcpy(point.data() + 33 + (32 - y.size), y.buffer, y.size);
    SshString(blob, View(type));
    SshString(blob, View("nistp256"));
    SshString(blob, point);
  } else {
    return Error(Code::kUnsupported, "OpenSSH format is for RSA and P-256 keys");
  }
  std::string line = type + " " + Base64Encode(blob);
  if (!comment.empty()) line += " " + std::string(comment);
  return line + "\n";
}

Lms::Lms(KeyStore store, std::string tcti, esys::KeyAlg srk_alg, Env* env)
    : store_(std::move(store)), tcti_(std::move(tcti)), srk_alg_(srk_alg), env_(env) {}

Lms::~Lms() {
  srk_.reset();
  tpm_.reset();
}

Result<std::unique_ptr<Lms>> Lms::Open(const Options& options) {
  Env* env = options.env != nullptr ? options.env : Env::Default();
  if (options.store_dir.empty()) {
    return Error(Code::kInvalidArgument, "the key store directory is empty");
  }
  return std::unique_ptr<Lms>(
      new Lms(KeyStore(options.store_dir, env), options.tcti, options.srk_alg, env));
}

Status Lms::OpenTpm(bool create_srk, const StoreState* expected) {
  if (tpm_) return Status::Ok();
  TPMMA_ASSIGN_OR_RETURN(std::unique_ptr<esys::Tpm> tpm, esys::Tpm::Open(tcti_));
  esys::Object srk;
  if (create_srk) {
    TPMMA_ASSIGN_OR_RETURN(srk, tpm->GetOrCreateSrk(srk_alg_));
  } else {
    const uint32_t handle = expected->srk_handle;
    TPMMA_ASSIGN_OR_RETURN(bool exists, tpm->HandleExists(handle));
    if (!exists) {
      return Status(Code::kNotFound,
                    "this TPM has no SRK at " + Hex32(handle) +
                        ": it was cleared or is not the TPM the key store was made on; its keys "
                        "must be restored from a backup (lms restore)");
    }
    TPMMA_ASSIGN_OR_RETURN(srk, tpm->FromPersistent(handle));
    TPMMA_ASSIGN_OR_RETURN(esys::PublicInfo info, tpm->ReadPublic(srk));
    if (info.name != expected->srk_name) {
      return Status(Code::kConflict,
                    "the SRK at " + Hex32(handle) +
                        " is not the one the key store was made under (the TPM was cleared, or "
                        "this is another TPM); its keys must be restored from a backup (lms "
                        "restore)");
    }
  }
  TPMMA_RETURN_IF_ERROR(tpm->EnableParameterEncryption(srk));
  tpm_ = std::move(tpm);
  srk_ = std::move(srk);
  srk_verified_ = true;
  return Status::Ok();
}

Result<esys::Tpm*> Lms::tpm() {
  if (!tpm_) {
    TPMMA_ASSIGN_OR_RETURN(StoreState state, store_.ReadState());
    TPMMA_RETURN_IF_ERROR(OpenTpm(false, &state));
  }
  if (!srk_verified_) {
    return Error(Code::kConflict,
                 "the TPM's SRK is not the one the key store was made under (the TPM was "
                 "cleared, or this is another TPM); its keys must be restored from a backup "
                 "(lms restore)");
  }
  return tpm_.get();
}

Result<esys::Tpm*> Lms::OpenForMa() {
  if (tpm_) return tpm_.get();
  std::optional<StoreState> state;
  if (store_.Initialized()) {
    TPMMA_ASSIGN_OR_RETURN(state, store_.ReadState());
  }
  TPMMA_ASSIGN_OR_RETURN(std::unique_ptr<esys::Tpm> tpm, esys::Tpm::Open(tcti_));
  esys::Object srk;
  bool verified = false;
  if (state) {
    TPMMA_ASSIGN_OR_RETURN(bool exists, tpm->HandleExists(state->srk_handle));
    if (exists) {
      TPMMA_ASSIGN_OR_RETURN(esys::Object persistent, tpm->FromPersistent(state->srk_handle));
      TPMMA_ASSIGN_OR_RETURN(esys::PublicInfo info, tpm->ReadPublic(persistent));
      if (info.name == state->srk_name) {
        srk = std::move(persistent);
        verified = true;
      }
    }
  }
  if (!verified) {
    // The store's algorithm if it has one (a restore after a clear), else --srk-alg.
    const esys::KeyAlg alg =
        state ? (state->srk_alg == AlgName(esys::KeyAlg::kEccP256) ? esys::KeyAlg::kEccP256
                                                                   : esys::KeyAlg::kRsa2048)
              : srk_alg_;
    Progress("using the storage root key at " +
             Hex32(alg == esys::KeyAlg::kEccP256 ? esys::kSrkEccHandle : esys::kSrkHandle) + " (" +
             AlgName(alg) + ", made now if the TPM has none)");
    TPMMA_ASSIGN_OR_RETURN(srk, tpm->GetOrCreateSrk(alg));
  }
  TPMMA_RETURN_IF_ERROR(tpm->EnableParameterEncryption(srk));
  tpm_ = std::move(tpm);
  srk_ = std::move(srk);
  srk_verified_ = verified;
  return tpm_.get();
}

Result<const esys::Object*> Lms::srk() {
  TPMMA_RETURN_IF_ERROR(tpm());
  return &srk_;
}

Result<esys::Object> Lms::LoadKey(const KeyRecord& key, const esys::Object* mrk) {
  TPMMA_ASSIGN_OR_RETURN(esys::Tpm * tpm, this->tpm());
  TPMMA_ASSIGN_OR_RETURN(esys::KeyBlob blob, BlobOf(key));
  const esys::Object* parent = key.type == KeyType::kMrk ? &srk_ : mrk;
  if (parent == nullptr || !*parent) {
    return Error(Code::kInternal, "LoadKey needs the loaded MRK for a child key");
  }
  auto loaded = tpm->Load(*parent, blob);
  if (!loaded) {
    return Error(loaded.error().WithContext("loading key " + key.id + " ('" + key.label + "')"));
  }
  return std::move(*loaded);
}

Result<esys::Object> Lms::LoadMrk() {
  TPMMA_ASSIGN_OR_RETURN(StoreState state, store_.ReadState());
  TPMMA_ASSIGN_OR_RETURN(KeyRecord mrk, store_.GetKey(state.mrk_id));
  if (mrk.type != KeyType::kMrk) {
    return Error(Code::kCorruption, "store.json names key " + mrk.id + " as the MRK, but it is a " +
                                        std::string(KeyTypeName(mrk.type)) + " key");
  }
  return LoadKey(mrk, nullptr);
}

Result<SecureBytes> Lms::UnsealInnerKey() {
  TPMMA_ASSIGN_OR_RETURN(StoreState state, store_.ReadState());
  TPMMA_ASSIGN_OR_RETURN(esys::Tpm * tpm, this->tpm());
  esys::KeyBlob blob;
  TPMMA_ASSIGN_OR_RETURN(blob.public_area,
                         tpm::Unmarshal<TPM2B_PUBLIC>(state.custody.sealed_public));
  TPMMA_ASSIGN_OR_RETURN(blob.private_area,
                         tpm::Unmarshal<TPM2B_PRIVATE>(state.custody.sealed_private));
  TPMMA_ASSIGN_OR_RETURN(esys::Object sealed, tpm->Load(srk_, blob));
  return tpm->Unseal(sealed);
}

namespace {

// init: the MA key (and escrow key) checked first: nothing changes on disk or in the TPM for
// a bad file. Returns the MA key's Name.
Result<Bytes> CheckInitKeys(const InitOptions& o) {
  auto ma_public = tpm::Unmarshal<TPM2B_PUBLIC>(o.ma_key_public);
  if (!ma_public) {
    return Error(Code::kInvalidArgument,
                 "the MA key public file is not a TPM2B_PUBLIC (as GetMAKey returns it): " +
                     ma_public.error().message());
  }
  TPMMA_RETURN_IF_ERROR(tpm::CheckStorageParent(ma_public->publicArea).WithContext("MA key"));
  TPMMA_ASSIGN_OR_RETURN(Bytes ma_name, tpm::ComputeName(ma_public->publicArea));
  if (o.custody == CustodyMode::kEscrow) {
    auto escrow = tpm::Unmarshal<TPM2B_PUBLIC>(o.escrow_public);
    if (!escrow) {
      return Error(Code::kInvalidArgument,
                   "the MA escrow key is not a TPM2B_PUBLIC: " + escrow.error().message());
    }
    TPMMA_RETURN_IF_ERROR(tpm::CheckEscrowKey(escrow->publicArea).WithContext("MA escrow key"));
    if (o.escrow_key_id.empty()) {
      return Error(Code::kInvalidArgument, "escrow custody needs the escrow key's id");
    }
  }
  return ma_name;
}

// init on an initialised store: refused unless --force, and while keys were never backed
// up unless --discard-unbacked-keys. A previous store, or the keys of an init that did not
// finish, are set aside (never deleted): where to, if anything was.
// The Name of the MRK of an initialised store (empty: none), whose persistent handle a
// re-initialisation may take over.
Bytes PreviousMrkName(const KeyStore& store) {
  if (!store.Initialized()) return {};
  auto state = store.ReadState();
  if (!state || state->mrk_handle == 0) return {};
  auto mrk = store.GetKey(state->mrk_id);
  return mrk ? mrk->name : Bytes();
}

Result<std::optional<std::string>> SetAsidePrevious(KeyStore& store, const InitOptions& o) {
  TPMMA_RETURN_IF_ERROR(store.CreateLayout());
  TPMMA_RETURN_IF_ERROR(store.Lock());
  TPMMA_ASSIGN_OR_RETURN(std::vector<KeyRecord> existing, store.ListKeys());
  if (store.Initialized()) {
    TPMMA_ASSIGN_OR_RETURN(StoreState old, store.ReadState());
    if (!o.force) {
      return Error(Code::kAlreadyExists,
                   "the key store " + store.dir() + " is already initialised (MRK " + old.mrk_id +
                       ", keys: " + std::to_string(existing.size()) +
                       "); `lms init --force` starts a new one and sets the old one aside");
    }
    size_t unbacked = 0;
    bool mrk_unbacked = false;
    for (const KeyRecord& k : existing) {
      if (!k.backed_up_at) {
        ++unbacked;
        mrk_unbacked |= k.type == KeyType::kMrk;
      }
    }
    if (unbacked > 0 && !o.discard_unbacked) {
      return Error(Code::kConflict,
                   "refusing to re-initialise: " + std::to_string(unbacked) + " key(s)" +
                       (mrk_unbacked ? ", the MRK among them," : "") +
                       " were never backed up, and a new MRK would leave them unrecoverable after "
                       "a TPM loss; back them up first (lms backup), or add "
                       "--discard-unbacked-keys to set them aside anyway");
    }
  }
  if (store.Initialized() || !existing.empty()) {
    // A previous store, or the keys of an init that did not finish: set aside, never deleted.
    TPMMA_ASSIGN_OR_RETURN(std::string retired, store.Retire());
    return retired;
  }
  return std::nullopt;
}

}  // namespace

Result<InitResult> Lms::Init(const InitOptions& o) {
  InitResult out;
  TPMMA_ASSIGN_OR_RETURN(Bytes ma_name, CheckInitKeys(o));
  TPMMA_RETURN_IF_ERROR(OpenTpm(/*create_srk=*/true, nullptr));
  // The handle is checked before anything is set aside; the previous store's MRK may go.
  const Bytes previous_mrk = PreviousMrkName(store_);
  if (o.mrk_handle != 0) {
    TPMMA_RETURN_IF_ERROR(CheckMrkHandleFree(*tpm_, o.mrk_handle, previous_mrk));
  }
  TPMMA_ASSIGN_OR_RETURN(out.retired_to, SetAsidePrevious(store_, o));
  TPMMA_ASSIGN_OR_RETURN(esys::PublicInfo srk_info, tpm_->ReadPublic(srk_));
  TPMMA_ASSIGN_OR_RETURN(esys::KeyBlob mrk_blob, CreateMrkFor(*tpm_, srk_, o, ma_name));
  if (o.mrk_handle != 0) {
    if (!previous_mrk.empty()) TPMMA_RETURN_IF_ERROR(EvictMrk(*tpm_, o.mrk_handle, previous_mrk));
    TPMMA_ASSIGN_OR_RETURN(esys::Object mrk, tpm_->Load(srk_, mrk_blob));
    TPMMA_ASSIGN_OR_RETURN(Bytes mrk_name, tpm::ComputeName(mrk_blob.public_area.publicArea));
    TPMMA_RETURN_IF_ERROR(PersistMrk(*tpm_, mrk, mrk_name, o.mrk_handle));
  }
  NewCustody custody;
  if (o.custody == CustodyMode::kEscrow) {
    TPMMA_ASSIGN_OR_RETURN(custody.inner_key, NewEscrowInnerKey());
    custody.custody.mode = CustodyMode::kEscrow;
    custody.custody.escrow_key_id = o.escrow_key_id;
    custody.custody.escrow_public = o.escrow_public;
  } else {
    TPMMA_ASSIGN_OR_RETURN(custody, MakeRecoveryCustody());
  }
  TPMMA_ASSIGN_OR_RETURN(esys::KeyBlob sealed,
                         tpm_->Create(srk_, SealedInnerKeyTemplate(), custody.inner_key));

  const int64_t now = env_->NowUnixSeconds();
  TPMMA_ASSIGN_OR_RETURN(out.mrk, RecordOf(mrk_blob, KeyType::kMrk, "mrk", "srk", "lms", now));
  StoreState& s = out.state;
  s.initialized_at = now;
  s.srk_handle = srk_alg_ == esys::KeyAlg::kEccP256 ? esys::kSrkEccHandle : esys::kSrkHandle;
  s.srk_alg = AlgName(srk_alg_);
  s.srk_name = srk_info.name;
  s.mrk_id = out.mrk.id;
  s.mrk_handle = o.mrk_handle;
  s.ma_key_public = o.ma_key_public;
  s.ma_key_name = ma_name;
  s.policy_key_public = o.policy_key_public;
  s.ma_key_approval = o.ma_key_approval;
  s.custody = custody.custody;
  TPMMA_ASSIGN_OR_RETURN(s.custody.sealed_public, tpm::Marshal(sealed.public_area));
  TPMMA_ASSIGN_OR_RETURN(s.custody.sealed_private, tpm::Marshal(sealed.private_area));
  // The key first, store.json last: store.json is what makes the store initialised.
  TPMMA_RETURN_IF_ERROR(store_.PutKey(out.mrk));
  TPMMA_RETURN_IF_ERROR(store_.WriteState(s));
  out.recovery_code = std::move(custody.recovery_code);
  return out;
}

Status Lms::CheckNewLabel(const std::string& label) {
  if (label.empty() || Utf8Chars(label) > kMaxLabelChars) {
    return Status(Code::kInvalidArgument, "a label has 1 to 256 characters");
  }
  for (unsigned char c : label) {
    if (c < 0x20 || c == 0x7f) {
      return Status(Code::kInvalidArgument, "a label cannot hold control characters");
    }
  }
  if (schema::IsCanonicalUuid(label)) {
    return Status(Code::kInvalidArgument, "a label cannot look like a key id (a UUID)");
  }
  TPMMA_ASSIGN_OR_RETURN(std::vector<KeyRecord> keys, store_.ListKeys());
  for (const KeyRecord& k : keys) {
    if (k.label == label) {
      return Status(Code::kAlreadyExists,
                    "there is already a key labelled '" + label + "' (" + k.id + ")");
    }
  }
  return Status::Ok();
}

Result<KeyRecord> Lms::Keygen(esys::ChildType type, const std::string& label,
                              const SecureBytes& seal_data) {
  if (type == esys::ChildType::kSealed) {
    if (seal_data.empty() || seal_data.size() > kMaxSealBytes) {
      return Error(Code::kInvalidArgument,
                   "sealed data must be 1 to 128 bytes, got " + std::to_string(seal_data.size()));
    }
  } else if (!seal_data.empty()) {
    return Error(Code::kInvalidArgument, "only sealed keys take data");
  }
  TPMMA_ASSIGN_OR_RETURN(StoreState state, store_.ReadState());
  TPMMA_RETURN_IF_ERROR(store_.Lock());
  TPMMA_RETURN_IF_ERROR(CheckNewLabel(label));
  TPMMA_ASSIGN_OR_RETURN(esys::Object mrk, LoadMrk());
  TPMMA_ASSIGN_OR_RETURN(esys::KeyBlob blob, tpm_->CreateChild(mrk, type, seal_data));
  TPMMA_ASSIGN_OR_RETURN(KeyRecord k, RecordOf(blob, FromChildType(type), label, state.mrk_id,
                                               "lms", env_->NowUnixSeconds()));
  TPMMA_RETURN_IF_ERROR(store_.PutKey(k));
  return k;
}

Result<KeyRecord> Lms::ImportTpm2(ByteView public_file, ByteView private_file,
                                  const std::string& label) {
  esys::KeyBlob blob;
  auto pub = tpm::Unmarshal<TPM2B_PUBLIC>(public_file);
  if (!pub) {
    return Error(
        Code::kInvalidArgument,
        "the public file is not a TPM2B_PUBLIC (tpm2_create -u): " + pub.error().message());
  }
  auto priv = tpm::Unmarshal<TPM2B_PRIVATE>(private_file);
  if (!priv) {
    return Error(
        Code::kInvalidArgument,
        "the private file is not a TPM2B_PRIVATE (tpm2_create -r): " + priv.error().message());
  }
  blob.public_area = *pub;
  blob.private_area = *priv;
  const TPMT_PUBLIC& p = blob.public_area.publicArea;
  TPMMA_ASSIGN_OR_RETURN(KeyType type, ClassifyChild(p));
  if ((p.objectAttributes & TPMA_OBJECT_FIXEDTPM) != 0 ||
      (p.objectAttributes & TPMA_OBJECT_FIXEDPARENT) == 0) {
    return Error(Code::kUnsupported,
                 "a key under the MRK must have fixedParent set and fixedTPM clear (it travels "
                 "with the MRK); this one has attributes the MRK forbids");
  }
  if ((p.objectAttributes & TPMA_OBJECT_ENCRYPTEDDUPLICATION) == 0) {
    return Error(Code::kUnsupported,
                 "a key under the MRK must have encryptedDuplication set, as the MRK has; this "
                 "one has attributes the MRK forbids (it was not made under this MRK)");
  }
  if ((p.objectAttributes & TPMA_OBJECT_USERWITHAUTH) == 0 || p.authPolicy.size != 0) {
    return Error(Code::kUnsupported,
                 "lms uses keys with userWithAuth set, no policy and an empty auth value");
  }
  TPMMA_ASSIGN_OR_RETURN(StoreState state, store_.ReadState());
  TPMMA_RETURN_IF_ERROR(store_.Lock());
  TPMMA_RETURN_IF_ERROR(CheckNewLabel(label));
  TPMMA_ASSIGN_OR_RETURN(Bytes name, tpm::ComputeName(p));
  TPMMA_ASSIGN_OR_RETURN(std::vector<KeyRecord> keys, store_.ListKeys());
  for (const KeyRecord& k : keys) {
    if (k.name == name) {
      return Error(Code::kAlreadyExists,
                   "this key is already registered as " + k.id + " ('" + k.label + "')");
    }
  }
  // Loading it proves it was made under this MRK (the private blob's integrity is keyed by
  // the parent).
  TPMMA_ASSIGN_OR_RETURN(esys::Object mrk, LoadMrk());
  auto loaded = tpm_->Load(mrk, blob);
  if (!loaded) {
    return Error(Code::kInvalidArgument,
                 "the key does not load under this store's MRK (was it created with tpm2_create "
                 "-C <the MRK>?): " +
                     loaded.error().message());
  }
  loaded->reset();
  TPMMA_ASSIGN_OR_RETURN(
      KeyRecord k, RecordOf(blob, type, label, state.mrk_id, "tpm2-tools", env_->NowUnixSeconds()));
  TPMMA_RETURN_IF_ERROR(store_.PutKey(k));
  return k;
}

Result<std::vector<KeyRecord>> Lms::Keys() {
  TPMMA_RETURN_IF_ERROR(store_.ReadState());
  return store_.ListKeys();
}

Result<KeyRecord> Lms::Find(std::string_view id_or_label) {
  TPMMA_RETURN_IF_ERROR(store_.ReadState());
  return store_.FindKey(id_or_label);
}

Result<KeyRecord> Lms::FindTyped(std::string_view id_or_label, std::initializer_list<KeyType> types,
                                 std::string_view operation) {
  TPMMA_ASSIGN_OR_RETURN(KeyRecord k, Find(id_or_label));
  if (std::find(types.begin(), types.end(), k.type) == types.end()) {
    std::string want;
    for (KeyType t : types) {
      if (!want.empty()) want += " or ";
      want += KeyTypeName(t);
    }
    return Error(Code::kInvalidArgument, "key " + k.id + " ('" + k.label + "') has type " +
                                             std::string(KeyTypeName(k.type)) + "; " +
                                             std::string(operation) + " needs a key of type " +
                                             want);
  }
  return k;
}

Result<std::string> Lms::PublicKey(std::string_view id_or_label, PublicFormat format) {
  TPMMA_ASSIGN_OR_RETURN(
      KeyRecord k,
      FindTyped(id_or_label,
                format == PublicFormat::kOpenSsh
                    ? std::initializer_list<KeyType>{KeyType::kEccSign, KeyType::kRsaSign,
                                                     KeyType::kEccApp, KeyType::kRsaApp}
                    : std::initializer_list<KeyType>{KeyType::kEccSign, KeyType::kRsaSign,
                                                     KeyType::kRsaDecrypt, KeyType::kMrk,
                                                     KeyType::kEccApp, KeyType::kRsaApp},
                format == PublicFormat::kOpenSsh ? "an OpenSSH public key" : "a public key"));
  TPMMA_ASSIGN_OR_RETURN(TPM2B_PUBLIC pub, tpm::Unmarshal<TPM2B_PUBLIC>(k.public_area));
  if (format == PublicFormat::kOpenSsh) return OpenSshPublicKey(pub.publicArea, k.label);
  TPMMA_ASSIGN_OR_RETURN(EvpPkeyPtr key, tpm::PublicToEvp(pub.publicArea));
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_PUBKEY(bio.get(), key.get()) != 1) {
    return Error(OpensslError("PEM_write_bio_PUBKEY"));
  }
  char* data = nullptr;
  const long len = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<size_t>(len));
}

Result<Bytes> Lms::Sign(std::string_view id_or_label, ByteView sha256) {
  TPMMA_ASSIGN_OR_RETURN(KeyRecord k, FindTyped(id_or_label,
                                                {KeyType::kEccSign, KeyType::kRsaSign,
                                                 KeyType::kEccApp, KeyType::kRsaApp},
                                                "sign"));
  TPMMA_ASSIGN_OR_RETURN(esys::Object mrk, LoadMrk());
  TPMMA_ASSIGN_OR_RETURN(esys::Object key, LoadKey(k, &mrk));
  mrk.reset();
  TPMMA_ASSIGN_OR_RETURN(TPMT_SIGNATURE sig, tpm_->Sign(key, sha256));
  if (sig.sigAlg == TPM2_ALG_RSASSA) {
    const TPM2B_PUBLIC_KEY_RSA& s = sig.signature.rsassa.sig;
    return Bytes(s.buffer, s.buffer + s.size);
  }
  const TPMS_SIGNATURE_ECC& ecc = sig.signature.ecdsa;
  BignumPtr r(BN_bin2bn(ecc.signatureR.buffer, ecc.signatureR.size, nullptr));
  BignumPtr s(BN_bin2bn(ecc.signatureS.buffer, ecc.signatureS.size, nullptr));
  std::unique_ptr<ECDSA_SIG, OpensslDeleter<ECDSA_SIG, ECDSA_SIG_free>> der(ECDSA_SIG_new());
  if (!r || !s || !der || ECDSA_SIG_set0(der.get(), r.get(), s.get()) != 1) {
    return Error(OpensslError("ECDSA_SIG_set0"));
  }
  r.release();  // owned by `der`
  s.release();
  const int len = i2d_ECDSA_SIG(der.get(), nullptr);
  if (len <= 0) return Error(OpensslError("i2d_ECDSA_SIG"));
  Bytes out(static_cast<size_t>(len));
  unsigned char* p = out.data();
  i2d_ECDSA_SIG(der.get(), &p);
  return out;
}

Result<Bytes> Lms::Encrypt(std::string_view id_or_label, ByteView plaintext) {
  TPMMA_ASSIGN_OR_RETURN(
      KeyRecord k, FindTyped(id_or_label, {KeyType::kRsaDecrypt, KeyType::kRsaApp}, "encrypt"));
  TPMMA_ASSIGN_OR_RETURN(TPM2B_PUBLIC pub, tpm::Unmarshal<TPM2B_PUBLIC>(k.public_area));
  TPMMA_ASSIGN_OR_RETURN(EvpPkeyPtr key, tpm::PublicToEvp(pub.publicArea));
  // OAEP with SHA-256: the key's scheme; the TPM's RSA_Decrypt with an empty label.
  const size_t max = static_cast<size_t>(EVP_PKEY_get_size(key.get())) - 2 * 32 - 2;
  if (plaintext.empty() || plaintext.size() > max) {
    return Error(Code::kInvalidArgument, "RSA-OAEP with this key encrypts 1 to " +
                                             std::to_string(max) + " bytes, got " +
                                             std::to_string(plaintext.size()));
  }
  EvpPkeyCtxPtr ctx(EVP_PKEY_CTX_new_from_pkey(nullptr, key.get(), nullptr));
  size_t len = 0;
  if (!ctx || EVP_PKEY_encrypt_init(ctx.get()) != 1 ||
      EVP_PKEY_CTX_set_rsa_padding(ctx.get(), RSA_PKCS1_OAEP_PADDING) != 1 ||
      EVP_PKEY_CTX_set_rsa_oaep_md(ctx.get(), EVP_sha256()) != 1 ||
      EVP_PKEY_CTX_set_rsa_mgf1_md(ctx.get(), EVP_sha256()) != 1 ||
      EVP_PKEY_encrypt(ctx.get(), nullptr, &len, plaintext.data(), plaintext.size()) != 1) {
    return Error(OpensslError("EVP_PKEY_encrypt (RSA-OAEP-SHA256)"));
  }
  Bytes out(len);
  if (EVP_PKEY_encrypt(ctx.get(), out.data(), &len, plaintext.data(), plaintext.size()) != 1) {
    return Error(OpensslError("EVP_PKEY_encrypt (RSA-OAEP-SHA256)"));
  }
  out.resize(len);
  return out;
}

Result<SecureBytes> Lms::Decrypt(std::string_view id_or_label, ByteView ciphertext) {
  TPMMA_ASSIGN_OR_RETURN(
      KeyRecord k, FindTyped(id_or_label, {KeyType::kRsaDecrypt, KeyType::kRsaApp}, "decrypt"));
  TPMMA_ASSIGN_OR_RETURN(esys::Object mrk, LoadMrk());
  TPMMA_ASSIGN_OR_RETURN(esys::Object key, LoadKey(k, &mrk));
  mrk.reset();
  // An application key has no scheme of its own: OAEP-SHA256, what Encrypt does.
  if (k.type == KeyType::kRsaApp) return tpm_->RsaDecryptOaep(key, ciphertext, {});
  return tpm_->RsaDecrypt(key, ciphertext);
}

Result<SecureBytes> Lms::Unseal(std::string_view id_or_label) {
  TPMMA_ASSIGN_OR_RETURN(KeyRecord k, FindTyped(id_or_label, {KeyType::kSealed}, "unseal"));
  TPMMA_ASSIGN_OR_RETURN(esys::Object mrk, LoadMrk());
  TPMMA_ASSIGN_OR_RETURN(esys::Object key, LoadKey(k, &mrk));
  mrk.reset();
  return tpm_->Unseal(key);
}

}  // namespace tpmma::lms
