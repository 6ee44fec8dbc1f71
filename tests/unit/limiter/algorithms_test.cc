// The four rate-limit algorithms as pure functions of (rule, state, now,
// cost): exact counts at and around window boundaries, refill, burst, cost.
#include <gtest/gtest.h>

#include "cachet/rate_limit.h"

namespace cachet {
namespace {

using std::chrono::milliseconds;

Rule MakeRule(Algorithm a, uint64_t limit, int64_t window_ms, uint64_t burst = 0) {
  Rule r;
  r.name = "r";
  r.limit = limit;
  r.window = milliseconds(window_ms);
  r.algorithm = a;
  r.burst = burst;
  return r;
}

// Admits requests of `cost` at `now` until one is denied; returns how many.
template <typename State>
int AdmitAll(const Rule& rule, State& state, int64_t now, uint64_t cost = 1) {
  int n = 0;
  while (n < 100000 && Evaluate(rule, state, now, cost, true).allowed) ++n;
  return n;
}

constexpr int64_t kT0 = 1'700'000'040'000;  // a minute boundary: kT0 % 60000 == 0

TEST(FixedWindowTest, AdmitsLimitThenDeniesUntilTheWindowEnds) {
  const Rule rule = MakeRule(Algorithm::kFixedWindow, 100, 60000);
  LimiterState s;
  ASSERT_EQ(kT0 % 60000, 0);
  EXPECT_EQ(AdmitAll(rule, s, kT0 + 1000), 100);
  const Decision d = Evaluate(rule, s, kT0 + 1000, 1, true);
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.remaining, 0u);
  EXPECT_EQ(d.retry_after, milliseconds(59000));
  EXPECT_FALSE(Evaluate(rule, s, kT0 + 59999, 1, true).allowed);
  EXPECT_TRUE(Evaluate(rule, s, kT0 + 60000, 1, true).allowed);  // exactly at the next window
}

TEST(FixedWindowTest, BoundaryLetsTwiceTheLimitThroughInTwoMilliseconds) {
  // The known weakness, measured: 100 at the end of one window and 100 at
  // the start of the next.
  const Rule rule = MakeRule(Algorithm::kFixedWindow, 100, 60000);
  LimiterState s;
  EXPECT_EQ(AdmitAll(rule, s, kT0 + 59999), 100);
  EXPECT_EQ(AdmitAll(rule, s, kT0 + 60000), 100);
}

TEST(FixedWindowTest, CostCountsAndADeniedRequestConsumesNothing) {
  const Rule rule = MakeRule(Algorithm::kFixedWindow, 100, 1000);
  LimiterState s;
  EXPECT_TRUE(Evaluate(rule, s, kT0, 60, true).allowed);
  const Decision d = Evaluate(rule, s, kT0, 50, true);
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.remaining, 40u);
  EXPECT_TRUE(Evaluate(rule, s, kT0, 40, true).allowed);
  EXPECT_FALSE(Evaluate(rule, s, kT0, 1, true).allowed);
}

TEST(FixedWindowTest, CostAboveLimitIsNeverAdmitted) {
  const Rule rule = MakeRule(Algorithm::kFixedWindow, 10, 1000);
  LimiterState s;
  EXPECT_FALSE(Evaluate(rule, s, kT0, 11, true).allowed);
  EXPECT_EQ(AdmitAll(rule, s, kT0), 10);
}

TEST(SlidingWindowTest, PreviousWindowWeighsByItsOverlap) {
  const Rule rule = MakeRule(Algorithm::kSlidingWindow, 100, 60000);
  LimiterState s;
  EXPECT_EQ(AdmitAll(rule, s, kT0 + 59999), 100);
  // Right after the boundary the previous 100 still weigh (almost) fully.
  EXPECT_FALSE(Evaluate(rule, s, kT0 + 60000, 1, true).allowed);
  // Halfway through the next window they weigh 50: 50 more fit.
  EXPECT_EQ(AdmitAll(rule, s, kT0 + 90000), 50);
}

