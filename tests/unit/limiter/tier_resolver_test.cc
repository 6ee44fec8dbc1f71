// TierResolver: API keys to tiers from the policy file, then from the
// application's callback, else the fallback; a new policy replaces the keys.
#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "cachet/rate_limiter.h"
#include "cachet/tier_resolver.h"

namespace cachet {
namespace {

PolicyFile Parse(const std::string& text) {
  auto f = ParsePolicy(text, "test.ini");
  EXPECT_TRUE(f.has_value()) << f.error().ToString();
  return *f;
}

const char* kPolicy = "[tier.anonymous]\nr = 10/1m\n[tier.premium]\nr = 100/1m\n[keys]\nkey-a = premium\n";

TEST(TierResolverTest, FileKeysThenFallback) {
  TierResolver tiers("anonymous");
  EXPECT_EQ(tiers.TierOf("key-a"), "anonymous");  // nothing set yet
  tiers.Set(Parse(kPolicy));
  EXPECT_EQ(tiers.TierOf("key-a"), "premium");
  EXPECT_TRUE(tiers.Knows("key-a"));
  EXPECT_EQ(tiers.TierOf("key-z"), "anonymous");
  EXPECT_FALSE(tiers.Knows("key-z"));
}

TEST(TierResolverTest, ACallbackAnswersForKeysTheFileDoesNotList) {
  int calls = 0;
  TierResolver tiers("anonymous", [&](std::string_view key) -> std::optional<std::string> {
    ++calls;
    if (key.rfind("db-", 0) == 0) return std::string("premium");
    return std::nullopt;
  });
  tiers.Set(Parse(kPolicy));
  EXPECT_EQ(tiers.TierOf("db-17"), "premium");
  EXPECT_TRUE(tiers.Knows("db-17"));
  EXPECT_EQ(tiers.TierOf("other"), "anonymous");
  EXPECT_EQ(tiers.TierOf("key-a"), "premium");  // the file answers first: no call
  EXPECT_EQ(calls, 3);
}

TEST(TierResolverTest, ANewPolicyReplacesTheKeys) {
  TierResolver tiers("anonymous");
  tiers.Set(Parse(kPolicy));
  tiers.Set(Parse("[tier.anonymous]\nr = 10/1m\n[tier.premium]\nr = 100/1m\n[keys]\nkey-b = premium\n"));
  EXPECT_EQ(tiers.TierOf("key-a"), "anonymous");
  EXPECT_EQ(tiers.TierOf("key-b"), "premium");
}

TEST(TierResolverTest, IdentifyCountsAKnownKeyUnderItsNameInItsTier) {
  TierResolver tiers("anonymous");
  tiers.Set(Parse(kPolicy));
  const Identity who = tiers.Identify("key-a", "203.0.113.9");
  EXPECT_EQ(who.key, "key-a");
  EXPECT_EQ(who.tier, "premium");
  EXPECT_TRUE(who.known_key);
}

TEST(TierResolverTest, IdentifyCountsUnknownOrMissingKeysUnderTheClientAddress) {
  TierResolver tiers("anonymous");
  tiers.Set(Parse(kPolicy));
  for (const char* key : {"", "invented-1", "invented-2", "ip:203.0.113.9"}) {
    const Identity who = tiers.Identify(key, "203.0.113.9");
    EXPECT_EQ(who.key, "ip:203.0.113.9") << key;
    EXPECT_EQ(who.tier, "anonymous") << key;
    EXPECT_FALSE(who.known_key) << key;
  }
}

TEST(TierResolverTest, IdentifyAsksTheCallbackAndNotForAMissingKey) {
  std::vector<std::string> asked;
  TierResolver tiers("anonymous", [&](std::string_view key) -> std::optional<std::string> {
    asked.emplace_back(key);
    return key == "db-1" ? std::optional<std::string>("premium") : std::nullopt;
  });
  EXPECT_EQ(tiers.Identify("db-1", "192.0.2.1").key, "db-1");
  EXPECT_EQ(tiers.Identify("db-1", "192.0.2.1").tier, "premium");
  EXPECT_EQ(tiers.Identify("", "192.0.2.1").key, "ip:192.0.2.1");
  EXPECT_EQ(asked, (std::vector<std::string>{"db-1", "db-1"}));
}

// The attack the call exists for: a client inventing a new API key for each
// request still gets only its address's allowance.
TEST(TierResolverTest, InventedKeysShareTheAllowanceOfTheirAddress) {
  const PolicyFile file = Parse(
      "[tier.anonymous]\nr = 3/1m fixed_window\n[tier.premium]\nr = 100/1m\n"
      "[keys]\nkey-a = premium\n");
  FakeClock clock;
  auto limiter = RateLimiter::Create(file.policy, clock);
  ASSERT_TRUE(limiter.has_value()) << limiter.error().ToString();
  TierResolver tiers("anonymous");
  tiers.Set(file);
  int admitted = 0;
  for (int i = 0; i < 10; ++i) {
    const Identity who = tiers.Identify("invented-" + std::to_string(i), "198.51.100.4");
    auto d = (*limiter)->Check(who.key, who.tier);
    ASSERT_TRUE(d.has_value()) << d.error().ToString();
    admitted += d->allowed;
  }
  EXPECT_EQ(admitted, 3);
  // Another address, and the known key, each have their own allowance.
  const Identity other = tiers.Identify("invented-x", "198.51.100.5");
  EXPECT_TRUE((*limiter)->Check(other.key, other.tier)->allowed);
  const Identity known = tiers.Identify("key-a", "198.51.100.4");
  auto d = (*limiter)->Check(known.key, known.tier);
  EXPECT_TRUE(d->allowed);
  EXPECT_EQ(d->limit, 100u);
}

TEST(TierResolverConcurrencyTest, LookupsDuringPolicyChangesSeeOneOrTheOther) {
  TierResolver tiers("anonymous");
  const PolicyFile a = Parse(kPolicy);
  const PolicyFile b = Parse("[tier.anonymous]\nr = 10/1m\n[tier.gold]\nr = 100/1m\n[keys]\nkey-a = gold\n");
  tiers.Set(a);
  std::atomic<bool> done{false};
  std::thread setter([&] {
    for (int i = 0; i < 2000; ++i) tiers.Set(i % 2 ? a : b);
    done = true;
  });
  int odd = 0;
  while (!done.load()) {
    const std::string t = tiers.TierOf("key-a");
    odd += t != "premium" && t != "gold";
  }
  setter.join();
  EXPECT_EQ(odd, 0);
}

}  // namespace
}  // namespace cachet
