// SPDX-License-Identifier: GPL-2.0-or-later
// The one MAFault writer (wsdl/soap_fault.h) read back by a hardened gSOAP client: the
// code and message survive, in SOAP 1.1 and 1.2, whoever wrote the fault.
#include "wsdl/soap_fault.h"

#include <sstream>

#include <gtest/gtest.h>

#include "soapMigrationAuthorityBindingProxy.h"
#include "wsdl/soap_context.h"

namespace tpmma::wsdl {
namespace {

Status ReadBack(const std::string& body) {
  MigrationAuthorityBindingProxy proxy;
  HardenContext(proxy.soap);
  soap_set_mode(proxy.soap, SOAP_ENC_PLAIN);
  std::istringstream is(body);
  proxy.soap->is = &is;
  _ma__GetMAKeyResponse resp;
  proxy.recv_GetMAKey(resp);
  proxy.soap->is = nullptr;
  return StatusFromSoap(proxy.soap);
}

TEST(SoapFaultXml, ReadsBackAsTheSameStatus) {
  for (int version : {1, 2}) {
    SCOPED_TRACE(version);
    const Status caller(Code::kPermissionDenied, "only the <owner> & \"friends\"");
    Status got = ReadBack(SoapFaultXml(caller, version));
    EXPECT_EQ(got.code(), caller.code()) << got.ToString();
    EXPECT_EQ(got.message(), caller.message());
    const Status server(Code::kTpmError, "TPM2_Rewrap failed");
    got = ReadBack(SoapFaultXml(server, version));
    EXPECT_EQ(got.code(), server.code()) << got.ToString();
  }
  EXPECT_NE(SoapFaultXml(Status(Code::kMalformed, "x"), 2).find("SOAP-ENV:Sender"),
            std::string::npos);
  EXPECT_NE(SoapFaultXml(Status(Code::kIoError, "x"), 2).find("SOAP-ENV:Receiver"),
            std::string::npos);
  // An OK status is no fault: it becomes Internal rather than a fault saying "OK".
  EXPECT_EQ(ReadBack(SoapFaultXml(Status::Ok())).code(), Code::kInternal);
}

}  // namespace
}  // namespace tpmma::wsdl
