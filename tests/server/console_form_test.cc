// SPDX-License-Identifier: GPL-2.0-or-later
// What the console takes from a request before a page sees it: form fields (decoded, or
// refused as a whole), one cookie, and the three locks against a forged form (csrf.h).
#include <gtest/gtest.h>

#include <string>

#include "server/console/csrf.h"
#include "server/console/form.h"

namespace tpmma::server::console {
namespace {

TEST(ConsoleFormTest, DecodesPlusPercentAndUtf8) {
  auto f = Form::Parse("q=laptop+4711&reason=ticket%204711%3A+board%20%C3%A9&empty=&flag");
  ASSERT_TRUE(f.has_value()) << f.error().ToString();
  EXPECT_EQ(f->Get("q"), "laptop 4711");
  EXPECT_EQ(f->Get("reason"), "ticket 4711: board \xc3\xa9");
  EXPECT_TRUE(f->Has("empty"));
  EXPECT_TRUE(f->Has("flag"));
  EXPECT_EQ(f->Get("absent"), "");
  EXPECT_FALSE(f->Has("absent"));
  ASSERT_TRUE(Form::Parse("").has_value());
  ASSERT_TRUE(Form::Parse("&&a=1&").has_value());
}

TEST(ConsoleFormTest, RefusesWhatAPageWouldHaveToGuess) {
  for (const char* bad : {"q=%", "q=%4", "q=%ZZ", "q=a%00b", "q=%0a", "q=%1b%5b2J", "q=%C3",
                          "q=%FF", "q=%C2%9B", "a=1&a=2"}) {
    auto f = Form::Parse(bad);
    EXPECT_FALSE(f.has_value()) << bad;
    if (!f) {
      EXPECT_EQ(f.error().code(), Code::kInvalidArgument) << bad;
    }
  }
  std::string many;
  for (int i = 0; i < 33; ++i) many += "f" + std::to_string(i) + "=x&";
  EXPECT_FALSE(Form::Parse(many).has_value());
}

TEST(ConsoleFormTest, PathQueryAndCookie) {
  EXPECT_EQ(PathOf("/console/platform?id=ab"), "/console/platform");
  EXPECT_EQ(QueryOf("/console/platform?id=ab"), "id=ab");
  EXPECT_EQ(QueryOf("/console/"), "");
  EXPECT_EQ(CookieValue("a=1; __Host-tpmma-csrf=abc; b=2", kCsrfCookie), "abc");
  EXPECT_EQ(CookieValue("a=1;b=2", kCsrfCookie), "");
  EXPECT_EQ(CookieValue("", kCsrfCookie), "");
  EXPECT_EQ(QueryEscape("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
}

class ConsoleCsrfTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto v = NewCsrfCookieValue();
    ASSERT_TRUE(v.has_value());
    cookie_ = *v;
    post_.method = "POST";
    post_.host = "ma.example.org:8443";
    post_.origin = "https://ma.example.org:8443";
    post_.cookie = std::string(kCsrfCookie) + "=" + cookie_;
    post_.sec_fetch_site = "same-origin";
  }
  std::string cookie_;
  WebRequest post_;
  const std::string fp_ = std::string(64, 'a');
};

TEST_F(ConsoleCsrfTest, TheConsolesOwnFormPasses) {
  EXPECT_EQ(cookie_.size(), 64u);
  EXPECT_NE(CsrfSetCookie(cookie_).find("Secure; HttpOnly; SameSite=Strict"), std::string::npos);
  EXPECT_TRUE(CheckCsrf(post_, CsrfToken(cookie_, fp_), fp_).ok());
  post_.sec_fetch_site.clear();  // an older browser: Origin and the token still hold
  EXPECT_TRUE(CheckCsrf(post_, CsrfToken(cookie_, fp_), fp_).ok());
}

TEST_F(ConsoleCsrfTest, EachLockHoldsOnItsOwn) {
  const std::string token = CsrfToken(cookie_, fp_);
  auto refused = [&](WebRequest r, const std::string& t, const std::string& fp, const char* words) {
    Status s = CheckCsrf(r, t, fp);
    EXPECT_EQ(s.code(), Code::kPermissionDenied) << words;
    EXPECT_NE(s.message().find(words), std::string::npos) << s.message();
  };
  WebRequest r = post_;
  r.origin = "https://evil.example";
  refused(r, token, fp_, "another site");
  r.origin = "null";  // a sandboxed frame, or Referrer-Policy: no-referrer
  refused(r, token, fp_, "another site");
  r.origin.clear();
  refused(r, token, fp_, "another site");
  r = post_;
  r.sec_fetch_site = "cross-site";
  refused(r, token, fp_, "Sec-Fetch-Site");
  r = post_;
  r.cookie = "other=1";
  refused(r, token, fp_, "without the console's cookie");
  refused(post_, "", fp_, "token");
  refused(post_, std::string(64, '0'), fp_, "token");
  // A token made for another operator's certificate, or under another cookie.
  refused(post_, CsrfToken(cookie_, std::string(64, 'b')), fp_, "token");
  refused(post_, CsrfToken(std::string(64, 'c'), fp_), fp_, "token");
}

}  // namespace
}  // namespace tpmma::server::console
