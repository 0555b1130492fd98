// SPDX-License-Identifier: GPL-2.0-or-later
#include <sys/stat.h>

#include <utility>  // before Asio: Boost 1.74 under C++23

#include "tests/server/tls_client.h"

#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <poll.h>

#include <cstdio>
#include <functional>
#include <stdexcept>

#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>

#include "common/openssl.h"

namespace tpmma::testing {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;

namespace {

void Check(bool ok, const char* what) {
  if (!ok) throw std::runtime_error(std::string("test cert: ") + what);
}

void WritePem(const std::string& path, const std::function<int(BIO*)>& write) {
  BioPtr bio(BIO_new_file(path.c_str(), "w"));
  Check(bio != nullptr, "BIO_new_file");
  Check(write(bio.get()) == 1, "PEM write");
}

}  // namespace

CertFiles MakeSelfSignedCert(const std::string& dir, const std::string& name, bool rsa) {
  EvpPkeyPtr key(rsa ? EVP_RSA_gen(2048) : EVP_EC_gen("P-256"));
  Check(key != nullptr, "EVP_EC_gen");
  X509Ptr cert(X509_new());
  Check(cert != nullptr, "X509_new");
  X509_set_version(cert.get(), 2);
  ASN1_INTEGER_set(X509_get_serialNumber(cert.get()), 1);
  X509_gmtime_adj(X509_getm_notBefore(cert.get()), -60);
  X509_gmtime_adj(X509_getm_notAfter(cert.get()), 3600);
  X509_NAME* subject = X509_get_subject_name(cert.get());
  X509_NAME_add_entry_by_txt(subject, "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>(name.c_str()), -1, -1, 0);
  X509_set_issuer_name(cert.get(), subject);
  X509_set_pubkey(cert.get(), key.get());
  Check(X509_sign(cert.get(), key.get(), EVP_sha256()) > 0, "X509_sign");

  CertFiles files{dir + "/" + name + ".crt", dir + "/" + name + ".key", ""};
  WritePem(files.cert_path, [&](BIO* b) { return PEM_write_bio_X509(b, cert.get()); });
  WritePem(files.key_path, [&](BIO* b) {
    return PEM_write_bio_PrivateKey(b, key.get(), nullptr, nullptr, 0, nullptr, nullptr);
  });
  // ma-server refuses a private key readable by group or others.
  Check(::chmod(files.key_path.c_str(), 0600) == 0, "chmod");
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned len = 0;
  Check(X509_digest(cert.get(), EVP_sha256(), md, &len) == 1, "X509_digest");
  for (unsigned i = 0; i < len; ++i) {
    char hex[3];
    std::snprintf(hex, sizeof hex, "%02x", md[i]);
    files.sha256_hex += hex;
  }
  return files;
}

struct TlsClient::Impl {
  asio::io_context ioc;
  ssl::context ctx{ssl::context::tls_client};
  std::optional<beast::ssl_stream<beast::tcp_stream>> stream;
  beast::flat_buffer buffer;

  // Runs the io_context until `done` or the deadline; on timeout closes the socket so the
  // pending operation completes (with an error) before we return.
  bool RunUntil(const bool& done, std::chrono::milliseconds timeout) {
    ioc.restart();
    ioc.run_for(timeout);
    if (done) return true;
    beast::get_lowest_layer(*stream).close();
    ioc.restart();
    ioc.run();
    return false;
  }
};

TlsClient::TlsClient() : impl_(std::make_unique<Impl>()) {}
TlsClient::~TlsClient() = default;

bool TlsClient::Connect(uint16_t port, const ClientOptions& options, Millis timeout) {
  SSL_CTX* native = impl_->ctx.native_handle();
  impl_->ctx.set_verify_mode(ssl::verify_none);  // a test server with a throwaway cert
  if (options.max_tls_version != 0) {
    // Debian's OpenSSL refuses TLS < 1.2 at security level 2 on its own; drop to 0 so the
    // server, not our client, is what refuses.
    SSL_CTX_set_security_level(native, 0);
    SSL_CTX_set_cipher_list(native, "DEFAULT:@SECLEVEL=0");
    SSL_CTX_set_min_proto_version(native, 0);
    SSL_CTX_set_max_proto_version(native, options.max_tls_version);
  }
  if (options.client_cert != nullptr) {
    impl_->ctx.use_certificate_chain_file(options.client_cert->cert_path);
    impl_->ctx.use_private_key_file(options.client_cert->key_path, ssl::context::pem);
  }
  impl_->stream.emplace(impl_->ioc, impl_->ctx);
  if (!options.resume_session.empty()) {
    const auto* der = reinterpret_cast<const unsigned char*>(options.resume_session.data());
    SSL_SESSION* session = d2i_SSL_SESSION(nullptr, &der, long(options.resume_session.size()));
    if (session == nullptr || SSL_set_session(impl_->stream->native_handle(), session) != 1) {
      SSL_SESSION_free(session);
      error_ = "cannot set the session to resume";
      return false;
    }
    SSL_SESSION_free(session);
  }
  bool done = false;
  beast::error_code result;
  tcp::endpoint ep(asio::ip::make_address("127.0.0.1"), port);
  beast::get_lowest_layer(*impl_->stream).async_connect(ep, [&](beast::error_code ec) {
    if (ec) {
      result = ec;
      done = true;
      return;
    }
    auto handshake = [&] {
      impl_->stream->async_handshake(ssl::stream_base::client, [&](beast::error_code ec2) {
        result = ec2;
        done = true;
      });
    };
    if (options.before_tls.empty()) return handshake();
    asio::async_write(beast::get_lowest_layer(*impl_->stream), asio::buffer(options.before_tls),
                      [&, handshake](beast::error_code ec2, size_t) {
                        if (!ec2) return handshake();
                        result = ec2;
                        done = true;
                      });
  });
  if (!impl_->RunUntil(done, timeout)) {
    error_ = "connect/handshake timed out";
    return false;
  }
  if (result) {
    error_ = result.message();
    return false;
  }
  return true;
}

std::string TlsClient::Session() const {
  if (!impl_->stream) return {};
  SSL_SESSION* session = SSL_get1_session(impl_->stream->native_handle());
  if (session == nullptr) return {};
  std::string der;
  if (SSL_SESSION_is_resumable(session) == 1) {
    int n = i2d_SSL_SESSION(session, nullptr);
    if (n > 0) {
      der.resize(size_t(n));
      auto* out = reinterpret_cast<unsigned char*>(der.data());
      i2d_SSL_SESSION(session, &out);
    }
  }
  SSL_SESSION_free(session);
  return der;
}

bool TlsClient::Resumed() const {
  return impl_->stream && SSL_session_reused(impl_->stream->native_handle()) == 1;
}

bool TlsClient::Send(std::string_view bytes, Millis timeout) {
  bool done = false;
  beast::error_code result;
  asio::async_write(*impl_->stream, asio::buffer(bytes.data(), bytes.size()),
                    [&](beast::error_code ec, size_t) {
                      result = ec;
                      done = true;
                    });
  if (!impl_->RunUntil(done, timeout)) {
    error_ = "write timed out";
    return false;
  }
  if (result) error_ = result.message();
  return !result;
}

std::optional<HttpResponse> TlsClient::Read(Millis timeout) {
  bool done = false;
  beast::error_code result;
  http::response_parser<http::string_body> parser;
  parser.body_limit(64 << 20);
  http::async_read(*impl_->stream, impl_->buffer, parser, [&](beast::error_code ec, size_t) {
    result = ec;
    done = true;
  });
  if (!impl_->RunUntil(done, timeout)) {
    error_ = "read timed out";
    return std::nullopt;
  }
  if (result) {
    error_ = result.message();
    return std::nullopt;
  }
  const auto& res = parser.get();
  HttpResponse out;
  out.status = res.result_int();
  out.body = res.body();
  auto header = [&](http::field f) {
    auto it = res.find(f);
    return it == res.end() ? std::string() : std::string(it->value());
  };
  out.connection = header(http::field::connection);
  for (char& c : out.connection) c = static_cast<char>(std::tolower(c));
  out.retry_after = header(http::field::retry_after);
  out.allow = header(http::field::allow);
  out.content_type = header(http::field::content_type);
  return out;
}

std::optional<HttpResponse> TlsClient::RoundTrip(std::string_view request, Millis timeout) {
  if (!Send(request, timeout)) return std::nullopt;
  return Read(timeout);
}

bool TlsClient::WaitClosed(Millis timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  char scratch[4096];
  for (;;) {
    auto left = std::chrono::duration_cast<Millis>(deadline - std::chrono::steady_clock::now());
    if (left <= Millis(0)) return false;
    bool done = false;
    beast::error_code result;
    impl_->stream->async_read_some(asio::buffer(scratch), [&](beast::error_code ec, size_t) {
      result = ec;
      done = true;
    });
    if (!impl_->RunUntil(done, left)) return false;
    if (result) return true;  // EOF, reset, truncated: closed either way
  }
}

bool TlsClient::PeerClosed(Millis timeout) {
  pollfd p{beast::get_lowest_layer(*impl_->stream).socket().native_handle(), POLLRDHUP, 0};
  if (::poll(&p, 1, static_cast<int>(timeout.count())) <= 0) return false;
  return (p.revents & (POLLRDHUP | POLLHUP | POLLERR)) != 0;
}

void TlsClient::Close() {
  if (!impl_->stream) return;
  beast::error_code ignored;
  beast::get_lowest_layer(*impl_->stream).socket().close(ignored);
}

std::string PostRequest(std::string_view target, std::string_view body,
                        std::string_view content_type, bool keep_alive) {
  std::string r = "POST " + std::string(target) + " HTTP/1.1\r\nHost: 127.0.0.1\r\n";
  r += "Content-Type: " + std::string(content_type) + "\r\n";
  r += "Content-Length: " + std::to_string(body.size()) + "\r\n";
  if (!keep_alive) r += "Connection: close\r\n";
  r += "\r\n";
  r += body;
  return r;
}

std::string GetRequest(std::string_view target, bool keep_alive) {
  std::string r = "GET " + std::string(target) + " HTTP/1.1\r\nHost: 127.0.0.1\r\n";
  if (!keep_alive) r += "Connection: close\r\n";
  return r + "\r\n";
}

}  // namespace tpmma::testing
