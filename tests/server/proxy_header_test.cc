// SPDX-License-Identifier: GPL-2.0-or-later
// ParseProxyV1 against haproxy's doc/proxy-protocol.txt (section 2.1): what a proxy sends,
// and the near misses a client could try if it were ever read from one.
#include "server/proxy_header.h"

#include <gtest/gtest.h>

#include <string>

namespace tpmma::server {
namespace {

TEST(ProxyHeaderTest, Tcp4AndTcp6NameTheSource) {
  auto v4 = ParseProxyV1("PROXY TCP4 192.0.2.7 198.51.100.1 56324 443\r\n");
  ASSERT_TRUE(v4.has_value()) << v4.error().ToString();
  ASSERT_TRUE(v4->has_value());
  EXPECT_EQ((*v4)->address, "192.0.2.7");
  EXPECT_EQ((*v4)->port, 56324);
  auto v6 = ParseProxyV1("PROXY TCP6 2001:0db8:0:0:0:0:0:0001 ::1 65535 0\r\n");
  ASSERT_TRUE(v6.has_value()) << v6.error().ToString();
  EXPECT_EQ((*v6)->address, "2001:db8::1");  // canonical, as the log and limits key it
  EXPECT_EQ((*v6)->port, 65535);
}

TEST(ProxyHeaderTest, UnknownMeansTheProxyItself) {
  for (const char* line : {"PROXY UNKNOWN\r\n", "PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n"}) {
    auto r = ParseProxyV1(line);
    ASSERT_TRUE(r.has_value()) << line;
    EXPECT_FALSE(r->has_value()) << line;
  }
}

TEST(ProxyHeaderTest, NearMissesAreRefused) {
  const char* bad[] = {
      "",
      "\r\n",
      "PROXY TCP4 192.0.2.7 198.51.100.1 56324 443",      // no CRLF
      "PROXY TCP4 192.0.2.7 198.51.100.1 56324 443\n",    // LF only
      "proxy TCP4 192.0.2.7 198.51.100.1 56324 443\r\n",  // case matters
      "PROXY TCP5 192.0.2.7 198.51.100.1 56324 443\r\n",
      "PROXY TCP4 2001:db8::1 198.51.100.1 56324 443\r\n",  // v6 address under TCP4
      "PROXY TCP6 192.0.2.7 ::1 56324 443\r\n",
      "PROXY TCP4 192.0.2.07 198.51.100.1 56324 443\r\n",  // leading zero
      "PROXY TCP4 192.0.2.7 198.51.100.1 65536 443\r\n",
      "PROXY TCP4 192.0.2.7 198.51.100.1 056324 443\r\n",
      "PROXY TCP4 192.0.2.7 198.51.100.1 -1 443\r\n",
      "PROXY TCP4 192.0.2.7 198.51.100.1 56324\r\n",
      "PROXY TCP4 192.0.2.7 198.51.100.1 56324 443 extra\r\n",
      "PROXY TCP4  192.0.2.7 198.51.100.1 56324 443\r\n",  // two spaces
      "PROXY TCP4 192.0.2.7 198.51.100.1 56324 443 \r\n",
      "PROXY TCP4 192.0.2.7\r198.51.100.1 56324 443\r\n",
      "PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n",  // no zone ids
  };
  for (const char* line : bad) {
    auto r = ParseProxyV1(line);
    EXPECT_FALSE(r.has_value()) << "accepted: " << line;
    if (!r.has_value()) {
      EXPECT_EQ(r.error().code(), Code::kInvalidArgument);
    }
  }
}

TEST(ProxyHeaderTest, At107BytesAndNoFurther) {
  // The spec's worst case: UNKNOWN followed by two full-length IPv6 addresses and ports.
  const std::string a = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
  std::string longest = "PROXY UNKNOWN " + a + " " + a + " 65535 65535\r\n";
  ASSERT_EQ(longest.size(), kProxyV1MaxBytes);
  EXPECT_TRUE(ParseProxyV1(longest).has_value());
  auto tcp6 = ParseProxyV1("PROXY TCP6 " + a + " " + a + " 65535 65535\r\n");
  ASSERT_TRUE(tcp6.has_value());
  EXPECT_EQ((*tcp6)->address, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff");
  EXPECT_FALSE(ParseProxyV1("PROXY UNKNOWN " + a + " " + a + " 65535 655355\r\n").has_value());
}

}  // namespace
}  // namespace tpmma::server
