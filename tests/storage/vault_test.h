// SPDX-License-Identifier: GPL-2.0-or-later
// The conformance suite every Vault backend must pass (vault_test.cc, CMake OBJECT library
// tpmma_vault_conformance: it depends on vault.h alone, no backend). A backend plugs in
// with one INSTANTIATE_TEST_SUITE_P giving a VaultBackend that opens, and reopens, a
// vault kept under a test directory, and links tpmma_vault_conformance into its test
// binary; see sqlite_vault_test.cc.
#pragma once

#include <functional>
#include <memory>
#include <ostream>
#include <string>

#include <gtest/gtest.h>

#include "storage/vault.h"
#include "tests/support/status_testing.h"
#include "tests/support/testutil.h"

namespace tpmma::storage::testing {

// Every vault's log starts with its genesis record (seq 1), before any caller's.
inline constexpr int64_t kGenesisRecords = 1;

struct VaultBackend {
  std::string name;
  // Opens the vault whose data lives under `dir` (creating it the first time).
  std::function<Result<std::unique_ptr<Vault>>(const std::string& dir)> open;
};

// Keeps ctest names readable ("... # GetParam() = Sqlite", not a byte dump).
inline void PrintTo(const VaultBackend& backend, std::ostream* os) {
  *os << backend.name;
}

inline std::string BackendName(const ::testing::TestParamInfo<VaultBackend>& info) {
  return info.param.name;
}

class VaultTest : public ::testing::TestWithParam<VaultBackend> {
 protected:
  void SetUp() override { ASSERT_NO_FATAL_FAILURE(Open()); }

  void Open() {
    auto v = GetParam().open(dir_.path());
    ASSERT_TRUE(v.has_value()) << v.error().ToString();
    vault_ = std::move(*v);
  }
  void Reopen() {
    vault_.reset();
    Open();
  }

  tpmma::testing::TempDir dir_;
  std::unique_ptr<Vault> vault_;
};

}  // namespace tpmma::storage::testing

#ifndef EXPECT_CODE
#define EXPECT_CODE(expr, c) EXPECT_EQ(::tpmma::internal::AsStatus((expr)).code(), (c)) << #expr
#endif
