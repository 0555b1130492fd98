// SPDX-License-Identifier: GPL-2.0-or-later
// Small text forms that several folders print the same way (CLI output, error messages).
#pragma once

#include <concepts>
#include <cstdint>
#include <string>
#include <string_view>

#include "common/status.h"

namespace tpmma {

namespace text_internal {
inline void AppendPiece(std::string& out, std::string_view s) {
  out += s;
}
inline void AppendPiece(std::string& out, const char* s) {
  out += s;
}
inline void AppendPiece(std::string& out, const std::string& s) {
  out += s;
}
template <std::integral T>
void AppendPiece(std::string& out, T v) {
  out += std::to_string(v);
}
}  // namespace text_internal

// Strings and integers run together: Cat("seq ", 5, " missing"). g++ 12 has no <format>;
// this keeps error messages readable where they are built.
template <typename... Args>
std::string Cat(const Args&... args) {
  std::string out;
  (text_internal::AppendPiece(out, args), ...);
  return out;
}

// A TPM handle or NV index as tpm2-tools prints it: "0x81000001" (always 8 hex digits).
std::string Hex32(uint32_t v);

// Unix seconds as "YYYY-MM-DDTHH:MM:SSZ" (UTC), the form the package format and every
// JSON output use; a value gmtime cannot represent comes back as its decimal number.
std::string Utc(int64_t unix_seconds);
// Back: "YYYY-MM-DDTHH:MM:SSZ", "YYYY-MM-DD" (its midnight, UTC) or Unix seconds;
// kInvalidArgument with the accepted forms otherwise.
Result<int64_t> ParseUtc(std::string_view text);

// `s` safe to print on one line of a terminal: C0 controls (line feeds and ESC included), DEL
// and C1 controls (U+0080..U+009F, CSI among them) become visible escapes such as "\x1b" and
// "\u009b", and a backslash becomes "\\", so a caller-chosen string (a KeyId, an audit
// detail) can neither forge a line nor run a terminal escape. Other UTF-8 passes unchanged.
std::string EscapeForTerminal(std::string_view s);

// True if `s` holds a character EscapeForTerminal would escape as a control: C0 (line
// feed, ESC, NUL, ...), DEL or a C1 control. Identifiers from the wire are refused on it.
bool HasControlCharacter(std::string_view s);

// The form of a caller-chosen string (a KeyId, a reason, a refusal message quoting one) that
// an audit row stores: EscapeForTerminal's escapes, so the vault never holds a raw control
// character, then clipped to at most `max_bytes` bytes (an escape or a UTF-8 sequence is never
// cut in half) with "..." marking the cut. One forged line cannot reach any reader of the log.
std::string ForAudit(std::string_view s, size_t max_bytes = 1000);

}  // namespace tpmma
