// SPDX-License-Identifier: GPL-2.0-or-later
// A SQLite vault copied into PostgreSQL (storage/vault_copy.h, ExportSqliteVault into
// PostgresVault::ImportIntoEmpty) on a throw-away cluster (tests/support/postgres.h): the
// copy answers the same reads, keeps ids, times, the vault id, the genesis and every audit
// hash, and goes on as a vault; a non-empty target is refused and left unchanged; a copy
// that fails midway leaves the target as empty as it was.
#include <gtest/gtest.h>

#include "storage/postgres_vault.h"
#include "storage/sqlite_backup.h"
#include "tests/storage/vault_fill.h"
#include "tests/support/postgres.h"

namespace tpmma::storage::testing {
namespace {

using tpmma::testing::PostgresCluster;

class VaultCopyTest : public SqliteVaultTest {
 protected:
  void SetUp() override {
    if (std::string why = PostgresCluster::SkipReason(); !why.empty()) GTEST_SKIP() << why;
    auto c = PostgresCluster::Shared();
    ASSERT_OK(c);
    cluster_ = *c;
    db_ = std::string("copy_") + ::testing::UnitTest::GetInstance()->current_test_info()->name();
    for (char& ch : db_) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    ASSERT_OK(cluster_->DropDatabase(db_));
    ASSERT_OK(cluster_->CreateDatabase(db_));
    auto v = OpenOrDie(Path());
    ASSERT_NO_FATAL_FAILURE(FillVault(*v));
  }

  Result<PostgresImportReport> Import(std::function<Status(CopySink&)> source = {}) {
    if (!source) source = [&](CopySink& sink) { return ExportSqliteVault(Path(), sink); };
    return PostgresVault::ImportIntoEmpty(cluster_->ConnInfo(db_), {}, source);
  }
  std::string Tables() {
    auto n = cluster_->QueryValue(
        db_, "SELECT count(*) FROM pg_tables WHERE schemaname = current_schema()");
    return n ? *n : n.error().ToString();
  }

