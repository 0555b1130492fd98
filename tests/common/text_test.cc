// SPDX-License-Identifier: GPL-2.0-or-later
// Text forms shared by the CLIs: what a caller-chosen string can do to a terminal.
#include "common/text.h"

#include <gtest/gtest.h>

namespace tpmma {
namespace {

// Issue #13, finding 4: a KeyId holding a line feed and ANSI escapes printed a forged line
// and ran the escapes in `ma-admin audit`.
TEST(EscapeForTerminal, ControlCharactersCannotForgeLinesOrRunEscapes) {
  EXPECT_EQ(EscapeForTerminal("ma-1\n2026-12-01 admin:root Delete ok"),
            "ma-1\\x0a2026-12-01 admin:root Delete ok");
  EXPECT_EQ(EscapeForTerminal("\x1b[2J\x1b[31mred"), "\\x1b[2J\\x1b[31mred");
  EXPECT_EQ(EscapeForTerminal("a\rb\tc\x7f"), "a\\x0db\\x09c\\x7f");
  EXPECT_EQ(EscapeForTerminal("csi \xc2\x9b"
                              "31m"),
            "csi \\u009b31m");
  // The escape character itself is escaped, so "\x0a" typed by a caller stays distinct.
  EXPECT_EQ(EscapeForTerminal("\\x0a"), "\\\\x0a");
  // Ordinary text and other UTF-8 (é, €, CJK) pass unchanged; a lone 0xc2 at the end too.
  EXPECT_EQ(EscapeForTerminal("Alice Müller € 田中"), "Alice Müller € 田中");
  EXPECT_EQ(EscapeForTerminal("x\xc2"), "x\xc2");
  EXPECT_EQ(EscapeForTerminal(""), "");
}

TEST(Text, Hex32AndUtc) {
  EXPECT_EQ(Hex32(0x81000001), "0x81000001");
  EXPECT_EQ(Hex32(1), "0x00000001");
  EXPECT_EQ(Utc(0), "1970-01-01T00:00:00Z");
}

}  // namespace
}  // namespace tpmma
