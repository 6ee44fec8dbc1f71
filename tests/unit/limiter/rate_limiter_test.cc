// RateLimiter: tiers with several rules, per-key overrides, shadow rules,
// live policy changes, idle reclaim, and threads on one key. FakeClock: no
// test sleeps for a window.
#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

#include "cachet/counter_table.h"
#include "cachet/rate_limiter.h"
#include "limiter_test_util.h"
#include "test_util.h"

namespace cachet {
namespace {

using std::chrono::milliseconds;
using std::chrono::minutes;
using std::chrono::seconds;

using testing::MakeRule;

RateLimitPolicy TwoTiers() {
  RateLimitPolicy p;
  p.tiers.push_back({"regular", {MakeRule("per_minute", 100, minutes(1), Algorithm::kFixedWindow)}});
  p.tiers.push_back({"premium", {MakeRule("per_minute", 1000, minutes(1), Algorithm::kFixedWindow)}});
  return p;
}

class RateLimiterTest : public ::testing::Test {
 protected:
  std::unique_ptr<RateLimiter> Make(RateLimitPolicy p) {
    auto made = RateLimiter::Create(std::move(p), clock_);
    EXPECT_TRUE(made.has_value()) << made.error().ToString();
    return std::move(*made);
  }
  int Admit(RateLimiter& l, const std::string& key, const std::string& tier, int tries) {
    int n = 0;
    for (int i = 0; i < tries; ++i) n += l.Check(key, tier).value().allowed;
    return n;
  }
  FakeClock clock_{1'700'000'040'000};  // on a minute boundary
};

TEST_F(RateLimiterTest, EachTierHasItsOwnLimit) {
  auto l = Make(TwoTiers());
  EXPECT_EQ(Admit(*l, "alice", "regular", 150), 100);
  EXPECT_EQ(Admit(*l, "bob", "premium", 1500), 1000);
  const Decision d = l->Check("alice", "regular").value();
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.limit, 100u);
  EXPECT_EQ(d.rule, "per_minute");
  EXPECT_EQ(d.retry_after, minutes(1));
}

TEST_F(RateLimiterTest, KeysAreIndependent) {
  auto l = Make(TwoTiers());
  EXPECT_EQ(Admit(*l, "10.0.0.1", "regular", 120), 100);
  EXPECT_EQ(Admit(*l, "10.0.0.2", "regular", 120), 100);
  EXPECT_EQ(Admit(*l, "2001:db8::1", "regular", 120), 100);
}

TEST_F(RateLimiterTest, EveryRuleOfATierMustPass) {
  RateLimitPolicy p;
  p.tiers.push_back({"api",
                     {MakeRule("per_second", 3, seconds(1), Algorithm::kFixedWindow),
                      MakeRule("per_minute", 5, minutes(1), Algorithm::kFixedWindow)}});
  auto l = Make(p);
  EXPECT_EQ(Admit(*l, "k", "api", 10), 3);
  Decision d = l->Check("k", "api").value();
  EXPECT_EQ(d.rule, "per_second");
  clock_.Advance(seconds(1));
  EXPECT_EQ(Admit(*l, "k", "api", 10), 2);
  d = l->Check("k", "api").value();
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.rule, "per_minute");
  EXPECT_EQ(d.retry_after, seconds(59));
}

TEST_F(RateLimiterTest, DeniedRequestsConsumeNothingInAnyRule) {
  RateLimitPolicy p;
  p.tiers.push_back({"api",
                     {MakeRule("per_second", 2, seconds(1), Algorithm::kFixedWindow),
                      MakeRule("per_minute", 4, minutes(1), Algorithm::kFixedWindow)}});
  auto l = Make(p);
  EXPECT_EQ(Admit(*l, "k", "api", 50), 2);  // 48 denied by per_second
  clock_.Advance(seconds(1));
  EXPECT_EQ(Admit(*l, "k", "api", 50), 2);  // per_minute saw only the 2 admitted
}

TEST_F(RateLimiterTest, AllowedDecisionReportsTheTightestRule) {
  RateLimitPolicy p;
  p.tiers.push_back({"api",
                     {MakeRule("per_second", 10, seconds(1), Algorithm::kFixedWindow),
                      MakeRule("per_hour", 12, std::chrono::hours(1), Algorithm::kFixedWindow)}});
  auto l = Make(p);
  const Decision d = l->Check("k", "api", 5).value();
  EXPECT_TRUE(d.allowed);
  EXPECT_EQ(d.rule, "per_second");
  EXPECT_EQ(d.remaining, 5u);
  clock_.Advance(seconds(1));  // per_second starts over; per_hour has 7 left
  const Decision e = l->Check("k", "api", 4).value();
  EXPECT_EQ(e.rule, "per_hour");
  EXPECT_EQ(e.remaining, 3u);
}

