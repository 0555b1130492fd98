// SPDX-License-Identifier: GPL-2.0-or-later
// lms and the MA: settings, authenticate, backup (DESIGN 4.2), query, delete, status; and
// the session backup and restore share (ma_session.h). Restore is in restore.cc.
#include "client/lms/remote.h"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <tuple>
#include <utility>

#include "client/lms/custody.h"
#include "client/lms/ma_session.h"
#include "client/ma/platform.h"
#include "common/openssl.h"
#include "common/text.h"
#include "schema/package.h"
#include "schema/package_xml.h"
#include "tpm/escrow.h"
#include "tpm/marshal.h"
#include "tpm/public.h"

namespace tpmma::lms {

namespace {

constexpr size_t kMaxCertFile = 256 * 1024;
constexpr uint32_t kQueryPageSize = 200;
constexpr size_t kMaxQueryPages = 100;

std::string GetEnv(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr ? std::string(v) : std::string();
}

// DER certificates from PEM (one or more) or DER files.
Result<std::vector<Bytes>> ReadCertificates(const std::vector<std::string>& files) {
  std::vector<Bytes> out;
  for (const std::string& f : files) {
    auto data = Env::Default()->ReadFile(f, kMaxCertFile);
    if (!data) return Error(data.error().WithContext("EK intermediate certificate " + f));
    const std::string_view text(reinterpret_cast<const char*>(data->data()), data->size());
    if (text.find("-----BEGIN CERTIFICATE-----") != std::string_view::npos) {
      BioPtr bio(BIO_new_mem_buf(data->data(), static_cast<int>(data->size())));
      size_t found = 0;
      while (true) {
        X509Ptr cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
        if (!cert) break;
        const int len = i2d_X509(cert.get(), nullptr);
        if (len <= 0) break;
        Bytes der(static_cast<size_t>(len));
        unsigned char* p = der.data();
        i2d_X509(cert.get(), &p);
        out.push_back(std::move(der));
        ++found;
      }
      ERR_clear_error();
      if (found == 0) {
        return Error(Code::kInvalidArgument, "no certificate could be read from " + f);
      }
    } else {
      const unsigned char* p = data->data();
      X509Ptr cert(d2i_X509(nullptr, &p, static_cast<long>(data->size())));
      if (!cert) {
        ERR_clear_error();
        return Error(Code::kInvalidArgument, f + " is neither a PEM nor a DER certificate");
      }
      out.push_back(std::move(*data));
    }
  }
  return out;
}

Result<std::unique_ptr<client::MaClient>> Connect(const MaSettings& s) {
  return client::MaClient::Create({.url = s.url, .ca_file = s.ca_file, .timeout_s = s.timeout_s});
}

bool TpmSideFailure(const Status& s) {
  return s.code() == Code::kTpmError || s.code() == Code::kIntegrityFailure;
}

std::string Join(const std::vector<std::string>& items) {
  std::string out;
  for (const std::string& i : items) out += (out.empty() ? "" : ", ") + i;
  return out.empty() ? "none" : out;
}

}  // namespace

// The MA's answer in plain words, naming the MA.
Status MaFailure(const Status& s, const MaSettings& ma, std::string_view doing) {
  if (s.code() == Code::kUnavailable) {
    return Status(Code::kUnavailable, "cannot reach the MA at " + ma.url + " (" +
                                          std::string(doing) + "): " + s.message());
  }
  return Status(s.code(), "the MA refused " + std::string(doing) + ": " + s.message());
}

// Authenticate (DESIGN 4.1) with the AK kept in ma.json (a new one after a TPM clear) and,
// for backups, the package-signing key kept there too. Writes ma.json on success.
Result<Session> OpenSession(Lms& lms, const MaSettings& s, bool with_signing_key) {
  TPMMA_ASSIGN_OR_RETURN(std::vector<Bytes> intermediates, ReadCertificates(s.ek_intermediates));
  Session out;
  TPMMA_ASSIGN_OR_RETURN(out.ma, Connect(s));
  TPMMA_ASSIGN_OR_RETURN(esys::Tpm * tpm, lms.OpenForMa());
  const esys::Object& srk = lms.current_srk();
  KeyStore& store = lms.store();
  TPMMA_ASSIGN_OR_RETURN(MaState m, store.ReadMaState());

  const bool have_ak = !m.ak_public.empty() && !m.ak_private.empty() && m.ak_srk_name == srk.name();
  auto make_ak = [&]() -> Status {
    lms.Progress("making an attestation key (AK) under the endorsement key");
    TPMMA_ASSIGN_OR_RETURN(out.ak, client::CreateAttestationKey(*tpm, esys::KeyAlg::kEccP256));
    out.new_ak = true;
    return Status::Ok();
  };
  if (have_ak) {
    TPMMA_ASSIGN_OR_RETURN(out.ak.public_area, tpm::Unmarshal<TPM2B_PUBLIC>(m.ak_public));
    TPMMA_ASSIGN_OR_RETURN(out.ak.private_area, tpm::Unmarshal<TPM2B_PRIVATE>(m.ak_private));
  } else {
    TPMMA_RETURN_IF_ERROR(make_ak());
  }
  std::optional<esys::KeyBlob> signing;
  if (with_signing_key && !m.signing_public.empty() && !m.signing_private.empty()) {
    esys::KeyBlob b;
    TPMMA_ASSIGN_OR_RETURN(b.public_area, tpm::Unmarshal<TPM2B_PUBLIC>(m.signing_public));
    TPMMA_ASSIGN_OR_RETURN(b.private_area, tpm::Unmarshal<TPM2B_PRIVATE>(m.signing_private));
    signing = b;
  }
  client::AuthenticateOptions o;
  o.ek_intermediates = std::move(intermediates);
  o.with_signing_key = with_signing_key;
  o.signing_key_type = esys::ChildType::kEccSign;
  o.reuse_signing_key = signing ? &*signing : nullptr;

  lms.Progress("authenticating to the MA at " + s.url);
  auto session = client::Authenticate(*out.ma, *tpm, out.ak, &srk, o);
  if (!session && !out.new_ak && TpmSideFailure(session.error())) {
    // The kept AK no longer loads (the endorsement hierarchy changed): make a new one.
    TPMMA_RETURN_IF_ERROR(make_ak());
    session = client::Authenticate(*out.ma, *tpm, out.ak, &srk, o);
  }
  if (!session) {
    if (session.error().code() == Code::kUnavailable || !TpmSideFailure(session.error())) {
      return Error(MaFailure(session.error(), s, "to authenticate this TPM"));
    }
    return Error(session.error().WithContext("authenticating to the MA"));
  }
  out.platform = std::move(*session);

  m.platform_id = out.platform_id();
  m.authenticated_at = lms.env()->NowUnixSeconds();
  TPMMA_ASSIGN_OR_RETURN(m.ak_public, tpm::Marshal(out.ak.public_area));
  TPMMA_ASSIGN_OR_RETURN(m.ak_private, tpm::Marshal(out.ak.private_area));
  m.ak_srk_name = srk.name();
  if (with_signing_key) {
    TPMMA_ASSIGN_OR_RETURN(m.signing_public, tpm::Marshal(out.platform.signing_blob.public_area));
    TPMMA_ASSIGN_OR_RETURN(m.signing_private, tpm::Marshal(out.platform.signing_blob.private_area));
    const bool known = std::any_of(m.signers.begin(), m.signers.end(), [&](const KnownSigner& k) {
      return k.public_area == m.signing_public;
    });
    if (!known) {
      m.signers.push_back({.platform_id = m.platform_id, .public_area = m.signing_public});
      if (m.signers.size() > kMaxKnownSigners) m.signers.erase(m.signers.begin());
    }
  }
  TPMMA_RETURN_IF_ERROR(store.CreateLayout());
  TPMMA_RETURN_IF_ERROR(store.WriteMaState(m));
  return out;
}

Result<std::vector<client::PackageDescriptor>> QueryAll(Session& s, const MaSettings& ma,
                                                        const client::QueryFilter& filter) {
  std::vector<client::PackageDescriptor> out;
  std::string page_token;
  for (size_t page = 0; page < kMaxQueryPages; ++page) {
    auto r = s.ma->Query(s.token(), filter, kQueryPageSize, page_token);
    if (!r) return Error(MaFailure(r.error(), ma, "the query"));
    for (auto& d : r->packages) out.push_back(std::move(d));
    if (r->next_page_token.empty()) break;
    page_token = r->next_page_token;
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) {
    return std::tie(a.created_at, a.uploaded_at, a.package_id) >
           std::tie(b.created_at, b.uploaded_at, b.package_id);
  });
  return out;
}

