// SPDX-License-Identifier: GPL-2.0-or-later
// Signed checkpoints and archives of the audit log (server/audit_checkpoint.h,
// server/admin_audit.h), through the real ma-admin on a state directory made by
// `ma-admin init`, with the vault file tampered with by raw SQL as an attacker with write
// access to it would. Each tamper below passes the chain check alone: the checkpoint is
// what catches it. Also ma-server's scheduled checkpoints (MakeMaService).
#include <sqlite3.h>

#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "server/admin_init.h"
#include "server/audit_checkpoint.h"
#include "server/config.h"
#include "server/ma_service.h"
#include "storage/sqlite_vault.h"
#include "tests/support/testutil.h"

namespace tpmma::server {
namespace {

using nlohmann::json;
using tpmma::testing::CommandResult;
using tpmma::testing::RunCommand;
using tpmma::testing::TempDir;

// Raw SQL on the vault file, past the vault's API.
class RawVault {
 public:
  explicit RawVault(const std::string& path) {
    EXPECT_EQ(sqlite3_open(path.c_str(), &db_), SQLITE_OK);
  }
  ~RawVault() { sqlite3_close(db_); }
  void Exec(const std::string& sql) {
    char* err = nullptr;
    EXPECT_EQ(sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &err), SQLITE_OK)
        << sql << ": " << (err ? err : "");
    sqlite3_free(err);
  }
  // Deletes records above `seq` and puts the delete trigger back as schema 6 made it.
  void CutAfter(int64_t seq) {
    Exec("DROP TRIGGER audit_log_no_delete");
    Exec("DELETE FROM audit_log WHERE seq > " + std::to_string(seq));
    Exec(
        "CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log\n"
        "  WHEN OLD.seq > (SELECT coalesce(max(last_seq), 0) FROM audit_segments)\n"
        "  BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END");
  }
  Bytes HashOf(int64_t seq) {
    sqlite3_stmt* s = nullptr;
    sqlite3_prepare_v2(db_, "SELECT hash FROM audit_log WHERE seq = ?", -1, &s, nullptr);
    sqlite3_bind_int64(s, 1, seq);
    Bytes out;
    if (sqlite3_step(s) == SQLITE_ROW) {
      auto* p = static_cast<const uint8_t*>(sqlite3_column_blob(s, 0));
      out.assign(p, p + sqlite3_column_bytes(s, 0));
    }
    sqlite3_finalize(s);
    return out;
  }
  // Appends records from `first` on, chained from the record before: a rewritten history
  // that the chain check alone accepts.
  void Forge(int64_t first, int n, const std::string& detail) {
    Bytes prev = HashOf(first - 1);
    for (int64_t seq = first; seq < first + n; ++seq) {
      storage::AuditEvent e{1700000000, "admin:root", "DeletePackage", "pkg", "ok", detail};
      Bytes hash = *storage::AuditRecordHash(seq, e, prev);
      sqlite3_stmt* s = nullptr;
      sqlite3_prepare_v2(db_, "INSERT INTO audit_log VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", -1, &s,
                         nullptr);
      sqlite3_bind_int64(s, 1, seq);
      sqlite3_bind_int64(s, 2, e.time);
      int col = 3;
      for (const std::string* f : {&e.actor, &e.action, &e.object, &e.outcome, &e.detail}) {
        sqlite3_bind_text(s, col++, f->c_str(), -1, SQLITE_TRANSIENT);
      }
      sqlite3_bind_blob(s, 8, prev.data(), static_cast<int>(prev.size()), SQLITE_TRANSIENT);
      sqlite3_bind_blob(s, 9, hash.data(), static_cast<int>(hash.size()), SQLITE_TRANSIENT);
      EXPECT_EQ(sqlite3_step(s), SQLITE_DONE) << sqlite3_errmsg(db_);
      sqlite3_finalize(s);
      prev = hash;
    }
  }

