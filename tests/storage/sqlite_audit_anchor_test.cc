// SPDX-License-Identifier: GPL-2.0-or-later
// What anchors the audit log inside the file (schema 6): the genesis record, the checks of
// the append-only triggers, archived segments, and what raw SQL on the file can and cannot
// get past CheckAuditChain. What only a signed checkpoint catches (a cut tail, a re-chained
// log) is tested with the checkpoints, in tests/server/audit_checkpoint_test.cc.
#include "tests/storage/sqlite_test_support.h"

namespace tpmma::storage::testing {
namespace {

class AuditAnchorTest : public SqliteVaultTest {
 protected:
  std::unique_ptr<SqliteVault> OpenWith(int records) {
    auto v = OpenOrDie(Path());
    for (int i = 0; i < records; ++i) {
      EXPECT_TRUE(v->AppendAudit(Audit("Op" + std::to_string(i))).has_value());
    }
    return v;
  }
  static void ExpectCorruption(Vault& v, std::string_view words) {
    auto r = v.CheckAuditChain();
    ASSERT_FALSE(r.has_value()) << "the chain verified";
    EXPECT_EQ(r.error().code(), Code::kCorruption);
    EXPECT_NE(r.error().message().find(words), std::string::npos) << r.error().message();
  }
  // Inserts records seq first..first+n-1 chained from `prev`, as someone with write
  // access to the file and our (public) hash function could.
  static Bytes ForgeRecords(RawDb& raw, int64_t first, int n, Bytes prev,
                            std::string action = "Forged") {
    for (int64_t seq = first; seq < first + n; ++seq) {
      AuditEvent e{kNow, "system", action, "obj", "ok", "forged"};
      auto h = AuditRecordHash(seq, e, prev);
      EXPECT_TRUE(h.has_value());
      sqlite3_stmt* s = nullptr;
      sqlite3_prepare_v2(raw.db, "INSERT INTO audit_log VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", -1, &s,
                         nullptr);
      sqlite3_bind_int64(s, 1, seq);
      sqlite3_bind_int64(s, 2, e.time);
      int col = 3;
      for (const std::string* f : {&e.actor, &e.action, &e.object, &e.outcome, &e.detail}) {
        sqlite3_bind_text(s, col++, f->c_str(), -1, SQLITE_TRANSIENT);
      }
      sqlite3_bind_blob(s, 8, prev.data(), static_cast<int>(prev.size()), SQLITE_TRANSIENT);
      sqlite3_bind_blob(s, 9, h->data(), static_cast<int>(h->size()), SQLITE_TRANSIENT);
      EXPECT_EQ(sqlite3_step(s), SQLITE_DONE) << sqlite3_errmsg(raw.db);
      sqlite3_finalize(s);
      prev = *h;
    }
    return prev;
  }
  // Deletes every record with the trigger out of the way, then puts the trigger back
  // exactly as it was, so that only the emptiness gives it away.
  static void DeleteAllBehindTheTrigger(RawDb& raw) {
    ASSERT_EQ(raw.Exec("DROP TRIGGER audit_log_no_delete"), "");
    ASSERT_EQ(raw.Exec("DELETE FROM audit_log"), "");
    ASSERT_EQ(raw.Exec("CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log\n"
                       "  WHEN OLD.seq > (SELECT coalesce(max(last_seq), 0) FROM audit_segments)\n"
                       "  BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END"),
              "");
  }
};

TEST_F(AuditAnchorTest, ANewVaultStartsWithItsGenesisRecord) {
  auto v = OpenWith(2);
  AuditFilter f;
  auto page = v->ListAudit(f);
  ASSERT_TRUE(page.has_value());
  ASSERT_EQ(page->records.size(), 3u);
  const AuditRecord& g = page->records.front();
  EXPECT_EQ(g.seq, 1);
  EXPECT_EQ(g.event.action, kAuditGenesisAction);
  EXPECT_EQ(g.event.detail, "new vault");
  auto head = v->GetAuditHead();
  ASSERT_TRUE(head.has_value());
  EXPECT_EQ(head->vault_id.size(), 16u);
  EXPECT_EQ(g.event.object, HexEncode(head->vault_id));
  EXPECT_EQ(head->seq, 3);
  EXPECT_EQ(head->hash, page->records.back().hash);
  auto report = v->CheckAuditChain();
  ASSERT_TRUE(report.has_value()) << report.error().ToString();
  EXPECT_EQ(report->genesis_seq, 1);
  EXPECT_EQ(report->first_seq, 1);
  EXPECT_EQ(report->last_seq, 3);
  // Another vault has another identity.
  tpmma::testing::TempDir other;
  auto w = OpenOrDie(DbPath(other.path()));
  EXPECT_NE(w->GetAuditHead()->vault_id, head->vault_id);
}

TEST_F(AuditAnchorTest, AnEmptiedLogDoesNotVerifyAndIsNotGivenAFreshStart) {
  OpenWith(3).reset();
  {
    RawDb raw(Path());
    DeleteAllBehindTheTrigger(raw);
  }
  auto v = OpenOrDie(Path());  // a reopen must not write a new genesis record
  ExpectCorruption(*v, "the log is empty");
  EXPECT_EQ(v->IntegrityCheck().code(), Code::kCorruption);
}

TEST_F(AuditAnchorTest, ALogRebuiltWithoutItsGenesisDoesNotVerify) {
  OpenWith(3).reset();
  {
    RawDb raw(Path());
    DeleteAllBehindTheTrigger(raw);
    ForgeRecords(raw, 1, 3, Bytes(32, 0));
  }
  auto v = OpenOrDie(Path());
  ExpectCorruption(*v, "no genesis record");
}

TEST_F(AuditAnchorTest, MissingOrChangedTriggersAreFindings) {
  OpenWith(2).reset();
  {
    RawDb raw(Path());
    ASSERT_EQ(raw.Exec("DROP TRIGGER audit_log_no_update"), "");
  }
  ExpectCorruption(*OpenOrDie(Path()), "audit_log_no_update is missing");
  {
    RawDb raw(Path());
    // Same name, a body that never fires.
    ASSERT_EQ(raw.Exec("CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log WHEN 0 "
                       "BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END"),
              "");
  }
  ExpectCorruption(*OpenOrDie(Path()), "audit_log_no_update was changed");
  {
    RawDb raw(Path());
    ASSERT_EQ(raw.Exec("DROP TRIGGER audit_log_no_update"), "");
    ASSERT_EQ(raw.Exec("CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log\n"
                       "  BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;"),
              "");
    ASSERT_EQ(raw.Exec("DROP TRIGGER vault_meta_no_delete"), "");
  }
  ExpectCorruption(*OpenOrDie(Path()), "vault_meta_no_delete is missing");
}

TEST_F(AuditAnchorTest, TheVaultsOwnActionsAreReserved) {
  auto v = OpenWith(0);
  auto appended = v->AppendAudit(Audit(std::string(kAuditGenesisAction)));
  ASSERT_FALSE(appended.has_value());
  EXPECT_EQ(appended.error().code(), Code::kInvalidArgument);
  EXPECT_EQ(v->AppendAuditDeferred(Audit(std::string(kAuditArchiveAction))).code(),
            Code::kInvalidArgument);
  ASSERT_TRUE(v->CheckAuditChain().has_value());
}

TEST_F(AuditAnchorTest, AnUpgradedVaultGetsItsGenesisAfterTheRecordsItHad) {
  OpenWith(0).reset();
  {
    // Back to schema 5's shape with three records of its own.
    RawDb raw(Path());
    DeleteAllBehindTheTrigger(raw);
    for (const char* sql :
         {"DROP TRIGGER audit_log_no_delete", "DROP TRIGGER vault_meta_no_update",
          "DROP TRIGGER vault_meta_no_delete", "DROP TRIGGER audit_segments_no_update",
          "DROP TRIGGER audit_segments_no_delete", "DROP TABLE vault_meta",
          "DROP TABLE audit_segments",
          "CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log BEGIN SELECT "
          "RAISE(ABORT, 'audit_log is append-only'); END",
          "DROP INDEX packages_by_wrap_key",  // migration 8's
          "ALTER TABLE packages DROP COLUMN wrap_key_id",
          "ALTER TABLE packages DROP COLUMN wrap_duplicate",
          "ALTER TABLE packages DROP COLUMN wrap_seed",
          "ALTER TABLE platforms DROP COLUMN srk_public",  // migration 7's
          "ALTER TABLE platforms DROP COLUMN srk_certified_at", "PRAGMA user_version = 5"}) {
      ASSERT_EQ(raw.Exec(sql), "") << sql;
    }
    ForgeRecords(raw, 1, 3, Bytes(32, 0), "Legacy");
  }
  auto v = OpenOrDie(Path());
  auto report = v->CheckAuditChain();
  ASSERT_TRUE(report.has_value()) << report.error().ToString();
  EXPECT_EQ(report->genesis_seq, 4);
  auto g = v->GetAuditRecord(4);
  ASSERT_TRUE(g.has_value());
  EXPECT_EQ(g->event.action, kAuditGenesisAction);
  EXPECT_NE(g->event.detail.find("after 3 record(s)"), std::string::npos) << g->event.detail;
}

TEST_F(AuditAnchorTest, ArchivingRemovesOldRecordsAndTheChainStillVerifies) {
  auto v = OpenWith(9);  // seq 1 genesis .. 10
  auto seq5 = v->GetAuditRecord(5);
  ASSERT_TRUE(seq5.has_value());
  const Bytes digest(32, 0xab);
  AuditEvent archive{kNow, "system", std::string(kAuditArchiveAction), "5", "ok", "test"};
  ASSERT_OK(v->ArchiveAudit(5, digest, archive));
  auto report = v->CheckAuditChain();
  ASSERT_TRUE(report.has_value()) << report.error().ToString();
  EXPECT_EQ(report->archived_through, 5);
  EXPECT_EQ(report->first_seq, 6);
  EXPECT_EQ(report->last_seq, 11);  // the Audit.Archive record
  EXPECT_EQ(report->genesis_seq, 0);
  EXPECT_EQ(v->GetAuditRecord(3).error().code(), Code::kNotFound);
  auto segments = v->ListAuditSegments();
  ASSERT_TRUE(segments.has_value());
  ASSERT_EQ(segments->size(), 1u);
  EXPECT_EQ((*segments)[0].first_seq, 1);
  EXPECT_EQ((*segments)[0].last_seq, 5);
  EXPECT_EQ((*segments)[0].last_hash, seq5->hash);
  EXPECT_EQ((*segments)[0].archive_sha256, digest);

  // Not the head, not what is already archived, and only with its own record.
  AuditEvent at_head = archive;
  at_head.object = "11";
  EXPECT_EQ(v->ArchiveAudit(11, digest, at_head).code(), Code::kInvalidArgument);
  AuditEvent again = archive;
  again.object = "4";
  EXPECT_EQ(v->ArchiveAudit(4, digest, again).code(), Code::kInvalidArgument);
  AuditEvent mismatched = archive;
  mismatched.object = "7";
  EXPECT_EQ(v->ArchiveAudit(8, digest, mismatched).code(), Code::kInvalidArgument);
  // A second archive continues the first.
  AuditEvent next = archive;
  next.object = "8";
  ASSERT_OK(v->ArchiveAudit(8, digest, next));
  report = v->CheckAuditChain();
  ASSERT_TRUE(report.has_value()) << report.error().ToString();
  EXPECT_EQ(report->archived_through, 8);
  EXPECT_EQ(report->first_seq, 9);
}

TEST_F(AuditAnchorTest, ASegmentForgedToDeleteRecordsIsAFinding) {
  {
    auto v = OpenWith(9);
    AuditEvent archive{kNow, "system", std::string(kAuditArchiveAction), "3", "ok", "test"};
    ASSERT_OK(v->ArchiveAudit(3, Bytes(32, 1), archive));
  }
  {
    RawDb raw(Path());
    // Records outside a segment stay undeletable.
    EXPECT_NE(raw.Exec("DELETE FROM audit_log WHERE seq = 6").find("append-only"),
              std::string::npos);
    // Recording a segment by hand lets the trigger pass, but the log has no record of it.
    ASSERT_EQ(raw.Exec("INSERT INTO audit_segments SELECT seq, 4, hash, 0, zeroblob(32) FROM "
                       "audit_log WHERE seq = 7"),
              "");
    ASSERT_EQ(raw.Exec("DELETE FROM audit_log WHERE seq <= 7"), "");
  }
  ExpectCorruption(*OpenOrDie(Path()), "no Audit.Archive record");
}

}  // namespace
}  // namespace tpmma::storage::testing
