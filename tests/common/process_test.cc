// SPDX-License-Identifier: GPL-2.0-or-later
#include "common/process.h"

#include <gtest/gtest.h>

namespace tpmma {
namespace {

TEST(RunProcess, FeedsStdinAndCollectsBothStreamsAndTheExitCode) {
  const std::string input = "a secret on stdin, never on argv\n";
  ProcessOptions o;
  o.input = ByteView(reinterpret_cast<const uint8_t*>(input.data()), input.size());
  o.extra_env = {"TPMMA_PROCESS_TEST=seen"};
  auto r = RunProcess({"/bin/sh", "-c", "cat; echo \"$TPMMA_PROCESS_TEST\" >&2; exit 3"}, o);
  ASSERT_TRUE(r.has_value()) << r.error().ToString();
  EXPECT_EQ(r->exit_code, 3);
  EXPECT_EQ(r->out, input);
  EXPECT_EQ(r->err, "seen\n");
}

TEST(RunProcess, LargeInputAndOutputDoNotDeadlock) {
  std::string input(1 << 20, 'x');  // more than a pipe holds, both ways
  ProcessOptions o;
  o.input = ByteView(reinterpret_cast<const uint8_t*>(input.data()), input.size());
  o.max_output = 2 << 20;
  auto r = RunProcess({"cat"}, o);
  ASSERT_TRUE(r.has_value()) << r.error().ToString();
  EXPECT_EQ(r->out.size(), input.size());
}

TEST(RunProcess, AChildThatIgnoresStdinDoesNotKillUs) {
  std::string input(1 << 20, 'x');
  ProcessOptions o;
  o.input = ByteView(reinterpret_cast<const uint8_t*>(input.data()), input.size());
  auto r = RunProcess({"true"}, o);  // exits without reading: SIGPIPE for a naive writer
  ASSERT_TRUE(r.has_value()) << r.error().ToString();
  EXPECT_EQ(r->exit_code, 0);
}

TEST(RunProcess, FailuresAreSaidInWords) {
  auto missing = RunProcess({"/nonexistent/tpmma-helper"});
  if (missing.has_value()) {
    // Under valgrind posix_spawn is fork+exec: the failed exec is the child's exit 127.
    EXPECT_EQ(missing->exit_code, 127);
  } else {
    EXPECT_EQ(missing.error().code(), Code::kUnavailable);
    EXPECT_NE(missing.error().message().find("cannot run /nonexistent/tpmma-helper"),
              std::string::npos);
  }

  ProcessOptions slow;
  slow.timeout_ms = 200;
  auto timed_out = RunProcess({"sleep", "30"}, slow);
  ASSERT_FALSE(timed_out.has_value());
  EXPECT_EQ(timed_out.error().code(), Code::kUnavailable);
  EXPECT_NE(timed_out.error().message().find("timed out"), std::string::npos);

  ProcessOptions small;
  small.max_output = 1000;
  auto chatty = RunProcess({"/bin/sh", "-c", "yes | head -c 100000"}, small);
  ASSERT_FALSE(chatty.has_value());
  EXPECT_EQ(chatty.error().code(), Code::kLimitExceeded);

  auto killed = RunProcess({"/bin/sh", "-c", "kill -9 $$"});
  ASSERT_TRUE(killed.has_value());
  EXPECT_EQ(killed->exit_code, 128 + 9);
  EXPECT_FALSE(RunProcess({}).has_value());
}

}  // namespace
}  // namespace tpmma
