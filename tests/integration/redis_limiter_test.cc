// The Redis store against Debian's redis-server, started by the test on a
// unix socket of its own: the Lua script decides exactly as the in-process
// algorithms do, counts are shared, and outages follow the failure mode.
#include <gtest/gtest.h>

#include "cachet/redis_rate_limiter.h"
#include "limiter_test_util.h"
#include "redis_server.h"

namespace cachet {
namespace {

using std::chrono::milliseconds;
using std::chrono::minutes;
using std::chrono::seconds;

using testing::MakeRule;

class RedisLimiterTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(redis_.Start()); }

  std::unique_ptr<RedisRateLimiter> Connect(const RateLimitPolicy& p, FailureMode mode = FailureMode::kFailClosed) {
    DaemonRateLimiterOptions o;
    o.on_failure = mode;
    o.timeout = milliseconds(200);
    o.retry_interval = milliseconds(100);
    o.on_health_change = [this](bool healthy, const Error&) { (healthy ? recoveries_ : outages_)++; };
    auto l = RedisRateLimiter::Connect(redis_.address(), p, o, clock_);
    EXPECT_TRUE(l.has_value()) << l.error().ToString();
    return std::move(*l);
  }

  testing::RedisServer redis_;
  FakeClock clock_{1'700'000'040'000};
  int outages_ = 0, recoveries_ = 0;
};

// One scripted sequence through the in-process limiter and the Redis store,
// decision by decision: the Lua script must agree with rate_limit.cc.
TEST_F(RedisLimiterTest, DecidesExactlyAsTheInProcessAlgorithms) {
  for (Algorithm a : {Algorithm::kFixedWindow, Algorithm::kSlidingWindow, Algorithm::kTokenBucket}) {
    RateLimitPolicy p;
    p.tiers.push_back({"t", {MakeRule("per_minute", 10, minutes(1), a), MakeRule("per_second", 4, seconds(1), a)}});
    auto local = std::move(*RateLimiter::Create(p, clock_));
    auto redis = Connect(p);
    const std::string key = std::string("user-") + AlgorithmName(a);
    testing::WalkParitySchedule(clock_, [&](size_t i, uint64_t cost) {
      const Decision want = local->Check(key, "t", cost).value();
      const Decision got = redis->Check(key, "t", cost).value();
      SCOPED_TRACE(std::string(AlgorithmName(a)) + " step " + std::to_string(i));
      EXPECT_EQ(got.allowed, want.allowed);
      EXPECT_EQ(got.rule, want.rule);
      EXPECT_EQ(got.limit, want.limit);
      EXPECT_EQ(got.remaining, want.remaining);
      EXPECT_EQ(got.reset, want.reset);
      EXPECT_EQ(got.retry_after, want.retry_after);
    });
  }
}

TEST_F(RedisLimiterTest, LimitersOnTwoHostsShareTheCount) {
  RateLimitPolicy p;
  p.tiers.push_back({"regular", {MakeRule("per_minute", 100, minutes(1), Algorithm::kSlidingWindow)}});
  auto host_a = Connect(p);
  auto host_b = Connect(p);
  int admitted = 0;
  for (int i = 0; i < 150; ++i) admitted += (i % 2 ? host_a : host_b)->Check("alice", "regular").value().allowed;
  EXPECT_EQ(admitted, 100);
}

TEST_F(RedisLimiterTest, SlidingLogIsRefusedWithAReason) {
  RateLimitPolicy p;
  p.tiers.push_back({"t", {MakeRule("r", 10, minutes(1), Algorithm::kSlidingLog)}});
  auto l = RedisRateLimiter::Connect(redis_.address(), p);
  ASSERT_FALSE(l.has_value());
  EXPECT_NE(l.error().message.find("sliding_window"), std::string::npos);
}

TEST_F(RedisLimiterTest, OutageFollowsTheFailureModeAndRecovers) {
  RateLimitPolicy p;
  p.tiers.push_back({"regular", {MakeRule("per_minute", 100, minutes(1), Algorithm::kFixedWindow)}});
  auto l = Connect(p, FailureMode::kFailClosed);
  ASSERT_TRUE(l->Check("k", "regular").value().allowed);
  redis_.Kill();
  for (int i = 0; i < 5; ++i) EXPECT_FALSE(l->Check("k", "regular").value().allowed);
  EXPECT_EQ(outages_, 1);
  ASSERT_TRUE(redis_.Start());
  clock_.Advance(milliseconds(100));
  EXPECT_TRUE(l->Check("k", "regular").value().allowed);  // a fresh server, a fresh count
  EXPECT_EQ(recoveries_, 1);
}

}  // namespace
}  // namespace cachet
