// SPDX-License-Identifier: GPL-2.0-or-later
// What a request body must be before gSOAP sees it (wsdl/soap_precheck.h): every hostile
// shape of issue #13 (findings 1 and 8) refused with its reason, every request of the
// contract's examples accepted.
#include "wsdl/soap_precheck.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

namespace tpmma::wsdl {
namespace {

const std::string kOpen =
    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>"
    "<SOAP-ENV:Envelope xmlns:SOAP-ENV=\"http://schemas.xmlsoap.org/soap/envelope/\" "
    "xmlns:ma=\"urn:tpm-ma:migration:1\"><SOAP-ENV:Body>";
const std::string kClose = "</SOAP-ENV:Body></SOAP-ENV:Envelope>";
const std::string kOp = "<ma:GetMAServiceInfoRequest/>";

std::string Envelope(const std::string& body_content) {
  return kOpen + body_content + kClose;
}

void ExpectRefused(const std::string& body, Code code, const std::string& words) {
  Status s = PrecheckSoapRequest(body);
  EXPECT_EQ(s.code(), code) << s.ToString() << "\n" << body.substr(0, 300);
  EXPECT_NE(s.message().find(words), std::string::npos) << s.message();
}

TEST(SoapPrecheck, AcceptsEveryExampleRequestOfTheContract) {
  int seen = 0;
  for (const auto& entry : std::filesystem::directory_iterator(TPMMA_WSDL_EXAMPLES)) {
    const std::string name = entry.path().filename().string();
    if (!name.ends_with(".request.xml")) continue;
    std::ifstream in(entry.path());
    std::stringstream ss;
    ss << in.rdbuf();
    std::string payload = ss.str();
    // The examples are Body contents with a declaration and a licence comment.
    payload = payload.substr(payload.find("<ma:"));
    Status s = PrecheckSoapRequest(Envelope(payload));
    EXPECT_TRUE(s.ok()) << name << ": " << s.ToString();
    ++seen;
  }
  EXPECT_GE(seen, 10);
  // A Header, whitespace, comments and a UTF-8 BOM are all fine.
  EXPECT_TRUE(PrecheckSoapRequest("\xEF\xBB\xBF" + kOpen.substr(0, kOpen.size() - 15) +
                                  "\n <SOAP-ENV:Header/> <!-- c --> <SOAP-ENV:Body>\n" + kOp +
                                  "\n" + kClose + "\n")
                  .ok());
}

// Finding 1: 40,000 attributes in one start tag took 7-8 s to refuse; now the scan refuses
// it in one linear pass before any parser runs.
TEST(SoapPrecheck, AttributeAndNamespaceFloodsAreRefusedBeforeParsing) {
  std::string attrs, nss;
  for (int i = 0; i < 40000; ++i) {
    attrs += " a" + std::to_string(i) + "=\"1\"";
    nss += " xmlns:n" + std::to_string(i) + "=\"urn:x\"";
  }
  ExpectRefused(Envelope("<ma:GetMAServiceInfoRequest" + attrs + "/>"), Code::kLimitExceeded,
                "attributes");
  ExpectRefused(Envelope("<ma:GetMAServiceInfoRequest" + nss + "/>"), Code::kLimitExceeded,
                "attributes");
  ExpectRefused(Envelope("<ma:" + std::string(10000, 'n') + "/>"), Code::kLimitExceeded,
                "longer than");
  // 33 attributes is over, 32 is not (and then the parser decides).
  std::string a32;
  for (int i = 0; i < 32; ++i) a32 += " a" + std::to_string(i) + "='1'";
  EXPECT_TRUE(CheckTagBounds("<x" + a32 + "/>").ok());
  EXPECT_EQ(CheckTagBounds("<x" + a32 + " b='2'/>").code(), Code::kLimitExceeded);
}

// Quotes inside a comment or CDATA must not blind the scan to the tag after it.
TEST(SoapPrecheck, ScanCannotBeDesynchronisedByCommentsOrQuotes) {
  std::string attrs;
  for (int i = 0; i < 100; ++i) attrs += " c" + std::to_string(i) + "=\"1\"";
  EXPECT_EQ(CheckTagBounds("<!-- ' --><a b='>'" + attrs + "/>").code(), Code::kLimitExceeded);
  EXPECT_EQ(CheckTagBounds("<a><![CDATA[ \" ]]></a><b" + attrs + "/>").code(),
            Code::kLimitExceeded);
  EXPECT_EQ(CheckTagBounds("<?pi ' ?><b" + attrs + "/>").code(), Code::kLimitExceeded);
  EXPECT_EQ(CheckTagBounds("<a b='<c'/>").code(), Code::kMalformed);
}

// Finding 8, one case at a time.
TEST(SoapPrecheck, WhatTheContractDoesNotAllowIsRefused) {
  ExpectRefused(Envelope("<ma:X>\xC3\x28</ma:X>"), Code::kMalformed, "UTF-8");
  ExpectRefused(Envelope("<ma:X>&#0;</ma:X>"), Code::kMalformed, "not well-formed");
  ExpectRefused(Envelope("<ma:X>a\x01</ma:X>"), Code::kMalformed, "not well-formed");
  ExpectRefused(Envelope("<ma:X>&#x1b;[31m</ma:X>"), Code::kMalformed, "not well-formed");
  ExpectRefused(Envelope("<ma:X>\xC2\x9B"
                         "31m</ma:X>"),
                Code::kMalformed, "control character");
  ExpectRefused(Envelope("<ma:X>&#x9b;</ma:X>"), Code::kMalformed, "control character");
  ExpectRefused(Envelope("<ma:X a='&#127;'/>"), Code::kMalformed, "control character");
  ExpectRefused(Envelope(kOp + kOp), Code::kMalformed, "more than one operation");
  ExpectRefused(Envelope(""), Code::kMalformed, "exactly one operation");
  ExpectRefused(Envelope("<ma:X href='#id1'/>"), Code::kMalformed, "multi-reference");
  ExpectRefused(Envelope("<ma:X><ma:Y id='id1'>a</ma:Y></ma:X>"), Code::kMalformed,
                "multi-reference");
  ExpectRefused(Envelope(kOp) + "garbage", Code::kMalformed, "not well-formed");
  ExpectRefused(Envelope(kOp) + "<x/>", Code::kMalformed, "not well-formed");
  ExpectRefused(kOpen + kOp + "</SOAP-ENV:Body><x/></SOAP-ENV:Envelope>", Code::kMalformed,
                "after the SOAP Body");
  ExpectRefused(Envelope("text" + kOp), Code::kMalformed, "text outside");
  ExpectRefused(Envelope("<?pi x?>" + kOp), Code::kMalformed, "processing instruction");
  ExpectRefused(Envelope("<ma:X>&foo;</ma:X>"), Code::kMalformed, "not well-formed");
  ExpectRefused("<?xml version='1.0' encoding='ISO-8859-1'?>" + kOpen.substr(38) + kOp + kClose,
                Code::kMalformed, "encoding other than UTF-8");
  ExpectRefused("<Envelope xmlns='urn:x'><Body>" + kOp + "</Body></Envelope>", Code::kMalformed,
                "not a SOAP 1.1 Envelope");
  ExpectRefused("<e:Envelope xmlns:e='http://www.w3.org/2003/05/soap-envelope'><e:Body>" + kOp +
                    "</e:Body></e:Envelope>",
                Code::kUnsupported, "SOAP 1.1 only");
  ExpectRefused(Envelope("<ma:X SOAP-ENV:encodingStyle='x'/>"), Code::kMalformed, "encoding");
}

TEST(SoapPrecheck, DoctypeAndNulAreStillRefusedFirst) {
  ExpectRefused("<!DOCTYPE x [<!ENTITY a \"b\">]>" + Envelope(kOp), Code::kMalformed, "DOCTYPE");
  ExpectRefused(std::string("<\0a/>", 5), Code::kMalformed, "NUL");
}

}  // namespace
}  // namespace tpmma::wsdl
