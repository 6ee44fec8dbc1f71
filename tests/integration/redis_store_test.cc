// The Redis store's promises (docs/operations.md "Where the counts live",
// docs/design.md "The rate limiter"), against Debian's redis-server started
// by the test on a free loopback tcp port (tests/redis_server.h):
//   * decisions over tcp, shared by every limiter of that Redis, state in
//     one hash per key and rule that expires when idle;
//   * a SCRIPT FLUSH (or a restarted Redis that lost its scripts) costs no
//     outage: the script is loaded again and Redis decides;
//   * on a dead Redis each failure mode decides as documented, the outage is
//     reported once, Redis is not asked again before the retry interval, and
//     decisions go back to it by themselves.
#include <hiredis/hiredis.h>

#include <gtest/gtest.h>

#include <memory>

#include "cachet/redis_rate_limiter.h"
#include "limiter_test_util.h"
#include "redis_server.h"

namespace cachet {
namespace {

using std::chrono::milliseconds;
using std::chrono::minutes;

struct RedisReplyFree {
  void operator()(redisReply* r) const { freeReplyObject(r); }
};
using ReplyPtr = std::unique_ptr<redisReply, RedisReplyFree>;

// One command to `redis` on a connection of its own; nullptr when Redis is unreachable.
ReplyPtr Command(const testing::RedisServer& redis, const std::string& command) {
  const std::string address = redis.address();
  const size_t colon = address.rfind(':');
  redisContext* c =
      redisConnectWithTimeout(address.substr(0, colon).c_str(), std::stoi(address.substr(colon + 1)), timeval{1, 0});
  ReplyPtr reply;
  if (c != nullptr && c->err == 0) reply.reset(static_cast<redisReply*>(redisCommand(c, command.c_str())));
  if (c != nullptr) redisFree(c);
  return reply;
}

class RedisStoreTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(redis_.Start()); }

  std::unique_ptr<RedisRateLimiter> Connect(const RateLimitPolicy& p, FailureMode mode,
                                            std::optional<RateLimitPolicy> fallback = std::nullopt) {
    DaemonRateLimiterOptions o;
    o.on_failure = mode;
    o.timeout = milliseconds(500);
    o.retry_interval = milliseconds(1000);
    if (fallback) o.fallback_policy.emplace(std::move(*fallback));
    o.on_health_change = [this](bool healthy, const Error& why) {
      (healthy ? recoveries_ : outages_)++;
      last_outage_ = why.ToString();
    };
    auto l = RedisRateLimiter::Connect(redis_.address(), p, o, clock_);
    EXPECT_TRUE(l.has_value()) << l.error().ToString();
    return l ? std::move(*l) : nullptr;
  }

  testing::RedisServer redis_{testing::RedisServer::Listen::kTcp};
  FakeClock clock_{1'700'000'040'000};  // the start of a minute
  int outages_ = 0, recoveries_ = 0;
  std::string last_outage_;
};