 private:
  sqlite3* db_ = nullptr;
};

class AuditCheckpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    InitOptions o;
    o.dir = dir_;
    o.listen_port = 0;
    auto report = InitMaState(o, Env::Default());
    ASSERT_TRUE(report.has_value()) << report.error().ToString();
    Append(4);
  }
  void Append(int n) {
    auto vault = storage::SqliteVault::Open(dir_ + "/vault.db");
    ASSERT_TRUE(vault.has_value());
    for (int i = 0; i < n; ++i) {
      storage::AuditEvent e{1700000000 + i, "admin:alice", "RevokePlatform", "p", "ok", "test"};
      ASSERT_TRUE((*vault)->AppendAudit(e).has_value());
    }
  }
  CommandResult Admin(std::vector<std::string> args) {
    args.insert(args.begin(), MA_ADMIN_PATH);
    args.push_back("--dir");
    args.push_back(dir_);
    return RunCommand(args);
  }
  json AdminJson(std::vector<std::string> args) {
    args.insert(args.begin(), "--json");
    CommandResult r = Admin(args);
    EXPECT_EQ(r.exit_code, 0) << r.output;
    return json::parse(r.output, nullptr, false);
  }
  // A checkpoint of the head now; returns the file.
  std::string Checkpoint() {
    json j = AdminJson({"audit", "checkpoint"});
    EXPECT_TRUE(j.value("ok", false)) << j.dump();
    return j.value("file", "");
  }
  void ExpectVerifyFails(const std::string& checkpoint, const std::string& words) {
    CommandResult r = Admin({"audit", "verify", "--checkpoint", checkpoint});
    EXPECT_EQ(r.exit_code, 1) << r.output;
    EXPECT_NE(r.output.find(words), std::string::npos) << r.output;
  }

  TempDir tmp_;
  std::string dir_ = tmp_.File("ma");
};

TEST_F(AuditCheckpointTest, ACheckpointVerifiesAndCountsWhatCameAfter) {
  const std::string cp = Checkpoint();
  ASSERT_TRUE(std::filesystem::exists(cp)) << cp;
  EXPECT_EQ(cp, dir_ + "/audit/checkpoints/checkpoint-6.json");  // genesis, InitMA, 4
  Append(3);
  json v = AdminJson({"audit", "verify", "--checkpoint", cp});
  EXPECT_EQ(v["checkpoint"]["seq"], 6) << v.dump();
  EXPECT_EQ(v["checkpoint"]["records_after"], 3) << v.dump();
  EXPECT_EQ(v["genesis_seq"], 1);
  CommandResult text = Admin({"audit", "verify", "--checkpoint", cp});
  EXPECT_NE(text.output.find("no record up to seq 6 was changed, removed or inserted"),
            std::string::npos)
      << text.output;
}

TEST_F(AuditCheckpointTest, ACutTailPassesTheChainCheckButNotTheCheckpoint) {
  const std::string cp = Checkpoint();
  RawVault(dir_ + "/vault.db").CutAfter(4);
  EXPECT_EQ(Admin({"audit", "verify"}).exit_code, 0);  // what the chain alone cannot see
  ExpectVerifyFails(cp, "the log was cut: the checkpoint vouches for records up to seq 6");
}

TEST_F(AuditCheckpointTest, ARechainedHistoryPassesTheChainCheckButNotTheCheckpoint) {
  const std::string cp = Checkpoint();
  {
    RawVault raw(dir_ + "/vault.db");
    raw.CutAfter(3);
    raw.Forge(4, 5, "nothing to see");  // longer than before, seq 6 now another record
  }
  EXPECT_EQ(Admin({"audit", "verify"}).exit_code, 0);
  ExpectVerifyFails(cp, "record 6 is not the one the checkpoint signed");
}

TEST_F(AuditCheckpointTest, AnAlteredOrForeignCheckpointIsRefused) {
  const std::string cp = Checkpoint();
  json j = json::parse(tpmma::testing::ReadFileOrDie(cp));
  j["seq"] = 5;  // vouch for less, to hide a cut
  const std::string altered = tmp_.File("altered.json");
  tpmma::testing::WriteFileOrDie(altered, ToBytes(j.dump()));
  ExpectVerifyFails(altered, "signature does not verify");

  // A checkpoint of another MA's vault, and with that MA's key.
  TempDir other;
  InitOptions o;
  o.dir = other.File("ma");
  o.listen_port = 0;
  ASSERT_TRUE(InitMaState(o, Env::Default()).has_value());
  CommandResult r = RunCommand(
      {MA_ADMIN_PATH, "audit", "checkpoint", "--out", other.File("theirs.json"), "--dir", o.dir});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  ExpectVerifyFails(other.File("theirs.json"), "not by the checkpoint key given");
  r = Admin({"audit", "verify", "--checkpoint", other.File("theirs.json"), "--key",
             o.dir + "/audit/checkpoint-pub.pem"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("the checkpoint is of vault"), std::string::npos) << r.output;
  ExpectVerifyFails(dir_ + "/config.toml", "not an audit checkpoint");
}

TEST_F(AuditCheckpointTest, ArchivingKeepsTheChainVerifiableAndTheFileCheckable) {
  const std::string early = Checkpoint();  // seq 6
  Append(4);                               // up to 10
  const std::string out = tmp_.File("archive");
  json a = AdminJson({"audit", "archive", "--through", "6", "--out", out});
  ASSERT_EQ(a["last_seq"], 6) << a.dump();
  const std::string file = a["file"];
  EXPECT_EQ(file, out + "/audit-1-6.json");
  json v = AdminJson({"audit", "verify", "--checkpoint", early});
  EXPECT_EQ(v["archived_through"], 6) << v.dump();
  EXPECT_EQ(v["first_seq"], 7);
  EXPECT_EQ(v["checkpoint"]["seq"], 6);  // checked against the segment's last hash
  json va = AdminJson({"audit", "verify-archive", file});
  EXPECT_EQ(va["vault_knows_it"], true) << va.dump();
  EXPECT_EQ(Admin({"audit", "archive", "--through", "11", "--out", out}).exit_code, 1);

  // An archive file with a record changed is caught by its own chain and checkpoint.
  std::string text = ToString(tpmma::testing::ReadFileOrDie(file));
  auto at = text.find("\"RevokePlatform\"");
  ASSERT_NE(at, std::string::npos);
  text.replace(at, 16, "\"RevokeOperator\"");
  tpmma::testing::WriteFileOrDie(file, ToBytes(text));
  CommandResult bad = Admin({"audit", "verify-archive", file});
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.output.find("was altered"), std::string::npos) << bad.output;
}

