// SPDX-License-Identifier: GPL-2.0-or-later
// ma-admin's platforms, packages, approve/approvals and audit commands, run as the real
// binary against a state directory made by `ma-admin init` and filled through the Vault.
#include <sqlite3.h>

#include <sys/stat.h>

#include <filesystem>
#include <regex>

#include <gtest/gtest.h>
#include <openssl/sha.h>
#include <nlohmann/json.hpp>

#include "server/admin_commands.h"
#include "server/admin_init.h"
#include "server/config.h"
#include "storage/sqlite_vault.h"
#include "tests/support/testutil.h"

namespace tpmma::server {
namespace {

using nlohmann::json;
using tpmma::testing::CommandResult;
using tpmma::testing::RunCommand;
using tpmma::testing::TempDir;

const std::string kOld = "000b" + std::string(64, 'a');
const std::string kNew = "000b" + std::string(64, 'b');
const std::string kPkg = "3f2504e0-4f89-41d3-9a0c-0305e82c3301";

class AdminCommandsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    InitOptions o;
    o.dir = dir_;
    o.listen_port = 0;
    auto report = InitMaState(o, Env::Default());
    ASSERT_TRUE(report.has_value()) << report.error().ToString();
    auto cfg = LoadConfig(dir_ + "/config.toml");
    ASSERT_TRUE(cfg.has_value());
    vault_path_ = cfg->vault_path;
    auto vault = storage::SqliteVault::Open(vault_path_);
    ASSERT_TRUE(vault.has_value());
    for (const auto& id : {kOld, kNew}) {
      storage::Platform p;
      p.id = id;
      p.ek_public = Bytes(10, 1);
      p.ek_certificate = Bytes(10, 2);
      p.ak_public = Bytes(10, 3);
      p.ak_name = Bytes(34, 4);
      p.created_at = p.last_seen_at = 1700000000;
      ASSERT_TRUE((*vault)->UpsertPlatform(p, Event(id, "Authenticate", id)).has_value());
    }
    storage::Package pkg;
    pkg.descriptor.package_id = kPkg;
    pkg.descriptor.source_platform_id = kOld;
    pkg.descriptor.format_version = "1";
    pkg.descriptor.created_at = 1700000000;
    pkg.descriptor.uploaded_at = 1700000001;
    pkg.descriptor.keys = {{"7c9e6679-7425-40de-944b-e07fc1f90ae7", "VPN key", "sign"}};
    pkg.body = Bytes(100, 'x');
    pkg.descriptor.sha256.resize(SHA256_DIGEST_LENGTH);  // the vault keeps the caller's digest
    SHA256(pkg.body.data(), pkg.body.size(), pkg.descriptor.sha256.data());
    ASSERT_TRUE((*vault)->PutPackage(pkg, Event(kOld, "Upload", kPkg)).has_value());
  }

  static storage::AuditEvent Event(const std::string& actor, const std::string& action,
                                   const std::string& object) {
    return {.time = 1700000000,
            .actor = actor,
            .action = action,
            .object = object,
            .outcome = "ok",
            .detail = ""};
  }

  CommandResult Admin(std::vector<std::string> args) {
    args.insert(args.begin(), MA_ADMIN_PATH);
    // --dir belongs to the innermost subcommand, so it goes last.
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

  TempDir tmp_;
  std::string dir_ = tmp_.File("ma");
  std::string vault_path_;
};

// The enrollment policy's commands through the binary: CSV import (all or nothing, the bad
// line named), the registrations listed, a pending platform accepted once.
TEST_F(AdminCommandsTest, RegisterAndAccept) {
  const std::string good = tmp_.File("fleet.csv"), bad = tmp_.File("bad.csv");
  testing::WriteFileOrDie(good, ToBytes("ek_cert_sha256,label\n" + std::string(64, 'c') +
                                        ",carol\n" + std::string(64, 'd') + ",dave\n"));
  testing::WriteFileOrDie(bad,
                          ToBytes("ek_key_id,label\n" + std::string(64, 'e') + ",eve\nxyz,x\n"));
  CommandResult r = Admin({"platforms", "register", "--csv", bad});
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find(bad + ":3: ek_key_id must be 64 hex digits"), std::string::npos)
      << r.output;
  json reg = AdminJson({"platforms", "register", "--csv", good});
  EXPECT_EQ(reg["added"], 2) << reg.dump();
  json list = AdminJson({"platforms", "registrations"});
  ASSERT_EQ(list["registrations"].size(), 2u) << list.dump();
  EXPECT_EQ(list["registrations"][0]["kind"], "ek-cert-sha256");
  EXPECT_EQ(list["registrations"][0]["label"], "carol");
  EXPECT_EQ(Admin({"platforms", "register"}).exit_code, 1);

