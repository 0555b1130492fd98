// SPDX-License-Identifier: GPL-2.0-or-later
// The helpers every SOAP user shares: DOCTYPE refusal, Status <-> Fault, base64 values.
#include "wsdl/soap_context.h"  // RejectDoctype via soap_precheck.h

#include <gtest/gtest.h>

#include <string>

namespace tpmma::wsdl {
namespace {

TEST(WsdlSoapContext, RejectDoctypeAcceptsPlainEnvelope) {
  EXPECT_TRUE(RejectDoctype("<?xml version=\"1.0\"?><Envelope/>").ok());
  EXPECT_TRUE(RejectDoctype("<a>DOCTYPE is only a word here</a>").ok());
}

TEST(WsdlSoapContext, RejectDoctypeRefusesDoctypeInAnyCase) {
  for (const char* body : {"<!DOCTYPE x [<!ENTITY a \"b\">]><x/>",
                           "<?xml version='1.0'?><!doctype x><x/>", "<x/><!DocType y>"}) {
    Status s = RejectDoctype(body);
    EXPECT_EQ(s.code(), Code::kMalformed) << body;
  }
}

TEST(WsdlSoapContext, RejectDoctypeRefusesNulBytes) {
  // "<!DOCTYPE" in UTF-16 would slip past a byte search; no NUL is allowed at all.
  std::string utf16("<\0!\0D\0O\0C\0T\0Y\0P\0E\0", 18);
  EXPECT_EQ(RejectDoctype(utf16).code(), Code::kMalformed);
}

TEST(WsdlSoapContext, SetFaultFillsMAFaultDetailAndFaultCode) {
  struct soap* soap = soap_new();
  HardenContext(soap);
  EXPECT_EQ(SetFault(soap, Status(Code::kUnauthenticated, "session expired")), SOAP_FAULT);
  ASSERT_NE(soap->fault, nullptr);
  ASSERT_NE(soap->fault->detail, nullptr);
  ASSERT_NE(soap->fault->detail->ma__MAFault, nullptr);
  EXPECT_EQ(soap->fault->detail->ma__MAFault->Code, "Unauthenticated");
  EXPECT_EQ(soap->fault->detail->ma__MAFault->Message, "session expired");

  soap->error = SOAP_FAULT;
  Status back = StatusFromSoap(soap);
  EXPECT_EQ(back.code(), Code::kUnauthenticated);
  EXPECT_EQ(back.message(), "session expired");

  // faultcode (Client/Server) is only filled in when the fault is sent; see
  // WsdlBindings.ZeepEnvelopesParseInGsoapService.
  SetFault(soap, Status(Code::kTpmError, "TPM2_Rewrap failed"));
  soap->error = SOAP_FAULT;
  EXPECT_EQ(StatusFromSoap(soap).code(), Code::kTpmError);
  soap_destroy(soap);
  soap_end(soap);
  soap_free(soap);
}

TEST(WsdlSoapContext, StatusFromSoapMapsTransportAndParseErrors) {
  struct soap* soap = soap_new();
  soap->error = SOAP_OK;
  EXPECT_TRUE(StatusFromSoap(soap).ok());
  soap->error = SOAP_TCP_ERROR;
  EXPECT_EQ(StatusFromSoap(soap).code(), Code::kUnavailable);
  soap->error = SOAP_EOF;  // a peer that hung up, not an exceeded limit
  EXPECT_EQ(StatusFromSoap(soap).code(), Code::kUnavailable);
  soap->error = SOAP_SYNTAX_ERROR;
  EXPECT_EQ(StatusFromSoap(soap).code(), Code::kMalformed);
  soap->error = SOAP_OCCURS;
  EXPECT_EQ(StatusFromSoap(soap).code(), Code::kSchemaViolation);
  soap->error = SOAP_LEVEL;
  EXPECT_EQ(StatusFromSoap(soap).code(), Code::kLimitExceeded);
  soap_end(soap);
  soap_free(soap);
}

TEST(WsdlSoapContext, HardenContextSetsBoundedLimits) {
  struct soap* soap = soap_new();
  SoapLimits limits;
  limits.max_message_bytes = 1234;
  limits.max_depth = 7;
  HardenContext(soap, limits);
  EXPECT_TRUE(soap->imode & SOAP_XML_STRICT);
  EXPECT_TRUE(soap->imode & SOAP_C_UTFSTRING);
  EXPECT_EQ(soap->recv_maxlength, 1234u);
  EXPECT_EQ(soap->maxlevel, 7u);
  EXPECT_GT(soap->maxlength, 0);
  EXPECT_GT(soap->recv_timeout, 0);
  EXPECT_GT(soap->send_timeout, 0);
  EXPECT_GT(soap->connect_timeout, 0);
  EXPECT_GT(soap->accept_timeout, 0);
  EXPECT_GT(soap->transfer_timeout, 0);
  soap_free(soap);
}

TEST(WsdlSoapContext, Base64BinaryRoundTrips) {
  struct soap* soap = soap_new();
  Bytes data = {0, 1, 2, 0xfe, 0xff};
  xsd__base64Binary b = ToBase64Binary(soap, data);
  EXPECT_EQ(b.__size, 5);
  EXPECT_EQ(FromBase64Binary(b), data);
  EXPECT_TRUE(FromBase64Binary(ToBase64Binary(soap, Bytes())).empty());
  soap_end(soap);
  soap_free(soap);
}

}  // namespace
}  // namespace tpmma::wsdl
