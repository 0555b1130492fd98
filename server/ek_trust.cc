// SPDX-License-Identifier: GPL-2.0-or-later
#include "server/ek_trust.h"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509_vfy.h>

#include <algorithm>
#include <ctime>
#include <optional>

namespace tpmma::server {
namespace {

constexpr size_t kMaxCertFileBytes = 1024 * 1024;

using X509Stack =
    std::unique_ptr<STACK_OF(X509), decltype([](STACK_OF(X509) * s) { sk_X509_free(s); })>;

std::optional<int64_t> AsnTimeToUnix(const ASN1_TIME* t) {
  struct tm tm {};
  if (t == nullptr || ASN1_TIME_to_tm(t, &tm) != 1) return std::nullopt;
  return static_cast<int64_t>(timegm(&tm));
}

Result<std::string> Fingerprint(X509* cert) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (X509_digest(cert, EVP_sha256(), md, &len) != 1) return Error(OpensslError("X509_digest"));
  return HexEncode(ByteView(md, len));
}

bool LooksLikePem(ByteView bytes) {
  std::string_view text(reinterpret_cast<const char*>(bytes.data()), bytes.size());
  return text.find("-----BEGIN") != std::string_view::npos;
}

// A certificate's place in the path: from the endpoint, the pool or a root.
PathSource SourceOf(X509* cert, const std::vector<X509*>& sent) {
  for (X509* s : sent) {
    if (X509_cmp(s, cert) == 0) return PathSource::kSent;
  }
  return PathSource::kPool;
}

// The refusal in words: the missing issuer and the command that adds it.
Status Refusal(X509_STORE_CTX* ctx) {
  const int err = X509_STORE_CTX_get_error(ctx);
  std::string why =
      std::string("EK certificate not trusted: ") + X509_verify_cert_error_string(err);
  STACK_OF(X509)* chain = X509_STORE_CTX_get0_chain(ctx);
  X509* top = chain != nullptr && sk_X509_num(chain) > 0
                  ? sk_X509_value(chain, sk_X509_num(chain) - 1)
                  : X509_STORE_CTX_get_current_cert(ctx);
  if (top == nullptr) return Status(Code::kUnauthenticated, why);
  const std::string subject = NameText(X509_get_subject_name(top));
  const std::string issuer = NameText(X509_get_issuer_name(top));
  if (err == X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY ||
      err == X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT) {
    why += "; missing issuer '" + issuer + "' (the issuer of '" + subject +
           "'): add it at the MA with `ma-admin ek-trust add --intermediate FILE` if it is an "
           "intermediate CA, or `ma-admin ek-trust add --root FILE` if it is a root CA you trust";
  } else if (err == X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN ||
             err == X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT) {
    why += "; root '" + subject +
           "' is not a trusted EK root of this MA: if you trust it, add it with "
           "`ma-admin ek-trust add --root FILE`";
  } else {
    X509* at = X509_STORE_CTX_get_current_cert(ctx);
    if (at != nullptr) why += " (at '" + NameText(X509_get_subject_name(at)) + "')";
  }
  return Status(Code::kUnauthenticated, why);
}

// For a canonical copy of the EK certificate only: its own signature fails (it is not over
// the bytes as issued); it passes when the issuer above it in the built chain signed the TBS
// as issued. Every other error, at every depth, stays an error.
int AcceptIssuedSignature(int ok, X509_STORE_CTX* ctx) {
  if (ok == 1 || X509_STORE_CTX_get_error(ctx) != X509_V_ERR_CERT_SIGNATURE_FAILURE ||
      X509_STORE_CTX_get_error_depth(ctx) != 0) {
    return ok;
  }
  const auto* ek = static_cast<const EkCertificate*>(X509_STORE_CTX_get_app_data(ctx));
  STACK_OF(X509)* chain = X509_STORE_CTX_get0_chain(ctx);
  if (ek == nullptr || chain == nullptr || sk_X509_num(chain) < 2 ||
      X509_STORE_CTX_get_current_cert(ctx) != ek->cert.get()) {
    return ok;
  }
  EVP_PKEY* issuer_key = X509_get0_pubkey(sk_X509_value(chain, 1));
  if (issuer_key == nullptr || !VerifyIssuedSignature(*ek, issuer_key).ok()) return ok;
  X509_STORE_CTX_set_error(ctx, X509_V_OK);
  return 1;
}

}  // namespace