package::KeyUsage UsageOf(KeyType t) {
  switch (t) {
    case KeyType::kEccSign:
    case KeyType::kRsaSign:
      return package::KeyUsage::kSign;
    case KeyType::kRsaDecrypt:
      return package::KeyUsage::kDecrypt;
    case KeyType::kSealed:
      return package::KeyUsage::kSeal;
    case KeyType::kMrk:
      return package::KeyUsage::kStorage;
  }
  return package::KeyUsage::kSign;
}

Result<KeyRecord> FindMrk(const StoreState& state, const std::vector<KeyRecord>& keys) {
  for (const KeyRecord& k : keys) {
    if (k.id == state.mrk_id) {
      if (k.type != KeyType::kMrk) {
        return Error(Code::kCorruption, "store.json names key " + k.id +
                                            " as the MRK, but it is a " +
                                            std::string(KeyTypeName(k.type)) + " key");
      }
      return k;
    }
  }
  return Error(Code::kCorruption, "the key store has no record of its MRK " + state.mrk_id);
}

// GetMAKey(key_id) checked for `role` (client::VerifyMaKey).
Result<FetchedMaKey> GetCheckedMaKey(client::MaClient& client, const MaSettings& ma,
                                     std::string_view key_id, client::MaKeyRole role) {
  const bool escrow = role == client::MaKeyRole::kEscrow;
  auto key = client.GetMAKey(key_id);
  if (!key) {
    return Error(MaFailure(key.error(), ma,
                           escrow ? "to give its escrow key " + std::string(key_id) + " (GetMAKey)"
                                  : std::string("to give its key (GetMAKey)")));
  }
  auto verified = client::VerifyMaKey(*key, role);
  if (!verified) {
    return Error(
        verified.error().WithContext(std::string(escrow ? "the MA escrow key" : "the MA key") +
                                     " from " + ma.url + " does not check out"));
  }
  return FetchedMaKey{.key_id = verified->key_id,
                      .public_area = key->public_area,
                      .name = std::move(verified->name)};
}

