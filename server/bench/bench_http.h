// SPDX-License-Identifier: GPL-2.0-or-later
// ma-bench's setup client: one blocking keep-alive HTTPS connection (Beast), for the few
// requests made before the clock starts (GetMAKey, Authenticate, test uploads).
#pragma once

#include <memory>
#include <string>

#include "common/status.h"

namespace tpmma::bench {

struct HttpReply {
  unsigned status = 0;
  std::string body;
};

class SyncHttps {
 public:
  // url: https://host:port/path; ca_file: PEM of the CA that issued the server certificate.
  static Result<std::unique_ptr<SyncHttps>> Connect(const std::string& url,
                                                    const std::string& ca_file);
  virtual ~SyncHttps() = default;
  // POST text/xml to the URL's path. Transport errors are kUnavailable.
  virtual Result<HttpReply> Post(const std::string& body) = 0;
};

// "https://host:port/path" -> host, port, path ("/" if none). kInvalidArgument otherwise.
Status ParseUrl(const std::string& url, std::string* host, std::string* port, std::string* path);

}  // namespace tpmma::bench
