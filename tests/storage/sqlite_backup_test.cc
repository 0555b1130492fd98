// SPDX-License-Identifier: GPL-2.0-or-later
// The vault file as a whole (storage/sqlite_backup.h): an online backup taken while another
// thread keeps writing holds a prefix of the writes and verifies; a backup never replaces a
// file; restore round trip, and a damaged backup or a vault in use refused with the target
// untouched; the export's rows in the neutral shape.
#include <filesystem>

#include "storage/sqlite_backup.h"
#include "tests/storage/vault_fill.h"

namespace tpmma::storage::testing {
namespace {

namespace fs = std::filesystem;
using tpmma::testing::ReadFileOrDie;
using tpmma::testing::WriteFileOrDie;

class SqliteBackupTest : public SqliteVaultTest {
 protected:
  std::string Out() const { return dir_.File("backup.db"); }
  // Every file in the test directory: nothing half-written may be left behind.
  std::vector<std::string> Files() const {
    std::vector<std::string> out;
    for (const auto& e : fs::directory_iterator(dir_.path())) out.push_back(e.path().filename());
    std::sort(out.begin(), out.end());
    return out;
  }
};

TEST_F(SqliteBackupTest, BackupWhileAnotherThreadWritesHoldsAPrefixOfTheWrites) {
  auto v = OpenOrDie(Path());
  ASSERT_NO_FATAL_FAILURE(FillVault(*v));
  std::atomic<int> written{0};
  std::atomic<bool> stop{false};
  std::thread writer([&] {
    for (int i = 0; !stop.load(); ++i) {
      const std::string id = "live-" + std::to_string(i);
      if (!v->PutPackage(MakePackage(id, "p-old", 2, "<live " + id + "/>"), Audit("Upload", id))) {
        ADD_FAILURE() << "upload failed";
        return;
      }
      written.store(i + 1);
    }
  });
  while (written.load() < 20) std::this_thread::yield();
  const int before = written.load();
  auto report = BackupSqliteVault(Path(), Out());
  const int after = written.load();
  while (written.load() < after + 20) std::this_thread::yield();
  stop = true;
  writer.join();
  ASSERT_OK(report);

  ASSERT_OK_AND_ASSIGN(SqliteFileReport checked, CheckSqliteVaultFile(Out()));
  EXPECT_EQ(checked.chain.last_seq, report->chain.last_seq);
  EXPECT_EQ(checked.head_hash, report->head_hash);
  struct stat st {};
  ASSERT_EQ(::stat(Out().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);

  // A prefix: every record of the copy is the live vault's record of that seq, and the
  // live vault went on past it.
  auto copy = OpenOrDie(Out());
  ASSERT_OK_AND_ASSIGN(AuditHead live_head, v->GetAuditHead());
  EXPECT_GT(live_head.seq, report->chain.last_seq);
  for (int64_t seq = 1; seq <= report->chain.last_seq; ++seq) {
    ASSERT_OK_AND_ASSIGN(AuditRecord mine, copy->GetAuditRecord(seq));
    ASSERT_OK_AND_ASSIGN(AuditRecord theirs, v->GetAuditRecord(seq));
    ASSERT_EQ(mine.hash, theirs.hash) << "seq " << seq;
  }
  // The uploads in the copy: all of those acknowledged before it began, none after it ended,
  // and the first n of them (no gaps: each commit is in or out as a whole).
  int held = 0;
  while (copy->GetPackage("live-" + std::to_string(held)).has_value()) ++held;
  EXPECT_GE(held, before);
  EXPECT_LE(held, after + 1);
  EXPECT_CODE(copy->GetPackage("live-" + std::to_string(held + 1)), Code::kNotFound);
  ASSERT_OK_AND_ASSIGN(Package body, copy->GetPackage("pkg-2"));
  EXPECT_EQ(tpmma::ToString(body.body), "<body pkg-2/>");
  ASSERT_OK_AND_ASSIGN(Approval a, copy->GetApproval(1));
  EXPECT_EQ(a.state, ApprovalState::kActive);
}

// As with ma-server: the writer is another process, whose locks are the kernel's (within one
// process SQLite keeps its own books on them).
TEST_F(SqliteBackupTest, AnotherProcessWritingIsBackedUpAndItsVaultNotReplaced) {
  {
    auto v = OpenOrDie(Path());
    ASSERT_NO_FATAL_FAILURE(FillVault(*v));
  }
  int ready[2];
  ASSERT_EQ(::pipe(ready), 0);
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    // Child: no gtest assertions here, only exit codes. Uploads until killed.
    ::close(ready[0]);
    auto v = SqliteVault::Open(Path());
    if (!v) ::_exit(2);
    for (int i = 0;; ++i) {
      const std::string id = "child-" + std::to_string(i);
      if (!(*v)->PutPackage(MakePackage(id, "p-old", 1, "<c/>"), Audit("Upload", id))) ::_exit(3);
      if (i == 10 && ::write(ready[1], "x", 1) != 1) ::_exit(4);
    }
  }
  ::close(ready[1]);
  char c = 0;
  ASSERT_EQ(::read(ready[0], &c, 1), 1);
  ::close(ready[0]);
  auto report = BackupSqliteVault(Path(), Out());
  const Status in_use = CheckSqliteVaultNotInUse(Path());
  auto restore = RestoreSqliteVault(Out(), Path(), true);
  ::kill(pid, SIGKILL);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFSIGNALED(status)) << "child exited with " << WEXITSTATUS(status);

