// SPDX-License-Identifier: GPL-2.0-or-later
// Platform inventory end to end (issue #12): two lms stores on two swtpms authenticate to a
// real ma-server with different owner labels; ma-admin shows, finds and approves them by
// what a helpdesk knows (owner label, id prefix), and refuses a hostname both share.
#include <unistd.h>

#include "tests/lms/lms_ma_fixture.h"

namespace tpmma::lms {
namespace {

struct InventoryWorld {
  TempDir dir;
  std::unique_ptr<MaInstance> ma;
  Lms a, b;
  std::string id_a, id_b;
  Swtpm* tpm_a = nullptr;
};

Bytes DerOfPemFile(const std::string& path) {
  const std::string pem = Slurp(path);
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  X509Ptr cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
  if (!cert) return {};
  unsigned char* der = nullptr;
  const int n = i2d_X509(cert.get(), &der);
  Bytes out(der, der + std::max(n, 0));
  OPENSSL_free(der);
  return out;
}

std::string AuthenticateWithLabel(const Lms& l, const std::string& label, std::string* id) {
  Ran r = l({"authenticate", "--owner-label", label, "--json"});
  json j = json::parse(r.out, nullptr, false);
  if (r.exit_code != 0 || j.is_discarded()) return "lms authenticate: " + r.all();
  *id = j.value("platform_id", "");
  return "";
}

std::string Build(InventoryWorld& w) {
  std::string why;
  Swtpm* ta = testing::SharedSwtpm(0, &why);
  Swtpm* tb = ta != nullptr ? testing::SharedSwtpm(1, &why) : nullptr;
  if (tb == nullptr) return "swtpm: " + why;
  const std::string roots = w.dir.File("ek-roots.pem");
  Spit(roots, Slurp(ta->RootCaCertPath()) + Slurp(tb->RootCaCertPath()));
  w.ma = MaInstance::Start({MA_ADMIN_PATH, MA_SERVER_PATH}, w.dir.path(), {roots}, &why);
  if (w.ma == nullptr) return "ma-server: " + why;
  auto flags = [&](Swtpm* t) {
    return std::vector<std::string>{
        "--ma",          w.ma->url(),         "--ma-ca",
        w.ma->ca_file(), "--ek-intermediate", t->IntermediateCaCertPath()};
  };
  w.tpm_a = ta;
  w.a = {w.dir.File("store-a"), ta->tcti(), flags(ta)};
  w.b = {w.dir.File("store-b"), tb->tcti(), flags(tb)};
  for (const Lms* l : {&w.a, &w.b}) {
    Ran r = (*l)({"init", "--json"});
    if (r.exit_code != 0) return "lms init: " + r.all();
  }
  std::string err = AuthenticateWithLabel(w.a, "Alice Example", &w.id_a);
  if (err.empty()) err = AuthenticateWithLabel(w.b, "Bob Builder", &w.id_b);
  return err;
}

class LmsMaInventoryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string err;
    bool skip = false;
    w_ = testing::BuildOnce(&Build, &err, &skip);
    if (skip) GTEST_SKIP() << "swtpm not available: " << err;
    ASSERT_NE(w_, nullptr) << err;
  }
  Ran Admin(std::vector<std::string> args) const {
    args.insert(args.begin(), MA_ADMIN_PATH);
    args.insert(args.end(), {"--dir", w_->ma->state_dir()});
    return Exec(args);
  }
  static std::string Hostname() {
    char host[256] = {};
    gethostname(host, sizeof host - 1);
    return host;
  }
  InventoryWorld* w_ = nullptr;
};

