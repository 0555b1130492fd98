// SPDX-License-Identifier: GPL-2.0-or-later
#include "server/srk_view.h"

#include <fmt/format.h>

#include "common/text.h"
#include "tpm/marshal.h"
#include "tpm/public.h"

namespace tpmma::server {

Result<std::optional<SrkView>> ViewSrk(const storage::Platform& p) {
  if (!p.srk_public) return std::optional<SrkView>();
  TPMMA_ASSIGN_OR_RETURN(TPM2B_PUBLIC pub, tpm::Unmarshal<TPM2B_PUBLIC>(*p.srk_public));
  TPMMA_ASSIGN_OR_RETURN(Bytes name, tpm::ComputeName(pub.publicArea));
  SrkView v;
  v.algorithm = tpm::KeyAlgorithmText(pub.publicArea);
  v.name_hex = HexEncode(name);
  v.certified_at = p.srk_certified_at;
  return std::optional<SrkView>(std::move(v));
}

std::string SrkText(const storage::Platform& p) {
  auto v = ViewSrk(p);
  if (!v) return "the stored SRK does not parse: " + v.error().message();
  if (!*v) return "not certified (the platform's lms is older than SRK certification)";
  return fmt::format("{}, Name {}, certified by the platform's AK at {}", (*v)->algorithm,
                     (*v)->name_hex, Utc((*v)->certified_at));
}

}  // namespace tpmma::server
