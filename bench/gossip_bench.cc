// Over-admission and wire cost of GossipRateLimiter: H limiters in this
// process, peered over real PUB/SUB on loopback, each driven by a thread of
// its own at R/H decisions per second on the same keys, for whole windows
// aligned to the wall clock. Prints one tab-separated line:
//
//   hosts interval_ms share rate limit windows admitted_median admitted_max
//   over_pct_median over_pct_max bound payload_bytes_per_s_per_host
//
// `bound` is docs/design.md's R * (I + d) * (H - 1) / H with d = 0.
// bench/gossip_overadmission.sh runs it over hosts and intervals and plots.
//
//   build/bench/gossip_bench --hosts 3 --interval-ms 10 --rate 10000
//       --limit 1000 --window-ms 1000 --windows 5 [--share] [--keys 1]
#include <algorithm>
#include <atomic>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "cachet/gossip_rate_limiter.h"

namespace {

struct Args {
  int hosts = 3;
  int interval_ms = 10;
  bool share = false;
  double rate = 10'000;  // decisions per second, all hosts together
  uint64_t limit = 1000;
  int64_t window_ms = 1000;
  int windows = 5;
  int keys = 1;  // spread over this many keys (for the wire cost; over-admission needs 1)
};

void Usage(FILE* out) {
  std::fprintf(out,
               "usage: gossip_bench [--hosts N] [--interval-ms I] [--share] [--rate R] [--limit L]\n"
               "                    [--window-ms W] [--windows K] [--keys N]\n"
               "Runs N GossipRateLimiters on loopback at R decisions/s in all for K windows and prints\n"
               "admissions per window against the limit, and the bytes each host publishes.\n");
}

bool ParseNumber(const char* text, double* out) {
  char* end = nullptr;
  *out = std::strtod(text, &end);
  return end != text && *end == '\0' && *out >= 0;
}

bool Parse(int argc, char** argv, Args* a) {
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--help" || flag == "-h") {
      Usage(stdout);
      std::exit(0);
    }
    if (flag == "--share") {
      a->share = true;
      continue;
    }
    double v = 0;
    if (i + 1 >= argc || !ParseNumber(argv[i + 1], &v)) {
      std::fprintf(stderr, "gossip_bench: %s needs a number\n", flag.c_str());
      return false;
    }
    ++i;
    if (flag == "--hosts") {
      a->hosts = static_cast<int>(v);
    } else if (flag == "--interval-ms") {
      a->interval_ms = static_cast<int>(v);
    } else if (flag == "--rate") {
      a->rate = v;
    } else if (flag == "--limit") {
      a->limit = static_cast<uint64_t>(v);
    } else if (flag == "--window-ms") {
      a->window_ms = static_cast<int64_t>(v);
    } else if (flag == "--windows") {
      a->windows = static_cast<int>(v);
    } else if (flag == "--keys") {
      a->keys = static_cast<int>(v);
    } else {
      std::fprintf(stderr, "gossip_bench: unknown option %s\n", flag.c_str());
      return false;
    }
  }
  if (a->hosts < 1 || a->hosts > 16 || a->interval_ms < 1 || a->rate < 1 || a->limit < 1 || a->window_ms < 10 ||
      a->windows < 1 || a->keys < 1) {
    std::fprintf(stderr, "gossip_bench: hosts 1..16, every other number at least 1 (window-ms at least 10)\n");
    return false;
  }
  return true;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  Args args;
  if (!Parse(argc, argv, &args)) {
    Usage(stderr);
    return 2;
  }
  cachet::Rule rule;
  rule.name = "per_window";
  rule.limit = args.limit;
  rule.window = std::chrono::milliseconds(args.window_ms);
  rule.algorithm = cachet::Algorithm::kFixedWindow;
  const cachet::RateLimitPolicy policy{{cachet::Tier{"regular", {rule}}}, {}};

  std::vector<std::unique_ptr<cachet::GossipRateLimiter>> hosts;
  for (int h = 0; h < args.hosts; ++h) {
    cachet::GossipOptions o;
    o.node_id = "bench-" + std::to_string(h);
    o.sync_interval = std::chrono::milliseconds(args.interval_ms);
    o.snapshot_interval = std::max(o.sync_interval, std::chrono::milliseconds(1000));
    o.peer_timeout = 3 * o.snapshot_interval;
    o.share_remaining = args.share;
    auto made = cachet::GossipRateLimiter::Create(policy, o);
    if (!made) {
      std::fprintf(stderr, "gossip_bench: %s\n", made.error().ToString().c_str());
      return 1;
    }
    hosts.push_back(std::move(*made));
  }
  for (auto& h : hosts) {
    std::vector<std::string> peers;
    for (auto& p : hosts) {
      if (p != h) peers.push_back(p->endpoint());
    }
    if (auto ok = h->SetPeers(peers); !ok) {
      std::fprintf(stderr, "gossip_bench: %s\n", ok.error().ToString().c_str());
      return 1;
    }
  }
  std::vector<std::string> keys;
  for (int k = 0; k < args.keys; ++k) keys.push_back("key-" + std::to_string(k));

  // Connections settle for a second; then whole windows, from a boundary.
  const cachet::Clock& clock = cachet::CoarseClock::Instance();  // the limiters' own
  const int64_t settle = clock.NowMs() + 1000;
  const int64_t first = (settle / args.window_ms + 1) * args.window_ms;
  const int64_t end = first + args.windows * args.window_ms;
  std::vector<std::atomic<uint64_t>> admitted(static_cast<size_t>(args.windows));
  std::vector<uint64_t> bytes_before(hosts.size());

  std::vector<std::thread> drivers;
  const double per_host = args.rate / args.hosts;
  for (size_t h = 0; h < hosts.size(); ++h) {
    drivers.emplace_back([&, h] {
      using Steady = std::chrono::steady_clock;
      while (clock.NowMs() < first) std::this_thread::sleep_for(std::chrono::microseconds(200));
      const auto start = Steady::now();
      uint64_t done = 0;
      size_t next_key = h;
      while (true) {
        const int64_t now = clock.NowMs();
        if (now >= end) break;
        const double elapsed = std::chrono::duration<double>(Steady::now() - start).count();
        const auto due = static_cast<uint64_t>(elapsed * per_host);
        for (; done < due; ++done) {
          auto d = hosts[h]->Check(keys[next_key++ % keys.size()], "regular");
          if (!d) {
            std::fprintf(stderr, "gossip_bench: %s\n", d.error().ToString().c_str());
            std::exit(1);
          }
          const int64_t w = (clock.NowMs() - first) / args.window_ms;
          if (d->allowed && w >= 0 && w < args.windows) admitted[static_cast<size_t>(w)]++;
        }
        std::this_thread::sleep_for(std::chrono::microseconds(500));  // pacing: about 2,000 ticks a second
      }
    });
  }
  while (clock.NowMs() < first) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  for (size_t h = 0; h < hosts.size(); ++h) bytes_before[h] = hosts[h]->Stats().bytes_sent;
  for (auto& t : drivers) t.join();
  uint64_t bytes = 0;
  for (size_t h = 0; h < hosts.size(); ++h) bytes += hosts[h]->Stats().bytes_sent - bytes_before[h];

  // With several keys, each key has its own limit: compare per key.
  const double limit_total = static_cast<double>(args.limit) * args.keys;
  std::vector<double> counts, over;
  for (auto& a : admitted) {
    counts.push_back(static_cast<double>(a.load()));
    over.push_back(100.0 * (counts.back() - limit_total) / limit_total);
  }
  const double bound = args.rate * args.interval_ms / 1000.0 * (args.hosts - 1) / args.hosts;
  const double seconds = static_cast<double>(end - first) / 1000.0;
  std::printf("%d\t%d\t%s\t%.0f\t%llu\t%d\t%.0f\t%.0f\t%.2f\t%.2f\t%.0f\t%.0f\n", args.hosts, args.interval_ms,
              args.share ? "on" : "off", args.rate, static_cast<unsigned long long>(args.limit), args.windows,
              Median(counts), *std::max_element(counts.begin(), counts.end()), Median(over),
              *std::max_element(over.begin(), over.end()), bound, static_cast<double>(bytes) / seconds / args.hosts);
  return 0;
}
