// SPDX-License-Identifier: GPL-2.0-or-later
#include "client/ma/platform.h"

#include <openssl/x509.h>

#include <algorithm>
#include <cstdio>

#include "common/openssl.h"
#include "tpm/escrow.h"
#include "tpm/esys/tpm_pkey.h"
#include "tpm/marshal.h"
#include "tpm/public.h"

namespace tpmma::ma {

Bytes Tpm2bAttest(ByteView attest) {
  Bytes out(2 + attest.size());
  out[0] = static_cast<uint8_t>(attest.size() >> 8);
  out[1] = static_cast<uint8_t>(attest.size());
  std::copy(attest.begin(), attest.end(), out.begin() + 2);
  return out;
}

Result<VerifiedMaKey> VerifyMaKey(const MaKeyInfo& key, MaKeyRole role) {
  TPMMA_ASSIGN_OR_RETURN(TPM2B_PUBLIC pub, tpm::Unmarshal<TPM2B_PUBLIC>(key.public_area));
  if (role == MaKeyRole::kEscrow) {
    TPMMA_RETURN_IF_ERROR(
        tpm::CheckEscrowKey(pub.publicArea).WithContext("the MA key is not an escrow key"));
  } else {
    TPMMA_RETURN_IF_ERROR(
        tpm::CheckStorageParent(pub.publicArea).WithContext("the MA key is not a storage key"));
  }
  TPMMA_ASSIGN_OR_RETURN(Bytes name, tpm::ComputeName(pub.publicArea));
  TPMMA_ASSIGN_OR_RETURN(TPM2B_NAME sent, tpm::Unmarshal<TPM2B_NAME>(key.name));
  if (!ConstantTimeEqual(ByteView(sent.name, sent.size), name)) {
    return Error(Code::kIntegrityFailure,
                 role == MaKeyRole::kEscrow
                     ? "the MA escrow key's Name does not match its public area: refusing to "
                       "escrow inner keys to it"
                     : "the MA key's Name does not match its public area: refusing to name it "
                       "as the duplication target");
  }
  const unsigned char* p = key.certificate.data();
  X509Ptr cert(d2i_X509(nullptr, &p, static_cast<long>(key.certificate.size())));
  if (!cert || p != key.certificate.data() + key.certificate.size()) {
    return Error(Code::kMalformed, "the MA key certificate is not one DER certificate");
  }
  TPMMA_ASSIGN_OR_RETURN(EvpPkeyPtr tpm_key, tpm::PublicToEvp(pub.publicArea));
  if (EVP_PKEY_eq(X509_get0_pubkey(cert.get()), tpm_key.get()) != 1) {
    return Error(Code::kIntegrityFailure,
                 "the MA key certificate certifies a different key than the TPM public area");
  }
  VerifiedMaKey out{
      .key_id = key.key_id, .public_area = pub, .name = std::move(name), .approval = std::nullopt};
  if (role == MaKeyRole::kStorage && !key.policy_key.empty()) {
    auto approval = tpm::ApprovalFromWire(key.policy_key, key.approval, out.name);
    if (!approval) {
      return Error(approval.error().WithContext("the MA's approval of its key does not check out"));
    }
    out.approval = std::move(*approval);
  }
  return out;
}

namespace {

const tpm::EkTemplate& OrL1(const tpm::EkTemplate* t) {
  return t != nullptr ? *t : tpm::TcgEkTemplate("L-1");
}

std::string Hex32(uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%08x", v);
  return buf;
}

// Key size of a template's key in bits (RSA modulus, ECC curve), as EVP_PKEY_get_bits says.
int TemplateBits(const TPMT_PUBLIC& p) {
  if (p.type == TPM2_ALG_RSA) return p.parameters.rsaDetail.keyBits;
  switch (p.parameters.eccDetail.curveID) {
    case TPM2_ECC_NIST_P384:
      return 384;
    case TPM2_ECC_NIST_P521:
      return 521;
    default:
      return 256;
  }
}

// The template whose EK has the key `der` certifies; only templates of its algorithm and
// size are created (an RSA EK takes the TPM a while).
Result<EkChoice> EkOfCertificate(esys::Tpm& tpm, ByteView der) {
  const unsigned char* p = der.data();
  X509Ptr cert(d2i_X509(nullptr, &p, static_cast<long>(der.size())));
  if (!cert) return Error(Code::kMalformed, "the EK certificate (--ek-cert) is not DER X.509");
  EVP_PKEY* key = X509_get0_pubkey(cert.get());
  if (key == nullptr) return Error(Code::kMalformed, "the EK certificate has no usable key");
  const int want_type = EVP_PKEY_get_base_id(key) == EVP_PKEY_RSA ? TPM2_ALG_RSA : TPM2_ALG_ECC;
  std::string tried;
  for (const tpm::EkTemplate& t : tpm::TcgEkTemplates()) {
    if (t.public_area.type != want_type || TemplateBits(t.public_area) != EVP_PKEY_get_bits(key)) {
      continue;
    }
    tried += (tried.empty() ? "" : ", ") + t.name;
    auto ek = tpm.CreateEk(t);
    if (!ek) continue;  // a template this TPM does not support (SM2, RSA 4096, ...)
    auto ek_key = tpm::PublicToEvp(ek->public_area().publicArea);
    if (ek_key && EVP_PKEY_eq(key, ek_key->get()) == 1) {
      return EkChoice{.ek_template = &t, .certificate = Bytes(der.begin(), der.end())};
    }
  }
  return Error(Code::kNotFound, "the EK certificate (--ek-cert) certifies no EK of this TPM (" +
                                    (tried.empty() ? "no TCG EK template has its key type"
                                                   : "tried the templates " + tried) +
                                    ")");
}

// `key` with the AK's TPM2_Certify of it over `nonce`, as Complete carries it.
Result<CertifiedKeyProof> CertifyKey(esys::Tpm& tpm, const esys::Object& key,
                                     const esys::Object& ak, ByteView nonce) {
  TPMMA_ASSIGN_OR_RETURN(esys::PublicInfo info, tpm.ReadPublic(key));
  TPMMA_ASSIGN_OR_RETURN(esys::Attestation cert, tpm.Certify(key, ak, nonce));
  return CertifiedKeyProof{.public_area = info.marshalled,
                           .certify_info = Tpm2bAttest(cert.attest),
                           .certify_signature = cert.signature};
}

}  // namespace

Result<EkChoice> ChooseEk(esys::Tpm& tpm, ByteView given_certificate) {
  if (!given_certificate.empty()) return EkOfCertificate(tpm, given_certificate);
  std::string indices;
  for (const tpm::EkTemplate& t : tpm::TcgEkTemplates()) {
    auto cert = tpm.ReadNvCertificate(t.cert_index);
    if (cert) return EkChoice{.ek_template = &t, .certificate = std::move(*cert)};
    if (cert.error().code() != Code::kNotFound) {
      return Error(cert.error().WithContext("reading the " + t.name + " EK certificate"));
    }
    indices += (indices.empty() ? "" : ", ") + Hex32(t.cert_index);
  }
  return Error(Code::kNotFound,
               "no EK certificate in any of the TCG NV indices (" + indices +
                   "): give it with --ek-cert FILE (firmware TPMs such as Intel PTT and AMD fTPM "
                   "often keep it at the vendor's service instead)");
}

Result<esys::KeyBlob> CreateAttestationKey(esys::Tpm& tpm, esys::KeyAlg alg,
                                           const tpm::EkTemplate* ek_template) {
  TPMMA_ASSIGN_OR_RETURN(esys::Object ek, tpm.CreateEk(OrL1(ek_template)));
  return tpm.CreateAk(ek, alg);
}

TPM2B_PUBLIC PackageSigningTemplate(esys::ChildType type) {
  TPM2B_PUBLIC t = esys::ChildTemplate(type, false);
  t.publicArea.objectAttributes |= TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT;
  return t;
}

Result<PlatformSession> Authenticate(MaClient& ma, esys::Tpm& tpm, const esys::KeyBlob& ak_blob,
                                     const esys::Object* signing_parent,
                                     const AuthenticateOptions& options) {
  if ((options.with_signing_key || options.certify_srk) && signing_parent == nullptr) {
    return Error(Code::kInvalidArgument,
                 "a package-signing key or an SRK certification needs the SRK");
  }
  EkChoice chosen;
  if (options.ek) {
    chosen = *options.ek;
  } else {
    TPMMA_ASSIGN_OR_RETURN(chosen, ChooseEk(tpm, options.ek_certificate));
  }
  TPMMA_ASSIGN_OR_RETURN(esys::Object ek, tpm.CreateEk(OrL1(chosen.ek_template)));
  TPMMA_ASSIGN_OR_RETURN(esys::PublicInfo ek_info, tpm.ReadPublic(ek));
  Bytes ek_cert = std::move(chosen.certificate);
  const bool has_cert = !ek_cert.empty();
  TPMMA_ASSIGN_OR_RETURN(Bytes ak_public, tpm::Marshal(ak_blob.public_area));

  TPMMA_ASSIGN_OR_RETURN(
      AuthChallenge ch,
      ma.AuthenticateBegin(
          {.ek_public = ek_info.marshalled,
           .ek_certificate = std::move(ek_cert),
           // none without a certificate (a TPM
           // that has none): the MA refuses them alone
           .ek_intermediates = !has_cert ? std::vector<Bytes>{} : options.ek_intermediates,
           .ak_public = ak_public}));
  TPMMA_ASSIGN_OR_RETURN(auto blob, tpm::Unmarshal<TPM2B_ID_OBJECT>(ch.credential_blob));
  TPMMA_ASSIGN_OR_RETURN(auto secret, tpm::Unmarshal<TPM2B_ENCRYPTED_SECRET>(ch.encrypted_secret));

  TPMMA_ASSIGN_OR_RETURN(esys::Object ak, tpm.Load(ek, ak_blob));
  TPMMA_ASSIGN_OR_RETURN(SecureBytes activated, tpm.ActivateCredential(ak, ek, blob, secret));
  ek.reset();  // frees a slot for the signing key

  PlatformSession out;
  out.ek_template = &OrL1(chosen.ek_template);
  std::optional<CertifiedKeyProof> proof;
  if (options.with_signing_key) {
    esys::KeyBlob key_blob;
    esys::Object key;
    if (options.reuse_signing_key != nullptr) {
      auto reused = tpm.Load(*signing_parent, *options.reuse_signing_key);
      if (reused) {
        key_blob = *options.reuse_signing_key;
        key = std::move(*reused);
      }
    }
    if (!key) {
      TPMMA_ASSIGN_OR_RETURN(
          key_blob, tpm.Create(*signing_parent, PackageSigningTemplate(options.signing_key_type)));
      TPMMA_ASSIGN_OR_RETURN(key, tpm.Load(*signing_parent, key_blob));
    }
    TPMMA_ASSIGN_OR_RETURN(proof, CertifyKey(tpm, key, ak, ch.nonce));
    out.signing_public = proof->public_area;
    out.signing_blob = key_blob;
    TPMMA_ASSIGN_OR_RETURN(out.signer, esys::MakeTpmSigningKey(tpm, std::move(key)));
  }
  std::optional<CertifiedKeyProof> srk_proof;
  if (options.certify_srk) {
    TPMMA_ASSIGN_OR_RETURN(srk_proof, CertifyKey(tpm, *signing_parent, ak, ch.nonce));
  }
  ak.reset();

  TPMMA_ASSIGN_OR_RETURN(Bytes p, ChallengeProof(activated, ch.challenge_id));
  TPMMA_ASSIGN_OR_RETURN(out.session, ma.AuthenticateComplete({.challenge_id = ch.challenge_id,
                                                               .proof = std::move(p),
                                                               .signing_key = std::move(proof),
                                                               .srk = std::move(srk_proof),
                                                               .inventory = options.inventory}));
  return out;
}

Result<DownloadedPackage> DownloadTo(MaClient& ma, esys::Tpm& tpm, std::string_view token,
                                     std::string_view package_id, const esys::Object& parent,
                                     const esys::KeyBlob& ak_blob,
                                     const tpm::EkTemplate* ek_template) {
  TPMMA_ASSIGN_OR_RETURN(esys::PublicInfo parent_info, tpm.ReadPublic(parent));
  TPMMA_ASSIGN_OR_RETURN(TPM2B_NAME name,
                         tpm::ComputeTpm2bName(parent_info.public_area.publicArea));
  TPMMA_ASSIGN_OR_RETURN(Bytes name_bytes, tpm::Marshal(name));
  TPMMA_ASSIGN_OR_RETURN(Bytes nonce, ma.DownloadPrepare(token, package_id, name_bytes));

  TPMMA_ASSIGN_OR_RETURN(esys::Object ek, tpm.CreateEk(OrL1(ek_template)));
  TPMMA_ASSIGN_OR_RETURN(esys::Object ak, tpm.Load(ek, ak_blob));
  ek.reset();
  TPMMA_ASSIGN_OR_RETURN(esys::Attestation cert, tpm.Certify(parent, ak, nonce));
  ak.reset();
  return ma.DownloadComplete(token, package_id,
                             {.nonce = std::move(nonce),
                              .destination_public = parent_info.marshalled,
                              .certify_info = Tpm2bAttest(cert.attest),
                              .certify_signature = cert.signature});
}

}  // namespace tpmma::ma
