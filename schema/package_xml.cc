// SPDX-License-Identifier: GPL-2.0-or-later
#include "schema/package_xml.h"

#include <fmt/format.h>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <utility>
#include <vector>

#include <libxml/parser.h>
#include <libxml/parserInternals.h>
#include <libxml/tree.h>
#include <libxml/xmlerror.h>
#include <libxml/xmlschemas.h>
#include <openssl/evp.h>
#include <xmlsec/crypto.h>
#include <xmlsec/errors.h>
#include <xmlsec/openssl/evp.h>
#include <xmlsec/templates.h>
#include <xmlsec/xmldsig.h>
#include <xmlsec/xmlsec.h>
#include <xmlsec/xmltree.h>

#include "common/openssl.h"
#include "schema/embedded.h"
#include "schema/xml_input.h"

namespace tpmma::schema {
namespace {

constexpr const char* kDsNs = "http://www.w3.org/2000/09/xmldsig#";
constexpr std::string_view kAlgRsaSha256 = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256";
constexpr std::string_view kAlgEcdsaSha256 = "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256";
constexpr std::string_view kAlgSha256 = "http://www.w3.org/2001/04/xmlenc#sha256";
constexpr std::string_view kAlgEnveloped = "http://www.w3.org/2000/09/xmldsig#enveloped-signature";
constexpr std::string_view kAlgExcC14n = "http://www.w3.org/2001/10/xml-exc-c14n#";
constexpr std::string_view kAlgC14n = "http://www.w3.org/TR/2001/REC-xml-c14n-20010315";

// ---- RAII owners -----------------------------------------------------------------------

template <typename T, void (*Free)(T*)>
struct XmlDeleter {
  void operator()(T* p) const {
    if (p != nullptr) Free(p);
  }
};
using XmlDocPtr = std::unique_ptr<xmlDoc, XmlDeleter<xmlDoc, xmlFreeDoc>>;
using XmlParserCtxtPtr =
    std::unique_ptr<xmlParserCtxt, XmlDeleter<xmlParserCtxt, xmlFreeParserCtxt>>;
using XmlSchemaParserCtxtPtr =
    std::unique_ptr<xmlSchemaParserCtxt, XmlDeleter<xmlSchemaParserCtxt, xmlSchemaFreeParserCtxt>>;
using XmlSchemaValidCtxtPtr =
    std::unique_ptr<xmlSchemaValidCtxt, XmlDeleter<xmlSchemaValidCtxt, xmlSchemaFreeValidCtxt>>;
using XmlSchemaPtr = std::unique_ptr<xmlSchema, XmlDeleter<xmlSchema, xmlSchemaFree>>;
using SecKeyPtr = std::unique_ptr<xmlSecKey, XmlDeleter<xmlSecKey, xmlSecKeyDestroy>>;
using SecKeyDataPtr =
    std::unique_ptr<xmlSecKeyData, XmlDeleter<xmlSecKeyData, xmlSecKeyDataDestroy>>;
using SecDSigCtxPtr =
    std::unique_ptr<xmlSecDSigCtx, XmlDeleter<xmlSecDSigCtx, xmlSecDSigCtxDestroy>>;

// xmlFree is a function pointer variable, not a function, so it needs its own deleter.
struct XmlCharDeleter {
  void operator()(xmlChar* p) const { xmlFree(p); }
};
using XmlCharPtr = std::unique_ptr<xmlChar, XmlCharDeleter>;

const xmlChar* X(const char* s) {
  return reinterpret_cast<const xmlChar*>(s);
}
const char* C(const xmlChar* s) {
  return reinterpret_cast<const char*>(s);
}

// ---- error capture -------------------------------------------------------------------

// Collects libxml2 / xmlsec messages for one call; first few only, each bounded, so a hostile
// document cannot make our error strings huge.
struct ErrorSink {
  std::vector<std::string> messages;
  bool depth_exceeded = false;
  bool doctype_seen = false;

  void Add(int line, std::string_view text) {
    if (messages.size() >= 4) return;
    while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.remove_suffix(1);
    std::string m = line > 0 ? fmt::format("line {}: {}", line, text) : std::string(text);
    if (m.size() > 300) m = m.substr(0, 300) + "...";
    messages.push_back(std::move(m));
  }
  std::string Summary(std::string_view fallback) const {
    if (messages.empty()) return std::string(fallback);
    std::string out;
    for (const auto& m : messages) out += (out.empty() ? "" : "; ") + m;
    return out;
  }
};

void OnParserError(void* user, xmlErrorPtr e) {
  // libxml2 passes ctxt->userData, which is the parser context itself for SAX2.
  auto* ctxt = static_cast<xmlParserCtxtPtr>(user);
  auto* sink = ctxt != nullptr ? static_cast<ErrorSink*>(ctxt->_private) : nullptr;
  if (sink == nullptr || e == nullptr) return;
  if (e->code == XML_ERR_INTERNAL_ERROR && e->message != nullptr &&
      std::strstr(e->message, "Excessive depth") != nullptr) {
    sink->depth_exceeded = true;
  }
  sink->Add(e->line, e->message != nullptr ? e->message : "parse error");
}

void OnSchemaError(void* user, xmlErrorPtr e) {
  auto* sink = static_cast<ErrorSink*>(user);
  if (sink == nullptr || e == nullptr) return;
  sink->Add(e->line, e->message != nullptr ? e->message : "schema error");
}

// A DOCTYPE has already been refused by the byte scan; this catches one we could not see
// (it stops the parser before any entity declaration is looked at).
void OnInternalSubset(void* user, const xmlChar*, const xmlChar*, const xmlChar*) {
  auto* ctxt = static_cast<xmlParserCtxtPtr>(user);
  if (auto* sink = static_cast<ErrorSink*>(ctxt->_private)) sink->doctype_seen = true;
  xmlStopParser(ctxt);
}

// libxml2 reports some errors (encoding conversion, I/O, memory) not to the parser
// context's handler but to its per-thread global ones, whose default writes to stderr, that
// is the server's log (issue #13). While one of these is alive, those reports go to `sink`
// and end up in the caller's one error.
void OnGenericError(void* user, const char* fmt_text, ...) {
  auto* sink = static_cast<ErrorSink*>(user);
  if (sink == nullptr || fmt_text == nullptr) return;
  char buf[300];
  va_list args;
  va_start(args, fmt_text);
  std::vsnprintf(buf, sizeof buf, fmt_text, args);
  va_end(args);
  std::string_view text(buf);
  while (!text.empty() && text.back() == '\n') text.remove_suffix(1);
  if (!text.empty()) sink->Add(0, text);
}

class ScopedLibxmlErrors {
 public:
  explicit ScopedLibxmlErrors(ErrorSink* sink)
      : structured_(xmlStructuredError),
        structured_ctx_(xmlStructuredErrorContext),
        generic_(xmlGenericError),
        generic_ctx_(xmlGenericErrorContext) {
    xmlSetStructuredErrorFunc(sink, OnSchemaError);
    xmlSetGenericErrorFunc(sink, OnGenericError);
  }
  ~ScopedLibxmlErrors() {
    xmlSetStructuredErrorFunc(structured_ctx_, structured_);
    xmlSetGenericErrorFunc(generic_ctx_, generic_);
  }
  ScopedLibxmlErrors(const ScopedLibxmlErrors&) = delete;
  ScopedLibxmlErrors& operator=(const ScopedLibxmlErrors&) = delete;

