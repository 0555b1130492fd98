// SPDX-License-Identifier: GPL-2.0-or-later
// gtest assertions for Status and Result<T>: the failure message is the expression and the
// Status (code and words), never just "false".
#pragma once

#include <gtest/gtest.h>

#include <utility>

#include "common/status.h"

// Status or Result<T>: must be ok.
#define ASSERT_OK(expr)                                                 \
  do {                                                                  \
    auto&& s_ = (expr);                                                 \
    ASSERT_TRUE(::tpmma::internal::AsStatus(s_).ok())                   \
        << #expr << ": " << ::tpmma::internal::AsStatus(s_).ToString(); \
  } while (0)

// lhs = the value of a Result<T> that must be ok.
#define ASSERT_OK_AND_ASSIGN_IMPL(tmp, lhs, expr)                          \
  auto tmp = (expr);                                                       \
  ASSERT_TRUE(tmp.has_value()) << #expr << ": " << tmp.error().ToString(); \
  lhs = std::move(*tmp)
#define ASSERT_OK_AND_ASSIGN(lhs, expr) \
  ASSERT_OK_AND_ASSIGN_IMPL(TPMMA_CONCAT(result_, __LINE__), lhs, expr)