Result<MaSettings> ResolveMaSettings(const KeyStore& store, const MaFlags& flags) {
  TPMMA_ASSIGN_OR_RETURN(StoreConfig config, store.ReadConfig());
  MaSettings s;
  s.url = !flags.url.empty() ? flags.url : GetEnv("LMS_MA_URL");
  if (s.url.empty()) s.url = config.ma_url;
  s.ca_file = !flags.ca_file.empty() ? flags.ca_file : GetEnv("LMS_MA_CA");
  if (s.ca_file.empty()) s.ca_file = config.ma_ca;
  s.ek_intermediates =
      !flags.ek_intermediates.empty() ? flags.ek_intermediates : config.ek_intermediates;
  if (s.url.empty()) {
    return Error(Code::kInvalidArgument,
                 "no MA given: use --ma https://HOST:PORT, set LMS_MA_URL, or record it in the "
                 "key store (lms init --ma URL --ma-ca FILE does)");
  }
  if (s.ca_file.empty()) {
    return Error(Code::kInvalidArgument,
                 "no CA certificate for the MA's TLS certificate: use --ma-ca FILE, set "
                 "LMS_MA_CA, or record it in the key store (lms init --ma URL --ma-ca FILE)");
  }
  return s;
}

Result<FetchedMaKey> FetchMaKey(const MaSettings& ma, std::string_view key_id) {
  TPMMA_ASSIGN_OR_RETURN(auto client, Connect(ma));
  return GetCheckedMaKey(*client, ma, key_id, client::MaKeyRole::kStorage);
}

