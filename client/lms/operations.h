// SPDX-License-Identifier: GPL-2.0-or-later
// What lms does with the key store and the TPM, independent of the command line: the CLI
// (cli.h) and tests call these. One Lms per command run; not thread-safe.
//
//   TPMMA_ASSIGN_OR_RETURN(auto lms, lms::Lms::Open({.store_dir = dir, .tcti = tcti,
//                                                     .env = Env::Default()}));
//   TPMMA_ASSIGN_OR_RETURN(lms::KeyRecord k, lms->Keygen(esys::ChildType::kEccSign, "vpn", {}));
//   TPMMA_ASSIGN_OR_RETURN(Bytes sig, lms->Sign(k.id, sha256));
//
// The TPM is opened on first use. Every command but init then checks that the persistent
// SRK is the one the store was made under (a cleared TPM has a new SRK: its keys are gone
// until `lms restore`), and turns on parameter encryption salted by it.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "client/lms/keystore.h"
#include "common/bytes.h"
#include "common/env.h"
#include "common/status.h"
#include "tpm/esys/esys.h"
#include "tpm/esys/templates.h"

namespace tpmma::lms {

struct Options {
  std::string store_dir = kDefaultStoreDir;
  std::string tcti;  // empty: $TPM2TOOLS_TCTI, else $TCTI, else device:/dev/tpmrm0
  // The SRK to make when the TPM needs one (init, or a restore after a clear): RSA-2048 at
  // 0x81000001 or ECC P-256 at 0x81000002. An initialised store uses the one it records.
  esys::KeyAlg srk_alg = esys::KeyAlg::kRsa2048;
  Env* env = nullptr;  // nullptr: Env::Default()
};

struct InitOptions {
  Bytes ma_key_public;  // marshalled TPM2B_PUBLIC of the MA storage key (as GetMAKey returns)
  // Both set: an MRK that follows the MA (PolicyAuthorize by this policy-signing key, whose
  // approval of ma_key this is; GetMAKey's PolicySigningKey and Approval). Both empty: an
  // MRK bound to ma_key for good (PolicyDuplicationSelect).
  Bytes policy_key_public;
  Bytes ma_key_approval;
  esys::KeyAlg mrk_alg = esys::KeyAlg::kRsa2048;
  // Where the MRK is also made persistent for applications' key files (0: nowhere). Refused,
  // before anything changes, when another object holds it.
  uint32_t mrk_handle = kDefaultMrkHandle;
  // Custody of the inner wrapper key (docs/protocol.md, Inner-key custody). kEscrow needs the MA's
  // escrow key (GetMAKey, checked: remote.h FetchEscrowKey) and shows no recovery code.
  CustodyMode custody = CustodyMode::kRecoveryCode;
  std::string escrow_key_id;
  Bytes escrow_public;  // marshalled TPM2B_PUBLIC
  // Re-initialise an initialised store: the old state moves to retired/. Refused while any
  // key (the MRK included) has never been backed up, unless discard_unbacked is also set.
  bool force = false;
  bool discard_unbacked = false;
};

struct InitResult {
  StoreState state;
  KeyRecord mrk;
  SecureString recovery_code;             // show it once; it is stored nowhere (empty: escrow)
  std::optional<std::string> retired_to;  // where the previous store went
};

enum class PublicFormat { kPem, kOpenSsh };

class Lms {
 public:
  static Result<std::unique_ptr<Lms>> Open(const Options& options);
  ~Lms();

  KeyStore& store() { return store_; }
  Env* env() const { return env_; }
  // The TCTI as given (empty: the environment's, see esys::Tpm::ResolveTcti).
  const std::string& tcti() const { return tcti_; }
  // Closes the TPM connection (reopened on next use), so that another program can have the
  // TPM: swtpm and /dev/tpm0 serve one connection at a time.
  void CloseTpm() {
    srk_ = esys::Object();
    srk_verified_ = false;
    tpm_.reset();
  }

