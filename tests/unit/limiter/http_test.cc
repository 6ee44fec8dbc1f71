// Rate-limit response headers and the client address to limit by.
#include <gtest/gtest.h>

#include <map>

#include "cachet/http.h"

namespace cachet {
namespace {

using std::chrono::milliseconds;

std::map<std::string, std::string> AsMap(const std::vector<HttpHeader>& headers) {
  std::map<std::string, std::string> m;
  for (const auto& h : headers) m[h.name] = h.value;
  return m;
}

TEST(RateLimitHeadersTest, AllowedResponseCarriesDraftAndLegacyHeaders) {
  Decision d;
  d.limit = 100;
  d.window = milliseconds(3600000);
  d.remaining = 37;
  d.reset = milliseconds(1199001);
  const auto h = AsMap(RateLimitHeaders(d));
  EXPECT_EQ(h.at("RateLimit-Policy"), "\"default\";q=100;w=3600");
  EXPECT_EQ(h.at("RateLimit"), "\"default\";r=37;t=1200");
  EXPECT_EQ(h.at("RateLimit-Limit"), "100");
  EXPECT_EQ(h.at("RateLimit-Remaining"), "37");
  EXPECT_EQ(h.at("RateLimit-Reset"), "1200");
  EXPECT_EQ(h.count("Retry-After"), 0u);
}

TEST(RateLimitHeadersTest, DeniedResponseAddsRetryAfterRoundedUp) {
  Decision d;
  d.allowed = false;
  d.limit = 10;
  d.window = milliseconds(1000);
  d.retry_after = milliseconds(1);
  d.reset = milliseconds(1);
  const auto h = AsMap(RateLimitHeaders(d, "per_second"));
  EXPECT_EQ(h.at("Retry-After"), "1");
  EXPECT_EQ(h.at("RateLimit-Policy"), "\"per_second\";q=10;w=1");
  EXPECT_EQ(h.at("RateLimit"), "\"per_second\";r=0;t=1");
}

TEST(ClientAddressTest, PeerIsUsedWhenNotATrustedProxy) {
  const auto trusted = TrustedProxies::Parse({"10.0.0.0/8"}).value();
  EXPECT_EQ(ClientAddress("203.0.113.9", "1.2.3.4", trusted).value(), "203.0.113.9");
}

TEST(ClientAddressTest, ForwardedForIsBelievedOnlyFromTrustedProxies) {
  const auto trusted = TrustedProxies::Parse({"10.0.0.0/8", "::1/128"}).value();
  // The client may forge the left part; our proxies appended the right part.
  EXPECT_EQ(ClientAddress("10.1.2.3", "6.6.6.6, 198.51.100.7, 10.9.9.9", trusted).value(), "198.51.100.7");
  EXPECT_EQ(ClientAddress("::1", "2001:db8::5", trusted).value(), "2001:db8::5");
  EXPECT_EQ(ClientAddress("10.1.2.3", "", trusted).value(), "10.1.2.3");
  EXPECT_EQ(ClientAddress("10.1.2.3", "not-an-ip, 10.2.2.2", trusted).value(), "10.2.2.2");
}

TEST(ClientAddressTest, AddressesAreCanonical) {
  const auto none = TrustedProxies::Parse({}).value();
  EXPECT_EQ(ClientAddress("2001:DB8:0:0:0:0:0:1", "", none).value(), "2001:db8::1");
  EXPECT_EQ(ClientAddress("::ffff:192.0.2.1", "", none).value(), "192.0.2.1");
  EXPECT_EQ(ClientAddress("[2001:db8::1]", "", none).value(), "2001:db8::1");
  EXPECT_FALSE(ClientAddress("example.com", "", none).has_value());
}

TEST(TrustedProxiesTest, CidrMatching) {
  const auto t = TrustedProxies::Parse({"192.168.4.0/22", "2001:db8:abcd::/48", "127.0.0.1"}).value();
  EXPECT_TRUE(t.Contains("192.168.7.255"));
  EXPECT_FALSE(t.Contains("192.168.8.0"));
  EXPECT_TRUE(t.Contains("2001:db8:abcd:ffff::1"));
  EXPECT_FALSE(t.Contains("2001:db8:abce::1"));
  EXPECT_TRUE(t.Contains("127.0.0.1"));
  EXPECT_FALSE(t.Contains("127.0.0.2"));
  EXPECT_TRUE(t.Contains("::ffff:192.168.5.1"));
  EXPECT_FALSE(TrustedProxies::Parse({"10.0.0.0/33"}).has_value());
  EXPECT_FALSE(TrustedProxies::Parse({"ten.0.0.0/8"}).has_value());
}

}  // namespace
}  // namespace cachet
