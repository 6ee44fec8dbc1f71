// LeaseKeeper against a real etcd: it holds a lease past its TTL, and says
// when it can no longer count on it (etcd dead, hung, or the lease gone).
#include "cachet/cluster/etcd_lease_keeper.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "cachet/cluster/etcd_client.h"
#include "etcd_server.h"
#include "test_util.h"

namespace cachet::cluster {
namespace {

using cachet::testing::EtcdServer;
using cachet::testing::WaitUntil;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// What on_lost was told, and when.
class LossRecorder {
 public:
  LeaseKeeper::LostCallback Callback() {
    return [this](const Error& why) {
      std::lock_guard<std::mutex> lock(mu_);
      ++calls_;
      error_ = why;
      at_ = Clock::now();
    };
  }
  int calls() const {
    std::lock_guard<std::mutex> lock(mu_);
    return calls_;
  }
  Error error() const {
    std::lock_guard<std::mutex> lock(mu_);
    return error_;
  }
  Clock::time_point at() const {
    std::lock_guard<std::mutex> lock(mu_);
    return at_;
  }

 private:
  mutable std::mutex mu_;
  int calls_ = 0;
  Error error_;
  Clock::time_point at_;
};

class LeaseKeeperTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(etcd_.Start());
    auto client = EtcdClient::Create(Options());
    ASSERT_TRUE(client.has_value());
    client_.emplace(std::move(*client));
  }
  EtcdOptions Options() const { return EtcdOptions{etcd_.endpoint(), milliseconds(1000)}; }
  LeaseKeeper Keep(LossRecorder& recorder, LeaseKeeperOptions options = {}) {
    auto keeper = LeaseKeeper::Start(Options(), options, recorder.Callback());
    EXPECT_TRUE(keeper.has_value()) << keeper.error().ToString();
    return std::move(*keeper);
  }
  bool KeyExists(const std::string& key) {
    auto kv = client_->Get(key);
    return kv.has_value() && kv->has_value();
  }

  EtcdServer etcd_;
  std::optional<EtcdClient> client_;
};

// Watched on etcd's clock for three TTLs: the bound key stays.
TEST_F(LeaseKeeperTest, KeepsALeaseOfOneSecondAliveForSeveralSeconds) {
  LossRecorder recorder;
  LeaseKeeper keeper = Keep(recorder);
  EXPECT_EQ(keeper.ttl_seconds(), 1);
  ASSERT_TRUE(client_->Put("/nodes/a", "me", keeper.lease_id()).has_value());
  const auto until = Clock::now() + std::chrono::seconds(3);
  bool vanished = false;
  WaitUntil([&] { return (vanished = !KeyExists("/nodes/a")) || Clock::now() >= until; }, std::chrono::seconds(10),
            milliseconds(50));
  EXPECT_FALSE(vanished);
  EXPECT_FALSE(keeper.lost());
  EXPECT_EQ(recorder.calls(), 0);
}

// Killed etcd: the keeper reports the loss once the lease may have lapsed,
// no later than its TTL after the last keepalive etcd answered.
TEST_F(LeaseKeeperTest, ReportsTheLossWhenEtcdIsKilled) {
  LossRecorder recorder;
  LeaseKeeper keeper = Keep(recorder);
  ASSERT_TRUE(client_->Put("/nodes/a", "me", keeper.lease_id()).has_value());
  etcd_.Kill();
  const auto killed = Clock::now();
  ASSERT_TRUE(WaitUntil([&] { return recorder.calls() > 0; }, std::chrono::seconds(5)));
  const auto after = recorder.at() - killed;
  // TTL 1 s from the last keepalive sent before the kill, and slack for a
  // loaded machine (the report itself is due at the TTL).
  EXPECT_LT(after, milliseconds(1500));
  EXPECT_TRUE(keeper.lost());
  EXPECT_EQ(recorder.error().code, ErrorCode::kTimeout);
  EXPECT_NE(recorder.error().message.find(std::to_string(keeper.lease_id())), std::string::npos)
      << recorder.error().message;
  EXPECT_NE(recorder.error().message.find("cannot connect"), std::string::npos) << recorder.error().message;
}

