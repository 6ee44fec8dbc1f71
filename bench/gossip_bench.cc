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
//
// The `convergence` mode measures how long the hosts take to agree on a
// key's count after a partition heals (see RunConvergence below;
// bench/gossip_convergence.sh runs it and prints a table):
//
//   build/bench/gossip_bench convergence --trials 50 --hosts 3
//       --sync-interval-ms 10 [--snapshot-interval-ms 1000] [--cut refuse|drop]
#include <algorithm>
#include <atomic>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "cachet/gossip_rate_limiter.h"
#include "cluster/fault_proxy.h"

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
               "admissions per window against the limit, and the bytes each host publishes.\n"
               "gossip_bench convergence --help: the time the hosts take to agree after a partition heals.\n");
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

// ---------------------------------------------------------------------------
// Convergence after a partition heals.
//
// H limiters on loopback, and between every subscriber and every publisher
// a FaultProxy (tests/cluster/fault_proxy.h, compiled into this program: it
// needs nothing but POSIX and cachet/result.h): host i's SUB connects to the
// proxy in front of host j's PUB, so a partition is a cut of real TCP
// connections that ZeroMQ itself has to notice and recover from, not an API
// call on the limiter. Host 0 is the one cut off, in both directions (every
// proxy whose subscriber or publisher is host 0). Two kinds of cut:
//  - refuse (default): every connection through those proxies is reset and
//    new ones are refused until the heal, what a peer sees when a host's
//    firewall rejects it or its TCP connections time out; ZeroMQ retries
//    every reconnect interval and gets back in after the heal;
//  - drop: the connections stay open and the proxies discard every byte
//    until the heal (a blackhole that TCP does not see; unlike a real one,
//    whose retransmissions would deliver the bytes late, what was sent
//    during the cut is lost: the proxy reads and discards it).
//
// The limiters are built once; each trial counts a fresh key, so no trial
// sees another's counts, and the limiters are past their first snapshot
// interval (when a starting host sends a snapshot every sync) before the
// first trial. A trial:
//  1. every host admits 1 on the key, and all agree on H (the links work);
//  2. host 0 is cut off; every host admits `checks` more, and each side
//     agrees on its own side's count (the sides now disagree);
//  3. the cut lasts `partition_ms` plus a random part of a snapshot
//     interval, so the heal falls at a random phase of every host's
//     snapshots;
//  4. heal: from just before the first proxy passes traffic again, every
//     host's count is read every `poll_us` until all equal the true total
//     H * (1 + checks), or `timeout_ms` passes.
// The counts are read without changing them: a Check whose cost is above
// the limit is always denied, a denied request counts nothing, and its
// `remaining` is limit - count (fixed window). The API has no read-only
// query; this is the least intrusive one (it shows in the denied stats).
// The rule is a fixed window of `window_ms` (60 s) with a limit no trial
// reaches; windows are aligned to the wall clock, so a trial that would run
// into the window's end waits for the next window, and one that crossed it
// anyway is done again.
struct ConvergenceArgs {
  int trials = 30;
  int hosts = 3;
  int sync_ms = 10;
  int snapshot_ms = 1000;
  int partition_ms = 200;  // plus a random part of a snapshot interval
  int checks = 50;         // per host, during the partition
  int timeout_ms = 5000;   // per trial, after the heal
  int poll_us = 1000;
  int64_t window_ms = 60'000;
  uint64_t seed = 1;
  bool drop = false;  // --cut drop; else refuse
  bool verbose = false;
};

void ConvergenceUsage(FILE* out) {
  std::fprintf(out,
               "usage: gossip_bench convergence [--trials N] [--hosts H] [--sync-interval-ms I]\n"
               "                    [--snapshot-interval-ms S] [--partition-ms P] [--checks C] [--cut refuse|drop]\n"
               "                    [--timeout-ms T] [--poll-us U] [--window-ms W] [--seed X] [--verbose]\n"
               "Cuts host 0 of H GossipRateLimiters off through TCP proxies, counts on both sides, heals, and\n"
               "prints the time from the heal until every host sees the key's true count (ms), one\n"
               "tab-separated line:\n"
               "  hosts sync_ms snapshot_ms cut trials timeouts p50 p99 max mean isolated_p50 others_p50 redone\n"
               "(a trial that timed out counts as infinitely slow: 'inf' if it reaches a percentile).\n");
}