namespace {

bool OffersEscrow(const client::ServiceInfo& info) {
  return std::find(info.custody_modes.begin(), info.custody_modes.end(), "Escrow") !=
         info.custody_modes.end();
}

// The escrow key among the MA keys `info` (GetMAServiceInfo of an MA that offers escrow)
// lists: `key_id`, else the one whose public area is an escrow key.
Result<FetchedMaKey> FindEscrowKey(client::MaClient& client, const MaSettings& ma,
                                   const client::ServiceInfo& info, std::string_view key_id) {
  if (!key_id.empty()) return GetCheckedMaKey(client, ma, key_id, client::MaKeyRole::kEscrow);
  // The first MAKeyId is the storage key; of the others, the escrow key is the one whose
  // public area is shaped like one (another storage key may be listed during a rotation).
  std::vector<FetchedMaKey> found;
  for (size_t i = 1; i < info.ma_key_ids.size(); ++i) {
    const std::string& id = info.ma_key_ids[i];
    auto key = client.GetMAKey(id);
    if (!key) return Error(MaFailure(key.error(), ma, "to give its key " + id + " (GetMAKey)"));
    auto pub = tpm::Unmarshal<TPM2B_PUBLIC>(key->public_area);
    if (pub && !tpm::CheckEscrowKey(pub->publicArea).ok()) continue;
    auto verified = client::VerifyMaKey(*key, client::MaKeyRole::kEscrow);
    if (!verified) {
      return Error(verified.error().WithContext("the MA escrow key " + id + " from " + ma.url +
                                                " does not check out"));
    }
    found.push_back({.key_id = verified->key_id,
                     .public_area = key->public_area,
                     .name = std::move(verified->name)});
  }
  if (found.empty()) {
    return Error(Code::kNotFound, "the MA at " + ma.url +
                                      " offers escrow custody but lists no escrow key (its key "
                                      "ids: " +
                                      Join(info.ma_key_ids) + ")");
  }
  if (found.size() > 1) {
    std::vector<std::string> ids;
    for (const FetchedMaKey& k : found) ids.push_back(k.key_id);
    return Error(Code::kConflict, "the MA at " + ma.url + " lists " + std::to_string(found.size()) +
                                      " escrow keys (" + Join(ids) +
                                      "); choose one with --escrow-key-id");
  }
  return std::move(found.front());
}

}  // namespace

Result<FetchedMaKey> FetchEscrowKey(const MaSettings& ma, std::string_view key_id) {
  TPMMA_ASSIGN_OR_RETURN(auto client, Connect(ma));
  auto info = client->GetMAServiceInfo();
  if (!info) return Error(MaFailure(info.error(), ma, "to describe itself (GetMAServiceInfo)"));
  if (!OffersEscrow(*info)) {
    return Error(Code::kUnsupported,
                 "the MA at " + ma.url +
                     " does not offer escrow custody (it offers: " + Join(info->custody_modes) +
                     "); use --custody recovery-code, or an MA that does");
  }
  return FindEscrowKey(*client, ma, *info, key_id);
}

