// SPDX-License-Identifier: GPL-2.0-or-later
// The TCG default EK templates (TCG EK Credential Profile 2.x, low range L-1/L-2 and high
// range H-1..H-7) and the check that an EK public area is exactly one of them, or one an
// administrator configured. One TPM has one EK per template; a public area that is not a
// template (other attributes, authPolicy, nameAlg, parameters) around the same key would
// still activate credentials on the real TPM and so could pose as a second platform.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include <tss2/tss2_tpm2_types.h>

#include "common/status.h"

namespace tpmma::tpm {

struct EkTemplate {
  std::string name;         // "L-1", "H-2", ... or the administrator's file
  uint32_t cert_index = 0;  // NV index of the EK certificate (0: none known)
  TPMT_PUBLIC public_area{};
};

// L-1, L-2, H-1..H-7, in that order, the unique field as the template asks (L-1: 256 zero
// bytes, L-2: two 32-byte zero coordinates, high range: empty).
const std::vector<EkTemplate>& TcgEkTemplates();
const EkTemplate& TcgEkTemplate(std::string_view name);  // one of the above; aborts if unknown

// What differs between `ek` and `tmpl`, everything compared except the unique field, whose
// size must fit the key ("nameAlg SHA-384 (expected SHA-256)", ...). Empty: it matches.
std::vector<std::string> EkTemplateDifferences(const TPMT_PUBLIC& ek, const TPMT_PUBLIC& tmpl);

// OK if `ek` matches a TCG template or one of `extra`; else kUnauthenticated
// "EK public is not a TCG EK template (closest: L-1): objectAttributes 0x... (expected ...)".
Status CheckEkTemplate(const TPMT_PUBLIC& ek, std::span<const EkTemplate> extra = {});

// An administrator's template: any restricted decryption key, as tpm2_createek/readpublic
// write a TPM2B_PUBLIC; kInvalidArgument otherwise.
Status CheckConfiguredEkTemplate(const TPMT_PUBLIC& tmpl);

}  // namespace tpmma::tpm
