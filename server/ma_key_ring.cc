// SPDX-License-Identifier: GPL-2.0-or-later
#include "server/ma_key_ring.h"

#include <algorithm>

#include "server/ma_key_tpm.h"
#include "tpm/marshal.h"

namespace tpmma::server {

namespace {

struct Unwrapped {
  TPM2B_PRIVATE duplicate{};
  TPM2B_ENCRYPTED_SECRET seed{};
};

Result<Unwrapped> Decode(const storage::OuterWrap& w) {
  Unwrapped u;
  TPMMA_ASSIGN_OR_RETURN(u.duplicate, tpm::Unmarshal<TPM2B_PRIVATE>(w.duplicate));
  TPMMA_ASSIGN_OR_RETURN(u.seed, tpm::Unmarshal<TPM2B_ENCRYPTED_SECRET>(w.encrypted_seed));
  return u;
}

Result<storage::OuterWrap> Encode(const tpm::Rewrapped& r) {
  storage::OuterWrap w;
  TPMMA_ASSIGN_OR_RETURN(w.duplicate, tpm::Marshal(r.duplicate));
  TPMMA_ASSIGN_OR_RETURN(w.encrypted_seed, tpm::Marshal(r.encrypted_seed));
  return w;
}

Result<RingKey> MakeRingKey(MaKeyCustody* custody) {
  RingKey k;
  k.custody = custody;
  TPMMA_ASSIGN_OR_RETURN(k.select_policy, DuplicationSelectPolicyDigest(custody->name()));
  const Bytes& raw = custody->name();
  TPM2B_NAME name{};
  if (raw.size() > sizeof(name.name)) return Error(Code::kInternal, "MA Name too long");
  name.size = static_cast<uint16_t>(raw.size());
  std::copy(raw.begin(), raw.end(), name.name);
  TPMMA_ASSIGN_OR_RETURN(k.name_tpm2b, tpm::Marshal(name));
  return k;
}

}  // namespace

Result<std::unique_ptr<MaKeyCustody>> LoadMaKeyCustody(const TpmKeyConfig& k,
                                                       std::string_view section, Env* env) {
  const bool in_tpm = k.custody == "tpm";
  auto custody = in_tpm ? LoadTpmMaKey({.key_id = k.key_id,
                                        .tcti = k.tpm_tcti,
                                        .parent_handle = k.tpm_parent,
                                        .public_path = k.tpm_public,
                                        .private_path = k.tpm_private,
                                        .certificate_path = k.certificate},
                                       env)
                        : LoadSoftwareMaKey(k.key_id, k.private_key, k.certificate, env);
  if (!custody) {
    const std::string s(section);
    return Error(custody.error().WithContext(in_tpm ? s + ".tpm_* (TPM-resident MA key)"
                                                    : s + ".private_key/" + s + ".certificate"));
  }
  return custody;
}

Result<std::unique_ptr<MaKeyRing>> MaKeyRing::Create(MaKeyCustody* current,
                                                     const std::vector<TpmKeyConfig>& retiring,
                                                     Env* env) {
  std::unique_ptr<MaKeyRing> ring(new MaKeyRing());
  TPMMA_ASSIGN_OR_RETURN(RingKey first, MakeRingKey(current));
  ring->keys_.push_back(std::move(first));
  for (size_t i = 0; i < retiring.size(); ++i) {
    TPMMA_ASSIGN_OR_RETURN(
        auto custody, LoadMaKeyCustody(retiring[i], "ma.retiring[" + std::to_string(i) + "]", env));
    TPMMA_ASSIGN_OR_RETURN(RingKey k, MakeRingKey(custody.get()));
    if (ring->BoundBy(k.select_policy) != nullptr) {
      return Error(Code::kInvalidArgument, "ma.retiring[" + std::to_string(i) + "] (" +
                                               retiring[i].key_id +
                                               ") is the same key as another of this MA's");
    }
    ring->owned_.push_back(std::move(custody));
    ring->keys_.push_back(std::move(k));
  }
  return ring;
}

const RingKey* MaKeyRing::Find(std::string_view key_id) const {
  for (const RingKey& k : keys_) {
    if (k.custody->key_id() == key_id) return &k;
  }
  return nullptr;
}

const RingKey* MaKeyRing::BoundBy(ByteView policy) const {
  for (const RingKey& k : keys_) {
    if (std::ranges::equal(k.select_policy, policy)) return &k;
  }
  return nullptr;
}

Status MaKeyRing::CheckOpens(const RingKey& key, const TPM2B_PUBLIC& mrk,
                             const storage::OuterWrap& wrap) const {
  TPMMA_ASSIGN_OR_RETURN(Unwrapped u, Decode(wrap));
  // A re-wrap onto the key itself: the cheapest whole check its custody offers (a TPM key
  // only opens a wrap inside TPM2_Rewrap).
  auto opened = key.custody->Rewrap(mrk, u.duplicate, u.seed, key.custody->public_area());
  return opened ? Status::Ok() : opened.error();
}

Result<storage::OuterWrap> MaKeyRing::Reencipher(const RingKey& from, const TPM2B_PUBLIC& mrk,
                                                 const storage::OuterWrap& wrap) const {
  TPMMA_ASSIGN_OR_RETURN(Unwrapped u, Decode(wrap));
  const RingKey& to = current();
  TPMMA_ASSIGN_OR_RETURN(tpm::Rewrapped moved,
                         from.custody->Rewrap(mrk, u.duplicate, u.seed, to.custody->public_area()));
  TPMMA_ASSIGN_OR_RETURN(storage::OuterWrap out, Encode(moved));
  // Nothing is replaced on the strength of an encryption alone: the new wrap must open.
  Status opens = CheckOpens(to, mrk, out);
  if (!opens.ok()) {
    return Error(Code::kInternal, "the wrap re-enciphered from " + from.custody->key_id() +
                                      " does not open under " + to.custody->key_id() + ": " +
                                      opens.message());
  }
  return out;
}

Result<std::pair<const RingKey*, tpm::Rewrapped>> MaKeyRing::RewrapTo(
    const RingKey* hint, const TPM2B_PUBLIC& mrk, const storage::OuterWrap& wrap,
    const TPM2B_PUBLIC& new_parent) const {
  TPMMA_ASSIGN_OR_RETURN(Unwrapped u, Decode(wrap));
  std::vector<const RingKey*> order;
  if (hint != nullptr) order.push_back(hint);
  for (const RingKey& k : keys_) {
    if (&k != hint) order.push_back(&k);
  }
  for (const RingKey* k : order) {
    auto out = k->custody->Rewrap(mrk, u.duplicate, u.seed, new_parent);
    if (out) return std::make_pair(k, std::move(*out));
    if (out.error().code() != Code::kIntegrityFailure) return Error(out.error());
  }
  return Error(Code::kIntegrityFailure,
               "the package's outer wrap opens under none of this MA's storage keys");
}

Result<Placement> MaKeyRing::Place(const RingKey* bound, const TPM2B_PUBLIC& mrk,
                                   const storage::OuterWrap& wrap) const {
  const std::string& now = current().custody->key_id();
  if (bound == &current() || (bound == nullptr && !rotating())) return Placement{now, {}, {}};
  if (bound != nullptr) {
    auto moved = Reencipher(*bound, mrk, wrap);
    if (!moved) {
      return Error(
          moved.error().WithContext("the MRK is bound to MA key " + bound->custody->key_id()));
    }
    return Placement{now, std::move(*moved), bound->custody->key_id()};
  }
  Status opens = CheckOpens(current(), mrk, wrap);
  if (opens.ok()) return Placement{now, {}, {}};
  if (opens.code() != Code::kIntegrityFailure) return Error(opens);
  std::string tried = now;
  for (size_t i = 1; i < keys_.size(); ++i) {
    auto moved = Reencipher(keys_[i], mrk, wrap);
    if (moved) return Placement{now, std::move(*moved), keys_[i].custody->key_id()};
    if (moved.error().code() != Code::kIntegrityFailure) return Error(moved.error());
    tried += ", " + keys_[i].custody->key_id();
  }
  return Error(Code::kIntegrityFailure,
               "the MRK's outer wrap opens under none of this MA's storage keys (" + tried +
                   "): it was not duplicated to this MA");
}

}  // namespace tpmma::server
