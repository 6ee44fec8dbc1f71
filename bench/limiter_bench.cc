// Google Benchmark: one in-process rate-limit decision, per algorithm, for a
// key drawn from 1,000,000 keys (memory-bound) and for one hot key.
//   build/bench/limiter_bench --benchmark_repetitions=5 --benchmark_report_aggregates_only=true
#include <benchmark/benchmark.h>

#include <malloc.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "cachet/rate_limiter.h"
#include "cachet/redis_rate_limiter.h"
#include "cachet/shm_rate_limiter.h"

namespace {

std::vector<std::string> MakeKeys(size_t n) {
  std::vector<std::string> keys;
  keys.reserve(n);
  for (size_t i = 0; i < n; ++i) keys.push_back("user:" + std::to_string(i * 7919 % n));
  return keys;
}

void BM_Check(benchmark::State& state) {
  const auto algorithm = static_cast<cachet::Algorithm>(state.range(0));
  const size_t nkeys = static_cast<size_t>(state.range(1));
  cachet::RateLimitPolicy policy;
  cachet::Rule rule;
  rule.name = "per_minute";
  rule.limit = 1'000'000'000;  // never denies: measures the decision, not the 429 path
  rule.window = std::chrono::minutes(1);
  rule.algorithm = algorithm;
  if (algorithm == cachet::Algorithm::kSlidingLog) rule.limit = 1'000'000;
  policy.tiers.push_back({"regular", {rule}});
  auto limiter = std::move(*cachet::RateLimiter::Create(policy));
  static const std::vector<std::string> keys = MakeKeys(1'000'000);
  for (size_t k = 0; k < nkeys; ++k) (void)limiter->Check(keys[k], "regular");  // every key known: no inserts timed
  size_t i = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(limiter->Check(keys[i], "regular"));
    if (++i == nkeys) i = 0;
  }
  state.SetItemsProcessed(state.iterations());
  state.counters["counters"] = static_cast<double>(limiter->Stats().counters);
}

// The host-wide store: the same decision on counters in shared memory.
void BM_ShmCheck(benchmark::State& state) {
  cachet::RateLimitPolicy policy;
  cachet::Rule rule;
  rule.name = "per_minute";
  rule.limit = 1'000'000'000;
  rule.window = std::chrono::minutes(1);
  rule.algorithm = static_cast<cachet::Algorithm>(state.range(0));
  policy.tiers.push_back({"regular", {rule}});
  const std::string name = "cachet-bench-limits-" + std::to_string(getpid());
  auto limiter = cachet::ShmRateLimiter::Open(name, policy, 1 << 21);
  if (!limiter) {
    state.SkipWithError(limiter.error().ToString().c_str());
    return;
  }
  static const std::vector<std::string> keys = MakeKeys(1'000'000);
  const size_t nkeys = static_cast<size_t>(state.range(1));
  for (size_t k = 0; k < nkeys; ++k) (void)(*limiter)->Check(keys[k], "regular");
  size_t i = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize((*limiter)->Check(keys[i], "regular"));
    if (++i == nkeys) i = 0;
  }
  state.SetItemsProcessed(state.iterations());
  (void)cachet::ShmRateLimiter::Remove(name);
}
BENCHMARK(BM_ShmCheck)
    ->ArgNames({"algorithm", "keys"})
    ->Args({1, 1})
    ->Args({1, 1'000'000})
    ->Args({4, 1})
    ->UseRealTime();

// Bytes per key with 1,000,000 keys, one fixed-window rule: heap growth in
// process (glibc's mallinfo2), and the shared-memory table's slots.
void BM_MemoryPerKey(benchmark::State& state) {
  constexpr size_t kKeys = 1'000'000;
  static const std::vector<std::string> keys = MakeKeys(kKeys);
  cachet::RateLimitPolicy policy;
  cachet::Rule rule;
  rule.name = "per_minute";
  rule.limit = 1000;
  rule.window = std::chrono::minutes(1);
  rule.algorithm = cachet::Algorithm::kFixedWindow;
  policy.tiers.push_back({"regular", {rule}});
  for (auto _ : state) {
    const size_t before = mallinfo2().uordblks;
    auto local = std::move(*cachet::RateLimiter::Create(policy));
    for (const std::string& k : keys) (void)local->Check(k, "regular");
    state.counters["in_process_B"] = static_cast<double>(mallinfo2().uordblks - before) / kKeys;
    const std::string name = "cachet-bench-mem-" + std::to_string(getpid());
    const uint64_t capacity = kKeys * 5 / 4;  // 80% full
    auto shm = std::move(*cachet::ShmRateLimiter::Open(name, policy, capacity));
    for (const std::string& k : keys) (void)shm->Check(k, "regular");
    struct stat st {};
    if (stat(("/dev/shm/" + name).c_str(), &st) == 0) {
      state.counters["shm_B"] = static_cast<double>(st.st_size) / kKeys;  // the whole table, 80% full
    }
    (void)cachet::ShmRateLimiter::Remove(name);
  }
}
BENCHMARK(BM_MemoryPerKey)->Iterations(1)->Unit(benchmark::kMillisecond);

// The same decision made by Redis: one EVALSHA of cachet's Lua script over a
// unix socket. bench/compare_limiter.sh starts redis-server and sets
// CACHET_BENCH_REDIS=unix:/path.
void BM_RedisCheck(benchmark::State& state) {
  const char* address = std::getenv("CACHET_BENCH_REDIS");
  if (address == nullptr) {
    state.SkipWithError("CACHET_BENCH_REDIS is not set (run bench/compare_limiter.sh)");
    return;
  }
  cachet::RateLimitPolicy policy;
  cachet::Rule rule;
  rule.name = "per_minute";
  rule.limit = 1'000'000'000;
  rule.window = std::chrono::minutes(1);
  rule.algorithm = cachet::Algorithm::kFixedWindow;
  policy.tiers.push_back({"regular", {rule}});
  auto limiter = cachet::RedisRateLimiter::Connect(address, policy);
  if (!limiter) {
    state.SkipWithError(limiter.error().ToString().c_str());
    return;
  }
  static const std::vector<std::string> keys = MakeKeys(1'000'000);
  const size_t nkeys = static_cast<size_t>(state.range(0));
  size_t i = 0;
  for (auto _ : state) {
    auto d = (*limiter)->Check(keys[i % nkeys], "regular");
    if (!d || !d->allowed) {
      state.SkipWithError("redis decision failed");
      return;
    }
    ++i;
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_RedisCheck)->ArgName("keys")->Arg(1)->Arg(1'000'000)->UseRealTime();

void Args(benchmark::internal::Benchmark* b) {
  b->ArgNames({"algorithm", "keys"});
  for (int a : {1, 3, 4}) {  // fixed_window, sliding_window, token_bucket
    b->Args({a, 1})->Args({a, 1'000'000});
  }
  b->Args({2, 1});  // sliding_log, one hot key (its memory grows per request)
}

BENCHMARK(BM_Check)->Apply(Args)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
