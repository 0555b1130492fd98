// SPDX-License-Identifier: GPL-2.0-or-later
// lms against the real ma-server on swtpm (fixture: lms_ma_fixture.h): which MRK `lms init`
// makes (issue #16, docs/protocol.md "MRK policies"). Against an MA with a policy-signing key
// the default MRK follows the MA (authPolicy PolicyAuthorize by that key, the approval kept in
// store.json) and backs up under the MA's approval; --mrk-policy fixed binds it to the MA key
// as before. Against an MA without one (--no-policy-key) the MRK is bound, and asking for a
// following one is refused with nothing written.
#include <gtest/gtest.h>

#include "tests/lms/lms_ma_fixture.h"
#include "tpm/approval.h"
#include "tpm/policy.h"

namespace tpmma::lms {
namespace {

// The MRK's authPolicy, read from the store as lms keeps it.
Bytes MrkPolicyOf(const std::string& store, Swtpm* t) {
  auto l = lms::Lms::Open({.store_dir = store, .tcti = t->tcti(), .env = nullptr});
  EXPECT_TRUE(l.has_value());
  auto keys = (*l)->store().ListKeys();
  EXPECT_TRUE(keys.has_value());
  for (const KeyRecord& k : *keys) {
    if (k.type != KeyType::kMrk) continue;
    auto pub = tpm::Unmarshal<TPM2B_PUBLIC>(k.public_area);
    EXPECT_TRUE(pub.has_value());
    return Bytes(pub->publicArea.authPolicy.buffer,
                 pub->publicArea.authPolicy.buffer + pub->publicArea.authPolicy.size);
  }
  ADD_FAILURE() << "no MRK in " << store;
  return {};
}

Bytes Digest(const TPM2B_DIGEST& d) {
  return Bytes(d.buffer, d.buffer + d.size);
}

TEST_F(LmsMaTest, InitMakesAnMrkThatFollowsTheMaAndItBacksUp) {
  const std::string store = F("follow");
  const Lms b{store, w_->b->tcti(), {}};
  std::vector<std::string> args = {"init"};
  args.insert(args.end(), w_->ma_flags_b.begin(), w_->ma_flags_b.end());
  json init = b.Json(args);
  EXPECT_EQ(init["mrk_policy"], "follow") << init.dump();
  // store.json keeps the MA's policy key and its approval of the MA key; the MRK's policy is
  // PolicyAuthorize by that key.
  json ma_key = json::parse(Slurp(store + "/store.json"))["ma_key"];
  ASSERT_TRUE(ma_key.contains("policy_key")) << ma_key.dump();
  auto approval = tpm::ApprovalFromWire(*Base64Decode(ma_key["policy_key"].get<std::string>()),
                                        *Base64Decode(ma_key["approval"].get<std::string>()),
                                        *HexDecode(ma_key["name"].get<std::string>()));
  ASSERT_TRUE(approval.has_value()) << approval.error().ToString();
  auto follow = tpm::AuthorizePolicy(*tpm::PolicyKeyName(*approval), tpm::DuplicationPolicyRef());
  ASSERT_TRUE(follow.has_value());
  EXPECT_EQ(MrkPolicyOf(store, w_->b), Digest(*follow));
  // A backup duplicates it under the approval; the MA takes it.
  b.Json({"keygen", "--type", "ecc-sign", "--label", "follows"});
  json up = b.Json({"backup"});
  EXPECT_TRUE(up.value("uploaded", false)) << up.dump();
  EXPECT_EQ(b.Json({"status"})["store"]["mrk_policy"], "follow");
  EXPECT_NE(b({"status"}).out.find("MRK policy   follows the MA"), std::string::npos);

  // --mrk-policy fixed: bound to the MA key, as every MRK was before.
  const std::string fixed = F("fixed");
  const Lms f{fixed, w_->b->tcti(), {}};
  args.push_back("--mrk-policy");
  args.push_back("fixed");
  args[0] = "init";
  json bound = f.Json(args);
  EXPECT_EQ(bound["mrk_policy"], "fixed") << bound.dump();
  EXPECT_FALSE(json::parse(Slurp(fixed + "/store.json"))["ma_key"].contains("policy_key"));
  auto select = tpm::DuplicationSelectPolicy(*HexDecode(ma_key["name"].get<std::string>()));
  ASSERT_TRUE(select.has_value());
  EXPECT_EQ(MrkPolicyOf(fixed, w_->b), Digest(*select));
  EXPECT_EQ(f.Json({"status"})["store"]["mrk_policy"], "fixed");
}

TEST_F(LmsMaTest, AnMaWithoutAPolicyKeyGetsBoundMrksAndRefusesFollowingOnes) {
  std::string why;
  TempDir d;
  auto plain = MaInstance::Start({MA_ADMIN_PATH, MA_SERVER_PATH}, d.path(),
                                 {w_->a->RootCaCertPath()}, &why, {"--no-policy-key"});
  ASSERT_NE(plain, nullptr) << why;
  const std::vector<std::string> ma = {"--ma", plain->url(), "--ma-ca", plain->ca_file()};
  const std::string refused = F("no-policy-refused");
  const Lms r{refused, w_->a->tcti(), ma};
  EXPECT_FAILS_WITH(r({"init", "--mrk-policy", "follow"}), 1, "publishes no policy-signing key");
  EXPECT_FALSE(std::filesystem::exists(refused + "/store.json"));
  const Lms ok{F("no-policy"), w_->a->tcti(), ma};
  json init = ok.Json({"init"});
  EXPECT_EQ(init["mrk_policy"], "fixed") << init.dump();
  // --ma-key-public gives no approval either (even this MA's own key, as GetMAKey gives it).
  auto key = FetchMaKey({.url = w_->ma->url(),
                         .ca_file = w_->ma->ca_file(),
                         .ek_intermediates = {},
                         .ek_cert = {},
                         .owner_label = {},
                         .timeout_s = 30});
  ASSERT_TRUE(key.has_value()) << key.error().ToString();
  ASSERT_FALSE(key->policy_key.empty());
  testing::WriteFileOrDie(F("ma-key.pub"), key->public_area);
  EXPECT_FAILS_WITH(r({"init", "--mrk-policy", "follow", "--ma-key-public", F("ma-key.pub")}), 1,
                    "drop --ma-key-public");
  EXPECT_FALSE(std::filesystem::exists(refused + "/store.json"));
}

}  // namespace
}  // namespace tpmma::lms
