// SPDX-License-Identifier: GPL-2.0-or-later
#include "client/lms/ek_fetch.h"

#include <openssl/evp.h>
#include <openssl/x509.h>

#include <algorithm>
#include <ctime>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "client/lms/ek_https.h"
#include "client/lms/keystore.h"
#include "common/openssl.h"
#include "tpm/ek_templates.h"
#include "tpm/esys/esys.h"
#include "tpm/public.h"

namespace tpmma::lms {

std::string_view EkVendorName(EkVendor vendor) {
  return vendor == EkVendor::kAmd ? "amd" : "intel";
}

std::optional<EkVendor> ParseEkVendor(std::string_view name) {
  if (name == "intel") return EkVendor::kIntel;
  if (name == "amd") return EkVendor::kAmd;
  return std::nullopt;
}

std::optional<EkVendor> VendorOfManufacturer(std::string_view m) {
  while (!m.empty() && (m.back() == ' ' || m.back() == '\0')) m.remove_suffix(1);
  if (m == "INTC") return EkVendor::kIntel;
  if (m == "AMD") return EkVendor::kAmd;
  return std::nullopt;
}

namespace {

Result<Bytes> Sha256(ByteView data) {
  Bytes out(32);
  unsigned int len = 0;
  if (EVP_Digest(data.data(), data.size(), out.data(), &len, EVP_sha256(), nullptr) != 1) {
    return Error(OpensslError("SHA-256"));
  }
  return out;
}

void Append(Bytes& out, const uint8_t* data, size_t size) {
  out.insert(out.end(), data, data + size);
}

void AppendBe32(Bytes& out, uint32_t v) {
  const uint8_t b[4] = {static_cast<uint8_t>(v >> 24), static_cast<uint8_t>(v >> 16),
                        static_cast<uint8_t>(v >> 8), static_cast<uint8_t>(v)};
  Append(out, b, sizeof b);
}

// What tpm2_getekcertificate.c hash_ek_public() feeds SHA-256 (tpm2-tools 5.x, also
// tpm2-tools issue 3158 for AMD):
//   Intel RSA: modulus || 01 00 01 (the default exponent only; tpm2-tools refuses others)
//   Intel ECC: x || y
//   AMD RSA:   00 00 22 22 || exponent (4 bytes big-endian, 0 meaning 65537) || modulus
//   AMD ECC:   00 00 44 44 || x || y
Result<Bytes> HashedEkBytes(EkVendor vendor, const TPMT_PUBLIC& ek) {
  Bytes in;
  if (ek.type == TPM2_ALG_RSA) {
    const uint32_t exponent = ek.parameters.rsaDetail.exponent;
    const TPM2B_PUBLIC_KEY_RSA& n = ek.unique.rsa;
    if (vendor == EkVendor::kIntel) {
      if (exponent != 0 && exponent != 65537) {
        return Error(Code::kUnsupported,
                     "the Intel EK service knows RSA EKs with exponent 65537 only");
      }
      Append(in, n.buffer, n.size);
      const uint8_t e[3] = {0x01, 0x00, 0x01};
      Append(in, e, sizeof e);
    } else {
      AppendBe32(in, 0x00002222);
      AppendBe32(in, exponent == 0 ? 65537 : exponent);
      Append(in, n.buffer, n.size);
    }
    return in;
  }
  if (ek.type == TPM2_ALG_ECC) {
    if (vendor == EkVendor::kAmd) AppendBe32(in, 0x00004444);
    Append(in, ek.unique.ecc.x.buffer, ek.unique.ecc.x.size);
    Append(in, ek.unique.ecc.y.buffer, ek.unique.ecc.y.size);
    return in;
  }
  return Error(Code::kUnsupported, "the EK is neither RSA nor ECC");
}

// Standard base64 (with its '=' padding) made URL-safe ('+' -> '-', '/' -> '_') and then
// percent-escaped as curl_easy_escape does: the padding goes out as "%3D" (tpm2-tools
// base64_encode; Intel's "pubhash" field spells it the same way, keylime issue 1027).
std::string IntelPathElement(ByteView hash) {
  std::string out;
  for (char c : Base64Encode(hash)) {
    if (c == '+') {
      out += '-';
    } else if (c == '/') {
      out += '_';
    } else if (c == '=') {
      out += "%3D";
    } else {
      out += c;
    }
  }
  return out;
}

// Base64url as Intel sends the certificate, with or without padding, '=' also as "%3D".
Result<Bytes> DecodeBase64Url(std::string_view text) {
  std::string b64;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (c == '-') {
      b64 += '+';
    } else if (c == '_') {
      b64 += '/';
    } else if (c == '%' && text.substr(i, 3) == "%3D") {
      b64 += '=';
      i += 2;
    } else if (c == '+' || c == '/') {
      return Error(Code::kMalformed, "not base64url (holds '+' or '/')");
    } else {
      b64 += c;
    }
  }
  while (b64.size() % 4 != 0) b64 += '=';
  return Base64Decode(b64);
}

Result<X509Ptr> ParseDer(ByteView der, std::string_view what) {
  const unsigned char* p = der.data();
  X509Ptr cert(d2i_X509(nullptr, &p, static_cast<long>(der.size())));
  if (!cert || p != der.data() + der.size()) {
    return Error(Code::kMalformed, std::string(what) + " is not one DER X.509 certificate");
  }
  return cert;
}

std::string NameLine(const X509_NAME* name) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || X509_NAME_print_ex(bio.get(), name, 0, XN_FLAG_RFC2253) < 0) return "";
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<size_t>(n));
}

