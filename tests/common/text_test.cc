// SPDX-License-Identifier: GPL-2.0-or-later
// Text forms shared by the CLIs: what a caller-chosen string can do to a terminal.
#include "common/text.h"

#include <algorithm>
#include <string>

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

TEST(ForAudit, EscapesThenClipsWithoutCuttingAnEscapeOrACharacter) {
  EXPECT_EQ(ForAudit("k\n\x1b[31m"), "k\\x0a\\x1b[31m");
  EXPECT_EQ(ForAudit("short", 10), "short");
  EXPECT_EQ(ForAudit(std::string(20, 'a'), 10), "aaaaaaa...");
  // The cut would fall inside "\x1b" (bytes 5..8): the whole escape goes.
  EXPECT_EQ(ForAudit("abcde\x1bzzzz", 10), "abcde...");
  EXPECT_EQ(ForAudit("abcd\\\\zzzzz", 10), "abcd\\\\...");
  // ... or inside a 3-byte character.
  EXPECT_EQ(ForAudit("abcdef\xe2\x82\xac"
                     "zz",
                     10),
            "abcdef...");
  for (size_t max = 0; max < 40; ++max) {
    const std::string clipped =
        ForAudit("x\n\xe2\x82\xac\\\x1b\xc2\x9b" + std::string(30, 'y'), max);
    EXPECT_LE(clipped.size(), std::max<size_t>(max, 3));
    EXPECT_FALSE(HasControlCharacter(clipped)) << max;
  }
}

TEST(HasControlCharacter, C0DelAndC1) {
  EXPECT_TRUE(HasControlCharacter("a\nb"));
  EXPECT_TRUE(HasControlCharacter("\x1b[31m"));
  EXPECT_TRUE(HasControlCharacter(std::string("a\0b", 3)));
  EXPECT_TRUE(HasControlCharacter("\x7f"));
  EXPECT_TRUE(HasControlCharacter("\xc2\x9b"));
  EXPECT_FALSE(HasControlCharacter("ma-test é € 田中"));
  EXPECT_FALSE(HasControlCharacter(""));
}

TEST(Text, Hex32AndUtc) {
  EXPECT_EQ(Hex32(0x81000001), "0x81000001");
  EXPECT_EQ(Hex32(1), "0x00000001");
  EXPECT_EQ(Utc(0), "1970-01-01T00:00:00Z");
}

TEST(Text, ParseUtcTakesWhatUtcPrintsADateOrSeconds) {
  EXPECT_EQ(*ParseUtc("1970-01-02"), 86400);
  EXPECT_EQ(*ParseUtc("2026-11-30T12:00:00Z"), 1796040000);
  EXPECT_EQ(*ParseUtc(Utc(1796040000)), 1796040000);
  EXPECT_EQ(*ParseUtc("42"), 42);
  for (const char* bad : {"", "yesterday", "2026-11-30T12:00:00", "2026-11-30 ", "2026-13-01"}) {
    EXPECT_FALSE(ParseUtc(bad).has_value()) << bad;
  }
}

}  // namespace
}  // namespace tpmma