Result<std::optional<FetchedMaKey>> ReplacedEscrowKey(client::MaClient& client,
                                                      const MaSettings& ma,
                                                      std::string_view pinned_key_id) {
  auto info = client.GetMAServiceInfo();
  if (!info) return Error(MaFailure(info.error(), ma, "to describe itself (GetMAServiceInfo)"));
  if (!OffersEscrow(*info)) {
    return Error(Code::kUnsupported, "the MA at " + ma.url +
                                         " no longer offers escrow custody (it offers: " +
                                         Join(info->custody_modes) + ")");
  }
  // MAKeyId is the storage key, then the escrow key the MA takes at Upload; a retired
  // escrow key is not listed. While the pinned one is, nothing more is asked.
  const auto& ids = info->ma_key_ids;
  if (ids.size() > 1 && std::find(ids.begin() + 1, ids.end(), pinned_key_id) != ids.end()) {
    return std::nullopt;
  }
  TPMMA_ASSIGN_OR_RETURN(FetchedMaKey current, FindEscrowKey(client, ma, *info, {}));
  return current;
}

Result<AuthenticateResult> Authenticate(Lms& lms, const MaSettings& ma) {
  TPMMA_RETURN_IF_ERROR(lms.store().CreateLayout());
  TPMMA_RETURN_IF_ERROR(lms.store().Lock());
  TPMMA_ASSIGN_OR_RETURN(Session s, OpenSession(lms, ma, false));
  return AuthenticateResult{.platform_id = s.platform_id(),
                            .expires_at = s.platform.session.expires_at,
                            .new_ak = s.new_ak};
}

Result<bool> ChangedSinceLastBackup(Lms& lms) {
  TPMMA_ASSIGN_OR_RETURN(StoreState state, lms.store().ReadState());
  if (!state.last_backup_at) return true;
  TPMMA_ASSIGN_OR_RETURN(std::vector<KeyRecord> keys, lms.store().ListKeys());
  return std::any_of(keys.begin(), keys.end(), [](const KeyRecord& k) {
    return k.migratable && !k.backed_up_at.has_value();
  });
}