TEST_F(RedisStoreTest, OverTcpLimitersShareOneCountKeptInAnExpiringHash) {
  auto a = Connect(testing::PerMinutePolicy(3), FailureMode::kFailClosed);
  auto b = Connect(testing::PerMinutePolicy(3), FailureMode::kFailClosed);
  ASSERT_TRUE(a && b);
  for (uint64_t remaining : {2u, 1u, 0u}) {
    RedisRateLimiter& l = remaining == 1 ? *b : *a;
    auto d = l.Check("user", "regular");
    ASSERT_TRUE(d.has_value()) << d.error().ToString();
    EXPECT_TRUE(d->allowed);
    EXPECT_EQ(d->remaining, remaining);
    EXPECT_EQ(d->rule, "per_minute");
  }
  auto denied = b->Check("user", "regular");
  ASSERT_TRUE(denied.has_value());
  EXPECT_FALSE(denied->allowed);
  EXPECT_EQ(denied->retry_after, milliseconds(60'000));  // the clock is at a minute's start
  EXPECT_EQ(denied->rule, "per_minute");
  // The state: one hash for (tier, rule, key), expiring when idle.
  ReplyPtr type = Command(redis_, "TYPE cachet:rl:regular/per_minute:user");
  ASSERT_TRUE(type);
  EXPECT_EQ(std::string(type->str), "hash");
  ReplyPtr ttl = Command(redis_, "PTTL cachet:rl:regular/per_minute:user");
  ASSERT_TRUE(ttl);
  EXPECT_GT(ttl->integer, 0);
  EXPECT_LE(ttl->integer, 2 * 60'000 + 1000);
  EXPECT_EQ(outages_, 0);
}

// SCRIPT FLUSH empties Redis's script cache (as a restart or a failover
// does): the next decision must load the script again and still be Redis's,
// with the count intact, not an outage decided by the failure mode.
TEST_F(RedisStoreTest, AfterScriptFlushRedisStillDecidesWithTheCountIntact) {
  auto l = Connect(testing::PerMinutePolicy(5), FailureMode::kFailClosed);
  ASSERT_TRUE(l);
  for (int i = 0; i < 2; ++i) ASSERT_TRUE(l->Check("user", "regular").value().allowed);
  ReplyPtr flushed = Command(redis_, "SCRIPT FLUSH");
  ASSERT_TRUE(flushed);
  ASSERT_EQ(flushed->type, REDIS_REPLY_STATUS);
  auto d = l->Check("user", "regular");
  ASSERT_TRUE(d.has_value()) << d.error().ToString();
  EXPECT_TRUE(d->allowed) << "decided by the failure mode: " << d->rule;
  EXPECT_EQ(d->rule, "per_minute");
  EXPECT_EQ(d->remaining, 2u);  // the third of five
  EXPECT_EQ(outages_, 0) << last_outage_;
  EXPECT_TRUE(l->healthy());
}

// Each failure mode on a Redis that died: decided as documented, reported
// once, Redis not asked again before the retry interval (it is back, but
// the decisions stay with the failure mode), then back to Redis by itself.
TEST_F(RedisStoreTest, ADeadRedisIsHandledByEachFailureMode) {
  RateLimitPolicy fallback;
  fallback.tiers.push_back({"regular", {testing::MakeRule("local", 2, minutes(1), Algorithm::kFixedWindow)}});
  for (FailureMode mode : {FailureMode::kFailOpen, FailureMode::kFailClosed, FailureMode::kLocalFallback}) {
    SCOPED_TRACE(static_cast<int>(mode));
    outages_ = recoveries_ = 0;
    auto l = Connect(testing::PerMinutePolicy(100), mode, fallback);
    ASSERT_TRUE(l);
    ASSERT_TRUE(Command(redis_, "FLUSHALL"));
    auto first = l->Check("user", "regular");
    ASSERT_TRUE(first.has_value() && first->allowed);
    EXPECT_EQ(first->remaining, 99u);
    redis_.Kill();

    std::vector<Decision> during;
    for (int i = 0; i < 3; ++i) {
      auto d = l->Check("user", "regular");
      ASSERT_TRUE(d.has_value()) << d.error().ToString();
      during.push_back(*d);
    }
    EXPECT_EQ(outages_, 1) << "one report per outage";
    EXPECT_NE(last_outage_.find(redis_.address()), std::string::npos) << last_outage_;
    EXPECT_FALSE(l->healthy());
    switch (mode) {
      case FailureMode::kFailOpen:
        for (const Decision& d : during) {
          EXPECT_TRUE(d.allowed);
          EXPECT_EQ(d.rule, "store_unavailable");
        }
        break;
      case FailureMode::kFailClosed:
        for (const Decision& d : during) {
          EXPECT_FALSE(d.allowed);
          EXPECT_EQ(d.retry_after, milliseconds(1000));  // the retry interval
          EXPECT_EQ(d.rule, "store_unavailable");
        }
        break;
      case FailureMode::kLocalFallback:  // the local policy: 2 a minute
        EXPECT_TRUE(during[0].allowed);
        EXPECT_TRUE(during[1].allowed);
        EXPECT_FALSE(during[2].allowed);
        EXPECT_EQ(during[2].limit, 2u);
        EXPECT_EQ(during[2].rule, "local");
        break;
    }

    // Redis is back, but within the retry interval nobody asks it.
    ASSERT_TRUE(redis_.Start());
    clock_.Advance(milliseconds(999));
    auto still = l->Check("user", "regular");
    ASSERT_TRUE(still.has_value());
    EXPECT_NE(still->rule, "per_minute") << "asked Redis before the retry interval";
    if (mode == FailureMode::kLocalFallback) {
      EXPECT_EQ(still->rule, "local");
    }
    EXPECT_EQ(recoveries_, 0);
    ReplyPtr keys = Command(redis_, "DBSIZE");
    ASSERT_TRUE(keys);
    EXPECT_EQ(keys->integer, 0) << "no decision reached the new Redis";

    // Once the interval has passed, Redis decides again (a fresh server: a fresh count).
    clock_.Advance(milliseconds(1));
    auto back = l->Check("user", "regular");
    ASSERT_TRUE(back.has_value()) << back.error().ToString();
    EXPECT_TRUE(back->allowed);
    EXPECT_EQ(back->rule, "per_minute");
    EXPECT_EQ(back->remaining, 99u);
    EXPECT_EQ(recoveries_, 1);
    EXPECT_EQ(outages_, 1);
    EXPECT_TRUE(l->healthy());
    clock_.Advance(minutes(1));  // the next mode starts in a new window
  }
}

// A limiter made while Redis is down works from the first call: the failure
// mode decides, then Redis once it is up and the interval has passed.
TEST_F(RedisStoreTest, ALimiterMadeWhileRedisIsDownStartsInItsFailureMode) {
  redis_.Kill();
  auto l = Connect(testing::PerMinutePolicy(10), FailureMode::kFailClosed);
  ASSERT_TRUE(l);
  auto d = l->Check("user", "regular");
  ASSERT_TRUE(d.has_value()) << d.error().ToString();
  EXPECT_FALSE(d->allowed);
  EXPECT_EQ(d->rule, "store_unavailable");
  EXPECT_EQ(outages_, 1);
  ASSERT_TRUE(redis_.Start());
  clock_.Advance(milliseconds(1000));
  auto back = l->Check("user", "regular");
  ASSERT_TRUE(back.has_value());
  EXPECT_TRUE(back->allowed);
  EXPECT_EQ(back->remaining, 9u);
  EXPECT_EQ(recoveries_, 1);
}

}  // namespace
}  // namespace cachet
