// SPDX-License-Identifier: GPL-2.0-or-later
// The one writer of the MAFault envelope: the SOAP operations (server/ma_service.cc) and
// the front end's own refusals (server/http_server.cc: 413, 503, ...) answer with these
// bytes, so a client sees one shape whoever refused. No gSOAP here: the front end does
// not link the bindings. faultcode is Client for errors the caller can fix, Server
// otherwise; faultstring and MAFault/Message are the message; MAFault/Code is
// CodeName(code), verbatim (the mapping soap_context.h's StatusFromSoap reads back).
#pragma once

#include <string>

#include "common/status.h"

namespace tpmma::wsdl {

// `soap_version` 1 (SOAP 1.1, the contract's binding) or 2 (SOAP 1.2: a request in the
// 1.2 envelope gets its fault in the same).
std::string SoapFaultXml(const Status& status, int soap_version = 1);

}  // namespace tpmma::wsdl