TEST_F(RateLimiterTest, OverrideReplacesTheTierForOneKey) {
  RateLimitPolicy p = TwoTiers();
  p.overrides["vip-key"] = {MakeRule("per_minute", 5000, minutes(1), Algorithm::kFixedWindow)};
  auto l = Make(p);
  EXPECT_EQ(Admit(*l, "vip-key", "regular", 6000), 5000);
  EXPECT_EQ(Admit(*l, "other", "regular", 200), 100);
}

TEST_F(RateLimiterTest, ShadowRuleReportsButNeverDenies) {
  RateLimitPolicy p;
  Rule shadow = MakeRule("new_limit", 2, minutes(1), Algorithm::kFixedWindow);
  shadow.shadow = true;
  p.tiers.push_back({"api", {MakeRule("per_minute", 100, minutes(1), Algorithm::kFixedWindow), shadow}});
  auto l = Make(p);
  EXPECT_FALSE(l->Check("k", "api").value().shadow_denied);
  EXPECT_FALSE(l->Check("k", "api").value().shadow_denied);
  const Decision d = l->Check("k", "api").value();
  EXPECT_TRUE(d.allowed);
  EXPECT_TRUE(d.shadow_denied);
  EXPECT_EQ(d.rule, "per_minute");
  EXPECT_EQ(l->Stats().shadow_denied, 1u);
  EXPECT_EQ(l->Stats().denied, 0u);
}

TEST_F(RateLimiterTest, UnknownTierAndZeroCostAreErrors) {
  auto l = Make(TwoTiers());
  auto r = l->Check("k", "gold");
  ASSERT_FALSE(r.has_value());
  EXPECT_NE(r.error().message.find("gold"), std::string::npos);
  EXPECT_FALSE(l->Check("k", "regular", 0).has_value());
}

TEST_F(RateLimiterTest, BadPolicyIsRefusedAndTheOldOneStays) {
  auto l = Make(TwoTiers());
  RateLimitPolicy bad = TwoTiers();
  bad.tiers[0].rules[0].limit = 0;
  auto r = l->SetPolicy(bad);
  ASSERT_FALSE(r.has_value());
  EXPECT_NE(r.error().message.find("tier 'regular'"), std::string::npos) << r.error().message;
  RateLimitPolicy dup = TwoTiers();
  dup.tiers.push_back(dup.tiers[0]);
  EXPECT_NE(l->SetPolicy(dup).error().message.find("twice"), std::string::npos);
  EXPECT_EQ(Admit(*l, "k", "regular", 150), 100);
  EXPECT_FALSE(RateLimiter::Create(bad, clock_).has_value());
}

TEST_F(RateLimiterTest, NewPolicyKeepsCountersThatStillApply) {
  auto l = Make(TwoTiers());
  EXPECT_EQ(Admit(*l, "a", "regular", 60), 60);
  EXPECT_EQ(Admit(*l, "b", "premium", 60), 60);
  EXPECT_EQ(Admit(*l, "c", "premium", 60), 60);
  RateLimitPolicy next = TwoTiers();
  next.tiers[0].rules[0].limit = 80;           // regular: a new limit over the same window
  next.tiers[1].rules[0].window = minutes(2);  // premium: a new window
  next.tiers[1].rules[0].algorithm = Algorithm::kTokenBucket;
  ASSERT_TRUE(l->SetPolicy(next).has_value());
  EXPECT_EQ(Admit(*l, "a", "regular", 100), 20);     // its 60 still count against the new 80
  EXPECT_EQ(Admit(*l, "b", "premium", 2000), 1000);  // counting changed: starts afresh
  ASSERT_TRUE(l->SetPolicy(TwoTiers()).has_value());
  EXPECT_EQ(Admit(*l, "c", "premium", 2000), 940);  // the old counter is still there, 60 used
}

