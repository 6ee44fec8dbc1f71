// What the host's memory allows a same-host GET (docs/design.md, "Where the
// same-host GET's time goes"): lookups shaped like the store's, an index
// line then the item it names, over tables too large for the CPU caches,
// without any of the store's code.
//
//   BM_TwoLevel/dependent:1  each lookup's key depends on the item before,
//                            as when every GET waits for the one before;
//   BM_TwoLevel/dependent:0  independent lookups, with `filler` rounds of
//                            straight-line work (about 3 instructions each)
//                            between them: how much work between two
//                            lookups still lets the CPU overlap their misses.
//   BM_PointerChase          one miss at a time: the host's memory latency.
//
//   build/bench/memory_latency_bench --benchmark_repetitions=3 --benchmark_report_aggregates_only=true
//
// Time is per lookup (per miss for BM_PointerChase). The host's other
// tenants move these figures from one minute to the next: compare rows of
// one run.
#include <sys/mman.h>

#include <benchmark/benchmark.h>

#include <cstdint>
#include <cstring>
#include <utility>
#include <vector>

namespace {

constexpr size_t kKeys = 1'000'000;
constexpr size_t kBuckets = 1'400'000;  // the store's index for a 512 MiB cache: 85 MB of lines
constexpr size_t kLine = 64;
constexpr size_t kSlots = 7;
constexpr size_t kItemBytes = 160;  // a 16-byte key and a 100-byte value with their header
constexpr size_t kValueOffset = 24;
constexpr size_t kValueBytes = 100;
constexpr int kBatch = 16;

uint64_t XorShift(uint64_t& x) {
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  return x;
}

// An index of kBuckets lines, each up to kSlots item offsets (+1, 0 is
// empty), and kKeys items; key k's item is at k * kItemBytes.
struct Tables {
  char* index = nullptr;
  char* items = nullptr;
  std::vector<uint32_t> home;  // key -> bucket

  Tables() : home(kKeys) {
    index = Map(kBuckets * kLine);
    items = Map(kKeys * kItemBytes);
    std::memset(items, 1, kKeys * kItemBytes);
    uint64_t x = 88172645463325252ull;
    for (size_t k = 0; k < kKeys; ++k) {
      home[k] = static_cast<uint32_t>(XorShift(x) % kBuckets);
      auto* slots = reinterpret_cast<uint64_t*>(index + home[k] * kLine);
      for (size_t i = 0; i < kSlots; ++i) {
        if (slots[i] == 0) {
          slots[i] = k * kItemBytes + 1;
          break;
        }
      }
    }
  }
  ~Tables() {
    munmap(index, kBuckets * kLine);
    munmap(items, kKeys * kItemBytes);
  }

  static char* Map(size_t bytes) {
    void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return nullptr;
    madvise(p, bytes, MADV_HUGEPAGE);  // as the store's segment on huge pages
    std::memset(p, 0, bytes);
    return static_cast<char*>(p);
  }

  // Finds key k's item through its index line and copies its value; the
  // value's first byte comes back (for the next key, when dependent).
  uint8_t Lookup(size_t k, char* out) const {
    const auto* slots = reinterpret_cast<const uint64_t*>(index + home[k] * kLine);
    for (size_t i = 0; i < kSlots && slots[i] != 0; ++i) {
      if ((slots[i] - 1) / kItemBytes != k) continue;
      const char* item = items + slots[i] - 1;
      __builtin_prefetch(item + 64);
      __builtin_prefetch(item + 128);
      std::memcpy(out, item + kValueOffset, kValueBytes);
      return static_cast<uint8_t>(out[5] - 1);  // 0: the items hold 1s
    }
    return 0;
  }
};

Tables& Shared() {
  static Tables t;
  return t;
}

// Sixteen lookups; the next key waits for this item only when `kDependent`
// (a compile-time choice: a select on a run-time flag would make every key
// wait, as a data dependency, whichever way it chose).
template <bool kDependent>
uint8_t Batch(const Tables& t, uint64_t& x, int64_t filler, char* out) {
  uint64_t keys[kBatch];
  for (auto& k : keys) k = XorShift(x) % kKeys;
  uint8_t dep = 0;
  for (const uint64_t k : keys) {
    dep = t.Lookup(kDependent ? (k + dep) % kKeys : k, out);
    for (int64_t f = 0; f < filler; ++f) asm volatile("");
  }
  return dep;
}

void BM_TwoLevel(benchmark::State& state) {
  const Tables& t = Shared();
  if (t.index == nullptr || t.items == nullptr) {
    state.SkipWithError("mmap failed");
    return;
  }
  const bool dependent = state.range(0) != 0;
  const int64_t filler = state.range(1);
  uint64_t x = 0x9E3779B97F4A7C15ull;
  char out[kValueBytes];
  for (auto _ : state) {
    benchmark::DoNotOptimize(dependent ? Batch<true>(t, x, filler, out) : Batch<false>(t, x, filler, out));
  }
  state.SetItemsProcessed(state.iterations() * kBatch);
  state.counters["ns_per_lookup"] = benchmark::Counter(static_cast<double>(state.iterations() * kBatch),
                                                       benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}

// One cache miss after another: each load's address is in the line the
// load before brought, over a random cycle through 160 MB of lines (the
// items' size). Its time is the host's memory latency, L. A GET of a key
// whose lines are in no CPU cache waits for two misses (its index line,
// then its item): whatever the store's code, such a GET takes at least 2L
// unless the next GET's misses overlap it.
void BM_PointerChase(benchmark::State& state) {
  constexpr size_t kLines = kKeys * kItemBytes / kLine;
  static uint32_t* const lines = [] {
    auto* l = reinterpret_cast<uint32_t*>(Tables::Map(kLines * kLine));
    if (l == nullptr) return l;
    // Sattolo's shuffle: one cycle through every line.
    std::vector<uint32_t> order(kLines);
    for (size_t i = 0; i < kLines; ++i) order[i] = static_cast<uint32_t>(i);
    uint64_t x = 88172645463325252ull;
    for (size_t i = kLines - 1; i > 0; --i) std::swap(order[i], order[XorShift(x) % i]);
    for (size_t i = 0; i < kLines; ++i) l[order[i] * (kLine / 4)] = order[(i + 1) % kLines];
    return l;
  }();
  if (lines == nullptr) {
    state.SkipWithError("mmap failed");
    return;
  }
  uint32_t at = 0;
  for (auto _ : state) {
    for (int i = 0; i < kBatch; ++i) at = lines[at * (kLine / 4)];
    benchmark::DoNotOptimize(at);
  }
  state.counters["ns_per_miss"] = benchmark::Counter(static_cast<double>(state.iterations() * kBatch),
                                                     benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}

BENCHMARK(BM_PointerChase)->UseRealTime();

BENCHMARK(BM_TwoLevel)
    ->ArgNames({"dependent", "filler"})
    ->Args({1, 0})
    ->Args({0, 0})
    ->Args({0, 20})
    ->Args({0, 40})
    ->Args({0, 60})
    ->Args({0, 80})
    ->Args({0, 100})
    ->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