std::string VendorTitle(EkVendor v) {
  return v == EkVendor::kAmd ? "the AMD fTPM EK service" : "the Intel PTT EK service";
}

Status ReplyStatus(EkVendor vendor, const std::string& url, int status) {
  if (status == 200) return Status::Ok();
  if (status == 404) {
    return Status(Code::kNotFound, VendorTitle(vendor) +
                                       " has no certificate for this TPM's EK "
                                       "(HTTP 404 for " +
                                       url + "); try --vendor or --alg, or use --ek-cert FILE");
  }
  return Status(Code::kUnavailable,
                VendorTitle(vendor) + " answered HTTP " + std::to_string(status) + " for " + url);
}

// The certificate, the key check against the EK, the facts to print.
Result<EkFetched> CheckedCertificate(EkVendor vendor, const std::string& url, ByteView der,
                                     const TPMT_PUBLIC& ek) {
  TPMMA_ASSIGN_OR_RETURN(X509Ptr cert, ParseDer(der, "the certificate from the service"));
  TPMMA_ASSIGN_OR_RETURN(EvpPkeyPtr ek_key, tpm::PublicToEvp(ek));
  EVP_PKEY* cert_key = X509_get0_pubkey(cert.get());
  if (cert_key == nullptr || EVP_PKEY_eq(cert_key, ek_key.get()) != 1) {
    return Error(Code::kIntegrityFailure, VendorTitle(vendor) +
                                              " sent a certificate for another key "
                                              "than this TPM's EK (" +
                                              url + "): not used");
  }
  EkFetched out;
  out.vendor = vendor;
  out.url = url;
  out.certificate.assign(der.begin(), der.end());
  out.subject = NameLine(X509_get_subject_name(cert.get()));
  out.issuer = NameLine(X509_get_issuer_name(cert.get()));
  struct tm tm {};
  if (ASN1_TIME_to_tm(X509_get0_notAfter(cert.get()), &tm) == 1) out.not_after = timegm(&tm);
  return out;
}

// <store>/ek-cert.der, then config.json names it, under the store's lock.
Status KeepInStore(KeyStore& store, EkFetched& fetched) {
  std::error_code ec;
  if (!std::filesystem::is_directory(store.dir(), ec)) TPMMA_RETURN_IF_ERROR(store.CreateLayout());
  TPMMA_RETURN_IF_ERROR(store.Lock());
  const std::string path = std::filesystem::absolute(store.dir() + "/ek-cert.der", ec).string();
  TPMMA_RETURN_IF_ERROR(store.env()->WriteFileAtomic(path, fetched.certificate, 0644));
  TPMMA_ASSIGN_OR_RETURN(StoreConfig config, store.ReadConfig());
  config.ek_cert = path;
  TPMMA_RETURN_IF_ERROR(store.WriteConfig(config));
  store.Unlock();
  fetched.stored_at = path;
  return Status::Ok();
}

}  // namespace

