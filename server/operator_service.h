// SPDX-License-Identifier: GPL-2.0-or-later
// The gSOAP adapter of the operator operations (wsdl/operator.wsdl; the operations
// themselves are operator_operations.h): helpdesk, auditor and admin calls on the MA's
// HTTPS port, authenticated ONLY by the caller's TLS client certificate (verified by the
// front end against tls.client_ca, the operator CA from `ma-admin init`). A platform
// session token means nothing here, and an operator certificate means nothing to the
// endpoint operations, so neither side can reach the other's calls.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "common/status.h"
#include "server/endpoint.h"
#include "server/operator_operations.h"

struct soap;

namespace tpmma::server {

// What the request log line and the reply need.
struct OperatorCallLog {
  std::string op, actor;
  std::optional<Status> fault;  // the refusal to answer with
};

class OperatorCalls {
 public:
  // Shares `soap` (the MA handler's context, already hardened and reading the request).
  // `ops` must outlive this.
  OperatorCalls(struct soap* soap, OperatorOperations* ops);
  ~OperatorCalls();
  OperatorCalls(const OperatorCalls&) = delete;
  OperatorCalls& operator=(const OperatorCalls&) = delete;

  // Call after the MA service's dispatch() answered SOAP_NO_METHOD: runs the operator
  // operation the body names, or returns SOAP_NO_METHOD if it names none.
  int Dispatch(const RequestInfo& info, OperatorCallLog* log);

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tpmma::server
