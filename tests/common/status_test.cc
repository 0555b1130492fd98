// SPDX-License-Identifier: GPL-2.0-or-later
#include "common/status.h"

#include <gtest/gtest.h>

#include <set>

namespace tpmma {
namespace {

Result<int> Half(int x) {
  if (x % 2 != 0) return Error(Code::kInvalidArgument, "odd: " + std::to_string(x));
  return x / 2;
}

Result<int> Quarter(int x) {
  TPMMA_ASSIGN_OR_RETURN(int h, Half(x));
  TPMMA_ASSIGN_OR_RETURN(int q, Half(h));
  return q;
}

Status CheckQuarter(int x) {
  TPMMA_RETURN_IF_ERROR(Quarter(x));
  return Status::Ok();
}

TEST(StatusTest, OkAndError) {
  EXPECT_TRUE(Status().ok());
  Status s(Code::kNotFound, "package 42");
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(s.ToString(), "NotFound: package 42");
  EXPECT_EQ(s.WithContext("Download").ToString(), "NotFound: Download: package 42");
}

TEST(StatusTest, MacrosPropagateFirstError) {
  EXPECT_EQ(*Quarter(8), 2);
  auto r = Quarter(6);  // 6/2 = 3, then odd
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), Code::kInvalidArgument);
  EXPECT_EQ(r.error().message(), "odd: 3");
  EXPECT_TRUE(CheckQuarter(4).ok());
  EXPECT_EQ(CheckQuarter(5).code(), Code::kInvalidArgument);
}

TEST(StatusTest, CodeNamesAreStableAndDistinct) {
  // These strings are on the wire: changing one breaks clients.
  EXPECT_EQ(CodeName(Code::kSchemaViolation), "SchemaViolation");
  EXPECT_EQ(CodeName(Code::kUnauthenticated), "Unauthenticated");
  std::set<std::string_view> names;
  for (int c = 0; c <= static_cast<int>(Code::kInternal); ++c) {
    names.insert(CodeName(static_cast<Code>(c)));
  }
  EXPECT_EQ(names.size(), static_cast<size_t>(Code::kInternal) + 1);
  for (int c = 0; c <= static_cast<int>(Code::kInternal); ++c) {
    EXPECT_EQ(CodeFromName(CodeName(static_cast<Code>(c))), static_cast<Code>(c));
  }
  EXPECT_EQ(CodeFromName("NoSuchCode"), Code::kInternal);
  EXPECT_EQ(CodeFromName("schemaviolation"), Code::kInternal);  // names are case-sensitive
}

}  // namespace
}  // namespace tpmma
