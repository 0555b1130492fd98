// SPDX-License-Identifier: GPL-2.0-or-later
#include "common/env.h"

#include <sys/stat.h>

#include <gtest/gtest.h>

#include "tests/support/testutil.h"

namespace tpmma {
namespace {

TEST(EnvTest, AtomicWriteReadAndMode) {
  testing::TempDir dir;
  Env* env = Env::Default();
  std::string path = dir.File("sub/dir/key.pem");
  ASSERT_TRUE(env->CreateDirs(dir.File("sub/dir"), 0700).ok());
  ASSERT_TRUE(env->WriteFileAtomic(path, View("first"), 0600).ok());
  ASSERT_TRUE(env->WriteFileAtomic(path, View("second"), 0600).ok());
  EXPECT_EQ(*env->ReadFile(path, 100), ToBytes("second"));
  struct stat st;
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  auto names = env->ListDir(dir.File("sub/dir"));
  ASSERT_TRUE(names.has_value());
  EXPECT_EQ(*names, std::vector<std::string>{"key.pem"});  // no temp file left behind
}

TEST(EnvTest, ReadLimitsAndMissingFiles) {
  testing::TempDir dir;
  Env* env = Env::Default();
  ASSERT_TRUE(env->WriteFileAtomic(dir.File("f"), View("0123456789"), 0644).ok());
  EXPECT_EQ(env->ReadFile(dir.File("f"), 9).error().code(), Code::kLimitExceeded);
  EXPECT_EQ(env->ReadFile(dir.File("missing"), 9).error().code(), Code::kNotFound);
  EXPECT_EQ(env->RemoveFile(dir.File("missing")).code(), Code::kNotFound);
  EXPECT_TRUE(env->RemoveFile(dir.File("f")).ok());
  EXPECT_FALSE(env->FileExists(dir.File("f")));
}

TEST(EnvTest, FailedRenameLeavesNoTempFile) {
  testing::TempDir dir;
  Env* env = Env::Default();
  // A directory where the file should go makes rename() fail even for root.
  ASSERT_TRUE(env->CreateDirs(dir.File("target"), 0700).ok());
  Status s = env->WriteFileAtomic(dir.File("target"), View("new"), 0600);
  EXPECT_EQ(s.code(), Code::kIoError);
  EXPECT_NE(s.message().find("rename"), std::string::npos) << s.ToString();
  EXPECT_EQ(*env->ListDir(dir.path()), std::vector<std::string>{"target"});
}

// Replacing a device or FIFO by rename would put a regular file in its place (as root, even
// /dev/null): refused, and the FIFO is still a FIFO.
TEST(EnvTest, AtomicWriteRefusesDevicesAndFifos) {
  testing::TempDir dir;
  Env* env = Env::Default();
  ASSERT_EQ(::mkfifo(dir.File("fifo").c_str(), 0600), 0);
  Status s = env->WriteFileAtomic(dir.File("fifo"), View("x"), 0600);
  EXPECT_EQ(s.code(), Code::kInvalidArgument) << s.ToString();
  EXPECT_NE(s.message().find("device or FIFO"), std::string::npos) << s.ToString();
  struct stat st {};
  ASSERT_EQ(::stat(dir.File("fifo").c_str(), &st), 0);
  EXPECT_TRUE(S_ISFIFO(st.st_mode));
  EXPECT_EQ(*env->ListDir(dir.path()), std::vector<std::string>{"fifo"});
}

}  // namespace
}  // namespace tpmma