  const std::string pending = "000b" + std::string(64, 'f');
  {
    auto vault = storage::SqliteVault::Open(vault_path_);
    ASSERT_TRUE(vault.has_value());
    storage::Platform p;
    p.id = pending;
    p.ek_public = p.ek_certificate = p.ak_public = p.ak_name = Bytes(10, 5);
    p.state = storage::PlatformState::kPending;
    ASSERT_TRUE((*vault)->UpsertPlatform(p, std::nullopt).has_value());
  }
  json pl = AdminJson({"platforms", "show", pending});
  EXPECT_EQ(pl["platform"]["state"], "pending") << pl.dump();
  EXPECT_EQ(AdminJson({"platforms", "accept", pending})["accepted"], pending);
  EXPECT_EQ(AdminJson({"platforms", "show", pending})["platform"]["state"], "active");
  r = Admin({"platforms", "accept", pending});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("not pending"), std::string::npos) << r.output;
}

TEST_F(AdminCommandsTest, PlatformsAndPackages) {
  json pl = AdminJson({"platforms", "list"});
  ASSERT_EQ(pl["platforms"].size(), 2u) << pl.dump();
  EXPECT_EQ(pl["platforms"][0]["state"], "active");

  json pk = AdminJson({"packages", "list", "--platform", kOld});
  ASSERT_EQ(pk["packages"].size(), 1u);
  EXPECT_EQ(pk["packages"][0]["id"], kPkg);
  EXPECT_EQ(pk["packages"][0]["keys"][0]["label"], "VPN key");
  EXPECT_EQ(AdminJson({"packages", "list", "--platform", kNew})["packages"].size(), 0u);

  json show = AdminJson({"platforms", "show", kOld});
  EXPECT_EQ(show["platform"]["packages"][0], kPkg);

  CommandResult text = Admin({"packages", "show", kPkg});
  EXPECT_EQ(text.exit_code, 0);
  EXPECT_NE(text.output.find("VPN key"), std::string::npos) << text.output;

  CommandResult missing = Admin({"platforms", "show", "000b" + std::string(64, 'c')});
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_NE(missing.output.find("NotFound"), std::string::npos) << missing.output;

  EXPECT_EQ(Admin({"packages", "delete", kPkg, "--reason", "user left"}).exit_code, 0);
  EXPECT_EQ(AdminJson({"packages", "list"})["packages"].size(), 0u);
  EXPECT_EQ(Admin({"packages", "delete", kPkg, "--reason", "again"}).exit_code, 1);
}

TEST_F(AdminCommandsTest, PlatformsByIdPrefixAndFullIdsInTables) {
  EXPECT_EQ(AdminJson({"platforms", "show", "000bAAAA"})["platform"]["id"], kOld);
  CommandResult ambiguous = Admin({"platforms", "show", "000b"});
  EXPECT_EQ(ambiguous.exit_code, 1);
  EXPECT_NE(ambiguous.output.find("ambiguous"), std::string::npos) << ambiguous.output;
  EXPECT_NE(ambiguous.output.find(kOld), std::string::npos) << ambiguous.output;
  EXPECT_NE(ambiguous.output.find(kNew), std::string::npos) << ambiguous.output;
  // A hex run from the middle of an id names nothing.
  EXPECT_EQ(Admin({"platforms", "show", std::string(20, 'a')}).exit_code, 1);

  CommandResult list = Admin({"platforms", "list"});
  EXPECT_EQ(list.exit_code, 0);
  EXPECT_NE(list.output.find(kOld), std::string::npos) << list.output;  // not cut to 16
  json found = AdminJson({"platforms", "find", "000bb"});
  ASSERT_EQ(found["platforms"].size(), 1u) << found.dump();
  EXPECT_EQ(found["platforms"][0]["id"], kNew);
  EXPECT_TRUE(found["platforms"][0]["inventory"].is_null());
}