TEST_F(AuditCheckpointTest, AnOlderMaGetsItsCheckpointKeyOnce) {
  // An MA made before checkpoints: no key configured.
  auto cfg = LoadConfig(dir_ + "/config.toml");
  ASSERT_TRUE(cfg.has_value());
  std::filesystem::remove_all(dir_ + "/audit");
  std::string toml = ToString(tpmma::testing::ReadFileOrDie(dir_ + "/config.toml"));
  for (const char* key : {"checkpoint_key", "checkpoint_dir"}) {
    auto at = toml.find(key);
    ASSERT_NE(at, std::string::npos);
    toml.erase(at, toml.find('\n', at) - at + 1);
  }
  tpmma::testing::WriteFileOrDie(dir_ + "/config.toml", ToBytes(toml));
  CommandResult r = Admin({"audit", "checkpoint"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("ma-admin audit checkpoint-key"), std::string::npos) << r.output;
  json made = AdminJson({"audit", "checkpoint-key"});
  EXPECT_EQ(made["private_key"], dir_ + "/audit/checkpoint-key.pem") << made.dump();
  struct stat st {};
  ASSERT_EQ(::stat((dir_ + "/audit/checkpoint-key.pem").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_EQ(Admin({"audit", "checkpoint-key"}).exit_code, 1);
  const std::string cp = Checkpoint();
  EXPECT_EQ(AdminJson({"audit", "verify", "--checkpoint", cp})["ok"], true);
}

std::vector<std::string> Files(const std::string& dir) {
  std::vector<std::string> out;
  if (!std::filesystem::exists(dir)) return out;
  for (const auto& e : std::filesystem::directory_iterator(dir)) out.push_back(e.path().string());
  std::sort(out.begin(), out.end());
  return out;
}

TEST_F(AuditCheckpointTest, MaServerWritesCheckpointsAtStartAndAtStop) {
  auto cfg = LoadConfig(dir_ + "/config.toml");
  ASSERT_TRUE(cfg.has_value()) << cfg.error().ToString();
  const std::string dir = dir_ + "/audit/checkpoints";
  ASSERT_TRUE(Files(dir).empty());
  {
    auto endpoint = MakeMaService(*cfg, Env::Default());
    ASSERT_TRUE(endpoint.has_value()) << endpoint.error().ToString();
    EXPECT_EQ(Files(dir).size(), 1u);
    // A record while it runs (a second writer on the file, as ma-admin is): the
    // checkpoint written at stop covers it.
    Append(1);
  }
  std::vector<std::string> files = Files(dir);
  ASSERT_EQ(files.size(), 2u);
  for (const std::string& f : files) {
    json v = AdminJson({"audit", "verify", "--checkpoint", f});
    EXPECT_EQ(v.value("ok", false), true) << v.dump();
  }
  auto head = storage::SqliteVault::Open(dir_ + "/vault.db").value()->GetAuditHead();
  ASSERT_TRUE(head.has_value());
  EXPECT_TRUE(std::filesystem::exists(dir + "/checkpoint-" + std::to_string(head->seq) + ".json"));
}

}  // namespace
}  // namespace tpmma::server
