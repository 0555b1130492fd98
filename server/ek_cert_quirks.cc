// SPDX-License-Identifier: GPL-2.0-or-later
#include "server/ek_cert_quirks.h"

#include <openssl/asn1.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>

#include <optional>

namespace tpmma::server {
namespace {

// One DER element located by ASN1_get_object: the whole TLV and its contents.
struct Element {
  ByteView whole;
  ByteView content;
  int tag = 0;
  int cls = 0;
  bool constructed = false;
};

// The element at the start of `in` (advanced past it); nullopt when OpenSSL cannot split it
// or its length is indefinite.
std::optional<Element> Next(ByteView& in) {
  const unsigned char* p = in.data();
  long len = 0;
  Element e;
  int r = ASN1_get_object(&p, &len, &e.tag, &e.cls, static_cast<long>(in.size()));
  if ((r & 0x80) != 0 || r == 0x21) {
    ERR_clear_error();
    return std::nullopt;
  }
  const size_t header = static_cast<size_t>(p - in.data());
  e.constructed = (r & V_ASN1_CONSTRUCTED) != 0;
  e.content = in.subspan(header, static_cast<size_t>(len));
  e.whole = in.subspan(0, header + static_cast<size_t>(len));
  in = in.subspan(e.whole.size());
  return e;
}

// A DER header (ASN1_put_object) followed by `content`.
Bytes Wrap(int constructed, int tag, int cls, ByteView content) {
  const int total = ASN1_object_size(constructed, static_cast<int>(content.size()), tag);
  Bytes out(static_cast<size_t>(total));
  unsigned char* p = out.data();
  ASN1_put_object(&p, constructed, static_cast<int>(content.size()), tag, cls);
  std::copy(content.begin(), content.end(), p);
  return out;
}

void Append(Bytes& out, ByteView v) { out.insert(out.end(), v.begin(), v.end()); }

std::string OpensslReason() {
  const unsigned long e = ERR_peek_error();  // the first: the cause, not a wrapper
  const char* reason = e != 0 ? ERR_reason_error_string(e) : nullptr;
  ERR_clear_error();
  return reason != nullptr ? reason : "unreadable";
}

Result<X509Ptr> D2i(ByteView der) {
  const unsigned char* p = der.data();
  X509Ptr cert(d2i_X509(nullptr, &p, static_cast<long>(der.size())));
  if (!cert) return Error(Code::kMalformed, OpensslReason());
  if (p != der.data() + der.size()) {
    return Error(Code::kMalformed, "bytes follow the certificate's DER length");
  }
  return cert;
}

// The certificate with a minimal serial number, and the TBS as issued; nullopt when the
// serial is not padded (the certificate's trouble is another one).
struct Canonical {
  Bytes der;
  Bytes issued_tbs;
};
std::optional<Canonical> WithMinimalSerial(ByteView der) {
  ByteView rest = der;
  auto outer = Next(rest);
  if (!outer || !rest.empty() || outer->tag != V_ASN1_SEQUENCE) return std::nullopt;
  ByteView parts = outer->content;
  auto tbs = Next(parts);
  if (!tbs || tbs->tag != V_ASN1_SEQUENCE || !tbs->constructed) return std::nullopt;
  ByteView fields = tbs->content;
  auto first = Next(fields);
  if (!first) return std::nullopt;
  std::optional<Element> version;
  std::optional<Element> serial = first;
  if (first->cls == V_ASN1_CONTEXT_SPECIFIC && first->tag == 0) {
    version = first;
    serial = Next(fields);
  }
  if (!serial || serial->cls != V_ASN1_UNIVERSAL || serial->tag != V_ASN1_INTEGER ||
      serial->constructed) {
    return std::nullopt;
  }
  // Leading 0x00 bytes that do not keep a high bit from reading as a sign.
  ByteView v = serial->content;
  size_t skip = 0;
  while (v.size() - skip > 1 && v[skip] == 0x00 && (v[skip + 1] & 0x80) == 0) ++skip;
  if (skip == 0) return std::nullopt;
  Bytes tbs_content;
  if (version) Append(tbs_content, version->whole);
  Append(tbs_content, Wrap(0, V_ASN1_INTEGER, V_ASN1_UNIVERSAL, v.subspan(skip)));
  Append(tbs_content, fields);
  Bytes cert_content = Wrap(1, V_ASN1_SEQUENCE, V_ASN1_UNIVERSAL, tbs_content);
  Append(cert_content, parts);  // signatureAlgorithm and signatureValue, as issued
  return Canonical{Wrap(1, V_ASN1_SEQUENCE, V_ASN1_UNIVERSAL, cert_content),
                   Bytes(tbs->whole.begin(), tbs->whole.end())};
}

}  // namespace

Result<EkCertificate> ParseEkCertificate(ByteView der, std::string_view what) {
  auto exact = D2i(der);
  if (exact) return EkCertificate{std::move(*exact), {}, {}};
  const std::string why = exact.error().message();
  std::optional<Canonical> canonical = WithMinimalSerial(der);
  if (!canonical) {
    return Error(Code::kMalformed,
                 std::string(what) + " is not an X.509 certificate OpenSSL can read (" + why +
                     "), and not one of the encodings the MA tolerates (a serial number with "
                     "leading zero bytes)");
  }
  auto copy = D2i(canonical->der);
  if (!copy) {
    return Error(Code::kMalformed,
                 std::string(what) +
                     " has a serial number with leading zero bytes (tolerated) but is still not "
                     "readable with a minimal serial number (" +
                     copy.error().message() + ")");
  }
  return EkCertificate{std::move(*copy), std::move(canonical->issued_tbs),
                       "serial number with leading zero bytes (not minimal DER)"};
}

Status VerifyIssuedSignature(const EkCertificate& c, EVP_PKEY* issuer_key) {
  if (c.issued_tbs.empty()) {
    if (X509_verify(c.cert.get(), issuer_key) == 1) return Status::Ok();
    ERR_clear_error();
    return Status(Code::kUnauthenticated, "EK certificate signature does not verify");
  }
  const ASN1_BIT_STRING* sig = nullptr;
  const X509_ALGOR* alg = nullptr;
  X509_get0_signature(&sig, &alg, c.cert.get());
  // The outer algorithm must be the one the issuer signed inside the TBS (RFC 5280 4.1.1.2).
  if (alg == nullptr || X509_ALGOR_cmp(alg, X509_get0_tbs_sigalg(c.cert.get())) != 0) {
    return Status(Code::kUnauthenticated,
                  "EK certificate's signature algorithm differs from the one inside it");
  }
  const ASN1_OBJECT* oid = nullptr;
  X509_ALGOR_get0(&oid, nullptr, nullptr, alg);
  int md_nid = NID_undef, pk_nid = NID_undef;
  if (OBJ_find_sigid_algs(OBJ_obj2nid(oid), &md_nid, &pk_nid) != 1 || md_nid == NID_undef ||
      EVP_get_digestbynid(md_nid) == nullptr) {
    return Status(Code::kUnsupported,
                  "EK certificate needed re-encoding (serial number with leading zero bytes) "
                  "and is signed with an algorithm the MA checks only through OpenSSL's own "
                  "certificate code (RSA-PSS, EdDSA): refused");
  }
  if (EVP_PKEY_get_base_id(issuer_key) != pk_nid) {
    return Status(Code::kUnauthenticated, "EK certificate's issuer key is of another type");
  }
  EvpMdCtxPtr ctx(EVP_MD_CTX_new());
  const bool ok = ctx &&
                  EVP_DigestVerifyInit(ctx.get(), nullptr, EVP_get_digestbynid(md_nid), nullptr,
                                       issuer_key) == 1 &&
                  EVP_DigestVerify(ctx.get(), sig->data, static_cast<size_t>(sig->length),
                                   c.issued_tbs.data(), c.issued_tbs.size()) == 1;
  ERR_clear_error();
  if (!ok) {
    return Status(Code::kUnauthenticated,
                  "EK certificate signature does not verify over its bytes as issued");
  }
  return Status::Ok();
}

}  // namespace tpmma::server
