// SPDX-License-Identifier: GPL-2.0-or-later
// `lms ek fetch`: the EK certificate of a firmware TPM that keeps none in NV, from its
// vendor's online service (issue #12), checked against this TPM's EK and kept in the store
// the way --ek-cert is (config.json "ek_cert"), so that `lms authenticate` needs no flag.
//
//   Intel PTT   GET https://ekop.intel.com/ekcertservice/<base64url(SHA-256(EK key))>,
//               JSON {"pubhash": ..., "certificate": "<base64url DER>"}
//   AMD fTPM    GET https://ftpm.amd.com/pki/aia/<hex of the first 16 bytes of a SHA-256>,
//               the DER certificate itself
//
// The path derivations follow tpm2-tools' tools/tpm2_getekcertificate.c (hash_ek_public,
// base64_encode, encode_ek_public_amd); ek_fetch.cc says which bytes are hashed.
#pragma once

#include <cstddef>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include <tss2/tss2_tpm2_types.h>

#include "common/bytes.h"
#include "common/status.h"

namespace tpmma::esys {
class Tpm;
}

namespace tpmma::lms {

class KeyStore;

enum class EkVendor { kIntel, kAmd };
std::string_view EkVendorName(EkVendor vendor);  // "intel" | "amd"
// "intel"/"amd" (as --vendor spells them); nullopt for anything else.
std::optional<EkVendor> ParseEkVendor(std::string_view name);
// TPM_PT_MANUFACTURER ("INTC", "AMD") -> the vendor whose service certifies its EKs.
std::optional<EkVendor> VendorOfManufacturer(std::string_view manufacturer);

inline constexpr std::string_view kIntelEkService = "https://ekop.intel.com/ekcertservice/";
inline constexpr std::string_view kAmdEkService = "https://ftpm.amd.com/pki/aia/";
inline constexpr size_t kMaxEkServiceReply = 64 * 1024;

// The last path element the vendor's service files `ek`'s certificate under.
Result<std::string> EkServicePath(EkVendor vendor, const TPMT_PUBLIC& ek);
// `base` (the vendor's default if empty) + "/" if missing + the path element.
std::string EkServiceUrl(EkVendor vendor, std::string_view base, std::string_view path);
// The certificate (DER) out of the service's reply body: Intel's JSON, AMD's DER.
Result<Bytes> DecodeEkServiceReply(EkVendor vendor, std::string_view body);

struct EkFetchOptions {
  std::optional<EkVendor> vendor;  // else from the TPM's manufacturer
  bool ecc = false;                // the L-2 (ECC P-256) EK instead of L-1 (RSA 2048)
  std::string base_url;            // else the vendor's service
  std::string ca_file;             // TLS trust for the service; else the system store
  int timeout_s = 30;
};

struct EkFetched {
  EkVendor vendor = EkVendor::kIntel;
  std::string manufacturer;  // as the TPM reports it
  std::string ek_template;   // "L-1" | "L-2"
  std::string url;
  Bytes certificate;  // DER, certifies this TPM's EK
  std::string subject, issuer;
  int64_t not_after = 0;
  std::string stored_at;  // <store>/ek-cert.der, recorded in config.json
};

// Derives the URL from this TPM's EK, fetches (HTTPS only), decodes, checks the
// certificate's key is the EK's, then writes <store>/ek-cert.der and records it in
// config.json as the EK certificate (the store need not be initialised; nothing else on
// the TPM changes: only the transient EK is made). `progress` gets the slow steps.
Result<EkFetched> FetchEkCertificate(esys::Tpm& tpm, KeyStore& store, const EkFetchOptions& options,
                                     const std::function<void(std::string_view)>& progress = {});

}  // namespace tpmma::lms
