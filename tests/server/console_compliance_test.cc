// SPDX-License-Identifier: GPL-2.0-or-later
// The compliance view's "no backup in N days" list, which the browser test cannot reach (its
// uploads are minutes old and N is at least a day): the page functions called in-process on
// a real SQLite vault whose packages were uploaded 40 and 2 days ago.
#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "common/env.h"
#include "common/text.h"
#include "server/approvals.h"
#include "server/console/form.h"
#include "server/console/pages.h"
#include "server/operator_operations.h"
#include "storage/sqlite_vault.h"
#include "tests/support/testutil.h"

namespace tpmma::server::console {
namespace {

constexpr int64_t kDay = 86400;
const std::string kFingerprint(64, 'a');

class ConsoleComplianceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto v = storage::SqliteVault::Open(dir_.File("vault.db"));
    ASSERT_TRUE(v.has_value()) << v.error().ToString();
    vault_ = std::move(*v);
    ops_ = std::make_unique<OperatorOperations>(vault_.get(), env_, ApprovalRules{});
    now_ = env_->NowUnixSeconds();
    me_ = {.name = "audrey",
           .role = storage::OperatorRole::kAuditor,
           .cert_fingerprint = kFingerprint,
           .created_at = now_,
           .revoked_at = std::nullopt};
    ASSERT_TRUE(vault_->AddOperator(me_, Event("AddOperator", "audrey")).ok());
    AddPlatform("p-stale", now_ - 40 * kDay);
    AddPlatform("p-fresh", now_ - 2 * kDay);
    AddPlatform("p-never", 0);
    AddPlatform("p-revoked", now_ - 100 * kDay);
    ASSERT_TRUE(vault_->RevokePlatform("p-revoked", Event("RevokePlatform", "p-revoked")).ok());
  }

  storage::AuditEvent Event(std::string action, std::string object) const {
    return {now_, "system", std::move(action), std::move(object), "ok", "test"};
  }

  // A platform, and a package uploaded at `uploaded_at` unless that is 0.
  void AddPlatform(const std::string& id, int64_t uploaded_at) {
    storage::Platform p;
    p.id = id;
    p.ek_public = ToBytes("ek-" + id);
    p.ak_public = ToBytes("ak");
    p.ak_name = ToBytes("ak-" + id);
    p.created_at = now_ - 200 * kDay;
    p.last_seen_at = now_;
    ASSERT_TRUE(vault_->UpsertPlatform(p, std::nullopt).has_value());
    if (uploaded_at == 0) return;
    storage::Package pkg;
    pkg.descriptor.package_id = "pkg-" + id;
    pkg.descriptor.source_platform_id = id;
    pkg.descriptor.format_version = "1.0";
    pkg.descriptor.created_at = uploaded_at;
    pkg.descriptor.uploaded_at = uploaded_at;
    pkg.body = ToBytes("<Package id='" + id + "'/>");
    pkg.descriptor.sha256 = testing::Sha256Of(pkg.body);
    ASSERT_TRUE(vault_->PutPackage(pkg, Event("Upload", id)).has_value());
  }

  // The CSV for `query` ("days=30"), as the console serves it to this auditor.
  Result<std::string> Csv(const std::string& query) {
    TPMMA_ASSIGN_OR_RETURN(Form form, Form::Parse(query));
    WebRequest web;
    web.method = "GET";
    web.target = "/console/compliance.csv?" + query;
    RequestInfo info;
    info.peer = "127.0.0.1:1";
    info.client_cert_fingerprint = kFingerprint;
    PageRequest r{.web = web,
                  .info = info,
                  .form = form,
                  .me = me_,
                  .csrf = "",
                  .ops = ops_.get(),
                  .env = env_};
    TPMMA_ASSIGN_OR_RETURN(Page page, ComplianceCsv(r));
    return page.raw_body;
  }

  testing::TempDir dir_;
  Env* env_ = Env::Default();
  std::unique_ptr<storage::SqliteVault> vault_;
  std::unique_ptr<OperatorOperations> ops_;
  storage::Operator me_;
  int64_t now_ = 0;
};

TEST_F(ConsoleComplianceTest, ABackupOlderThanNDaysIsListedAndANewerOneIsNot) {
  auto month = Csv("days=30");
  ASSERT_TRUE(month.has_value()) << month.error().ToString();
  EXPECT_NE(month->find("\r\nno-recent-backup,\"p-stale\","), std::string::npos) << *month;
  EXPECT_NE(month->find("\r\nnever-backed-up,\"p-never\","), std::string::npos) << *month;
  EXPECT_NE(month->find("\r\nrevoked,\"p-revoked\","), std::string::npos) << *month;
  EXPECT_EQ(month->find("p-fresh"), std::string::npos)
      << "a backup 2 days old is recent in a 30-day view";
  EXPECT_NE(month->find(Utc(now_ - 40 * kDay)), std::string::npos) << "no last backup time";

  auto quarter = Csv("days=60");
  ASSERT_TRUE(quarter.has_value()) << quarter.error().ToString();
  EXPECT_EQ(quarter->find("p-stale"), std::string::npos) << "40 days is within 60";
  EXPECT_NE(quarter->find("never-backed-up,\"p-never\""), std::string::npos);

  auto today = Csv("days=1");
  ASSERT_TRUE(today.has_value());
  EXPECT_NE(today->find("no-recent-backup,\"p-fresh\""), std::string::npos)
      << "a backup 2 days old is not within the last day";
}

TEST_F(ConsoleComplianceTest, AnImpossiblePeriodIsRefusedInWords) {
  for (const char* bad : {"days=0", "days=3651", "days=-1", "days=month"}) {
    auto csv = Csv(bad);
    ASSERT_FALSE(csv.has_value()) << bad;
    EXPECT_EQ(csv.error().code(), Code::kInvalidArgument) << bad;
  }
}

}  // namespace
}  // namespace tpmma::server::console
