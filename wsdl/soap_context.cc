// SPDX-License-Identifier: GPL-2.0-or-later
#include "wsdl/soap_context.h"

#include <algorithm>
#include <cctype>
#include <cstring>
#include <string>

namespace tpmma::wsdl {
namespace {

_ma__MAFault* DetailFault(struct soap* soap) {
  if (soap->fault == nullptr) return nullptr;
  SOAP_ENV__Detail* detail =
      soap->version == 2 ? soap->fault->SOAP_ENV__Detail : soap->fault->detail;
  return detail != nullptr ? detail->ma__MAFault : nullptr;
}

std::string FaultString(struct soap* soap) {
  if (soap->fault == nullptr) return {};
  const char* s = soap_fault_string(soap);
  return s != nullptr ? std::string(s) : std::string();
}

}  // namespace

void HardenContext(struct soap* soap, const SoapLimits& limits) {
  soap_set_imode(soap, SOAP_XML_STRICT | SOAP_C_UTFSTRING);
  soap_set_omode(soap, SOAP_XML_STRICT | SOAP_C_UTFSTRING);
  soap->recv_maxlength = limits.max_message_bytes;
  soap->maxlength = limits.max_string_bytes;
  soap->maxlevel = limits.max_depth;
  soap->maxoccurs = limits.max_occurs;
  soap->connect_timeout = limits.connect_timeout_s;
  soap->accept_timeout = limits.accept_timeout_s;
  soap->recv_timeout = limits.recv_timeout_s;
  soap->send_timeout = limits.send_timeout_s;
  soap->transfer_timeout = limits.transfer_timeout_s;
}

int SetFault(struct soap* soap, const Status& status) {
  const Status& s =
      status.ok() ? Status(Code::kInternal, "fault requested for an OK status") : status;
  std::string code(CodeName(s.code()));
  if (IsCallerError(s.code())) {
    soap_sender_fault(soap, s.message().c_str(), nullptr);
  } else {
    soap_receiver_fault(soap, s.message().c_str(), nullptr);
  }
  _ma__MAFault* fault = soap_new__ma__MAFault(soap);
  fault->Code = code;
  fault->Message = s.message();
  SOAP_ENV__Detail* detail = soap_new_SOAP_ENV__Detail(soap);
  detail->ma__MAFault = fault;
  if (soap->version == 2) {
    soap->fault->SOAP_ENV__Detail = detail;
  } else {
    soap->fault->detail = detail;
  }
  return SOAP_FAULT;
}

Status StatusFromSoap(struct soap* soap) {
  const int error = soap->error;
  if (error == SOAP_OK) return Status::Ok();
  if (const _ma__MAFault* fault = DetailFault(soap)) {
    Code code = CodeFromName(fault->Code);
    if (code == Code::kOk) code = Code::kInternal;  // an "OK" fault is not OK
    return Status(code, fault->Message);
  }
  std::string text = FaultString(soap);
  if (text.empty()) text = "gSOAP error " + std::to_string(error);
  switch (error) {
    case SOAP_EOF:
      // gSOAP reports an exceeded recv_maxlength as EOF.
      if ((soap->recv_maxlength > 0 && soap->count >= soap->recv_maxlength) ||
          text.find("max message length exceeded") != std::string::npos) {
        return Status(Code::kLimitExceeded, text);
      }
      return Status(Code::kUnavailable, text);
    case SOAP_TCP_ERROR:
    case SOAP_UDP_ERROR:
    case SOAP_SSL_ERROR:
    case SOAP_HTTP_ERROR:
    case SOAP_NTLM_ERROR:
    case SOAP_ZLIB_ERROR:
      return Status(Code::kUnavailable, text);
    case SOAP_EOM:
    case SOAP_LEVEL:
    case SOAP_FD_EXCEEDED:
      return Status(Code::kLimitExceeded, text);
    case SOAP_SYNTAX_ERROR:
    case SOAP_UTF_ERROR:
    case SOAP_END_TAG:
    case SOAP_IOB:
      return Status(Code::kMalformed, text);
    case SOAP_TAG_MISMATCH:
    case SOAP_TYPE:
    case SOAP_NO_TAG:
    case SOAP_MUSTUNDERSTAND:
    case SOAP_NAMESPACE:
    case SOAP_NULL:
    case SOAP_DUPLICATE_ID:
    case SOAP_MISSING_ID:
    case SOAP_HREF:
    case SOAP_VERSIONMISMATCH:
    case SOAP_REQUIRED:
    case SOAP_PROHIBITED:
    case SOAP_OCCURS:
    case SOAP_LENGTH:
    case SOAP_PATTERN:
    case SOAP_FIXED:
    case SOAP_EMPTY:
    case SOAP_NO_METHOD:
    case SOAP_NO_DATA:
      return Status(Code::kSchemaViolation, text);
    case SOAP_GET_METHOD:
    case SOAP_PUT_METHOD:
    case SOAP_PATCH_METHOD:
    case SOAP_DEL_METHOD:
    case SOAP_HTTP_METHOD:
      return Status(Code::kUnsupported, text);
    case SOAP_CLI_FAULT:
      return Status(Code::kInvalidArgument, text);
    default:
      return Status(Code::kInternal, text);
  }
}

xsd__base64Binary ToBase64Binary(struct soap* soap, ByteView data) {
  xsd__base64Binary out;
  out.soap_default(soap);
  out.__size = static_cast<int>(data.size());
  out.__ptr = static_cast<unsigned char*>(soap_malloc(soap, data.empty() ? 1 : data.size()));
  if (out.__ptr != nullptr && !data.empty()) std::memcpy(out.__ptr, data.data(), data.size());
  if (out.__ptr == nullptr) out.__size = 0;
  return out;
}

Bytes FromBase64Binary(const xsd__base64Binary& value) {
  if (value.__ptr == nullptr || value.__size <= 0) return {};
  return Bytes(value.__ptr, value.__ptr + value.__size);
}

}  // namespace tpmma::wsdl