TEST_F(LmsMaInventoryTest, ShowHasHostnameTpmAndOwnerLabel) {
  Ran r = Admin({"--json", "platforms", "show", w_->id_a});
  ASSERT_EQ(r.exit_code, 0) << r.all();
  json inv = ParseJson(r)["platform"]["inventory"];
  ASSERT_TRUE(inv.is_object()) << r.out;
  EXPECT_EQ(inv.value("hostname", ""), Hostname());
  EXPECT_EQ(inv.value("tpm_manufacturer", ""), "IBM");  // swtpm
  EXPECT_EQ(inv.value("owner_label", ""), "Alice Example");
  EXPECT_FALSE(inv.value("kernel_release", "").empty());
  EXPECT_NE(inv.value("reported_at", "-"), "-");

  // Text mode, by owner label instead of the id.
  r = Admin({"platforms", "show", "bob builder"});
  ASSERT_EQ(r.exit_code, 0) << r.all();
  EXPECT_NE(r.out.find(w_->id_b), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("OwnerLabel       Bob Builder"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("TpmManufacturer  IBM"), std::string::npos) << r.out;
}

TEST_F(LmsMaInventoryTest, ListShowsFullIdsAndFindByOwnerFindsOne) {
  Ran r = Admin({"platforms", "list"});
  ASSERT_EQ(r.exit_code, 0) << r.all();
  EXPECT_NE(r.out.find(w_->id_a), std::string::npos) << r.out;  // in full
  EXPECT_NE(r.out.find("Alice Example"), std::string::npos) << r.out;

  r = Admin({"--json", "platforms", "find", "ALICE"});
  ASSERT_EQ(r.exit_code, 0) << r.all();
  json found = ParseJson(r)["platforms"];
  ASSERT_EQ(found.size(), 1u) << r.out;
  EXPECT_EQ(found[0].value("id", ""), w_->id_a);
}

TEST_F(LmsMaInventoryTest, ApproveByOwnerLabelAndIdPrefix) {
  Ran r = Admin({"--json", "approve", "--old", "Alice Example", "--new", w_->id_b.substr(0, 14),
                 "--reason", "board swap, ticket 1"});
  ASSERT_EQ(r.exit_code, 0) << r.all();
  json a = ParseJson(r)["approval"];
  EXPECT_EQ(a.value("old_platform", ""), w_->id_a);
  EXPECT_EQ(a.value("new_platform", ""), w_->id_b);
}

TEST_F(LmsMaInventoryTest, SharedHostnameIsAmbiguousAndUnknownIsNotFound) {
  Ran r = Admin({"approve", "--old", Hostname(), "--new", w_->id_b, "--reason", "t"});
  EXPECT_EQ(r.exit_code, 1) << r.all();
  EXPECT_NE(r.all().find("ambiguous"), std::string::npos) << r.all();
  EXPECT_NE(r.all().find(w_->id_a), std::string::npos) << r.all();
  EXPECT_NE(r.all().find(w_->id_b), std::string::npos) << r.all();

  r = Admin({"approve", "--old", "nobody-has-this-name", "--new", w_->id_b, "--reason", "t"});
  EXPECT_EQ(r.exit_code, 1) << r.all();
  EXPECT_NE(r.all().find("no platform is 'nobody-has-this-name'"), std::string::npos) << r.all();
}

TEST_F(LmsMaInventoryTest, StatusShowsWhatIsReportedAndControlCharactersAreRefused) {
  Ran r = w_->a({"status", "--json"});
  json st = ParseJson(r);
  EXPECT_EQ(st["inventory"].value("owner_label", ""), "Alice Example") << r.out;  // config.json
  EXPECT_EQ(st["inventory"].value("hostname", ""), Hostname());
  EXPECT_EQ(st["inventory"].value("tpm_manufacturer", ""), "IBM");

  EXPECT_FAILS_WITH(w_->a({"authenticate", "--owner-label", "Alice\x1b[2J"}), 1,
                    "control character");
  // Nothing was sent: the MA still has the old label.
  r = Admin({"--json", "platforms", "show", w_->id_a});
  EXPECT_EQ(ParseJson(r)["platform"]["inventory"].value("owner_label", ""), "Alice Example");
}

// lms never sends control characters; the MA must refuse them itself, naming the field.
// DEL and C1 controls are legal XML characters, so they reach the MA's own check.
TEST_F(LmsMaInventoryTest, MaRefusesControlCharactersOnTheWireAsMalformed) {
  auto tpm = esys::Tpm::Open(w_->tpm_a->tcti());
  ASSERT_TRUE(tpm.has_value()) << tpm.error().ToString();
  auto ek = ma::ChooseEk(**tpm);
  ASSERT_TRUE(ek.has_value()) << ek.error().ToString();
  auto ak = ma::CreateAttestationKey(**tpm, esys::KeyAlg::kEccP256, ek->ek_template);
  ASSERT_TRUE(ak.has_value()) << ak.error().ToString();
  for (const std::string& bad : {std::string("Mallory\x7f"), std::string("Mallory\xc2\x9b"
                                                                         "[2J")}) {
    auto client = ma::MaClient::Create({.url = w_->ma->url(), .ca_file = w_->ma->ca_file()});
    ASSERT_TRUE(client.has_value()) << client.error().ToString();
    ma::AuthenticateOptions o;
    o.ek = *ek;
    o.ek_intermediates = {DerOfPemFile(w_->tpm_a->IntermediateCaCertPath())};
    o.inventory = ma::PlatformInventory{};
    o.inventory->hostname = "fine";
    o.inventory->owner_label = bad;
    auto s = ma::Authenticate(**client, **tpm, *ak, nullptr, o);
    ASSERT_FALSE(s.has_value());
    EXPECT_EQ(s.error().code(), Code::kMalformed) << s.error().ToString();
    // The request precheck (wsdl/soap_precheck.h) refuses it before the field check
    // (storage::CheckPlatformInventory, which names the field) would.
    EXPECT_NE(s.error().message().find("control character"), std::string::npos)
        << s.error().ToString();
  }
  Ran r = Admin({"--json", "platforms", "show", w_->id_a});
  EXPECT_EQ(ParseJson(r)["platform"]["inventory"].value("owner_label", ""), "Alice Example");
}

}  // namespace
}  // namespace tpmma::lms
