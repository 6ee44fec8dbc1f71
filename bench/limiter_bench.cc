// Google Benchmark: one in-process rate-limit decision, per algorithm, for a
// key drawn from 1,000,000 keys (memory-bound) and for one hot key.
//   build/bench/limiter_bench --benchmark_repetitions=5 --benchmark_report_aggregates_only=true
#include <benchmark/benchmark.h>

#include <malloc.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "cachet/cluster_client.h"
#include "cachet/daemon_rate_limiter.h"
#include "cachet/gossip_rate_limiter.h"
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

// One tier, "regular", with one rule that never denies: the benchmarks
// measure the decision, not the 429 path.
cachet::RateLimitPolicy NeverDenying(cachet::Algorithm algorithm) {
  cachet::Rule rule;
  rule.name = "per_minute";
  rule.limit = algorithm == cachet::Algorithm::kSlidingLog ? 1'000'000 : 1'000'000'000;
  rule.window = std::chrono::minutes(1);
  rule.algorithm = algorithm;
  cachet::RateLimitPolicy policy;
  policy.tiers.push_back({"regular", {rule}});
  return policy;
}

// Decides once for each of the first `nkeys` keys (so no placement is
// timed), then times decisions over them in turn. False (and the benchmark
// skipped) if a key found no room.
template <typename Limiter>
bool TimeChecks(benchmark::State& state, Limiter& limiter, size_t nkeys) {
  static const std::vector<std::string> keys = MakeKeys(1'000'000);
  for (size_t k = 0; k < nkeys; ++k) {
    if (!limiter.Check(keys[k], "regular")) {
      state.SkipWithError("a key found no room");
      return false;
    }
  }
  size_t i = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(limiter.Check(keys[i], "regular"));
    if (++i == nkeys) i = 0;
  }
  state.SetItemsProcessed(state.iterations());
  return true;
}

void BM_Check(benchmark::State& state) {
  const auto algorithm = static_cast<cachet::Algorithm>(state.range(0));
  const size_t nkeys = static_cast<size_t>(state.range(1));
  // Room for twice the keys: the table at half load.
  auto limiter =
      std::move(*cachet::RateLimiter::Create(NeverDenying(algorithm), cachet::RateLimiterOptions{2 * nkeys + 64}));
  if (!TimeChecks(state, *limiter, nkeys)) return;
  state.counters["counters"] = static_cast<double>(limiter->Stats().counters);
}

// The host-wide store: the same decision on counters in shared memory.
void BM_ShmCheck(benchmark::State& state) {
  const auto algorithm = static_cast<cachet::Algorithm>(state.range(0));
  const std::string name = "cachet-bench-limits-" + std::to_string(getpid());
  auto limiter = cachet::ShmRateLimiter::Open(name, NeverDenying(algorithm), 1 << 21);  // 1,000,000 keys: half load
  if (!limiter) {
    state.SkipWithError(limiter.error().ToString().c_str());
    return;
  }
  TimeChecks(state, **limiter, static_cast<size_t>(state.range(1)));
  (void)cachet::ShmRateLimiter::Remove(name);
}
BENCHMARK(BM_ShmCheck)
    ->ArgNames({"algorithm", "keys"})
    ->Args({1, 1})
    ->Args({1, 1'000'000})
    ->Args({4, 1})
    ->UseRealTime();