Result<BackupResult> Backup(Lms& lms, const MaSettings& ma, const BackupOptions& o) {
  KeyStore& store = lms.store();
  TPMMA_ASSIGN_OR_RETURN(StoreState state, store.ReadState());
  TPMMA_RETURN_IF_ERROR(store.Lock());
  BackupResult out;
  TPMMA_ASSIGN_OR_RETURN(bool changed, ChangedSinceLastBackup(lms));
  if (!changed && !o.full) {
    out.reason = "nothing changed since the last backup";
    if (state.last_backup_package_id) out.reason += " (package " + *state.last_backup_package_id;
    if (state.last_backup_at) out.reason += ", " + Utc(*state.last_backup_at) + ")";
    out.package_id = state.last_backup_package_id.value_or("");
    out.created_at = state.last_backup_at.value_or(0);
    return out;
  }
  TPMMA_ASSIGN_OR_RETURN(std::vector<KeyRecord> keys, store.ListKeys());
  TPMMA_ASSIGN_OR_RETURN(KeyRecord mrk_record, FindMrk(state, keys));
  TPMMA_ASSIGN_OR_RETURN(esys::Tpm * tpm, lms.tpm());

  // The MRK duplicated to the MA key with the inner key (kept sealed to this TPM since
  // init, for unattended backups): done once, whatever the MA does.
  auto inner = lms.UnsealInnerKey();
  if (!inner) {
    return Error(inner.error().WithContext(
        "unsealing the inner wrapper key (kept sealed to this TPM since lms init)"));
  }
  TPMMA_ASSIGN_OR_RETURN(TPM2B_PUBLIC ma_public, tpm::Unmarshal<TPM2B_PUBLIC>(state.ma_key_public));
  lms.Progress("duplicating the MRK to the MA key");
  esys::Duplicated dup;
  {
    TPMMA_ASSIGN_OR_RETURN(esys::Object mrk, lms.LoadKey(mrk_record, nullptr));
    TPMMA_ASSIGN_OR_RETURN(dup, tpm->Duplicate(mrk, ma_public, esys::InnerWrap::kGiven, *inner));
  }

  package::MigrationPackage model;
  model.mrk.public_area = mrk_record.public_area;
  TPMMA_ASSIGN_OR_RETURN(model.mrk.duplicate, tpm::Marshal(dup.duplicate));
  TPMMA_ASSIGN_OR_RETURN(model.mrk.encrypted_seed, tpm::Marshal(dup.encrypted_seed));
  model.mrk.symmetric = package::SymmetricAlgorithm::kAes128Cfb;
  std::vector<const KeyRecord*> carried;
  for (const KeyRecord& k : keys) {
    if (k.type == KeyType::kMrk || k.parent != state.mrk_id || !k.migratable) continue;
    package::ChildKey c;
    c.key_id = k.id;
    c.label = k.label;
    c.usage = UsageOf(k.type);
    c.public_area = k.public_area;
    c.private_area = k.private_area;
    model.child_keys.push_back(std::move(c));
    carried.push_back(&k);
  }
  // Escrow custody: the inner key encrypted to the MA's escrow key (the one the store pins,
  // unless the MA has replaced it: below), bound to the MRK's Name as the MA recomputes it
  // from the package, and to the uploading platform (known once a session is open, below).
  std::optional<TPM2B_PUBLIC> escrow_public;
  Bytes mrk_name;
  if (state.custody.mode == CustodyMode::kEscrow) {
    TPMMA_ASSIGN_OR_RETURN(escrow_public,
                           tpm::Unmarshal<TPM2B_PUBLIC>(state.custody.escrow_public));
    TPMMA_ASSIGN_OR_RETURN(TPM2B_PUBLIC mrk_public,
                           tpm::Unmarshal<TPM2B_PUBLIC>(mrk_record.public_area));
    TPMMA_ASSIGN_OR_RETURN(mrk_name, tpm::ComputeName(mrk_public.publicArea));
  } else {
    package::RecoveryCodeCustody custody;
    custody.kdf = state.custody.kdf;
    custody.salt = state.custody.salt;
    custody.n = state.custody.n;
    custody.r = state.custody.r;
    custody.p = state.custody.p;
    custody.verifier = state.custody.verifier;
    model.custody = custody;
  }
  out.child_keys = model.child_keys.size();

  // Authenticate, sign, upload; in agent mode again after a back-off while the MA cannot
  // be reached. Nothing local changes before the MA acknowledged the upload.
  const int attempts = std::max(1, o.attempts);
  int delay_ms = std::max(0, o.retry_delay_ms);
  Status last;
  std::optional<client::UploadResult> uploaded;
  // The MA's escrow key when it is no longer the one the store pins (asked each attempt).
  std::optional<FetchedMaKey> new_escrow_key;
  for (int attempt = 1; attempt <= attempts && !uploaded; ++attempt) {
    out.attempts = attempt;
    if (attempt > 1) {
      char wait[32];
      std::snprintf(wait, sizeof wait, "%.1f s", delay_ms / 1000.0);
      lms.Progress(last.message() + "; trying again in " + wait + " (attempt " +
                   std::to_string(attempt) + " of " + std::to_string(attempts) + ")");
      std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms));
      delay_ms *= 2;
    }
    auto session = OpenSession(lms, ma, true);
    if (!session) {
      last = session.error();
      if (last.code() == Code::kUnavailable) continue;
      return Error(last);
    }
    TPMMA_ASSIGN_OR_RETURN(model.package_id, package::NewUuid());
    model.source_platform_id = session->platform_id();
    model.creation_time = lms.env()->NowUnixSeconds();
    if (escrow_public) {
      // The MA takes uploads escrowed to its current escrow key only: after `ma-admin escrow
      // rotate` the pinned key would be refused, so the package goes to the new key (checked
      // as at init) and the store pins it once the MA has the package.
      auto replaced = ReplacedEscrowKey(*session->ma, ma, state.custody.escrow_key_id);
      if (!replaced) {
        last = replaced.error();
        if (last.code() == Code::kUnavailable) continue;
        if (last.code() == Code::kUnsupported) {
          return Error(Code::kUnsupported,
                       last.message() +
                           ", and this store's inner key is escrowed to it (escrow key " +
                           state.custody.escrow_key_id +
                           "): its keys cannot be backed up any more; nothing was uploaded or "
                           "changed (ask the MA's operators to configure an escrow key again)");
        }
        return Error(last.WithContext("finding the MA's current escrow key"));
      }
      new_escrow_key = std::move(*replaced);
      TPM2B_PUBLIC escrow_to = *escrow_public;
      std::string escrow_key_id = state.custody.escrow_key_id;
      if (new_escrow_key) {
        lms.Progress("the MA's escrow key is now " + new_escrow_key->key_id + ", not " +
                     escrow_key_id + ": escrowing the inner key to " + new_escrow_key->key_id +
                     " (the store pins it once the MA has the package)");
        TPMMA_ASSIGN_OR_RETURN(escrow_to,
                               tpm::Unmarshal<TPM2B_PUBLIC>(new_escrow_key->public_area));
        escrow_key_id = new_escrow_key->key_id;
      }
      package::EscrowCustody escrow;
      escrow.escrow_key_id = escrow_key_id;
      escrow.algorithm = package::EscrowAlgorithm::kRsaOaepSha256;
      auto sealed =
          tpm::EscrowEncrypt(escrow_to.publicArea, *inner, model.source_platform_id, mrk_name);
      if (!sealed) {
        return Error(sealed.error().WithContext("escrowing the inner key to MA escrow key " +
                                                escrow_key_id));
      }
      escrow.encrypted_inner_key = std::move(*sealed);
      model.custody = std::move(escrow);
    }
    lms.Progress("signing package " + model.package_id + " (" +
                 std::to_string(model.child_keys.size()) + " keys)");
    auto bytes = package::SignPackage(model, session->platform.signer.get());
    session->platform.signer.reset();  // frees its TPM slot
    if (!bytes) return Error(bytes.error().WithContext("signing the package"));
    lms.Progress("uploading package " + model.package_id + " (" + std::to_string(bytes->size()) +
                 " bytes)");
    auto up = session->ma->Upload(session->token(), *bytes);
    if (!up) {
      last = MaFailure(up.error(), ma, "the upload");
      if (up.error().code() == Code::kUnavailable) continue;
      return Error(last);
    }
    uploaded = *up;
    out.platform_id = session->platform_id();
  }
  if (!uploaded) {
    if (attempts > 1) {
      return Error(Code::kUnavailable, last.message() + " (tried " + std::to_string(attempts) +
                                           " times; nothing was changed locally)");
    }
    return Error(last);
  }

  const int64_t now = model.creation_time;
  for (KeyRecord k : keys) {
    const bool in_package =
        k.id == mrk_record.id || std::any_of(carried.begin(), carried.end(),
                                             [&](const KeyRecord* c) { return c->id == k.id; });
    if (!in_package) continue;
    k.backed_up_at = now;
    TPMMA_RETURN_IF_ERROR(store.PutKey(k));
  }
  state.last_backup_at = now;
  state.last_backup_package_id = uploaded->package_id;
  if (new_escrow_key) {
    out.escrow_key_rotated =
        EscrowKeyRotation{.from = state.custody.escrow_key_id, .to = new_escrow_key->key_id};
    state.custody.escrow_key_id = new_escrow_key->key_id;
    state.custody.escrow_public = new_escrow_key->public_area;
  }
  TPMMA_RETURN_IF_ERROR(store.WriteState(state));

  out.uploaded = true;
  out.package_id = uploaded->package_id;
  out.digest_hex = uploaded->digest_hex;
  out.already_stored = uploaded->already_stored;
  out.created_at = now;
  return out;
}

