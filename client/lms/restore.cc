// SPDX-License-Identifier: GPL-2.0-or-later
// lms restore (restore.h), as named steps: authenticate → choose the package → download it
// re-wrapped for this TPM's SRK → verify what was downloaded → resolve the inner key (and
// say where it came from) → import the MRK and load every child → write the store last:
// the one the backup came from, or a new one (--new-store).
#include "client/lms/restore.h"

#include <algorithm>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "client/lms/custody.h"
#include "client/lms/ma_connection.h"
#include "client/lms/mrk_policy.h"
#include "client/lms/remote.h"
#include "client/lms/restore_apps.h"
#include "client/ma/platform.h"
#include "common/openssl.h"
#include "schema/package.h"
#include "schema/package_xml.h"
#include "tpm/escrow.h"
#include "tpm/marshal.h"
#include "tpm/public.h"

namespace tpmma::lms {

std::string_view InnerKeySourceName(InnerKeySource source) {
  switch (source) {
    case InnerKeySource::kSealed:
      return "sealed";
    case InnerKeySource::kRecoveryCode:
      return "recovery-code";
    case InnerKeySource::kEscrow:
      return "escrow";
  }
  return "sealed";
}

std::string_view KeyOutcomeName(KeyOutcome outcome) {
  return outcome == KeyOutcome::kUpdated ? "updated" : "added";
}

namespace {

// What every step of one restore works with.
struct RestoreRun {
  Lms& lms;
  const MaSettings& settings;
  const RestoreOptions& options;
  std::optional<ApprovalNeeded>* approval_needed;
  MaConnection* connection = nullptr;  // once authenticated
  std::string package_id;              // once chosen
};

// The restore failed for want of a helpdesk approval: the caller learns the facts.
std::unexpected<Status> NeedsApproval(RestoreRun& run, ApprovalNeeded facts, Code code,
                                      std::string message) {
  if (run.approval_needed != nullptr) *run.approval_needed = std::move(facts);
  return Error(code, std::move(message));
}

bool SameRecoveryCode(const InnerKeyCustody& a, const InnerKeyCustody& b) {
  return a.mode == CustodyMode::kRecoveryCode && b.mode == CustodyMode::kRecoveryCode &&
         a.kdf == b.kdf && a.salt == b.salt && a.n == b.n && a.r == b.r && a.p == b.p &&
         a.verifier == b.verifier;
}

// Which package a restore takes: as asked, or the newest one of this platform (or of
// `from_platform`, which a helpdesk approved for it).
Result<std::string> ChoosePackage(RestoreRun& run) {
  const RestoreOptions& o = run.options;
  if (!o.package_id.empty()) return o.package_id;
  MaConnection& connection = *run.connection;
  const std::string& platform = connection.platform_id();
  ma::QueryFilter filter;
  if (!o.from_platform.empty()) filter.source_platform_id = o.from_platform;
  TPMMA_ASSIGN_OR_RETURN(auto list, QueryAll(connection, run.settings, filter));
  for (const auto& d : list) {
    const bool wanted = o.from_platform.empty() ? d.access == ma::Access::kOwn
                                                : d.source_platform_id == o.from_platform;
    if (wanted) return d.package_id;
  }
  if (!o.from_platform.empty()) {
    return NeedsApproval(run,
                         {.why = ApprovalNeeded::Why::kNoApprovedPackage,
                          .platform_id = platform,
                          .source_platform_id = o.from_platform,
                          .package_id = {}},
                         Code::kNotFound,
                         "the MA has no package of platform " + o.from_platform +
                             " that this platform (" + platform + ") may restore");
  }
  const std::string message = "the MA has no backup of this platform (" + platform + ")";
  TPMMA_ASSIGN_OR_RETURN(MaState m, run.lms.store().ReadMaState());
  for (auto it = m.signers.rbegin(); it != m.signers.rend(); ++it) {
    if (it->platform_id != platform) {
      return NeedsApproval(run,
                           {.why = ApprovalNeeded::Why::kNoOwnBackup,
                            .platform_id = platform,
                            .source_platform_id = it->platform_id,
                            .package_id = {}},
                           Code::kNotFound, message);
    }
  }
  return Error(Code::kNotFound, message);
}

// Step: authenticate and open the TPM for the restore (its SRK, made if a cleared TPM has
// none).
Result<MaConnection> AuthenticateForRestore(RestoreRun& run, RestoreResult& out) {
  TPMMA_ASSIGN_OR_RETURN(MaConnection connection, OpenMaConnection(run.lms, run.settings, false));
  TPMMA_RETURN_IF_ERROR(run.lms.OpenForMa());
  out.platform_id = connection.platform_id();
  out.srk_changed = !run.lms.srk_matches_store();
  return connection;
}

// What the store brings to the middle both restores share.
struct RestoreTarget {
  // An initialised store (its custody and sealed copy of the inner key); nullptr for a
  // new store.
  const StoreState* state = nullptr;
  // The package-signing keys this store has signed with, newest first: what an
  // initialised store checks a package with. A new store has none and takes the key the
  // MA says it verified the package with at Upload (trusting the MA for it).
  std::vector<Bytes> signers;
  bool new_store = false;
  // Whether the store can take the package's MRK (for an initialised store: it is the
  // store's own). Runs before the inner key is asked for.
  std::function<Status(const TPM2B_PUBLIC& mrk_public, const Bytes& mrk_name)> check_mrk;
  // The inner key from a recovery code already checked against `state`'s verifier (before
  // the Download): used when the package has the same custody, so scrypt runs once.
  SecureBytes checked_inner_key;
};

// Step: the package, re-wrapped by the MA for this TPM's SRK (certified by the AK over
// the MA's nonce).
Result<ma::DownloadedPackage> Download(RestoreRun& run, const RestoreResult& out) {
  const std::string& id = run.package_id;
  TPMMA_ASSIGN_OR_RETURN(esys::Tpm * tpm, run.lms.OpenForMa());
  run.lms.Progress("downloading package " + id + ", re-wrapped by the MA for this TPM");
  MaConnection& connection = *run.connection;
  auto got = ma::DownloadTo(*connection.client, *tpm, connection.token(), id, run.lms.current_srk(),
                            connection.ak, connection.platform.ek_template);
  if (!got) {
    const Status& e = got.error();
    if (e.code() == Code::kPermissionDenied) {
      return NeedsApproval(run,
                           {.why = ApprovalNeeded::Why::kDownloadRefused,
                            .platform_id = out.platform_id,
                            .source_platform_id = run.options.from_platform,
                            .package_id = id},
                           Code::kPermissionDenied,
                           "the MA does not let this platform (" + out.platform_id +
                               ") restore package " + id + ": " + e.message());
    }
    if (e.code() == Code::kNotFound) {
      return Error(Code::kNotFound, "the MA has no package " + id + ": " + e.message());
    }
    return Error(MaFailure(e, run.settings, "the download of package " + id));
  }
  if (run.options.after_download) run.options.after_download(*got);
  return got;
}

// A downloaded package whose signature verified: only what the signature covers is used.
struct VerifiedPackage {
  schema::MigrationPackage model;
  Bytes signer;  // the package-signing key (TPM2B_PUBLIC) its signature verified with
};

// The keys a package may be signed with: the store's own signers, or for a new store the
// key the MA verified it with at Upload.
Result<std::vector<Bytes>> SignerCandidates(const schema::PackageReader& reader,
                                            const ma::DownloadedPackage& got,
                                            const RestoreTarget& target, const std::string& id) {
  if (target.new_store) {
    if (got.signing_key_public.empty()) {
      return Error(Code::kUnsupported,
                   "the MA did not say which key signed package " + id +
                       "; cannot restore into a new store (a new store has no package-signing "
                       "key of its own to check it with); nothing was restored");
    }
    return std::vector<Bytes>{got.signing_key_public};
  }
  if (target.signers.empty()) {
    return Error(Code::kNotFound,
                 "this key store has never signed a backup, so it cannot check package " + id +
                     " (signed by platform " + reader.UnverifiedHeaderFields().source_platform_id +
                     "); restore into the key store the backup was made from");
  }
  return target.signers;
}

// Step: the downloaded package's signature, checked with a key the store trusts, and the
// package is the one asked for.
Result<VerifiedPackage> VerifyDownloaded(const ma::DownloadedPackage& got,
                                         const RestoreTarget& target, const std::string& id) {
  auto reader = schema::PackageReader::Open(got.document);
  if (!reader) {
    return Error(reader.error().code(),
                 "the downloaded package " + id +
                     " is damaged; nothing was restored: " + reader.error().message());
  }
  TPMMA_ASSIGN_OR_RETURN(std::vector<Bytes> candidates, SignerCandidates(*reader, got, target, id));
  Status verify_error;
  for (const Bytes& c : candidates) {
    TPMMA_ASSIGN_OR_RETURN(TPM2B_PUBLIC pub, tpm::Unmarshal<TPM2B_PUBLIC>(c));
    TPMMA_ASSIGN_OR_RETURN(EvpPkeyPtr key, tpm::PublicToEvp(pub.publicArea));
    auto v = reader->Verify(key.get());
    if (!v) {
      verify_error = v.error();
      continue;
    }
    if (v->package_id != id) {
      return Error(Code::kIntegrityFailure, "the MA sent package " + v->package_id +
                                                " when asked for " + id + "; nothing was restored");
    }
    return VerifiedPackage{.model = std::move(*v), .signer = c};
  }
  return Error(
      Code::kSignatureInvalid,
      "package " + id +
          (target.new_store ? " does not verify with the package-signing key the MA verified it "
                              "with at Upload: it was changed after it was signed"
                            : " does not verify with the package-signing keys this key store has "
                              "signed with: it was changed after it was signed, or it is not "
                              "this store's") +
          "; nothing was restored (" + verify_error.message() + ")");
}

// The package's inner key and the custody the store takes from it.
struct ResolvedInnerKey {
  InnerKeyCustody custody;  // the package's (sealed_* empty)
  SecureBytes inner;
  InnerKeySource source = InnerKeySource::kSealed;
};

// The store's sealed copy of the inner key, while it is the package's key (same SRK, same
// custody; the MRK was checked to be the store's). A new store has none.
bool UnsealStoreCopy(Lms& lms, const StoreState* state, bool same_custody, ResolvedInnerKey& key) {
  if (state == nullptr || !same_custody || !lms.srk_matches_store() ||
      state->custody.sealed_public.empty()) {
    return false;
  }
  auto unsealed = lms.UnsealInnerKey();
  if (!unsealed) return false;
  key.inner = std::move(*unsealed);
  key.source = InnerKeySource::kSealed;
  return true;
}

// The escrow key the store pins for its next backups. A package made before `ma-admin
// escrow rotate` names the retired key, which the MA still releases but no longer takes at
// Upload: then the store pins the current one, checked like at init. An MA that offers no
// escrow any more does not fail a restore that has its inner key: the store keeps the
// package's key, and its next backup says what is wrong.
Status PinEscrowKey(RestoreRun& run, const StoreState* state, const std::string& package_key_id,
                    InnerKeyCustody& custody, RestoreResult& out) {
  ma::MaClient& client = *run.connection->client;
  auto replaced = ReplacedEscrowKey(client, run.settings, package_key_id);
  if (!replaced && replaced.error().code() != Code::kUnsupported) {
    return replaced.error().WithContext("finding the MA's current escrow key");
  }
  if (replaced && *replaced) {
    FetchedMaKey& current = **replaced;
    run.lms.Progress("package " + run.package_id + " is escrowed to " + package_key_id +
                     ", which the MA has replaced: the store pins its escrow key " +
                     current.key_id + " for the next backups");
    out.escrow_key_rotated = EscrowKeyRotation{.from = package_key_id, .to = current.key_id};
    custody.escrow_key_id = current.key_id;
    custody.escrow_public = std::move(current.public_area);
  } else if (state != nullptr && state->custody.mode == CustodyMode::kEscrow &&
             state->custody.escrow_key_id == package_key_id &&
             !state->custody.escrow_public.empty()) {
    custody.escrow_public = state->custody.escrow_public;
  } else {
    TPMMA_ASSIGN_OR_RETURN(FetchedMaKey key, GetCheckedMaKey(client, run.settings, package_key_id,
                                                             ma::MaKeyRole::kEscrow));
    custody.escrow_public = std::move(key.public_area);
  }
  return Status::Ok();
}

// An escrow package's inner key: the sealed copy while it is the package's, else the key
// the MA released with the Download, which it does only under a helpdesk approval.
Result<ResolvedInnerKey> EscrowInnerKey(RestoreRun& run, const RestoreTarget& target,
                                        const schema::MigrationPackage& model,
                                        const schema::EscrowCustody& ec,
                                        const ma::DownloadedPackage& got, RestoreResult& out) {
  const std::string& id = run.package_id;
  const StoreState* state = target.state;
  ResolvedInnerKey key;
  key.custody.mode = CustodyMode::kEscrow;
  key.custody.escrow_key_id = ec.escrow_key_id;
  if (!UnsealStoreCopy(run.lms, state,
                       state != nullptr && state->custody.mode == CustodyMode::kEscrow, key)) {
    if (got.escrowed_inner_key.empty()) {
      return NeedsApproval(run,
                           {.why = ApprovalNeeded::Why::kEscrowNotReleased,
                            .platform_id = out.platform_id,
                            .source_platform_id = model.source_platform_id,
                            .package_id = id},
                           Code::kPermissionDenied,
                           "the inner key of package " + id +
                               " is held in escrow by the MA and is released only for a "
                               "restore a helpdesk approved");
    }
    if (got.escrowed_inner_key.size() != kInnerKeyBytes) {
      return Error(Code::kMalformed, "the MA released an escrowed inner key of " +
                                         std::to_string(got.escrowed_inner_key.size()) +
                                         " bytes for package " + id + ", not " +
                                         std::to_string(kInnerKeyBytes) + "; nothing was restored");
    }
    key.inner = got.escrowed_inner_key;
    key.source = InnerKeySource::kEscrow;
  }
  TPMMA_RETURN_IF_ERROR(PinEscrowKey(run, state, ec.escrow_key_id, key.custody, out));
  return key;
}

// The inner key from the recovery code, asked now, checked against the package's verifier
// before the TPM sees it.
Result<SecureBytes> InnerKeyFromCode(RestoreRun& run, const RestoreTarget& target,
                                     const InnerKeyCustody& custody) {
  const std::string& id = run.package_id;
  if (!run.options.recovery_code) {
    return Error(Code::kInvalidArgument,
                 "restoring package " + id + " needs the recovery code shown at lms init " +
                     (target.new_store ? std::string("(a new key store has no copy of the "
                                                     "inner key sealed to this TPM)")
                                       : std::string("(the copy of the inner key sealed to "
                                                     "this TPM is gone with its SRK)")));
  }
  TPMMA_ASSIGN_OR_RETURN(SecureString code, run.options.recovery_code());
  run.lms.Progress("checking the recovery code");
  auto derived = DeriveInnerKey(code, custody);
  if (!derived) {
    if (derived.error().code() == Code::kPermissionDenied) {
      return Error(Code::kPermissionDenied,
                   "wrong recovery code: it is not the one shown at lms init for these keys "
                   "(package " +
                       id + "); nothing was changed");
    }
    return Error(derived.error().WithContext("the recovery code"));
  }
  return std::move(*derived);
}

// A recovery-code package's inner key: the sealed copy while it is the package's, else the
// code checked before the Download, else the code asked now.
Result<ResolvedInnerKey> RecoveryCodeInnerKey(RestoreRun& run, const RestoreTarget& target,
                                              const schema::RecoveryCodeCustody& rc) {
  if (!rc.verifier || rc.verifier->empty()) {
    return Error(Code::kUnsupported, "package " + run.package_id +
                                         " has no recovery-code verifier; lms cannot check a "
                                         "code for it");
  }
  ResolvedInnerKey key;
  InnerKeyCustody& custody = key.custody;
  custody.mode = CustodyMode::kRecoveryCode;
  custody.kdf = rc.kdf;
  custody.salt = rc.salt;
  custody.n = rc.n;
  custody.r = rc.r;
  custody.p = rc.p;
  custody.verifier = *rc.verifier;
  const StoreState* state = target.state;
  const bool store_custody = state != nullptr && SameRecoveryCode(state->custody, custody);
  if (UnsealStoreCopy(run.lms, state, store_custody, key)) return key;
  key.source = InnerKeySource::kRecoveryCode;
  if (store_custody && !target.checked_inner_key.empty()) {
    key.inner = target.checked_inner_key;
    return key;
  }
  TPMMA_ASSIGN_OR_RETURN(key.inner, InnerKeyFromCode(run, target, custody));
  return key;
}

// Step: the inner key, by the package's custody (docs/protocol.md, Inner-key custody), and where it
// came from.
Result<ResolvedInnerKey> ResolveInnerKey(RestoreRun& run, const RestoreTarget& target,
                                         const schema::MigrationPackage& model,
                                         const ma::DownloadedPackage& got, RestoreResult& out) {
  Result<ResolvedInnerKey> key;
  if (const auto* ec = std::get_if<schema::EscrowCustody>(&model.custody)) {
    out.custody = CustodyMode::kEscrow;
    key = EscrowInnerKey(run, target, model, *ec, got, out);
  } else {
    out.custody = CustodyMode::kRecoveryCode;
    key = RecoveryCodeInnerKey(run, target, std::get<schema::RecoveryCodeCustody>(model.custody));
  }
  if (!key) return key;
  out.inner_key_source = key->source;
  out.used_recovery_code = key->source == InnerKeySource::kRecoveryCode;
  return key;
}

// One child of the package, loaded under the restored MRK.
struct LoadedChild {
  KeyType type = KeyType::kEccSign;
  Bytes name;
};

// Every key in the package must load under the MRK before anything is written.
Result<std::vector<LoadedChild>> LoadChildren(RestoreRun& run, esys::Tpm& tpm,
                                              const esys::Object& mrk,
                                              const schema::MigrationPackage& model) {
  run.lms.Progress("checking the " + std::to_string(model.child_keys.size()) +
                   " keys in the package");
  std::vector<LoadedChild> out;
  for (const schema::ChildKey& c : model.child_keys) {
    const std::string what =
        "key " + c.key_id + " ('" + c.label + "') in package " + run.package_id;
    esys::KeyBlob blob;
    TPMMA_ASSIGN_OR_RETURN(blob.public_area, tpm::Unmarshal<TPM2B_PUBLIC>(c.public_area));
    TPMMA_ASSIGN_OR_RETURN(blob.private_area, tpm::Unmarshal<TPM2B_PRIVATE>(c.private_area));
    auto type = ClassifyChild(blob.public_area.publicArea);
    if (!type) return Error(type.error().WithContext(what));
    if (UsageOf(*type) != c.usage) {
      return Error(Code::kIntegrityFailure, what + ": its usage does not match its key");
    }
    auto child = tpm.Load(mrk, blob);
    if (!child) {
      return Error(child.error().WithContext(what + " does not load under the restored MRK"));
    }
    child->reset();
    TPMMA_ASSIGN_OR_RETURN(Bytes name, tpm::ComputeName(blob.public_area.publicArea));
    out.push_back({.type = *type, .name = std::move(name)});
  }
  return out;
}

// The MRK imported under the SRK in use, and every child loaded under it.
struct ImportedKeys {
  TPM2B_PRIVATE mrk_private{};
  std::vector<LoadedChild> children;  // one per model.child_keys, in the same order
};

// Step: import the MRK with the inner key and load it and every child.
Result<ImportedKeys> ImportAndLoad(RestoreRun& run, const ma::DownloadedPackage& got,
                                   const TPM2B_PUBLIC& mrk_public, const SecureBytes& inner,
                                   const schema::MigrationPackage& model) {
  TPMMA_ASSIGN_OR_RETURN(esys::Tpm * tpm, run.lms.OpenForMa());
  const esys::Object& srk = run.lms.current_srk();
  run.lms.Progress("importing the MRK under this TPM's SRK");
  TPMMA_ASSIGN_OR_RETURN(TPM2B_PRIVATE duplicate, tpm::Unmarshal<TPM2B_PRIVATE>(got.duplicate));
  TPMMA_ASSIGN_OR_RETURN(TPM2B_ENCRYPTED_SECRET seed,
                         tpm::Unmarshal<TPM2B_ENCRYPTED_SECRET>(got.encrypted_seed));
  auto imported = tpm->Import(srk, mrk_public, duplicate, seed, inner);
  if (!imported) return Error(imported.error().WithContext("importing the MRK"));
  ImportedKeys out;
  out.mrk_private = *imported;
  esys::KeyBlob mrk_blob{.public_area = mrk_public, .private_area = *imported};
  auto mrk = tpm->Load(srk, mrk_blob);
  if (!mrk) return Error(mrk.error().WithContext("loading the imported MRK"));
  TPMMA_ASSIGN_OR_RETURN(out.children, LoadChildren(run, *tpm, *mrk, model));
  return out;
}

// A package checked and loaded in this TPM, nothing written yet.
struct LoadedPackage {
  schema::MigrationPackage model;
  Bytes signer;  // the package-signing key (TPM2B_PUBLIC) its signature verified with
  TPM2B_PUBLIC mrk_public{};
  Bytes mrk_name;
  uint32_t mrk_handle = 0;      // where the MRK goes back to for applications (0: nowhere)
  TPM2B_PRIVATE mrk_private{};  // the MRK imported under the SRK in use
  InnerKeyCustody custody;      // the package's custody (sealed_* empty)
  SecureBytes inner;
  std::vector<LoadedChild> children;  // one per model.child_keys, in the same order
};

// The middle both restores share: download → verify → resolve the inner key → import and
// load. Sets the package fields of `out` and where the inner key came from. Changes
// nothing on disk.
Result<LoadedPackage> DownloadAndLoad(RestoreRun& run, const RestoreTarget& target,
                                      RestoreResult& out) {
  TPMMA_ASSIGN_OR_RETURN(ma::DownloadedPackage got, Download(run, out));
  TPMMA_ASSIGN_OR_RETURN(VerifiedPackage verified, VerifyDownloaded(got, target, run.package_id));
  const schema::MigrationPackage& model = verified.model;
  out.package_id = run.package_id;
  out.source_platform_id = model.source_platform_id;
  out.package_created_at = model.creation_time;

  LoadedPackage loaded;
  TPMMA_ASSIGN_OR_RETURN(TPM2B_PUBLIC mrk_public,
                         tpm::Unmarshal<TPM2B_PUBLIC>(model.mrk.public_area));
  TPMMA_ASSIGN_OR_RETURN(loaded.mrk_name, tpm::ComputeName(mrk_public.publicArea));
  if (target.check_mrk) TPMMA_RETURN_IF_ERROR(target.check_mrk(mrk_public, loaded.mrk_name));
  TPMMA_ASSIGN_OR_RETURN(loaded.mrk_handle,
                         ChooseMrkHandle(run.lms, target.state, model, loaded.mrk_name));

  TPMMA_ASSIGN_OR_RETURN(ResolvedInnerKey key, ResolveInnerKey(run, target, model, got, out));
  TPMMA_ASSIGN_OR_RETURN(ImportedKeys imported,
                         ImportAndLoad(run, got, mrk_public, key.inner, model));
  loaded.model = std::move(verified.model);
  loaded.signer = std::move(verified.signer);
  loaded.mrk_public = mrk_public;
  loaded.mrk_private = imported.mrk_private;
  loaded.custody = std::move(key.custody);
  loaded.inner = std::move(key.inner);
  loaded.children = std::move(imported.children);
  return loaded;
}

// `label`, or "label (restored)", "label (restored 2)", ... when the store has it already.
std::string UniqueLabel(std::set<std::string>& labels, const std::string& label) {
  std::string out = label;
  for (int n = 1; labels.count(out) != 0; ++n) {
    out = label + " (restored" + (n > 1 ? " " + std::to_string(n) : "") + ")";
  }
  labels.insert(out);
  return out;
}

// The inner key sealed under the SRK in use (fixedTPM), as lms init keeps it: backups run
// unattended.
Status SealInnerKey(Lms& lms, const SecureBytes& inner, InnerKeyCustody& custody) {
  TPMMA_ASSIGN_OR_RETURN(esys::Tpm * tpm, lms.OpenForMa());
  lms.Progress("sealing the inner key to this TPM for unattended backups");
  TPMMA_ASSIGN_OR_RETURN(esys::KeyBlob sealed,
                         tpm->Create(lms.current_srk(), SealedInnerKeyTemplate(), inner));
  TPMMA_ASSIGN_OR_RETURN(custody.sealed_public, tpm::Marshal(sealed.public_area));
  TPMMA_ASSIGN_OR_RETURN(custody.sealed_private, tpm::Marshal(sealed.private_area));
  return Status::Ok();
}

// The SRK the restore imported under (RSA at 0x81000001 or ECC at 0x81000002).
Status RecordSrk(Lms& lms, StoreState& state) {
  TPMMA_ASSIGN_OR_RETURN(esys::Tpm * tpm, lms.OpenForMa());
  TPMMA_ASSIGN_OR_RETURN(esys::PublicInfo srk_info, tpm->ReadPublic(lms.current_srk()));
  const bool ecc_srk = srk_info.public_area.publicArea.type == TPM2_ALG_ECC;
  state.srk_handle = ecc_srk ? esys::kSrkEccHandle : esys::kSrkHandle;
  state.srk_alg = ecc_srk ? "ecc-p256" : "rsa2048";
  state.srk_name = srk_info.name;
  return Status::Ok();
}

// A package of this platform is its last backup. Another platform's is not: this platform
// has none of its own yet, so the next backup (the timer's too) uploads one.
void RecordLastBackup(StoreState& state, const RestoreResult& out) {
  if (out.source_platform_id == out.platform_id) {
    if (!state.last_backup_at || *state.last_backup_at < out.package_created_at) {
      state.last_backup_at = out.package_created_at;
      state.last_backup_package_id = out.package_id;
    }
  } else {
    state.last_backup_at.reset();
    state.last_backup_package_id.reset();
  }
}

// ---- lms restore --new-store: the disk died with the board, so there is no store to
// restore into. The package alone says what the store held (the MRK, every child, the
// custody); the MA says which key signed it and which MA key the MRK duplicates to.

// Step: the store must be new, and the package named; then it is locked.
Status PrepareNewStore(KeyStore& store, const RestoreOptions& o) {
  auto initialised = [&]() {
    return Status(Code::kAlreadyExists,
                  "the key store " + store.dir() +
                      " is already initialised: lms restore --new-store only builds a key store "
                      "where there is none (the disk was replaced); to bring this store's keys "
                      "back, run lms restore without --new-store");
  };
  if (store.Initialized()) return initialised();
  if (o.package_id.empty() && o.from_platform.empty()) {
    return Status(Code::kInvalidArgument,
                  "lms restore --new-store needs --from OLD (the platform the keys were backed "
                  "up from; the helpdesk approves this one for it) or --package ID (lms query "
                  "lists the packages this platform may restore): a new TPM has no backup of "
                  "its own to pick");
  }
  TPMMA_RETURN_IF_ERROR(store.CreateLayout());
  TPMMA_RETURN_IF_ERROR(store.Lock());
  if (store.Initialized()) return initialised();  // another lms got there first
  return Status::Ok();
}

// The MA key the new store backs up to (MaKeyForMrk): one its MRK can be duplicated to.
Status CheckMrkBoundToMaKey(RestoreRun& run, const TPM2B_PUBLIC& mrk_public, FetchedMaKey& ma_key) {
  TPMMA_ASSIGN_OR_RETURN(
      ma_key, MaKeyForMrk(*run.connection->client, run.settings,
                          tpm::Tpm2bView(mrk_public.publicArea.authPolicy), run.package_id));
  return Status::Ok();
}

// The key records of a new store: the package has no ids or origins for its keys beyond
// the children's, so the MRK gets a new id, and every key counts as made by lms and backed
// up by this package.
struct NewStoreKeys {
  KeyRecord mrk;
  std::vector<KeyRecord> children;
};
Result<NewStoreKeys> NewStoreRecords(const LoadedPackage& loaded, int64_t now, RestoreResult& out) {
  const schema::MigrationPackage& model = loaded.model;
  const int64_t created = model.creation_time > 0 ? model.creation_time : now;
  NewStoreKeys keys;
  KeyRecord& mrk = keys.mrk;
  TPMMA_ASSIGN_OR_RETURN(mrk.id, schema::NewUuid());
  mrk.label = "mrk";
  mrk.type = KeyType::kMrk;
  mrk.parent = "srk";
  mrk.migratable = true;
  mrk.origin = "lms";
  mrk.created = created;
  mrk.backed_up_at = model.creation_time;
  mrk.public_area = model.mrk.public_area;
  TPMMA_ASSIGN_OR_RETURN(mrk.private_area, tpm::Marshal(loaded.mrk_private));
  mrk.name = loaded.mrk_name;
  std::set<std::string> labels = {mrk.label};
  for (size_t i = 0; i < model.child_keys.size(); ++i) {
    const schema::ChildKey& c = model.child_keys[i];
    KeyRecord r;
    r.id = c.key_id;
    r.label = UniqueLabel(labels, c.label);
    r.type = loaded.children[i].type;
    r.parent = mrk.id;
    r.migratable = true;
    r.origin = "lms";
    r.created = created;
    r.backed_up_at = model.creation_time;
    r.public_area = c.public_area;
    r.private_area = c.private_area;
    r.name = loaded.children[i].name;
    RestoreKeyAppData(c, r);
    out.keys.push_back({.key = r, .outcome = KeyOutcome::kAdded});
    keys.children.push_back(std::move(r));
  }
  return keys;
}

// Keys first, ma.json next, store.json last: it is what makes the store initialised, so
// a restore cut short leaves none, and its keys are set aside by the next attempt (or
// lms init) like those of an init that did not finish.
Status WriteNewStore(KeyStore& store, const NewStoreKeys& keys, const MaState& m,
                     const StoreState& state, RestoreResult& out) {
  Status written = [&]() -> Status {
    // By name, not parsed: a damaged leftover must not stand in the way.
    TPMMA_ASSIGN_OR_RETURN(std::vector<std::string> names,
                           store.env()->ListDir(store.dir() + "/keys"));
    if (std::any_of(names.begin(), names.end(),
                    [](const std::string& n) { return n.ends_with(".json"); })) {
      TPMMA_ASSIGN_OR_RETURN(std::string retired, store.Retire());
      out.retired_to = retired;
    }
    for (const KeyRecord& r : keys.children) TPMMA_RETURN_IF_ERROR(store.PutKey(r));
    TPMMA_RETURN_IF_ERROR(store.PutKey(keys.mrk));
    TPMMA_RETURN_IF_ERROR(store.WriteMaState(m));
    return store.WriteState(state);
  }();
  if (written.ok()) return written;
  return written.WithContext(
      "writing the new key store " + store.dir() +
      " (it is not initialised: there is no store.json; key files this attempt wrote to keys/ "
      "are set aside by the next lms restore --new-store or lms init)");
}

Result<RestoreResult> RestoreIntoNewStore(RestoreRun& run) {
  KeyStore& store = run.lms.store();
  TPMMA_RETURN_IF_ERROR(PrepareNewStore(store, run.options));
  RestoreResult out;
  out.new_store = true;
  TPMMA_ASSIGN_OR_RETURN(MaConnection connection, AuthenticateForRestore(run, out));
  run.connection = &connection;
  TPMMA_ASSIGN_OR_RETURN(run.package_id, ChoosePackage(run));

  FetchedMaKey ma_key;
  RestoreTarget target;
  target.new_store = true;
  target.check_mrk = [&](const TPM2B_PUBLIC& mrk_public, const Bytes&) {
    return CheckMrkBoundToMaKey(run, mrk_public, ma_key);
  };
  TPMMA_ASSIGN_OR_RETURN(LoadedPackage loaded, DownloadAndLoad(run, target, out));

  const int64_t now = run.lms.env()->NowUnixSeconds();
  TPMMA_ASSIGN_OR_RETURN(NewStoreKeys keys, NewStoreRecords(loaded, now, out));
  StoreState state;
  state.initialized_at = now;
  TPMMA_RETURN_IF_ERROR(RecordSrk(run.lms, state));
  state.mrk_id = keys.mrk.id;
  state.ma_key_public = ma_key.public_area;
  state.ma_key_name = ma_key.name;
  state.policy_key_public = ma_key.policy_key;
  state.ma_key_approval = ma_key.approval;
  state.custody = loaded.custody;
  state.mrk_handle = loaded.mrk_handle;
  TPMMA_RETURN_IF_ERROR(SealInnerKey(run.lms, loaded.inner, state.custody));
  TPMMA_RETURN_IF_ERROR(PersistRestoredMrk(run.lms, loaded.mrk_public, loaded.mrk_private,
                                           loaded.mrk_name, loaded.mrk_handle));
  TPMMA_RETURN_IF_ERROR(RestorePkcs11Store(store, loaded.model));
  RecordLastBackup(state, out);
  // The source platform's signing key is a known signer from now on, so that a later lms
  // restore of its packages checks them as an initialised store does.
  TPMMA_ASSIGN_OR_RETURN(MaState m, store.ReadMaState());
  RememberSigner(m, loaded.model.source_platform_id, loaded.signer);
  TPMMA_RETURN_IF_ERROR(WriteNewStore(store, keys, m, state, out));
  return out;
}

// ---- lms restore into the initialised store the backup was made from (it moves with the
// disk).

// Without the sealed copy (another or a cleared TPM) the recovery code is needed. Every
// package this store can restore carries its MRK, hence the custody it was made with, so
// a mistyped code is caught here, against the store's verifier, before the Download uses
// a helpdesk approval up. The code is asked once: `options` answers with it from now on.
Status CheckRecoveryCodeFirst(RestoreRun& run, const StoreState& state, RestoreOptions& options,
                              RestoreTarget& target) {
  const RestoreOptions& o = run.options;
  if (run.lms.srk_matches_store() || state.custody.mode != CustodyMode::kRecoveryCode ||
      state.custody.verifier.empty() || !o.recovery_code) {
    return Status::Ok();
  }
  TPMMA_ASSIGN_OR_RETURN(SecureString code, o.recovery_code());
  run.lms.Progress("checking the recovery code");
  auto derived = DeriveInnerKey(code, state.custody);
  if (!derived && derived.error().code() == Code::kPermissionDenied) {
    return Status(Code::kPermissionDenied,
                  "wrong recovery code: it is not the one shown at lms init for these keys; "
                  "nothing was changed, and package " +
                      run.package_id + " was not downloaded (an approval for it is still unused)");
  }
  if (!derived) return derived.error().WithContext("the recovery code");
  target.checked_inner_key = std::move(*derived);
  options.recovery_code = [code]() -> Result<SecureString> { return code; };
  return Status::Ok();
}

// The package-signing keys this store has signed with, newest first.
std::vector<Bytes> StoreSigners(const MaState& m) {
  std::vector<Bytes> out;
  for (auto it = m.signers.rbegin(); it != m.signers.rend(); ++it) out.push_back(it->public_area);
  if (!m.signing_public.empty()) out.push_back(m.signing_public);
  return out;
}

// Every key in the package, as an update of its store entry or a new one; `out.kept`
// counts the store's keys the package does not have.
std::vector<KeyRecord> MergeRecords(const std::vector<KeyRecord>& keys, const std::string& mrk_id,
                                    const LoadedPackage& loaded, int64_t now, RestoreResult& out) {
  const schema::MigrationPackage& model = loaded.model;
  std::map<std::string, const KeyRecord*> by_id;
  std::set<std::string> labels;
  for (const KeyRecord& k : keys) {
    by_id[k.id] = &k;
    labels.insert(k.label);
  }
  std::vector<KeyRecord> records;
  for (size_t i = 0; i < model.child_keys.size(); ++i) {
    const schema::ChildKey& c = model.child_keys[i];
    KeyRecord r;
    auto existing = by_id.find(c.key_id);
    if (existing != by_id.end()) {
      r = *existing->second;
      out.keys.push_back({.key = {}, .outcome = KeyOutcome::kUpdated});
    } else {
      r.id = c.key_id;
      r.label = UniqueLabel(labels, c.label);
      r.origin = "restored";
      r.created = model.creation_time > 0 ? model.creation_time : now;
      r.migratable = true;
      out.keys.push_back({.key = {}, .outcome = KeyOutcome::kAdded});
    }
    r.type = loaded.children[i].type;
    r.parent = mrk_id;
    r.public_area = c.public_area;
    r.private_area = c.private_area;
    r.name = loaded.children[i].name;
    RestoreKeyAppData(c, r);
    if (!r.backed_up_at) r.backed_up_at = model.creation_time;
    out.keys.back().key = r;
    records.push_back(std::move(r));
  }
  std::set<std::string> in_package;
  for (const auto& c : model.child_keys) in_package.insert(c.key_id);
  for (const KeyRecord& k : keys) {
    if (k.type != KeyType::kMrk && in_package.count(k.id) == 0) ++out.kept;
  }
  return records;
}

// Step: the SRK re-recorded, the inner key sealed again under it (the store's custody is
// the package's from now on), keys first, the MRK next, store.json last: until it is
// written the store still names the old SRK, and a restore cut short is simply run again.
Status WriteRestoredStore(Lms& lms, const std::vector<KeyRecord>& keys,
                          const std::vector<KeyRecord>& records, KeyRecord mrk_record,
                          const LoadedPackage& loaded, StoreState& state,
                          const RestoreResult& out) {
  KeyStore& store = lms.store();
  InnerKeyCustody new_custody = loaded.custody;
  if (out.inner_key_source == InnerKeySource::kSealed) {
    new_custody.sealed_public = state.custody.sealed_public;
    new_custody.sealed_private = state.custody.sealed_private;
  } else {
    TPMMA_RETURN_IF_ERROR(SealInnerKey(lms, loaded.inner, new_custody));
  }
  TPMMA_RETURN_IF_ERROR(RecordSrk(lms, state));
  TPMMA_RETURN_IF_ERROR(PersistRestoredMrk(lms, loaded.mrk_public, loaded.mrk_private,
                                           loaded.mrk_name, loaded.mrk_handle));
  state.mrk_handle = loaded.mrk_handle;
  TPMMA_RETURN_IF_ERROR(RestorePkcs11Store(store, loaded.model));
  for (const KeyRecord& r : records) {
    auto existing =
        std::find_if(keys.begin(), keys.end(), [&](const KeyRecord& k) { return k.id == r.id; });
    if (existing != keys.end() && *existing == r) continue;  // unchanged
    TPMMA_RETURN_IF_ERROR(store.PutKey(r));
  }
  mrk_record.parent = "srk";
  TPMMA_ASSIGN_OR_RETURN(mrk_record.private_area, tpm::Marshal(loaded.mrk_private));
  if (!mrk_record.backed_up_at) mrk_record.backed_up_at = loaded.model.creation_time;
  TPMMA_RETURN_IF_ERROR(store.PutKey(mrk_record));
  state.custody = new_custody;
  RecordLastBackup(state, out);
  return store.WriteState(state);
}

Result<RestoreResult> RestoreIntoStore(RestoreRun& run) {
  KeyStore& store = run.lms.store();
  if (!store.Initialized()) {
    return Error(Code::kNotFound,
                 "the key store " + store.dir() +
                     " is not initialised: lms restore brings keys back into the key store they "
                     "were backed up from (it lives on the disk, so it moves with it); if the "
                     "disk was replaced too, lms restore --new-store --from OLD builds a new "
                     "store from OLD's backup");
  }
  TPMMA_ASSIGN_OR_RETURN(StoreState state, store.ReadState());
  TPMMA_RETURN_IF_ERROR(store.Lock());
  TPMMA_ASSIGN_OR_RETURN(std::vector<KeyRecord> keys, store.ListKeys());
  TPMMA_ASSIGN_OR_RETURN(KeyRecord mrk_record, FindMrk(state, keys));
  RestoreResult out;
  TPMMA_ASSIGN_OR_RETURN(MaConnection connection, AuthenticateForRestore(run, out));
  run.connection = &connection;
  TPMMA_ASSIGN_OR_RETURN(run.package_id, ChoosePackage(run));

  RestoreOptions options = run.options;
  RestoreTarget target;
  TPMMA_RETURN_IF_ERROR(CheckRecoveryCodeFirst(run, state, options, target));
  RestoreRun checked{.lms = run.lms,
                     .settings = run.settings,
                     .options = options,
                     .approval_needed = run.approval_needed,
                     .connection = run.connection,
                     .package_id = run.package_id};
  target.state = &state;
  TPMMA_ASSIGN_OR_RETURN(MaState m, store.ReadMaState());
  target.signers = StoreSigners(m);
  const std::string& id = run.package_id;
  target.check_mrk = [&](const TPM2B_PUBLIC&, const Bytes& mrk_name) -> Status {
    if (mrk_name == mrk_record.name) return Status::Ok();
    return Status(Code::kConflict,
                  "package " + id + " holds another MRK (" + HexEncode(mrk_name) +
                      ") than this key store (" + mrk_record.id + ", " +
                      HexEncode(mrk_record.name) +
                      "); it can only be restored into the key store it was backed up from");
  };
  TPMMA_ASSIGN_OR_RETURN(LoadedPackage loaded, DownloadAndLoad(checked, target, out));

  const int64_t now = run.lms.env()->NowUnixSeconds();
  std::vector<KeyRecord> records = MergeRecords(keys, mrk_record.id, loaded, now, out);
  TPMMA_RETURN_IF_ERROR(
      WriteRestoredStore(run.lms, keys, records, std::move(mrk_record), loaded, state, out));
  return out;
}

}  // namespace

Result<RestoreResult> Restore(Lms& lms, const MaSettings& settings, const RestoreOptions& options,
                              std::optional<ApprovalNeeded>* approval_needed) {
  RestoreRun run{.lms = lms,
                 .settings = settings,
                 .options = options,
                 .approval_needed = approval_needed,
                 .connection = nullptr,
                 .package_id = {}};
  return options.new_store ? RestoreIntoNewStore(run) : RestoreIntoStore(run);
}

}  // namespace tpmma::lms