// Resident bytes of this process (from /proc/self/statm).
size_t ResidentBytes() {
  long pages = 0, resident = 0;
  if (FILE* f = std::fopen("/proc/self/statm", "r")) {
    if (std::fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = 0;
    std::fclose(f);
  }
  return static_cast<size_t>(resident) * static_cast<size_t>(sysconf(_SC_PAGESIZE));
}

// Bytes per key with 1,000,000 keys, one fixed-window rule, the table at
// 80% load: in process, the growth of resident memory (the table) plus the
// heap (nothing per key); in shared memory, the table's file.
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
  const uint64_t capacity = kKeys * 5 / 4;
  for (auto _ : state) {
    const size_t rss_before = ResidentBytes();
    const size_t heap_before = mallinfo2().uordblks;
    auto local = std::move(*cachet::RateLimiter::Create(policy, cachet::RateLimiterOptions{capacity}));
    for (const std::string& k : keys) {
      if (!local->Check(k, "regular")) state.SkipWithError("a key found no room");
    }
    state.counters["in_process_B"] = static_cast<double>(ResidentBytes() - rss_before) / kKeys;
    state.counters["in_process_heap_B"] = static_cast<double>(mallinfo2().uordblks - heap_before) / kKeys;
    const std::string name = "cachet-bench-mem-" + std::to_string(getpid());
    auto shm = std::move(*cachet::ShmRateLimiter::Open(name, policy, capacity));
    for (const std::string& k : keys) {
      if (!shm->Check(k, "regular")) state.SkipWithError("a key found no room");
    }
    struct stat st {};
    if (stat(("/dev/shm/" + name).c_str(), &st) == 0) {
      state.counters["shm_B"] = static_cast<double>(st.st_size) / kKeys;  // the whole table
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

// Times decisions of a limiter whose store answers over a socket; skipped
// with the reason when it cannot be reached or a decision fails.
void TimeRemoteChecks(benchmark::State& state, cachet::Result<std::unique_ptr<cachet::DaemonRateLimiter>> limiter) {
  if (!limiter) {
    state.SkipWithError(limiter.error().ToString().c_str());
    return;
  }
  static const std::vector<std::string> keys = MakeKeys(1'000'000);
  const size_t nkeys = static_cast<size_t>(state.range(0));
  size_t i = 0;
  for (auto _ : state) {
    auto d = (*limiter)->Check(keys[i % nkeys], "regular");
    if (!d || !d->allowed || !(*limiter)->healthy()) {
      state.SkipWithError("remote decision failed");
      return;
    }
    ++i;
  }
  state.SetItemsProcessed(state.iterations());
}

cachet::DaemonRateLimiterOptions RemoteOptions() {
  cachet::DaemonRateLimiterOptions options;
  options.timeout = std::chrono::seconds(2);
  return options;
}

// The same decision made by cachetd (op RATELIMIT), one request in flight,
// over the endpoint in CACHET_BENCH_DAEMON (for instance ipc:///tmp/x.sock),
// started with a policy whose tier "regular" never denies these requests:
//   [tier.regular]
//   per_minute = 1000000000/1m fixed_window
// bench/compare_limiter.sh starts such a daemon when cachetd is built.
void BM_DaemonCheck(benchmark::State& state) {
  const char* endpoint = std::getenv("CACHET_BENCH_DAEMON");
  if (endpoint == nullptr) {
    state.SkipWithError("CACHET_BENCH_DAEMON is not set (run bench/compare_limiter.sh)");
    return;
  }
  TimeRemoteChecks(state, cachet::DaemonRateLimiter::Connect(endpoint, RemoteOptions()));
}
BENCHMARK(BM_DaemonCheck)->ArgName("keys")->Arg(1)->Arg(1'000'000)->UseRealTime();

// Strict mode: the decision made by the cluster node that owns the key,
// found through the seed node's map in CACHET_BENCH_CLUSTER (a tcp://
// endpoint of a node started with the policy above; compare_limiter.sh
// starts a one-node cluster when etcd is installed).
void BM_StrictCheck(benchmark::State& state) {
  const char* seed = std::getenv("CACHET_BENCH_CLUSTER");
  if (seed == nullptr || *seed == '\0') {
    state.SkipWithError("CACHET_BENCH_CLUSTER is not set (run bench/compare_limiter.sh with etcd installed)");
    return;
  }
  cachet::ClusterClientOptions cluster;
  cluster.seeds = {seed};
  TimeRemoteChecks(state, cachet::DaemonRateLimiter::ConnectCluster(cluster, RemoteOptions()));
}
BENCHMARK(BM_StrictCheck)->ArgName("keys")->Arg(1)->Arg(1'000'000)->UseRealTime();

// What reading the time costs: the limiters' coarse clock against the
// precise one.
void BM_ClockRead(benchmark::State& state) {
  const cachet::Clock& clock = state.range(0) == 0 ? static_cast<const cachet::Clock&>(cachet::CoarseClock::Instance())
                                                   : cachet::SystemClock::Instance();
  for (auto _ : state) benchmark::DoNotOptimize(clock.NowMs());
  state.SetLabel(state.range(0) == 0 ? "coarse" : "precise");
}
BENCHMARK(BM_ClockRead)->ArgName("precise")->Arg(0)->Arg(1);

// The gossip limiter's decision: the in-process one plus a push onto the
// deciding thread's journal; its sync thread publishes every 10 ms to no
// peer (the decision never waits on one). Compare with BM_Check's rows of
// the same algorithm and keys, measured in the same run.
void BM_GossipCheck(benchmark::State& state) {
  const auto algorithm = static_cast<cachet::Algorithm>(state.range(0));
  const size_t nkeys = static_cast<size_t>(state.range(1));
  cachet::GossipOptions options;
  options.capacity = 2 * nkeys + 64;
  auto limiter = cachet::GossipRateLimiter::Create(NeverDenying(algorithm), options);
  if (!limiter) {
    state.SkipWithError(limiter.error().ToString().c_str());
    return;
  }
  if (!TimeChecks(state, **limiter, nkeys)) return;
  state.counters["sent"] = static_cast<double>((*limiter)->Stats().messages_sent);
}
BENCHMARK(BM_GossipCheck)
    ->ArgNames({"algorithm", "keys"})
    ->Args({1, 1})
    ->Args({1, 1'000'000})
    ->Args({3, 1})
    ->Args({3, 1'000'000})
    ->UseRealTime();

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
