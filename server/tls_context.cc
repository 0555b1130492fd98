// SPDX-License-Identifier: GPL-2.0-or-later
// First, before any Asio header: Boost 1.74's awaitable.hpp uses std::exchange under C++23
// without including <utility>.
#include <utility>

#include "server/tls_context.h"

#include <openssl/crypto.h>
#include <openssl/ssl.h>

#include <fmt/format.h>
#include <boost/asio/buffer.hpp>

#include "common/file_mode.h"
#include "common/openssl.h"

namespace tpmma::server {
namespace {

namespace asio = boost::asio;
namespace ssl = asio::ssl;

// Certificates and keys are a few KB; bound what we read so a wrong path (a disk image)
// fails fast.
constexpr size_t kMaxPemBytes = 1 << 20;

// Forward secrecy and AEAD only; TLS 1.3 suites are OpenSSL's defaults (all AEAD).
constexpr const char* kTls12Ciphers =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";

}  // namespace

// The TLS settings, certificate, key and client-certificate policy from the config.
Status ConfigureTls(ssl::context& ctx, const Config& config, Env* env) {
  ctx.set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                  ssl::context::no_sslv3 | ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1 |
                  ssl::context::single_dh_use | ssl::context::no_compression);
  SSL_CTX* native = ctx.native_handle();
  // TLS 1.2 and 1.3 only; renegotiation is a DoS lever and we never need it.
  if (SSL_CTX_set_min_proto_version(native, TLS1_2_VERSION) != 1) {
    return Error(OpensslError("SSL_CTX_set_min_proto_version"));
  }
  SSL_CTX_set_options(
      native, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_COMPRESSION);
  if (SSL_CTX_set_cipher_list(native, kTls12Ciphers) != 1) {
    return Error(OpensslError("SSL_CTX_set_cipher_list"));
  }
  // Clients resume sessions (haproxy's health checks, curl, browsers). With client
  // certificates requested, OpenSSL fails such a handshake (internal_error) unless sessions
  // name the context they belong to. A ticket from another instance does not decrypt there
  // and falls back to a full handshake; a resumed session keeps its verified certificate.
  static constexpr std::string_view kSessionIdContext = "tpm-ma ma-server";
  if (SSL_CTX_set_session_id_context(
          native, reinterpret_cast<const unsigned char*>(kSessionIdContext.data()),
          kSessionIdContext.size()) != 1) {
    return Error(OpensslError("SSL_CTX_set_session_id_context"));
  }

  auto load = [&](std::string_view key, const std::string& path) -> Result<Bytes> {
    if (path.empty()) {
      return Error(Code::kInvalidArgument, fmt::format("{} is required", key));
    }
    auto data = env->ReadFile(path, kMaxPemBytes);
    if (!data) return Error(data.error().WithContext(key));
    return data;
  };
  boost::system::error_code ec;
  TPMMA_ASSIGN_OR_RETURN(Bytes cert, load("tls.certificate", config.tls_certificate));
  ctx.use_certificate_chain(asio::buffer(cert.data(), cert.size()), ec);
  if (ec) {
    return Error(Code::kInvalidArgument,
                 fmt::format("tls.certificate: {}: {}", config.tls_certificate, ec.message()));
  }
  {
    TPMMA_ASSIGN_OR_RETURN(Bytes key, load("tls.private_key", config.tls_private_key));
    // The docs and the unit promise a readable TLS key is refused (issue #13, finding 6).
    if (Status mode = CheckOwnerOnlyFile(config.tls_private_key, "tls.private_key: TLS");
        !mode.ok()) {
      OPENSSL_cleanse(key.data(), key.size());
      return mode;
    }
    ctx.use_private_key(asio::buffer(key.data(), key.size()), ssl::context::pem, ec);
    OPENSSL_cleanse(key.data(), key.size());
  }
  if (ec) {
    return Error(Code::kInvalidArgument,
                 fmt::format("tls.private_key: {}: {}", config.tls_private_key, ec.message()));
  }
  if (SSL_CTX_check_private_key(native) != 1) {
    return Error(
        Code::kInvalidArgument,
        fmt::format("tls.private_key does not match tls.certificate ({})", config.tls_private_key));
  }
  if (!config.tls_client_ca.empty()) {
    TPMMA_ASSIGN_OR_RETURN(Bytes ca, load("tls.client_ca", config.tls_client_ca));
    ctx.add_certificate_authority(asio::buffer(ca.data(), ca.size()), ec);
    if (ec) {
      return Error(Code::kInvalidArgument,
                   fmt::format("tls.client_ca: {}: {}", config.tls_client_ca, ec.message()));
    }
    // Requested, verified if presented, never required: LMS clients have none.
    ctx.set_verify_mode(ssl::verify_peer);
  } else if (config.tls_request_client_cert) {
    // No CA to check against: take any certificate; only its fingerprint (proven by the
    // handshake's CertificateVerify) identifies the peer.
    ctx.set_verify_mode(ssl::verify_peer);
    ctx.set_verify_callback([](bool, ssl::verify_context&) { return true; });
  }
  return Status::Ok();
}

}  // namespace tpmma::server
