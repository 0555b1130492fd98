// SPDX-License-Identifier: GPL-2.0-or-later
// Custody of the MA storage key: the key every Migration Package's MRK is duplicated to.
// The SOAP layer only ever sees this interface, so that a TPM-resident MA key (TPM2_Rewrap
// inside the MA's own TPM) can replace the software key without touching the operations.
#pragma once

#include <memory>
#include <string>

#include <tss2/tss2_tpm2_types.h>

#include "common/bytes.h"
#include "common/env.h"
#include "common/status.h"
#include "tpm/rewrap.h"

namespace tpmma::server {

class MaKeyCustody {
 public:
  virtual ~MaKeyCustody() = default;

  virtual const std::string& key_id() const = 0;
  // The exact marshalled TPM2B_PUBLIC that GetMAKey publishes: clients hash these bytes
  // into PolicyDuplicationSelect, so they are computed once and never re-encoded.
  virtual const Bytes& public_bytes() const = 0;
  virtual const TPM2B_PUBLIC& public_area() const = 0;
  // nameAlg || H(TPMT_PUBLIC), without the TPM2B size (what PolicyDuplicationSelect hashes).
  virtual const Bytes& name() const = 0;
  virtual const Bytes& certificate_der() const = 0;

  // Moves the outer wrapper of `duplicate` (made for this MA key) to `new_parent`; the
  // inner wrapper passes through. kIntegrityFailure if the duplicate was not made for this
  // key and object.
  virtual Result<tpm::Rewrapped> Rewrap(const TPM2B_PUBLIC& object_public,
                                        const TPM2B_PRIVATE& duplicate,
                                        const TPM2B_ENCRYPTED_SECRET& encrypted_seed,
                                        const TPM2B_PUBLIC& new_parent) = 0;
};

// The software custody: an RSA private key in a PEM file that only the service user may
// read (a key file with any group/other permission bit is refused), and its X.509
// certificate (PEM), whose public key must be the private key's.
Result<std::unique_ptr<MaKeyCustody>> LoadSoftwareMaKey(const std::string& key_id,
                                                        const std::string& private_key_path,
                                                        const std::string& certificate_path,
                                                        Env* env);

// The authPolicy every MRK must have so that the TPM only ever duplicates it to the MA key:
// tpm::DuplicationSelectPolicy(ma_name) (tpm/policy.h; ma_name must be a SHA-256 Name), as
// bytes.
Result<Bytes> DuplicationSelectPolicyDigest(ByteView ma_name);

}  // namespace tpmma::server