  ASSERT_OK(report);
  EXPECT_GT(report->chain.last_seq, 30);
  ASSERT_OK(CheckSqliteVaultFile(Out()));
  EXPECT_EQ(in_use.code(), Code::kUnavailable) << in_use.ToString();
  EXPECT_CODE(restore, Code::kUnavailable);
  auto v = OpenOrDie(Path());
  ASSERT_OK(v->IntegrityCheck());
  ASSERT_OK_AND_ASSIGN(AuditHead head, v->GetAuditHead());
  EXPECT_GE(head.seq, report->chain.last_seq);
}

TEST_F(SqliteBackupTest, BackupNeverReplacesAFileAndLeavesNothingOnFailure) {
  OpenOrDie(Path()).reset();
  WriteFileOrDie(Out(), ToBytes("precious"));
  const auto files = Files();
  EXPECT_CODE(BackupSqliteVault(Path(), Out()), Code::kAlreadyExists);
  EXPECT_EQ(tpmma::ToString(ReadFileOrDie(Out())), "precious");
  EXPECT_EQ(Files(), files);

  // A file that is no vault: refused, no temporary file left.
  WriteFileOrDie(dir_.File("other.db"), Bytes());
  EXPECT_CODE(BackupSqliteVault(dir_.File("other.db"), dir_.File("b2.db")), Code::kInvalidArgument);
  EXPECT_CODE(BackupSqliteVault(dir_.File("missing.db"), dir_.File("b3.db")), Code::kIoError);
  EXPECT_FALSE(fs::exists(dir_.File("missing.db")));
  auto now = Files();
  EXPECT_EQ(now.size(), files.size() + 1) << "only other.db is new";
}

TEST_F(SqliteBackupTest, RestoreRoundTrip) {
  Bytes head_hash;
  {
    auto v = OpenOrDie(Path());
    ASSERT_NO_FATAL_FAILURE(FillVault(*v));
    ASSERT_OK_AND_ASSIGN(SqliteFileReport r, BackupSqliteVault(Path(), Out()));
    head_hash = r.head_hash;
    ASSERT_OK(v->PutPackage(MakePackage("after", "p-old", 1, "<after/>"), Audit("Upload")));
  }
  EXPECT_CODE(RestoreSqliteVault(Out(), Path(), false), Code::kAlreadyExists);
  ASSERT_OK_AND_ASSIGN(SqliteFileReport restored, RestoreSqliteVault(Out(), Path(), true));
  EXPECT_EQ(restored.head_hash, head_hash);
  EXPECT_FALSE(fs::exists(Path() + "-wal"));

  auto v = OpenOrDie(Path());
  ASSERT_OK(v->IntegrityCheck());
  ASSERT_OK_AND_ASSIGN(AuditHead head, v->GetAuditHead());
  EXPECT_EQ(head.hash, head_hash);
  EXPECT_CODE(v->GetPackage("after"), Code::kNotFound);
  ASSERT_OK_AND_ASSIGN(Package p, v->GetPackage("pkg-1"));
  EXPECT_EQ(tpmma::ToString(p.body), "<body pkg-1/>");
  EXPECT_EQ(p.descriptor.keys.size(), 2u);
  // And it is a live vault again: writes go on from the restored head.
  ASSERT_OK(v->AppendAudit(Audit("AfterRestore")));
  ASSERT_OK(v->CheckAuditChain());

  // Into a place with no vault yet: no --force needed.
  ASSERT_OK(RestoreSqliteVault(Out(), dir_.File("fresh.db"), false));

  // Restored by root over a vault another user owns (ma-server's): the owner is kept.
  if (::geteuid() == 0) {
    v.reset();
    ASSERT_EQ(::chown(Path().c_str(), 65534, 65534), 0);
    ASSERT_OK(RestoreSqliteVault(Out(), Path(), true));
    struct stat st {};
    ASSERT_EQ(::stat(Path().c_str(), &st), 0);
    EXPECT_EQ(st.st_uid, 65534u);
    EXPECT_EQ(st.st_gid, 65534u);
    EXPECT_EQ(st.st_mode & 0777, 0600u);
  }
}

TEST_F(SqliteBackupTest, RestoreRefusesAVaultInUse) {
  auto v = OpenOrDie(Path());
  ASSERT_NO_FATAL_FAILURE(FillVault(*v));
  ASSERT_OK(BackupSqliteVault(Path(), Out()));
  EXPECT_CODE(RestoreSqliteVault(Out(), Path(), true), Code::kUnavailable);
  EXPECT_CODE(CheckSqliteVaultNotInUse(Path()), Code::kUnavailable);
  ASSERT_OK(v->AppendAudit(Audit("StillMine")));
  v.reset();
  ASSERT_OK(CheckSqliteVaultNotInUse(Path()));
}

TEST_F(SqliteBackupTest, RestoreRefusesADamagedBackupAndLeavesTheVaultUntouched) {
  {
    auto v = OpenOrDie(Path());
    ASSERT_NO_FATAL_FAILURE(FillVault(*v));
    ASSERT_OK(BackupSqliteVault(Path(), Out()));
    ASSERT_OK(v->AppendAudit(Audit("Newer")));
  }
  const Bytes vault_before = ReadFileOrDie(Path());
  const Bytes good = ReadFileOrDie(Out());

  Bytes truncated(good.begin(), good.begin() + good.size() / 2);
  WriteFileOrDie(dir_.File("truncated.db"), truncated);
  EXPECT_FALSE(RestoreSqliteVault(dir_.File("truncated.db"), Path(), true).has_value());

  // One byte of an audit record's detail: SQLite's page checks cannot see it, the chain can.
  Bytes flipped = good;
  const std::string needle = "RevokeApproval";
  auto at = std::search(flipped.begin(), flipped.end(), needle.begin(), needle.end());
  ASSERT_NE(at, flipped.end());
  *at ^= 0x20;
  WriteFileOrDie(dir_.File("flipped.db"), flipped);
  EXPECT_CODE(RestoreSqliteVault(dir_.File("flipped.db"), Path(), true), Code::kCorruption);

  // One byte of a package body: caught by its stored SHA-256.
  Bytes body = good;
  const std::string xml = "<body pkg-1/>";
  at = std::search(body.begin(), body.end(), xml.begin(), xml.end());
  ASSERT_NE(at, body.end());
  at[1] ^= 0x01;
  WriteFileOrDie(dir_.File("body.db"), body);
  EXPECT_CODE(CheckSqliteVaultFile(dir_.File("body.db")), Code::kCorruption);

  EXPECT_EQ(ReadFileOrDie(Path()), vault_before);
  auto v = OpenOrDie(Path());
  ASSERT_OK(v->CheckAuditChain());
}

class CollectingSink final : public CopySink {
 public:
  Status BeginTable(const CopyTable& table) override {
    tables.emplace_back(table.name);
    return Status();
  }
  Status Row(const CopyTable& table, const CopyRow& row) override {
    TPMMA_RETURN_IF_ERROR(CheckCopyRow(table, row));
    rows[std::string(table.name)].push_back(row);
    return Status();
  }
  std::vector<std::string> tables;
  std::map<std::string, std::vector<CopyRow>> rows;
};

TEST_F(SqliteBackupTest, ExportGivesEveryTableInTheNeutralShape) {
  {
    auto v = OpenOrDie(Path());
    ASSERT_NO_FATAL_FAILURE(FillVault(*v));
  }
  CollectingSink sink;
  ASSERT_OK(ExportSqliteVault(Path(), sink));
  ASSERT_EQ(sink.tables.size(), CopyTables().size());
  EXPECT_EQ(sink.tables.back(), "audit_log");
  std::map<std::string, std::string> states;
  for (const CopyRow& r : sink.rows["platforms"]) {
    states[std::get<std::string>(r[0])] = std::get<std::string>(r[6]);
  }
  EXPECT_EQ(states["p-pending"], "pending");
  EXPECT_EQ(states["p-gone"], "revoked");
  EXPECT_EQ(states["p-old"], "active");
  EXPECT_EQ(sink.rows["packages"].size(), 3u);
  EXPECT_EQ(sink.rows["package_keys"].size(), 6u);
  EXPECT_EQ(sink.rows["approval_packages"].size(), 2u);
  EXPECT_EQ(std::get<Bytes>(sink.rows["challenges"][0][0]), ToBytes("chal-1"));
  EXPECT_EQ(std::get<int64_t>(sink.rows["audit_log"][0][0]), 1);
  EXPECT_EQ(std::get<std::string>(sink.rows["audit_log"][0][3]), kAuditGenesisAction);
}

}  // namespace
}  // namespace tpmma::storage::testing
