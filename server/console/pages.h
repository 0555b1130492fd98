// SPDX-License-Identifier: GPL-2.0-or-later
// The console's pages, one function each: from the request to the data its template shows
// (console.cc routes, checks the operator and the form's token, and renders). Internal to
// server/console.
#pragma once

#include <kainjow/mustache.hpp>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/env.h"
#include "common/status.h"
#include "server/console/form.h"
#include "server/endpoint.h"
#include "server/operator_operations.h"

namespace tpmma::server::console {

namespace mu = kainjow::mustache;

// One request as a page sees it.
struct PageRequest {
  const WebRequest& web;
  const RequestInfo& info;
  const Form& form;  // the query string of a GET, the body of a POST
  const storage::Operator& me;
  std::string csrf;  // the token this page's forms carry
  OperatorOperations* ops;
  Env* env;

  // A fresh call as this operator (each OperatorOperations call audits itself).
  OperatorCall Call() const;
  // What the role may do, for what a page offers; OperatorOperations decides again.
  bool MayApprove() const;
  bool MayAudit() const;
  bool MayRevokePlatforms() const;
};

struct Page {
  std::string title = "";
  std::string template_name = "";  // "platform.mustache"
  mu::data data = mu::data();
  std::string notice = "";    // a line above the page ("Approval 7 granted ...")
  std::string redirect = "";  // set: answer 303 See Other to this path instead (after a POST)
  // Set: not a page but a download (CSV) of this type and body, saved as `filename`.
  std::string raw_type = "";
  std::string raw_body = "";
  std::string filename = "";
};

// pages.cc
Result<Page> FindPage(const PageRequest& r);
Result<Page> PlatformPage(const PageRequest& r);
Result<Page> AuditPage(const PageRequest& r);
// approve_pages.cc
Result<Page> ReviewPage(const PageRequest& r);
Result<Page> GrantApproval(const PageRequest& r);  // POST
Result<Page> ApprovalsPage(const PageRequest& r);
Result<Page> ConfirmApproval(const PageRequest& r);  // POST
Result<Page> RevokeApproval(const PageRequest& r);   // POST
// compliance_pages.cc
Result<Page> CompliancePage(const PageRequest& r);
Result<Page> ComplianceCsv(const PageRequest& r);
// revoke_pages.cc
Result<Page> RevokePlatformPage(const PageRequest& r);
Result<Page> RevokePlatform(const PageRequest& r);  // POST

// Shared by the pages.
std::string Time(int64_t unix_seconds);  // "2026-12-03T10:00:00Z", "-" for 0
std::string OrDash(const std::string& s);
std::string TpmText(const storage::PlatformInventory& inventory);
mu::data PlatformRow(const storage::PlatformSummary& p);
mu::data ApprovalRow(const storage::Approval& a, int64_t now);
mu::data List();
// Form fields: a whole number (kInvalidArgument naming `name` otherwise), or a value that
// must not be blank (kInvalidArgument: "<what> is required").
Result<int64_t> FormNumber(const Form& form, std::string_view name);
Result<std::string> FormRequired(const Form& form, std::string_view name, std::string_view what);
// Every package of `platform`, oldest first (a few per platform; read in pages of 500).
Result<std::vector<storage::PackageDescriptor>> PackagesOf(const PageRequest& r,
                                                           const std::string& platform);

}  // namespace tpmma::server::console