  // ---- local commands
  Result<InitResult> Init(const InitOptions& options);
  // `label`: 1..256 characters, no control characters, not a UUID, unique in the store.
  // `seal_data` only for kSealed (1..128 bytes).
  Result<KeyRecord> Keygen(esys::ChildType type, const std::string& label,
                           const SecureBytes& seal_data);
  // Registers a key made outside lms under this store's MRK (tpm2_create -C <mrk> ...):
  // TPM2B_PUBLIC and TPM2B_PRIVATE as tpm2_create -u/-r write them. The key must load
  // under the MRK and be one of the kinds lms uses (ECDSA-P256-SHA256 or RSASSA-SHA256
  // signing, RSA-OAEP-SHA256 decryption, or sealed data) with an empty auth value.
  Result<KeyRecord> ImportTpm2(ByteView public_file, ByteView private_file,
                               const std::string& label);
  Result<std::vector<KeyRecord>> Keys();
  Result<KeyRecord> Find(std::string_view id_or_label);
  Result<std::string> PublicKey(std::string_view id_or_label, PublicFormat format);
  // Signs a SHA-256 digest: RSASSA-PKCS1-v1_5 bytes, or a DER ECDSA-Sig-Value; both as
  // `openssl dgst -sha256 -verify` expects.
  Result<Bytes> Sign(std::string_view id_or_label, ByteView sha256);
  // RSA-OAEP (SHA-256, MGF1-SHA-256, empty label) in software with the public key: what
  // the TPM key decrypts.
  Result<Bytes> Encrypt(std::string_view id_or_label, ByteView plaintext);
  Result<SecureBytes> Decrypt(std::string_view id_or_label, ByteView ciphertext);
  Result<SecureBytes> Unseal(std::string_view id_or_label);

  // ---- building blocks for backup/restore
  Result<StoreState> State() { return store_.ReadState(); }
  // The TPM with the store's SRK checked and parameter encryption on.
  Result<esys::Tpm*> tpm();
  Result<const esys::Object*> srk();
  Result<esys::Object> LoadMrk();
  // Loads `key` under `mrk` (children) or the SRK (the MRK itself).
  Result<esys::Object> LoadKey(const KeyRecord& key, const esys::Object* mrk);
  // The inner wrapper key, unsealed from this TPM (either custody; for backups that must
  // run unattended).
  Result<SecureBytes> UnsealInnerKey();

  // ---- for the MA commands (remote.h)
  // Opens the TPM for talking to the MA and for restoring: the store's SRK if it is still
  // there, else the storage key at 0x81000001 (made if absent: after a TPM clear a restore
  // needs one). Works on an uninitialised store too. Afterwards tpm() still refuses a TPM
  // whose SRK is not the store's, so local commands never use a foreign SRK.
  Result<esys::Tpm*> OpenForMa();
  // After OpenForMa: whether the SRK in use is the one store.json names.
  bool srk_matches_store() const { return srk_verified_; }
  const esys::Object& current_srk() const { return srk_; }
  // Progress lines for slow steps ("authenticating to ..."); default: none.
  void set_progress(std::function<void(std::string_view)> progress) {
    progress_ = std::move(progress);
  }
  void Progress(std::string_view line) const {
    if (progress_) progress_(line);
  }

 private:
  Lms(KeyStore store, std::string tcti, esys::KeyAlg srk_alg, Env* env);
  Status OpenTpm(bool create_srk, const StoreState* expected);
  Result<KeyRecord> FindTyped(std::string_view id_or_label, std::initializer_list<KeyType> types,
                              std::string_view operation);
  Status CheckNewLabel(const std::string& label);

  KeyStore store_;
  std::string tcti_;
  esys::KeyAlg srk_alg_;
  Env* env_ = nullptr;
  // Declared in this order so that the SRK handle goes before the Tpm it belongs to.
  std::unique_ptr<esys::Tpm> tpm_;
  esys::Object srk_;
  bool srk_verified_ = false;  // srk_ is the SRK store.json names
  std::function<void(std::string_view)> progress_;
};

// The sealed-data object that keeps the inner wrapper key under the SRK: fixedTPM and
// fixedParent, so it opens in this TPM only and is gone with the SRK.
TPM2B_PUBLIC SealedInnerKeyTemplate();

// The OpenSSH public-key line ("ecdsa-sha2-nistp256 AAAA... comment" / "ssh-rsa ...").
Result<std::string> OpenSshPublicKey(const TPMT_PUBLIC& pub, std::string_view comment);

// Which kind of lms key a TPM public area is, or kUnsupported saying why it is none.
Result<KeyType> ClassifyChild(const TPMT_PUBLIC& pub);

}  // namespace tpmma::lms