 private:
  xmlStructuredErrorFunc structured_;
  void* structured_ctx_;
  xmlGenericErrorFunc generic_;
  void* generic_ctx_;
};

// xmlsec only has a process-wide callback; route it to whichever call is running on this
// thread so concurrent verifications do not see each other's messages.
thread_local ErrorSink* t_xmlsec_sink = nullptr;

void OnXmlsecError(const char*, int, const char* func, const char*, const char* subject, int reason,
                   const char* msg) {
  if (t_xmlsec_sink == nullptr) return;
  std::string_view reason_text;
  for (xmlSecSize i = 0; i < XMLSEC_ERRORS_MAX_NUMBER; ++i) {
    const char* m = xmlSecErrorsGetMsg(i);
    if (m == nullptr) break;
    if (xmlSecErrorsGetCode(i) == reason) {
      reason_text = m;
      break;
    }
  }
  t_xmlsec_sink->Add(
      0, fmt::format("xmlsec {}{}{}: {} {}", func != nullptr ? func : "",
                     subject != nullptr ? " " : "", subject != nullptr ? subject : "", reason_text,
                     msg != nullptr ? msg : ""));
}

class ScopedXmlsecSink {
 public:
  explicit ScopedXmlsecSink(ErrorSink* sink) : prev_(t_xmlsec_sink) { t_xmlsec_sink = sink; }
  ~ScopedXmlsecSink() { t_xmlsec_sink = prev_; }
  ScopedXmlsecSink(const ScopedXmlsecSink&) = delete;
  ScopedXmlsecSink& operator=(const ScopedXmlsecSink&) = delete;

 private:
  ErrorSink* prev_;
};

// ---- one-time initialization ------------------------------------------------------------

struct Globals {
  Status status;
  XmlSchemaPtr schema;
};

void InitOnce(Globals* g) {
  xmlInitParser();
  if (xmlSecInit() < 0 || xmlSecCheckVersion() != 1 || xmlSecCryptoAppInit(nullptr) < 0 ||
      xmlSecCryptoInit() < 0) {
    g->status = Status(Code::kInternal, "xmlsec initialization failed");
    return;
  }
  xmlSecErrorsSetCallback(OnXmlsecError);

  ErrorSink sink;
  std::string_view xsd = EmbeddedSchema();
  XmlSchemaParserCtxtPtr pctxt(xmlSchemaNewMemParserCtxt(xsd.data(), static_cast<int>(xsd.size())));
  if (pctxt) {
    xmlSchemaSetParserStructuredErrors(pctxt.get(), OnSchemaError, &sink);
    g->schema.reset(xmlSchemaParse(pctxt.get()));
  }
  if (!g->schema) {
    g->status = Status(Code::kInternal,
                       "embedded migration-package.xsd does not compile: " + sink.Summary("?"));
  }
}

// libxml2 and xmlsec want one process-wide initialization; the compiled schema is then
// shared read-only by all threads.
const Globals& Init() {
  static Globals globals;
  static std::once_flag once;
  std::call_once(once, InitOnce, &globals);
  return globals;
}

// ---- small DOM helpers -------------------------------------------------------------------

bool IsElement(const xmlNode* n, const char* ns, std::string_view name) {
  return n != nullptr && n->type == XML_ELEMENT_NODE && n->ns != nullptr &&
         std::strcmp(C(n->ns->href), ns) == 0 && name == C(n->name);
}
bool IsOurs(const xmlNode* n, std::string_view name) {
  return IsElement(n, kNamespace.data(), name);
}

std::vector<xmlNode*> ElementChildren(const xmlNode* n) {
  std::vector<xmlNode*> out;
  for (xmlNode* c = n->children; c != nullptr; c = c->next) {
    if (c->type == XML_ELEMENT_NODE) out.push_back(c);
  }
  return out;
}

std::string Text(const xmlNode* n) {
  XmlCharPtr content(xmlNodeGetContent(n));
  return content ? std::string(C(content.get())) : std::string();
}

std::string Attr(const xmlNode* n, const char* name) {
  XmlCharPtr v(xmlGetNoNsProp(n, X(name)));
  return v ? std::string(C(v.get())) : std::string();
}

// Walks a validated element's children in schema order. Mismatches can only mean the XSD and
// this reader disagree, hence kInternal.
class Cursor {
 public:
  explicit Cursor(const xmlNode* parent) : els_(ElementChildren(parent)) {}
  const xmlNode* Optional(std::string_view name) {
    if (i_ < els_.size() && IsOurs(els_[i_], name)) return els_[i_++];
    return nullptr;
  }
  Result<const xmlNode*> Required(std::string_view name) {
    if (const xmlNode* n = Optional(name)) return n;
    return Error(Code::kInternal, fmt::format("validated package lacks element '{}'", name));
  }
  Result<std::string> Str(std::string_view name) {
    TPMMA_ASSIGN_OR_RETURN(const xmlNode* n, Required(name));
    return Text(n);
  }
  Result<Bytes> B64(std::string_view name) {
    TPMMA_ASSIGN_OR_RETURN(const xmlNode* n, Required(name));
    auto b = Base64Decode(Text(n));
    if (!b) return Error(Code::kMalformed, fmt::format("element '{}': bad base64", name));
    return std::move(*b);
  }
  Result<uint64_t> U64(std::string_view name) {
    TPMMA_ASSIGN_OR_RETURN(std::string s, Str(name));
    size_t a = s.find_first_not_of(" \t\r\n");
    size_t b = s.find_last_not_of(" \t\r\n");
    if (a == std::string::npos) return Error(Code::kMalformed, fmt::format("'{}': empty", name));
    s = s.substr(a, b - a + 1);
    if (s.starts_with('+')) s.erase(0, 1);
    uint64_t v = 0;
    for (char c : s) {
      if (c < '0' || c > '9' || v > (UINT64_MAX - 9) / 10)
        return Error(Code::kLimitExceeded, fmt::format("'{}': not a 64-bit unsigned value", name));
      v = v * 10 + static_cast<uint64_t>(c - '0');
    }
    return v;
  }

