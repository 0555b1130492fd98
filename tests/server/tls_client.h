// SPDX-License-Identifier: GPL-2.0-or-later
// Test helpers for the HTTPS front end: a throwaway self-signed ECDSA certificate, and a
// raw TLS client that can send arbitrary (also malformed or partial) bytes and read HTTP
// responses, every operation bounded by a deadline so a broken server fails the test
// instead of hanging it.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

namespace tpmma::testing {

struct CertFiles {
  std::string cert_path;
  std::string key_path;
  std::string sha256_hex;  // of the certificate's DER, as the server reports it
};

// A P-256 (or RSA-2048) key and a self-signed certificate for CN=`name`, written as PEM
// into `dir` as NAME.crt and NAME.key.
CertFiles MakeSelfSignedCert(const std::string& dir, const std::string& name, bool rsa = false);

struct HttpResponse {
  unsigned status = 0;
  std::string body;
  std::string connection;   // the Connection header, lower-case
  std::string retry_after;  // the Retry-After header
  std::string allow;        // the Allow header
  std::string content_type;
};

struct ClientOptions {
  // 0: library default. TLS1_1_VERSION (0x0302) to play an old client.
  int max_tls_version = 0;
  const CertFiles* client_cert = nullptr;
  // Written in the clear right after the TCP connect, before the handshake: a load
  // balancer's PROXY line.
  std::string before_tls = {};
  // A session from an earlier connection's Session(): offered for resumption.
  std::string resume_session = {};
};

class TlsClient {
 public:
  using Millis = std::chrono::milliseconds;

  TlsClient();
  ~TlsClient();
  TlsClient(const TlsClient&) = delete;
  TlsClient& operator=(const TlsClient&) = delete;

  // TCP connect and TLS handshake to 127.0.0.1:port. False (with error()) on failure.
  bool Connect(uint16_t port, const ClientOptions& options = {}, Millis timeout = Millis(3000));
  // Writes raw bytes. False if the write failed or timed out.
  bool Send(std::string_view bytes, Millis timeout = Millis(3000));
  // Reads one response (interim 1xx responses included). nullopt on error/timeout/close.
  std::optional<HttpResponse> Read(Millis timeout = Millis(3000));
  // Send + Read.
  std::optional<HttpResponse> RoundTrip(std::string_view request, Millis timeout = Millis(3000));
  // True once the server has closed the connection (EOF, reset, TLS close) within
  // `timeout`; any data still arriving is discarded.
  bool WaitClosed(Millis timeout);
  // True once the server has closed its side (FIN or reset) within `timeout`, without
  // reading anything: the connection stays usable when it returns false.
  bool PeerClosed(Millis timeout);
  void Close();
  // The TLS session (DER) to resume later; with TLS 1.3 the server sends it after the
  // handshake, so read a response first. Empty if there is none.
  std::string Session() const;
  // True if the handshake resumed the offered session.
  bool Resumed() const;

  const std::string& error() const { return error_; }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::string error_;
};

// "POST / HTTP/1.1" with Host, Content-Type text/xml and Content-Length.
std::string PostRequest(std::string_view target, std::string_view body,
                        std::string_view content_type = "text/xml; charset=utf-8",
                        bool keep_alive = true);
std::string GetRequest(std::string_view target, bool keep_alive = true);

}  // namespace tpmma::testing
