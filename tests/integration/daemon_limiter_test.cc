// Rate-limit decisions made by cachetd: one count shared by every client,
// and the failure modes when the daemon cannot be reached (fail open, fail
// closed, local fallback), each reported once and recovered from by itself.
#include <gtest/gtest.h>

#include <fstream>
#include <map>

#include "cachet/client.h"
#include "cachet/daemon_rate_limiter.h"
#include "daemon_process.h"

namespace cachet {
namespace {

using std::chrono::milliseconds;
using std::chrono::minutes;

class DaemonLimiterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // Sliding window: a minute boundary inside the test does not reset it.
    std::ofstream(path_) << "[tier.regular]\nper_minute = 5/1m sliding_window\n";
    ASSERT_TRUE(daemon_.Start());
  }
  void TearDown() override { std::remove(path_.c_str()); }

  DaemonRateLimiterOptions Options(FailureMode mode) {
    DaemonRateLimiterOptions o;
    o.on_failure = mode;
    o.timeout = milliseconds(100);
    o.retry_interval = milliseconds(500);
    o.on_health_change = [this](bool healthy, const Error&) { (healthy ? recoveries_ : outages_)++; };
    Rule local;
    local.name = "local_per_minute";
    local.limit = 2;
    local.window = minutes(1);
    o.fallback_policy = RateLimitPolicy{};
    o.fallback_policy->tiers.push_back({"regular", {local}});
    return o;
  }

  std::unique_ptr<DaemonRateLimiter> Connect(FailureMode mode) {
    auto l = DaemonRateLimiter::Connect(daemon_.ipc(), Options(mode), clock_);
    EXPECT_TRUE(l.has_value()) << l.error().ToString();
    return std::move(*l);
  }

  int Admit(DaemonRateLimiter& l, const std::string& key, int tries) {
    int n = 0;
    for (int i = 0; i < tries; ++i) n += l.Check(key, "regular").value().allowed;
    return n;
  }

  const std::string path_ = "/tmp/" + testing::UniqueSegmentName("dl") + ".policy";
  testing::DaemonProcess daemon_{{"--rate-limit-policy", path_}};
  FakeClock clock_;
  int outages_ = 0, recoveries_ = 0;
};

TEST_F(DaemonLimiterTest, ClientsOfOneDaemonShareOneCount) {
  auto host_a = Connect(FailureMode::kFailClosed);
  auto host_b = Connect(FailureMode::kFailClosed);
  EXPECT_EQ(Admit(*host_a, "alice", 3) + Admit(*host_b, "alice", 10), 5);
  const Decision d = host_a->Check("alice", "regular").value();
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.rule, "per_minute");
  EXPECT_GE(d.retry_after, milliseconds(1));
  EXPECT_EQ(outages_, 0);
}

TEST_F(DaemonLimiterTest, StatsReportTheDaemonsDecisionsAndCounters) {
  auto limiter = Connect(FailureMode::kFailClosed);
  EXPECT_EQ(Admit(*limiter, "alice", 7), 5);
  EXPECT_EQ(Admit(*limiter, "bob", 1), 1);
  auto client = std::move(*Client::Connect(daemon_.ipc()));
  auto stats = client->Stats();
  ASSERT_TRUE(stats.has_value()) << stats.error().ToString();
  std::map<std::string, int64_t> s(stats->begin(), stats->end());
  EXPECT_EQ(s["ratelimit_allowed"], 6);
  EXPECT_EQ(s["ratelimit_denied"], 2);
  EXPECT_EQ(s["ratelimit_counters"], 2);  // alice and bob, one rule each
  EXPECT_EQ(s["ratelimit_capacity"], 1 << 20);
}

TEST(DaemonLimiterOptionsTest, CapacityIsConfigurable) {
  const std::string path = "/tmp/" + testing::UniqueSegmentName("dlc") + ".policy";
  std::ofstream(path) << "[tier.regular]\nper_minute = 5/1m\n";
  testing::DaemonProcess daemon{{"--rate-limit-policy", path, "--rate-limit-capacity", "4096"}};
  ASSERT_TRUE(daemon.Start());
  auto client = std::move(*Client::Connect(daemon.ipc()));
  auto stats = client->Stats();
  ASSERT_TRUE(stats.has_value());
  std::map<std::string, int64_t> s(stats->begin(), stats->end());
  EXPECT_EQ(s["ratelimit_capacity"], 4096);
  std::remove(path.c_str());
}

TEST_F(DaemonLimiterTest, UnknownTierIsAnErrorNotAnOutage) {
  auto l = Connect(FailureMode::kFailOpen);
  auto r = l->Check("alice", "gold");
  ASSERT_FALSE(r.has_value());
  EXPECT_NE(r.error().message.find("gold"), std::string::npos);
  EXPECT_TRUE(l->healthy());
}

TEST_F(DaemonLimiterTest, FailOpenAllowsAndReportsOnce) {
  auto l = Connect(FailureMode::kFailOpen);
  daemon_.Stop();
  EXPECT_EQ(Admit(*l, "alice", 20), 20);
  EXPECT_FALSE(l->healthy());
  EXPECT_EQ(outages_, 1);
}

TEST_F(DaemonLimiterTest, FailClosedDenies) {
  auto l = Connect(FailureMode::kFailClosed);
  daemon_.Stop();
  const Decision d = l->Check("alice", "regular").value();
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.rule, "store_unavailable");
  EXPECT_EQ(Admit(*l, "alice", 10), 0);
  EXPECT_EQ(outages_, 1);
}

TEST_F(DaemonLimiterTest, LocalFallbackAppliesTheLocalPolicy) {
  auto l = Connect(FailureMode::kLocalFallback);
  daemon_.Stop();
  EXPECT_EQ(Admit(*l, "alice", 10), 2);
}

TEST_F(DaemonLimiterTest, OutageCostsOneTimeoutPerRetryInterval) {
  auto l = Connect(FailureMode::kFailOpen);
  daemon_.Stop();
  const auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(Admit(*l, "alice", 1000), 1000);
  // One 100 ms timeout; the other 999 decisions do not wait (the fake clock
  // does not move, so the retry interval never passes).
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(2));
}

TEST_F(DaemonLimiterTest, RecoversByItselfWhenTheDaemonReturns) {
  auto l = Connect(FailureMode::kFailClosed);
  const std::string tcp = daemon_.tcp();
  daemon_.Stop();
  EXPECT_FALSE(l->Check("bob", "regular").value().allowed);
  ASSERT_TRUE(daemon_.Start(tcp));
  EXPECT_FALSE(l->Check("bob", "regular").value().allowed);  // still within the retry interval
  clock_.Advance(milliseconds(500));
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  bool allowed = false;
  while (!allowed && std::chrono::steady_clock::now() < deadline) {
    allowed = l->Check("bob", "regular").value().allowed;
    if (!allowed) clock_.Advance(milliseconds(500));  // reconnecting can take more than one try
  }
  EXPECT_TRUE(allowed);
  EXPECT_TRUE(l->healthy());
  EXPECT_EQ(outages_, 1);
  EXPECT_EQ(recoveries_, 1);
}

}  // namespace
}  // namespace cachet
