// GossipRateLimiter: limiters in one process, each with its own table and
// real PUB/SUB sockets on loopback, share one limit. Windows come from an
// injected clock; the tests wait only for messages to arrive.
#include "cachet/gossip_rate_limiter.h"

#include <gtest/gtest.h>

#include <functional>
#include <memory>
#include <msgpack.hpp>
#include <mutex>
#include <optional>
#include <string>
#include <vector>
#include <zmq.hpp>

#include "limiter_test_util.h"
#include "test_util.h"

namespace cachet {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

constexpr int64_t kStart = 1'700'000'040'000;  // a minute's start: windows of 60 s begin here

// A message from the peer "skewed" carrying one count, as a peer would send it.
std::string Message(uint64_t seq, uint64_t id, uint64_t meta, int64_t window, uint64_t total) {
  msgpack::sbuffer buffer;
  msgpack::packer<msgpack::sbuffer> pk(buffer);
  pk.pack_array(6);
  pk.pack(std::string("cachet-gossip"));
  pk.pack(1);
  pk.pack(std::string("skewed"));
  pk.pack(7);
  pk.pack(seq);
  pk.pack_array(1);
  pk.pack_array(4);
  pk.pack(id);
  pk.pack(meta);
  pk.pack(window);
  pk.pack(total);
  return std::string(buffer.data(), buffer.size());
}

class GossipTest : public ::testing::Test {
 protected:
  // Starts `n` limiters peered with each other.
  void StartMesh(size_t n, const RateLimitPolicy& policy) {
    for (size_t i = 0; i < n; ++i) limiters_.push_back(Start(policy, "h" + std::to_string(i)));
    for (auto& l : limiters_) ASSERT_TRUE(l->SetPeers(EndpointsBut(l.get())));
  }

  std::unique_ptr<GossipRateLimiter> Start(const RateLimitPolicy& policy, const std::string& id) {
    GossipOptions o;
    o.node_id = id;
    o.sync_interval = milliseconds(5);
    o.snapshot_interval = milliseconds(100);  // repairs what a slow subscription missed
    if (tune_) tune_(o);
    o.on_error = [this](const std::string& line) {
      std::lock_guard<std::mutex> lock(mu_);
      errors_.push_back(line);
    };
    auto l = GossipRateLimiter::Create(policy, o, clock_);
    EXPECT_TRUE(l.has_value()) << l.error().ToString();
    return l ? std::move(*l) : nullptr;
  }

  std::vector<std::string> EndpointsBut(const GossipRateLimiter* self) const {
    std::vector<std::string> out;
    for (const auto& l : limiters_) {
      if (l.get() != self) out.push_back(l->endpoint());
    }
    return out;
  }

  uint64_t Admit(GossipRateLimiter& l, int n) {
    uint64_t admitted = 0;
    for (int i = 0; i < n; ++i) {
      auto d = l.Check("user-1", "regular");
      EXPECT_TRUE(d.has_value()) << d.error().ToString();
      if (d && d->allowed) ++admitted;
    }
    return admitted;
  }

  std::vector<std::string> Errors() {
    std::lock_guard<std::mutex> lock(mu_);
    return errors_;
  }