bool ParseConvergence(int argc, char** argv, ConvergenceArgs* a) {
  for (int i = 2; i < argc; ++i) {  // argv[1] is "convergence"
    const std::string flag = argv[i];
    if (flag == "--help" || flag == "-h") {
      ConvergenceUsage(stdout);
      std::exit(0);
    }
    if (flag == "--verbose") {
      a->verbose = true;
      continue;
    }
    if (i + 1 >= argc) {
      std::fprintf(stderr, "gossip_bench: %s needs a value\n", flag.c_str());
      return false;
    }
    const std::string value = argv[++i];
    if (flag == "--cut") {
      if (value != "refuse" && value != "drop") {
        std::fprintf(stderr, "gossip_bench: --cut is refuse or drop\n");
        return false;
      }
      a->drop = value == "drop";
      continue;
    }
    double v = 0;
    if (!ParseNumber(value.c_str(), &v)) {
      std::fprintf(stderr, "gossip_bench: %s needs a number\n", flag.c_str());
      return false;
    }
    if (flag == "--trials") {
      a->trials = static_cast<int>(v);
    } else if (flag == "--hosts") {
      a->hosts = static_cast<int>(v);
    } else if (flag == "--sync-interval-ms" || flag == "--interval-ms") {
      a->sync_ms = static_cast<int>(v);
    } else if (flag == "--snapshot-interval-ms") {
      a->snapshot_ms = static_cast<int>(v);
    } else if (flag == "--partition-ms") {
      a->partition_ms = static_cast<int>(v);
    } else if (flag == "--checks") {
      a->checks = static_cast<int>(v);
    } else if (flag == "--timeout-ms") {
      a->timeout_ms = static_cast<int>(v);
    } else if (flag == "--poll-us") {
      a->poll_us = static_cast<int>(v);
    } else if (flag == "--window-ms") {
      a->window_ms = static_cast<int64_t>(v);
    } else if (flag == "--seed") {
      a->seed = static_cast<uint64_t>(v);
    } else {
      std::fprintf(stderr, "gossip_bench: unknown option %s\n", flag.c_str());
      return false;
    }
  }
  const int64_t trial_ms = int64_t{a->partition_ms} + a->snapshot_ms + 2 * int64_t{a->timeout_ms};
  if (a->trials < 1 || a->hosts < 2 || a->hosts > 8 || a->sync_ms < 1 || a->snapshot_ms < a->sync_ms ||
      a->partition_ms < 0 || a->checks < 1 || a->timeout_ms < 1 || a->poll_us < 1 || a->window_ms < 2 * trial_ms) {
    std::fprintf(stderr,
                 "gossip_bench: hosts 2..8, snapshot interval at least the sync interval, a window at least twice a "
                 "trial (partition + snapshot + 2 timeouts = %lld ms)\n",
                 static_cast<long long>(trial_ms));
    return false;
  }
  return true;
}

// The `p` quantile of `sorted` by nearest rank.
double Percentile(const std::vector<double>& sorted, double p) {
  if (sorted.empty()) return 0;
  const auto rank = static_cast<size_t>(std::ceil(p * static_cast<double>(sorted.size())));
  return sorted[std::clamp<size_t>(rank, 1, sorted.size()) - 1];
}

std::string Ms(double ms) {
  if (std::isinf(ms)) return "inf";
  char text[32];
  std::snprintf(text, sizeof text, "%.1f", ms);
  return text;
}

