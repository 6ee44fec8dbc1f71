// Hit-ratio simulator: replays synthetic traces through every eviction
// policy of cachet::Cache (the real store, in a private segment) and through
// an exact LRU reference, and prints miss ratios as a Markdown table.
//
// Traces: Zipf over 1,000,000 keys with alpha 0.7, 0.9, 1.0 and 1.2, and a
// scan-heavy trace (Zipf 0.9 interleaved with one-time sequential scans).
// Cache sizes: 0.1%, 1% and 10% of the Zipf key space, in entries.
//
//   build/bench/hit_ratio [--requests N] [--seed S]
#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "cachet/cache.h"

namespace {

constexpr uint32_t kKeySpace = 1'000'000;

struct Trace {
  std::string name;
  std::vector<uint32_t> keys;
  uint32_t distinct_bound;  // every key id is below this
};

std::vector<uint32_t> ZipfTrace(double alpha, size_t requests, uint64_t seed) {
  std::vector<double> cdf(kKeySpace);
  double sum = 0;
  for (uint32_t i = 0; i < kKeySpace; ++i) cdf[i] = (sum += 1.0 / std::pow(double(i + 1), alpha));
  for (double& c : cdf) c /= sum;
  // Popularity rank -> key id through a permutation, so hot keys are spread.
  std::vector<uint32_t> id(kKeySpace);
  for (uint32_t i = 0; i < kKeySpace; ++i) id[i] = i;
  std::mt19937_64 rng(seed);
  std::shuffle(id.begin(), id.end(), rng);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  std::vector<uint32_t> out(requests);
  for (auto& k : out) {
    const auto rank = static_cast<size_t>(std::lower_bound(cdf.begin(), cdf.end(), u(rng)) - cdf.begin());
    k = id[std::min<size_t>(rank, kKeySpace - 1)];
  }
  return out;
}

// Zipf 0.9 with a one-time sequential scan of 20,000 fresh keys after every
// 50,000 Zipf requests (about 29% of requests are scan requests).
Trace ScanTrace(size_t requests, uint64_t seed) {
  const std::vector<uint32_t> zipf = ZipfTrace(0.9, requests, seed + 1);
  Trace t{"zipf 0.9 + scans", {}, 0};
  uint32_t next_scan_key = kKeySpace;
  size_t z = 0;
  while (t.keys.size() < requests) {
    for (int i = 0; i < 50'000 && t.keys.size() < requests; ++i) t.keys.push_back(zipf[z++]);
    for (int i = 0; i < 20'000 && t.keys.size() < requests; ++i) t.keys.push_back(next_scan_key++);
  }
  t.distinct_bound = next_scan_key;
  return t;
}

// Exact LRU over integer keys: an array-based doubly linked list.
double ExactLruMissRatio(const Trace& t, size_t capacity) {
  constexpr uint32_t kNone = UINT32_MAX;
  std::vector<uint32_t> prev(t.distinct_bound, kNone), next(t.distinct_bound, kNone);
  std::vector<char> in(t.distinct_bound, 0);
  uint32_t head = kNone, tail = kNone;  // head = most recent
  size_t size = 0, misses = 0;
  auto unlink = [&](uint32_t k) {
    if (prev[k] != kNone)
      next[prev[k]] = next[k];
    else
      head = next[k];
    if (next[k] != kNone)
      prev[next[k]] = prev[k];
    else
      tail = prev[k];
  };
  auto push_front = [&](uint32_t k) {
    prev[k] = kNone;
    next[k] = head;
    if (head != kNone) prev[head] = k;
    head = k;
    if (tail == kNone) tail = k;
  };
  for (uint32_t k : t.keys) {
    if (in[k]) {
      unlink(k);
      push_front(k);
      continue;
    }
    ++misses;
    if (size == capacity) {
      const uint32_t victim = tail;
      unlink(victim);
      in[victim] = 0;
      --size;
    }
    push_front(k);
    in[k] = 1;
    ++size;
  }
  return double(misses) / double(t.keys.size());
}

double CacheMissRatio(const Trace& t, size_t capacity, cachet::EvictionPolicy policy) {
  cachet::FakeClock clock;
  cachet::CacheOptions o;
  o.policy = policy;
  o.max_entries = capacity;
  o.max_key_size = 16;
  o.max_value_size = 8;
  o.capacity_bytes = capacity * 64;  // the entry count is the binding limit
  auto cache = std::move(*cachet::Cache::CreatePrivate(o, clock));
  size_t misses = 0;
  char key[16];
  std::string out;
  for (uint32_t k : t.keys) {
    const auto end = std::to_chars(key, key + sizeof key, k).ptr;
    const std::string_view kv(key, static_cast<size_t>(end - key));
    if (cache->GetInto(kv, &out)) continue;
    ++misses;
    (void)cache->Set(kv, "v");
  }
  return double(misses) / double(t.keys.size());
}

}  // namespace

int main(int argc, char** argv) {
  size_t requests = 10'000'000;
  uint64_t seed = 7;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--requests") && i + 1 < argc) {
      requests = std::stoull(argv[++i]);
    } else if (!std::strcmp(argv[i], "--seed") && i + 1 < argc) {
      seed = std::stoull(argv[++i]);
    } else {
      std::fprintf(stderr, "usage: %s [--requests N] [--seed S]\n", argv[0]);
      return 2;
    }
  }
  std::vector<Trace> traces;
  for (double alpha : {0.7, 0.9, 1.0, 1.2}) {
    char name[32];
    std::snprintf(name, sizeof name, "zipf %.1f", alpha);
    traces.push_back({name, ZipfTrace(alpha, requests, seed), kKeySpace});
  }
  traces.push_back(ScanTrace(requests, seed));

  const std::vector<size_t> sizes = {kKeySpace / 1000, kKeySpace / 100, kKeySpace / 10};
  const cachet::EvictionPolicy policies[] = {cachet::EvictionPolicy::kFifo, cachet::EvictionPolicy::kClock,
                                             cachet::EvictionPolicy::kS3Fifo};
  std::printf("Miss ratio (%%), %zu requests per trace, 1,000,000 Zipf keys.\n\n", requests);
  std::printf("| trace | cache size | exact LRU | fifo | clock | s3fifo (default) | s3fifo vs LRU |\n");
  std::printf("|---|---|---|---|---|---|---|\n");
  double relative_sum = 0, worst_points = -1e9;
  int rows = 0;
  for (const Trace& t : traces) {
    for (size_t size : sizes) {
      double r[4];
      std::thread lru([&] { r[0] = ExactLruMissRatio(t, size); });
      std::thread fifo([&] { r[1] = CacheMissRatio(t, size, policies[0]); });
      r[2] = CacheMissRatio(t, size, policies[1]);
      fifo.join();
      r[3] = CacheMissRatio(t, size, policies[2]);
      lru.join();
      const double relative = (r[0] - r[3]) / r[0] * 100;  // % fewer misses than LRU
      relative_sum += relative;
      worst_points = std::max(worst_points, (r[3] - r[0]) * 100);
      ++rows;
      std::printf("| %s | %.1f%% | %.2f | %.2f | %.2f | %.2f | %+.1f%% fewer misses |\n", t.name.c_str(),
                  100.0 * double(size) / kKeySpace, 100 * r[0], 100 * r[1], 100 * r[2], 100 * r[3], relative);
      std::fflush(stdout);
    }
  }
  std::printf("\ns3fifo: %.1f%% fewer misses than exact LRU on average; worst case %+.2f points vs LRU.\n",
              relative_sum / rows, worst_points);
  return 0;
}