  PostgresCluster* cluster_ = nullptr;
  std::string db_;
};

std::vector<AuditRecord> AllAudit(Vault& v) {
  std::vector<AuditRecord> out;
  AuditFilter f;
  f.page_size = 7;  // several pages: the page tokens work on the copy too
  while (true) {
    auto page = v.ListAudit(f);
    EXPECT_TRUE(page.has_value()) << page.error().ToString();
    if (!page) return out;
    out.insert(out.end(), page->records.begin(), page->records.end());
    if (page->next_page_token.empty()) return out;
    f.page_token = page->next_page_token;
  }
}

void ExpectSameAudit(const AuditRecord& a, const AuditRecord& b) {
  EXPECT_EQ(a.seq, b.seq);
  EXPECT_EQ(a.event.time, b.event.time);
  EXPECT_EQ(a.event.action, b.event.action);
  EXPECT_EQ(a.event.detail, b.event.detail);
  EXPECT_EQ(a.prev_hash, b.prev_hash);
  EXPECT_EQ(a.hash, b.hash);
}

void ExpectSameReads(Vault& from, Vault& to) {
  for (const char* id : {"p-old", "p-new", "p-pending", "p-gone"}) {
    auto a = from.GetPlatform(id);
    auto b = to.GetPlatform(id);
    ASSERT_OK(a);
    ASSERT_OK(b);
    EXPECT_EQ(b->state, a->state) << id;
    EXPECT_EQ(b->ek_public, a->ek_public);
    EXPECT_EQ(b->signing_key_public, a->signing_key_public);
    EXPECT_EQ(b->ek_key_id, a->ek_key_id);
    EXPECT_EQ(b->created_at, a->created_at);
  }
  for (int i = 0; i < 3; ++i) {
    const std::string id = "pkg-" + std::to_string(i);
    ASSERT_OK_AND_ASSIGN(Package a, from.GetPackage(id));
    ASSERT_OK_AND_ASSIGN(Package b, to.GetPackage(id));
    EXPECT_EQ(b.body, a.body);
    EXPECT_EQ(b.descriptor.sha256, a.descriptor.sha256);
    EXPECT_EQ(b.descriptor.keys.size(), a.descriptor.keys.size());
    EXPECT_EQ(b.descriptor.uploaded_at, a.descriptor.uploaded_at);
    EXPECT_EQ(b.descriptor.wrap_key_id, a.descriptor.wrap_key_id);
    EXPECT_EQ(b.rewrap, a.rewrap);
  }
  ASSERT_OK_AND_ASSIGN(auto apps_a, from.ListApprovals("p-new"));
  ASSERT_OK_AND_ASSIGN(auto apps_b, to.ListApprovals("p-new"));
  ASSERT_EQ(apps_b.size(), apps_a.size());
  for (size_t i = 0; i < apps_a.size(); ++i) {
    EXPECT_EQ(apps_b[i].id, apps_a[i].id);
    EXPECT_EQ(apps_b[i].state, apps_a[i].state);
    EXPECT_EQ(apps_b[i].package_ids, apps_a[i].package_ids);
    EXPECT_EQ(apps_b[i].confirmed_by, apps_a[i].confirmed_by);
  }
  ASSERT_OK_AND_ASSIGN(auto ops, to.ListOperators());
  EXPECT_EQ(ops.size(), 2u);
  ASSERT_OK_AND_ASSIGN(auto regs, to.ListRegistrations());
  EXPECT_EQ(regs.size(), 1u);
  EXPECT_CODE(to.GetSession(Bytes(32, 2), kNow), Code::kOk);
  auto a = AllAudit(from);
  auto b = AllAudit(to);
  ASSERT_EQ(b.size(), a.size());
  for (size_t i = 0; i < a.size(); ++i) ExpectSameAudit(a[i], b[i]);
}

TEST_F(VaultCopyTest, CopyAnswersTheSameReadsAndKeepsTheChain) {
  ASSERT_OK_AND_ASSIGN(SqliteFileReport source, CheckSqliteVaultFile(Path()));
  ASSERT_OK_AND_ASSIGN(PostgresImportReport imported, Import());
  EXPECT_EQ(imported.chain.vault_id, source.chain.vault_id);
  EXPECT_EQ(imported.chain.last_seq, source.chain.last_seq);
  EXPECT_EQ(imported.head_hash, source.head_hash);

  auto sqlite = OpenOrDie(Path());
  ASSERT_OK_AND_ASSIGN(auto pg, PostgresVault::Open(cluster_->ConnInfo(db_)));
  ASSERT_OK_AND_ASSIGN(AuditChainReport chain, pg->CheckAuditChain());
  EXPECT_EQ(chain.genesis_seq, 1);
  ASSERT_OK(pg->IntegrityCheck());
  ASSERT_OK_AND_ASSIGN(AuditHead a, sqlite->GetAuditHead());
  ASSERT_OK_AND_ASSIGN(AuditHead b, pg->GetAuditHead());
  EXPECT_EQ(b.vault_id, a.vault_id);
  EXPECT_EQ(b.seq, a.seq);
  EXPECT_EQ(b.hash, a.hash);
  ASSERT_NO_FATAL_FAILURE(ExpectSameReads(*sqlite, *pg));

  // A vault from here on: the head moves by appends again, ids go on past the copied ones.
  ASSERT_OK_AND_ASSIGN(int64_t seq, pg->AppendAudit(Audit("AfterMigrate")));
  EXPECT_EQ(seq, a.seq + 1);
  ASSERT_OK(pg->PutPackage(MakePackage("pkg-new", "p-new", 1, "<new/>"), Audit("Upload")));
  ApprovalRequest r{"p-old", "p-new", true, {}, "again", "alice", kNow, kNow + 60, false};
  ASSERT_OK_AND_ASSIGN(Approval next, pg->CreateApproval(r, Audit("ApproveRestore")));
  EXPECT_EQ(next.id, 3);
  ASSERT_OK(pg->CheckAuditChain());
}

// An archived stretch (the genesis among it) and an inventory row: the segment and the
// live records after it are copied as they are, and PostgreSQL's check accepts them.
TEST_F(VaultCopyTest, ArchivedSegmentsAndInventoryAreCopied) {
  {
    auto v = OpenOrDie(Path());
    AuditEvent archive{kNow, "system", std::string(kAuditArchiveAction), "10", "ok", "test"};
    ASSERT_OK(v->ArchiveAudit(10, Bytes(32, 0xaa), archive));
    ASSERT_OK(v->AppendAudit(Audit("AfterArchive")));
  }
  {
    RawDb raw(Path());
    ASSERT_EQ(raw.Exec("INSERT INTO platform_inventory (platform_id, hostname, serial_number, "
                       "reported_at) VALUES ('p-old', 'alice-laptop', 'SN1', 1800000000)"),
              "");
  }
  ASSERT_OK_AND_ASSIGN(PostgresImportReport imported, Import());
  EXPECT_EQ(imported.chain.archived_through, 10);
  EXPECT_EQ(imported.chain.first_seq, 11);
  ASSERT_OK_AND_ASSIGN(auto pg, PostgresVault::Open(cluster_->ConnInfo(db_)));
  ASSERT_OK_AND_ASSIGN(auto segments, pg->ListAuditSegments());
  ASSERT_EQ(segments.size(), 1u);
  EXPECT_EQ(segments[0].archive_sha256, Bytes(32, 0xaa));
  ASSERT_OK_AND_ASSIGN(PlatformInventory inv, pg->GetPlatformInventory("p-old"));
  EXPECT_EQ(inv.hostname, "alice-laptop");
  EXPECT_EQ(inv.serial_number, "SN1");
  EXPECT_TRUE(inv.os_name.empty());
  ASSERT_OK_AND_ASSIGN(auto found, pg->FindPlatforms("ALICE", 10));
  ASSERT_EQ(found.size(), 1u);
  ASSERT_OK(pg->AppendAudit(Audit("OnPostgres")));
  ASSERT_OK(pg->CheckAuditChain());
}

// A vault with nothing but its genesis record: no ids to move the sequences past.
TEST_F(VaultCopyTest, AFreshVaultIsCopied) {
  const std::string fresh = dir_.File("fresh.db");
  OpenOrDie(fresh).reset();
  ASSERT_OK_AND_ASSIGN(PostgresImportReport imported,
                       Import([&](CopySink& sink) { return ExportSqliteVault(fresh, sink); }));
  EXPECT_EQ(imported.chain.last_seq, 1);
  ASSERT_OK_AND_ASSIGN(auto pg, PostgresVault::Open(cluster_->ConnInfo(db_)));
  ASSERT_OK(pg->UpsertPlatform(MakePlatform("p"), std::nullopt));
  ASSERT_OK(pg->PutPackage(MakePackage("first", "p", 1, "<f/>"), Audit("Upload")));
  ApprovalRequest r{"p", "q", true, {}, "x", "alice", kNow, kNow + 60, false};
  ASSERT_OK_AND_ASSIGN(Approval a, pg->CreateApproval(r, Audit("ApproveRestore")));
  EXPECT_EQ(a.id, 1);
  ASSERT_OK(pg->CheckAuditChain());
}

TEST_F(VaultCopyTest, NonEmptyTargetIsRefusedAndLeftUnchanged) {
  std::string vault_id;
  {
    ASSERT_OK_AND_ASSIGN(auto pg, PostgresVault::Open(cluster_->ConnInfo(db_)));
    ASSERT_OK(pg->AppendAudit(Audit("Mine")));
    ASSERT_OK_AND_ASSIGN(AuditHead h, pg->GetAuditHead());
    vault_id = HexEncode(h.vault_id);
  }
  EXPECT_CODE(Import(), Code::kAlreadyExists);
  EXPECT_EQ(*cluster_->QueryValue(db_, "SELECT count(*) FROM audit_log"), "2");
  EXPECT_EQ(*cluster_->QueryValue(db_, "SELECT encode(value, 'hex') FROM vault_meta"), vault_id);

  ASSERT_OK(cluster_->DropDatabase(db_));
  ASSERT_OK(cluster_->CreateDatabase(db_));
  ASSERT_OK(cluster_->Exec(db_, "CREATE TABLE theirs (x int)"));
  EXPECT_CODE(Import(), Code::kInvalidArgument);
  EXPECT_EQ(Tables(), "1");
}

TEST_F(VaultCopyTest, ARowTheTargetRefusesLeavesItEmpty) {
  {
    // SQLite stores any bytes in TEXT; PostgreSQL's text is UTF-8 and refuses this label.
    auto v = OpenOrDie(Path());
    Package p = MakePackage("pkg-bad", "p-old", 1, "<bad/>");
    p.descriptor.keys[0].label = "caf\xff";
    ASSERT_OK(v->PutPackage(p, Audit("Upload", "pkg-bad")));
  }
  auto r = Import();
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), Code::kInvalidArgument) << r.error().ToString();
  EXPECT_NE(r.error().message().find("package_keys"), std::string::npos) << r.error().message();
  EXPECT_EQ(Tables(), "0");
}

TEST_F(VaultCopyTest, ASourceFailingMidwayLeavesTheTargetEmpty) {
  class FailAfter final : public CopySink {
   public:
    explicit FailAfter(CopySink* next) : next_(next) {}
    Status BeginTable(const CopyTable& t) override { return next_->BeginTable(t); }
    Status Row(const CopyTable& t, const CopyRow& row) override {
      if (t.name == "audit_log" && ++audit_ == 5) return Status(Code::kIoError, "disk gone");
      return next_->Row(t, row);
    }

   private:
    CopySink* next_;
    int audit_ = 0;
  };
  auto r = Import([&](CopySink& sink) {
    FailAfter f(&sink);
    return ExportSqliteVault(Path(), f);
  });
  EXPECT_CODE(r, Code::kIoError);
  EXPECT_EQ(Tables(), "0");
  // And the same database takes the copy afterwards.
  ASSERT_OK(Import());
}

}  // namespace
}  // namespace tpmma::storage::testing