std::optional<uint16_t> PortOf(const std::string& endpoint) {
  const size_t colon = endpoint.rfind(':');
  uint16_t port = 0;
  if (colon == std::string::npos) return std::nullopt;
  const char* first = endpoint.data() + colon + 1;
  const char* last = endpoint.data() + endpoint.size();
  auto [end, ec] = std::from_chars(first, last, port);
  if (ec != std::errc() || end != last) return std::nullopt;
  return port;
}

class ConvergenceBench {
 public:
  explicit ConvergenceBench(const ConvergenceArgs& args) : args_(args), rng_(args.seed) {}

  // Builds the limiters and the proxies and peers them; false on an error (reported).
  bool Build() {
    cachet::Rule rule;
    rule.name = "per_window";
    rule.limit = kLimit;
    rule.window = std::chrono::milliseconds(args_.window_ms);
    rule.algorithm = cachet::Algorithm::kFixedWindow;
    const cachet::RateLimitPolicy policy{{cachet::Tier{"regular", {rule}}}, {}};
    // A host's snapshots follow its start by whole intervals. Hosts of a
    // real deployment start at unrelated times: started at random moments
    // within an interval, the hosts' snapshot phases are independent (all
    // started at once, they would snapshot together, and the heal would
    // wait for one snapshot instead of the last of several).
    std::vector<int> starts;
    std::uniform_int_distribution<int> phase(0, args_.snapshot_ms - 1);
    for (int h = 0; h < args_.hosts; ++h) starts.push_back(phase(rng_));
    std::sort(starts.begin(), starts.end());
    const auto began = Steady::now();
    for (int h = 0; h < args_.hosts; ++h) {
      std::this_thread::sleep_until(began + std::chrono::milliseconds(starts[static_cast<size_t>(h)]));
      cachet::GossipOptions o;
      o.node_id = "conv-" + std::to_string(h);
      o.sync_interval = std::chrono::milliseconds(args_.sync_ms);
      o.snapshot_interval = std::chrono::milliseconds(args_.snapshot_ms);
      o.peer_timeout = 3 * o.snapshot_interval;
      // ZeroMQ's reconnect failures are not reported; anything else is worth seeing.
      o.on_error = [h](const std::string& line) { std::fprintf(stderr, "host %d: %s\n", h, line.c_str()); };
      auto made = cachet::GossipRateLimiter::Create(policy, o);
      if (!made) return Fail(made.error().ToString());
      hosts_.push_back(std::move(*made));
    }
    // proxies_[i][j]: host i's subscription to host j's publications.
    proxies_.resize(hosts_.size());
    for (size_t i = 0; i < hosts_.size(); ++i) {
      std::vector<std::string> peers;
      proxies_[i].resize(hosts_.size());
      for (size_t j = 0; j < hosts_.size(); ++j) {
        if (i == j) continue;
        const auto port = PortOf(hosts_[j]->endpoint());
        if (!port) return Fail("cannot read the port of " + hosts_[j]->endpoint());
        auto proxy = cachet::testing::FaultProxy::Start("127.0.0.1", *port);
        if (!proxy) return Fail(proxy.error().ToString());
        peers.push_back((*proxy)->endpoint());
        proxies_[i][j] = std::move(*proxy);
      }
      if (auto ok = hosts_[i]->SetPeers(peers); !ok) return Fail(ok.error().ToString());
    }
    // Past the announcing phase (a snapshot every sync for the first
    // snapshot interval) and with every subscription through.
    std::this_thread::sleep_for(std::chrono::milliseconds(args_.snapshot_ms + 200));
    return true;
  }