TEST(SlidingWindowTest, BoundaryBurstStaysNearTheLimit) {
  const Rule rule = MakeRule(Algorithm::kSlidingWindow, 100, 60000);
  LimiterState s;
  const int first = AdmitAll(rule, s, kT0 + 59999);
  const int second = AdmitAll(rule, s, kT0 + 60000);
  EXPECT_EQ(first + second, 100);
}

TEST(SlidingWindowTest, RetryAfterPointsAtTheFirstMomentItFits) {
  const Rule rule = MakeRule(Algorithm::kSlidingWindow, 100, 60000);
  LimiterState s;
  ASSERT_EQ(AdmitAll(rule, s, kT0 + 59999), 100);
  const Decision d = Evaluate(rule, s, kT0 + 60000, 1, true);
  ASSERT_FALSE(d.allowed);
  EXPECT_FALSE(Evaluate(rule, s, kT0 + 60000 + d.retry_after.count() - 700, 1, false).allowed);
  EXPECT_TRUE(Evaluate(rule, s, kT0 + 60000 + d.retry_after.count(), 1, false).allowed);
}

TEST(SlidingWindowTest, CountsRunOutAfterTwoWindows) {
  const Rule rule = MakeRule(Algorithm::kSlidingWindow, 10, 1000);
  LimiterState s;
  EXPECT_EQ(AdmitAll(rule, s, kT0), 10);
  EXPECT_FALSE(Idle(rule, s, kT0 + 1999));
  EXPECT_TRUE(Idle(rule, s, kT0 + 2000));
  EXPECT_EQ(AdmitAll(rule, s, kT0 + 2000), 10);
}

TEST(SlidingLogTest, IsExactAtEveryInstant) {
  const Rule rule = MakeRule(Algorithm::kSlidingLog, 3, 1000);
  SlidingLog log;
  EXPECT_TRUE(Evaluate(rule, log, kT0, 1, true).allowed);
  EXPECT_TRUE(Evaluate(rule, log, kT0 + 100, 1, true).allowed);
  EXPECT_TRUE(Evaluate(rule, log, kT0 + 200, 1, true).allowed);
  const Decision d = Evaluate(rule, log, kT0 + 300, 1, true);
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.retry_after, milliseconds(700));  // when the request at kT0 leaves
  EXPECT_FALSE(Evaluate(rule, log, kT0 + 999, 1, true).allowed);
  EXPECT_TRUE(Evaluate(rule, log, kT0 + 1000, 1, true).allowed);
  EXPECT_FALSE(Evaluate(rule, log, kT0 + 1000, 1, true).allowed);
}

TEST(SlidingLogTest, BoundaryBurstNeverExceedsTheLimit) {
  const Rule rule = MakeRule(Algorithm::kSlidingLog, 100, 60000);
  SlidingLog log;
  EXPECT_EQ(AdmitAll(rule, log, kT0 + 59999), 100);
  EXPECT_EQ(AdmitAll(rule, log, kT0 + 60000), 0);
  EXPECT_EQ(AdmitAll(rule, log, kT0 + 59999 + 60000), 100);
}

TEST(SlidingLogTest, CostFreesInOrder) {
  const Rule rule = MakeRule(Algorithm::kSlidingLog, 10, 1000);
  SlidingLog log;
  EXPECT_TRUE(Evaluate(rule, log, kT0, 4, true).allowed);
  EXPECT_TRUE(Evaluate(rule, log, kT0 + 500, 6, true).allowed);
  const Decision d = Evaluate(rule, log, kT0 + 600, 5, true);
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.retry_after, milliseconds(900));  // both must leave: 4 frees too little
}

