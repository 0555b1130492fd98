// SPDX-License-Identifier: GPL-2.0-or-later
#include "client/lms/app_keys.h"

#include <openssl/pem.h>
#include <openssl/x509.h>

#include "client/lms/mrk_handle.h"
#include "common/openssl.h"
#include "tpm/marshal.h"
#include "tpm/public.h"
#include "tpm/tss2_pem.h"

namespace tpmma::lms {

namespace {

bool IsApplicationKey(KeyType t) {
  return t == KeyType::kEccApp || t == KeyType::kRsaApp || t == KeyType::kEccSign ||
         t == KeyType::kRsaSign || t == KeyType::kRsaDecrypt;
}

// The store's MRK handle, checked to hold the store's MRK on this TPM.
Result<uint32_t> CheckedMrkHandle(Lms& lms, std::string_view for_what) {
  TPMMA_ASSIGN_OR_RETURN(MrkHandleReport r, ReportMrkHandle(lms));
  if (r.handle == 0) {
    return Error(Code::kUnsupported,
                 std::string(for_what) +
                     " needs the MRK at a persistent handle, and this store keeps none (it "
                     "was made with --mrk-handle none, or before lms kept one); `lms init "
                     "--force --mrk-handle 0x81000100` starts a store that does");
  }
  if (!r.present) {
    return Error(Code::kConflict,
                 "this store's MRK is not at " + HandleText(r.handle) + " on this TPM (" + r.state +
                     "): key files name it as their parent; if this is a new or cleared TPM, "
                     "restore the keys first (lms restore)");
  }
  return r.handle;
}

Result<X509Ptr> ParseCertificate(ByteView pem_or_der) {
  BioPtr bio(BIO_new_mem_buf(pem_or_der.data(), static_cast<int>(pem_or_der.size())));
  if (!bio) return Error(OpensslError("BIO_new_mem_buf"));
  X509Ptr cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
  if (!cert) {
    const unsigned char* p = pem_or_der.data();
    cert.reset(d2i_X509(nullptr, &p, static_cast<long>(pem_or_der.size())));
    if (cert && p != pem_or_der.data() + pem_or_der.size()) cert.reset();
  }
  if (!cert) {
    return Error(Code::kInvalidArgument, "not an X.509 certificate (PEM or DER)");
  }
  return cert;
}

}  // namespace

Result<MrkHandleReport> ReportMrkHandle(Lms& lms) {
  MrkHandleReport r;
  TPMMA_ASSIGN_OR_RETURN(StoreState state, lms.State());
  r.handle = state.mrk_handle;
  r.state = "none";
  if (r.handle == 0) return r;
  TPMMA_ASSIGN_OR_RETURN(KeyRecord mrk, lms.store().GetKey(state.mrk_id));
  TPMMA_ASSIGN_OR_RETURN(esys::Tpm * tpm, lms.OpenForMa());
  TPMMA_ASSIGN_OR_RETURN(MrkHandleProbe probe, ProbeMrkHandle(*tpm, r.handle, mrk.name));
  r.present = probe.holder == HandleHolder::kThisMrk;
  r.state = r.present                              ? "present"
            : probe.holder == HandleHolder::kEmpty ? "empty"
                                                   : "another object";
  return r;
}

Result<std::string> ExportTss2Pem(Lms& lms, std::string_view id_or_label) {
  TPMMA_ASSIGN_OR_RETURN(KeyRecord k, lms.Find(id_or_label));
  if (!IsApplicationKey(k.type)) {
    return Error(Code::kInvalidArgument, "key " + k.id + " ('" + k.label + "') is a " +
                                             std::string(KeyTypeName(k.type)) +
                                             " key; only signing and decryption keys have a "
                                             "TSS2 PRIVATE KEY file");
  }
  TPMMA_ASSIGN_OR_RETURN(uint32_t handle, CheckedMrkHandle(lms, "a TSS2 PRIVATE KEY file"));
  tpm::Tss2PrivateKey key{.parent = handle,
                          .empty_auth = true,
                          .public_area = k.public_area,
                          .private_area = k.private_area};
  return tpm::EncodeTss2PrivateKeyPem(key);
}

Result<KeyRecord> ImportTss2Pem(Lms& lms, std::string_view pem, const std::string& label) {
  TPMMA_ASSIGN_OR_RETURN(tpm::Tss2PrivateKey key, tpm::DecodeTss2PrivateKeyPem(pem));
  TPMMA_ASSIGN_OR_RETURN(StoreState state, lms.State());
  if (state.mrk_handle == 0 || key.parent != state.mrk_handle) {
    return Error(Code::kInvalidArgument,
                 "the key file's parent is " + HandleText(key.parent) + ", not this store's MRK" +
                     (state.mrk_handle != 0 ? " (" + HandleText(state.mrk_handle) + ")"
                                            : " (this store keeps no persistent MRK)") +
                     ": lms can keep and back up only keys made under its MRK");
  }
  if (!key.empty_auth) {
    return Error(Code::kUnsupported,
                 "the key file says the key has a password (emptyAuth FALSE); lms keeps keys "
                 "with an empty auth value only");
  }
  TPMMA_ASSIGN_OR_RETURN(uint32_t handle, CheckedMrkHandle(lms, "importing a key file"));
  (void)handle;
  return lms.ImportTpm2(key.public_area, key.private_area, label);
}

Result<KeyRecord> SetCertificate(Lms& lms, std::string_view id_or_label, ByteView pem_or_der) {
  TPMMA_ASSIGN_OR_RETURN(KeyRecord k, lms.Find(id_or_label));
  if (!IsApplicationKey(k.type)) {
    return Error(Code::kInvalidArgument,
                 "key " + k.id + " is a " + std::string(KeyTypeName(k.type)) +
                     " key; a certificate belongs to a signing or decryption key");
  }
  TPMMA_ASSIGN_OR_RETURN(X509Ptr cert, ParseCertificate(pem_or_der));
  TPMMA_ASSIGN_OR_RETURN(TPM2B_PUBLIC pub, tpm::Unmarshal<TPM2B_PUBLIC>(k.public_area));
  TPMMA_ASSIGN_OR_RETURN(EvpPkeyPtr key, tpm::PublicToEvp(pub.publicArea));
  if (EVP_PKEY_eq(X509_get0_pubkey(cert.get()), key.get()) != 1) {
    return Error(Code::kInvalidArgument,
                 "the certificate is for another key: its public key is "
                 "not the public key of " +
                     k.id + " ('" + k.label + "')");
  }
  const int len = i2d_X509(cert.get(), nullptr);
  if (len <= 0) return Error(OpensslError("i2d_X509"));
  k.certificate.resize(static_cast<size_t>(len));
  unsigned char* p = k.certificate.data();
  i2d_X509(cert.get(), &p);
  k.backed_up_at.reset();  // the next backup must carry the certificate
  TPMMA_RETURN_IF_ERROR(lms.store().Lock());
  TPMMA_RETURN_IF_ERROR(lms.store().PutKey(k));
  return k;
}

Result<CertificateInfo> DescribeCertificate(ByteView der) {
  TPMMA_ASSIGN_OR_RETURN(X509Ptr cert, ParseCertificate(der));
  CertificateInfo info;
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio ||
      X509_NAME_print_ex(bio.get(), X509_get_subject_name(cert.get()), 0, XN_FLAG_RFC2253) < 0) {
    return Error(OpensslError("X509_NAME_print_ex"));
  }
  char* data = nullptr;
  long n = BIO_get_mem_data(bio.get(), &data);
  info.subject.assign(data, static_cast<size_t>(n));
  struct tm tm {};
  if (ASN1_TIME_to_tm(X509_get0_notAfter(cert.get()), &tm) != 1) {
    return Error(OpensslError("ASN1_TIME_to_tm"));
  }
  info.not_after = timegm(&tm);
  BioPtr out(BIO_new(BIO_s_mem()));
  if (!out || PEM_write_bio_X509(out.get(), cert.get()) != 1) {
    return Error(OpensslError("PEM_write_bio_X509"));
  }
  n = BIO_get_mem_data(out.get(), &data);
  info.pem.assign(data, static_cast<size_t>(n));
  return info;
}

}  // namespace tpmma::lms
