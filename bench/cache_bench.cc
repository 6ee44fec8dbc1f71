// Google Benchmark figures for cachet::Cache: get hit, get miss and set with
// 16-byte keys and 100-byte values.
//
//   * "random" runs touch 1,000,000 entries in a random order: the
//     memory-bound case a real cache sees (index and items miss the CPU
//     caches on most lookups).
//   * "hot" runs touch 1,000 entries: a hot set that stays in the CPU caches.
//
// Run with repetitions and read the medians, e.g.
//   build/bench/cache_bench --benchmark_repetitions=5 --benchmark_report_aggregates_only=true
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdio>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "cachet/cache.h"

namespace {

constexpr size_t kEntries = 1'000'000;
constexpr size_t kHotEntries = 1'000;
constexpr size_t kKeySize = 16;
constexpr size_t kValueSize = 100;

struct Key {
  char bytes[kKeySize];
  std::string_view view() const { return {bytes, kKeySize}; }
};

Key MakeKey(const char* prefix, size_t i) {
  Key k;
  char buf[kKeySize + 1];
  std::snprintf(buf, sizeof buf, "%s%0*zu", prefix, static_cast<int>(kKeySize - 4), i);
  std::copy(buf, buf + kKeySize, k.bytes);
  return k;
}

// One cache filled with kEntries items, shared by every benchmark; keys are
// stored in a shuffled order so that walking them sequentially visits the
// cache at random while the key array itself streams through the prefetcher.
struct Fixture {
  std::unique_ptr<cachet::Cache> cache;
  std::vector<Key> present;  // shuffled
  std::vector<Key> absent;   // shuffled
  std::string value = std::string(kValueSize, 'v');

