// What cachetd's metrics cost (docs/design.md, "Metrics"): per request, one
// steady_clock read and a count in RequestStats (op, status, latency
// bucket); per ~100 ms, a copy of the counters into a snapshot; per scrape,
// the text rendering on the HTTP thread.
//
//   build/bench/metrics_bench --benchmark_repetitions=5 --benchmark_report_aggregates_only=true
#include <benchmark/benchmark.h>

#include <chrono>
#include <memory>

#include "prometheus.h"
#include "server_stats.h"

namespace {

using cachet::daemon::LatencyHistogram;
using cachet::daemon::MetricsSnapshot;
using cachet::daemon::RequestStats;
using SteadyClock = std::chrono::steady_clock;

// Latencies as the serving loop sees them: mostly tens of microseconds.
constexpr std::chrono::nanoseconds kTypical[] = {std::chrono::microseconds(8), std::chrono::microseconds(22),
                                                 std::chrono::microseconds(35), std::chrono::microseconds(61),
                                                 std::chrono::microseconds(140)};

void BM_SteadyClockNow(benchmark::State& state) {
  for (auto _ : state) benchmark::DoNotOptimize(SteadyClock::now());
}
BENCHMARK(BM_SteadyClockNow);

void BM_HistogramRecord(benchmark::State& state) {
  LatencyHistogram h;
  size_t i = 0;
  for (auto _ : state) {
    h.Record(kTypical[i++ % std::size(kTypical)]);
    benchmark::DoNotOptimize(h);
  }
}
BENCHMARK(BM_HistogramRecord);

// The whole per-request addition of ServeMessage: the clock read that ends
// this request (and starts the next) and the count.
void BM_CountRequest(benchmark::State& state) {
  auto stats = std::make_unique<RequestStats>();
  auto since = SteadyClock::now();
  size_t op = 0;
  for (auto _ : state) {
    const auto now = SteadyClock::now();
    stats->Count(2 + (op++ & 1), 0, now - since);  // GET and SET, OK
    since = now;
    benchmark::DoNotOptimize(*stats);
  }
}
BENCHMARK(BM_CountRequest);

MetricsSnapshot Busy() {
  MetricsSnapshot s;
  for (size_t op = 0; op < 8; ++op) {
    for (int i = 0; i < 100; ++i) s.requests.Count(op, static_cast<uint16_t>(i % 3 == 0 ? 5 : 0), kTypical[i % 5]);
  }
  s.limiter = true;
  for (const char* tier : {"free", "pro", "enterprise"}) s.requests.CountDecision(tier, true);
  return s;
}

// Once per ~100 ms on the serving loop: the counters into a new snapshot.
void BM_SnapshotCopy(benchmark::State& state) {
  const MetricsSnapshot busy = Busy();
  for (auto _ : state) {
    auto s = std::make_shared<MetricsSnapshot>();
    s->requests = busy.requests;
    benchmark::DoNotOptimize(s);
  }
}
BENCHMARK(BM_SnapshotCopy);

// Once per scrape, on the HTTP thread.
void BM_RenderPrometheus(benchmark::State& state) {
  const MetricsSnapshot busy = Busy();
  for (auto _ : state) benchmark::DoNotOptimize(cachet::daemon::RenderPrometheus(busy));
}
BENCHMARK(BM_RenderPrometheus);

}  // namespace

BENCHMARK_MAIN();
