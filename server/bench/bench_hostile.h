// SPDX-License-Identifier: GPL-2.0-or-later
// The hostile requests of ma-bench's mix mode (--mix, op "hostile"): bodies an attacker
// would send (issue #13), each with the refusal the server must answer it with. A request
// answered otherwise counts as an error of its kind, so a soak shows both that the server
// stays up under them and that none of them starts being accepted.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace tpmma::bench {

struct HostileRequest {
  std::string kind;  // "attributes", "doctype", ... (the counter's name)
  // The POST body; with header_only, nothing of it is sent but its declared length.
  std::string body;
  // Only the request header is sent, declaring Content-Length `declared_length`: the
  // server must refuse it on the header, before reading a byte of the body.
  bool header_only = false;
  uint64_t declared_length = 0;
  unsigned status = 500;   // the expected HTTP status
  std::string fault_code;  // the expected MAFault <ma:Code>; empty: no SOAP body expected
  bool closes = false;     // the server closes the connection after this answer
  std::string forbidden;   // must not appear in the answer (a leak, the wrong SOAP version)
};

// Every kind once, built for a server whose limits.max_body_bytes is `max_body_bytes`.
std::vector<HostileRequest> MakeHostileRequests(uint64_t max_body_bytes);
std::string HostileKinds();

// Whether the answer is the expected refusal; if not, *why says what came instead.
bool HostileAnswered(const HostileRequest& h, unsigned status, std::string_view body,
                     bool keep_alive, std::string* why);

}  // namespace tpmma::bench
