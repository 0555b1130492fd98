// SPDX-License-Identifier: GPL-2.0-or-later
// Regression tests for the fuzzing findings of issue #13 in the lms store readers and the
// ma-server config parser (the tpm/ and schema/ ones are in tests/tpm/marshal_test.cc and
// tests/schema/package_test.cc). Each reproducer is also in corpus/<target>/.
#include <gtest/gtest.h>

#include <string>

#include "client/lms/keystore.h"
#include "server/config.h"

namespace tpmma {
namespace {

// Long enough that "<what> ak" is a heap string (no small-string buffer), as a real store
// path is: the freed buffer is then overwritten by the allocator, and the message shows it
// even without ASan.
const std::string kMaJson = "/var/lib/tpm-ma/a-store-directory-with-a-long-name/ma.json";

std::string MaStateError(const std::string& text) {
  auto r = lms::MaStateFromJson(text, kMaJson);
  EXPECT_FALSE(r.has_value());
  return r.has_value() ? std::string() : r.error().message();
}

// Fields kept a string_view of std::string(what) + " ak", a temporary: any damaged
// sub-object of ma.json read freed memory to build its error message.
TEST(LmsStoreFinding, DamagedMaJsonSubObjectIsNamed) {
  EXPECT_EQ(MaStateError(R"({"ak":{},"authenticated_at":0,"format":1,"platform_id":"",)"
                         R"("signing_key":{}})"),
            kMaJson + " ak: field 'public' is missing");
  EXPECT_EQ(MaStateError(R"({"ak":{"public":"","private":"","srk_name":""},)"
                         R"("authenticated_at":0,"format":1,"platform_id":"",)"
                         R"("signing_key":{"public":7}})"),
            kMaJson + " signing_key: field 'public' is not a string");
  EXPECT_EQ(MaStateError(R"({"ak":{"public":"","private":"","srk_name":""},)"
                         R"("authenticated_at":0,"format":1,"platform_id":"",)"
                         R"("signing_key":{"public":"","private":""},"signers":[{}]})"),
            kMaJson + " signers[]: field 'platform_id' is missing");
}

constexpr const char* kRequired = R"(
[tls]
certificate = "tls/cert.pem"
private_key = "tls/key.pem"
[ma]
private_key = "ma/key.pem"
certificate = "/etc/tpm-ma/ma.crt"
[vault]
path = "vault.db"
)";

void ExpectConfigError(const std::string& text, const std::string& substring) {
  SCOPED_TRACE(text);
  auto r = server::ParseConfig(text, "/srv/ma", "ma.toml");
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), Code::kInvalidArgument);
  EXPECT_NE(r.error().message().find(substring), std::string::npos) << r.error().ToString();
}

// marzer/tomlplusplus#190: a non-ASCII character after a line-ending backslash in a
// multi-line basic string reaches TOML_UNREACHABLE (so does one outside any string).
TEST(ConfigFinding, TomlplusplusIssue190NonAsciiAfterLineEndingBackslash) {
  ExpectConfigError(std::string(kRequired) + "[server]\nname = \"\"\"\\\n\xC2\xA7\"\"\"\n",
                    "ma.toml:12: a non-ASCII character right after a backslash");
  ExpectConfigError(std::string(kRequired) + "x = \"\"\"\\\xC2\xA7\"\"\"\n",
                    "right after a backslash");
  ExpectConfigError(std::string(kRequired) + "x = \"\"\"a\\  \n \t\n  \xE2\xB8\x80\"\"\"\n",
                    "right after a backslash");
  ExpectConfigError(std::string(kRequired) + "x = 1\xC3\xA9\n", "ma.toml:10: a non-ASCII");
  ExpectConfigError("\xC3\xA9 = 1\n", "ma.toml:1: a non-ASCII character outside a string");
}

// marzer/tomlplusplus#294 ("[&") and the same precondition through "[[[" (PR #301).
TEST(ConfigFinding, TomlplusplusIssue294TableHeaderWithoutKey) {
  for (const char* text : {"[&", "[[[1]]]", "[[[a]]]", "[[[]]", "[[=", "[\t&]", "[[ &]]"}) {
    ExpectConfigError(text, "ma.toml:1: a table header must start with a key name");
  }
  ExpectConfigError(std::string(kRequired) + "  [&]\n", "ma.toml:10: a table header");
}

// The guard refuses nothing TOML allows: non-ASCII in strings and comments, arrays and
// inline tables at the start of a continuation line, headers with quoted keys.
TEST(ConfigFinding, GuardKeepsValidConfigs) {
  const std::string text = std::string("# café ✓\n") + kRequired +
                           "[server]\nlisten_address = \"127.0.0.1\" # ü\n"
                           "[\"escrow\"]\n";
  auto r = server::ParseConfig(text, "/srv/ma", "ma.toml");
  ASSERT_TRUE(r.has_value()) << r.error().ToString();
  EXPECT_EQ(r->listen_address, "127.0.0.1");
  auto arrays = server::ParseConfig(std::string(kRequired) +
                                        "[x]\na = [\n  [1, 2],\n  [\"\xC3\xA9\"],\n]\n"
                                        "b = '''\n\xC3\xA9'''\nc = \"\"\"\\\n  x\xC3\xA9\"\"\"\n",
                                    "/srv/ma", "ma.toml");
  // Unknown sections are toml-valid; whatever ParseConfig says, it is not the guard.
  if (!arrays.has_value()) {
    EXPECT_EQ(arrays.error().message().find("non-ASCII"), std::string::npos)
        << arrays.error().ToString();
    EXPECT_EQ(arrays.error().message().find("table header"), std::string::npos)
        << arrays.error().ToString();
  }
}

}  // namespace
}  // namespace tpmma