Result<QueryResult> Query(Lms& lms, const MaSettings& ma, const QueryOptions& o) {
  TPMMA_RETURN_IF_ERROR(lms.store().CreateLayout());
  TPMMA_RETURN_IF_ERROR(lms.store().Lock());
  TPMMA_ASSIGN_OR_RETURN(Session s, OpenSession(lms, ma, false));
  client::QueryFilter filter;
  filter.source_platform_id = o.from_platform;
  QueryResult out;
  out.platform_id = s.platform_id();
  TPMMA_ASSIGN_OR_RETURN(out.packages, QueryAll(s, ma, filter));
  return out;
}

Status DeletePackage(Lms& lms, const MaSettings& ma, std::string_view package_id) {
  KeyStore& store = lms.store();
  TPMMA_RETURN_IF_ERROR(store.CreateLayout());
  TPMMA_RETURN_IF_ERROR(store.Lock());
  TPMMA_ASSIGN_OR_RETURN(Session s, OpenSession(lms, ma, false));
  Status deleted = s.ma->Delete(s.token(), package_id);
  if (!deleted.ok()) {
    if (deleted.code() == Code::kNotFound) {
      return Status(Code::kNotFound, "the MA has no package " + std::string(package_id));
    }
    return MaFailure(deleted, ma, "to delete package " + std::string(package_id));
  }
  if (!store.Initialized()) return Status::Ok();
  TPMMA_ASSIGN_OR_RETURN(StoreState state, store.ReadState());
  if (state.last_backup_package_id != package_id) return Status::Ok();
  // The store's last backup is gone: its keys count as not backed up again.
  TPMMA_ASSIGN_OR_RETURN(std::vector<KeyRecord> keys, store.ListKeys());
  for (KeyRecord k : keys) {
    if (!k.backed_up_at) continue;
    k.backed_up_at.reset();
    TPMMA_RETURN_IF_ERROR(store.PutKey(k));
  }
  state.last_backup_at.reset();
  state.last_backup_package_id.reset();
  return store.WriteState(state);
}

