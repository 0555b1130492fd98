// SPDX-License-Identifier: GPL-2.0-or-later
// The patterns, from toml++ upstream and our own fuzzing of 3.3.0:
//  - marzer/tomlplusplus#190: is_non_ascii_horizontal_whitespace() reaches TOML_UNREACHABLE
//    for most code points in U+00A1..U+0499 and U+2D6E..U+3167. toml++ asks it of every
//    character outside strings and comments, and of the character after a backslash in a
//    multi-line basic string and after the whitespace a line-ending backslash skips.
//    TOML 1.0 allows non-ASCII only inside strings and comments, so we refuse it elsewhere,
//    and after a backslash (and its whitespace) in a multi-line basic string.
//  - marzer/tomlplusplus#294 (and the fix in PR #301): a table header whose first
//    character after "[" or "[[" (and blanks) is neither a bare-key character nor a quote
//    ("[&", "[[[1]]]", "[ &]") breaks parse_key()'s precondition.
#include "server/toml_guard.h"

#include <fmt/format.h>

#include <string>

namespace tpmma::server {

namespace {

bool IsBlank(char c) {
  return c == ' ' || c == '\t';
}
bool IsKeyStart(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
         c == '-' || c == '"' || c == '\'';
}

enum class State { kCode, kComment, kBasic, kLiteral, kMlBasic, kMlLiteral };

class Scanner {
 public:
  Scanner(std::string_view t, std::string_view origin) : t_(t), origin_(origin) {}

  Status Run() {
    for (i_ = 0; i_ < t_.size() && status_.ok(); ++i_) {
      const char c = t_[i_];
      if (c == '\n') ++line_;
      switch (state_) {
        case State::kCode:
          Code(c);
          break;
        case State::kComment:
          if (c == '\n') NewLine();
          break;
        case State::kBasic:
          if (c == '\\') {
            ++i_;  // a single-line string: toml++ asks nothing of the escaped character
          } else if (c == '"' || c == '\n') {
            state_ = State::kCode;
            if (c == '\n') NewLine();
          }
          break;
        case State::kLiteral:
          if (c == '\'' || c == '\n') state_ = State::kCode;
          if (c == '\n') NewLine();
          break;
        case State::kMlBasic:
          if (c == '\\') {
            Escape();
          } else if (t_.substr(i_, 3) == "\"\"\"") {
            i_ += 2;
            state_ = State::kCode;
          }
          break;
        case State::kMlLiteral:
          if (t_.substr(i_, 3) == "'''") {
            i_ += 2;
            state_ = State::kCode;
          }
          break;
      }
    }
    return status_;
  }

 private:
  void Fail(std::string_view what) {
    status_ = Status(Code::kInvalidArgument, fmt::format("{}:{}: {}", origin_, line_, what));
  }
  void NewLine() {
    state_ = State::kCode;
    line_start_ = depth_ == 0;
    header_line_ = false;
  }

  void Code(char c) {
    if (c == '\n') return NewLine();
    if (IsBlank(c) || c == '\r') return;
    const bool statement_start = line_start_;
    line_start_ = false;
    if (static_cast<unsigned char>(c) >= 0x80) {
      return Fail("a non-ASCII character outside a string or comment");
    }
    if (c == '#') {
      state_ = State::kComment;
    } else if (c == '"' || c == '\'') {
      const bool multi = t_.substr(i_, 3) == std::string(3, c);
      if (multi) i_ += 2;
      state_ = c == '"' ? (multi ? State::kMlBasic : State::kBasic)
                        : (multi ? State::kMlLiteral : State::kLiteral);
    } else if (c == '[' && statement_start) {
      size_t j = i_ + 1;
      if (j < t_.size() && t_[j] == '[') ++j;
      while (j < t_.size() && IsBlank(t_[j])) ++j;
      if (j >= t_.size() || !IsKeyStart(t_[j])) {
        return Fail("a table header must start with a key name");
      }
      header_line_ = true;
    } else if (c == '[' && !header_line_) {
      ++depth_;
    } else if (c == ']' && !header_line_ && depth_ > 0) {
      --depth_;
    }
  }

  // A backslash in a multi-line basic string: toml++ classifies the next character, and
  // after a line-ending backslash the first one past the whitespace it skips.
  void Escape() {
    size_t j = i_ + 1;
    while (j < t_.size() && (IsBlank(t_[j]) || t_[j] == '\r' || t_[j] == '\n')) {
      if (t_[j] == '\n') ++line_;
      ++j;
    }
    if (j < t_.size() && static_cast<unsigned char>(t_[j]) >= 0x80) {
      return Fail(
          "a non-ASCII character right after a backslash in a multi-line string (escape it "
          "as \\uXXXX)");
    }
    i_ = j == i_ + 1 ? j : j - 1;  // skip the escaped character, or the whitespace
  }

  std::string_view t_;
  std::string_view origin_;
  size_t i_ = 0;
  size_t line_ = 1;
  State state_ = State::kCode;
  bool line_start_ = true;
  bool header_line_ = false;
  int depth_ = 0;
  Status status_;
};

}  // namespace

Status CheckTomlAvoidsParserBugs(std::string_view text, std::string_view origin) {
  return Scanner(text, origin).Run();
}

}  // namespace tpmma::server
