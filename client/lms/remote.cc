// SPDX-License-Identifier: GPL-2.0-or-later
// lms and the MA: settings, authenticate, backup (docs/protocol.md, Upload) as named steps,
// query, delete, status; and the authenticated connection backup and restore share
// (ma_connection.h). Restore is in restore.cc.
#include "client/lms/remote.h"

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <tuple>
#include <utility>

#include "client/lms/app_data.h"
#include "client/lms/app_keys.h"
#include "client/lms/custody.h"
#include "client/lms/inventory.h"
#include "client/lms/ma_connection.h"
#include "client/lms/mrk_handle.h"
#include "client/lms/mrk_policy.h"
#include "client/lms/pkcs11_token.h"
#include "client/ma/platform.h"
#include "common/openssl.h"
#include "common/text.h"
#include "schema/package.h"
#include "schema/package_xml.h"
#include "tpm/escrow.h"
#include "tpm/marshal.h"
#include "tpm/public.h"
#include "tpm/tss_error.h"

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
Result<std::vector<Bytes>> ReadCertificates(const std::vector<std::string>& files,
                                            std::string_view what) {
  std::vector<Bytes> out;
  for (const std::string& f : files) {
    auto data = Env::Default()->ReadFile(f, kMaxCertFile);
    if (!data) return Error(data.error().WithContext(std::string(what) + " " + f));
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

Result<std::unique_ptr<ma::MaClient>> Connect(const MaSettings& s) {
  return ma::MaClient::Create({.url = s.url,
                               .ca_file = s.ca_file,
                               .timeout_s = s.timeout_s,
                               .keep_alive = !s.connection_per_call});
}

bool TpmSideFailure(const Status& s) {
  return s.code() == Code::kTpmError || s.code() == Code::kIntegrityFailure;
}

std::string Join(const std::vector<std::string>& items) {
  std::string out;
  for (const std::string& i : items) out += (out.empty() ? "" : ", ") + i;
  return out.empty() ? "none" : out;
}

std::string JoinCustody(const std::vector<ma::Custody>& modes) {
  std::vector<std::string> names;
  for (ma::Custody m : modes) names.emplace_back(ma::CustodyName(m));
  return Join(names);
}

}  // namespace

// The MA's answer in plain words, naming the MA.
Status MaFailure(const Status& s, const MaSettings& settings, std::string_view doing) {
  // Not the MA's answer: this TPM failed, or went away, in the middle of the exchange.
  if (tpm::FromLocalTpm(s)) {
    return Status(s.code(), "the TPM failed (" + std::string(doing) + "): " + s.message());
  }
  if (s.code() == Code::kUnavailable) {
    return Status(Code::kUnavailable, "cannot reach the MA at " + settings.url + " (" +
                                          std::string(doing) + "): " + s.message());
  }
  return Status(s.code(), "the MA refused " + std::string(doing) + ": " + s.message());
}

Result<ma::EkChoice> ChooseEkOrNone(const Lms& lms, esys::Tpm& tpm, ByteView given_certificate) {
  auto chosen = ma::ChooseEk(tpm, given_certificate);
  if (chosen || !given_certificate.empty() || chosen.error().code() != Code::kNotFound) {
    return chosen;
  }
  lms.Progress(
      "this TPM has no EK certificate in NV and none is configured (--ek-cert): authenticating "
      "without one (the MA must have this TPM's EK public registered: `lms ek public --out "
      "FILE`, then `ma-admin platforms register --ek-public FILE`)");
  return ma::EkChoice{.ek_template = &tpm::TcgEkTemplate("L-1"), .certificate = {}};
}

// Authenticate (docs/protocol.md) with the AK kept in ma.json (a new one after a TPM clear) and,
// for backups, the package-signing key kept there too. Writes ma.json on success.
Result<MaConnection> OpenMaConnection(Lms& lms, const MaSettings& s, bool with_signing_key) {
  TPMMA_ASSIGN_OR_RETURN(std::vector<Bytes> intermediates,
                         ReadCertificates(s.ek_intermediates, "EK intermediate certificate"));
  std::vector<Bytes> ek_cert;
  if (!s.ek_cert.empty()) {
    TPMMA_ASSIGN_OR_RETURN(ek_cert, ReadCertificates({s.ek_cert}, "EK certificate"));
  }
  MaConnection out;
  TPMMA_ASSIGN_OR_RETURN(out.client, Connect(s));
  TPMMA_ASSIGN_OR_RETURN(esys::Tpm * tpm, lms.OpenForMa());
  const esys::Object& srk = lms.current_srk();
  KeyStore& store = lms.store();
  TPMMA_ASSIGN_OR_RETURN(MaState m, store.ReadMaState());

  // The EK first: the AK is made under it, and a kept AK made under another EK (the RSA
  // certificate index removed since) no longer loads and is replaced below.
  TPMMA_ASSIGN_OR_RETURN(
      ma::EkChoice ek,
      ChooseEkOrNone(lms, *tpm, ek_cert.empty() ? ByteView{} : ByteView(ek_cert[0])));
  const bool have_ak = !m.ak_public.empty() && !m.ak_private.empty() && m.ak_srk_name == srk.name();
  auto make_ak = [&]() -> Status {
    lms.Progress("making an attestation key (AK) under the endorsement key");
    TPMMA_ASSIGN_OR_RETURN(out.ak,
                           ma::CreateAttestationKey(*tpm, esys::KeyAlg::kEccP256, ek.ek_template));
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
  ma::AuthenticateOptions o;
  o.ek_intermediates = std::move(intermediates);
  o.ek = std::move(ek);
  o.with_signing_key = with_signing_key;
  o.signing_key_type = esys::ChildType::kEccSign;
  o.reuse_signing_key = signing ? &*signing : nullptr;
  o.certify_srk = true;  // the helpdesk sees it when it reviews a restore to this TPM
  o.inventory = CollectInventory(*lms.env(), tpm, s.owner_label);

  lms.Progress("authenticating to the MA at " + s.url);
  auto session = ma::Authenticate(*out.client, *tpm, out.ak, &srk, o);
  if (!session && !out.new_ak && TpmSideFailure(session.error())) {
    // The kept AK no longer loads (the endorsement hierarchy changed): make a new one.
    TPMMA_RETURN_IF_ERROR(make_ak());
    session = ma::Authenticate(*out.client, *tpm, out.ak, &srk, o);
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
    RememberSigner(m, m.platform_id, m.signing_public);
  }
  TPMMA_RETURN_IF_ERROR(store.CreateLayout());
  TPMMA_RETURN_IF_ERROR(store.WriteMaState(m));
  return out;
}

void RememberSigner(MaState& m, const std::string& platform_id, const Bytes& public_area) {
  const bool known = std::any_of(m.signers.begin(), m.signers.end(), [&](const KnownSigner& k) {
    return k.public_area == public_area;
  });
  if (known) return;
  m.signers.push_back({.platform_id = platform_id, .public_area = public_area});
  if (m.signers.size() > kMaxKnownSigners) m.signers.erase(m.signers.begin());
}

Result<std::vector<ma::PackageDescriptor>> QueryAll(MaConnection& s, const MaSettings& settings,
                                                    const ma::QueryFilter& filter) {
  std::vector<ma::PackageDescriptor> out;
  std::string page_token;
  for (size_t page = 0; page < kMaxQueryPages; ++page) {
    auto r = s.client->Query(s.token(), filter, kQueryPageSize, page_token);
    if (!r) return Error(MaFailure(r.error(), settings, "the query"));
    for (auto& d : r->packages) out.push_back(std::move(d));
    if (r->next_page_token.empty()) break;
    page_token = r->next_page_token;
  }
  SortNewestFirst(out);
  return out;
}

void SortNewestFirst(std::vector<ma::PackageDescriptor>& packages) {
  // The MA lists packages in upload order (docs/protocol.md): reversed, a stable sort keeps
  // the later of two same-second uploads first. A package id is random, no tie-breaker.
  std::reverse(packages.begin(), packages.end());
  std::stable_sort(packages.begin(), packages.end(), [](const auto& a, const auto& b) {
    return std::tie(a.created_at, a.uploaded_at) > std::tie(b.created_at, b.uploaded_at);
  });
}

schema::KeyUsage UsageOf(KeyType t) {
  switch (t) {
    case KeyType::kEccSign:
    case KeyType::kRsaSign:
    case KeyType::kEccApp:
    case KeyType::kRsaApp:
      return schema::KeyUsage::kSign;
    case KeyType::kRsaDecrypt:
      return schema::KeyUsage::kDecrypt;
    case KeyType::kSealed:
      return schema::KeyUsage::kSeal;
    case KeyType::kMrk:
      return schema::KeyUsage::kStorage;
  }
  return schema::KeyUsage::kSign;
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

// GetMAKey(key_id) checked for `role` (ma::VerifyMaKey).
Result<FetchedMaKey> GetCheckedMaKey(ma::MaClient& client, const MaSettings& settings,
                                     std::string_view key_id, ma::MaKeyRole role) {
  const bool escrow = role == ma::MaKeyRole::kEscrow;
  auto key = client.GetMAKey(key_id);
  if (!key) {
    return Error(MaFailure(key.error(), settings,
                           escrow ? "to give its escrow key " + std::string(key_id) + " (GetMAKey)"
                                  : std::string("to give its key (GetMAKey)")));
  }
  auto verified = ma::VerifyMaKey(*key, role);
  if (!verified) {
    return Error(
        verified.error().WithContext(std::string(escrow ? "the MA escrow key" : "the MA key") +
                                     " from " + settings.url + " does not check out"));
  }
  return FetchedMaKey{.key_id = verified->key_id,
                      .public_area = key->public_area,
                      .name = std::move(verified->name),
                      .policy_key = verified->approval ? key->policy_key : Bytes(),
                      .approval = verified->approval ? key->approval : Bytes()};
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
  s.ek_cert = !flags.ek_cert.empty() ? flags.ek_cert : config.ek_cert;
  s.owner_label = !flags.owner_label.empty() ? flags.owner_label : config.owner_label;
  TPMMA_RETURN_IF_ERROR(CheckOwnerLabel(s.owner_label));
  s.connection_per_call = flags.connection_per_call;
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

Result<FetchedMaKey> FetchMaKey(const MaSettings& settings, std::string_view key_id) {
  TPMMA_ASSIGN_OR_RETURN(auto client, Connect(settings));
  return GetCheckedMaKey(*client, settings, key_id, ma::MaKeyRole::kStorage);
}

namespace {

bool OffersEscrow(const ma::ServiceInfo& info) {
  return std::find(info.custody_modes.begin(), info.custody_modes.end(), ma::Custody::kEscrow) !=
         info.custody_modes.end();
}

// The escrow key among the MA keys `info` (GetMAServiceInfo of an MA that offers escrow)
// lists: `key_id`, else the one whose public area is an escrow key.
Result<FetchedMaKey> FindEscrowKey(ma::MaClient& client, const MaSettings& settings,
                                   const ma::ServiceInfo& info, std::string_view key_id) {
  if (!key_id.empty()) return GetCheckedMaKey(client, settings, key_id, ma::MaKeyRole::kEscrow);
  // The first MAKeyId is the storage key; of the others, the escrow key is the one whose
  // public area is shaped like one (another storage key may be listed during a rotation).
  std::vector<FetchedMaKey> found;
  for (size_t i = 1; i < info.ma_key_ids.size(); ++i) {
    const std::string& id = info.ma_key_ids[i];
    auto key = client.GetMAKey(id);
    if (!key)
      return Error(MaFailure(key.error(), settings, "to give its key " + id + " (GetMAKey)"));
    auto pub = tpm::Unmarshal<TPM2B_PUBLIC>(key->public_area);
    if (pub && !tpm::CheckEscrowKey(pub->publicArea).ok()) continue;
    auto verified = ma::VerifyMaKey(*key, ma::MaKeyRole::kEscrow);
    if (!verified) {
      return Error(verified.error().WithContext("the MA escrow key " + id + " from " +
                                                settings.url + " does not check out"));
    }
    found.push_back({.key_id = verified->key_id,
                     .public_area = key->public_area,
                     .name = std::move(verified->name),
                     .policy_key = {},
                     .approval = {}});
  }
  if (found.empty()) {
    return Error(Code::kNotFound, "the MA at " + settings.url +
                                      " offers escrow custody but lists no escrow key (its key "
                                      "ids: " +
                                      Join(info.ma_key_ids) + ")");
  }
  if (found.size() > 1) {
    std::vector<std::string> ids;
    for (const FetchedMaKey& k : found) ids.push_back(k.key_id);
    return Error(Code::kConflict, "the MA at " + settings.url + " lists " +
                                      std::to_string(found.size()) + " escrow keys (" + Join(ids) +
                                      "); choose one with --escrow-key-id");
  }
  return std::move(found.front());
}

}  // namespace

Result<FetchedMaKey> FetchEscrowKey(const MaSettings& settings, std::string_view key_id) {
  TPMMA_ASSIGN_OR_RETURN(auto client, Connect(settings));
  auto info = client->GetMAServiceInfo();
  if (!info)
    return Error(MaFailure(info.error(), settings, "to describe itself (GetMAServiceInfo)"));
  if (!OffersEscrow(*info)) {
    return Error(Code::kUnsupported, "the MA at " + settings.url +
                                         " does not offer escrow custody (it offers: " +
                                         JoinCustody(info->custody_modes) +
                                         "); use --custody recovery-code, or an MA that does");
  }
  return FindEscrowKey(*client, settings, *info, key_id);
}

Result<std::optional<FetchedMaKey>> ReplacedEscrowKey(ma::MaClient& client,
                                                      const MaSettings& settings,
                                                      std::string_view pinned_key_id) {
  auto info = client.GetMAServiceInfo();
  if (!info)
    return Error(MaFailure(info.error(), settings, "to describe itself (GetMAServiceInfo)"));
  if (!OffersEscrow(*info)) {
    return Error(Code::kUnsupported, "the MA at " + settings.url +
                                         " no longer offers escrow custody (it offers: " +
                                         JoinCustody(info->custody_modes) + ")");
  }
  // MAKeyId is the storage key, then the escrow key the MA takes at Upload; a retired
  // escrow key is not listed. While the pinned one is, nothing more is asked.
  const auto& ids = info->ma_key_ids;
  if (ids.size() > 1 && std::find(ids.begin() + 1, ids.end(), pinned_key_id) != ids.end()) {
    return std::nullopt;
  }
  TPMMA_ASSIGN_OR_RETURN(FetchedMaKey current, FindEscrowKey(client, settings, *info, {}));
  return current;
}

Result<AuthenticateResult> Authenticate(Lms& lms, const MaSettings& settings) {
  TPMMA_RETURN_IF_ERROR(lms.store().CreateLayout());
  TPMMA_RETURN_IF_ERROR(lms.store().Lock());
  TPMMA_ASSIGN_OR_RETURN(MaConnection s, OpenMaConnection(lms, settings, false));
  return AuthenticateResult{.platform_id = s.platform_id(),
                            .expires_at = s.platform.session.expires_at,
                            .new_ak = s.new_ak};
}

namespace {

Bytes Sha256Of(ByteView data) {
  Bytes out(32);
  unsigned int n = 0;
  EVP_Digest(data.data(), data.size(), out.data(), &n, EVP_sha256(), nullptr);
  return out;
}

// SHA-256 of the store's PKCS#11 token store (empty: it has none).
Result<Bytes> Pkcs11Sha256(const KeyStore& store) {
  TPMMA_ASSIGN_OR_RETURN(std::optional<Bytes> db, ReadPkcs11Db(store));
  return db ? Sha256Of(*db) : Bytes();
}

}  // namespace

Result<bool> ChangedSinceLastBackup(Lms& lms) {
  TPMMA_ASSIGN_OR_RETURN(StoreState state, lms.store().ReadState());
  if (!state.last_backup_at) return true;
  TPMMA_ASSIGN_OR_RETURN(Bytes pkcs11, Pkcs11Sha256(lms.store()));
  if (pkcs11 != state.pkcs11_sha256) return true;
  TPMMA_ASSIGN_OR_RETURN(std::vector<KeyRecord> keys, lms.store().ListKeys());
  return std::any_of(keys.begin(), keys.end(), [](const KeyRecord& k) {
    return k.migratable && !k.backed_up_at.has_value();
  });
}

namespace {

// A backup with nothing to upload: what the last one was.
BackupResult NothingChanged(const StoreState& state) {
  BackupResult out;
  out.reason = "nothing changed since the last backup";
  if (state.last_backup_package_id) out.reason += " (package " + *state.last_backup_package_id;
  if (state.last_backup_at) out.reason += ", " + Utc(*state.last_backup_at) + ")";
  out.package_id = state.last_backup_package_id.value_or("");
  out.created_at = state.last_backup_at.value_or(0);
  return out;
}

// What a backup uploads, made once whatever the MA does: the package without its id,
// platform, time and (for an escrow store) escrowed inner key, which each attempt adds.
struct PreparedBackup {
  schema::MigrationPackage model;
  SecureBytes inner;                          // the inner wrapper key
  std::vector<std::string> carried;           // ids of the children in the package
  std::optional<TPM2B_PUBLIC> escrow_public;  // escrow store: the escrow key it pins
  Bytes mrk_name;                             // escrow store: what the escrow binds to
  Bytes pkcs11_sha256;                        // of the token store carried (empty: none)
  KeyRecord mrk_record;
};

// The MRK duplicated to `state`'s MA key (as its policy requires) into `p`.
Status DuplicateTo(Lms& lms, const StoreState& state, PreparedBackup& p) {
  TPMMA_ASSIGN_OR_RETURN(esys::Tpm * tpm, lms.tpm());
  esys::Duplicated dup;
  {
    TPMMA_ASSIGN_OR_RETURN(esys::Object mrk, lms.LoadKey(p.mrk_record, nullptr));
    TPMMA_ASSIGN_OR_RETURN(dup, DuplicateMrkFor(*tpm, state, mrk, p.inner));
  }
  TPMMA_ASSIGN_OR_RETURN(p.model.mrk.duplicate, tpm::Marshal(dup.duplicate));
  TPMMA_ASSIGN_OR_RETURN(p.model.mrk.encrypted_seed, tpm::Marshal(dup.encrypted_seed));
  return Status::Ok();
}

// Step: the MRK loaded and duplicated to the MA key with the inner key (kept sealed to this
// TPM since init, for unattended backups).
Status DuplicateMrk(Lms& lms, const StoreState& state, const KeyRecord& mrk_record,
                    PreparedBackup& p) {
  auto inner = lms.UnsealInnerKey();
  if (!inner) {
    return inner.error().WithContext(
        "unsealing the inner wrapper key (kept sealed to this TPM since lms init)");
  }
  p.inner = std::move(*inner);
  lms.Progress("duplicating the MRK to the MA key");
  p.mrk_record = mrk_record;
  TPMMA_RETURN_IF_ERROR(DuplicateTo(lms, state, p));
  schema::MigratableRootKey& m = p.model.mrk;
  m.public_area = mrk_record.public_area;
  m.symmetric = schema::SymmetricAlgorithm::kAes128Cfb;
  if (state.mrk_handle != 0) {
    const std::string handle = HandleText(state.mrk_handle);
    m.application_data.push_back(OpaqueItem(kMrkHandleItem, ToBytes(handle)));
  }
  TPMMA_ASSIGN_OR_RETURN(std::optional<Bytes> db, ReadPkcs11Db(lms.store()));
  if (db) {
    TPMMA_ASSIGN_OR_RETURN(schema::ApplicationData item, Pkcs11StoreItem(*db));
    m.application_data.push_back(std::move(item));
    p.pkcs11_sha256 = Sha256Of(*db);
  }
  return Status::Ok();
}

// Step: every migratable child of the MRK, and the store's custody: a recovery code's
// parameters as they are; for escrow, what the escrow binds to (the MRK's Name as the MA
// recomputes it from the package; the platform is known once a session is open).
Status AddChildrenAndCustody(const StoreState& state, const std::vector<KeyRecord>& keys,
                             const KeyRecord& mrk_record, PreparedBackup& p) {
  for (const KeyRecord& k : keys) {
    if (k.type == KeyType::kMrk || k.parent != state.mrk_id || !k.migratable) continue;
    schema::ChildKey c;
    c.key_id = k.id;
    c.label = k.label;
    c.usage = UsageOf(k.type);
    c.public_area = k.public_area;
    c.private_area = k.private_area;
    c.application_data = KeyApplicationData(k);
    p.model.child_keys.push_back(std::move(c));
    p.carried.push_back(k.id);
  }
  if (state.custody.mode == CustodyMode::kEscrow) {
    TPMMA_ASSIGN_OR_RETURN(p.escrow_public,
                           tpm::Unmarshal<TPM2B_PUBLIC>(state.custody.escrow_public));
    TPMMA_ASSIGN_OR_RETURN(TPM2B_PUBLIC mrk_public,
                           tpm::Unmarshal<TPM2B_PUBLIC>(mrk_record.public_area));
    TPMMA_ASSIGN_OR_RETURN(p.mrk_name, tpm::ComputeName(mrk_public.publicArea));
    return Status::Ok();
  }
  schema::RecoveryCodeCustody custody;
  custody.kdf = state.custody.kdf;
  custody.salt = state.custody.salt;
  custody.n = state.custody.n;
  custody.r = state.custody.r;
  custody.p = state.custody.p;
  custody.verifier = state.custody.verifier;
  p.model.custody = custody;
  return Status::Ok();
}

// One attempt's outcome: uploaded, or the MA could not be reached (`unreachable` says how).
struct UploadAttempt {
  std::optional<ma::UploadResult> uploaded;
  Status unreachable;
  std::optional<FetchedMaKey> new_escrow_key;  // the MA's, when not the one the store pins
  std::optional<FetchedMaKey> new_ma_key;      // the same for the storage key (MRK follows)
};

// Step (a store whose MRK follows the MA): after `ma-admin ma-key rotate` the MA's current
// storage key is another; the MRK is duplicated to it again, under its approval, which
// MovedMaKey checked against the policy-signing key the MRK names. No re-init.
Status FollowMaKey(Lms& lms, const MaSettings& settings, const StoreState& state, PreparedBackup& p,
                   UploadAttempt& attempt) {
  auto client = Connect(settings);
  if (!client) return client.error();
  TPMMA_ASSIGN_OR_RETURN(std::optional<FetchedMaKey> moved, MovedMaKey(**client, settings, state));
  if (!moved) return Status::Ok();
  lms.Progress("the MA's storage key is now " + moved->key_id +
               ": duplicating the MRK to it under its approval (the store pins it once the MA "
               "has the package)");
  StoreState to = state;
  to.ma_key_public = moved->public_area;
  to.ma_key_name = moved->name;
  to.ma_key_approval = moved->approval;
  TPMMA_RETURN_IF_ERROR(DuplicateTo(lms, to, p));
  attempt.new_ma_key = std::move(*moved);
  return Status::Ok();
}

// Step (escrow store): which escrow key the MA takes now, fetched and checked as at init
// after `ma-admin escrow rotate` (the pinned key would be refused), and the inner key
// escrowed to it.
Status EscrowInnerKey(Lms& lms, const MaSettings& settings, const StoreState& state,
                      MaConnection& connection, PreparedBackup& p, UploadAttempt& attempt) {
  auto replaced = ReplacedEscrowKey(*connection.client, settings, state.custody.escrow_key_id);
  if (!replaced) {
    const Status& e = replaced.error();
    if (e.code() == Code::kUnavailable) return e;
    if (e.code() == Code::kUnsupported) {
      return Status(Code::kUnsupported,
                    e.message() + ", and this store's inner key is escrowed to it (escrow key " +
                        state.custody.escrow_key_id +
                        "): its keys cannot be backed up any more; nothing was uploaded or "
                        "changed (ask the MA's operators to configure an escrow key again)");
    }
    return e.WithContext("finding the MA's current escrow key");
  }
  attempt.new_escrow_key = std::move(*replaced);
  TPM2B_PUBLIC escrow_to = *p.escrow_public;
  std::string escrow_key_id = state.custody.escrow_key_id;
  if (const auto& now = attempt.new_escrow_key) {
    lms.Progress("the MA's escrow key is now " + now->key_id + ", not " + escrow_key_id +
                 ": escrowing the inner key to " + now->key_id +
                 " (the store pins it once the MA has the package)");
    TPMMA_ASSIGN_OR_RETURN(escrow_to, tpm::Unmarshal<TPM2B_PUBLIC>(now->public_area));
    escrow_key_id = now->key_id;
  }
  schema::EscrowCustody escrow;
  escrow.escrow_key_id = escrow_key_id;
  escrow.algorithm = schema::EscrowAlgorithm::kRsaOaepSha256;
  auto sealed =
      tpm::EscrowEncrypt(escrow_to.publicArea, p.inner, p.model.source_platform_id, p.mrk_name);
  if (!sealed) {
    return sealed.error().WithContext("escrowing the inner key to MA escrow key " + escrow_key_id);
  }
  escrow.encrypted_inner_key = std::move(*sealed);
  p.model.custody = std::move(escrow);
  return Status::Ok();
}

// Step: one attempt: authenticate (with the package-signing key), escrow, sign, upload.
Result<UploadAttempt> UploadOnce(Lms& lms, const MaSettings& settings, const StoreState& state,
                                 PreparedBackup& p, BackupResult& out) {
  UploadAttempt attempt;
  if (!state.policy_key_public.empty()) {
    Status followed = FollowMaKey(lms, settings, state, p, attempt);
    if (followed.code() == Code::kUnavailable) {
      attempt.unreachable = followed;
      return attempt;
    }
    TPMMA_RETURN_IF_ERROR(followed);
  }
  auto connection = OpenMaConnection(lms, settings, true);
  if (!connection) {
    if (connection.error().code() != Code::kUnavailable) return Error(connection.error());
    attempt.unreachable = connection.error();
    return attempt;
  }
  schema::MigrationPackage& model = p.model;
  TPMMA_ASSIGN_OR_RETURN(model.package_id, schema::NewUuid());
  model.source_platform_id = connection->platform_id();
  model.creation_time = lms.env()->NowUnixSeconds();
  if (p.escrow_public) {
    Status escrowed = EscrowInnerKey(lms, settings, state, *connection, p, attempt);
    if (escrowed.code() == Code::kUnavailable) {
      attempt.unreachable = escrowed;
      return attempt;
    }
    TPMMA_RETURN_IF_ERROR(escrowed);
  }
  lms.Progress("signing package " + model.package_id + " (" +
               std::to_string(model.child_keys.size()) + " keys)");
  auto bytes = schema::SignPackage(model, connection->platform.signer.get());
  connection->platform.signer.reset();  // frees its TPM slot
  if (!bytes) return Error(bytes.error().WithContext("signing the package"));
  lms.Progress("uploading package " + model.package_id + " (" + std::to_string(bytes->size()) +
               " bytes)");
  auto up = connection->client->Upload(connection->token(), *bytes);
  if (!up) {
    Status failed = MaFailure(up.error(), settings, "the upload");
    if (up.error().code() != Code::kUnavailable) return Error(failed);
    attempt.unreachable = failed;
    return attempt;
  }
  attempt.uploaded = *up;
  out.platform_id = connection->platform_id();
  return attempt;
}

// Step: upload, in agent mode again after a back-off while the MA cannot be reached.
Result<UploadAttempt> UploadWithRetries(Lms& lms, const MaSettings& settings,
                                        const StoreState& state, const BackupOptions& o,
                                        PreparedBackup& p, BackupResult& out) {
  const int attempts = std::max(1, o.attempts);
  int delay_ms = std::max(0, o.retry_delay_ms);
  Status last;
  for (int n = 1; n <= attempts; ++n) {
    out.attempts = n;
    if (n > 1) {
      char wait[32];
      std::snprintf(wait, sizeof wait, "%.1f s", delay_ms / 1000.0);
      lms.Progress(last.message() + "; trying again in " + wait + " (attempt " + std::to_string(n) +
                   " of " + std::to_string(attempts) + ")");
      std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms));
      delay_ms *= 2;
    }
    TPMMA_ASSIGN_OR_RETURN(UploadAttempt attempt, UploadOnce(lms, settings, state, p, out));
    if (attempt.uploaded) return attempt;
    last = attempt.unreachable;
  }
  if (attempts > 1) {
    return Error(Code::kUnavailable, last.message() + " (tried " + std::to_string(attempts) +
                                         " times; nothing was changed locally)");
  }
  return Error(last);
}

// Step, once the MA acknowledged the upload: every key in the package backed up, the
// package as the last backup, and the MA's new escrow key pinned.
Status RecordBackup(KeyStore& store, StoreState& state, const std::vector<KeyRecord>& keys,
                    const KeyRecord& mrk_record, const PreparedBackup& p,
                    const UploadAttempt& attempt, BackupResult& out) {
  const int64_t now = p.model.creation_time;
  for (KeyRecord k : keys) {
    const bool in_package = k.id == mrk_record.id ||
                            std::find(p.carried.begin(), p.carried.end(), k.id) != p.carried.end();
    if (!in_package) continue;
    k.backed_up_at = now;
    TPMMA_RETURN_IF_ERROR(store.PutKey(k));
  }
  const ma::UploadResult& uploaded = *attempt.uploaded;
  state.last_backup_at = now;
  state.last_backup_package_id = uploaded.package_id;
  state.pkcs11_sha256 = p.pkcs11_sha256;
  if (const auto& key = attempt.new_escrow_key) {
    out.escrow_key_rotated =
        EscrowKeyRotation{.from = state.custody.escrow_key_id, .to = key->key_id};
    state.custody.escrow_key_id = key->key_id;
    state.custody.escrow_public = key->public_area;
  }
  if (const auto& key = attempt.new_ma_key) {
    out.ma_key_moved_to = key->key_id;
    state.ma_key_public = key->public_area;
    state.ma_key_name = key->name;
    state.ma_key_approval = key->approval;
  }
  TPMMA_RETURN_IF_ERROR(store.WriteState(state));
  out.uploaded = true;
  out.package_id = uploaded.package_id;
  out.digest_hex = uploaded.digest_hex;
  out.already_stored = uploaded.already_stored;
  out.created_at = now;
  return Status::Ok();
}

}  // namespace

// Backup in steps: nothing changed? → duplicate the MRK → the children and the custody →
// upload (authenticate, escrow, sign; retried in agent mode) → record, only after the MA
// acknowledged the upload.
Result<BackupResult> Backup(Lms& lms, const MaSettings& settings, const BackupOptions& o) {
  KeyStore& store = lms.store();
  TPMMA_ASSIGN_OR_RETURN(StoreState state, store.ReadState());
  TPMMA_RETURN_IF_ERROR(store.Lock());
  TPMMA_ASSIGN_OR_RETURN(bool changed, ChangedSinceLastBackup(lms));
  if (!changed && !o.full) return NothingChanged(state);
  TPMMA_ASSIGN_OR_RETURN(std::vector<KeyRecord> keys, store.ListKeys());
  TPMMA_ASSIGN_OR_RETURN(KeyRecord mrk_record, FindMrk(state, keys));
  PreparedBackup p;
  TPMMA_RETURN_IF_ERROR(DuplicateMrk(lms, state, mrk_record, p));
  TPMMA_RETURN_IF_ERROR(AddChildrenAndCustody(state, keys, mrk_record, p));
  BackupResult out;
  out.child_keys = p.model.child_keys.size();
  TPMMA_ASSIGN_OR_RETURN(UploadAttempt uploaded,
                         UploadWithRetries(lms, settings, state, o, p, out));
  TPMMA_RETURN_IF_ERROR(RecordBackup(store, state, keys, mrk_record, p, uploaded, out));
  return out;
}

Result<QueryResult> Query(Lms& lms, const MaSettings& settings, const QueryOptions& o) {
  TPMMA_RETURN_IF_ERROR(lms.store().CreateLayout());
  TPMMA_RETURN_IF_ERROR(lms.store().Lock());
  TPMMA_ASSIGN_OR_RETURN(MaConnection s, OpenMaConnection(lms, settings, false));
  ma::QueryFilter filter;
  filter.source_platform_id = o.from_platform;
  QueryResult out;
  out.platform_id = s.platform_id();
  TPMMA_ASSIGN_OR_RETURN(out.packages, QueryAll(s, settings, filter));
  return out;
}

Status DeletePackage(Lms& lms, const MaSettings& settings, std::string_view package_id) {
  KeyStore& store = lms.store();
  TPMMA_RETURN_IF_ERROR(store.CreateLayout());
  TPMMA_RETURN_IF_ERROR(store.Lock());
  TPMMA_ASSIGN_OR_RETURN(MaConnection s, OpenMaConnection(lms, settings, false));
  Status deleted = s.client->Delete(s.token(), package_id);
  if (!deleted.ok()) {
    if (deleted.code() == Code::kNotFound) {
      return Status(Code::kNotFound, "the MA has no package " + std::string(package_id));
    }
    return MaFailure(deleted, settings, "to delete package " + std::string(package_id));
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

StatusReport GetStatus(Lms& lms, const Result<MaSettings>& settings) {
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
      r.custody = state->custody.mode;
      r.escrow_key_id = state->custody.escrow_key_id;
      r.mrk_policy = state->policy_key_public.empty() ? "fixed" : "follow";
    }
    if (keys) {
      r.keys = keys->size();
      for (const KeyRecord& k : *keys) r.not_backed_up += k.backed_up_at ? 0 : 1;
    }
  }
  if (!settings) {
    r.ma_error = settings.error().message();
  } else {
    r.ma_url = settings->url;
    auto client = Connect(*settings);
    if (!client) {
      r.ma_error = client.error().message();
    } else {
      auto info = (*client)->GetMAServiceInfo();
      if (info) {
        r.ma_reachable = true;
        r.ma_service_version = info->service_version;
      } else {
        r.ma_error = MaFailure(info.error(), *settings, "GetMAServiceInfo").message();
      }
    }
  }
  auto tpm = lms.OpenForMa();
  // Without usable MA settings, the label recorded in config.json (if it reads).
  std::string owner_label;
  if (settings) {
    owner_label = settings->owner_label;
  } else if (auto config = store.ReadConfig(); config) {
    owner_label = config->owner_label;
  }
  r.inventory = CollectInventory(*lms.env(), tpm ? *tpm : nullptr, owner_label);
  if (tpm) {
    r.tpm_reachable = true;
    r.srk_matches_store = r.initialised && lms.srk_matches_store();
    if (r.initialised) {
      auto handle = ReportMrkHandle(lms);
      r.mrk_handle = handle ? handle->handle : 0;
      r.mrk_handle_state = handle ? handle->state : handle.error().message();
    }
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
  auto session = OpenMaConnection(lms, *settings, false);
  if (!session) {
    r.enroll_error = session.error().message();
    return r;
  }
  r.enrolled = true;
  r.platform_id = session->platform_id();
  auto list = QueryAll(*session, *settings, {});
  if (list) {
    for (const auto& d : *list) {
      if (d.access != ma::Access::kOwn) continue;
      ++r.packages_on_ma;
      if (!r.newest_on_ma || d.created_at > *r.newest_on_ma) r.newest_on_ma = d.created_at;
    }
  }
  return r;
}

}  // namespace tpmma::lms
