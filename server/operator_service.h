// SPDX-License-Identifier: GPL-2.0-or-later
// The operator operations (wsdl/operator.wsdl): helpdesk, auditor and admin calls on the
// MA's HTTPS port, authenticated ONLY by the caller's TLS client certificate (verified by
// the front end against tls.client_ca, the operator CA from `ma-admin init`) whose SHA-256
// fingerprint must belong to an active operator in the vault. A platform session token
// means nothing here, and an operator certificate means nothing to the endpoint
// operations, so neither side can reach the other's calls.
//
// Roles: any operator may WhoAmI and list platforms, packages and approvals; helpdesk and
// admin approve, confirm and revoke approvals; admin revokes platforms; auditor and admin
// read and verify the audit log. Every call, refused or not, is audited as
// "operator:<name>".
#pragma once

#include <memory>
#include <string>

#include "common/env.h"
#include "common/status.h"
#include "server/endpoint.h"
#include "storage/vault.h"

struct soap;

namespace tpmma::server {

struct OperatorPolicy {
  bool two_person_approvals = false;       // approvals.two_person
  int64_t max_approval_ttl_s = 7 * 86400;  // approvals.max_ttl_s
};

// What the request log line needs.
struct OperatorCallLog {
  std::string op, actor;
  Code outcome = Code::kOk;
  bool faulted = false;  // a fault has been set on the context (do not set another)
};

class OperatorCalls {
 public:
  // Shares `soap` (the MA handler's context, already hardened and reading the request).
  OperatorCalls(struct soap* soap, storage::Vault* vault, Env* env, const OperatorPolicy& policy);
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
