// SPDX-License-Identifier: GPL-2.0-or-later
// Everything that touches a gSOAP context goes through here, so that the server and the
// LMS share one set of safe settings (docs/protocol.md) and one Status <-> SOAP Fault
// mapping: a fault's MAFault/Code is CodeName() of the Status, verbatim (the bytes of a
// fault are written by soap_fault.h).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "common/bytes.h"
#include "common/status.h"
#include "soapH.h"  // generated: struct soap, xsd__base64Binary, _ma__* classes
#include "wsdl/soap_fault.h"
#include "wsdl/soap_precheck.h"  // what a request body must be before gSOAP sees it

namespace tpmma::wsdl {

// gSOAP's defaults wait forever and accept 2 GB bodies; these are bounded. Tune per role
// (the server from its config; Limits in GetMAServiceInfo must advertise the same values).
struct SoapLimits {
  uint64_t max_message_bytes = 16u << 20;  // whole received message (recv_maxlength)
  long max_string_bytes = 12l << 20;       // one string or base64 value (maxlength)
  unsigned max_depth = 32;                 // XML nesting (maxlevel); ours is < 10 deep
  size_t max_occurs = 1000;                // items in one repeated element (maxoccurs)
  int connect_timeout_s = 10;
  int accept_timeout_s = 30;
  int recv_timeout_s = 30;       // per read
  int send_timeout_s = 30;       // per write
  int transfer_timeout_s = 120;  // a whole message, so a slow sender cannot hold a thread
};

// Applies strict parsing (SOAP_XML_STRICT: missing/unknown/duplicate elements and bad
// base64 are errors), UTF-8 strings as-is (SOAP_C_UTFSTRING), and the limits above.
// Call it on every context right after creating it (and after soap_init/reset).
void HardenContext(struct soap* soap, const SoapLimits& limits = {});


// For a service that sends through gSOAP's own serve loop (tests/wsdl): turns `status`
// (not OK) into the context's SOAP Fault, the same fields SoapFaultXml (soap_fault.h)
// writes: faultcode Client for errors the caller can fix, Server otherwise; faultstring
// and MAFault/Message = the message; MAFault/Code = CodeName(code). Returns SOAP_FAULT, so
// a service method can `return SetFault(soap, status);`. ma-server answers with
// SoapFaultXml, the writer its front end shares.
int SetFault(struct soap* soap, const Status& status);

// Client side (and server side after a failed parse): the Status behind soap->error.
// MAFault details map back to their Code (unknown names become kInternal); transport
// errors become kUnavailable, XML that breaks the schema kSchemaViolation, unparseable XML
// kMalformed, exceeded limits kLimitExceeded.
Status StatusFromSoap(struct soap* soap);

// Bytes <-> xsd:base64Binary. The result of ToBase64Binary lives in soap's arena (freed
// by soap_end), so it can go straight into a generated request or response.
xsd__base64Binary ToBase64Binary(struct soap* soap, ByteView data);
Bytes FromBase64Binary(const xsd__base64Binary& value);

}  // namespace tpmma::wsdl
