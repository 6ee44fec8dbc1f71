// The local limiters' concurrent paths, with exact counts, for
// ThreadSanitizer (label `concurrency`): policy changes while other threads
// decide, idle reclaim while other threads place new keys, and a multi-rule
// tier that gives the cost back when a later rule denies. Each body runs
// against the in-process store and the shared-memory one (or their engine
// over a private and a named table, where a test needs its seam).
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "../../../limiter/src/limiter_engine.h"
#include "cachet/rate_limiter.h"
#include "cachet/shm_rate_limiter.h"
#include "limiter_test_util.h"
#include "test_util.h"

namespace cachet {
namespace {

using std::chrono::minutes;
using std::chrono::seconds;
using testing::MakeRule;

constexpr int kThreads = 4;

// Opens a store of each kind on an injected clock.
struct InProcess {
  using Limiter = RateLimiter;
  static std::unique_ptr<RateLimiter> Open(const RateLimitPolicy& p, const Clock& clock) {
    auto l = RateLimiter::Create(p, RateLimiterOptions{1 << 16}, clock);
    EXPECT_TRUE(l.has_value()) << l.error().ToString();
    return l ? std::move(*l) : nullptr;
  }
};

struct SharedMemory {
  using Limiter = ShmRateLimiter;
  std::unique_ptr<ShmRateLimiter> Open(const RateLimitPolicy& p, const Clock& clock) {
    auto l = ShmRateLimiter::Open(name, p, 1 << 16, clock);
    EXPECT_TRUE(l.has_value()) << l.error().ToString();
    return l ? std::move(*l) : nullptr;
  }
  ~SharedMemory() { (void)ShmRateLimiter::Remove(name); }
  const std::string name = testing::UniqueSegmentName("lconc");
};

template <typename Store>
class LimiterConcurrencyTest : public ::testing::Test {
 protected:
  // Runs body(thread index) on kThreads threads at once.
  template <typename Body>
  static void OnThreads(Body body) {
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) threads.emplace_back(body, t);
    for (auto& th : threads) th.join();
  }

