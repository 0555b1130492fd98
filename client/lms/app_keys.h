// SPDX-License-Identifier: GPL-2.0-or-later
// Keys as applications use them (issue #11; docs/applications.md): a store key as a
// `TSS2 PRIVATE KEY` PEM for OpenSSL's tpm2 provider, a key file made elsewhere registered
// with the store, and a key's X.509 certificate kept (and backed up) with it.
//
// A PEM names its parent by handle, so it works wherever the MRK sits at the store's
// mrk_handle: on this TPM, and after a restore on a new one. The PEM itself never changes.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "client/lms/keystore.h"
#include "client/lms/operations.h"
#include "common/bytes.h"
#include "common/status.h"

namespace tpmma::lms {

// The key as a TSS2 PRIVATE KEY PEM whose parent is the MRK's handle, emptyAuth TRUE.
// Refused, saying what to do, for a store without a persistent MRK (kUnsupported) and on a
// TPM where the handle does not hold this store's MRK (kConflict: restore first).
Result<std::string> ExportTss2Pem(Lms& lms, std::string_view id_or_label);

// Registers a TSS2 PRIVATE KEY PEM made as a child of this store's MRK (its parent must be
// the store's mrk_handle; emptyAuth; attributes the MRK allows; it must load under the MRK).
Result<KeyRecord> ImportTss2Pem(Lms& lms, std::string_view pem, const std::string& label);

// Keeps `pem_or_der` (an X.509 certificate whose public key is the key's) with the key; the
// next backup carries it.
Result<KeyRecord> SetCertificate(Lms& lms, std::string_view id_or_label, ByteView pem_or_der);

struct CertificateInfo {
  std::string subject;  // one line, RFC 2253
  int64_t not_after = 0;
  std::string pem;
};
Result<CertificateInfo> DescribeCertificate(ByteView der);

// Where the store's MRK handle stands on this TPM, in words for lms status / lms keys.
struct MrkHandleReport {
  uint32_t handle = 0;   // 0: the store keeps no persistent MRK
  bool present = false;  // the handle holds this store's MRK
  std::string state;     // "present" | "empty" | "another object" | "none"
};
Result<MrkHandleReport> ReportMrkHandle(Lms& lms);

}  // namespace tpmma::lms