StatusReport GetStatus(Lms& lms, const Result<MaSettings>& ma) {
  StatusReport r;
  KeyStore& store = lms.store();
  r.store_dir = store.dir();
  r.initialised = store.Initialized();
  if (r.initialised) {
    auto state = store.ReadState();
    auto keys = store.ListKeys();
    if (state) {
      r.last_backup_at = state->last_backup_at;
      r.last_backup_package_id = state->last_backup_package_id;
      r.custody = std::string(CustodyModeName(state->custody.mode));
      r.escrow_key_id = state->custody.escrow_key_id;
    }
    if (keys) {
      r.keys = keys->size();
      for (const KeyRecord& k : *keys) r.not_backed_up += k.backed_up_at ? 0 : 1;
    }
  }
  if (!ma) {
    r.ma_error = ma.error().message();
  } else {
    r.ma_url = ma->url;
    auto client = Connect(*ma);
    if (!client) {
      r.ma_error = client.error().message();
    } else {
      auto info = (*client)->GetMAServiceInfo();
      if (info) {
        r.ma_reachable = true;
        r.ma_service_version = info->service_version;
      } else {
        r.ma_error = MaFailure(info.error(), *ma, "GetMAServiceInfo").message();
      }
    }
  }
  auto tpm = lms.OpenForMa();
  if (tpm) {
    r.tpm_reachable = true;
    r.srk_matches_store = r.initialised && lms.srk_matches_store();
  } else {
    r.tpm_error = tpm.error().message();
  }
  if (!r.ma_reachable || !r.tpm_reachable) {
    auto m = store.ReadMaState();
    if (m) r.platform_id = m->platform_id;  // as last seen
    return r;
  }
  Status locked = store.CreateLayout();
  if (locked.ok()) locked = store.Lock();
  if (!locked.ok()) {
    r.enroll_error = locked.message();
    return r;
  }
  auto session = OpenSession(lms, *ma, false);
  if (!session) {
    r.enroll_error = session.error().message();
    return r;
  }
  r.enrolled = true;
  r.platform_id = session->platform_id();
  auto list = QueryAll(*session, *ma, {});
  if (list) {
    for (const auto& d : *list) {
      if (d.access != "Own") continue;
      ++r.packages_on_ma;
      if (!r.newest_on_ma || d.created_at > *r.newest_on_ma) r.newest_on_ma = d.created_at;
    }
  }
  return r;
}

}  // namespace tpmma::lms
