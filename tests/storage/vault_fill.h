// SPDX-License-Identifier: GPL-2.0-or-later
// A vault with a row in (nearly) every table, through the Vault interface, for the backup,
// restore and migrate tests: platforms (one pending, one revoked), a registration, a
// challenge, a session, packages with keys and bodies, approvals (all packages, listed ones,
// confirmed, revoked), operators and audit records.
#pragma once

#include <string>

#include <gtest/gtest.h>

#include "storage/vault.h"
#include "tests/storage/sqlite_test_support.h"
#include "tests/support/status_testing.h"

namespace tpmma::storage::testing {

inline void FillVault(Vault& v) {
  ASSERT_OK(v.UpsertPlatform(MakePlatform("p-old"), Audit("Authenticate", "p-old")));
  ASSERT_OK(v.UpsertPlatform(MakePlatform("p-new"), Audit("Authenticate", "p-new")));
  Platform pending = MakePlatform("p-pending");
  pending.state = PlatformState::kPending;
  pending.signing_key_public = ToBytes("signing");
  pending.ek_key_id = Bytes(32, 7);
  ASSERT_OK(v.UpsertPlatform(pending, Audit("Authenticate", "p-pending")));
  ASSERT_OK(v.UpsertPlatform(MakePlatform("p-gone"), Audit("Authenticate", "p-gone")));
  ASSERT_OK(v.RevokePlatform("p-gone", Audit("RevokePlatform", "p-gone")));
  ASSERT_OK(v.RegisterPlatforms({{RegistrationKind::kEkCertSha256, Bytes(32, 9), "lab", kNow}},
                                Audit("RegisterPlatforms")));
  ASSERT_OK(
      v.CreateChallenge(Challenge{"chal-1", ChallengeKind::kAuthenticate, "p-old", Bytes(32, 1),
                                  ToBytes("nonce"), ToBytes("ad"), kNow, kNow + 60},
                        std::nullopt));
  ASSERT_OK(v.CreateSession(Session{Bytes(32, 2), "p-old", kNow, kNow + 900}, std::nullopt));
  for (int i = 0; i < 3; ++i) {
    const std::string id = "pkg-" + std::to_string(i);
    Package p = MakePackage(id, "p-old", i + 1, "<body " + id + "/>");
    p.descriptor.wrap_key_id = i == 0 ? "" : "ma-" + std::to_string(i);
    if (i == 2) p.rewrap = OuterWrap{ToBytes("dup"), ToBytes("seed")};  // re-enciphered
    ASSERT_OK(v.PutPackage(p, Audit("Upload", id)));
  }
  ApprovalRequest all{"p-old", "p-new", true, {}, "swap", "alice", kNow, kNow + 3600, true};
  ASSERT_OK_AND_ASSIGN(Approval a, v.CreateApproval(all, Audit("ApproveRestore")));
  ASSERT_OK(v.ConfirmApproval(a.id, "bob", kNow, Audit("ConfirmApproval")));
  ApprovalRequest listed{"p-old", "p-new",   false, {"pkg-0", "pkg-2"}, "two", "alice",
                         kNow,    kNow + 60, false};
  ASSERT_OK_AND_ASSIGN(Approval b, v.CreateApproval(listed, Audit("ApproveRestore")));
  ASSERT_OK(v.RevokeApproval(b.id, Audit("RevokeApproval")));
  ASSERT_OK(v.AddOperator(
      Operator{"alice", OperatorRole::kHelpdesk, std::string(64, 'a'), kNow, std::nullopt},
      Audit("OperatorIssue")));
  ASSERT_OK(
      v.AddOperator(Operator{"bob", OperatorRole::kAdmin, std::string(64, 'b'), kNow, std::nullopt},
                    Audit("OperatorIssue")));
  ASSERT_OK(v.RevokeOperator("bob", kNow + 1, Audit("OperatorRevoke")));
  for (int i = 0; i < 5; ++i) ASSERT_OK(v.AppendAudit(Audit("Query", std::to_string(i))));
}

}  // namespace tpmma::storage::testing
