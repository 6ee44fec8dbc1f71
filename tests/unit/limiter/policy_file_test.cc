// The policy file: a full example parses; every kind of bad policy is
// refused with a message naming the line.
#include <gtest/gtest.h>

#include "cachet/policy_file.h"

namespace cachet {
namespace {

using std::chrono::minutes;

constexpr const char* kExample = R"(# tiers
[tier.regular]
per_minute = 100/1m sliding_window
per_hour   = 1000/1h fixed_window local   # each host its share

[tier.premium]
per_minute = 1000/1m token_bucket burst=200
trial      = 500/1m shadow   # counted, never denies

[override.key-vip]
per_minute = 5000/1m

[keys]
key-abc = premium
key-def = regular
)";

TEST(PolicyFileTest, ParsesTiersOverridesAndKeys) {
  auto parsed = ParsePolicy(kExample, "policy.ini");
  ASSERT_TRUE(parsed.has_value()) << parsed.error().ToString();
  const RateLimitPolicy& p = parsed->policy;
  ASSERT_EQ(p.tiers.size(), 2u);
  const Tier* regular = p.FindTier("regular");
  ASSERT_NE(regular, nullptr);
  ASSERT_EQ(regular->rules.size(), 2u);
  EXPECT_EQ(regular->rules[0].limit, 100u);
  EXPECT_EQ(regular->rules[0].window, minutes(1));
  EXPECT_EQ(regular->rules[1].algorithm, Algorithm::kFixedWindow);
  EXPECT_FALSE(regular->rules[0].local);
  EXPECT_TRUE(regular->rules[1].local);
  const Tier* premium = p.FindTier("premium");
  EXPECT_EQ(premium->rules[0].algorithm, Algorithm::kTokenBucket);
  EXPECT_EQ(premium->rules[0].burst, 200u);
  EXPECT_TRUE(premium->rules[1].shadow);
  EXPECT_EQ(premium->rules[1].algorithm, Algorithm::kSlidingWindow);  // the default
  EXPECT_EQ(p.overrides.at("key-vip")[0].limit, 5000u);
  EXPECT_EQ(parsed->TierOf("key-abc", "anonymous"), "premium");
  EXPECT_EQ(parsed->TierOf("nobody", "anonymous"), "anonymous");
}

TEST(PolicyFileTest, PeersAreListedInFileOrderAndAbsentWithoutTheSection) {
  auto without = ParsePolicy(kExample, "policy.ini");
  ASSERT_TRUE(without.has_value());
  EXPECT_FALSE(without->peers.has_value());
  auto with = ParsePolicy(std::string(kExample) + "[peers]\nweb-2 = tcp://10.0.0.2:7400\nweb-1 = ipc:///run/l.sock\n",
                          "policy.ini");
  ASSERT_TRUE(with.has_value()) << with.error().ToString();
  ASSERT_TRUE(with->peers.has_value());
  EXPECT_EQ(*with->peers, (std::vector<std::string>{"tcp://10.0.0.2:7400", "ipc:///run/l.sock"}));
  auto empty = ParsePolicy("[tier.t]\nr = 1/1s\n[peers]\n", "policy.ini");
  ASSERT_TRUE(empty.has_value());
  ASSERT_TRUE(empty->peers.has_value());  // a limiter alone: no peers
  EXPECT_TRUE(empty->peers->empty());
}

struct BadCase {
  const char* text;
  const char* line;     // expected "policy.ini:N:"
  const char* mention;  // expected words in the message
};

class BadPolicyTest : public ::testing::TestWithParam<BadCase> {};

TEST_P(BadPolicyTest, IsRefusedNamingTheLine) {
  const BadCase& c = GetParam();
  auto parsed = ParsePolicy(c.text, "policy.ini");
  ASSERT_FALSE(parsed.has_value()) << c.text;
  EXPECT_EQ(parsed.error().code, ErrorCode::kInvalidArgument);
  EXPECT_NE(parsed.error().message.find(c.line), std::string::npos) << parsed.error().message;
  EXPECT_NE(parsed.error().message.find(c.mention), std::string::npos) << parsed.error().message;
}

INSTANTIATE_TEST_SUITE_P(
    Cases, BadPolicyTest,
    ::testing::Values(
        BadCase{"[tier.a]\nr = -5/1m\n", "policy.ini:2:", "negative"},
        BadCase{"[tier.a]\nr = 0/1m\n", "policy.ini:2:", "limit"},
        BadCase{"[tier.a]\n\nr = 10/0s\n", "policy.ini:3:", "window"},
        // Its milliseconds would pass int64: refused, not wrapped (fuzzing).
        BadCase{"[tier.a]\nr = 10/25555555555555h\n", "policy.ini:2:", "is too long"},
        BadCase{"[tier.a]\nr = 10/999999999999999999d\n", "policy.ini:2:", "is too long"},
        BadCase{"[tier.a]\nr = 10/1m leaky_bucket\n", "policy.ini:2:", "leaky_bucket"},
        BadCase{"[tier.a]\nr = 10/1m\n[keys]\nk = gold\n", "policy.ini:4:", "unknown tier 'gold'"},
        BadCase{"[tier.a]\nr = 10/1\n", "policy.ini:2:", "unit"},
        BadCase{"[tiers]\n", "policy.ini:1:", "unknown section"},
        BadCase{"r = 10/1m\n", "policy.ini:1:", "outside any section"},
        BadCase{"[tier.a]\nr = 10/1m\nr = 20/1m\n", "policy.ini:3:", "twice"},
        BadCase{"[tier.a]\nr = 10/1m fixed_window burst=5\n", "policy.ini:2:", "burst"},
        BadCase{"[tier.a]\nr 10/1m\n", "policy.ini:2:", "NAME = VALUE"},
        BadCase{"[tier.a]\nr = 10/1m\n[tier.a]\n", "policy.ini:3:", "defined twice"},
        BadCase{"[tier.a]\nr = 10/1m\n[peers]\nb = 10.0.0.2:7400\n", "policy.ini:4:", "expected an endpoint"},
        BadCase{"[tier.a]\nr = 10/1m\n[peers]\nb = tcp://h:1\nb = tcp://h:2\n", "policy.ini:5:", "'b' appears twice"},
        BadCase{"[tier.a]\nr = 10/1m\n[peers]\n[peers]\n", "policy.ini:4:", "[peers] appears twice"}));

TEST(PolicyFileTest, TierWithoutRulesIsRefused) {
  auto parsed = ParsePolicy("[tier.empty]\n", "p");
  ASSERT_FALSE(parsed.has_value());
  EXPECT_NE(parsed.error().message.find("no rules"), std::string::npos);
}

TEST(PolicyFileTest, MissingFileIsAnIoError) {
  auto parsed = LoadPolicyFile("/nonexistent/policy.ini");
  ASSERT_FALSE(parsed.has_value());
  EXPECT_EQ(parsed.error().code, ErrorCode::kIo);
}

}  // namespace
}  // namespace cachet
