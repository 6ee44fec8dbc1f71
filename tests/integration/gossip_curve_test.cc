// GossipRateLimiter with CURVE: limiters in one process, real sockets on
// loopback, the key pairs `cachectl keygen` writes. Peers that share the
// pair sync; a peer with another pair, a plaintext one and a client with a
// key of its own get nothing and show in refused_connections or
// failed_handshakes; a bind other hosts can reach needs CURVE or insecure;
// and a capture of the PUB's port shows the counts' bytes only without
// CURVE.
#include <gtest/gtest.h>
#include <zmq.hpp>

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "cachet/gossip_rate_limiter.h"
#include "curve_files.h"
#include "limiter_test_util.h"
#include "loopback_capture.h"
#include "test_util.h"

namespace cachet {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
using testing::WaitUntil;

constexpr int64_t kStart = 1'700'000'040'000;  // a minute's start: windows of 60 s begin here

size_t CountOf(const std::vector<std::string>& lines, const std::string& needle) {
  size_t n = 0;
  for (const std::string& line : lines) n += line.find(needle) != std::string::npos ? 1 : 0;
  return n;
}

class GossipCurveTest : public ::testing::Test {
 protected:
  // The pair of `who` ("server": the peers' shared one; "stranger": another).
  CurveKeyPair Pair(const std::string& who = "server") const {
    auto pair = ReadCurveKeyFile(files_.path(who + ".key"), true);
    EXPECT_TRUE(pair.has_value()) << pair.error().ToString();
    return pair ? *pair : CurveKeyPair{};
  }

  Result<std::unique_ptr<GossipRateLimiter>> Create(const std::string& id, GossipOptions o) {
    o.node_id = id;
    o.sync_interval = milliseconds(5);
    o.snapshot_interval = milliseconds(100);
    o.on_error = [this](const std::string& line) {
      std::lock_guard<std::mutex> lock(mu_);
      errors_.push_back(line);
    };
    return GossipRateLimiter::Create(testing::PerMinutePolicy(100), std::move(o), clock_);
  }

  std::unique_ptr<GossipRateLimiter> Start(const std::string& id, const CurveKeyPair& curve,
                                           std::vector<std::string> peers = {}) {
    GossipOptions o;
    o.curve = curve;
    o.peers = std::move(peers);
    auto l = Create(id, std::move(o));
    EXPECT_TRUE(l.has_value()) << l.error().ToString();
    return l ? std::move(*l) : nullptr;
  }

  uint64_t Admit(GossipRateLimiter& l, int n, const std::string& key = "user-1") {
    uint64_t admitted = 0;
    for (int i = 0; i < n; ++i) {
      auto d = l.Check(key, "regular");
      EXPECT_TRUE(d.has_value()) << d.error().ToString();
      if (d && d->allowed) ++admitted;
    }
    return admitted;
  }

  // Waits until `l` has sent `n` more messages: with snapshots every 100 ms,
  // long enough for a peer to have got (and applied) them had it been let in.
  bool SendsMore(const GossipRateLimiter& l, uint64_t n) {
    const uint64_t from = l.Stats().messages_sent;
    return WaitUntil([&] { return l.Stats().messages_sent >= from + n; }, seconds(10));
  }

  std::vector<std::string> Errors() {
    std::lock_guard<std::mutex> lock(mu_);
    return errors_;
  }

