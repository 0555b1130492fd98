// SPDX-License-Identifier: GPL-2.0-or-later
// The helpdesk console (issue #15): pages under /console/ for operators, who are known by
// their TLS client certificate exactly as for the operator operations (wsdl/operator.wsdl),
// with the same roles: every page calls OperatorOperations, which decides and audits. No
// other login, no state in the server: a page is rendered from the vault on each request.
//
//   GET  /console/                    find a platform (hostname, serial, owner, id prefix)
//   GET  /console/platform?id=        a platform: state, inventory, packages, approvals
//   GET  /console/approve?old=&new=   the recovery, reviewed: both platforms side by side
//   POST /console/approve             grant it (helpdesk, admin)
//   GET  /console/approvals           the queue: pending, active, used, revoked, expired
//   POST /console/approvals/confirm   the second operator's confirmation
//   POST /console/approvals/revoke    revoke one, with a reason
//   GET  /console/platform/revoke?id= revoking a platform, confirmed by typing its hostname
//   POST /console/platform/revoke      revoke it (admin)
//   GET  /console/compliance?days=    no backup in N days, never backed up, revoked
//   GET  /console/compliance.csv?days= the same as CSV
//   GET  /console/audit               the audit log, filtered and paged, and its chain (auditor,
//                                     admin)
//   GET  /console/style.css           the one stylesheet
//
// Every reply carries a Content-Security-Policy with no script and no framing; every POST
// passes csrf.h's checks before anything else; templates (templates/, Mustache) escape
// every value.
#pragma once

#include "common/env.h"
#include "server/endpoint.h"
#include "server/operator_operations.h"

namespace tpmma::server::console {

class Console {
 public:
  Console(OperatorOperations* ops, Env* env) : ops_(ops), env_(env) {}

  // On a worker thread; thread-safe (OperatorOperations is).
  Reply Serve(const WebRequest& request, const RequestInfo& info);

 private:
  OperatorOperations* ops_;
  Env* env_;
};

}  // namespace tpmma::server::console