// A hung etcd answers nothing; the keeper's keepalives give up in time to
// report the loss within the TTL all the same.
TEST_F(LeaseKeeperTest, ReportsTheLossWhenEtcdHangs) {
  LossRecorder recorder;
  LeaseKeeper keeper = Keep(recorder);
  etcd_.Pause();
  const auto paused = Clock::now();
  ASSERT_TRUE(WaitUntil([&] { return recorder.calls() > 0; }, std::chrono::seconds(5)));
  const auto after = recorder.at() - paused;
  etcd_.Resume();
  EXPECT_LT(after, milliseconds(1500));
  EXPECT_EQ(recorder.error().code, ErrorCode::kTimeout);
  EXPECT_TRUE(keeper.lost());
}

TEST_F(LeaseKeeperTest, ReportsTheLossWhenTheLeaseIsRevokedElsewhere) {
  LossRecorder recorder;
  LeaseKeeperOptions options;
  options.ttl_seconds = 10;
  options.interval = milliseconds(50);
  LeaseKeeper keeper = Keep(recorder, options);
  EXPECT_EQ(keeper.ttl_seconds(), 10);
  ASSERT_TRUE(client_->LeaseRevoke(keeper.lease_id()).has_value());
  ASSERT_TRUE(WaitUntil([&] { return recorder.calls() > 0; }, std::chrono::seconds(5)));
  EXPECT_EQ(recorder.error().code, ErrorCode::kNotFound);
  EXPECT_TRUE(keeper.lost());
}

TEST_F(LeaseKeeperTest, RevokeDeletesTheBoundKeysAtOnce) {
  LossRecorder recorder;
  LeaseKeeperOptions options;
  options.ttl_seconds = 30;
  LeaseKeeper keeper = Keep(recorder, options);
  ASSERT_TRUE(client_->Put("/nodes/a", "me", keeper.lease_id()).has_value());
  ASSERT_TRUE(KeyExists("/nodes/a"));
  auto revoked = keeper.Revoke();
  ASSERT_TRUE(revoked.has_value()) << revoked.error().ToString();
  EXPECT_FALSE(KeyExists("/nodes/a"));
  EXPECT_EQ(recorder.calls(), 0);  // a revoke asked for is not a loss
}

TEST_F(LeaseKeeperTest, DestructorReturnsPromptlyWhileEtcdHangs) {
  LossRecorder recorder;
  LeaseKeeperOptions options;
  options.ttl_seconds = 30;  // long keepalive waits: up to 10 s each
  std::optional<LeaseKeeper> keeper(Keep(recorder, options));
  etcd_.Pause();
  const auto start = Clock::now();
  keeper.reset();
  const auto took = Clock::now() - start;
  etcd_.Resume();
  EXPECT_LT(took, milliseconds(2000));  // far below a keepalive's 10 s wait; slack for a loaded machine
}

TEST(LeaseKeeperOptionsTest, BadOptionsAreRefused) {
  const EtcdOptions etcd{"127.0.0.1:2379", milliseconds(100)};
  LossRecorder recorder;
  LeaseKeeperOptions zero_ttl;
  zero_ttl.ttl_seconds = 0;
  LeaseKeeperOptions slow;
  slow.ttl_seconds = 1;
  slow.interval = milliseconds(1000);
  for (auto* started : {new Result<LeaseKeeper>(LeaseKeeper::Start(etcd, zero_ttl, recorder.Callback())),
                        new Result<LeaseKeeper>(LeaseKeeper::Start(etcd, slow, recorder.Callback())),
                        new Result<LeaseKeeper>(LeaseKeeper::Start(etcd, LeaseKeeperOptions{}, nullptr))}) {
    const std::unique_ptr<Result<LeaseKeeper>> owned(started);
    ASSERT_FALSE(started->has_value());
    EXPECT_EQ(started->error().code, ErrorCode::kInvalidArgument);
  }
}

TEST(LeaseKeeperUnreachableTest, StartFailsWhenNoEtcdAnswers) {
  const std::string dead = "http://127.0.0.1:" + std::to_string(cachet::testing::FreeLoopbackPort());
  LossRecorder recorder;
  auto keeper = LeaseKeeper::Start(EtcdOptions{dead, milliseconds(200)}, LeaseKeeperOptions{}, recorder.Callback());
  ASSERT_FALSE(keeper.has_value());
  EXPECT_EQ(keeper.error().code, ErrorCode::kUnavailable);
  EXPECT_NE(keeper.error().message.find(dead), std::string::npos) << keeper.error().message;
}

}  // namespace
}  // namespace cachet::cluster