  std::function<void(GossipOptions&)> tune_;  // options of the next limiters started
  FakeClock clock_{kStart};
  std::mutex mu_;  // before the limiters: their threads report until they are gone
  std::vector<std::string> errors_;
  std::vector<std::unique_ptr<GossipRateLimiter>> limiters_;
};

TEST_F(GossipTest, ThreeHostsShareOneFixedWindowLimit) {
  StartMesh(3, testing::PerMinutePolicy(30, Algorithm::kFixedWindow));
  for (auto& l : limiters_) EXPECT_EQ(Admit(*l, 10), 10u);
  // Each host learns the other two's 10: the window is full everywhere.
  for (auto& l : limiters_) {
    EXPECT_TRUE(testing::WaitUntil([&] { return l->Stats().counts_applied == 20; }, seconds(10)))
        << l->node_id() << " applied " << l->Stats().counts_applied;
  }
  // Totals are applied once: three more snapshots from each peer (one
  // every 100 ms; idle peers send nothing else) add nothing.
  const uint64_t received = limiters_[0]->Stats().messages_received;
  ASSERT_TRUE(testing::WaitUntil([&] { return limiters_[0]->Stats().messages_received >= received + 6; }, seconds(10)));
  for (auto& l : limiters_) {
    EXPECT_EQ(l->Stats().counts_applied, 20u) << l->node_id();
    auto d = l->Check("user-1", "regular");
    ASSERT_TRUE(d.has_value());
    EXPECT_FALSE(d->allowed) << l->node_id();
    EXPECT_EQ(d->remaining, 0u);
  }
  // Another key is untouched, and the next window starts afresh everywhere.
  EXPECT_TRUE(limiters_[0]->Check("user-2", "regular")->allowed);
  clock_.Advance(seconds(60));
  for (auto& l : limiters_) EXPECT_TRUE(l->Check("user-1", "regular")->allowed) << l->node_id();
  EXPECT_TRUE(Errors().empty()) << Errors().front();
}

TEST_F(GossipTest, SlidingWindowCountsAddUpToo) {
  StartMesh(2, testing::PerMinutePolicy(20, Algorithm::kSlidingWindow));
  EXPECT_EQ(Admit(*limiters_[0], 15), 15u);
  ASSERT_TRUE(testing::WaitUntil([&] { return limiters_[1]->Stats().counts_applied == 15; }, seconds(10)));
  EXPECT_EQ(Admit(*limiters_[1], 10), 5u);  // 15 of 20 taken by the other host
  // Half a window on, the previous window weighs half: 20 * 0.5 = 10 used.
  clock_.Advance(seconds(90));
  ASSERT_TRUE(testing::WaitUntil([&] { return limiters_[0]->Stats().counts_applied == 5; }, seconds(10)));
  EXPECT_EQ(Admit(*limiters_[0], 20), 10u);
}

TEST_F(GossipTest, AHostThatJoinsLateLearnsTheOpenWindowFromSnapshots) {
  StartMesh(2, testing::PerMinutePolicy(30, Algorithm::kFixedWindow));
  EXPECT_EQ(Admit(*limiters_[0], 12), 12u);
  EXPECT_EQ(Admit(*limiters_[1], 8), 8u);
  auto late = Start(testing::PerMinutePolicy(30, Algorithm::kFixedWindow), "late");
  ASSERT_TRUE(late->SetPeers(EndpointsBut(nullptr)));
  ASSERT_TRUE(testing::WaitUntil([&] { return late->Stats().counts_applied == 20; }, seconds(10)));
  EXPECT_EQ(Admit(*late, 20), 10u);
  EXPECT_EQ(late->Stats().senders, 2u);
}

// A peer whose subscription comes back (a healed partition) is heard by the
// publisher, which answers with a snapshot at its next sync; the totals
// sent while it was away reach it that way.
TEST_F(GossipTest, APeerThatReconnectsIsHeardAndCatchesUp) {
  StartMesh(2, testing::PerMinutePolicy(30, Algorithm::kFixedWindow));
  GossipRateLimiter& a = *limiters_[0];
  GossipRateLimiter& b = *limiters_[1];
  ASSERT_TRUE(testing::WaitUntil([&] { return a.Stats().subscriptions >= 1; }, seconds(10)));
  EXPECT_EQ(Admit(a, 5), 5u);
  ASSERT_TRUE(testing::WaitUntil([&] { return b.Stats().counts_applied == 5; }, seconds(10)));
  ASSERT_TRUE(b.SetPeers({}));
  ASSERT_TRUE(testing::WaitUntil([&] { return b.Stats().peers == 0; }, seconds(10)));
  const uint64_t before = a.Stats().subscriptions;
  EXPECT_EQ(Admit(a, 3), 3u);  // while b hears nothing
  ASSERT_TRUE(b.SetPeers({a.endpoint()}));
  EXPECT_TRUE(testing::WaitUntil([&] { return a.Stats().subscriptions > before; }, seconds(10)));
  EXPECT_TRUE(testing::WaitUntil([&] { return b.Stats().counts_applied == 8; }, seconds(10)))
      << b.Stats().counts_applied;
}

TEST_F(GossipTest, ARestartedHostCountsAfreshBesideItsEarlierLife) {
  StartMesh(2, testing::PerMinutePolicy(30, Algorithm::kFixedWindow));
  EXPECT_EQ(Admit(*limiters_[1], 10), 10u);
  ASSERT_TRUE(testing::WaitUntil([&] { return limiters_[0]->Stats().counts_applied == 10; }, seconds(10)));
  // h1 restarts (same id, new incarnation) and counts 5 more from zero: h0
  // keeps the 10 of its first life and adds the 5.
  limiters_[1].reset();
  limiters_[1] = Start(testing::PerMinutePolicy(30, Algorithm::kFixedWindow), "h1");
  ASSERT_TRUE(limiters_[1]->SetPeers({limiters_[0]->endpoint()}));
  ASSERT_TRUE(limiters_[0]->SetPeers({limiters_[1]->endpoint()}));
  EXPECT_EQ(Admit(*limiters_[1], 5), 5u);
  ASSERT_TRUE(testing::WaitUntil([&] { return limiters_[0]->Stats().counts_applied == 15; }, seconds(10)));
  EXPECT_EQ(Admit(*limiters_[0], 30), 15u);
}

TEST_F(GossipTest, MalformedMessagesAreRefusedAndChangeNothing) {
  StartMesh(1, testing::PerMinutePolicy(5, Algorithm::kFixedWindow));
  zmq::context_t ctx;
  zmq::socket_t pub(ctx, zmq::socket_type::pub);
  pub.set(zmq::sockopt::linger, 0);
  pub.bind("tcp://127.0.0.1:*");
  const std::string endpoint = pub.get(zmq::sockopt::last_endpoint);
  ASSERT_TRUE(limiters_[0]->SetPeers({endpoint}));
  // Until the subscription is up, messages vanish: send until one counts.
  const std::string garbage = "\xc1 is never msgpack";
  ASSERT_TRUE(testing::WaitUntil(
      [&] {
        pub.send(zmq::buffer(garbage), zmq::send_flags::dontwait);
        return limiters_[0]->Stats().malformed_messages > 0;
      },
      seconds(10), milliseconds(20)));
  EXPECT_EQ(limiters_[0]->Stats().counts_applied, 0u);
  EXPECT_EQ(Admit(*limiters_[0], 10), 5u);
  ASSERT_FALSE(Errors().empty());
  EXPECT_NE(Errors().front().find("gossip"), std::string::npos) << Errors().front();
}

// A well-formed message whose window lies an hour ahead of this host's
// clock (a peer with a broken clock, or a hostile one) is skipped: it would
// otherwise move the counter into that window.
TEST_F(GossipTest, CountsForAWindowFarAheadOfTheClockAreSkipped) {
  StartMesh(1, testing::PerMinutePolicy(5, Algorithm::kFixedWindow));
  zmq::context_t ctx;
  zmq::socket_t pub(ctx, zmq::socket_type::pub);
  pub.set(zmq::sockopt::linger, 0);
  pub.bind("tcp://127.0.0.1:*");
  ASSERT_TRUE(limiters_[0]->SetPeers({pub.get(zmq::sockopt::last_endpoint)}));
  const uint64_t meta = uint64_t{60'000} << 8 | static_cast<uint8_t>(Algorithm::kFixedWindow);
  const std::string ahead = Message(1, 12345, meta, kStart + 3'600'000, 1000);
  ASSERT_TRUE(testing::WaitUntil(
      [&] {
        pub.send(zmq::buffer(ahead), zmq::send_flags::dontwait);
        return limiters_[0]->Stats().skipped_entries > 0;
      },
      seconds(10), milliseconds(20)));
  EXPECT_EQ(limiters_[0]->Stats().counts_applied, 0u);
  EXPECT_EQ(limiters_[0]->Stats().malformed_messages, 0u);
  ASSERT_FALSE(Errors().empty());
  EXPECT_NE(Errors().front().find("ahead of this host's clock"), std::string::npos) << Errors().front();
  // A count for a rule this host does not have (here a 1 ms window, which
  // would reset a counter to a window of its own) is refused whole.
  const std::string foreign =
      Message(2, 12345, uint64_t{1} << 8 | static_cast<uint8_t>(Algorithm::kFixedWindow), kStart, 1000);
  pub.send(zmq::buffer(foreign), zmq::send_flags::dontwait);
  ASSERT_TRUE(testing::WaitUntil([&] { return limiters_[0]->Stats().malformed_messages > 0; }, seconds(10)));
  EXPECT_EQ(limiters_[0]->Stats().counts_applied, 0u);
  EXPECT_EQ(Admit(*limiters_[0], 10), 5u);
}

TEST_F(GossipTest, RulesThatDoNotAddUpAndBadOptionsAreRefused) {
  GossipOptions o;
  auto bucket = GossipRateLimiter::Create(testing::PerMinutePolicy(10, Algorithm::kTokenBucket), o, clock_);
  ASSERT_FALSE(bucket);
  EXPECT_EQ(bucket.error().code, ErrorCode::kInvalidArgument);
  EXPECT_NE(bucket.error().message.find("cannot be shared between hosts"), std::string::npos) << bucket.error().message;
  o.peers = {"10.0.0.1:7400"};
  auto bad_peer = GossipRateLimiter::Create(testing::PerMinutePolicy(10, Algorithm::kFixedWindow), o, clock_);
  ASSERT_FALSE(bad_peer);
  EXPECT_NE(bad_peer.error().message.find("'10.0.0.1:7400'"), std::string::npos) << bad_peer.error().message;
  o.peers.clear();
  o.sync_interval = milliseconds(0);
  EXPECT_FALSE(GossipRateLimiter::Create(testing::PerMinutePolicy(10, Algorithm::kFixedWindow), o, clock_));
  o.sync_interval = milliseconds(10);
  o.peer_timeout = o.snapshot_interval;  // a live peer could look dead between two snapshots
  auto hasty = GossipRateLimiter::Create(testing::PerMinutePolicy(10, Algorithm::kFixedWindow), o, clock_);
  ASSERT_FALSE(hasty);
  EXPECT_NE(hasty.error().message.find("peer_timeout"), std::string::npos) << hasty.error().message;
  // A local rule shares no counts: any algorithm will do.
  o.peer_timeout = seconds(3);
  RateLimitPolicy local_bucket = testing::PerMinutePolicy(10, Algorithm::kTokenBucket);
  local_bucket.tiers[0].rules[0].local = true;
  EXPECT_TRUE(GossipRateLimiter::Create(local_bucket, o, clock_));
}

TEST_F(GossipTest, LocalRulesShareNoCountsAndSplitTheLimitAmongTheHostsAlive) {
  RateLimitPolicy policy = testing::PerMinutePolicy(90, Algorithm::kFixedWindow);
  policy.tiers[0].rules[0].local = true;
  StartMesh(3, policy);
  // Each host hears from the other two (their snapshots, every 100 ms).
  for (auto& l : limiters_) {
    ASSERT_TRUE(testing::WaitUntil([&] { return l->Stats().live_hosts == 3 && l->Stats().senders == 2; }, seconds(10)))
        << l->node_id() << " counts " << l->Stats().live_hosts << " hosts";
  }
  // A third each, counted apart: no host's admissions reach another.
  for (auto& l : limiters_) EXPECT_EQ(Admit(*l, 50), 30u) << l->node_id();
  auto d = limiters_[0]->Check("user-1", "regular");
  ASSERT_TRUE(d.has_value());
  EXPECT_EQ(d->limit, 30u);  // what this host enforces, as the headers report it
  const uint64_t received = limiters_[0]->Stats().messages_received;
  ASSERT_TRUE(testing::WaitUntil([&] { return limiters_[0]->Stats().messages_received >= received + 4; }, seconds(10)));
  for (auto& l : limiters_) EXPECT_EQ(l->Stats().counts_applied, 0u) << l->node_id();

  // One host dies. Once its last messages are surely in (four more from the
  // survivor, 100 ms apart) and peer_timeout has passed on the clock, the
  // two left split the limit: 45 each, the counts so far kept.
  limiters_.pop_back();
  for (auto& l : limiters_) {
    const uint64_t before = l->Stats().messages_received;
    ASSERT_TRUE(testing::WaitUntil([&] { return l->Stats().messages_received >= before + 4; }, seconds(10)));
  }
  clock_.Advance(seconds(3) + milliseconds(1));  // still inside the minute's window
  for (auto& l : limiters_) {
    EXPECT_TRUE(testing::WaitUntil([&] { return l->Stats().live_hosts == 2; }, seconds(10)))
        << l->node_id() << " counts " << l->Stats().live_hosts << " hosts";
    EXPECT_EQ(Admit(*l, 50), 15u) << l->node_id();
  }
  EXPECT_TRUE(Errors().empty()) << Errors().front();
}

TEST_F(GossipTest, ShareRemainingSpendsAShareOfWhatIsLeftPerSync) {
  // Syncs 300 ms apart: the test's checks all fall between two of them.
  tune_ = [](GossipOptions& o) {
    o.share_remaining = true;
    o.sync_interval = milliseconds(300);
    o.snapshot_interval = milliseconds(300);
    o.peer_timeout = seconds(3);
  };
  StartMesh(3, testing::PerMinutePolicy(90, Algorithm::kFixedWindow));
  for (auto& l : limiters_) {
    ASSERT_TRUE(testing::WaitUntil([&] { return l->Stats().senders == 2; }, seconds(10))) << l->node_id();
    EXPECT_EQ(l->Stats().live_hosts, 3u);
  }
  // Each admission counts three times here until the next sync: before its
  // peers can report, this host spends a third of the 90 left.
  GossipRateLimiter& busy = *limiters_[0];
  EXPECT_EQ(Admit(busy, 50), 30u);
  // The peers take its real 30, not 90; and at the next sync it takes back
  // the 60 it presumed of them.
  for (size_t i = 1; i < limiters_.size(); ++i) {
    EXPECT_TRUE(testing::WaitUntil([&] { return limiters_[i]->Stats().counts_applied == 30; }, seconds(10)))
        << limiters_[i]->node_id() << " applied " << limiters_[i]->Stats().counts_applied;
  }
  ASSERT_TRUE(testing::WaitUntil([&] { return busy.Stats().retracted == 60; }, seconds(10))) << busy.Stats().retracted;
  // 60 left: a third of it (20 counted three times fill the window).
  EXPECT_EQ(Admit(busy, 50), 20u);
  // A peer that has heard of all 50 has 40 left and spends a third of
  // them, rounded up (a request passes on its own cost).
  GossipRateLimiter& other = *limiters_[1];
  ASSERT_TRUE(testing::WaitUntil([&] { return other.Stats().counts_applied == 50; }, seconds(10)));
  EXPECT_EQ(Admit(other, 50), 14u);
  EXPECT_TRUE(Errors().empty()) << Errors().front();
}

TEST_F(GossipTest, ApplyTakesAPolicyFileWithItsPeersOrRefusesBoth) {
  StartMesh(2, testing::PerMinutePolicy(100, Algorithm::kFixedWindow));
  GossipRateLimiter& l = *limiters_[0];
  ASSERT_TRUE(testing::WaitUntil([&] { return l.Stats().peers == 1; }));
  // A bad peer refuses the whole file: neither the limit nor the peers change.
  PolicyFile bad{testing::PerMinutePolicy(3, Algorithm::kFixedWindow), {}, std::vector<std::string>{"10.0.0.2:7400"}};
  auto refused = l.Apply(bad);
  ASSERT_FALSE(refused);
  EXPECT_NE(refused.error().message.find("10.0.0.2:7400"), std::string::npos) << refused.error().message;
  EXPECT_EQ(Admit(l, 5), 5u);
  // No [peers] section: the peers stay; an empty one: this host is alone.
  PolicyFile kept{testing::PerMinutePolicy(3, Algorithm::kFixedWindow), {}, std::nullopt};
  ASSERT_TRUE(l.Apply(kept));
  EXPECT_FALSE(l.Check("user-1", "regular")->allowed);  // 5 taken of the new 3
  EXPECT_EQ(l.Stats().peers, 1u);
  PolicyFile alone{testing::PerMinutePolicy(3, Algorithm::kFixedWindow), {}, std::vector<std::string>{}};
  ASSERT_TRUE(l.Apply(alone));
  EXPECT_TRUE(testing::WaitUntil([&] { return l.Stats().peers == 0; }));
}

TEST_F(GossipTest, ADeadPeerBlocksNoDecision) {
  StartMesh(1, testing::PerMinutePolicy(100, Algorithm::kFixedWindow));
  // Nobody listens there: the connection retries in the background.
  ASSERT_TRUE(limiters_[0]->SetPeers({"tcp://127.0.0.1:" + std::to_string(testing::FreeLoopbackPort())}));
  EXPECT_EQ(Admit(*limiters_[0], 100), 100u);
  EXPECT_FALSE(limiters_[0]->Check("user-1", "regular")->allowed);
}

}  // namespace
}  // namespace cachet
