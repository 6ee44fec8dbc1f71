// TierResolver: API keys to tiers from the policy file, then from the
// application's callback, else the fallback; a new policy replaces the keys.
#include <gtest/gtest.h>

#include <atomic>
#include <thread>

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
