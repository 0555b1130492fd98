// SPDX-License-Identifier: GPL-2.0-or-later
// What every SOAP request body must be before gSOAP binds it: the contract of the WSDL
// (document/literal, SOAP 1.1, one operation) as XML, checked by libxml2 with bounded work.
//
// gSOAP is a binding generator, not a validating parser: it accepts invalid UTF-8, `&#0;`,
// raw control characters, SOAP 1.2 envelopes, two operations in one Body, `href`
// multi-references and trailing garbage, and its attribute and namespace handling is
// quadratic (issue #13, findings 1 and 8). A gateway validating the same bytes against the
// WSDL would then see another message than the server. So the server checks first, and only
// a body both libxml2 and the contract accept reaches gSOAP.
#pragma once

#include <cstddef>
#include <string_view>

#include "common/status.h"

namespace tpmma::wsdl {

struct PrecheckLimits {
  // Per tag, before any XML parser sees the body: ours have at most 4 attributes (xmlns
  // declarations included), and no name is longer than 64 bytes.
  size_t max_attributes_per_element = 32;
  size_t max_tag_bytes = 4096;  // from '<' to its '>' (names, attributes, their values)
};

// Code::kMalformed: a NUL byte or a DOCTYPE (anywhere, any case), bytes that are not
// well-formed UTF-8 XML (control characters, `&#0;`, trailing content, another encoding
// declared), C1 controls or DEL in text or attribute values, multi-reference (`href`,
// `id`, `ref`) or SOAP encoding attributes, an Envelope whose Body does not hold exactly one
// element. Code::kLimitExceeded: a tag over the limits above. Code::kUnsupported: a SOAP 1.2
// envelope (the binding is SOAP 1.1 only). Messages name no input bytes.
Status PrecheckSoapRequest(std::string_view body, const PrecheckLimits& limits = {});

// gSOAP silently skips a DOCTYPE (and so would let entity tricks near the parser): any body
// containing "<!DOCTYPE" in any case is refused, and any NUL byte, which is how a UTF-16 body
// would hide the same declaration. Code::kMalformed. The first check of PrecheckSoapRequest.
Status RejectDoctype(std::string_view body);

// The second check of PrecheckSoapRequest on its own: a linear scan over the bytes that
// bounds every tag's attributes and length, so the parsers' per-tag work stays small.
Status CheckTagBounds(std::string_view body, const PrecheckLimits& limits = {});

}  // namespace tpmma::wsdl
