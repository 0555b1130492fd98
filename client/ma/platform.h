// SPDX-License-Identifier: GPL-2.0-or-later
// The platform's side of the MA protocol (docs/protocol.md: Authenticate, Download), on a real
// TPM through the ESAPI layer:
//
//   VerifyMaKey          GetMAKey's answer checked: certificate key == TPM public, Name
//                        recomputed, the key fit for its role; the storage key's Name is
//                        what the MRK's policy names, the escrow key is what lms encrypts
//                        escrowed inner keys to.
//   ChooseEk             which EK: the first TCG template whose certificate index is in NV
//                        (L-1, L-2, H-1..H-7), or the one --ek-cert certifies.
//   Authenticate         EK + EK certificate + AK -> credential activation -> session; with
//                        a package-signing key certified by the AK over the MA's nonce.
//   DownloadTo           the MA re-wraps a package to a parent (the SRK) after the session's
//                        AK certified that parent over a fresh MA nonce.
//
// swtpm and many TPMs hold three transient objects: these functions load at most three at
// a time and flush what they loaded before returning (the signer excepted).
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <tss2/tss2_tpm2_types.h>

#include "client/ma/ma_client.h"
#include "common/openssl.h"
#include "common/status.h"
#include "tpm/approval.h"
#include "tpm/ek_templates.h"
#include "tpm/esys/esys.h"

namespace tpmma::ma {

struct VerifiedMaKey {
  std::string key_id;
  TPM2B_PUBLIC public_area{};
  Bytes name;  // nameAlg || digest, as CreateMrk and PolicyDuplicationSelect want it
  // A storage key of an MA with a policy-signing key: its approval of this key, checked
  // (tpm::CheckApproval) against the policy key it names. Whether that is the policy key
  // an MRK follows is the caller's to check.
  std::optional<tpm::Approval> approval;
};

// What an MA key is for: the storage key packages are duplicated to (a storage parent,
// tpm::CheckStorageParent), or the escrow key inner keys are encrypted to
// (tpm::CheckEscrowKey; docs/protocol.md, Inner-key custody).
enum class MaKeyRole { kStorage, kEscrow };

// The Name in the answer must equal the one computed from Public, the certificate's
// public key must be the key in Public (so the certificate an operator checks and the key
// the TPM duplicates or lms encrypts to are the same), and Public must fit `role`.
Result<VerifiedMaKey> VerifyMaKey(const MaKeyInfo& key, MaKeyRole role = MaKeyRole::kStorage);

// The EK a platform authenticates with: a TCG EK template (tpm/ek_templates.h) and the
// certificate of that EK's key.
struct EkChoice {
  const tpm::EkTemplate* ek_template = nullptr;  // one of tpm::TcgEkTemplates()
  Bytes certificate;                             // DER, as read from NV or given
};

// Without `given_certificate`: the first TCG template, in the order L-1 (RSA), L-2 (ECC),
// H-1..H-7 (the order the MA's default trust prefers; there is no capability query), whose
// certificate NV index is defined, with that index's contents as read. With it: the first
// template whose EK (created here) has the certificate's key. kNotFound, naming the indices
// or the templates tried and --ek-cert, if none.
Result<EkChoice> ChooseEk(esys::Tpm& tpm, ByteView given_certificate = {});

// The AK: a restricted signing key under the (transient, re-created) EK of `ek` (L-1 if
// null). Keep the blob: the same AK must certify the SRK at Download time.
Result<esys::KeyBlob> CreateAttestationKey(esys::Tpm& tpm,
                                           esys::KeyAlg alg = esys::KeyAlg::kRsa2048,
                                           const tpm::EkTemplate* ek = nullptr);

struct AuthenticateOptions {
  // EK certificate intermediates (DER) the MA may need to reach its roots.
  std::vector<Bytes> ek_intermediates;
  // The EK certificate (DER) to send instead of the one in the TPM's NV; it must certify
  // this TPM's EK (the MA checks, and credential activation proves it).
  Bytes ek_certificate;
  // The EK (template and certificate) from ChooseEk, under which the AK was made; without
  // it Authenticate calls ChooseEk(tpm, ek_certificate) itself.
  std::optional<EkChoice> ek;
  // Also create a package-signing key under `signing_parent`, certified by the AK over the
  // challenge nonce, and hand it back as a TPM-backed EVP_PKEY.
  bool with_signing_key = false;
  esys::ChildType signing_key_type = esys::ChildType::kEccSign;
  // with_signing_key: certify this key (made earlier under `signing_parent` with
  // PackageSigningTemplate) instead of creating one, if it still loads there; a key that no
  // longer loads (the TPM was cleared) is replaced by a new one. Keeping one key lets the
  // MA verify every package the platform signed since.
  const esys::KeyBlob* reuse_signing_key = nullptr;
  // Certify `signing_parent` (the SRK, the parent a Download re-wraps to) with the AK over
  // the challenge nonce too: the MA shows it to the helpdesk reviewing a restore here.
  bool certify_srk = false;
  // Sent with Complete, so only a TPM that has proven itself reports it.
  std::optional<PlatformInventory> inventory;
};

struct PlatformSession {
  MaSession session;
  EvpPkeyPtr signer;           // with_signing_key only; holds a TPM slot until freed
  Bytes signing_public;        // TPM2B_PUBLIC of the signer
  esys::KeyBlob signing_blob;  // the signer's blob under `signing_parent`, to reuse later
  const tpm::EkTemplate* ek_template = nullptr;  // the EK authenticated with (the AK's parent)
};

// The package-signing key template: fixedTPM|fixedParent|sensitiveDataOrigin, sign only.
TPM2B_PUBLIC PackageSigningTemplate(esys::ChildType type);

// Both rounds of Authenticate. `signing_parent` (the SRK) is only used with with_signing_key
// or certify_srk.
Result<PlatformSession> Authenticate(MaClient& ma, esys::Tpm& tpm, const esys::KeyBlob& ak,
                                     const esys::Object* signing_parent,
                                     const AuthenticateOptions& options = {});

// Download round one and two for `package_id`, re-wrapped to `parent`, which the AK (made
// under the EK of `ek`, L-1 if null) certifies over the MA's nonce.
Result<DownloadedPackage> DownloadTo(MaClient& ma, esys::Tpm& tpm, std::string_view token,
                                     std::string_view package_id, const esys::Object& parent,
                                     const esys::KeyBlob& ak, const tpm::EkTemplate* ek = nullptr);

// TPMS_ATTEST bytes (as Certify returns them) -> TPM2B_ATTEST (as the MA takes them).
Bytes Tpm2bAttest(ByteView attest);

}  // namespace tpmma::ma