TEST_F(AdminCommandsTest, ApprovalsAndRevocation) {
  json a = AdminJson(
      {"approve", "--old", kOld, "--new", kNew, "--reason", "ticket 4711", "--expires", "4h"});
  ASSERT_EQ(a["approval"]["state"], "active") << a.dump();
  EXPECT_EQ(a["approval"]["all_packages"], true);
  const int64_t id = a["approval"]["id"];

  // Refusals: same platform, unknown platform, package of another platform, no reason.
  CommandResult same = Admin({"approve", "--old", kOld, "--new", kOld, "--reason", "x"});
  EXPECT_EQ(same.exit_code, 1);
  EXPECT_NE(same.output.find("same"), std::string::npos) << same.output;
  EXPECT_EQ(
      Admin({"approve", "--old", kOld, "--new", "000b" + std::string(64, 'c'), "--reason", "x"})
          .exit_code,
      1);
  EXPECT_EQ(Admin({"approve", "--old", kNew, "--new", kOld, "--package", kPkg, "--reason", "x"})
                .exit_code,
            1);
  EXPECT_EQ(Admin({"approve", "--old", kOld, "--new", kNew}).exit_code, 2);  // usage

  // Two-person: pending until confirmed by someone else (here: the same login, refused).
  json two = AdminJson({"approve", "--old", kOld, "--new", kNew, "--package", kPkg, "--reason",
                        "ticket 4712", "--two-person"});
  EXPECT_EQ(two["approval"]["state"], "pending");
  CommandResult self =
      Admin({"approvals", "confirm", std::to_string(two["approval"]["id"].get<int64_t>())});
  EXPECT_EQ(self.exit_code, 1);
  EXPECT_NE(self.output.find("PermissionDenied"), std::string::npos) << self.output;

  json list = AdminJson({"approvals", "list", "--new", kNew});
  EXPECT_EQ(list["approvals"].size(), 2u);
  EXPECT_EQ(Admin({"approvals", "revoke", std::to_string(id), "--reason", "wrong user"}).exit_code,
            0);
  EXPECT_EQ(AdminJson({"approvals", "list"})["approvals"][1]["state"], "revoked");

  EXPECT_EQ(Admin({"platforms", "revoke", kNew, "--reason", "stolen"}).exit_code, 0);
  CommandResult revoked = Admin({"approve", "--old", kOld, "--new", kNew, "--reason", "x"});
  EXPECT_EQ(revoked.exit_code, 1);
  EXPECT_NE(revoked.output.find("revoked"), std::string::npos) << revoked.output;

  json audit = AdminJson({"audit", "--platform", kNew});
  bool saw_revoke = false;
  for (const auto& r : audit["records"]) saw_revoke |= r["action"] == "RevokePlatform";
  EXPECT_TRUE(saw_revoke) << audit.dump();
  json by_action = AdminJson({"audit", "--action", "ApproveRestore"});
  EXPECT_EQ(by_action["records"].size(), 2u);
  EXPECT_EQ(AdminJson({"audit", "--since", "2100-01-01"})["records"].size(), 0u);
}