std::string NameText(const X509_NAME* name) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || name == nullptr ||
      X509_NAME_print_ex(bio.get(), name, 0, XN_FLAG_RFC2253 & ~ASN1_STRFLGS_ESC_MSB) < 0) {
    return "(unreadable name)";
  }
  char* data = nullptr;
  long n = BIO_get_mem_data(bio.get(), &data);
  std::string out(data, static_cast<size_t>(n));
  return out.empty() ? "(empty subject)" : out;
}

Result<CertSummary> Summarize(X509* cert) {
  CertSummary s;
  s.subject = NameText(X509_get_subject_name(cert));
  s.issuer = NameText(X509_get_issuer_name(cert));
  TPMMA_ASSIGN_OR_RETURN(s.fingerprint, Fingerprint(cert));
  auto nb = AsnTimeToUnix(X509_get0_notBefore(cert));
  auto na = AsnTimeToUnix(X509_get0_notAfter(cert));
  if (!nb || !na) return Error(Code::kMalformed, "certificate '" + s.subject + "': bad validity");
  s.not_before = *nb;
  s.not_after = *na;
  return s;
}

std::string_view PathSourceName(PathSource s) {
  switch (s) {
    case PathSource::kLeaf:
      return "certificate";
    case PathSource::kSent:
      return "sent";
    case PathSource::kPool:
      return "pool";
    case PathSource::kRoot:
      return "root";
  }
  return "?";
}

Result<std::vector<X509Ptr>> ParseCertificates(ByteView bytes, const std::string& what) {
  std::vector<X509Ptr> out;
  if (!LooksLikePem(bytes)) {
    const unsigned char* p = bytes.data();
    X509Ptr cert(d2i_X509(nullptr, &p, static_cast<long>(bytes.size())));
    ERR_clear_error();
    if (!cert || p != bytes.data() + bytes.size()) {
      return Error(Code::kMalformed, what + " is not an X.509 certificate (PEM or DER)");
    }
    out.push_back(std::move(cert));
    return out;
  }
  BioPtr bio(BIO_new_mem_buf(bytes.data(), static_cast<int>(bytes.size())));
  if (!bio) return Error(OpensslError("BIO_new_mem_buf"));
  while (true) {
    X509Ptr cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
    if (!cert) break;
    out.push_back(std::move(cert));
  }
  ERR_clear_error();  // the loop ends on a "no start line" error
  if (out.empty()) return Error(Code::kMalformed, what + " holds no PEM certificate");
  return out;
}

Result<std::vector<X509Ptr>> LoadCertificates(Env* env, const std::string& path) {
  std::vector<X509Ptr> out;
  auto entries = env->ListDir(path);
  if (!entries) {
    TPMMA_ASSIGN_OR_RETURN(Bytes bytes, env->ReadFile(path, kMaxCertFileBytes));
    return ParseCertificates(bytes, path);
  }
  std::vector<std::string> names = *entries;
  std::sort(names.begin(), names.end());
  for (const std::string& name : names) {
    if (!name.ends_with(".pem") && !name.ends_with(".crt")) continue;
    TPMMA_ASSIGN_OR_RETURN(std::vector<X509Ptr> certs, LoadCertificates(env, path + "/" + name));
    for (X509Ptr& c : certs) out.push_back(std::move(c));
  }
  return out;
}

