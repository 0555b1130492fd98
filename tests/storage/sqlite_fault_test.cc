// SPDX-License-Identifier: GPL-2.0-or-later
// The vault under I/O faults, injected below SQLite by the fault VFS (sqlite_fault_vfs.h):
// a full disk and a failing fsync during PutPackage, and a file system gone read-only.
// In every case the failing call gets an error, nothing that was acknowledged is lost, the
// audit chain stays whole, and the vault works again once the fault is gone, without a
// restart.
#include "storage/counting_vault.h"
#include "tests/storage/sqlite_fault_vfs.h"
#include "tests/storage/sqlite_test_support.h"

namespace tpmma::storage::testing {
namespace {

class SqliteFaultTest : public SqliteVaultTest {
 protected:
  void SetUp() override {
    FaultVfs::Get().Clear();
    SqliteVaultOptions o;
    o.vfs = FaultVfs::kName;
    vault_ = OpenOrDie(Path(), std::move(o));
    ASSERT_TRUE(vault_);
    ASSERT_OK(vault_->UpsertPlatform(MakePlatform("p"), std::nullopt));
    ASSERT_OK(Put("acked-1"));
  }
  void TearDown() override { FaultVfs::Get().Clear(); }

  Result<PutOutcome> Put(const std::string& id) {
    return vault_->PutPackage(MakePackage(id, "p", 2, "<" + id + "/>"), Audit("Upload", id));
  }
  // After the fault: the vault takes writes again, and a reopen (default VFS, as a restart
  // would) has every acknowledged package and a whole chain.
  void ExpectRecovered(const std::vector<std::string>& acked) {
    ASSERT_OK(Put("after-fault"));
    ASSERT_OK(vault_->CheckAuditChain());
    vault_.reset();
    vault_ = OpenOrDie(Path());
    for (const std::string& id : acked) {
      SCOPED_TRACE(id);
      ASSERT_OK(vault_->GetPackage(id));
    }
    ASSERT_OK(vault_->GetPackage("after-fault"));
    ASSERT_OK(vault_->IntegrityCheck());
  }

  std::unique_ptr<SqliteVault> vault_;
};

TEST_F(SqliteFaultTest, DiskFullDuringPutPackageFailsOnlyThatCall) {
  const int before = FaultVfs::Get().failed_writes();
  FaultVfs::Get().FailWrites(SQLITE_FULL);
  auto r = Put("refused");
  ASSERT_FALSE(r.has_value()) << "a full disk acknowledged an upload";
  EXPECT_EQ(r.error().code(), Code::kIoError);
  EXPECT_NE(r.error().message().find("full"), std::string::npos) << r.error().message();
  EXPECT_GT(FaultVfs::Get().failed_writes(), before) << "the fault was never hit";
  // Reads still answer while the disk is full.
  ASSERT_OK(vault_->GetPackage("acked-1"));
  FaultVfs::Get().Clear();
  EXPECT_CODE(vault_->GetPackage("refused"), Code::kNotFound);
  ExpectRecovered({"acked-1"});
  EXPECT_CODE(vault_->GetPackage("refused"), Code::kNotFound);
}

TEST_F(SqliteFaultTest, FsyncFailureAtCommitIsNotAnAcknowledgement) {
  const int before = FaultVfs::Get().failed_syncs();
  FaultVfs::Get().FailSyncs(SQLITE_IOERR_FSYNC);
  auto r = Put("unsynced");
  ASSERT_FALSE(r.has_value()) << "an upload was acknowledged without its fsync";
  EXPECT_EQ(r.error().code(), Code::kIoError);
  EXPECT_GT(FaultVfs::Get().failed_syncs(), before);
  FaultVfs::Get().Clear();
  // The client retries: stored now, or already there (the WAL frames may have reached the
  // file before the failed fsync); either way the same package, no conflict.
  ASSERT_OK(Put("unsynced"));
  ExpectRecovered({"acked-1", "unsynced"});
}

TEST_F(SqliteFaultTest, ReadOnlyFileSystemRefusesWritesAndKeepsAnsweringReads) {
  FaultVfs::Get().FailWrites(SQLITE_READONLY);
  auto r = Put("refused");
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(vault_->AppendAudit(Audit("Refused")).has_value(), false);
  ASSERT_OK(vault_->GetPackage("acked-1"));
  ASSERT_OK(vault_->CheckAuditChain());
  AuditFilter f;
  ASSERT_OK(vault_->ListAudit(f));
  FaultVfs::Get().Clear();
  ExpectRecovered({"acked-1"});
}

TEST_F(SqliteFaultTest, DeferredAuditRecordsLostToAFullDiskAreCountedAndTheChainStaysWhole) {
  FaultVfs::Get().FailWrites(SQLITE_FULL);
  for (int i = 0; i < 10; ++i) ASSERT_OK(vault_->AppendAuditDeferred(Audit("Query")));
  ASSERT_OK(vault_->FlushDeferredAudit());
  EXPECT_EQ(vault_->GetStats().deferred_lost, 10u);
  FaultVfs::Get().Clear();
  ExpectRecovered({"acked-1"});
}

// VaultStats::errors (storage/counting_vault.h, ma-server's tpmma_vault_errors_total): a full
// disk's IoError counts, a refusal (NotFound) does not; the backend's counters pass through.
TEST_F(SqliteFaultTest, CountingVaultCountsFailuresNotRefusals) {
  CountingVault counted(vault_.get());
  EXPECT_CODE(counted.GetPackage("absent"), Code::kNotFound);
  EXPECT_EQ(counted.Stats().errors, 0u);
  FaultVfs::Get().FailWrites(SQLITE_FULL);
  auto r =
      counted.PutPackage(MakePackage("refused", "p", 2, "<refused/>"), Audit("Upload", "refused"));
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), Code::kIoError);
  FaultVfs::Get().Clear();
  VaultStats s = counted.Stats();
  EXPECT_EQ(s.errors, 1u);
  EXPECT_EQ(s.calls, vault_->GetStats().calls);
  EXPECT_EQ(s.commits, vault_->GetStats().commits);
  ASSERT_OK(counted.GetPackage("acked-1"));
  EXPECT_EQ(counted.Stats().errors, 1u);
  ExpectRecovered({"acked-1"});
}

}  // namespace
}  // namespace tpmma::storage::testing