 private:
  std::vector<xmlNode*> els_;
  size_t i_ = 0;
};

template <typename E, size_t N>
Result<E> FromWire(std::string_view what, const std::string& text, const E (&values)[N]) {
  for (E v : values) {
    if (ToString(v) == text) return v;
  }
  return Error(Code::kUnsupported, fmt::format("{}: unknown value", what));
}

// The ApplicationData elements at the cursor (a ChildKey's or the MigratableRootKey's).
Result<std::vector<ApplicationData>> ReadApplicationData(Cursor& cursor) {
  std::vector<ApplicationData> out;
  while (const xmlNode* ad = cursor.Optional("ApplicationData")) {
    ApplicationData a;
    static constexpr ApplicationDataType kTypes[] = {ApplicationDataType::kX509Certificate,
                                                     ApplicationDataType::kOpaque};
    TPMMA_ASSIGN_OR_RETURN(a.type, FromWire("ApplicationData/@Type", Attr(ad, "Type"), kTypes));
    auto value = Base64Decode(Text(ad));
    if (!value) return Error(Code::kMalformed, "ApplicationData: bad base64");
    a.value = std::move(*value);
    out.push_back(std::move(a));
  }
  return out;
}

// ---- serialization ------------------------------------------------------------------------

xmlNode* AddText(xmlNode* parent, xmlNs* ns, const char* name, std::string_view value) {
  // xmlNewTextChild escapes the content; never concatenate markup by hand.
  return xmlNewTextChild(parent, ns, X(name), X(std::string(value).c_str()));
}
xmlNode* AddB64(xmlNode* parent, xmlNs* ns, const char* name, ByteView value) {
  return AddText(parent, ns, name, Base64Encode(value));
}
void AddApplicationData(xmlNode* parent, xmlNs* ns, const std::vector<ApplicationData>& items) {
  for (const ApplicationData& a : items) {
    xmlNode* ad = AddB64(parent, ns, "ApplicationData", a.value);
    xmlNewProp(ad, X("Type"), X(std::string(ToString(a.type)).c_str()));
  }
}

Result<xmlSecTransformId> SignatureTransformFor(EVP_PKEY* key) {
  if (key == nullptr) return Error(Code::kInvalidArgument, "no signing key");
  // EVP_PKEY_is_a also answers for provider-backed keys (a TPM key via tpm2-openssl).
  if (EVP_PKEY_is_a(key, "RSA")) return xmlSecTransformRsaSha256Id;
  if (EVP_PKEY_is_a(key, "EC")) return xmlSecTransformEcdsaSha256Id;
  return Error(Code::kUnsupported, "signing key is neither RSA nor EC");
}

// xmlsec's template helpers insert newline text nodes for looks; drop them so the output has
// no layout whitespace at all.
void StripWhitespaceText(xmlNode* n) {
  for (xmlNode* c = n->children; c != nullptr;) {
    xmlNode* next = c->next;
    if (c->type == XML_TEXT_NODE && xmlIsBlankNode(c)) {
      xmlUnlinkNode(c);
      xmlFreeNode(c);
    } else if (c->type == XML_ELEMENT_NODE) {
      StripWhitespaceText(c);  // bounded: the signature template is 5 levels deep
    }
    c = next;
  }
}

struct Template {
  XmlDocPtr doc;
  xmlNode* signature = nullptr;
};

Result<Template> BuildTemplate(const MigrationPackage& p, EVP_PKEY* key) {
  TPMMA_RETURN_IF_ERROR(Init().status);
  TPMMA_RETURN_IF_ERROR(ValidateModel(p));
  TPMMA_ASSIGN_OR_RETURN(xmlSecTransformId sign_id, SignatureTransformFor(key));
  TPMMA_ASSIGN_OR_RETURN(std::string created, FormatUtc(p.creation_time));

  Template t;
  t.doc.reset(xmlNewDoc(X("1.0")));
  if (!t.doc) return Error(Code::kInternal, "xmlNewDoc failed");
  xmlNode* root = xmlNewDocNode(t.doc.get(), nullptr, X("MigrationPackage"), nullptr);
  xmlDocSetRootElement(t.doc.get(), root);
  xmlNs* ns = xmlNewNs(root, X(kNamespace.data()), nullptr);
  xmlSetNs(root, ns);

  AddText(root, ns, "PackageId", p.package_id);
  AddText(root, ns, "FormatVersion", std::to_string(p.format_version));
  AddText(root, ns, "SourcePlatformId", p.source_platform_id);
  AddText(root, ns, "CreationTime", created);
  xmlNode* mrk = xmlNewChild(root, ns, X("MigratableRootKey"), nullptr);
  AddB64(mrk, ns, "Public", p.mrk.public_area);
  AddB64(mrk, ns, "Duplicate", p.mrk.duplicate);
  AddB64(mrk, ns, "EncryptedSeed", p.mrk.encrypted_seed);
  AddText(mrk, ns, "SymmetricAlgorithm", ToString(p.mrk.symmetric));
  AddApplicationData(mrk, ns, p.mrk.application_data);
  for (const ChildKey& k : p.child_keys) {
    xmlNode* ck = xmlNewChild(root, ns, X("ChildKey"), nullptr);
    AddText(ck, ns, "KeyId", k.key_id);
    AddText(ck, ns, "Label", k.label);
    AddText(ck, ns, "Usage", ToString(k.usage));
    AddB64(ck, ns, "Public", k.public_area);
    AddB64(ck, ns, "Private", k.private_area);
    AddApplicationData(ck, ns, k.application_data);
    if (k.encrypted_auth) {
      xmlNode* ea = xmlNewChild(ck, ns, X("EncryptedAuth"), nullptr);
      AddText(ea, ns, "Algorithm", ToString(k.encrypted_auth->algorithm));
      AddB64(ea, ns, "Ciphertext", k.encrypted_auth->ciphertext);
    }
  }
  xmlNode* custody = xmlNewChild(root, ns, X("InnerKeyCustody"), nullptr);
  if (const auto* rc = std::get_if<RecoveryCodeCustody>(&p.custody)) {
    xmlNode* r = xmlNewChild(custody, ns, X("RecoveryCode"), nullptr);
    AddText(r, ns, "Kdf", rc->kdf);
    AddB64(r, ns, "Salt", rc->salt);
    AddText(r, ns, "N", std::to_string(rc->n));
    AddText(r, ns, "R", std::to_string(rc->r));
    AddText(r, ns, "P", std::to_string(rc->p));
    if (rc->verifier) AddB64(r, ns, "Verifier", *rc->verifier);
  } else {
    const auto& e = std::get<EscrowCustody>(p.custody);
    xmlNode* r = xmlNewChild(custody, ns, X("Escrow"), nullptr);
    AddText(r, ns, "EscrowKeyId", e.escrow_key_id);
    AddText(r, ns, "Algorithm", ToString(e.algorithm));
    AddB64(r, ns, "EncryptedInnerKey", e.encrypted_inner_key);
  }

  xmlNode* sig = xmlSecTmplSignatureCreateNsPref(t.doc.get(), xmlSecTransformExclC14NId, sign_id,
                                                 nullptr, X("ds"));
  if (sig == nullptr) return Error(Code::kInternal, "xmlSecTmplSignatureCreate failed");
  xmlAddChild(root, sig);  // the document owns it from here
  xmlNode* ref =
      xmlSecTmplSignatureAddReference(sig, xmlSecTransformSha256Id, nullptr, X(""), nullptr);
  if (ref == nullptr ||
      xmlSecTmplReferenceAddTransform(ref, xmlSecTransformEnvelopedId) == nullptr ||
      xmlSecTmplReferenceAddTransform(ref, xmlSecTransformExclC14NId) == nullptr) {
    return Error(Code::kInternal, "building the signature template failed");
  }
  StripWhitespaceText(sig);
  t.signature = sig;
  return t;
}

Result<Bytes> Dump(xmlDoc* doc) {
  xmlChar* mem = nullptr;
  int size = 0;
  xmlDocDumpMemoryEnc(doc, &mem, &size, "UTF-8");
  XmlCharPtr owned(mem);
  if (mem == nullptr || size <= 0) return Error(Code::kInternal, "xmlDocDumpMemory failed");
  return Bytes(mem, mem + size);
}

Result<SecKeyPtr> AdoptKey(EVP_PKEY* key) {
  // xmlsec takes ownership of the EVP_PKEY it adopts; give it its own reference.
  if (EVP_PKEY_up_ref(key) != 1) return Error(OpensslError("EVP_PKEY_up_ref"));
  xmlSecKeyDataPtr raw = xmlSecOpenSSLEvpKeyAdopt(key);
  if (raw == nullptr) {
    EVP_PKEY_free(key);
    return Error(Code::kUnsupported, "xmlsec cannot use this key type");
  }
  SecKeyDataPtr data(raw);
  SecKeyPtr sec_key(xmlSecKeyCreate());
  if (!sec_key || xmlSecKeySetValue(sec_key.get(), data.get()) < 0) {
    return Error(Code::kInternal, "xmlSecKeySetValue failed");
  }
  data.release();  // now owned by sec_key
  return sec_key;
}

// ---- parsing ------------------------------------------------------------------------------

Result<XmlDocPtr> ParseSafely(ByteView bytes, const ParseLimits& limits) {
  if (bytes.size() > limits.max_document_bytes) {
    return Error(Code::kLimitExceeded,
                 fmt::format("document is {} bytes, limit max_document_bytes={}", bytes.size(),
                             limits.max_document_bytes));
  }
  if (bytes.empty()) return Error(Code::kMalformed, "empty document");
  if (bytes.size() > static_cast<size_t>(INT32_MAX))
    return Error(Code::kLimitExceeded, "document larger than 2 GiB");
  TPMMA_RETURN_IF_ERROR(internal::CheckXmlIsUtf8(bytes));
  std::string_view text(reinterpret_cast<const char*>(bytes.data()), bytes.size());
  if (text.find("<!DOCTYPE") != std::string_view::npos) {
    return Error(Code::kMalformed, "DOCTYPE is not allowed (no DTDs, no entity declarations)");
  }

  ErrorSink sink;
  ScopedLibxmlErrors route(&sink);
  XmlParserCtxtPtr ctxt(xmlCreateMemoryParserCtxt(text.data(), static_cast<int>(text.size())));
  if (!ctxt) return Error(Code::kInternal, "xmlCreateMemoryParserCtxt failed");
  // No NOENT (entity substitution), DTDLOAD, DTDATTR, DTDVALID or HUGE (lifts the depth and
  // text-size caps). IGNORE_ENC and the encoding set here: the bytes are parsed as the UTF-8
  // we checked; libxml2 neither guesses from the first bytes nor follows a declaration.
  xmlCtxtUseOptions(ctxt.get(), XML_PARSE_NONET | XML_PARSE_IGNORE_ENC);
  if (xmlSwitchEncoding(ctxt.get(), XML_CHAR_ENCODING_UTF8) != 0) {
    return Error(Code::kInternal, "libxml2 refused to parse as UTF-8");
  }
  ctxt->encoding = xmlStrdup(X("UTF-8"));  // what xmlParseDocument tests before guessing
  ctxt->_private = &sink;
  ctxt->sax->serror = OnParserError;
  ctxt->sax->internalSubset = OnInternalSubset;
  ctxt->sax->externalSubset = OnInternalSubset;
  xmlParseDocument(ctxt.get());
  XmlDocPtr doc(ctxt->myDoc);
  ctxt->myDoc = nullptr;

  if (sink.doctype_seen || (doc && (doc->intSubset != nullptr || doc->extSubset != nullptr))) {
    return Error(Code::kMalformed, "DOCTYPE is not allowed (no DTDs, no entity declarations)");
  }
  if (sink.depth_exceeded) {
    return Error(Code::kLimitExceeded,
                 fmt::format("element nesting deeper than the parser limit {} (max_depth={})",
                             xmlParserMaxDepth, limits.max_depth));
  }
  if (!ctxt->wellFormed || !doc) {
    return Error(Code::kMalformed, "not well-formed XML: " + sink.Summary("parse failed"));
  }
  // libxml2 keeps going after namespace errors (undeclared prefix): for us they are fatal,
  // since element identity is (namespace, name).
  if (!ctxt->nsWellFormed) {
    return Error(Code::kMalformed, "namespace error: " + sink.Summary("namespace not well-formed"));
  }
  return doc;
}

// Depth, element count and node-kind checks over the whole tree, iteratively (no recursion
// on attacker-controlled depth), before the XSD validator walks it.
Status CheckTree(xmlDoc* doc, const ParseLimits& limits) {
  size_t elements = 0;
  std::vector<std::pair<xmlNode*, size_t>> stack;
  for (xmlNode* n = doc->children; n != nullptr; n = n->next) stack.emplace_back(n, 1);
  while (!stack.empty()) {
    auto [n, depth] = stack.back();
    stack.pop_back();
    switch (n->type) {
      case XML_ELEMENT_NODE:
        if (++elements > limits.max_elements) {
          return Status(Code::kLimitExceeded,
                        fmt::format("more than max_elements={} elements", limits.max_elements));
        }
        if (depth > limits.max_depth) {
          return Status(Code::kLimitExceeded,
                        fmt::format("line {}: element '{}' at depth {}, limit max_depth={}",
                                    xmlGetLineNo(n), C(n->name), depth, limits.max_depth));
        }
        for (xmlNode* c = n->children; c != nullptr; c = c->next) stack.emplace_back(c, depth + 1);
        break;
      case XML_TEXT_NODE:
      case XML_CDATA_SECTION_NODE:
        break;
      case XML_COMMENT_NODE:
      case XML_PI_NODE:
        // Not covered by exc-c14n without comments, so they could change unnoticed; a
        // package has no use for them.
        return Status(Code::kMalformed, fmt::format("line {}: comments and processing "
                                                    "instructions are not allowed",
                                                    xmlGetLineNo(n)));
      default:
        return Status(Code::kMalformed, fmt::format("line {}: unexpected XML node kind {}",
                                                    xmlGetLineNo(n), static_cast<int>(n->type)));
    }
  }
  xmlNode* root = xmlDocGetRootElement(doc);
  size_t child_keys = 0;
  for (xmlNode* c : ElementChildren(root)) {
    const bool mrk = IsOurs(c, "MigratableRootKey");
    if (!mrk && !IsOurs(c, "ChildKey")) continue;
    if (!mrk && ++child_keys > limits.max_child_keys) {
      return Status(
          Code::kLimitExceeded,
          fmt::format("more than max_child_keys={} ChildKey elements", limits.max_child_keys));
    }
    size_t app_data = 0;
    for (xmlNode* a : ElementChildren(c)) {
      if (IsOurs(a, "ApplicationData") && ++app_data > limits.max_application_data_per_key) {
        return Status(Code::kLimitExceeded,
                      fmt::format("line {}: more than max_application_data_per_key={} "
                                  "ApplicationData elements in one {}",
                                  xmlGetLineNo(a), limits.max_application_data_per_key,
                                  mrk ? "MigratableRootKey" : "ChildKey"));
      }
    }
  }
  return Status::Ok();
}

Status ValidateAgainstSchema(xmlDoc* doc) {
  const Globals& g = Init();
  TPMMA_RETURN_IF_ERROR(g.status);
  ErrorSink sink;
  ScopedLibxmlErrors route(&sink);
  // The compiled schema is shared read-only; each validation gets its own context.
  XmlSchemaValidCtxtPtr v(xmlSchemaNewValidCtxt(g.schema.get()));
  if (!v) return Status(Code::kInternal, "xmlSchemaNewValidCtxt failed");
  xmlSchemaSetValidStructuredErrors(v.get(), OnSchemaError, &sink);
  int rc = xmlSchemaValidateDoc(v.get(), doc);
  if (rc > 0) return Status(Code::kSchemaViolation, sink.Summary("schema validation failed"));
  if (rc < 0) return Status(Code::kInternal, "schema validator failed: " + sink.Summary("?"));
  return Status::Ok();
}

// ---- signature checks ---------------------------------------------------------------------

Status SigError(std::string message) {
  return Status(Code::kSignatureInvalid, std::move(message));
}

size_t CountSignatures(const xmlNode* n) {
  size_t count = 0;
  std::vector<const xmlNode*> stack{n};
  while (!stack.empty()) {
    const xmlNode* cur = stack.back();
    stack.pop_back();
    if (IsElement(cur, kDsNs, "Signature")) ++count;
    for (const xmlNode* c = cur->children; c != nullptr; c = c->next) {
      if (c->type == XML_ELEMENT_NODE) stack.push_back(c);
    }
  }
  return count;
}

// The shape xmlsec is allowed to see: one Signature, last child of the root, one Reference
// to the whole document, and nothing in SignedInfo we did not ask for. Returns the
// SignatureMethod algorithm.
Result<std::string> CheckSignatureShape(xmlDoc* doc, xmlNode** signature) {
  xmlNode* root = xmlDocGetRootElement(doc);
  std::vector<xmlNode*> top = ElementChildren(root);
  if (top.empty() || !IsElement(top.back(), kDsNs, "Signature"))
    return Error(SigError("ds:Signature is not the last child of the root"));
  if (CountSignatures(root) != 1) return Error(SigError("more than one ds:Signature"));
  *signature = top.back();

  std::vector<xmlNode*> parts = ElementChildren(*signature);
  if (parts.size() < 2 || parts.size() > 3 || !IsElement(parts[0], kDsNs, "SignedInfo") ||
      !IsElement(parts[1], kDsNs, "SignatureValue") ||
      (parts.size() == 3 && !IsElement(parts[2], kDsNs, "KeyInfo"))) {
    return Error(SigError("ds:Signature must be SignedInfo, SignatureValue[, KeyInfo]"));
  }
  std::vector<xmlNode*> si = ElementChildren(parts[0]);
  if (si.size() != 3 || !IsElement(si[0], kDsNs, "CanonicalizationMethod") ||
      !IsElement(si[1], kDsNs, "SignatureMethod") || !IsElement(si[2], kDsNs, "Reference")) {
    return Error(
        SigError("ds:SignedInfo must hold CanonicalizationMethod, SignatureMethod and exactly one "
                 "Reference"));
  }
  std::string c14n = Attr(si[0], "Algorithm");
  if (c14n != kAlgExcC14n && c14n != kAlgC14n)
    return Error(Code::kUnsupported, "CanonicalizationMethod '" + c14n + "' not allowed");
  std::string method = Attr(si[1], "Algorithm");
  if (method != kAlgRsaSha256 && method != kAlgEcdsaSha256)
    return Error(Code::kUnsupported, "SignatureMethod '" + method + "' not allowed");

  xmlNode* ref = si[2];
  XmlCharPtr uri(xmlGetNoNsProp(ref, X("URI")));
  if (!uri || uri.get()[0] != '\0')
    return Error(SigError("ds:Reference must have URI=\"\" (the whole document)"));
  if (ref->properties != nullptr && ref->properties->next != nullptr)
    return Error(SigError("ds:Reference may carry only the URI attribute"));
  std::vector<xmlNode*> rc = ElementChildren(ref);
  size_t i = 0;
  bool enveloped = false;
  if (i < rc.size() && IsElement(rc[i], kDsNs, "Transforms")) {
    for (xmlNode* tr : ElementChildren(rc[i])) {
      std::string alg = IsElement(tr, kDsNs, "Transform") ? Attr(tr, "Algorithm") : "";
      if (alg == kAlgEnveloped) {
        enveloped = true;
      } else if (alg != kAlgExcC14n && alg != kAlgC14n) {
        return Error(Code::kUnsupported, "Transform '" + alg + "' not allowed");
      }
    }
    ++i;
  }
  if (!enveloped) return Error(SigError("ds:Reference lacks the enveloped-signature transform"));
  if (i >= rc.size() || !IsElement(rc[i], kDsNs, "DigestMethod"))
    return Error(SigError("ds:Reference lacks DigestMethod"));
  std::string digest = Attr(rc[i], "Algorithm");
  if (digest != kAlgSha256)
    return Error(Code::kUnsupported, "DigestMethod '" + digest + "' not allowed");
  if (i + 2 != rc.size() || !IsElement(rc[i + 1], kDsNs, "DigestValue"))
    return Error(SigError("ds:Reference must end with DigestMethod, DigestValue"));
  return method;
}

Result<MigrationPackage> ReadModel(xmlDoc* doc) {
  MigrationPackage p;
  Cursor top(xmlDocGetRootElement(doc));
  TPMMA_ASSIGN_OR_RETURN(p.package_id, top.Str("PackageId"));
  TPMMA_ASSIGN_OR_RETURN(uint64_t version, top.U64("FormatVersion"));
  if (version != kFormatVersion) return Error(Code::kVersionTooNew, "FormatVersion");
  p.format_version = static_cast<uint32_t>(version);
  TPMMA_ASSIGN_OR_RETURN(p.source_platform_id, top.Str("SourcePlatformId"));
  TPMMA_ASSIGN_OR_RETURN(std::string created, top.Str("CreationTime"));
  TPMMA_ASSIGN_OR_RETURN(p.creation_time, ParseUtc(created));

  TPMMA_ASSIGN_OR_RETURN(const xmlNode* mrk_node, top.Required("MigratableRootKey"));
  Cursor mrk(mrk_node);
  TPMMA_ASSIGN_OR_RETURN(p.mrk.public_area, mrk.B64("Public"));
  TPMMA_ASSIGN_OR_RETURN(p.mrk.duplicate, mrk.B64("Duplicate"));
  TPMMA_ASSIGN_OR_RETURN(p.mrk.encrypted_seed, mrk.B64("EncryptedSeed"));
  TPMMA_ASSIGN_OR_RETURN(std::string sym, mrk.Str("SymmetricAlgorithm"));
  static constexpr SymmetricAlgorithm kSyms[] = {
      SymmetricAlgorithm::kAes128Cfb, SymmetricAlgorithm::kAes256Cfb, SymmetricAlgorithm::kNull};
  TPMMA_ASSIGN_OR_RETURN(p.mrk.symmetric, FromWire("SymmetricAlgorithm", sym, kSyms));
  TPMMA_ASSIGN_OR_RETURN(p.mrk.application_data, ReadApplicationData(mrk));

  while (const xmlNode* ck_node = top.Optional("ChildKey")) {
    ChildKey k;
    Cursor ck(ck_node);
    TPMMA_ASSIGN_OR_RETURN(k.key_id, ck.Str("KeyId"));
    TPMMA_ASSIGN_OR_RETURN(k.label, ck.Str("Label"));
    TPMMA_ASSIGN_OR_RETURN(std::string usage, ck.Str("Usage"));
    static constexpr KeyUsage kUsages[] = {KeyUsage::kSign, KeyUsage::kDecrypt, KeyUsage::kSeal,
                                           KeyUsage::kStorage};
    TPMMA_ASSIGN_OR_RETURN(k.usage, FromWire("Usage", usage, kUsages));
    TPMMA_ASSIGN_OR_RETURN(k.public_area, ck.B64("Public"));
    TPMMA_ASSIGN_OR_RETURN(k.private_area, ck.B64("Private"));
    TPMMA_ASSIGN_OR_RETURN(k.application_data, ReadApplicationData(ck));
    if (const xmlNode* ea_node = ck.Optional("EncryptedAuth")) {
      Cursor ea(ea_node);
      EncryptedAuth auth;
      TPMMA_ASSIGN_OR_RETURN(std::string alg, ea.Str("Algorithm"));
      static constexpr AuthEncryption kAuthAlgs[] = {AuthEncryption::kAes256Gcm};
      TPMMA_ASSIGN_OR_RETURN(auth.algorithm, FromWire("EncryptedAuth/Algorithm", alg, kAuthAlgs));
      TPMMA_ASSIGN_OR_RETURN(auth.ciphertext, ea.B64("Ciphertext"));
      k.encrypted_auth = std::move(auth);
    }
    p.child_keys.push_back(std::move(k));
  }

  TPMMA_ASSIGN_OR_RETURN(const xmlNode* custody_node, top.Required("InnerKeyCustody"));
  Cursor custody(custody_node);
  if (const xmlNode* rc_node = custody.Optional("RecoveryCode")) {
    Cursor c(rc_node);
    RecoveryCodeCustody rc;
    TPMMA_ASSIGN_OR_RETURN(rc.kdf, c.Str("Kdf"));
    TPMMA_ASSIGN_OR_RETURN(rc.salt, c.B64("Salt"));
    TPMMA_ASSIGN_OR_RETURN(rc.n, c.U64("N"));
    TPMMA_ASSIGN_OR_RETURN(uint64_t r, c.U64("R"));
    TPMMA_ASSIGN_OR_RETURN(uint64_t pp, c.U64("P"));
    if (r > UINT32_MAX || pp > UINT32_MAX)
      return Error(Code::kLimitExceeded, "RecoveryCode: scrypt r or p above 2^32-1");
    rc.r = static_cast<uint32_t>(r);
    rc.p = static_cast<uint32_t>(pp);
    if (const xmlNode* v = c.Optional("Verifier")) {
      auto b = Base64Decode(Text(v));
      if (!b) return Error(Code::kMalformed, "Verifier: bad base64");
      rc.verifier = std::move(*b);
    }
    p.custody = std::move(rc);
  } else {
    TPMMA_ASSIGN_OR_RETURN(const xmlNode* e_node, custody.Required("Escrow"));
    Cursor c(e_node);
    EscrowCustody e;
    TPMMA_ASSIGN_OR_RETURN(e.escrow_key_id, c.Str("EscrowKeyId"));
    TPMMA_ASSIGN_OR_RETURN(std::string alg, c.Str("Algorithm"));
    static constexpr EscrowAlgorithm kEscrowAlgs[] = {
        EscrowAlgorithm::kRsaOaepSha256, EscrowAlgorithm::kEcdhP256HkdfSha256Aes256Gcm};
    TPMMA_ASSIGN_OR_RETURN(e.algorithm, FromWire("Escrow/Algorithm", alg, kEscrowAlgs));
    TPMMA_ASSIGN_OR_RETURN(e.encrypted_inner_key, c.B64("EncryptedInnerKey"));
    p.custody = std::move(e);
  }
  // The XSD already enforced these; this keeps model invariants in one place.
  Status valid = ValidateModel(p);
  if (!valid.ok()) return Error(Code::kSchemaViolation, valid.message());
  return p;
}

}  // namespace

std::string_view EmbeddedSchema() {
  return std::string_view(reinterpret_cast<const char*>(internal::kPackageXsd),
                          internal::kPackageXsdSize);
}

Result<Bytes> SerializeTemplate(const MigrationPackage& package, EVP_PKEY* key) {
  TPMMA_ASSIGN_OR_RETURN(Template t, BuildTemplate(package, key));
  return Dump(t.doc.get());
}

Result<Bytes> SignPackage(const MigrationPackage& package, EVP_PKEY* key) {
  TPMMA_ASSIGN_OR_RETURN(Template t, BuildTemplate(package, key));
  TPMMA_ASSIGN_OR_RETURN(SecKeyPtr sec_key, AdoptKey(key));
  SecDSigCtxPtr ctx(xmlSecDSigCtxCreate(nullptr));
  if (!ctx) return Error(Code::kInternal, "xmlSecDSigCtxCreate failed");
  ctx->signKey = sec_key.release();  // the context frees it
  ErrorSink sink;
  ScopedXmlsecSink scoped(&sink);
  if (xmlSecDSigCtxSign(ctx.get(), t.signature) < 0) {
    return Error(Code::kCryptoError, "signing failed: " + sink.Summary("xmlSecDSigCtxSign"));
  }
  return Dump(t.doc.get());
}

Result<Bytes> PackageDigest(ByteView package_bytes) {
  Bytes out(EVP_MAX_MD_SIZE);
  unsigned int len = 0;
  if (EVP_Digest(package_bytes.data(), package_bytes.size(), out.data(), &len, EVP_sha256(),
                 nullptr) != 1) {
    return Error(OpensslError("EVP_Digest"));
  }
  out.resize(len);
  return out;
}

struct PackageReader::Doc {
  XmlDocPtr doc;
};

PackageReader::PackageReader(std::unique_ptr<Doc> doc, UnverifiedHeader header)
    : doc_(std::move(doc)), header_(std::move(header)) {}
PackageReader::PackageReader(PackageReader&&) noexcept = default;
PackageReader& PackageReader::operator=(PackageReader&&) noexcept = default;
PackageReader::~PackageReader() = default;

Result<PackageReader> PackageReader::Open(ByteView bytes, const ParseLimits& limits) {
  TPMMA_RETURN_IF_ERROR(Init().status);
  TPMMA_ASSIGN_OR_RETURN(XmlDocPtr doc, ParseSafely(bytes, limits));
  TPMMA_RETURN_IF_ERROR(CheckTree(doc.get(), limits));
  TPMMA_RETURN_IF_ERROR(ValidateAgainstSchema(doc.get()));

  UnverifiedHeader header;
  Cursor top(xmlDocGetRootElement(doc.get()));
  TPMMA_ASSIGN_OR_RETURN(header.package_id, top.Str("PackageId"));
  TPMMA_ASSIGN_OR_RETURN(uint64_t version, top.U64("FormatVersion"));
  header.format_version = static_cast<uint32_t>(version);
  TPMMA_ASSIGN_OR_RETURN(header.source_platform_id, top.Str("SourcePlatformId"));
  auto owned = std::make_unique<Doc>();
  owned->doc = std::move(doc);
  return PackageReader(std::move(owned), std::move(header));
}

Result<MigrationPackage> PackageReader::Verify(EVP_PKEY* public_key) const {
  if (public_key == nullptr) return Error(Code::kInvalidArgument, "no verification key");
  xmlDoc* doc = doc_->doc.get();
  xmlNode* signature = nullptr;
  TPMMA_ASSIGN_OR_RETURN(std::string method, CheckSignatureShape(doc, &signature));
  bool key_is_rsa = EVP_PKEY_is_a(public_key, "RSA");
  bool key_is_ec = EVP_PKEY_is_a(public_key, "EC");
  if (!key_is_rsa && !key_is_ec) return Error(Code::kUnsupported, "key is neither RSA nor EC");
  if ((method == kAlgRsaSha256) != key_is_rsa) {
    return Error(SigError("SignatureMethod does not match the platform's key type"));
  }

  TPMMA_ASSIGN_OR_RETURN(SecKeyPtr sec_key, AdoptKey(public_key));
  SecDSigCtxPtr ctx(xmlSecDSigCtxCreate(nullptr));  // no keys manager: KeyInfo is never used
  if (!ctx) return Error(Code::kInternal, "xmlSecDSigCtxCreate failed");
  ctx->signKey = sec_key.release();
  ctx->enabledReferenceUris = xmlSecTransformUriTypeEmpty;
  const xmlSecTransformId kReferenceTransforms[] = {
      xmlSecTransformEnvelopedId, xmlSecTransformExclC14NId, xmlSecTransformInclC14NId,
      xmlSecTransformSha256Id};
  const xmlSecTransformId kSignatureTransforms[] = {
      xmlSecTransformExclC14NId, xmlSecTransformInclC14NId, xmlSecTransformRsaSha256Id,
      xmlSecTransformEcdsaSha256Id, xmlSecTransformSha256Id};
  for (xmlSecTransformId id : kReferenceTransforms) {
    if (xmlSecDSigCtxEnableReferenceTransform(ctx.get(), id) < 0)
      return Error(Code::kInternal, "xmlSecDSigCtxEnableReferenceTransform failed");
  }
  for (xmlSecTransformId id : kSignatureTransforms) {
    if (xmlSecDSigCtxEnableSignatureTransform(ctx.get(), id) < 0)
      return Error(Code::kInternal, "xmlSecDSigCtxEnableSignatureTransform failed");
  }

  ErrorSink sink;
  ScopedXmlsecSink scoped(&sink);
  ScopedLibxmlErrors route(&sink);
  if (xmlSecDSigCtxVerify(ctx.get(), signature) < 0) {
    return Error(SigError("signature could not be processed: " + sink.Summary("xmlsec")));
  }
  if (ctx->status != xmlSecDSigStatusSucceeded) {
    return Error(SigError("signature does not verify with the platform's key"));
  }
  // Belt and braces: what xmlsec verified is exactly the one whole-document reference.
  if (xmlSecPtrListGetSize(&ctx->signedInfoReferences) != 1) {
    return Error(SigError("signature must carry exactly one reference"));
  }
  auto* ref =
      static_cast<xmlSecDSigReferenceCtxPtr>(xmlSecPtrListGetItem(&ctx->signedInfoReferences, 0));
  if (ref == nullptr || ref->status != xmlSecDSigStatusSucceeded || ref->uri == nullptr ||
      ref->uri[0] != '\0') {
    return Error(SigError("the verified reference is not the whole document"));
  }
  return ReadModel(doc);
}

}  // namespace tpmma::schema