  // Runs the trials and prints the line; the exit code.
  int Run() {
    std::vector<double> all, isolated, others;
    int timeouts = 0, redone = 0;
    for (int trial = 0; trial < args_.trials;) {
      const std::string key = "conv-" + std::to_string(trial) + "-" + std::to_string(redone);
      WaitForRoomInWindow();
      const int64_t window = clock_.NowMs() / args_.window_ms;
      auto t = Trial(key);
      if (!t) return 1;
      if (clock_.NowMs() / args_.window_ms != window) {  // the counts were reset under the trial
        ++redone;
        continue;
      }
      if (args_.verbose) {
        std::fprintf(stderr, "trial %d: all %s ms, host 0 %s ms, others %s ms\n", trial, Ms(t->all).c_str(),
                     Ms(t->isolated).c_str(), Ms(t->others).c_str());
      }
      if (std::isinf(t->all)) ++timeouts;
      all.push_back(t->all);
      isolated.push_back(t->isolated);
      others.push_back(t->others);
      ++trial;
    }
    for (auto* v : {&all, &isolated, &others}) std::sort(v->begin(), v->end());
    double sum = 0;
    for (double x : all) sum += x;
    const double mean = sum / static_cast<double>(all.size());
    std::printf("%d\t%d\t%d\t%s\t%d\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%d\n", args_.hosts, args_.sync_ms, args_.snapshot_ms,
                args_.drop ? "drop" : "refuse", args_.trials, timeouts, Ms(Percentile(all, 0.5)).c_str(),
                Ms(Percentile(all, 0.99)).c_str(), Ms(all.back()).c_str(), Ms(mean).c_str(),
                Ms(Percentile(isolated, 0.5)).c_str(), Ms(Percentile(others, 0.5)).c_str(), redone);
    return 0;
  }

 private:
  static constexpr uint64_t kLimit = 1'000'000'000;  // no trial comes near it
  using Steady = std::chrono::steady_clock;

  struct Times {
    double all, isolated, others;  // ms from the heal; infinity if never
  };

  bool Fail(const std::string& what) {
    std::fprintf(stderr, "gossip_bench: %s\n", what.c_str());
    return false;
  }

  // Host h's count for `key`, unchanged by the reading (see above).
  uint64_t CountAt(size_t h, const std::string& key) {
    auto d = hosts_[h]->Check(key, "regular", kLimit + 1);
    if (!d || d->allowed) {
      std::fprintf(stderr, "gossip_bench: reading a count: %s\n",
                   d ? "a request over the limit was admitted" : d.error().ToString().c_str());
      std::exit(1);
    }
    return kLimit - d->remaining;
  }

  void Admit(size_t h, const std::string& key, int n) {
    for (int i = 0; i < n; ++i) {
      auto d = hosts_[h]->Check(key, "regular");
      if (!d || !d->allowed) {
        std::fprintf(stderr, "gossip_bench: %s\n", d ? "a request was denied" : d.error().ToString().c_str());
        std::exit(1);
      }
    }
  }

  // Polls until host h sees want[h] for every h in [first, last), or the
  // timeout; the ms it took, or infinity.
  double WaitFor(const std::string& key, size_t first, size_t last, uint64_t want, Steady::time_point from) {
    const auto deadline = from + std::chrono::milliseconds(args_.timeout_ms);
    for (;;) {
      bool all = true;
      for (size_t h = first; h < last && all; ++h) all = CountAt(h, key) == want;
      const auto now = Steady::now();
      if (all) return std::chrono::duration<double, std::milli>(now - from).count();
      if (now >= deadline) return std::numeric_limits<double>::infinity();
      std::this_thread::sleep_for(std::chrono::microseconds(args_.poll_us));
    }
  }

  void Cut(bool cut) {
    for (size_t i = 0; i < hosts_.size(); ++i) {
      for (size_t j = 0; j < hosts_.size(); ++j) {
        if (i == j || (i != 0 && j != 0)) continue;
        auto& p = *proxies_[i][j];
        if (!cut) {
          p.PassThrough();
        } else if (args_.drop) {
          p.SetDrop(true);
        } else {
          p.SetRefuse(true);  // first, so a reconnect cannot slip in after the reset
          p.ResetConnections();
        }
      }
    }
  }

  // What each host sees of `key`, for a report.
  std::string Views(const std::string& key, uint64_t want) {
    std::string line = "want " + std::to_string(want) + ", hosts see";
    for (size_t h = 0; h < hosts_.size(); ++h) line += " " + std::to_string(CountAt(h, key));
    return line;
  }

