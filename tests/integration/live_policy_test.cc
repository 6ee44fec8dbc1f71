// Limits change without a restart: cachetd publishes its rate-limit policy,
// a SIGHUP with a new file reaches a subscribed limiter within a second,
// counters that still apply survive, and a bad file changes nothing.
#include <gtest/gtest.h>

#include <fstream>

#include "cachet/gossip_rate_limiter.h"
#include "cachet/policy_subscriber.h"
#include "daemon_process.h"

namespace cachet {
namespace {

using std::chrono::minutes;

class LivePolicyTest : public ::testing::Test {
 protected:
  void TearDown() override { std::remove(path_.c_str()); }

  void SetUp() override {
    Write(kInitial);
    ASSERT_TRUE(daemon_.Start());
    RateLimitPolicy initial;
    Rule r;
    r.name = "per_minute";
    r.limit = 1;
    r.window = minutes(1);
    initial.tiers.push_back({"regular", {r}});
    limiter_ = std::move(*RateLimiter::Create(initial, clock_));
    auto sub = PolicySubscriber::Start(pub_, *limiter_);
    ASSERT_TRUE(sub.has_value()) << sub.error().ToString();
    subscriber_ = std::move(*sub);
  }

  void Write(const std::string& text) { std::ofstream(path_) << text; }

  // Polls (with a deadline) until the subscriber installed the policy `text`.
  bool WaitForPolicy(const std::string& text) {
    return testing::WaitUntil([&] { return subscriber_->version() == PolicySubscriber::VersionOf(text); });
  }

  int Admit(const std::string& key, int tries) {
    int n = 0;
    for (int i = 0; i < tries; ++i) n += limiter_->Check(key, "regular").value().allowed;
    return n;
  }

  static constexpr const char* kInitial =
      "[tier.regular]\nper_minute = 5/1m fixed_window\nper_hour = 10/1h fixed_window\n";
  const std::string id_ = testing::UniqueSegmentName("live");
  const std::string path_ = "/tmp/" + id_ + ".policy";
  const std::string pub_ = "ipc:///tmp/" + id_ + "-pub.sock";
  testing::DaemonProcess daemon_{{"--rate-limit-policy", path_, "--pub", pub_}};
  FakeClock clock_{1'700'000'040'000};
  std::unique_ptr<RateLimiter> limiter_;
  std::unique_ptr<PolicySubscriber> subscriber_;
};

TEST_F(LivePolicyTest, SubscriberAppliesThePublishedPolicy) {
  ASSERT_TRUE(WaitForPolicy(kInitial)) << subscriber_->last_error();
  EXPECT_EQ(Admit("alice", 10), 5);
}

TEST_F(LivePolicyTest, SighupWithANewLimitTakesEffectWithoutRestart) {
  ASSERT_TRUE(WaitForPolicy(kInitial)) << subscriber_->last_error();
  EXPECT_EQ(Admit("alice", 3), 3);
  // per_minute rises from 5 to 8 and keeps its count of 3 (same window and
  // algorithm), so 5 more pass: the new limit, not a fresh window.
  const std::string raised = "[tier.regular]\nper_minute = 8/1m fixed_window\nper_hour = 10/1h fixed_window\n";
  Write(raised);
  const size_t mark = daemon_.log().size();
  daemon_.Hup();
  ASSERT_TRUE(
      daemon_.WaitForLog("rate-limit policy version " + std::to_string(PolicySubscriber::VersionOf(raised)), mark))
      << daemon_.log();
  ASSERT_TRUE(WaitForPolicy(raised)) << subscriber_->last_error();
  EXPECT_EQ(Admit("alice", 20), 5);
}

TEST_F(LivePolicyTest, BadPolicyOnSighupChangesNothing) {
  ASSERT_TRUE(WaitForPolicy(kInitial));
  Write("[tier.regular]\nper_minute = 0/1m\n");
  const size_t mark = daemon_.log().size();
  daemon_.Hup();
  ASSERT_TRUE(daemon_.WaitForLog("reload failed", mark)) << daemon_.log();
  EXPECT_NE(daemon_.log().find(".policy:2:", mark), std::string::npos) << daemon_.log();
  EXPECT_EQ(Admit("bob", 10), 5);
  EXPECT_EQ(subscriber_->version(), PolicySubscriber::VersionOf(kInitial));
}

TEST_F(LivePolicyTest, AGossipLimiterTakesThePolicyAndItsPeersFromTheDaemon) {
  // Two gossip limiters; the first learns its policy and its peer from the
  // file cachetd publishes, and a SIGHUP'd file changes both.
  GossipOptions o;
  o.node_id = "a";
  auto a =
      GossipRateLimiter::Create(RateLimitPolicy{{Tier{"regular", {Rule{"per_minute", 1, minutes(1)}}}}, {}}, o, clock_);
  o.node_id = "b";
  auto b =
      GossipRateLimiter::Create(RateLimitPolicy{{Tier{"regular", {Rule{"per_minute", 1, minutes(1)}}}}, {}}, o, clock_);
  ASSERT_TRUE(a && b);
  const std::string with_peer =
      "[tier.regular]\nper_minute = 7/1m fixed_window\n[peers]\nb = " + (*b)->endpoint() + "\n";
  Write(with_peer);
  daemon_.Hup();
  auto sub = PolicySubscriber::Start(pub_, [&](const PolicyFile& f) { return (*a)->Apply(f); });
  ASSERT_TRUE(sub.has_value()) << sub.error().ToString();
  ASSERT_TRUE(testing::WaitUntil([&] { return (*sub)->version() == PolicySubscriber::VersionOf(with_peer); }))
      << (*sub)->last_error();
  EXPECT_TRUE(testing::WaitUntil([&] { return (*a)->Stats().peers == 1 && (*a)->Stats().senders == 1; }));
  int admitted = 0;
  for (int i = 0; i < 10; ++i) admitted += (*a)->Check("carol", "regular").value().allowed;
  EXPECT_EQ(admitted, 7);
  // A file whose peer is no endpoint is refused by the daemon at reload,
  // and the limiter keeps both its policy and its peer.
  Write("[tier.regular]\nper_minute = 9/1m fixed_window\n[peers]\nb = 10.0.0.2:7400\n");
  const size_t mark = daemon_.log().size();
  daemon_.Hup();
  ASSERT_TRUE(daemon_.WaitForLog("reload failed", mark)) << daemon_.log();
  EXPECT_NE(daemon_.log().find("peer 'b': expected an endpoint", mark), std::string::npos) << daemon_.log();
  EXPECT_EQ((*sub)->version(), PolicySubscriber::VersionOf(with_peer));
  EXPECT_EQ((*a)->Stats().peers, 1u);
  EXPECT_FALSE((*a)->Check("carol", "regular").value().allowed);
}

TEST(LivePolicyStartTest, BadPolicyAtStartExitsWithCodeTwoNamingTheLine) {
  const std::string path = "/tmp/" + testing::UniqueSegmentName("badpolicy") + ".policy";
  std::ofstream(path) << "[tier.a]\nr = 10/1m\n[keys]\nk = gold\n";
  const testing::ProgramResult r = testing::RunCachetd({"--rate-limit-policy", path});
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find(":4: unknown tier 'gold'"), std::string::npos) << r.err;
  std::remove(path.c_str());
}

}  // namespace
}  // namespace cachet