TEST_F(RateLimiterTest, IdleKeysAreReclaimedOnceTheirWindowsPass) {
  auto l = std::move(*RateLimiter::Create(TwoTiers(), RateLimiterOptions{4096}, clock_));
  for (int i = 0; i < 1000; ++i) ASSERT_TRUE(l->Check("k" + std::to_string(i), "regular").has_value());
  EXPECT_EQ(l->Stats().counters, 1000u);
  EXPECT_EQ(l->Stats().capacity, 4096u);
  EXPECT_EQ(l->ReclaimIdle(4096), 0u);
  // Not at the window's edge: a request whose clock reads a moment behind
  // may still count in it. A second later the counters go.
  clock_.Advance(minutes(1));
  EXPECT_EQ(l->ReclaimIdle(4096), 0u);
  clock_.Advance(milliseconds(999));
  EXPECT_EQ(l->ReclaimIdle(4096), 0u);
  clock_.Advance(milliseconds(1));
  EXPECT_EQ(l->ReclaimIdle(4096), 1000u);
  EXPECT_EQ(l->Stats().counters, 0u);
  EXPECT_EQ(Admit(*l, "k1", "regular", 150), 100);  // a reclaimed key starts a fresh window
}

TEST_F(RateLimiterTest, AFullTableRefusesNewKeysUntilOldWindowsPass) {
  auto l = std::move(*RateLimiter::Create(TwoTiers(), RateLimiterOptions{64}, clock_));
  int placed = 0;
  Result<Decision> last;
  for (int i = 0; i < 200 && (last = l->Check("k" + std::to_string(i), "regular")); ++i) ++placed;
  ASSERT_FALSE(last.has_value());
  EXPECT_EQ(last.error().code, ErrorCode::kNoSpace);
  EXPECT_NE(last.error().message.find("larger capacity"), std::string::npos) << last.error().message;
  EXPECT_GE(placed, 32);  // at least one probe window's worth
  EXPECT_LE(placed, 64);
  EXPECT_EQ(Admit(*l, "k0", "regular", 10), 10);  // keys already placed go on counting
  // Once their windows pass (and a second's margin for late clocks), new
  // keys take the old keys' slots without a sweep.
  clock_.Advance(minutes(1) + seconds(1));
  for (int i = 0; i < 200; ++i) {
    ASSERT_TRUE(l->Check("new" + std::to_string(i), "regular").has_value()) << i;
    clock_.Advance(minutes(1) + seconds(1));
  }
  EXPECT_LE(l->Stats().counters, 64u);
}

TEST_F(RateLimiterTest, EveryAlgorithmWorksThroughTheLimiter) {
  for (Algorithm a :
       {Algorithm::kFixedWindow, Algorithm::kSlidingLog, Algorithm::kSlidingWindow, Algorithm::kTokenBucket}) {
    RateLimitPolicy p;
    p.tiers.push_back({"t", {MakeRule("r", 20, minutes(1), a)}});
    auto l = Make(p);
    EXPECT_EQ(Admit(*l, "k", "t", 50), 20) << AlgorithmName(a);
  }
}

// Counters in a named table outlive the limiter: a process that restarts
// continues each window where it stood (the sliding log, kept in process,
// starts afresh).
TEST_F(RateLimiterTest, CountersInANamedTableOutliveTheLimiter) {
  const std::string name = testing::UniqueSegmentName("rlseg");
  struct Removed {
    const std::string& name;
    ~Removed() { (void)CounterTable::Remove(name); }
  } removed{name};
  RateLimitPolicy p = TwoTiers();
  p.tiers.push_back({"log", {MakeRule("per_minute", 5, minutes(1), Algorithm::kSlidingLog)}});
  {
    auto first = std::move(*RateLimiter::Open(name, p, RateLimiterOptions{4096}, clock_));
    EXPECT_EQ(Admit(*first, "k", "regular", 60), 60);
    EXPECT_EQ(Admit(*first, "k", "log", 3), 3);
  }
  auto again = RateLimiter::Open(name, p, RateLimiterOptions{999}, clock_);  // an existing table keeps its capacity
  ASSERT_TRUE(again.has_value()) << again.error().ToString();
  EXPECT_EQ((*again)->Stats().capacity, 4096u);
  EXPECT_EQ((*again)->Stats().counters, 1u);  // the fixed window's; the log went with the process
  EXPECT_EQ(Admit(**again, "k", "regular", 100), 40);
  EXPECT_EQ(Admit(**again, "k", "log", 10), 5);
}

TEST(RateLimiterThreadsTest, ThreadsOnOneKeyNeverAdmitMoreThanTheLimit) {
  FakeClock clock;
  RateLimitPolicy p;
  p.tiers.push_back({"t", {MakeRule("r", 1000, minutes(1), Algorithm::kSlidingLog)}});
  auto l = std::move(*RateLimiter::Create(p, clock));
  std::atomic<int> admitted{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 600; ++i) admitted += l->Check("shared", "t").value().allowed;
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(admitted.load(), 1000);
  EXPECT_EQ(l->Stats().allowed, 1000u);
  EXPECT_EQ(l->Stats().denied, 1400u);
}

}  // namespace
}  // namespace cachet