Result<std::unique_ptr<EkTrust>> EkTrust::Load(const std::vector<std::string>& roots,
                                               const std::vector<std::string>& intermediates,
                                               Env* env) {
  std::unique_ptr<EkTrust> t(new EkTrust());
  t->store_.reset(X509_STORE_new());
  if (!t->store_) return Error(OpensslError("X509_STORE_new"));
  for (const std::string& path : roots) {
    auto certs = LoadCertificates(env, path);
    if (!certs) return Error(certs.error().WithContext("EK root " + path));
    for (X509Ptr& c : *certs) {
      if (X509_STORE_add_cert(t->store_.get(), c.get()) != 1) {
        return Error(OpensslError("X509_STORE_add_cert"));
      }
      TPMMA_ASSIGN_OR_RETURN(std::string fp, Fingerprint(c.get()));
      t->root_fingerprints_.push_back(std::move(fp));
      t->roots_.push_back(std::move(c));
    }
  }
  for (const std::string& path : intermediates) {
    auto certs = LoadCertificates(env, path);
    if (!certs) return Error(certs.error().WithContext("EK intermediate " + path));
    for (X509Ptr& c : *certs) {
      TPMMA_ASSIGN_OR_RETURN(std::string fp, Fingerprint(c.get()));
      t->pool_fingerprints_.push_back(std::move(fp));
      t->pool_.push_back(std::move(c));
    }
  }
  return t;
}

Result<VerifiedPath> EkTrust::Verify(X509* leaf, const std::vector<X509*>& sent,
                                     int64_t now) const {
  if (leaf == nullptr || X509_up_ref(leaf) != 1) return Error(OpensslError("X509_up_ref"));
  return Verify(EkCertificate{X509Ptr(leaf), {}, {}}, sent, now);
}

Result<VerifiedPath> EkTrust::Verify(const EkCertificate& ek, const std::vector<X509*>& sent,
                                     int64_t now) const {
  X509* leaf = ek.cert.get();
  if (leaf == nullptr) return Error(Code::kInvalidArgument, "no EK certificate");
  // Untrusted helpers: what the endpoint sent, then the pool. Never anchors: only store_ is.
  X509Stack untrusted(sk_X509_new_null());
  if (!untrusted) return Error(OpensslError("sk_X509_new_null"));
  for (X509* c : sent) {
    if (sk_X509_push(untrusted.get(), c) == 0) return Error(OpensslError("sk_X509_push"));
  }
  for (const X509Ptr& c : pool_) {
    if (sk_X509_push(untrusted.get(), c.get()) == 0) return Error(OpensslError("sk_X509_push"));
  }
  X509StoreCtxPtr ctx(X509_STORE_CTX_new());
  if (!ctx || X509_STORE_CTX_init(ctx.get(), store_.get(), leaf, untrusted.get()) != 1) {
    return Error(OpensslError("X509_STORE_CTX_init"));
  }
  // Validity is judged on the caller's clock (the service clock for ma-server).
  X509_STORE_CTX_set_time(ctx.get(), 0, static_cast<time_t>(now));
  if (!ek.issued_tbs.empty()) {
    X509_STORE_CTX_set_app_data(ctx.get(), const_cast<EkCertificate*>(&ek));
    X509_STORE_CTX_set_verify_cb(ctx.get(), AcceptIssuedSignature);
  }
  if (X509_verify_cert(ctx.get()) != 1) {
    Status refused = Refusal(ctx.get());
    ERR_clear_error();
    return Error(std::move(refused));
  }
  VerifiedPath out;
  out.not_before = INT64_MIN;
  out.not_after = INT64_MAX;
  STACK_OF(X509)* chain = X509_STORE_CTX_get0_chain(ctx.get());
  const int n = chain != nullptr ? sk_X509_num(chain) : 0;
  if (n == 0) return Error(Code::kInternal, "X509_verify_cert built no chain");
  for (int i = 0; i < n; ++i) {
    X509* c = sk_X509_value(chain, i);
    TPMMA_ASSIGN_OR_RETURN(CertSummary s, Summarize(c));
    out.not_before = std::max(out.not_before, s.not_before);
    out.not_after = std::min(out.not_after, s.not_after);
    PathSource src = i == 0 ? PathSource::kLeaf : SourceOf(c, sent);
    if (i == n - 1 && std::find(root_fingerprints_.begin(), root_fingerprints_.end(),
                                s.fingerprint) != root_fingerprints_.end()) {
      src = PathSource::kRoot;
    }
    out.certs.push_back(std::move(s));
    out.sources.push_back(src);
  }
  return out;
}

}  // namespace tpmma::server
