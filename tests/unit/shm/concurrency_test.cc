// Many threads of one process mixing reads, writes and erases on
// overlapping keys, with evictions under way. Runs under ThreadSanitizer in
// CI. Every value read must be one that was written for that key.
#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

#include "cachet/cache.h"
#include "value_codec.h"

namespace cachet {
namespace {

using testing::CheckValue;
using testing::MakeValue;

#if defined(__SANITIZE_THREAD__)
constexpr int kOpsPerThread = 4000;
#else
constexpr int kOpsPerThread = 40000;
#endif

struct Totals {
  std::atomic<uint64_t> reads{0}, hits{0}, bad{0};
};

void RunMix(Cache& cache, int thread_index, int keys, Totals& totals) {
  uint64_t x = 0x9E3779B97F4A7C15ull * static_cast<uint64_t>(thread_index + 1);
  std::string value;
  for (int op = 0; op < kOpsPerThread; ++op) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    const std::string key = "k" + std::to_string(x % static_cast<uint64_t>(keys));
    const uint64_t kind = (x >> 32) % 10;
    if (kind < 6) {
      totals.reads++;
      if (cache.GetInto(key, &value)) {
        totals.hits++;
        if (!CheckValue(key, value)) totals.bad++;
      }
    } else if (kind < 9) {
      const auto seq = static_cast<uint64_t>(thread_index) << 40 | static_cast<uint64_t>(op);
      if (!cache.Set(key, MakeValue(key, seq)).has_value()) totals.bad++;
    } else {
      (void)cache.Erase(key);
    }
  }
}

class ConcurrencyTest : public ::testing::TestWithParam<EvictionPolicy> {};

TEST_P(ConcurrencyTest, MixedOperationsOnOverlappingKeysReadOnlyWrittenValues) {
  CacheOptions o;
  o.policy = GetParam();
  o.capacity_bytes = 32 << 10;  // small: evictions and log wrap-arounds all the time
  o.max_value_size = 512;
  auto cache = std::move(*Cache::CreatePrivate(o));
  Totals totals;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) threads.emplace_back([&, t] { RunMix(*cache, t, 300, totals); });
  for (auto& th : threads) th.join();
  EXPECT_EQ(totals.bad.load(), 0u);
  EXPECT_GT(totals.hits.load(), 0u);
  const CacheStats s = cache->Stats();
  EXPECT_GT(s.evictions, 0u);
  EXPECT_LE(s.live_bytes, o.capacity_bytes);
  EXPECT_EQ(s.hits + s.misses, totals.reads.load());
}

TEST_P(ConcurrencyTest, ReadersNeverSeeAHalfWrittenValue) {
  // One hot key rewritten with values of changing length while readers spin.
  CacheOptions o;
  o.policy = GetParam();
  o.capacity_bytes = 16 << 10;
  o.max_value_size = 512;
  auto cache = std::move(*Cache::CreatePrivate(o));
  ASSERT_TRUE(cache->Set("hot", MakeValue("hot", 0)).has_value());
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> bad{0}, seen{0};
  std::vector<std::thread> readers;
  for (int r = 0; r < 2; ++r) {
    readers.emplace_back([&] {
      std::string v;
      while (!stop.load(std::memory_order_relaxed)) {
        if (cache->GetInto("hot", &v)) {
          seen++;
          if (!CheckValue("hot", v)) bad++;
        }
      }
    });
  }
  for (uint64_t seq = 1; seq <= static_cast<uint64_t>(kOpsPerThread); ++seq) {
    ASSERT_TRUE(cache->Set("hot", MakeValue("hot", seq)).has_value());
    if (seq % 7 == 0) {
      ASSERT_TRUE(cache->Set("other" + std::to_string(seq % 50), "x").has_value());
    }
  }
  stop = true;
  for (auto& th : readers) th.join();
  EXPECT_EQ(bad.load(), 0u);
  EXPECT_GT(seen.load(), 0u);
}

TEST_P(ConcurrencyTest, WritesFinishWhileReadersKeepEveryItemReferenced) {
  // Readers touch every key faster than the writer clears reference bits:
  // eviction must still make progress (a CLOCK hand must not spin forever).
  CacheOptions o;
  o.policy = GetParam();
  o.max_entries = 64;
  o.capacity_bytes = 64 << 10;
  o.max_value_size = 512;
  auto cache = std::move(*Cache::CreatePrivate(o));
  std::atomic<bool> stop{false};
  std::vector<std::thread> readers;
  for (int r = 0; r < 2; ++r) {
    readers.emplace_back([&] {
      std::string v;
      while (!stop.load(std::memory_order_relaxed)) {
        for (int i = 0; i < 64; ++i) (void)cache->GetInto("k" + std::to_string(i), &v);
      }
    });
  }
  for (int i = 0; i < kOpsPerThread / 4; ++i) ASSERT_TRUE(cache->Set("k" + std::to_string(i % 200), "v").has_value());
  stop = true;
  for (auto& th : readers) th.join();
  EXPECT_LE(cache->Size(), 64u);
}

INSTANTIATE_TEST_SUITE_P(Policies, ConcurrencyTest,
                         ::testing::Values(EvictionPolicy::kFifo, EvictionPolicy::kClock, EvictionPolicy::kS3Fifo),
                         [](const auto& param_info) { return std::string(EvictionPolicyName(param_info.param)); });

}  // namespace
}  // namespace cachet