TEST_F(AdminCommandsTest, AuditVerifyNamesTheEditedRow) {
  EXPECT_EQ(Admin({"approve", "--old", kOld, "--new", kNew, "--reason", "ticket"}).exit_code, 0);
  json ok = AdminJson({"audit", "verify"});
  EXPECT_EQ(ok["ok"], true);
  EXPECT_GE(ok["verified_rows"].get<int64_t>(), 4);

  // Someone with write access to the file edits one row directly. The vault's triggers
  // refuse UPDATE on the log, so first they drop the triggers.
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(vault_path_.c_str(), &db), SQLITE_OK);
  EXPECT_NE(sqlite3_exec(db, "UPDATE audit_log SET detail = 'x' WHERE seq = 3", nullptr, nullptr,
                         nullptr),
            SQLITE_OK);
  std::vector<std::string> triggers;
  sqlite3_exec(
      db, "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'audit_log'",
      [](void* out, int, char** values, char**) {
        static_cast<std::vector<std::string>*>(out)->push_back(values[0]);
        return 0;
      },
      &triggers, nullptr);
  for (const auto& t : triggers) {
    ASSERT_EQ(sqlite3_exec(db, ("DROP TRIGGER " + t).c_str(), nullptr, nullptr, nullptr),
              SQLITE_OK);
  }
  ASSERT_EQ(sqlite3_exec(db, "UPDATE audit_log SET detail = 'nothing to see' WHERE seq = 3",
                         nullptr, nullptr, nullptr),
            SQLITE_OK);
  EXPECT_EQ(sqlite3_changes(db), 1);
  sqlite3_close(db);

  CommandResult bad = Admin({"audit", "verify"});
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.output.find("Corruption"), std::string::npos) << bad.output;
  EXPECT_NE(bad.output.find("audit chain broken at seq 3"), std::string::npos) << bad.output;
}