  std::optional<Times> Trial(const std::string& key) {
    const size_t n = hosts_.size();
    const auto hosts = static_cast<uint64_t>(n);
    const auto checks = static_cast<uint64_t>(args_.checks);
    for (size_t h = 0; h < n; ++h) Admit(h, key, 1);
    if (std::isinf(WaitFor(key, 0, n, hosts, Steady::now()))) {
      Fail("before the cut the hosts do not agree within the timeout (" + Views(key, hosts) +
           "): the links did not recover from the previous trial");
      return std::nullopt;
    }
    Cut(true);
    const auto cut_at = Steady::now();
    for (size_t h = 0; h < n; ++h) Admit(h, key, args_.checks);
    // Each side agrees on its own count: host 0 on its own, the others on theirs.
    const bool isolated = !std::isinf(WaitFor(key, 0, 1, hosts + checks, Steady::now()));
    const bool others = !std::isinf(WaitFor(key, 1, n, hosts + checks * (hosts - 1), Steady::now()));
    if (!isolated || !others) {
      Fail("during the cut the sides do not settle (" + Views(key, hosts + checks * (hosts - 1)) + ")");
      return std::nullopt;
    }
    std::uniform_int_distribution<int> jitter(0, args_.snapshot_ms - 1);
    std::this_thread::sleep_until(cut_at + std::chrono::milliseconds(args_.partition_ms + jitter(rng_)));

    const uint64_t total = hosts * (1 + checks);
    const auto healed_at = Steady::now();
    Cut(false);
    // Polls every host together; notes when host 0, the others and all are right.
    Times t{kNever, kNever, kNever};
    const auto deadline = healed_at + std::chrono::milliseconds(args_.timeout_ms);
    for (;;) {
      bool right0 = CountAt(0, key) == total;
      bool right_others = true;
      for (size_t h = 1; h < n && right_others; ++h) right_others = CountAt(h, key) == total;
      const auto now = Steady::now();
      const double ms = std::chrono::duration<double, std::milli>(now - healed_at).count();
      if (right0 && std::isinf(t.isolated)) t.isolated = ms;
      if (right_others && std::isinf(t.others)) t.others = ms;
      if (right0 && right_others) {
        t.all = ms;
        break;
      }
      if (now >= deadline) {
        std::fprintf(stderr, "gossip_bench: key %s not converged %d ms after the heal (%s)\n", key.c_str(),
                     args_.timeout_ms, Views(key, total).c_str());
        break;
      }
      std::this_thread::sleep_for(std::chrono::microseconds(args_.poll_us));
    }
    return t;
  }

  // A trial that converges takes at most about partition + 2 snapshot
  // intervals (the jitter, then the heal): if the window ends sooner, start
  // in the next one. A slower trial that crosses the end is done again.
  void WaitForRoomInWindow() {
    const int64_t need = int64_t{args_.partition_ms} + 2 * int64_t{args_.snapshot_ms} + 1000;
    const int64_t now = clock_.NowMs();
    const int64_t end = (now / args_.window_ms + 1) * args_.window_ms;
    if (end - now >= need) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(end - now + 50));
  }

  static constexpr double kNever = std::numeric_limits<double>::infinity();

  const ConvergenceArgs args_;
  const cachet::Clock& clock_ = cachet::CoarseClock::Instance();  // the limiters' own
  std::mt19937_64 rng_;
  std::vector<std::unique_ptr<cachet::GossipRateLimiter>> hosts_;
  std::vector<std::vector<std::unique_ptr<cachet::testing::FaultProxy>>> proxies_;
};

int RunConvergence(int argc, char** argv) {
  ConvergenceArgs args;
  if (!ParseConvergence(argc, argv, &args)) {
    ConvergenceUsage(stderr);
    return 2;
  }
  ConvergenceBench bench(args);
  if (!bench.Build()) return 1;
  return bench.Run();
}

}  // namespace

int main(int argc, char** argv) {
  if (argc > 1 && std::strcmp(argv[1], "convergence") == 0) return RunConvergence(argc, argv);
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
