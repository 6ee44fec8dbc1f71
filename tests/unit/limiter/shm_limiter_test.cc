// The host-wide store: counters in shared memory, shared by threads and
// processes, never admitting more than the limit, and deciding as the
// in-process algorithms do.
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <new>
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

// What a child tells the parent through shared memory, surviving its kill.
struct DecisionLedger {
  std::atomic<uint64_t> admitted{0};  // decisions returned as allowed
  std::atomic<uint32_t> deciding{0};  // 1 from before Check until its result is recorded
};

// Children hammer one key and are killed at arbitrary instructions, two at a
// time. Each keeps a ledger of the admissions it was told of, and marks the
// decision it is inside; a decision cut short has counted once or not at
// all. So the count the table holds is the ledgers' sum, plus at most one
// per child killed inside a decision: less would be a lost admission, more a
// doubled one. Rounds go on (bounded) until kills have landed inside
// decisions.
TEST_F(ShmLimiterTest, ProcessesKilledMidDecisionCorruptNothing) {
  constexpr uint64_t kLimit = 1'000'000'000;  // never reached by the children
  const RateLimitPolicy p = OneRule(kLimit);
  const FakeClock clock;  // frozen and inherited by the children: one window throughout
  { auto create = Open(p, clock); }
  constexpr int kPerRound = 2, kMaxRounds = 60, kWantCut = 4;
  void* shared = mmap(nullptr, sizeof(DecisionLedger) * kPerRound * kMaxRounds, PROT_READ | PROT_WRITE,
                      MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(shared, MAP_FAILED);
  auto* ledgers = new (shared) DecisionLedger[kPerRound * kMaxRounds];
  uint64_t admitted = 0, cut = 0;
  int round = 0;
  for (; round < kMaxRounds && (round < 5 || cut < kWantCut); ++round) {
    pid_t pids[kPerRound];
    for (int c = 0; c < kPerRound; ++c) {
      DecisionLedger& ledger = ledgers[round * kPerRound + c];
      pids[c] = fork();
      if (pids[c] == 0) {
        auto l = ShmRateLimiter::Open(name_, p, 4096, clock);
        if (!l) _exit(2);
        for (;;) {
          ledger.deciding.store(1);
          auto d = (*l)->Check("shared", "t");
          if (d && d->allowed) ledger.admitted.fetch_add(1);
          ledger.deciding.store(0);
        }
      }
    }
    // Until both are deep in their loops, then a moment more that differs
    // from round to round.
    const auto deadline = std::chrono::steady_clock::now() + seconds(10);
    while (std::chrono::steady_clock::now() < deadline && (ledgers[round * kPerRound].admitted.load() < 1000 ||
                                                           ledgers[round * kPerRound + 1].admitted.load() < 1000)) {
      std::this_thread::yield();
    }
    std::this_thread::sleep_for(std::chrono::microseconds(100 + 331 * (round % 7)));
    for (pid_t pid : pids) kill(pid, SIGKILL);
    for (pid_t pid : pids) waitpid(pid, nullptr, 0);
    for (int c = 0; c < kPerRound; ++c) {
      const DecisionLedger& ledger = ledgers[round * kPerRound + c];
      admitted += ledger.admitted.load();
      cut += ledger.deciding.load();
    }
  }
  munmap(shared, sizeof(DecisionLedger) * kPerRound * kMaxRounds);
  ASSERT_GE(cut, uint64_t{kWantCut}) << "too few kills fell inside a decision in " << round << " rounds";
  ASSERT_GT(admitted, 0u);
  // The next admission leaves kLimit - counted - 1.
  auto l = Open(p, clock);
  const Decision next = l->Check("shared", "t").value();
  ASSERT_TRUE(next.allowed);
  const uint64_t counted = kLimit - 1 - next.remaining;
  EXPECT_GE(counted, admitted) << "an admission was lost";
  EXPECT_LE(counted, admitted + cut) << "an admission was counted twice";
  EXPECT_EQ(l->Check("shared", "t").value().remaining, next.remaining - 1);
}

// Two processes whose clocks read 1 ms apart: the one ahead sweeps at the
// window's edge, the one behind still counts in that window. The sweep must
// not drop a counter a late request still needs, or that request starts the
// window again from zero (20 admitted in one window of 10, before the fix).
TEST_F(ShmLimiterTest, ASweepAtTheWindowEdgeNeverRestartsTheWindowForALateClock) {
  for (Algorithm a : {Algorithm::kFixedWindow, Algorithm::kSlidingWindow, Algorithm::kTokenBucket}) {
    SCOPED_TRACE(AlgorithmName(a));
    (void)ShmRateLimiter::Remove(name_);
    constexpr int64_t kStart = 1'700'000'040'000;  // on a minute boundary
    FakeClock ahead{kStart}, behind{kStart - 1};
    auto early = Open(OneRule(10, a), ahead);
    auto late = Open(OneRule(10, a), behind);
    int admitted = 0;
    for (int i = 0; i < 10; ++i) admitted += early->Check("k", "t").value().allowed;
    ASSERT_EQ(admitted, 10);
    // The edge of the last instant anything in the counter limits a request:
    // the window's end (fixed), two windows (sliding), the bucket refilled.
    const int64_t edge = kStart + (a == Algorithm::kSlidingWindow ? 120'000 : 60'000);
    ahead.Set(edge);
    behind.Set(edge - 1);
    early->ReclaimIdle(4096);
    for (int i = 0; i < 10; ++i) admitted += late->Check("k", "t").value().allowed;
    // Still limited at edge - 1 ms: a fixed window admits none; a sliding
    // window's previous count has faded to 1 ms of 60 s; the bucket has
    // 1 ms of refill left, so one token is still missing.
    const int want_late = a == Algorithm::kFixedWindow ? 0 : 9;
    EXPECT_EQ(admitted, 10 + want_late);
  }
}

TEST_F(ShmLimiterTest, SlidingLogIsRefusedWithAReason) {
  auto l = ShmRateLimiter::Open(name_, OneRule(10, Algorithm::kSlidingLog));
  ASSERT_FALSE(l.has_value());
  EXPECT_NE(l.error().message.find("sliding_window"), std::string::npos);
}

}  // namespace
}  // namespace cachet