// Issue #13, finding 4: a caller-chosen string (here a GetMAKey KeyId as the MA records it)
// holding a line feed and ANSI escapes printed a forged line and ran the escapes.
TEST_F(AdminCommandsTest, AuditTextOutputEscapesControlCharacters) {
  {
    auto vault = storage::SqliteVault::Open(vault_path_);
    ASSERT_TRUE(vault.has_value());
    storage::AuditEvent e = Event("anonymous", "GetMAKey", "ma-1\n2026-01-01 admin:root Delete ok");
    e.detail = "\x1b[2J\x1b[31mred \xc2\x9b";
    ASSERT_TRUE((*vault)->AppendAudit(e).has_value());
  }
  CommandResult r = Admin({"audit", "--action", "GetMAKey"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("ma-1\\x0a2026-01-01"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("\\x1b[2J\\x1b[31mred \\u009b"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find('\x1b'), std::string::npos);
  EXPECT_EQ(r.output.find("\xc2\x9b"), std::string::npos);
  // One row, one line (plus nothing forged).
  EXPECT_EQ(r.output.find("\n2026-01-01"), std::string::npos) << r.output;
}

// ma-admin escrow rotate: a new current escrow key, the old one retired (kept, still loaded
// by the server), the config still accepted and still relative to the state directory.
// Issue #16: an MA made without a policy-signing key gets one; one that has it keeps it.
TEST_F(AdminCommandsTest, PolicyKeyInitGivesAnMaWithoutOneItsKeyAndNeverReplacesIt) {
  const Bytes made_by_init = tpmma::testing::ReadFileOrDie(dir_ + "/config.toml");
  CommandResult again = Admin({"policy-key", "init"});
  EXPECT_EQ(again.exit_code, 1);
  EXPECT_NE(again.output.find("would strand every MRK that follows it"), std::string::npos)
      << again.output;
  EXPECT_EQ(tpmma::testing::ReadFileOrDie(dir_ + "/config.toml"), made_by_init);
  // As an MA made with --no-policy-key (or before #16) is: no [policy], no files.
  auto cfg = LoadConfig(dir_ + "/config.toml");
  ASSERT_TRUE(cfg.has_value());
  cfg->policy_public_key.clear();
  cfg->policy_approval.clear();
  RelativeTo(dir_, *cfg);
  tpmma::testing::WriteFileOrDie(dir_ + "/config.toml", ToBytes(ConfigToToml(*cfg)));
  std::filesystem::remove_all(dir_ + "/policy");

  json made = AdminJson({"policy-key", "init"});
  ASSERT_TRUE(made.contains("policy_key_name")) << made.dump();
  cfg = LoadConfig(dir_ + "/config.toml");
  ASSERT_TRUE(cfg.has_value()) << cfg.error().ToString();
  EXPECT_EQ(cfg->policy_public_key, dir_ + "/policy/policy-key.pub.pem");
  EXPECT_EQ(cfg->policy_approval, dir_ + "/policy/ma-1.approval");
  struct stat st {};
  ASSERT_EQ(::stat((dir_ + "/policy/policy-key.pem").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  const Bytes toml = tpmma::testing::ReadFileOrDie(dir_ + "/config.toml");
  EXPECT_EQ(std::string(toml.begin(), toml.end()).find(dir_), std::string::npos);  // relative
  json audit = AdminJson({"audit", "--action", "InitPolicyKey"});
  ASSERT_EQ(audit["records"].size(), 1u);
  EXPECT_EQ(audit["records"][0]["object"], made["policy_key_name"]);
  EXPECT_EQ(audit["records"][0]["detail"], "approves ma-1");
}

TEST_F(AdminCommandsTest, EscrowRotateRetiresTheCurrentKey) {
  const Bytes before = tpmma::testing::ReadFileOrDie(dir_ + "/escrow/escrow-key.pem");
  json rotated = AdminJson({"escrow", "rotate"});
  EXPECT_EQ(rotated["escrow_key_id"], "escrow-2");
  EXPECT_EQ(rotated["retired"], json::array({"escrow-1"}));
  auto cfg = LoadConfig(dir_ + "/config.toml");
  ASSERT_TRUE(cfg.has_value()) << cfg.error().ToString();
  EXPECT_TRUE(CheckConfigFiles(*cfg).ok());
  EXPECT_EQ(cfg->escrow.key_id, "escrow-2");
  EXPECT_EQ(cfg->escrow.private_key, dir_ + "/escrow/escrow-2-key.pem");
  ASSERT_EQ(cfg->escrow_retired.size(), 1u);
  EXPECT_EQ(cfg->escrow_retired[0].key_id, "escrow-1");
  // The retired key is the same file, untouched; the new one is another key, owner-only.
  EXPECT_EQ(tpmma::testing::ReadFileOrDie(cfg->escrow_retired[0].private_key), before);
  EXPECT_NE(tpmma::testing::ReadFileOrDie(cfg->escrow.private_key), before);
  struct stat st {};
  ASSERT_EQ(::stat(cfg->escrow.private_key.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  auto verify = RunCommand(
      {"openssl", "verify", "-CAfile", dir_ + "/ca/ca-cert.pem", cfg->escrow.certificate});
  EXPECT_EQ(verify.exit_code, 0) << verify.output;
  // Paths stay relative: the state directory can still be moved as a whole.
  const Bytes toml_bytes = tpmma::testing::ReadFileOrDie(dir_ + "/config.toml");
  const std::string toml(toml_bytes.begin(), toml_bytes.end());
  EXPECT_EQ(toml.find(dir_), std::string::npos) << toml;

  // A key id is never reused; the CA key is needed (it is kept offline after init).
  CommandResult reused = Admin({"escrow", "rotate", "--key-id", "escrow-1"});
  EXPECT_EQ(reused.exit_code, 1);
  EXPECT_NE(reused.output.find("never reused"), std::string::npos) << reused.output;
  ASSERT_EQ(::rename((dir_ + "/ca/ca-key.pem").c_str(), (dir_ + "/ca-key.offline").c_str()), 0);
  CommandResult no_ca = Admin({"escrow", "rotate"});
  EXPECT_EQ(no_ca.exit_code, 1);
  EXPECT_NE(no_ca.output.find("offline copy"), std::string::npos) << no_ca.output;
  EXPECT_EQ(tpmma::testing::ReadFileOrDie(dir_ + "/config.toml"), toml_bytes);  // unchanged

  json audit = AdminJson({"audit", "--action", "RotateEscrowKey"});
  ASSERT_EQ(audit["records"].size(), 1u);
  EXPECT_EQ(audit["records"][0]["object"], "escrow-2");
  EXPECT_EQ(audit["records"][0]["detail"], "retired escrow-1");
}

TEST(AdminParse, DurationsAndTimes) {
  EXPECT_EQ(*ParseDuration("90m"), 5400);
  EXPECT_EQ(*ParseDuration("2d"), 172800);
  EXPECT_EQ(*ParseDuration("30"), 30);
  for (const char* bad : {"", "h", "-1h", "0", "1y", "400d", "1.5h", "4 h"}) {
    EXPECT_FALSE(ParseDuration(bad).has_value()) << bad;
  }
}

}  // namespace
}  // namespace tpmma::server

namespace tpmma::server {
namespace {

// ---- Issue #15: what tripped a new helpdesk person up on the command line.

// Tables printed platform ids cut to 16 hex digits and a "…", which approve then refused.
TEST_F(AdminCommandsTest, TextOutputPrintsIdsThatCommandsTakeBack) {
  ASSERT_EQ(Admin({"approve", "--old", kOld, "--new", kNew, "--reason", "t1"}).exit_code, 0);
  for (std::vector<std::string> cmd :
       {std::vector<std::string>{"packages", "list"}, {"approvals", "list"}, {"audit"}}) {
    CommandResult r = Admin(cmd);
    ASSERT_EQ(r.exit_code, 0) << r.output;
    EXPECT_NE(r.output.find(kOld), std::string::npos) << cmd[0] << ":\n" << r.output;
    EXPECT_EQ(r.output.find("…"), std::string::npos) << r.output;
  }
  // What `approvals list` prints as OLD is taken back by approve as it stands.
  CommandResult list = Admin({"approvals", "list"});
  std::smatch m;
  ASSERT_TRUE(std::regex_search(list.output, m, std::regex("000b[0-9a-f]+"))) << list.output;
  CommandResult again = Admin({"approve", "--old", m.str(), "--new", kNew, "--reason", "t2"});
  EXPECT_EQ(again.exit_code, 0) << again.output;
}

TEST_F(AdminCommandsTest, JsonMayFollowTheSubcommand) {
  for (std::vector<std::string> cmd : {std::vector<std::string>{"platforms", "list", "--json"},
                                       {"approvals", "list", "--json"},
                                       {"audit", "--json", "--action", "Upload"}}) {
    CommandResult r = Admin(cmd);
    ASSERT_EQ(r.exit_code, 0) << r.output;
    json j = json::parse(r.output, nullptr, false);
    ASSERT_FALSE(j.is_discarded()) << cmd[0] << ": " << r.output;
    EXPECT_EQ(j["ok"], true);
  }
  EXPECT_EQ(json::parse(Admin({"platforms", "list", "--json"}).output)["platforms"].size(), 2u);
}

TEST_F(AdminCommandsTest, OperatorIssueMakesItsOutDirectory) {
  const std::string out = tmp_.File("handover/alice");
  CommandResult r =
      Admin({"operator", "issue", "--name", "alice", "--role", "helpdesk", "--out", out});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  struct stat st {};
  ASSERT_EQ(::stat(out.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  ASSERT_EQ(::stat((out + "/alice.pem").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  // A file where the directory should be: refused, nothing registered.
  testing::WriteFileOrDie(tmp_.File("afile"), ToBytes("x"));
  r = Admin(
      {"operator", "issue", "--name", "bob", "--role", "auditor", "--out", tmp_.File("afile")});
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("--out"), std::string::npos) << r.output;
  EXPECT_EQ(AdminJson({"operator", "list"})["operators"].size(), 1u);
}

// The local approve follows [approvals] of config.toml as the operator side does.
TEST_F(AdminCommandsTest, LocalApprovalsFollowTheConfiguredRules) {
  const std::string path = dir_ + "/config.toml";
  std::string text = ToString(testing::ReadFileOrDie(path));
  const std::string from = "max_ttl_s = 604800";
  ASSERT_NE(text.find(from), std::string::npos) << text;
  text.replace(text.find(from), from.size(), "max_ttl_s = 3600\ntwo_person = true");
  const std::string old_two = "two_person = false\n";
  if (text.find(old_two) != std::string::npos) text.erase(text.find(old_two), old_two.size());
  testing::WriteFileOrDie(path, ToBytes(text));

  CommandResult r =
      Admin({"approve", "--old", kOld, "--new", kNew, "--reason", "t", "--expires", "2h"});
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("approvals.max_ttl_s = 3600"), std::string::npos) << r.output;
  json ok =
      AdminJson({"approve", "--old", kOld, "--new", kNew, "--reason", "t", "--expires", "30m"});
  EXPECT_EQ(ok["approval"]["state"], "pending") << ok.dump();  // two_person from the config
  EXPECT_EQ(ok["approval"]["status"], "pending");
}

}  // namespace
}  // namespace tpmma::server
