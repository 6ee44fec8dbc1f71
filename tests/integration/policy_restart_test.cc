// Policy versions across daemon restarts: a limit changed while cachetd was
// down reaches a subscriber that still holds the old policy, and a policy's
// version is the same in every daemon that publishes it.
#include <gtest/gtest.h>

#include <fstream>
#include <zmq.hpp>

#include "cachet/policy_subscriber.h"
#include "daemon_process.h"

namespace cachet {
namespace {

constexpr const char* kTwenty = "[tier.regular]\nper_hour = 20/1h fixed_window\n";
constexpr const char* kThirty = "[tier.regular]\nper_hour = 30/1h fixed_window\n";

class PolicyRestartTest : public ::testing::Test {
 protected:
  void SetUp() override {
    limiter_ = std::move(*RateLimiter::Create(RateLimitPolicy{}, RateLimiterOptions{}, clock_));
    auto sub = PolicySubscriber::Start(pub_, *limiter_, [this](const PolicyFile&) { installs_.fetch_add(1); });
    ASSERT_TRUE(sub.has_value()) << sub.error().ToString();
    subscriber_ = std::move(*sub);
  }
  void TearDown() override { std::remove(path_.c_str()); }

  void Write(const std::string& text) { std::ofstream(path_) << text; }

  // Polls (with a deadline) until the subscriber holds the policy `text`.
  bool WaitForPolicy(const std::string& text) {
    return testing::WaitUntil([&] { return subscriber_->version() == PolicySubscriber::VersionOf(text); });
  }

  int Admit(const std::string& key, int tries) {
    int n = 0;
    for (int i = 0; i < tries; ++i) n += limiter_->Check(key, "regular").value().allowed;
    return n;
  }

  const std::string id_ = testing::UniqueSegmentName("polrestart");
  const std::string path_ = "/tmp/" + id_ + ".policy";
  const std::string pub_ = "ipc:///tmp/" + id_ + "-pub.sock";
  FakeClock clock_{1'700'000'000'000};
  std::unique_ptr<RateLimiter> limiter_;
  std::unique_ptr<PolicySubscriber> subscriber_;
  std::atomic<int> installs_{0};
};

TEST_F(PolicyRestartTest, LimitChangedWhileTheDaemonWasDownReachesTheSubscriberAfterTheRestart) {
  Write(kTwenty);
  testing::DaemonProcess daemon({"--rate-limit-policy", path_, "--pub", pub_});
  ASSERT_TRUE(daemon.Start());
  ASSERT_TRUE(WaitForPolicy(kTwenty)) << subscriber_->last_error();
  EXPECT_EQ(Admit("alice", 25), 20);

  // Stopped, the file changed, started again: the first policy of this
  // incarnation must not pass for the one the subscriber already holds.
  ASSERT_EQ(daemon.Stop(), 0);
  Write(kThirty);
  ASSERT_TRUE(daemon.Start());
  ASSERT_TRUE(WaitForPolicy(kThirty)) << "still holding 20/1h; " << subscriber_->last_error();
  EXPECT_EQ(installs_.load(), 2);
  // Same rule, same window: alice keeps her 20 and gets the 10 more of the new limit.
  EXPECT_EQ(Admit("alice", 25), 10);
  EXPECT_EQ(Admit("bob", 40), 30);
  EXPECT_NE(daemon.log().find("rate-limit policy version " + std::to_string(PolicySubscriber::VersionOf(kThirty))),
            std::string::npos)
      << daemon.log();
}

TEST(PolicyVersionTest, VersionIdentifiesTheTextAndIsNeverZero) {
  EXPECT_EQ(PolicySubscriber::VersionOf(kTwenty), PolicySubscriber::VersionOf(std::string(kTwenty)));
  EXPECT_NE(PolicySubscriber::VersionOf(kTwenty), PolicySubscriber::VersionOf(kThirty));
  EXPECT_NE(PolicySubscriber::VersionOf(""), 0u);
}

// A publisher whose versions repeat (as cachetd's did, counting from 1 at
// each start) still gets a changed text installed.
TEST(PolicyVersionTest, SubscriberInstallsAChangedTextUnderARepeatedVersion) {
  zmq::context_t context;
  zmq::socket_t pub(context, zmq::socket_type::pub);
  pub.set(zmq::sockopt::linger, 0);
  pub.bind("tcp://127.0.0.1:*");
  const std::string endpoint = pub.get(zmq::sockopt::last_endpoint);
  auto publish = [&](const std::string& text) {
    pub.send(zmq::str_buffer("cachet.policy"), zmq::send_flags::sndmore);
    pub.send(zmq::str_buffer("1"), zmq::send_flags::sndmore);
    pub.send(zmq::buffer(text), zmq::send_flags::none);
  };
  FakeClock clock(1'700'000'000'000);
  auto limiter = RateLimiter::Create(RateLimitPolicy{}, RateLimiterOptions{}, clock);
  std::atomic<int> installs{0};
  auto sub = PolicySubscriber::Start(endpoint, **limiter, [&](const PolicyFile&) { installs.fetch_add(1); });
  ASSERT_TRUE(sub.has_value());
  auto eventually = [&](const std::string& text, int want) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (std::chrono::steady_clock::now() < deadline) {
      publish(text);
      if (installs.load() == want) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return false;
  };
  ASSERT_TRUE(eventually(kTwenty, 1));
  ASSERT_TRUE(eventually(kThirty, 2)) << (*sub)->last_error();
  EXPECT_EQ((*limiter)->Check("k", "regular").value().limit, 30u);
  for (int i = 0; i < 5; ++i) publish(kThirty);  // the same again: not installed again
  ASSERT_TRUE(eventually(kTwenty, 3));
  EXPECT_EQ((*limiter)->Check("k", "regular").value().limit, 20u);
}

}  // namespace
}  // namespace cachet