  testing::CurveFiles files_;
  FakeClock clock_{kStart};
  std::mutex mu_;  // before the limiters: their threads report until they are gone
  std::vector<std::string> errors_;
};

TEST_F(GossipCurveTest, PeersWithTheSharedPairSyncCounts) {
  auto a = Start("a", Pair());
  auto b = Start("b", Pair(), {a->endpoint()});
  ASSERT_TRUE(a->SetPeers({b->endpoint()}));
  EXPECT_EQ(Admit(*a, 30), 30u);
  EXPECT_EQ(Admit(*b, 20), 20u);
  EXPECT_TRUE(WaitUntil([&] { return b->Stats().counts_applied == 30 && a->Stats().counts_applied == 20; }))
      << "b applied " << b->Stats().counts_applied << ", a applied " << a->Stats().counts_applied;
  // The window is spent on both: 50 counted, 50 left.
  EXPECT_EQ(Admit(*b, 60), 50u);
  for (const auto* l : {a.get(), b.get()}) {
    EXPECT_EQ(l->Stats().refused_connections, 0u);
    EXPECT_EQ(l->Stats().failed_handshakes, 0u);
  }
}

TEST_F(GossipCurveTest, APeerWithAnotherPairGetsNoCountsAndFailsItsHandshake) {
  auto a = Start("a", Pair());
  auto stranger = Start("stranger", Pair("stranger"), {a->endpoint()});
  ASSERT_TRUE(a->SetPeers({stranger->endpoint()}));
  EXPECT_EQ(Admit(*a, 30), 30u);
  EXPECT_EQ(Admit(*stranger, 5), 5u);
  // Each side's SUB fails at the other's PUB (it takes the other's public
  // key for its own pair's).
  ASSERT_TRUE(WaitUntil([&] { return a->Stats().failed_handshakes >= 2 && stranger->Stats().failed_handshakes >= 2; }))
      << a->Stats().failed_handshakes << " " << stranger->Stats().failed_handshakes;
  ASSERT_TRUE(SendsMore(*a, 5));
  EXPECT_EQ(stranger->Stats().counts_applied, 0u);
  EXPECT_EQ(stranger->Stats().messages_received, 0u);
  EXPECT_EQ(a->Stats().messages_received, 0u);
  EXPECT_EQ(Admit(*stranger, 95), 95u);  // its own 100: nothing of a's 30
  EXPECT_GE(CountOf(Errors(), "has another server key"), 1u);
}

TEST_F(GossipCurveTest, APlaintextPeerGetsNoCountsAndFailsItsHandshake) {
  auto a = Start("a", Pair());
  auto plain = Start("plain", CurveKeyPair{}, {a->endpoint()});  // loopback: no insecure needed
  EXPECT_EQ(Admit(*a, 30), 30u);
  ASSERT_TRUE(WaitUntil([&] { return a->Stats().failed_handshakes >= 1; }));
  ASSERT_TRUE(SendsMore(*a, 5));
  EXPECT_EQ(plain->Stats().messages_received, 0u);
  EXPECT_EQ(plain->Stats().counts_applied, 0u);
  // "does not speak CURVE", or "closed during it" when the plaintext side
  // gives up first: a failed handshake either way.
  EXPECT_GE(CountOf(Errors(), "gossip: refused a connection on " + a->endpoint() + ": handshake failed"), 1u);
}

// A client that knows the peers' public key but holds a pair of its own
// gets past the encryption and is refused by the ZAP handler, once for its
// one connection however much it sends.
TEST_F(GossipCurveTest, AClientKeyOtherThanTheSharedOneIsRefusedOnce) {
  auto a = Start("a", Pair());
  const CurveKeyPair other = Pair("stranger");
  zmq::context_t context;
  zmq::socket_t sub(context, zmq::socket_type::sub);
  sub.set(zmq::sockopt::linger, 0);
  sub.set(zmq::sockopt::reconnect_ivl, -1);  // one connection, never remade
  sub.set(zmq::sockopt::curve_serverkey, Pair().public_key);
  sub.set(zmq::sockopt::curve_publickey, other.public_key);
  sub.set(zmq::sockopt::curve_secretkey, other.secret_key);
  sub.set(zmq::sockopt::subscribe, "");
  sub.connect(a->endpoint());
  EXPECT_EQ(Admit(*a, 30), 30u);
  ASSERT_TRUE(WaitUntil([&] { return a->Stats().refused_connections >= 1; }));
  ASSERT_TRUE(SendsMore(*a, 5));
  EXPECT_EQ(a->Stats().refused_connections, 1u);
  zmq::pollitem_t item{static_cast<void*>(sub), 0, ZMQ_POLLIN, 0};
  EXPECT_EQ(zmq::poll(&item, 1, milliseconds(0)), 0) << "a refused client got a message";
  EXPECT_EQ(CountOf(Errors(), "CURVE key " + other.public_key + " is not the peers' shared key"), 1u);
}

TEST_F(GossipCurveTest, ABindOtherHostsReachNeedsCurveOrInsecure) {
  GossipOptions bare;
  bare.bind = "tcp://0.0.0.0:0";
  auto refused = Create("bare", bare);
  ASSERT_FALSE(refused.has_value());
  EXPECT_EQ(refused.error().code, ErrorCode::kInvalidArgument);
  EXPECT_NE(refused.error().message.find("'tcp://0.0.0.0:0' is reachable from other hosts"), std::string::npos)
      << refused.error().message;

  GossipOptions insecure = bare;
  insecure.insecure = true;
  auto clear = Create("insecure", insecure);
  ASSERT_TRUE(clear.has_value()) << clear.error().ToString();
  EXPECT_EQ(CountOf(Errors(), "is served in clear text to other hosts (insecure)"), 1u);
  clear->reset();

  GossipOptions keyed = bare;
  keyed.curve = Pair();
  auto encrypted = Create("keyed", keyed);
  ASSERT_TRUE(encrypted.has_value()) << encrypted.error().ToString();
  EXPECT_EQ(CountOf(Errors(), "clear text"), 1u);  // the insecure one's only

  // Half a pair, or halves of two.
  GossipOptions half = bare;
  half.curve.secret_key = Pair().secret_key;
  auto no_public = Create("half", half);
  ASSERT_FALSE(no_public.has_value());
  EXPECT_NE(no_public.error().message.find("needs both keys"), std::string::npos) << no_public.error().message;
  half.curve.public_key = Pair("stranger").public_key;
  auto mixed = Create("mixed", half);
  ASSERT_FALSE(mixed.has_value());
  EXPECT_NE(mixed.error().message.find("not the secret key's"), std::string::npos) << mixed.error().message;
}

// The messages carry the sender's node id: a capture of the PUB's port
// shows it without CURVE and never with it.
TEST_F(GossipCurveTest, APacketCaptureShowsTheCountsOnlyWithoutCurve) {
  if (auto why = testing::LoopbackCapture::Unavailable()) GTEST_SKIP() << *why;
  const std::string marker = "gossip-marker-" + testing::UniqueSegmentName("n");
  auto capture = [&](const CurveKeyPair& curve) -> std::string {
    auto sender = Start(marker, curve);
    auto receiver = Start("receiver", curve, {sender->endpoint()});
    const std::string port = sender->endpoint().substr(sender->endpoint().rfind(':') + 1);
    testing::LoopbackCapture dump(std::stoi(port));
    EXPECT_TRUE(dump.Started());
    // Snapshots go every 100 ms, new counts every sync.
    EXPECT_TRUE(WaitUntil(
        [&] {
          (void)Admit(*sender, 1, "key-" + std::to_string(dump.size()));
          return dump.size() > 2000 && receiver->Stats().messages_received >= 10;
        },
        seconds(10), milliseconds(20)))
        << dump.size() << " bytes, " << receiver->Stats().messages_received << " messages";
    EXPECT_GT(receiver->Stats().counts_applied, 0u);
    return dump.Stop();
  };
  const std::string clear = capture(CurveKeyPair{});
  const std::string encrypted = capture(Pair());
  EXPECT_NE(clear.find(marker), std::string::npos)
      << "the capture missed the plaintext messages (" << clear.size() << " bytes)";
  EXPECT_GT(encrypted.size(), 2000u);                    // the messages were captured...
  EXPECT_EQ(encrypted.find(marker), std::string::npos);  // ...and the node id is not in them
}

}  // namespace
}  // namespace cachet
