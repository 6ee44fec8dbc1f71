// The host-wide store: counters in shared memory, shared by threads and
// processes, never admitting more than the limit, and deciding as the
// in-process algorithms do.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

#include "cachet/shm_rate_limiter.h"
#include "limiter_test_util.h"
#include "test_util.h"

namespace cachet {
namespace {

using std::chrono::milliseconds;
using std::chrono::minutes;
using std::chrono::seconds;

using testing::MakeRule;

RateLimitPolicy OneRule(uint64_t limit, Algorithm a = Algorithm::kFixedWindow) {
  RateLimitPolicy p;
  p.tiers.push_back({"t", {MakeRule("per_minute", limit, minutes(1), a)}});
  return p;
}

class ShmLimiterTest : public ::testing::Test {
 protected:
  void TearDown() override { (void)ShmRateLimiter::Remove(name_); }
  std::unique_ptr<ShmRateLimiter> Open(const RateLimitPolicy& p, const Clock& clock = SystemClock::Instance()) {
    auto l = ShmRateLimiter::Open(name_, p, 4096, clock);
    EXPECT_TRUE(l.has_value()) << l.error().ToString();
    return std::move(*l);
  }
  const std::string name_ = testing::UniqueSegmentName("shmrl");
};

TEST_F(ShmLimiterTest, DecidesExactlyAsTheInProcessAlgorithms) {
  FakeClock clock{1'700'000'040'000};
  for (Algorithm a : {Algorithm::kFixedWindow, Algorithm::kSlidingWindow, Algorithm::kTokenBucket}) {
    RateLimitPolicy p;
    p.tiers.push_back({"t", {MakeRule("per_minute", 10, minutes(1), a), MakeRule("per_second", 4, seconds(1), a)}});
    auto local = std::move(*RateLimiter::Create(p, clock));
    auto shm = Open(p, clock);
    const std::string key = std::string("user-") + AlgorithmName(a);
    testing::WalkParitySchedule(clock, [&](size_t i, uint64_t cost) {
      const Decision want = local->Check(key, "t", cost).value();
      const Decision got = shm->Check(key, "t", cost).value();
      SCOPED_TRACE(std::string(AlgorithmName(a)) + " step " + std::to_string(i));
      EXPECT_EQ(got.allowed, want.allowed);
      EXPECT_EQ(got.rule, want.rule);
      EXPECT_EQ(got.remaining, want.remaining);
      EXPECT_EQ(got.retry_after, want.retry_after);
    });
  }
}

TEST_F(ShmLimiterTest, HandlesOfOneNameShareTheCount) {
  const FakeClock clock;  // frozen: no window boundary inside the test
  auto a = Open(OneRule(10), clock);
  auto b = Open(OneRule(10), clock);
  int admitted = 0;
  for (int i = 0; i < 30; ++i) admitted += (i % 2 ? a : b)->Check("k", "t").value().allowed;
  EXPECT_EQ(admitted, 10);
}

TEST_F(ShmLimiterTest, ThreadsOnOneKeyNeverAdmitMoreThanTheLimit) {
  const FakeClock clock;
  auto l = Open(OneRule(1000, Algorithm::kSlidingWindow), clock);
  std::atomic<int> admitted{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 600; ++i) admitted += l->Check("shared", "t").value().allowed;
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(admitted.load(), 1000);
}

TEST_F(ShmLimiterTest, ProcessesOnOneKeyNeverAdmitMoreThanTheLimit) {
  const RateLimitPolicy p = OneRule(1000);
  // One frozen time for every process (each child inherits this object): no
  // window boundary can fall inside the test.
  const FakeClock clock;
  { auto create = Open(p, clock); }
  int pipes[2];
  ASSERT_EQ(pipe(pipes), 0);
  std::vector<pid_t> children;
  for (int c = 0; c < 3; ++c) {
    const pid_t pid = fork();
    if (pid == 0) {
      auto l = ShmRateLimiter::Open(name_, p, 4096, clock);
      int64_t admitted = 0;
      for (int i = 0; l && i < 600; ++i) admitted += (*l)->Check("shared", "t").value().allowed;
      if (write(pipes[1], &admitted, sizeof admitted) != sizeof admitted) _exit(1);
      _exit(0);
    }
    children.push_back(pid);
  }
  int64_t total = 0;
  for (size_t c = 0; c < children.size(); ++c) {
    int64_t n = 0;
    ASSERT_EQ(read(pipes[0], &n, sizeof n), static_cast<ssize_t>(sizeof n));
    total += n;
  }
  for (pid_t pid : children) waitpid(pid, nullptr, 0);
  close(pipes[0]);
  close(pipes[1]);
  EXPECT_EQ(total, 1000);
}

TEST_F(ShmLimiterTest, ProcessesKilledMidDecisionCorruptNothing) {
  const RateLimitPolicy p = OneRule(1'000'000'000);  // never reached by the children
  const FakeClock clock;                             // frozen and inherited by the children: one window throughout
  { auto create = Open(p, clock); }
  for (int round = 0; round < 5; ++round) {
    const pid_t pid = fork();
    if (pid == 0) {
      auto l = ShmRateLimiter::Open(name_, p, 4096, clock);
      for (;;) (void)(*l)->Check("shared", "t");
    }
    std::this_thread::sleep_for(milliseconds(20 + 10 * round));  // let it get deep into its loop
    kill(pid, SIGKILL);
    waitpid(pid, nullptr, 0);
  }
  // Whatever the children counted, the counter is whole: each admission
  // takes exactly one from what remains.
  auto l = Open(p, clock);
  const Decision first = l->Check("shared", "t").value();
  ASSERT_TRUE(first.allowed);
  EXPECT_LT(first.remaining, 1'000'000'000u - 1);
  const Decision second = l->Check("shared", "t").value();
  EXPECT_EQ(second.remaining, first.remaining - 1);
}

TEST_F(ShmLimiterTest, SlidingLogIsRefusedWithAReason) {
  auto l = ShmRateLimiter::Open(name_, OneRule(10, Algorithm::kSlidingLog));
  ASSERT_FALSE(l.has_value());
  EXPECT_NE(l.error().message.find("sliding_window"), std::string::npos);
}

}  // namespace
}  // namespace cachet
