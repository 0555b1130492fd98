// SPDX-License-Identifier: GPL-2.0-or-later
#include "server/ek_identity.h"

#include <openssl/asn1.h>
#include <openssl/err.h>
#include <openssl/sha.h>
#include <openssl/x509.h>

#include <algorithm>

#include "common/openssl.h"
#include "tpm/marshal.h"
#include "tpm/public.h"

namespace tpmma::server {
namespace {

constexpr size_t kMaxTemplateFileBytes = 4096;

}  // namespace

Result<Bytes> EkKeyId(const TPMT_PUBLIC& ek) {
  TPMMA_ASSIGN_OR_RETURN(EvpPkeyPtr key, tpm::PublicToEvp(ek));
  unsigned char* der = nullptr;
  int n = i2d_PUBKEY(key.get(), &der);
  if (n <= 0) return Error(OpensslError("i2d_PUBKEY"));
  Bytes out(SHA256_DIGEST_LENGTH);
  SHA256(der, static_cast<size_t>(n), out.data());
  OPENSSL_free(der);
  return out;
}

Result<Bytes> TrimEkCertificatePadding(ByteView nv) {
  const unsigned char* p = nv.data();
  long len = 0;
  int tag = 0, cls = 0;
  int r = ASN1_get_object(&p, &len, &tag, &cls, static_cast<long>(nv.size()));
  // 0x80: error (also a length past the end); 0x21: constructed, indefinite length.
  if ((r & 0x80) != 0 || (r & V_ASN1_CONSTRUCTED) == 0 || r == 0x21 || tag != V_ASN1_SEQUENCE ||
      cls != V_ASN1_UNIVERSAL) {
    ERR_clear_error();
    return Error(Code::kMalformed,
                 "EKCertificate does not start with a DER SEQUENCE of definite length");
  }
  const size_t end = static_cast<size_t>(p - nv.data()) + static_cast<size_t>(len);
  if (end > nv.size()) return Error(Code::kMalformed, "EKCertificate is truncated");
  ByteView rest = nv.subspan(end);
  const bool padding =
      std::all_of(rest.begin(), rest.end(), [](uint8_t b) { return b == 0x00 || b == 0xff; });
  if (!padding) {
    return Error(Code::kMalformed, "EKCertificate has " + std::to_string(rest.size()) +
                                       " bytes after its DER length that are not NV padding "
                                       "(only 0x00 or 0xFF may follow the certificate)");
  }
  return Bytes(nv.begin(), nv.begin() + static_cast<ptrdiff_t>(end));
}

Result<std::vector<tpm::EkTemplate>> LoadEkTemplates(const std::vector<std::string>& paths,
                                                     Env* env) {
  std::vector<tpm::EkTemplate> out;
  for (const std::string& path : paths) {
    auto loaded = [&]() -> Result<TPMT_PUBLIC> {
      TPMMA_ASSIGN_OR_RETURN(Bytes bytes, env->ReadFile(path, kMaxTemplateFileBytes));
      TPMMA_ASSIGN_OR_RETURN(TPM2B_PUBLIC pub, tpm::Unmarshal<TPM2B_PUBLIC>(bytes));
      TPMMA_RETURN_IF_ERROR(tpm::CheckConfiguredEkTemplate(pub.publicArea));
      return pub.publicArea;
    }();
    if (!loaded) return Error(loaded.error().WithContext("trust.ek_templates " + path));
    out.push_back(tpm::EkTemplate{path, 0, *loaded});
  }
  return out;
}

Status BackfillEkKeyIds(storage::Vault* vault, Env* env) {
  std::string token;
  do {
    TPMMA_ASSIGN_OR_RETURN(storage::PlatformPage page, vault->ListPlatforms(1000, token));
    for (storage::Platform& p : page.platforms) {
      if (!p.ek_key_id.empty()) continue;
      // A row whose EK public does not decode (written by hand, damaged) cannot be bound to
      // a key; it is left as it is rather than keeping the MA from starting. Such an EK
      // public never passes Begin either, so it never authenticates.
      auto ek = tpm::Unmarshal<TPM2B_PUBLIC>(p.ek_public);
      if (!ek) continue;
      auto id = EkKeyId(ek->publicArea);
      if (!id) continue;
      p.ek_key_id = *id;
      storage::AuditEvent audit{
          env->NowUnixSeconds(),        "system", "BackfillEkKeyId", p.id, "ok",
          "EK key id " + HexEncode(*id)};
      TPMMA_RETURN_IF_ERROR(vault->UpsertPlatform(p, audit));
    }
    token = page.next_page_token;
  } while (!token.empty());
  return Status::Ok();
}

}  // namespace tpmma::server
