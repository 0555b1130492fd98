// SPDX-License-Identifier: GPL-2.0-or-later
// lms restore (DESIGN 4.3): download a package re-wrapped by the MA for this TPM's SRK,
// check it, get its inner key (sealed copy, recovery code or the MA's escrow), import the
// MRK, load every child, and write the key store: the one the backup came from, or a new
// one (--new-store). Declared in remote.h.
#include <algorithm>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "client/lms/custody.h"
#include "client/lms/ma_session.h"
#include "client/lms/remote.h"
#include "client/ma/platform.h"
#include "common/openssl.h"
#include "schema/package.h"
#include "schema/package_xml.h"
#include "tpm/escrow.h"
#include "tpm/marshal.h"
#include "tpm/public.h"

namespace tpmma::lms {
namespace {

bool SameRecoveryCode(const InnerKeyCustody& a, const InnerKeyCustody& b) {
  return a.mode == CustodyMode::kRecoveryCode && b.mode == CustodyMode::kRecoveryCode &&
         a.kdf == b.kdf && a.salt == b.salt && a.n == b.n && a.r == b.r && a.p == b.p &&
         a.verifier == b.verifier;
}

// Which package a restore takes: as asked, or the newest one of this platform (or of
// `from_platform`, which a helpdesk approved for it).
Result<std::string> ChoosePackage(Session& session, const MaSettings& ma, const RestoreOptions& o,
                                  const KeyStore& store) {
  if (!o.package_id.empty()) return o.package_id;
  const std::string& platform = session.platform_id();
  client::QueryFilter filter;
  if (!o.from_platform.empty()) filter.source_platform_id = o.from_platform;
  TPMMA_ASSIGN_OR_RETURN(auto list, QueryAll(session, ma, filter));
  for (const auto& d : list) {
    const bool wanted =
        o.from_platform.empty() ? d.access == "Own" : d.source_platform_id == o.from_platform;
    if (wanted) return d.package_id;
  }
  if (o.from_platform.empty()) {
    TPMMA_ASSIGN_OR_RETURN(MaState m, store.ReadMaState());
    std::string hint;
    for (auto it = m.signers.rbegin(); it != m.signers.rend(); ++it) {
      if (it->platform_id != platform) {
        hint = "; this key store's keys were last backed up by platform " + it->platform_id +
               ": once the helpdesk approved (ma-admin approve --old " + it->platform_id +
               " --new " + platform + "), run lms restore --from " + it->platform_id;
        break;
      }
    }
    return Error(Code::kNotFound,
                 "the MA has no backup of this platform (" + platform + ")" + hint);
  }
  return Error(Code::kNotFound, "the MA has no package of platform " + o.from_platform +
                                    " that this platform (" + platform +
                                    ") may restore; the helpdesk approves that with ma-admin "
                                    "approve --old " +
                                    o.from_platform + " --new " + platform);
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

// A package checked and loaded in this TPM, nothing written yet.
struct LoadedPackage {
  package::MigrationPackage model;
  Bytes signer;  // the package-signing key (TPM2B_PUBLIC) its signature verified with
  Bytes mrk_name;
  TPM2B_PRIVATE mrk_private{};  // the MRK imported under the SRK in use
  InnerKeyCustody custody;      // the package's custody (sealed_* empty)
  SecureBytes inner;
  struct Child {
    KeyType type = KeyType::kEccSign;
    Bytes name;
  };
  std::vector<Child> children;  // one per model.child_keys, in the same order
};

// The middle both restores share: download the package re-wrapped for this TPM's SRK,
// check its signature, get the inner key by the package's custody (DESIGN 4.4), import and
// load the MRK, load every child under it. Sets the package fields of `out` and where the
// inner key came from. Changes nothing on disk.
Result<LoadedPackage> DownloadAndLoad(Lms& lms, const MaSettings& ma, Session& session,
                                      const std::string& id, const RestoreOptions& o,
                                      const RestoreTarget& target, RestoreResult& out) {
  TPMMA_ASSIGN_OR_RETURN(esys::Tpm * tpm, lms.OpenForMa());
  const esys::Object& srk = lms.current_srk();
  lms.Progress("downloading package " + id + ", re-wrapped by the MA for this TPM");
  auto got = client::DownloadTo(*session.ma, *tpm, session.token(), id, srk, session.ak);
  if (!got) {
    const Status& e = got.error();
    if (e.code() == Code::kPermissionDenied) {
      return Error(Code::kPermissionDenied,
                   "the MA does not let this platform (" + out.platform_id + ") restore package " +
                       id + ": " + e.message() +
                       " (a package of another platform needs a helpdesk approval: ma-admin "
                       "approve --old " +
                       (o.from_platform.empty() ? std::string("<its platform>") : o.from_platform) +
                       " --new " + out.platform_id + ")");
    }
    if (e.code() == Code::kNotFound) {
      return Error(Code::kNotFound, "the MA has no package " + id + ": " + e.message());
    }
    return Error(MaFailure(e, ma, "the download of package " + id));
  }
  if (o.after_download) o.after_download(*got);

  // Only what the package's signature covers is used.
  auto reader = package::PackageReader::Open(got->document);
  if (!reader) {
    return Error(reader.error().code(),
                 "the downloaded package " + id +
                     " is damaged; nothing was restored: " + reader.error().message());
  }
  std::vector<Bytes> candidates;
  if (target.new_store) {
    if (got->signing_key_public.empty()) {
      return Error(Code::kUnsupported,
                   "the MA did not say which key signed package " + id +
                       "; cannot restore into a new store (a new store has no package-signing "
                       "key of its own to check it with); nothing was restored");
    }
    candidates.push_back(got->signing_key_public);
  } else {
    candidates = target.signers;
    if (candidates.empty()) {
      return Error(Code::kNotFound,
                   "this key store has never signed a backup, so it cannot check package " + id +
                       " (signed by platform " +
                       reader->UnverifiedHeaderFields().source_platform_id +
                       "); restore into the key store the backup was made from");
    }
  }
  LoadedPackage loaded;
  std::optional<package::MigrationPackage> model;
  Status verify_error;
  for (const Bytes& c : candidates) {
    TPMMA_ASSIGN_OR_RETURN(TPM2B_PUBLIC pub, tpm::Unmarshal<TPM2B_PUBLIC>(c));
    TPMMA_ASSIGN_OR_RETURN(EvpPkeyPtr key, tpm::PublicToEvp(pub.publicArea));
    auto v = reader->Verify(key.get());
    if (v) {
      model = std::move(*v);
      loaded.signer = c;
      break;
    }
    verify_error = v.error();
  }
  if (!model) {
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
  if (model->package_id != id) {
    return Error(Code::kIntegrityFailure, "the MA sent package " + model->package_id +
                                              " when asked for " + id + "; nothing was restored");
  }
  out.package_id = id;
  out.source_platform_id = model->source_platform_id;
  out.package_created_at = model->creation_time;

  TPMMA_ASSIGN_OR_RETURN(TPM2B_PUBLIC mrk_public,
                         tpm::Unmarshal<TPM2B_PUBLIC>(model->mrk.public_area));
  TPMMA_ASSIGN_OR_RETURN(loaded.mrk_name, tpm::ComputeName(mrk_public.publicArea));
  if (target.check_mrk) TPMMA_RETURN_IF_ERROR(target.check_mrk(mrk_public, loaded.mrk_name));

  // The inner key, by the package's custody (DESIGN 4.4). While the store's sealed copy
  // is the package's key (same SRK, same custody; the MRK, checked above, is the store's)
  // it is unsealed from this TPM; otherwise it comes from the recovery code (checked
  // against the package's verifier before the TPM sees it) or, for an escrow package, from
  // the MA, which releases it only for a Download a helpdesk approved. A new store has no
  // sealed copy.
  const StoreState* state = target.state;
  InnerKeyCustody& custody = loaded.custody;
  SecureBytes& inner = loaded.inner;
  auto UnsealIf = [&](bool same_custody) {
    if (state == nullptr || !same_custody || !lms.srk_matches_store() ||
        state->custody.sealed_public.empty()) {
      return;
    }
    auto unsealed = lms.UnsealInnerKey();
    if (unsealed) {
      inner = std::move(*unsealed);
      out.inner_key_source = "sealed";
    }
  };
  if (const auto* ec = std::get_if<package::EscrowCustody>(&model->custody)) {
    out.custody = std::string(CustodyModeName(CustodyMode::kEscrow));
    custody.mode = CustodyMode::kEscrow;
    custody.escrow_key_id = ec->escrow_key_id;
    UnsealIf(state != nullptr && state->custody.mode == CustodyMode::kEscrow);
    if (inner.empty()) {
      if (got->escrowed_inner_key.empty()) {
        return Error(Code::kPermissionDenied,
                     "the inner key of package " + id +
                         " is held in escrow by the MA and is released only for a restore a "
                         "helpdesk approved; ask the helpdesk to approve platform " +
                         out.platform_id + " (ma-admin approve --old " + model->source_platform_id +
                         " --new " + out.platform_id + "); nothing was changed");
      }
      if (got->escrowed_inner_key.size() != kInnerKeyBytes) {
        return Error(Code::kMalformed,
                     "the MA released an escrowed inner key of " +
                         std::to_string(got->escrowed_inner_key.size()) + " bytes for package " +
                         id + ", not " + std::to_string(kInnerKeyBytes) + "; nothing was restored");
      }
      inner = got->escrowed_inner_key;
      out.inner_key_source = "escrow";
    }
    // The store pins the MA's current escrow key for its next backups. A package made
    // before `ma-admin escrow rotate` names the retired key, which the MA still releases
    // but no longer takes at Upload: then the store pins the current one, checked like at
    // init. An MA that offers no escrow any more does not fail a restore that has its inner
    // key: the store keeps the package's key, and its next backup says what is wrong.
    auto replaced = ReplacedEscrowKey(*session.ma, ma, ec->escrow_key_id);
    if (!replaced && replaced.error().code() != Code::kUnsupported) {
      return Error(replaced.error().WithContext("finding the MA's current escrow key"));
    }
    if (replaced && *replaced) {
      FetchedMaKey& current = **replaced;
      lms.Progress("package " + id + " is escrowed to " + ec->escrow_key_id +
                   ", which the MA has replaced: the store pins its escrow key " + current.key_id +
                   " for the next backups");
      out.escrow_key_rotated = EscrowKeyRotation{.from = ec->escrow_key_id, .to = current.key_id};
      custody.escrow_key_id = current.key_id;
      custody.escrow_public = std::move(current.public_area);
    } else if (state != nullptr && state->custody.mode == CustodyMode::kEscrow &&
               state->custody.escrow_key_id == ec->escrow_key_id &&
               !state->custody.escrow_public.empty()) {
      custody.escrow_public = state->custody.escrow_public;
    } else {
      TPMMA_ASSIGN_OR_RETURN(FetchedMaKey key, GetCheckedMaKey(*session.ma, ma, ec->escrow_key_id,
                                                               client::MaKeyRole::kEscrow));
      custody.escrow_public = std::move(key.public_area);
    }
  } else {
    const auto& rc = std::get<package::RecoveryCodeCustody>(model->custody);
    out.custody = std::string(CustodyModeName(CustodyMode::kRecoveryCode));
    if (!rc.verifier || rc.verifier->empty()) {
      return Error(
          Code::kUnsupported,
          "package " + id + " has no recovery-code verifier; lms cannot check a code for it");
    }
    custody.mode = CustodyMode::kRecoveryCode;
    custody.kdf = rc.kdf;
    custody.salt = rc.salt;
    custody.n = rc.n;
    custody.r = rc.r;
    custody.p = rc.p;
    custody.verifier = *rc.verifier;
    const bool store_custody = state != nullptr && SameRecoveryCode(state->custody, custody);
    UnsealIf(store_custody);
    if (inner.empty() && store_custody && !target.checked_inner_key.empty()) {
      inner = target.checked_inner_key;
      out.used_recovery_code = true;
      out.inner_key_source = "recovery-code";
    }
    if (inner.empty()) {
      if (!o.recovery_code) {
        return Error(Code::kInvalidArgument,
                     "restoring package " + id + " needs the recovery code shown at lms init " +
                         (target.new_store ? std::string("(a new key store has no copy of the "
                                                         "inner key sealed to this TPM)")
                                           : std::string("(the copy of the inner key sealed to "
                                                         "this TPM is gone with its SRK)")));
      }
      TPMMA_ASSIGN_OR_RETURN(SecureString code, o.recovery_code());
      lms.Progress("checking the recovery code");
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
      inner = std::move(*derived);
      out.used_recovery_code = true;
      out.inner_key_source = "recovery-code";
    }
  }

  lms.Progress("importing the MRK under this TPM's SRK");
  TPMMA_ASSIGN_OR_RETURN(TPM2B_PRIVATE duplicate, tpm::Unmarshal<TPM2B_PRIVATE>(got->duplicate));
  TPMMA_ASSIGN_OR_RETURN(TPM2B_ENCRYPTED_SECRET seed,
                         tpm::Unmarshal<TPM2B_ENCRYPTED_SECRET>(got->encrypted_seed));
  auto imported = tpm->Import(srk, mrk_public, duplicate, seed, inner);
  if (!imported) return Error(imported.error().WithContext("importing the MRK"));
  loaded.mrk_private = *imported;
  esys::KeyBlob mrk_blob{.public_area = mrk_public, .private_area = *imported};
  auto mrk_loaded = tpm->Load(srk, mrk_blob);
  if (!mrk_loaded) return Error(mrk_loaded.error().WithContext("loading the imported MRK"));
  esys::Object mrk = std::move(*mrk_loaded);

  // Every key in the package must load under it before anything is written.
  lms.Progress("checking the " + std::to_string(model->child_keys.size()) + " keys in the package");
  for (const package::ChildKey& c : model->child_keys) {
    const std::string what = "key " + c.key_id + " ('" + c.label + "') in package " + id;
    esys::KeyBlob blob;
    TPMMA_ASSIGN_OR_RETURN(blob.public_area, tpm::Unmarshal<TPM2B_PUBLIC>(c.public_area));
    TPMMA_ASSIGN_OR_RETURN(blob.private_area, tpm::Unmarshal<TPM2B_PRIVATE>(c.private_area));
    auto type = ClassifyChild(blob.public_area.publicArea);
    if (!type) return Error(type.error().WithContext(what));
    if (UsageOf(*type) != c.usage) {
      return Error(Code::kIntegrityFailure, what + ": its usage does not match its key");
    }
    auto child = tpm->Load(mrk, blob);
    if (!child) {
      return Error(child.error().WithContext(what + " does not load under the restored MRK"));
    }
    child->reset();
    TPMMA_ASSIGN_OR_RETURN(Bytes name, tpm::ComputeName(blob.public_area.publicArea));
    loaded.children.push_back({.type = *type, .name = std::move(name)});
  }
  loaded.model = std::move(*model);
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

// `lms restore --new-store`: the disk died with the board, so there is no store to restore
// into. The package alone says what the store held (the MRK, every child, the custody);
// the MA says which key signed it and which MA key the MRK duplicates to.
Result<RestoreResult> RestoreIntoNewStore(Lms& lms, const MaSettings& ma, const RestoreOptions& o) {
  KeyStore& store = lms.store();
  auto initialised = [&]() {
    return Error(Code::kAlreadyExists,
                 "the key store " + store.dir() +
                     " is already initialised: lms restore --new-store only builds a key store "
                     "where there is none (the disk was replaced); to bring this store's keys "
                     "back, run lms restore without --new-store");
  };
  if (store.Initialized()) return initialised();
  if (o.package_id.empty() && o.from_platform.empty()) {
    return Error(Code::kInvalidArgument,
                 "lms restore --new-store needs --from OLD (the platform the keys were backed "
                 "up from; the helpdesk approves this one for it) or --package ID (lms query "
                 "lists the packages this platform may restore): a new TPM has no backup of "
                 "its own to pick");
  }
  TPMMA_RETURN_IF_ERROR(store.CreateLayout());
  TPMMA_RETURN_IF_ERROR(store.Lock());
  if (store.Initialized()) return initialised();  // another lms got there first

  TPMMA_ASSIGN_OR_RETURN(Session session, OpenSession(lms, ma, false));
  TPMMA_RETURN_IF_ERROR(lms.OpenForMa());
  RestoreResult out;
  out.new_store = true;
  out.platform_id = session.platform_id();
  out.srk_changed = !lms.srk_matches_store();
  TPMMA_ASSIGN_OR_RETURN(std::string id, ChoosePackage(session, ma, o, store));

  // The new store backs up to the MA key its MRK is bound to (authPolicy =
  // PolicyDuplicationSelect to that key's Name): a store pinned to another key could never
  // duplicate its MRK. So the MA's current key must be the MRK's.
  FetchedMaKey ma_key;
  RestoreTarget target;
  target.new_store = true;
  target.check_mrk = [&](const TPM2B_PUBLIC& mrk_public, const Bytes&) -> Status {
    TPMMA_ASSIGN_OR_RETURN(ma_key,
                           GetCheckedMaKey(*session.ma, ma, {}, client::MaKeyRole::kStorage));
    TPMMA_ASSIGN_OR_RETURN(TPM2B_DIGEST policy, esys::DuplicationSelectPolicy(ma_key.name));
    if (!std::ranges::equal(tpm::Tpm2bView(policy),
                            tpm::Tpm2bView(mrk_public.publicArea.authPolicy))) {
      return Status(Code::kConflict,
                    "the MRK in package " + id + " is not bound to the MA's current key (" +
                        ma_key.key_id + ", Name " + HexEncode(ma_key.name) +
                        "): its authPolicy is not PolicyDuplicationSelect to that key, so a new "
                        "store could not back it up; nothing was restored");
    }
    return Status::Ok();
  };
  TPMMA_ASSIGN_OR_RETURN(LoadedPackage loaded,
                         DownloadAndLoad(lms, ma, session, id, o, target, out));
  const package::MigrationPackage& model = loaded.model;

  const int64_t now = lms.env()->NowUnixSeconds();
  const int64_t created = model.creation_time > 0 ? model.creation_time : now;
  // The package has no ids or origins for its keys beyond the children's: the MRK gets a
  // new id, and every key counts as made by lms and backed up by this package.
  KeyRecord mrk_record;
  TPMMA_ASSIGN_OR_RETURN(mrk_record.id, package::NewUuid());
  mrk_record.label = "mrk";
  mrk_record.type = KeyType::kMrk;
  mrk_record.parent = "srk";
  mrk_record.migratable = true;
  mrk_record.origin = "lms";
  mrk_record.created = created;
  mrk_record.backed_up_at = model.creation_time;
  mrk_record.public_area = model.mrk.public_area;
  TPMMA_ASSIGN_OR_RETURN(mrk_record.private_area, tpm::Marshal(loaded.mrk_private));
  mrk_record.name = loaded.mrk_name;
  std::set<std::string> labels = {mrk_record.label};
  std::vector<KeyRecord> records;
  for (size_t i = 0; i < model.child_keys.size(); ++i) {
    const package::ChildKey& c = model.child_keys[i];
    KeyRecord r;
    r.id = c.key_id;
    r.label = UniqueLabel(labels, c.label);
    r.type = loaded.children[i].type;
    r.parent = mrk_record.id;
    r.migratable = true;
    r.origin = "lms";
    r.created = created;
    r.backed_up_at = model.creation_time;
    r.public_area = c.public_area;
    r.private_area = c.private_area;
    r.name = loaded.children[i].name;
    out.keys.push_back({.key = r, .outcome = "added"});
    records.push_back(std::move(r));
  }

  StoreState state;
  state.initialized_at = now;
  TPMMA_RETURN_IF_ERROR(RecordSrk(lms, state));
  state.mrk_id = mrk_record.id;
  state.ma_key_public = ma_key.public_area;
  state.ma_key_name = ma_key.name;
  state.custody = loaded.custody;
  TPMMA_RETURN_IF_ERROR(SealInnerKey(lms, loaded.inner, state.custody));
  RecordLastBackup(state, out);
  // The source platform's signing key is a known signer from now on, so that a later lms
  // restore of its packages checks them as an initialised store does.
  TPMMA_ASSIGN_OR_RETURN(MaState m, store.ReadMaState());
  const bool known = std::any_of(m.signers.begin(), m.signers.end(), [&](const KnownSigner& k) {
    return k.public_area == loaded.signer;
  });
  if (!known) {
    m.signers.push_back({.platform_id = model.source_platform_id, .public_area = loaded.signer});
    if (m.signers.size() > kMaxKnownSigners) m.signers.erase(m.signers.begin());
  }

  // Keys first, ma.json next, store.json last: it is what makes the store initialised, so
  // a restore cut short leaves none, and its keys are set aside by the next attempt (or
  // lms init) like those of an init that did not finish.
  Status written = [&]() -> Status {
    // By name, not parsed: a damaged leftover must not stand in the way.
    TPMMA_ASSIGN_OR_RETURN(std::vector<std::string> names,
                           store.env()->ListDir(store.dir() + "/keys"));
    if (std::any_of(names.begin(), names.end(),
                    [](const std::string& n) { return n.ends_with(".json"); })) {
      TPMMA_ASSIGN_OR_RETURN(std::string retired, store.Retire());
      out.retired_to = retired;
    }
    for (const KeyRecord& r : records) TPMMA_RETURN_IF_ERROR(store.PutKey(r));
    TPMMA_RETURN_IF_ERROR(store.PutKey(mrk_record));
    TPMMA_RETURN_IF_ERROR(store.WriteMaState(m));
    return store.WriteState(state);
  }();
  if (!written.ok()) {
    return Error(written.WithContext(
        "writing the new key store " + store.dir() +
        " (it is not initialised: there is no store.json; key files this attempt wrote to keys/ "
        "are set aside by the next lms restore --new-store or lms init)"));
  }
  return out;
}

// Restores into the initialised store the backup was made from (it moves with the disk).
Result<RestoreResult> RestoreIntoStore(Lms& lms, const MaSettings& ma, const RestoreOptions& o) {
  KeyStore& store = lms.store();
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

  TPMMA_ASSIGN_OR_RETURN(Session session, OpenSession(lms, ma, false));
  TPMMA_RETURN_IF_ERROR(lms.OpenForMa());
  RestoreResult out;
  out.platform_id = session.platform_id();
  out.srk_changed = !lms.srk_matches_store();
  TPMMA_ASSIGN_OR_RETURN(std::string id, ChoosePackage(session, ma, o, store));

  // Without the sealed copy (another or a cleared TPM) the recovery code is needed. Every
  // package this store can restore carries its MRK, hence the custody it was made with, so
  // a mistyped code is caught here, against the store's verifier, before the Download uses
  // a helpdesk approval up. The code is asked once.
  RestoreOptions opts = o;
  RestoreTarget target;
  if (!lms.srk_matches_store() && state.custody.mode == CustodyMode::kRecoveryCode &&
      !state.custody.verifier.empty() && o.recovery_code) {
    TPMMA_ASSIGN_OR_RETURN(SecureString code, o.recovery_code());
    lms.Progress("checking the recovery code");
    auto derived = DeriveInnerKey(code, state.custody);
    if (!derived && derived.error().code() == Code::kPermissionDenied) {
      return Error(Code::kPermissionDenied,
                   "wrong recovery code: it is not the one shown at lms init for these keys; "
                   "nothing was changed, and package " +
                       id + " was not downloaded (an approval for it is still unused)");
    }
    if (!derived) return Error(derived.error().WithContext("the recovery code"));
    target.checked_inner_key = std::move(*derived);
    opts.recovery_code = [code]() -> Result<SecureString> { return code; };
  }

  // The package is checked with the package-signing keys this store has signed with.
  target.state = &state;
  TPMMA_ASSIGN_OR_RETURN(MaState m, store.ReadMaState());
  for (auto it = m.signers.rbegin(); it != m.signers.rend(); ++it) {
    target.signers.push_back(it->public_area);
  }
  if (!m.signing_public.empty()) target.signers.push_back(m.signing_public);
  target.check_mrk = [&](const TPM2B_PUBLIC&, const Bytes& mrk_name) -> Status {
    if (mrk_name == mrk_record.name) return Status::Ok();
    return Status(Code::kConflict,
                  "package " + id + " holds another MRK (" + HexEncode(mrk_name) +
                      ") than this key store (" + mrk_record.id + ", " +
                      HexEncode(mrk_record.name) +
                      "); it can only be restored into the key store it was backed up from");
  };
  TPMMA_ASSIGN_OR_RETURN(LoadedPackage loaded,
                         DownloadAndLoad(lms, ma, session, id, opts, target, out));
  const package::MigrationPackage& model = loaded.model;

  // Every key in the package, as an update of its store entry or a new one.
  std::map<std::string, const KeyRecord*> by_id;
  std::set<std::string> labels;
  for (const KeyRecord& k : keys) {
    by_id[k.id] = &k;
    labels.insert(k.label);
  }
  std::vector<KeyRecord> records;
  const int64_t now = lms.env()->NowUnixSeconds();
  for (size_t i = 0; i < model.child_keys.size(); ++i) {
    const package::ChildKey& c = model.child_keys[i];
    KeyRecord r;
    auto existing = by_id.find(c.key_id);
    if (existing != by_id.end()) {
      r = *existing->second;
      out.keys.push_back({.key = {}, .outcome = "updated"});
    } else {
      r.id = c.key_id;
      r.label = UniqueLabel(labels, c.label);
      r.origin = "restored";
      r.created = model.creation_time > 0 ? model.creation_time : now;
      r.migratable = true;
      out.keys.push_back({.key = {}, .outcome = "added"});
    }
    r.type = loaded.children[i].type;
    r.parent = mrk_record.id;
    r.public_area = c.public_area;
    r.private_area = c.private_area;
    r.name = loaded.children[i].name;
    if (!r.backed_up_at) r.backed_up_at = model.creation_time;
    out.keys.back().key = r;
    records.push_back(std::move(r));
  }
  std::set<std::string> in_package;
  for (const auto& c : model.child_keys) in_package.insert(c.key_id);
  for (const KeyRecord& k : keys) {
    if (k.type != KeyType::kMrk && in_package.count(k.id) == 0) ++out.kept;
  }

  // The inner key sealed again, under the SRK in use now; the store's custody is the
  // package's from now on.
  InnerKeyCustody new_custody = loaded.custody;
  if (out.inner_key_source == "sealed") {
    new_custody.sealed_public = state.custody.sealed_public;
    new_custody.sealed_private = state.custody.sealed_private;
  } else {
    TPMMA_RETURN_IF_ERROR(SealInnerKey(lms, loaded.inner, new_custody));
  }
  TPMMA_RETURN_IF_ERROR(RecordSrk(lms, state));

  // Keys first, the MRK next, store.json last: until it is written the store still names
  // the old SRK, and a restore cut short is simply run again.
  for (const KeyRecord& r : records) {
    auto existing = by_id.find(r.id);
    if (existing != by_id.end() && *existing->second == r) continue;  // unchanged
    TPMMA_RETURN_IF_ERROR(store.PutKey(r));
  }
  mrk_record.parent = "srk";
  TPMMA_ASSIGN_OR_RETURN(mrk_record.private_area, tpm::Marshal(loaded.mrk_private));
  if (!mrk_record.backed_up_at) mrk_record.backed_up_at = model.creation_time;
  TPMMA_RETURN_IF_ERROR(store.PutKey(mrk_record));
  state.custody = new_custody;
  RecordLastBackup(state, out);
  TPMMA_RETURN_IF_ERROR(store.WriteState(state));
  return out;
}

}  // namespace

Result<RestoreResult> Restore(Lms& lms, const MaSettings& ma, const RestoreOptions& o) {
  return o.new_store ? RestoreIntoNewStore(lms, ma, o) : RestoreIntoStore(lms, ma, o);
}

}  // namespace tpmma::lms
