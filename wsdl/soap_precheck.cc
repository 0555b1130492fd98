// SPDX-License-Identifier: GPL-2.0-or-later
#include "wsdl/soap_precheck.h"

#include <libxml/xmlreader.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <memory>
#include <string>

namespace tpmma::wsdl {
namespace {

constexpr std::string_view kSoap11 = "http://schemas.xmlsoap.org/soap/envelope/";
constexpr std::string_view kSoap12 = "http://www.w3.org/2003/05/soap-envelope";
constexpr std::string_view kSoapEnc11 = "http://schemas.xmlsoap.org/soap/encoding/";

bool IEquals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

size_t IFind(std::string_view hay, std::string_view needle) {
  auto it = std::search(hay.begin(), hay.end(), needle.begin(), needle.end(), [](char a, char b) {
    return std::tolower(static_cast<unsigned char>(a)) ==
           std::tolower(static_cast<unsigned char>(b));
  });
  return it == hay.end() ? std::string_view::npos : static_cast<size_t>(it - hay.begin());
}

}  // namespace

Status RejectDoctype(std::string_view body) {
  if (body.find('\0') != std::string_view::npos) {
    return Status(Code::kMalformed, "request body contains a NUL byte (only UTF-8 is accepted)");
  }
  if (IFind(body, "<!doctype") != std::string_view::npos) {
    return Status(Code::kMalformed, "request body contains a DOCTYPE declaration");
  }
  return Status::Ok();
}

namespace {

// libxml2 is told the body is UTF-8 whatever it declares; a body that declares another
// encoding was written for a parser that would read other characters, so it is refused.
Status RefuseOtherEncodings(std::string_view body) {
  if (body.starts_with("\xEF\xBB\xBF")) body.remove_prefix(3);
  if (!body.starts_with("<?xml")) return Status::Ok();
  std::string_view decl = body.substr(0, body.find("?>"));
  size_t at = decl.find("encoding");
  if (at == std::string_view::npos) return Status::Ok();
  std::string_view rest = decl.substr(at + 8);
  size_t q = rest.find_first_of("\"'");
  if (q == std::string_view::npos) return Status(Code::kMalformed, "bad XML declaration");
  size_t end = rest.find(rest[q], q + 1);
  if (end == std::string_view::npos) return Status(Code::kMalformed, "bad XML declaration");
  if (!IEquals(rest.substr(q + 1, end - q - 1), "UTF-8")) {
    return Status(Code::kMalformed, "request body declares an encoding other than UTF-8");
  }
  return Status::Ok();
}

// C1 controls (U+0080..U+009F) and DEL are legal XML 1.0 characters but terminal escapes
// (CSI is U+009B): nothing in the contract holds them.
bool HasC1OrDel(const xmlChar* value) {
  if (value == nullptr) return false;
  for (const unsigned char* p = value; *p != 0; ++p) {
    if (*p == 0x7F || (p[0] == 0xC2 && p[1] >= 0x80 && p[1] <= 0x9F)) return true;
  }
  return false;
}

std::string_view View(const xmlChar* s) {
  return s == nullptr ? std::string_view() : std::string_view(reinterpret_cast<const char*>(s));
}

struct ReaderFree {
  void operator()(xmlTextReader* r) const { xmlFreeTextReader(r); }
};

void CollectError(void* arg, xmlErrorPtr error) {
  auto* first = static_cast<std::string*>(arg);
  if (!first->empty() || error == nullptr || error->level < XML_ERR_ERROR) return;
  std::string msg = error->message != nullptr ? error->message : "parse error";
  while (!msg.empty() && (msg.back() == '\n' || msg.back() == ' ')) msg.pop_back();
  // libxml2's messages name no input bytes except for a few that quote a name; a name is
  // bounded by the tag scan but may hold anything, so only the line is kept of those.
  if (msg.find('\'') != std::string::npos || msg.find('"') != std::string::npos) {
    msg = "not well-formed XML";
  }
  *first = msg + " (line " + std::to_string(error->line) + ")";
}

// Where the reader is in the envelope, and what it has seen there.
struct EnvelopeState {
  bool saw_header = false;
  bool saw_body = false;
  bool after_body = false;
  int body_children = 0;
};

Status CheckAttributes(xmlTextReader* r) {
  while (xmlTextReaderMoveToNextAttribute(r) == 1) {
    std::string_view name = View(xmlTextReaderConstLocalName(r));
    std::string_view ns = View(xmlTextReaderConstNamespaceUri(r));
    const bool plain = ns.empty() || ns == kSoapEnc11;
    if (plain && (name == "href" || name == "id" || name == "ref")) {
      return Status(Code::kMalformed,
                    "multi-reference attributes (href/id/ref) are not part of the "
                    "document/literal contract");
    }
    if (name == "encodingStyle" && (ns == kSoap11 || ns.empty())) {
      return Status(Code::kMalformed, "SOAP encoding (encodingStyle) is not used by this service");
    }
    if (HasC1OrDel(xmlTextReaderConstValue(r))) {
      return Status(Code::kMalformed, "an attribute value holds a control character");
    }
  }
  xmlTextReaderMoveToElement(r);
  return Status::Ok();
}

Status CheckEnvelopeElement(xmlTextReader* r, int depth, EnvelopeState* st) {
  std::string_view name = View(xmlTextReaderConstLocalName(r));
  std::string_view ns = View(xmlTextReaderConstNamespaceUri(r));
  if (depth == 0) {
    if (name == "Envelope" && ns == kSoap12) {
      return Status(Code::kUnsupported, "SOAP 1.2 envelope: this service speaks SOAP 1.1 only");
    }
    if (name != "Envelope" || ns != kSoap11) {
      return Status(Code::kMalformed, "the document element is not a SOAP 1.1 Envelope");
    }
  } else if (depth == 1) {
    if (ns == kSoap11 && name == "Header" && !st->saw_header && !st->saw_body) {
      st->saw_header = true;
    } else if (ns == kSoap11 && name == "Body" && !st->saw_body) {
      st->saw_body = true;
    } else {
      return Status(Code::kMalformed, "an Envelope holds an optional Header, then one Body");
    }
  } else if (depth == 2 && st->saw_body && !st->after_body) {
    if (++st->body_children > 1) {
      return Status(Code::kMalformed, "the Body holds more than one operation");
    }
  }
  return Status::Ok();
}

Status CheckNode(xmlTextReader* r, EnvelopeState* st) {
  const int type = xmlTextReaderNodeType(r);
  const int depth = xmlTextReaderDepth(r);
  switch (type) {
    case XML_READER_TYPE_ELEMENT:
      if (st->after_body && depth <= 1) {
        return Status(Code::kMalformed, "content after the SOAP Body");
      }
      TPMMA_RETURN_IF_ERROR(CheckEnvelopeElement(r, depth, st));
      return CheckAttributes(r);
    case XML_READER_TYPE_END_ELEMENT:
      if (depth == 1 && st->saw_body && !st->after_body &&
          View(xmlTextReaderConstLocalName(r)) == "Body") {
        st->after_body = true;
      }
      return Status::Ok();
    case XML_READER_TYPE_TEXT:
    case XML_READER_TYPE_CDATA:
      if (depth <= 2) return Status(Code::kMalformed, "text outside the operation element");
      if (HasC1OrDel(xmlTextReaderConstValue(r))) {
        return Status(Code::kMalformed, "a text value holds a control character");
      }
      return Status::Ok();
    case XML_READER_TYPE_PROCESSING_INSTRUCTION:
      return Status(Code::kMalformed, "processing instructions are not accepted");
    case XML_READER_TYPE_ENTITY_REFERENCE:
      return Status(Code::kMalformed, "entity references are not accepted");
    default:  // whitespace, comments, end of entity
      return Status::Ok();
  }
}

Status ParseStrictly(std::string_view body) {
  std::unique_ptr<xmlTextReader, ReaderFree> reader(xmlReaderForMemory(
      body.data(), static_cast<int>(body.size()), nullptr, "UTF-8",
      XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING | XML_PARSE_NOCDATA |
          // An Upload's base64 text node may pass libxml2's 10 MB default; the body limit,
          // the tag scan and the absent DTD bound what HUGE would otherwise let through.
          XML_PARSE_HUGE));
  if (!reader) return Status(Code::kInternal, "cannot create an XML reader");
  std::string error;
  xmlTextReaderSetStructuredErrorHandler(reader.get(), CollectError, &error);
  EnvelopeState st;
  int rc = 0;
  while ((rc = xmlTextReaderRead(reader.get())) == 1) {
    Status s = CheckNode(reader.get(), &st);
    if (!s.ok()) return s;
  }
  if (rc < 0 || !error.empty()) {
    return Status(Code::kMalformed, "request body is not well-formed UTF-8 XML: " +
                                        (error.empty() ? std::string("parse error") : error));
  }
  if (!st.saw_body || st.body_children != 1) {
    return Status(Code::kMalformed, "the SOAP Body must hold exactly one operation element");
  }
  return Status::Ok();
}

}  // namespace

Status CheckTagBounds(std::string_view body, const PrecheckLimits& limits) {
  const size_t n = body.size();
  size_t i = 0;
  while ((i = body.find('<', i)) != std::string_view::npos) {
    std::string_view at = body.substr(i);
    // Comments, CDATA and processing instructions hold no attributes; their text would
    // otherwise be read as quotes and desynchronise the scan from the parsers'.
    std::string_view close;
    if (at.starts_with("<!--")) close = "-->";
    if (at.starts_with("<![CDATA[")) close = "]]>";
    if (at.starts_with("<?")) close = "?>";
    if (!close.empty()) {
      size_t end = body.find(close, i + 2);
      if (end == std::string_view::npos) return Status::Ok();  // unterminated: the parser refuses
      i = end + close.size();
      continue;
    }
    size_t attributes = 0;
    char quote = 0;
    size_t j = i + 1;
    for (; j < n; ++j) {
      const char c = body[j];
      if (j - i > limits.max_tag_bytes) {
        return Status(Code::kLimitExceeded,
                      "a tag is longer than " + std::to_string(limits.max_tag_bytes) + " bytes");
      }
      if (c == '<') return Status(Code::kMalformed, "'<' inside a tag");
      if (quote != 0) {
        if (c == quote) quote = 0;
      } else if (c == '"' || c == '\'') {
        quote = c;
      } else if (c == '=') {
        if (++attributes > limits.max_attributes_per_element) {
          return Status(Code::kLimitExceeded,
                        "an element has more than " +
                            std::to_string(limits.max_attributes_per_element) +
                            " attributes (namespace declarations included)");
        }
      } else if (c == '>') {
        break;
      }
    }
    i = j;
  }
  return Status::Ok();
}

Status PrecheckSoapRequest(std::string_view body, const PrecheckLimits& limits) {
  TPMMA_RETURN_IF_ERROR(RejectDoctype(body));
  TPMMA_RETURN_IF_ERROR(CheckTagBounds(body, limits));
  TPMMA_RETURN_IF_ERROR(RefuseOtherEncodings(body));
  if (body.size() > static_cast<size_t>(INT32_MAX)) {
    return Status(Code::kLimitExceeded, "request body too large");
  }
  return ParseStrictly(body);
}

}  // namespace tpmma::wsdl
