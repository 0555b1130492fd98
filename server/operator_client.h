// SPDX-License-Identifier: GPL-2.0-or-later
// ma-admin's remote mode: the operator operations (wsdl/operator.wsdl) over HTTPS with the
// operator's TLS client certificate, through the generated OperatorBinding proxy. Results
// come back as JSON in the same shape the local commands print, so scripts do not care
// which mode produced them.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/status.h"

class OperatorBindingProxy;  // generated

namespace tpmma::server {

struct OperatorClientOptions {
  std::string url;          // https://host:port
  std::string ca_file;      // trusts the MA's TLS certificate
  std::string bundle_file;  // the operator's key + certificate (ma-admin operator issue)
  int timeout_s = 30;
};

class OperatorClient {
 public:
  static Result<std::unique_ptr<OperatorClient>> Create(const OperatorClientOptions& options);
  ~OperatorClient();

  Result<nlohmann::json> WhoAmI();
  Result<nlohmann::json> ListPlatforms();
  Status RevokePlatform(const std::string& id, const std::string& reason);
  Result<nlohmann::json> ListPackages(const std::optional<std::string>& platform);
  Result<nlohmann::json> Approve(const std::string& old_platform, const std::string& new_platform,
                                 const std::vector<std::string>& packages, int64_t ttl_s,
                                 const std::string& reason);
  Result<nlohmann::json> ConfirmApproval(int64_t id);
  Status RevokeApproval(int64_t id, const std::string& reason);
  Result<nlohmann::json> ListApprovals(const std::string& new_platform);
  Result<nlohmann::json> ListAudit(const std::optional<std::string>& actor,
                                   const std::optional<std::string>& platform,  // actor or object
                                   const std::optional<std::string>& action,
                                   std::optional<int64_t> since, std::optional<int64_t> until);
  Result<int64_t> VerifyAudit();

 private:
  explicit OperatorClient(const OperatorClientOptions& options);
  Status Prepare();
  Status Finish(int rc);

  OperatorClientOptions options_;
  std::unique_ptr<OperatorBindingProxy> proxy_;
  bool ready_ = false;
};

}  // namespace tpmma::server
