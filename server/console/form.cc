// SPDX-License-Identifier: GPL-2.0-or-later
#include "server/console/form.h"

#include <libxml/uri.h>
#include <libxml/xmlstring.h>

#include <algorithm>
#include <cctype>
#include <memory>

#include <boost/beast/http/rfc7230.hpp>

#include "common/text.h"

namespace tpmma::server::console {

namespace {

constexpr size_t kMaxFields = 32;

struct XmlFree {
  void operator()(void* p) const { xmlFree(p); }
};

// '+' is a space in a form (WHATWG URL, application/x-www-form-urlencoded), then %XX.
Result<std::string> Decode(std::string_view part) {
  std::string plus(part);
  std::replace(plus.begin(), plus.end(), '+', ' ');
  for (size_t i = plus.find('%'); i != std::string::npos; i = plus.find('%', i + 1)) {
    if (i + 2 >= plus.size() || !std::isxdigit(static_cast<unsigned char>(plus[i + 1])) ||
        !std::isxdigit(static_cast<unsigned char>(plus[i + 2]))) {
      return Error(Code::kInvalidArgument, "a form field holds a broken %-escape");
    }
    // Checked before decoding: the decoded text is a C string, a NUL would cut it short.
    if (plus[i + 1] == '0' && plus[i + 2] == '0') {
      return Error(Code::kInvalidArgument, "a form field holds a NUL character");
    }
  }
  std::unique_ptr<char, XmlFree> out(
      xmlURIUnescapeString(plus.data(), static_cast<int>(plus.size()), nullptr));
  if (!out) return Error(Code::kInternal, "out of memory decoding a form");
  std::string value(out.get());
  if (xmlCheckUTF8(reinterpret_cast<const xmlChar*>(value.c_str())) == 0) {
    return Error(Code::kInvalidArgument, "a form field is not UTF-8");
  }
  if (HasControlCharacter(value)) {
    return Error(Code::kInvalidArgument, "a form field holds a control character");
  }
  return value;
}

}  // namespace

Result<Form> Form::Parse(std::string_view encoded) {
  Form form;
  size_t start = 0;
  while (start <= encoded.size() && !encoded.empty()) {
    size_t end = encoded.find('&', start);
    if (end == std::string_view::npos) end = encoded.size();
    std::string_view pair = encoded.substr(start, end - start);
    start = end + 1;
    if (pair.empty()) continue;
    if (form.fields_.size() == kMaxFields) {
      return Error(Code::kInvalidArgument, "a form has more than 32 fields");
    }
    const size_t eq = pair.find('=');
    TPMMA_ASSIGN_OR_RETURN(std::string name, Decode(pair.substr(0, eq)));
    std::string value;
    if (eq != std::string_view::npos) {
      TPMMA_ASSIGN_OR_RETURN(value, Decode(pair.substr(eq + 1)));
    }
    if (form.Has(name)) return Error(Code::kInvalidArgument, "form field '" + name + "' repeated");
    form.fields_.emplace_back(std::move(name), std::move(value));
    if (end == encoded.size()) break;
  }
  return form;
}

std::string Form::Get(std::string_view name) const {
  for (const auto& [n, v] : fields_) {
    if (n == name) return v;
  }
  return {};
}

bool Form::Has(std::string_view name) const {
  return std::any_of(fields_.begin(), fields_.end(),
                     [&](const auto& f) { return f.first == name; });
}

std::string_view PathOf(std::string_view target) {
  return target.substr(0, target.find('?'));
}

std::string_view QueryOf(std::string_view target) {
  const size_t q = target.find('?');
  return q == std::string_view::npos ? std::string_view() : target.substr(q + 1);
}

std::string CookieValue(std::string_view cookie_header, std::string_view name) {
  // A Cookie header is "a=b; c=d": as a parameter list it needs its leading ';'.
  const std::string list = ";" + std::string(cookie_header);
  for (const auto& param : boost::beast::http::param_list(list)) {
    if (param.first == boost::beast::string_view(name.data(), name.size())) {
      return std::string(param.second);
    }
  }
  return {};
}

std::string QueryEscape(std::string_view value) {
  const std::string v(value);
  std::unique_ptr<xmlChar, XmlFree> out(xmlURIEscapeStr(reinterpret_cast<const xmlChar*>(v.c_str()),
                                                        reinterpret_cast<const xmlChar*>("")));
  return out ? std::string(reinterpret_cast<const char*>(out.get())) : std::string();
}

}  // namespace tpmma::server::console
