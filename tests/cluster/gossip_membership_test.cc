// GossipMembership: gossip limiters that find each other through a real
// etcd (started by the test on loopback) instead of a static peer list.
// They share one limit once joined, a limiter that joins later is heard by
// the others, one that leaves is dropped at once, and a node id held by
// another live limiter, a wildcard endpoint or an etcd that does not answer
// is refused with the reason.
#include "cachet/gossip_membership.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "cachet/cluster/etcd_client.h"
#include "cachet/gossip_rate_limiter.h"
#include "etcd_server.h"
#include "limiter_test_util.h"
#include "test_util.h"

namespace cachet {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

class GossipMembershipTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(etcd_.Start()); }

  GossipMembershipOptions Options() const {
    GossipMembershipOptions m;
    m.etcd = etcd_.endpoint();
    m.cluster = cluster_;
    return m;
  }

  // A limiter named `id` on a free loopback port, joined to the cluster.
  void Join(const std::string& id) {
    GossipOptions o;
    o.node_id = id;
    o.sync_interval = milliseconds(5);
    o.snapshot_interval = milliseconds(100);
    auto limiter = GossipRateLimiter::Create(testing::PerMinutePolicy(30), o, clock_);
    ASSERT_TRUE(limiter.has_value()) << limiter.error().ToString();
    auto membership = GossipMembership::Join(**limiter, Options());
    ASSERT_TRUE(membership.has_value()) << membership.error().ToString();
    limiters_.push_back(std::move(*limiter));
    memberships_.push_back(std::move(*membership));
  }

  // Every membership lists exactly the endpoints of the limiters alive.
  bool AllSeeEachOther() {
    std::vector<std::string> endpoints;
    for (const auto& l : limiters_) {
      if (l) endpoints.push_back(l->endpoint());
    }
    std::sort(endpoints.begin(), endpoints.end());
    for (const auto& m : memberships_) {
      if (m && m->peers() != endpoints) return false;
    }
    return true;
  }

  uint64_t Admit(GossipRateLimiter& l, int n) {
    uint64_t admitted = 0;
    for (int i = 0; i < n; ++i) admitted += l.Check("user-1", "regular").value().allowed;
    return admitted;
  }

  testing::EtcdServer etcd_;
  const std::string cluster_ = testing::UniqueSegmentName("gm");
  FakeClock clock_{1'700'000'040'000};  // a minute's start
  std::vector<std::unique_ptr<GossipRateLimiter>> limiters_;
  std::vector<std::unique_ptr<GossipMembership>> memberships_;  // after limiters_: destroyed first
};

TEST_F(GossipMembershipTest, LimitersRegisteredInEtcdShareOneLimit) {
  Join("h0");
  Join("h1");
  Join("h2");
  ASSERT_TRUE(testing::WaitUntil([&] { return AllSeeEachOther(); }, seconds(10)));
  for (auto& l : limiters_) EXPECT_EQ(Admit(*l, 10), 10u);
  for (auto& l : limiters_) {
    EXPECT_TRUE(testing::WaitUntil([&] { return l->Stats().counts_applied == 20; }, seconds(10)))
        << l->node_id() << " applied " << l->Stats().counts_applied;
    EXPECT_FALSE(l->Check("user-1", "regular")->allowed) << l->node_id();
  }
}

TEST_F(GossipMembershipTest, AJoinAndALeaveReachEveryLimiter) {
  Join("h0");
  Join("h1");
  ASSERT_TRUE(testing::WaitUntil([&] { return AllSeeEachOther(); }, seconds(10)));
  const uint64_t before = memberships_[0]->updates();
  Join("h2");
  ASSERT_TRUE(testing::WaitUntil([&] { return AllSeeEachOther(); }, seconds(5)));
  EXPECT_GT(memberships_[0]->updates(), before);
  // The newcomer's counts reach the first two: it is their peer now.
  EXPECT_EQ(Admit(*limiters_[2], 7), 7u);
  for (int i = 0; i < 2; ++i) {
    EXPECT_TRUE(testing::WaitUntil([&] { return limiters_[i]->Stats().counts_applied == 7; }, seconds(10)))
        << limiters_[i]->node_id();
  }
  // A clean stop withdraws the registration at once, not after the TTL.
  const auto left = std::chrono::steady_clock::now();
  memberships_[1].reset();
  limiters_[1].reset();
  ASSERT_TRUE(testing::WaitUntil([&] { return AllSeeEachOther(); }, seconds(5)));
  EXPECT_LT(std::chrono::steady_clock::now() - left, seconds(1));
  EXPECT_EQ(memberships_[0]->peers().size(), 2u);
}

TEST_F(GossipMembershipTest, ANodeIdHeldByAnotherLimiterIsRefused) {
  Join("same");
  GossipOptions o;
  o.node_id = "same";
  auto other = GossipRateLimiter::Create(testing::PerMinutePolicy(30), o, clock_);
  ASSERT_TRUE(other.has_value()) << other.error().ToString();
  auto refused = GossipMembership::Join(**other, Options());
  ASSERT_FALSE(refused.has_value());
  EXPECT_EQ(refused.error().code, ErrorCode::kAlreadyExists);
  EXPECT_NE(refused.error().message.find("node id 'same' is registered by another limiter"), std::string::npos)
      << refused.error().message;
  EXPECT_NE(refused.error().message.find(limiters_[0]->endpoint()), std::string::npos) << refused.error().message;
  // The first keeps its registration.
  EXPECT_EQ(memberships_[0]->peers(), std::vector<std::string>{limiters_[0]->endpoint()});
}

TEST_F(GossipMembershipTest, BadOptionsAndAnUnreachableEtcdAreRefusedWithTheReason) {
  GossipOptions o;
  o.node_id = "solo";
  auto limiter = GossipRateLimiter::Create(testing::PerMinutePolicy(30), o, clock_);
  ASSERT_TRUE(limiter.has_value()) << limiter.error().ToString();
  auto expect_refused = [&](GossipMembershipOptions m, const std::string& why) {
    auto r = GossipMembership::Join(**limiter, m);
    ASSERT_FALSE(r.has_value()) << why;
    EXPECT_NE(r.error().message.find(why), std::string::npos) << r.error().message;
  };
  GossipMembershipOptions m = Options();
  m.cluster = "";
  expect_refused(m, "needs the cluster's name");
  m = Options();
  m.ttl_seconds = 0;
  expect_refused(m, "ttl_seconds must be 1 to 60");
  m = Options();
  m.advertise = "tcp://0.0.0.0:7400";
  expect_refused(m, "set advertise to this host's address");
  m = Options();
  m.etcd = "http://127.0.0.1:" + std::to_string(testing::FreeLoopbackPort());
  m.etcd_timeout = milliseconds(300);
  expect_refused(m, "127.0.0.1");
  // Nothing was registered by the refused attempts.
  cluster::EtcdOptions e;
  e.endpoints = etcd_.endpoint();
  auto client = cluster::EtcdClient::Create(e);
  ASSERT_TRUE(client.has_value());
  auto range = client->Range("/cachet/" + cluster_ + "/limiters/");
  ASSERT_TRUE(range.has_value()) << range.error().ToString();
  EXPECT_TRUE(range->kvs.empty());
}

}  // namespace
}  // namespace cachet