  Store store_;
  FakeClock clock_{1'700'000'040'000};  // on a minute boundary; moved only where a test says
};

using Stores = ::testing::Types<InProcess, SharedMemory>;
TYPED_TEST_SUITE(LimiterConcurrencyTest, Stores);

RateLimitPolicy Tier(const std::string& name, std::vector<Rule> rules) {
  RateLimitPolicy p;
  p.tiers.push_back({name, std::move(rules)});
  return p;
}

// Threads decide on one key while another thread installs policies that
// count the same way (an extra tier, a shadow rule): the count carries over
// every swap, so exactly the limit is admitted.
TYPED_TEST(LimiterConcurrencyTest, PolicyChangesWhileThreadsDecideKeepTheCountExact) {
  const Rule per_minute = MakeRule("per_minute", 1000, minutes(1), Algorithm::kFixedWindow);
  const RateLimitPolicy first = Tier("t", {per_minute});
  RateLimitPolicy second = first;
  Rule trial = MakeRule("trial", 10, minutes(1), Algorithm::kSlidingWindow);
  trial.shadow = true;
  second.tiers[0].rules.push_back(trial);
  second.tiers.push_back({"other", {MakeRule("per_second", 5, seconds(1))}});
  auto l = this->store_.Open(first, this->clock_);
  ASSERT_NE(l, nullptr);
  std::atomic<bool> deciding{true};
  std::atomic<int> swaps{0};
  std::thread installer([&] {
    for (int i = 0; (deciding.load() && i < 5000) || i < 50; ++i) {
      ASSERT_TRUE(l->SetPolicy(i % 2 ? first : second).has_value());
      swaps.fetch_add(1);
    }
  });
  std::atomic<int> admitted{0};
  this->OnThreads([&](int) {
    for (int i = 0; i < 400; ++i) {
      auto d = l->Check("k", "t");
      ASSERT_TRUE(d.has_value()) << d.error().ToString();
      admitted += d->allowed;
    }
  });
  deciding = false;
  installer.join();
  EXPECT_GE(swaps.load(), 50);
  EXPECT_EQ(admitted.load(), 1000);
  const RateLimiterStats s = l->Stats();
  EXPECT_EQ(s.allowed, 1000u);
  EXPECT_EQ(s.denied, uint64_t{kThreads * 400 - 1000});
  // A new limit applies to the count so far: 1000 made, 1200 allowed.
  RateLimitPolicy raised = first;
  raised.tiers[0].rules[0].limit = 1200;
  ASSERT_TRUE(l->SetPolicy(raised).has_value());
  int more = 0;
  for (int i = 0; i < 300; ++i) more += l->Check("k", "t").value().allowed;
  EXPECT_EQ(more, 200);
}

// Threads place new keys while a sweeper drops the counters of keys whose
// windows (and the margin after them) have passed: every old counter goes,
// no live one does, and each new key admits exactly its limit.
TYPED_TEST(LimiterConcurrencyTest, IdleReclaimWhileThreadsPlaceNewKeysDropsOnlyIdleCounters) {
  constexpr int kOld = 2000, kNewPerThread = 500, kLimit = 3;
  auto l =
      this->store_.Open(Tier("t", {MakeRule("per_minute", kLimit, minutes(1), Algorithm::kFixedWindow)}), this->clock_);
  ASSERT_NE(l, nullptr);
  for (int i = 0; i < kOld; ++i) ASSERT_TRUE(l->Check("old" + std::to_string(i), "t").value().allowed);
  ASSERT_EQ(l->Stats().counters, uint64_t{kOld});
  this->clock_.Advance(minutes(2));  // the old window and the margin have passed; a new window begins
  std::atomic<bool> placing{true};
  std::atomic<uint64_t> dropped{0};
  std::thread sweeper([&] {
    while (placing.load()) dropped += l->ReclaimIdle(512);
  });
  std::atomic<int> wrong{0};
  this->OnThreads([&](int t) {
    for (int i = 0; i < kNewPerThread; ++i) {
      const std::string key = "new" + std::to_string(t) + "-" + std::to_string(i);
      int admitted = 0;
      for (int k = 0; k < kLimit + 2; ++k) {
        auto d = l->Check(key, "t");
        ASSERT_TRUE(d.has_value()) << d.error().ToString();
        admitted += d->allowed;
      }
      wrong += admitted != kLimit;
    }
  });
  placing = false;
  sweeper.join();
  dropped += l->ReclaimIdle(1 << 16);  // whatever the sweeper had not reached
  EXPECT_EQ(wrong.load(), 0);
  // Exactly the old counters went: a new key's counter goes live with its
  // first count, so no sweep can take it for idle before that count.
  EXPECT_EQ(dropped.load(), uint64_t{kOld});
  EXPECT_EQ(l->Stats().counters, uint64_t{kThreads * kNewPerThread});
}

// Two rules, the second admitting one request per key. Thread A looks at
// both rules (room in each); before it counts, thread B makes a whole
// decision on the same key and takes the tight rule's room. A then counts
// the roomy rule, is denied by the tight one, and must give the roomy
// rule's count back. The engine both stores run, over a private table and a
// named one.
template <typename Table>
class GiveBackTest : public ::testing::Test {};
struct PrivateTable {
  static std::unique_ptr<CounterTable> Make() { return std::move(*CounterTable::CreatePrivate(1024)); }
};
struct NamedTable {
  std::unique_ptr<CounterTable> Make() { return std::move(*CounterTable::Open(name, 1024)); }
  ~NamedTable() { (void)CounterTable::Remove(name); }
  const std::string name = testing::UniqueSegmentName("giveback");
};
using Tables = ::testing::Types<PrivateTable, NamedTable>;
TYPED_TEST_SUITE(GiveBackTest, Tables);

TYPED_TEST(GiveBackTest, AMultiRuleTierGivesTheCostBackWhenALaterRuleDenies) {
  TypeParam table;
  FakeClock clock{1'700'000'040'000};
  detail::LimiterEngine engine(table.Make(), clock);
  const Rule roomy = MakeRule("roomy", 1'000'000, minutes(1), Algorithm::kFixedWindow);
  engine.Install(Tier("t", {roomy, MakeRule("tight", 1, minutes(1), Algorithm::kFixedWindow)}));
  Result<Decision> b;
  const std::thread::id a = std::this_thread::get_id();
  engine.SetBetweenLookAndCountForTesting([&] {
    if (std::this_thread::get_id() != a) return;
    std::thread([&] { b = engine.Check("k", "t", 1); }).join();
  });
  const Result<Decision> got = engine.Check("k", "t", 1);
  ASSERT_TRUE(got.has_value() && b.has_value());
  EXPECT_TRUE(b->allowed);
  EXPECT_FALSE(got->allowed);
  EXPECT_EQ(got->rule, "tight");
  EXPECT_EQ(got->remaining, 0u);
  RateLimiterStats s = engine.Stats();
  EXPECT_EQ(s.allowed, 1u);
  EXPECT_EQ(s.denied, 1u);
  EXPECT_EQ(s.given_back, 1u);
  // The roomy rule holds B's request only: with room for four it admits three more.
  engine.SetBetweenLookAndCountForTesting(nullptr);
  Rule four = roomy;
  four.limit = 4;
  engine.Install(Tier("t", {four}));
  int more = 0;
  for (int i = 0; i < 5; ++i) more += engine.Check("k", "t", 1).value().allowed;
  EXPECT_EQ(more, 3);
}

// The same on many keys with threads meeting at each, for ThreadSanitizer:
// however the requests interleave, each rule ends with exactly what was
// admitted.
TYPED_TEST(LimiterConcurrencyTest, AMultiRuleTierCountsExactlyWhatItAdmitsUnderContention) {
  constexpr int kKeys = 2000;
  const Rule roomy = MakeRule("roomy", 1'000'000, minutes(1), Algorithm::kFixedWindow);
  auto l =
      this->store_.Open(Tier("t", {roomy, MakeRule("tight", 1, minutes(1), Algorithm::kFixedWindow)}), this->clock_);
  ASSERT_NE(l, nullptr);
  std::atomic<int> admitted{0}, arrived{0};
  this->OnThreads([&](int) {
    for (int i = 0; i < kKeys; ++i) {
      arrived.fetch_add(1);
      for (int spins = 0; arrived.load() < (i + 1) * kThreads; ++spins) {
        if (spins > 1000) std::this_thread::yield();
      }
      admitted += l->Check("k" + std::to_string(i), "t").value().allowed;
    }
  });
  EXPECT_EQ(admitted.load(), kKeys);
  const RateLimiterStats s = l->Stats();
  EXPECT_EQ(s.allowed, uint64_t{kKeys});
  EXPECT_EQ(s.denied, uint64_t{kKeys * (kThreads - 1)});
  Rule four = roomy;
  four.limit = 4;
  ASSERT_TRUE(l->SetPolicy(Tier("t", {four})).has_value());
  int wrong = 0;
  for (int i = 0; i < kKeys && wrong <= 5; ++i) {
    int more = 0;
    for (int k = 0; k < 5; ++k) more += l->Check("k" + std::to_string(i), "t").value().allowed;
    EXPECT_EQ(more, 3) << "key k" << i << ": the roomy rule had counted " << 4 - more << " requests";
    wrong += more != 3;
  }
}

// The journal a gossip limiter drains while threads decide: counts for one
// hot key are folded into the entry last published until the drain takes
// it, so what the drains hand out, summed, is exactly what was admitted,
// per counter, however the folding and the draining interleave.
TEST(JournalTest, DrainsWhileThreadsDecideHandOutExactlyWhatWasCounted) {
  FakeClock clock{1'700'000'040'000};
  detail::LimiterEngine engine(std::move(*CounterTable::CreatePrivate(1024)), clock);
  engine.EnableJournal();
  engine.Install(Tier("t", {MakeRule("roomy", 1'000'000'000, minutes(1), Algorithm::kFixedWindow)}));
  constexpr int kPerThread = 20000;
  std::atomic<bool> done{false};
  std::map<uint64_t, int64_t> drained;  // counter id -> cost handed out; the drain thread's
  uint64_t entries = 0;
  auto drain = [&] {
    engine.DrainJournal([&](const detail::LimiterEngine::Counted& c) {
      drained[c.id] += c.cost;
      ++entries;
    });
  };
  std::thread drainer([&] {  // as the sync thread does, but every millisecond
    while (!done.load()) {
      drain();
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  });
  std::vector<std::thread> deciders;
  for (int t = 0; t < kThreads; ++t) {
    deciders.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        // Mostly the hot key, now and then another: runs of folding broken
        // by a new entry.
        const std::string key = i % 16 == 15 ? "cold-" + std::to_string(t) : "hot";
        EXPECT_TRUE(engine.Check(key, "t", 1).value().allowed);
      }
    });
  }
  for (auto& d : deciders) d.join();
  done.store(true);
  drainer.join();
  drain();  // what the last turn left
  int64_t total = 0;
  for (const auto& [id, cost] : drained) total += cost;
  EXPECT_EQ(total, int64_t{kThreads} * kPerThread);
  EXPECT_EQ(engine.Stats().allowed, uint64_t{kThreads} * kPerThread);
  // Folding: far fewer entries than counts (each run of 15 hot-key counts
  // becomes at most a few entries).
  EXPECT_LT(entries, uint64_t{kThreads} * kPerThread / 4) << entries;
  EXPECT_EQ(drained.size(), static_cast<size_t>(kThreads) + 1);  // "hot" and one cold key per thread
}

}  // namespace
}  // namespace cachet