Result<std::string> EkServicePath(EkVendor vendor, const TPMT_PUBLIC& ek) {
  TPMMA_ASSIGN_OR_RETURN(Bytes in, HashedEkBytes(vendor, ek));
  TPMMA_ASSIGN_OR_RETURN(Bytes hash, Sha256(in));
  if (vendor == EkVendor::kIntel) return IntelPathElement(hash);
  // encode_ek_public_amd: the first 16 bytes of the hash (AMD_EK_URI_LEN), lower-case hex.
  return HexEncode(ByteView(hash.data(), 16));
}

std::string EkServiceUrl(EkVendor vendor, std::string_view base, std::string_view path) {
  std::string url(base.empty() ? (vendor == EkVendor::kAmd ? kAmdEkService : kIntelEkService)
                               : base);
  if (!url.ends_with('/')) url += '/';
  return url + std::string(path);
}

Result<Bytes> DecodeEkServiceReply(EkVendor vendor, std::string_view body) {
  if (vendor == EkVendor::kAmd) {
    Bytes der(body.begin(), body.end());
    TPMMA_ASSIGN_OR_RETURN(X509Ptr checked, ParseDer(der, "the AMD fTPM EK service's reply"));
    return der;
  }
  const nlohmann::json j = nlohmann::json::parse(body, nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    return Error(Code::kMalformed, "the Intel PTT EK service's reply is not a JSON object");
  }
  auto it = j.find("certificate");
  if (it == j.end() || !it->is_string()) {
    return Error(Code::kMalformed,
                 "the Intel PTT EK service's reply has no \"certificate\" string");
  }
  auto der = DecodeBase64Url(it->get<std::string>());
  if (!der) {
    return Error(Code::kMalformed, "the Intel PTT EK service's \"certificate\" is not base64url: " +
                                       der.error().message());
  }
  TPMMA_ASSIGN_OR_RETURN(X509Ptr checked,
                         ParseDer(*der, "the Intel PTT EK service's \"certificate\""));
  return der;
}

Result<EkFetched> FetchEkCertificate(esys::Tpm& tpm, KeyStore& store, const EkFetchOptions& options,
                                     const std::function<void(std::string_view)>& progress) {
  auto say = [&progress](const std::string& line) {
    if (progress) progress(line);
  };
  if (!options.base_url.empty() && !options.base_url.starts_with("https://")) {
    return Error(Code::kInvalidArgument, "only https:// URLs are used for the EK service (got \"" +
                                             options.base_url + "\")");
  }
  TPMMA_ASSIGN_OR_RETURN(esys::TpmInfo info, tpm.Info());
  std::optional<EkVendor> vendor = options.vendor;
  if (!vendor) vendor = VendorOfManufacturer(info.manufacturer);
  if (!vendor) {
    return Error(Code::kUnsupported,
                 "this TPM's manufacturer \"" + info.manufacturer +
                     "\" has no online EK certificate service lms knows (Intel PTT and AMD fTPM "
                     "have): give the certificate with --ek-cert FILE, or --vendor intel|amd if "
                     "the manufacturer is misreported");
  }
  const tpm::EkTemplate& tmpl = tpm::TcgEkTemplate(options.ecc ? "L-2" : "L-1");
  say("making the " + tmpl.name + " endorsement key to look its certificate up");
  TPMMA_ASSIGN_OR_RETURN(esys::Object ek, tpm.CreateEk(tmpl));
  const TPMT_PUBLIC ek_public = ek.public_area().publicArea;
  ek.reset();
  TPMMA_ASSIGN_OR_RETURN(std::string path, EkServicePath(*vendor, ek_public));
  const std::string url = EkServiceUrl(*vendor, options.base_url, path);
  say("fetching the EK certificate from " + url);
  auto reply = HttpsGet(
      url,
      {.ca_file = options.ca_file, .timeout_s = options.timeout_s, .max_body = kMaxEkServiceReply});
  if (!reply) return Error(reply.error().WithContext(VendorTitle(*vendor)));
  TPMMA_RETURN_IF_ERROR(ReplyStatus(*vendor, url, reply->status));
  TPMMA_ASSIGN_OR_RETURN(Bytes der, DecodeEkServiceReply(*vendor, reply->body));
  TPMMA_ASSIGN_OR_RETURN(EkFetched out, CheckedCertificate(*vendor, url, der, ek_public));
  out.manufacturer = info.manufacturer;
  out.ek_template = tmpl.name;
  TPMMA_RETURN_IF_ERROR(KeepInStore(store, out));
  return out;
}

}  // namespace tpmma::lms
