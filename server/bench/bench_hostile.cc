// SPDX-License-Identifier: GPL-2.0-or-later
#include "server/bench/bench_hostile.h"

namespace tpmma::bench {
namespace {

constexpr std::string_view kHead =
    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>"
    "<SOAP-ENV:Envelope xmlns:SOAP-ENV=\"http://schemas.xmlsoap.org/soap/envelope/\" "
    "xmlns:ma=\"urn:tpm-ma:migration:1\"><SOAP-ENV:Body>";
constexpr std::string_view kTail = "</SOAP-ENV:Body></SOAP-ENV:Envelope>";
constexpr std::string_view kSoap12 = "http://www.w3.org/2003/05/soap-envelope";
// Well-formed for the schema (base64url, 16..128 characters), issued by no one.
constexpr std::string_view kForgedToken = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
constexpr std::string_view kSomePackage = "00000000-0000-4000-8000-000000000000";

std::string Wrap(std::string_view inner) {
  std::string out(kHead);
  out += inner;
  out += kTail;
  return out;
}

HostileRequest Fault(std::string kind, std::string body, std::string code) {
  HostileRequest h;
  h.kind = std::move(kind);
  h.body = std::move(body);
  h.status = 500;
  h.fault_code = std::move(code);
  return h;
}

// Issue #13 finding 1: one start tag with 40,000 attributes took seconds to refuse.
HostileRequest Attributes() {
  std::string tag = "<ma:GetMAKeyRequest";
  for (int i = 0; i < 40000; ++i) tag += " a" + std::to_string(i) + "='x'";
  return Fault("attributes", Wrap(tag + "><ma:KeyId>k</ma:KeyId></ma:GetMAKeyRequest>"),
               "LimitExceeded");
}

// An external entity naming a local file: refused before any entity is resolved.
HostileRequest Doctype() {
  std::string body =
      "<?xml version=\"1.0\"?><!DOCTYPE x [<!ENTITY xxe SYSTEM \"file:///etc/passwd\">]>";
  body += std::string(kHead.substr(kHead.find("?>") + 2));
  body += "<ma:GetMAKeyRequest><ma:KeyId>&xxe;</ma:KeyId></ma:GetMAKeyRequest>";
  body += kTail;
  HostileRequest h = Fault("doctype", std::move(body), "Malformed");
  h.forbidden = "root:";
  return h;
}

// Answered with a clean SOAP 1.1 fault, not a mix of 1.1 and 1.2 (finding 8).
HostileRequest Soap12() {
  HostileRequest h = Fault("soap12",
                           "<e:Envelope xmlns:e='" + std::string(kSoap12) +
                               "' xmlns:ma='urn:tpm-ma:migration:1'><e:Body>"
                               "<ma:GetMAKeyRequest><ma:KeyId>k</ma:KeyId></ma:GetMAKeyRequest>"
                               "</e:Body></e:Envelope>",
                           "Unsupported");
  h.forbidden = std::string(kSoap12);
  return h;
}

HostileRequest InvalidUtf8() {
  return Fault("utf8",
               Wrap("<ma:GetMAKeyRequest><ma:KeyId>k\xC3\x28</ma:KeyId></ma:GetMAKeyRequest>"),
               "Malformed");
}

// Refused with 413 on the header (limits.max_body_bytes), the body never read.
HostileRequest Oversize(uint64_t max_body_bytes) {
  HostileRequest h;
  h.kind = "oversize";
  h.header_only = true;
  h.declared_length = max_body_bytes + 1;
  h.status = 413;
  h.closes = true;
  return h;
}

// State-changing calls with a token no Authenticate issued (finding 3: anonymous refusals).
HostileRequest Delete() {
  return Fault("delete",
               Wrap("<ma:DeleteRequest><ma:SessionToken>" + std::string(kForgedToken) +
                    "</ma:SessionToken><ma:PackageId>" + std::string(kSomePackage) +
                    "</ma:PackageId></ma:DeleteRequest>"),
               "Unauthenticated");
}

HostileRequest Download() {
  return Fault("download",
               Wrap("<ma:DownloadRequest><ma:SessionToken>" + std::string(kForgedToken) +
                    "</ma:SessionToken><ma:PackageId>" + std::string(kSomePackage) +
                    "</ma:PackageId><ma:Prepare><ma:DestinationParentName>AAsAAQID"
                    "</ma:DestinationParentName></ma:Prepare></ma:DownloadRequest>"),
               "Unauthenticated");
}

}  // namespace

std::vector<HostileRequest> MakeHostileRequests(uint64_t max_body_bytes) {
  return {Attributes(), Doctype(), Soap12(), InvalidUtf8(), Oversize(max_body_bytes),
          Delete(),     Download()};
}

std::string HostileKinds() {
  return "attributes (40,000 in one tag), doctype (XXE), soap12, utf8 (invalid), oversize "
         "(Content-Length over limits.max_body_bytes), delete and download (forged session)";
}

bool HostileAnswered(const HostileRequest& h, unsigned status, std::string_view body,
                     bool keep_alive, std::string* why) {
  std::string head(body.substr(0, 200));
  if (status != h.status) {
    *why =
        "HTTP " + std::to_string(status) + " (expected " + std::to_string(h.status) + "): " + head;
  } else if (!h.fault_code.empty() &&
             body.find("<ma:Code>" + h.fault_code + "</ma:Code>") == std::string_view::npos) {
    *why = "not an MAFault " + h.fault_code + ": " + head;
  } else if (!h.forbidden.empty() && body.find(h.forbidden) != std::string_view::npos) {
    *why = "the answer holds '" + h.forbidden + "': " + head;
  } else if (h.closes == keep_alive) {
    *why = h.closes ? "answered without Connection: close" : "the server closed the connection";
  } else {
    return true;
  }
  return false;
}

}  // namespace tpmma::bench
