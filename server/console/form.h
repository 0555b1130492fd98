// SPDX-License-Identifier: GPL-2.0-or-later
// What a console request carries besides its path: the fields of a query string or of a
// form body (application/x-www-form-urlencoded, decoded by libxml2's URI unescaper), and one
// cookie of the Cookie header (split by Beast's parameter-list parser).
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/status.h"

namespace tpmma::server::console {

class Form {
 public:
  // kInvalidArgument for a broken %-escape, a value that is not UTF-8 or holds a control
  // character, a name repeated, or more than 32 fields: a page never guesses.
  static Result<Form> Parse(std::string_view encoded);

  // The field's value, or empty when absent.
  std::string Get(std::string_view name) const;
  bool Has(std::string_view name) const;

 private:
  std::vector<std::pair<std::string, std::string>> fields_;
};

// "/console/platform?id=ab" -> "/console/platform" and "id=ab".
std::string_view PathOf(std::string_view target);
std::string_view QueryOf(std::string_view target);

// The value of cookie `name` in a Cookie header, or empty.
std::string CookieValue(std::string_view cookie_header, std::string_view name);

// `value` %-escaped for a query string (libxml2's URI escaper, reserved characters too).
std::string QueryEscape(std::string_view value);

}  // namespace tpmma::server::console