TEST(TokenBucketTest, AllowsBurstThenRefillsAtTheRate) {
  const Rule rule = MakeRule(Algorithm::kTokenBucket, 10, 1000, /*burst=*/5);  // 10/s, bursts of 5
  LimiterState s;
  EXPECT_EQ(AdmitAll(rule, s, kT0), 5);
  const Decision d = Evaluate(rule, s, kT0, 1, true);
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.retry_after, milliseconds(100));
  EXPECT_FALSE(Evaluate(rule, s, kT0 + 99, 1, true).allowed);
  EXPECT_TRUE(Evaluate(rule, s, kT0 + 100, 1, true).allowed);
  // After a long pause the bucket holds `burst`, not more.
  EXPECT_EQ(AdmitAll(rule, s, kT0 + 60000), 5);
}

TEST(TokenBucketTest, SustainedRateMatchesTheLimit) {
  const Rule rule = MakeRule(Algorithm::kTokenBucket, 100, 60000);  // burst = limit
  LimiterState s;
  int admitted = 0;
  for (int64_t t = kT0; t < kT0 + 600000; t += 100) admitted += Evaluate(rule, s, t, 1, true).allowed;
  // The burst of 100, then one every 600 ms: the k-th request fits from
  // kT0 + (k - 100) * 600 ms on, so the 1,100th is due at exactly +600,000,
  // just past the loop.
  EXPECT_EQ(admitted, 100 + 999);
}

TEST(TokenBucketTest, CostUsesSeveralTokens) {
  const Rule rule = MakeRule(Algorithm::kTokenBucket, 10, 1000);
  LimiterState s;
  EXPECT_TRUE(Evaluate(rule, s, kT0, 7, true).allowed);
  const Decision d = Evaluate(rule, s, kT0, 4, true);
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.remaining, 3u);
  EXPECT_EQ(d.retry_after, milliseconds(100));
  EXPECT_FALSE(Evaluate(rule, s, kT0, 11, true).allowed);
}

// Threads read the time a moment apart: one holding 1999 may count after
// another has opened the window at 2000. The late request counts in the
// newer window; going back would forget that window's count.
TEST(WindowTest, ALateClockNeverMovesAWindowBack) {
  for (Algorithm a : {Algorithm::kFixedWindow, Algorithm::kSlidingWindow}) {
    const Rule rule = MakeRule(a, 10, 1000);
    LimiterState s;
    const int64_t base = kT0 + 1000;                                  // a window starts here
    ASSERT_TRUE(Evaluate(rule, s, base + 1000, 1, true).allowed);     // opens the next window
    EXPECT_EQ(AdmitAll(rule, s, base + 999), 9) << AlgorithmName(a);  // late: counted in that window
    EXPECT_FALSE(Evaluate(rule, s, base + 1000, 1, false).allowed) << AlgorithmName(a);
  }
}

TEST(RuleTest, ValidationNamesTheProblem) {
  Rule r = MakeRule(Algorithm::kFixedWindow, 0, 1000);
  auto bad = r.Validate();
  ASSERT_FALSE(bad.has_value());
  EXPECT_NE(bad.error().message.find("limit"), std::string::npos);
  r = MakeRule(Algorithm::kFixedWindow, 10, 0);
  EXPECT_NE(r.Validate().error().message.find("window"), std::string::npos);
  r = MakeRule(Algorithm::kFixedWindow, 10, 1000, 5);
  EXPECT_NE(r.Validate().error().message.find("burst"), std::string::npos);
  r = MakeRule(Algorithm::kTokenBucket, 1, 1000, 10'000'000'000'000);  // a bucket of 300,000 years
  EXPECT_NE(r.Validate().error().message.find("burst 10000000000000 is too large"), std::string::npos);
  r = MakeRule(Algorithm::kTokenBucket, 1, 1000, 1'000'000);
  EXPECT_TRUE(r.Validate().has_value());
  EXPECT_FALSE(ParseAlgorithm("leaky").has_value());
  EXPECT_EQ(ParseAlgorithm("GCRA").value(), Algorithm::kTokenBucket);
  EXPECT_EQ(ParseAlgorithm("sliding-window").value(), Algorithm::kSlidingWindow);
}

}  // namespace
}  // namespace cachet