  Fixture() {
    cachet::CacheOptions o;
    o.max_entries = kEntries + kEntries / 8;
    o.capacity_bytes = o.max_entries * 152;
    o.max_key_size = 64;
    o.max_value_size = 4096;
    auto made = cachet::Cache::CreatePrivate(o);
    if (!made) {
      std::fprintf(stderr, "cannot create cache: %s\n", made.error().ToString().c_str());
      std::abort();
    }
    cache = std::move(*made);
    std::mt19937_64 rng(42);
    for (size_t i = 0; i < kEntries; ++i) {
      present.push_back(MakeKey("key:", i));
      absent.push_back(MakeKey("nop:", i));
    }
    for (const Key& k : present) (void)cache->Set(k.view(), value);
    std::shuffle(present.begin(), present.end(), rng);
    std::shuffle(absent.begin(), absent.end(), rng);
  }
};

Fixture& Shared() {
  static Fixture f;
  return f;
}

size_t SetSize(const benchmark::State& state) { return state.range(0) == 0 ? kEntries : kHotEntries; }

void BM_GetHit(benchmark::State& state) {
  Fixture& f = Shared();
  const size_t n = SetSize(state);
  std::string out;
  out.reserve(kValueSize);
  size_t i = static_cast<size_t>(state.thread_index()) * 7919;
  size_t hits = 0;
  for (auto _ : state) {
    hits += f.cache->GetInto(f.present[i % n].view(), &out);
    ++i;
  }
  if (hits != static_cast<size_t>(state.iterations())) state.SkipWithError("a key expected present was missing");
  state.SetItemsProcessed(state.iterations());
}

void BM_GetMiss(benchmark::State& state) {
  Fixture& f = Shared();
  const size_t n = SetSize(state);
  std::string out;
  size_t i = static_cast<size_t>(state.thread_index()) * 7919;
  for (auto _ : state) {
    benchmark::DoNotOptimize(f.cache->GetInto(f.absent[i % n].view(), &out));
    ++i;
  }
  state.SetItemsProcessed(state.iterations());
}

// MGET's read path: 16 keys at a time, with Cache::Prefetch first (prefetch:1)
// or without (prefetch:0). Items per second count keys.
void BM_GetHit16(benchmark::State& state) {
  Fixture& f = Shared();
  const bool prefetch = state.range(0) != 0;
  std::string out;
  out.reserve(kValueSize);
  size_t i = 0;
  size_t hits = 0;
  std::string_view group[cachet::Cache::kPrefetchKeys];
  for (auto _ : state) {
    for (auto& k : group) k = f.present[i++ % kEntries].view();
    if (prefetch) f.cache->Prefetch(group, cachet::Cache::kPrefetchKeys);
    for (const auto& k : group) hits += f.cache->GetInto(k, &out);
  }
  if (hits != state.iterations() * cachet::Cache::kPrefetchKeys) {
    state.SkipWithError("a key expected present was missing");
  }
  state.SetItemsProcessed(state.iterations() * static_cast<int64_t>(cachet::Cache::kPrefetchKeys));
}

// Overwrites present keys: steady state of a full cache, no eviction.
void BM_Set(benchmark::State& state) {
  Fixture& f = Shared();
  const size_t n = SetSize(state);
  size_t i = static_cast<size_t>(state.thread_index()) * 7919;
  for (auto _ : state) {
    if (!f.cache->Set(f.present[i % n].view(), f.value)) state.SkipWithError("set failed");
    ++i;
  }
  state.SetItemsProcessed(state.iterations());
}

// MSET's write path: 16 present keys overwritten at a time, with
// Cache::Prefetch first (prefetch:1) or without (prefetch:0). Items per
// second count keys.
void BM_Set16(benchmark::State& state) {
  Fixture& f = Shared();
  const bool prefetch = state.range(0) != 0;
  size_t i = 0;
  std::string_view group[cachet::Cache::kPrefetchKeys];
  for (auto _ : state) {
    for (auto& k : group) k = f.present[i++ % kEntries].view();
    if (prefetch) f.cache->Prefetch(group, cachet::Cache::kPrefetchKeys);
    for (const auto& k : group) {
      if (!f.cache->Set(k, f.value)) state.SkipWithError("set failed");
    }
  }
  state.SetItemsProcessed(state.iterations() * static_cast<int64_t>(cachet::Cache::kPrefetchKeys));
}

// Bytes spent per entry beyond the key and value bytes, in a cache sized to
// hold exactly kEntries items of this shape (default policy, S3-FIFO).
void BM_MemoryPerEntry(benchmark::State& state) {
  cachet::CacheOptions o;
  o.max_entries = kEntries;
  o.capacity_bytes = kEntries * ((24 + kKeySize + kValueSize + 7) / 8 * 8);
  o.max_key_size = 64;
  o.max_value_size = 4096;
  auto cache = std::move(*cachet::Cache::CreatePrivate(o));
  const std::string value(kValueSize, 'v');
  for (size_t i = 0; i < kEntries; ++i) (void)cache->Set(MakeKey("key:", i).view(), value);
  for (auto _ : state) benchmark::DoNotOptimize(cache->Size());
  const cachet::CacheStats s = cache->Stats();
  const double entries = static_cast<double>(s.entries);
  const double payload = entries * (kKeySize + kValueSize);
  state.counters["entries"] = entries;
  state.counters["evictions"] = static_cast<double>(s.evictions);
  // Item header and alignment padding, inside capacity_bytes.
  state.counters["item_overhead_B"] = (static_cast<double>(s.live_bytes) - payload) / entries;
  // Everything the segment maps: index, ghost queue, log slack, header.
  state.counters["segment_overhead_B"] = (static_cast<double>(s.segment_bytes) - payload) / entries;
}

void Sets(benchmark::internal::Benchmark* b) {
  b->ArgName("hot")->Arg(0)->Arg(1)->Threads(1)->Threads(2)->UseRealTime();
}

BENCHMARK(BM_GetHit)->Apply(Sets);
BENCHMARK(BM_GetMiss)->Apply(Sets);
BENCHMARK(BM_GetHit16)->ArgName("prefetch")->Arg(0)->Arg(1)->UseRealTime();
BENCHMARK(BM_Set16)->ArgName("prefetch")->Arg(0)->Arg(1)->UseRealTime();
BENCHMARK(BM_Set)->Apply(Sets);
BENCHMARK(BM_MemoryPerEntry)->Iterations(1);

}  // namespace

BENCHMARK_MAIN();
