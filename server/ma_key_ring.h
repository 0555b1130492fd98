// SPDX-License-Identifier: GPL-2.0-or-later
// The MA's storage keys across a rotation (docs/operations.md, "MA key lifecycle"): the
// current key, which GetMAKey publishes and new packages are wrapped to, and the retiring
// ones ([[ma.retiring]], put there by `ma-admin ma-key rotate`). A retiring key still holds
// the outer wrap of packages not yet re-enciphered, and legacy MRKs (PolicyDuplicationSelect)
// stay bound to the key they were made for. An Upload wrapped to a retiring key is
// re-enciphered to the current one at once; `ma-admin ma-key reencipher` moves the rest.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/bytes.h"
#include "common/env.h"
#include "common/status.h"
#include "server/config.h"
#include "server/ma_key.h"
#include "storage/vault.h"

namespace tpmma::server {

struct RingKey {
  MaKeyCustody* custody = nullptr;
  Bytes select_policy;  // PolicyDuplicationSelect to this key: a legacy MRK's authPolicy
  Bytes name_tpm2b;     // GetMAKey's Name (TPM2B_NAME)
};

// Where an uploaded package's outer wrap goes: the key that holds it once stored and, when
// the platform wrapped it to a retiring key, the wrap re-enciphered to the current one.
struct Placement {
  std::string key_id;
  std::optional<storage::OuterWrap> rewrap;
  std::string moved_from;  // the retiring key it was made for; empty: none
};

class MaKeyRing {
 public:
  // `current` must outlive the ring; the retiring keys are loaded here, and owned.
  static Result<std::unique_ptr<MaKeyRing>> Create(MaKeyCustody* current,
                                                   const std::vector<TpmKeyConfig>& retiring,
                                                   Env* env);

  const RingKey& current() const { return keys_.front(); }
  // The current key first, then the retiring ones in configuration order.
  const std::vector<RingKey>& keys() const { return keys_; }
  bool rotating() const { return keys_.size() > 1; }
  const RingKey* Find(std::string_view key_id) const;
  // The key an MRK whose authPolicy is `policy` is bound to (PolicyDuplicationSelect); null
  // if none of this MA's keys.
  const RingKey* BoundBy(ByteView policy) const;

  // `wrap` (made for `from`) moved to the current key and checked to open under it.
  // kIntegrityFailure if it does not open under `from`.
  Result<storage::OuterWrap> Reencipher(const RingKey& from, const TPM2B_PUBLIC& mrk,
                                        const storage::OuterWrap& wrap) const;
  // Whether `wrap` opens under `key`: the seed decrypts and the outer HMAC verifies.
  Status CheckOpens(const RingKey& key, const TPM2B_PUBLIC& mrk,
                    const storage::OuterWrap& wrap) const;
  // `wrap` re-wrapped to `new_parent` (a Download) by the key that opens it: `hint` (the key
  // the vault records; may be null) first, then the others. A record can be wrong: an
  // instance not yet restarted after a rotation records a following MRK's upload under the
  // key it knows. kIntegrityFailure if no key opens it.
  Result<std::pair<const RingKey*, tpm::Rewrapped>> RewrapTo(const RingKey* hint,
                                                             const TPM2B_PUBLIC& mrk,
                                                             const storage::OuterWrap& wrap,
                                                             const TPM2B_PUBLIC& new_parent) const;
  // An upload's `wrap` of `mrk`. `bound`: the key a legacy MRK is bound to; null for an MRK
  // that follows the MA, whose wrap is then tried under each key while a rotation is on
  // (kIntegrityFailure if it opens under none). Outside a rotation no crypto is spent here:
  // the MRK's policy already said where the TPM duplicated it.
  Result<Placement> Place(const RingKey* bound, const TPM2B_PUBLIC& mrk,
                          const storage::OuterWrap& wrap) const;

 private:
  MaKeyRing() = default;
  std::vector<std::unique_ptr<MaKeyCustody>> owned_;
  std::vector<RingKey> keys_;
};

// One storage key's custody, software or TPM, as [ma] or an [[ma.retiring]] entry names it;
// errors name `section`.
Result<std::unique_ptr<MaKeyCustody>> LoadMaKeyCustody(const TpmKeyConfig& k,
                                                       std::string_view section, Env* env);

}  // namespace tpmma::server
