// SPDX-License-Identifier: GPL-2.0-or-later
#include "wsdl/soap_fault.h"

#include <string_view>

namespace tpmma::wsdl {
namespace {

std::string XmlEscape(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    switch (c) {
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '&':
        out += "&amp;";
        break;
      case '"':
        out += "&quot;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

}  // namespace

std::string SoapFaultXml(const Status& status, int soap_version) {
  const Status& s =
      status.ok() ? Status(Code::kInternal, "fault requested for an OK status") : status;
  const std::string message = XmlEscape(s.message());
  const bool caller = IsCallerError(s.code());
  const std::string detail = "<ma:MAFault><ma:Code>" + std::string(CodeName(s.code())) +
                             "</ma:Code><ma:Message>" + message + "</ma:Message></ma:MAFault>";
  std::string out =
      "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<SOAP-ENV:Envelope xmlns:SOAP-ENV=\"";
  if (soap_version == 2) {
    out +=
        "http://www.w3.org/2003/05/soap-envelope\" xmlns:ma=\"urn:tpm-ma:migration:1\">"
        "<SOAP-ENV:Body><SOAP-ENV:Fault><SOAP-ENV:Code><SOAP-ENV:Value>SOAP-ENV:";
    out += caller ? "Sender" : "Receiver";
    out += "</SOAP-ENV:Value></SOAP-ENV:Code><SOAP-ENV:Reason><SOAP-ENV:Text xml:lang=\"en\">" +
           message + "</SOAP-ENV:Text></SOAP-ENV:Reason><SOAP-ENV:Detail>" + detail +
           "</SOAP-ENV:Detail>";
  } else {
    out +=
        "http://schemas.xmlsoap.org/soap/envelope/\" xmlns:ma=\"urn:tpm-ma:migration:1\">"
        "<SOAP-ENV:Body><SOAP-ENV:Fault><faultcode>SOAP-ENV:";
    out += caller ? "Client" : "Server";
    out += "</faultcode><faultstring>" + message + "</faultstring><detail>" + detail + "</detail>";
  }
  out += "</SOAP-ENV:Fault></SOAP-ENV:Body></SOAP-ENV:Envelope>\n";
  return out;
}

}  // namespace tpmma::wsdl
