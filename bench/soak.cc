// cachet-soak: a long, checked mixed load on one cachetd (bench/soak.sh
// starts one and runs this against it). N client threads GET, SET (with and
// without short TTLs), DEL, INCR and RATELIMIT for a set time, each dropping
// its Client now and then and connecting a new one, and check every reply
// against a model of what they wrote (bench/soak_checks.h). Each second it
// prints a progress line and samples the daemon's VmRSS; at the end it
// writes the per-second figures as CSV (and a PNG through gnuplot) and
// fails on any wrong reply, any error, or memory grown past a bound after
// warm-up.
//
//   cachet-soak --endpoint tcp://127.0.0.1:7379 --pid 4242 --duration 600 --csv soak.csv --png soak.png
#include <sys/types.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "bench_args.h"
#include "cachet/client.h"
#include "csv_plot.h"
#include "latency_histogram.h"
#include "soak_checks.h"

namespace {

namespace bench = cachet::bench;
using bench::Known;
using bench::Life;
using cachet::Decision;
using cachet::Error;
using cachet::ErrorCode;
using Steady = std::chrono::steady_clock;

// ------------------------------------------------------------ options

struct Options {
  std::string endpoint;
  int64_t duration_s = 600;
  int clients = 8;
  int64_t keys = 1000;  // value keys, and as many counters, per thread
  std::string tier = "soak";
  int64_t reconnect_ms = 1000;
  int64_t timeout_ms = 1000;
  int64_t margin_ms = 50;
  pid_t pid = 0;
  int64_t rss_bound_mib = 16;
  int64_t limit = 0, window_ms = 0;  // the tier's rule, if given; else learned from the first decision
  std::string prefix;
  std::string csv, png;
  bool quiet = false;
};

constexpr const char* kUsage =
    "usage: cachet-soak --endpoint E [options]\n"
    "\n"
    "A checked soak of one cachetd: client threads GET, SET (with and without TTLs\n"
    "of 0.1 to 3 s), DEL, INCR and RATELIMIT for a set time, each dropping its\n"
    "connection for a new one every so often, and check every reply:\n"
    "  - a thread owns its keys; GET returns the value it last set, or a miss only\n"
    "    once that value's TTL may have passed (+-margin); DEL finds a key as the\n"
    "    model says; INCR returns the model's counter plus the delta exactly (a\n"
    "    counter made with a TTL starts again from the delta once the TTL passed)\n"
    "  - RATELIMIT asks for --tier, which must hold one fixed_window rule: on a key\n"
    "    of its own a thread sees admissions 1, 2, .. limit per window with\n"
    "    remaining = limit - admitted and denials only after them; on a key all\n"
    "    threads share no window admits more than the limit\n"
    "Requests are not retried. Every error fails the run, but TIMEOUT or\n"
    "UNAVAILABLE on a thread's first request after it reconnected (counted apart).\n"
    "The first wrong reply ends the run; the report names the key.\n"
    "\n"
    "  --endpoint E     the cachetd (ipc://, tcp:// or stream://), started with a rate-limit-policy\n"
    "  --duration S     seconds to run (default 600)\n"
    "  --clients N      client threads (default 8)\n"
    "  --keys N         value keys, and as many counters, per thread (default 1000)\n"
    "  --tier NAME      the rate-limit tier to ask for (default soak)\n"
    "  --limit N        the tier's rule admits N per window (default: as the first decision says)\n"
    "  --window MS      the tier's rule's window (default: as the first decision says)\n"
    "  --reconnect MS   each thread reconnects after 0.5 to 1.5 times MS (default 1000)\n"
    "  --timeout MS     per-request timeout (default 1000)\n"
    "  --margin MS      clock margin around TTL deadlines (default 50)\n"
    "  --pid PID        cachetd's pid: its VmRSS (/proc/PID/status) is sampled each second\n"
    "  --rss-bound MIB  with --pid: fail if cachetd's private memory (VmRSS less the\n"
    "                   shared segments' pages, RssShmem, which only grow to the\n"
    "                   segments' fixed sizes as they are first touched) at the end is\n"
    "                   MIB MiB or more above where it stood after the first 20% of\n"
    "                   the run (default 16: a healthy cachetd moves by under 1 MiB;\n"
    "                   a leak of 1 byte per request or 5 KiB per connection passes\n"
    "                   16 MiB in a 10-minute soak at 70,000 requests a second)\n"
    "  --prefix P       key prefix (default soak:<pid of cachet-soak>): keys P:t<thread>:k<i>,\n"
    "                   counters P:t<thread>:n<i>, limiter keys P:t<thread>:rl<n> and P:rl\n"
    "  --csv FILE       per second: ops/s, p50/p99/p999 (us), errors, reconnects, VmRSS\n"
    "                   and its parts (KiB)\n"
    "  --png FILE       plot ops/s, p99 and VmRSS over time (with --csv; needs gnuplot)\n"
    "  --quiet          no progress line\n"
    "\n"
    "Exit: 0 passed, 1 failed (a wrong reply, an error, memory past the bound),\n"
    "2 bad arguments, 3 could not connect at start.\n";

constexpr bench::ToolUsage kTool{"cachet-soak", kUsage};

Options Parse(int argc, char** argv) {
  Options o;
  const auto number = [](const std::string& flag, const std::string& v, int64_t min, int64_t max) {
    return bench::ParseWholeNumber(kTool, flag, v, min, max);
  };
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--help" || flag == "-h") {
      std::fputs(kUsage, stdout);
      std::exit(0);
    }
    if (flag == "--quiet") {
      o.quiet = true;
      continue;
    }
    static const char* const kWithValue[] = {"--endpoint", "--duration",  "--clients",   "--keys",    "--tier",
                                             "--limit",    "--window",    "--reconnect", "--timeout", "--margin",
                                             "--pid",      "--rss-bound", "--prefix",    "--csv",     "--png"};
    if (std::find(std::begin(kWithValue), std::end(kWithValue), flag) == std::end(kWithValue)) {
      bench::RefuseArguments(kTool, "unknown option '" + flag + "'");
    }
    if (i + 1 >= argc) bench::RefuseArguments(kTool, flag + " needs a value");
    const std::string value = argv[++i];
    if (flag == "--endpoint") {
      o.endpoint = value;
    } else if (flag == "--duration") {
      o.duration_s = number(flag, value, 1, 7 * 86400);
    } else if (flag == "--clients") {
      o.clients = static_cast<int>(number(flag, value, 1, 1024));
    } else if (flag == "--keys") {
      o.keys = number(flag, value, 1, 1 << 20);
    } else if (flag == "--tier") {
      o.tier = value;
    } else if (flag == "--limit") {
      o.limit = number(flag, value, 1, 1 << 30);
    } else if (flag == "--window") {
      o.window_ms = number(flag, value, 1, 86400000);
    } else if (flag == "--reconnect") {
      o.reconnect_ms = number(flag, value, 1, 3600000);
    } else if (flag == "--timeout") {
      o.timeout_ms = number(flag, value, 1, 60000);
    } else if (flag == "--margin") {
      o.margin_ms = number(flag, value, 0, 10000);
    } else if (flag == "--pid") {
      o.pid = static_cast<pid_t>(number(flag, value, 1, 1 << 30));
    } else if (flag == "--rss-bound") {
      o.rss_bound_mib = number(flag, value, 1, 1 << 20);
    } else if (flag == "--prefix") {
      o.prefix = value;
    } else if (flag == "--csv") {
      o.csv = value;
    } else {
      o.png = value;
    }
  }
  if (o.endpoint.empty()) bench::RefuseArguments(kTool, "--endpoint is required");
  if (!o.png.empty() && o.csv.empty()) bench::RefuseArguments(kTool, "--png plots the --csv file: give both");
  if ((o.limit == 0) != (o.window_ms == 0)) bench::RefuseArguments(kTool, "give --limit and --window together");
  if (o.prefix.empty()) o.prefix = "soak:" + std::to_string(getpid());
  return o;
}

// ------------------------------------------------------------ the daemon's memory

struct Memory {
  int64_t rss_kib = 0, anon_kib = 0, shmem_kib = 0;
  // What the daemon holds of its own: VmRSS less the shared segments' pages,
  // which only grow to the segments' fixed sizes as they are first touched.
  int64_t private_kib() const { return rss_kib - shmem_kib; }
};

// VmRSS, RssAnon and RssShmem of `pid`, or nothing if it is gone.
std::optional<Memory> ReadMemory(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  if (!in) return std::nullopt;
  Memory m;
  bool found = false;
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string name;
    int64_t kib = 0;
    fields >> name >> kib;
    if (name == "VmRSS:") {
      m.rss_kib = kib;
      found = true;
    } else if (name == "RssAnon:") {
      m.anon_kib = kib;
    } else if (name == "RssShmem:") {
      m.shmem_kib = kib;
    }
  }
  if (!found) return std::nullopt;
  return m;
}

// ------------------------------------------------------------ the run

// What the threads share. Counters are relaxed: read for progress, exact
// once the threads are joined.
struct Run {
  explicit Run(const Options& options) : o(options) {
    if (o.limit != 0) {
      shape = bench::LimitShape{static_cast<uint64_t>(o.limit), std::chrono::milliseconds(o.window_ms), ""};
    }
  }

  const Options& o;
  const Steady::time_point start = Steady::now();
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> ops{0}, errors{0}, tolerated{0}, wrong{0}, reconnects{0};
  std::atomic<uint64_t> reads{0}, expired_reads{0}, incrs{0}, counter_restarts{0}, allowed{0}, denied{0};

  std::mutex mu;
  std::vector<std::string> failures;       // guarded by mu: the first few, for the report
  std::optional<bench::LimitShape> shape;  // guarded by mu
  bench::SharedWindowLedger shared_limiter;

  int64_t Now() const { return std::chrono::duration_cast<std::chrono::microseconds>(Steady::now() - start).count(); }

  void Fail(std::atomic<uint64_t>& count, const std::string& what) {
    count.fetch_add(1, std::memory_order_relaxed);
    std::lock_guard<std::mutex> lock(mu);
    if (failures.size() < 20) failures.push_back(what);
  }

  // The shape of the tier's decisions: the first one seen sets it.
  bench::LimitShape Shape(const Decision& d) {
    std::lock_guard<std::mutex> lock(mu);
    if (!shape) shape = bench::LimitShape{d.limit, d.window, d.rule};
    if (shape->rule.empty()) shape->rule = d.rule;  // --limit and --window name no rule
    return *shape;
  }
};

// A thread's latency and errors of the current second; the main thread
// takes them each second.
struct Tally {
  std::mutex mu;
  bench::LatencyHistogram latency;  // guarded by mu
  uint64_t errors = 0;              // guarded by mu
};

class Worker {
 public:
  Worker(Run& run, int index, Tally& tally)
      : run_(run),
        o_(run.o),
        index_(index),
        tally_(tally),
        values_(static_cast<size_t>(o_.keys)),
        counters_(static_cast<size_t>(o_.keys)),
        rng_(0x9E3779B97F4A7C15ull * static_cast<uint64_t>(index + 1)) {}

  void Loop() {
    if (!Reconnect()) return;
    NextReconnect();
    while (!run_.stop.load(std::memory_order_relaxed)) {
      if (Steady::now() >= reconnect_at_) {
        if (!Reconnect()) return;
        NextReconnect();
      }
      // 45% GET, 25% SET, 5% DEL, 15% INCR, 5% RATELIMIT on the thread's
      // own key and 5% on the key all threads share.
      const uint64_t pick = Random(100);
      const size_t key = static_cast<size_t>(Random(static_cast<uint64_t>(o_.keys)));
      if (pick < 45) {
        Get(key);
      } else if (pick < 70) {
        Set(key);
      } else if (pick < 75) {
        Del(key);
      } else if (pick < 90) {
        Incr(key);
      } else {
        RateLimit(pick < 95);
      }
    }
  }

 private:
  uint64_t Random(uint64_t n) { return bench::NextRandom(rng_) % n; }

  std::string ValueKey(size_t k) const { return Prefix() + "k" + std::to_string(k); }
  std::string CounterKey(size_t k) const { return Prefix() + "n" + std::to_string(k); }
  std::string Prefix() const { return o_.prefix + ":t" + std::to_string(index_) + ":"; }

  void NextReconnect() {
    const int64_t ms = o_.reconnect_ms / 2 + static_cast<int64_t>(Random(static_cast<uint64_t>(o_.reconnect_ms) + 1));
    reconnect_at_ = Steady::now() + std::chrono::milliseconds(ms);
  }

  // Drops the Client and connects a new one. A failed connect is tolerated
  // once; a second in a row is an error. False when the run is over.
  bool Reconnect() {
    client_.reset();
    cachet::ClientOptions co;
    co.timeout = std::chrono::milliseconds(o_.timeout_ms);
    co.retries = 0;  // every timeout shows: a retry would hide one and may apply an op twice
    for (int attempt = 0; !run_.stop.load(std::memory_order_relaxed); ++attempt) {
      auto c = cachet::Client::Connect(o_.endpoint, co);
      if (c) {
        client_ = std::move(*c);
        just_connected_ = true;
        run_.reconnects.fetch_add(1, std::memory_order_relaxed);
        return true;
      }
      const std::string what = "thread " + std::to_string(index_) + ": connect: " + c.error().ToString();
      if (attempt == 0) {
        run_.tolerated.fetch_add(1, std::memory_order_relaxed);
      } else {
        CountError(what);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return false;
  }

  // A request came back at t1 having left at t0: counted, and its latency kept.
  void Done(Steady::time_point t0, Steady::time_point t1) {
    run_.ops.fetch_add(1, std::memory_order_relaxed);
    just_connected_ = false;
    std::lock_guard<std::mutex> lock(tally_.mu);
    tally_.latency.Add(std::chrono::duration_cast<std::chrono::nanoseconds>(t1 - t0).count());
  }

  void CountError(const std::string& what) {
    run_.Fail(run_.errors, "ERROR: " + what);
    std::lock_guard<std::mutex> lock(tally_.mu);
    ++tally_.errors;
  }

  // A request failed: the key's state is unknown from here. Tolerated if it
  // is the first request after a reconnect and the daemon was not reached.
  void Failed(const char* op, const std::string& key, const Error& e) {
    const bool reconnecting = just_connected_ && (e.code == ErrorCode::kTimeout || e.code == ErrorCode::kUnavailable);
    just_connected_ = false;
    if (reconnecting) {
      run_.tolerated.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    CountError(std::string(op) + " " + key + ": " + e.ToString());
  }

  // A reply the model rules out: reported with the key, and the run ends.
  void Wrong(const std::string& key, const std::string& what) {
    run_.Fail(run_.wrong, "WRONG: key " + key + ": " + what);
    run_.stop.store(true, std::memory_order_relaxed);
  }

  std::string Describe(const bench::ValueModel& m, int64_t now) const {
    std::string s = "set " + std::to_string((now - m.set_at) / 1000) + " ms before";
    s += m.ttl_ms == 0 ? ", no TTL" : " with a TTL of " + std::to_string(m.ttl_ms) + " ms";
    return s;
  }

  void Get(size_t k) {
    bench::ValueModel& m = values_[k];
    if (m.known == Known::kUnknown) return Set(k);
    const std::string key = ValueKey(k);
    const int64_t t0 = run_.Now();
    const auto s0 = Steady::now();
    auto r = client_->GetInto(key, &got_);
    const auto s1 = Steady::now();
    const int64_t t1 = run_.Now();
    if (!r) {
      m.known = Known::kUnknown;
      return Failed("GET", key, r.error());
    }
    Done(s0, s1);
    run_.reads.fetch_add(1, std::memory_order_relaxed);
    const int64_t margin = o_.margin_ms * 1000;
    if (m.known == Known::kAbsent) {
      if (*r) Wrong(key, "GET found '" + Clip(got_) + "' on a key deleted or expired before");
      return;
    }
    const Life life = bench::LifeAt(m.deadline, t0, t1, margin);
    if (!*r) {
      if (life == Life::kAlive) return Wrong(key, "GET missed a key " + Describe(m, t1));
      m.known = Known::kAbsent;
      run_.expired_reads.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    if (life == Life::kExpired) return Wrong(key, "GET found it after its TTL passed: " + Describe(m, t1));
    bench::SoakValue(index_, k, m.version, m.size, &want_);
    if (got_ != want_) {
      Wrong(key, "GET returned '" + Clip(got_) + "' (" + std::to_string(got_.size()) + " bytes), expected '" +
                     Clip(want_) + "' (" + std::to_string(want_.size()) + " bytes), " + Describe(m, t1));
    }
  }

  void Set(size_t k) {
    bench::ValueModel& m = values_[k];
    const std::string key = ValueKey(k);
    const uint32_t version = ++version_;
    const uint32_t size = 16 + static_cast<uint32_t>(Random(497));
    const int64_t ttl_ms = Random(10) < 4 ? 0 : 100 + static_cast<int64_t>(Random(2901));
    bench::SoakValue(index_, k, version, size, &want_);
    cachet::SetOptions options;
    options.ttl = std::chrono::milliseconds(ttl_ms);
    const int64_t t0 = run_.Now();
    const auto s0 = Steady::now();
    auto r = client_->Set(key, want_, options);
    const auto s1 = Steady::now();
    const int64_t t1 = run_.Now();
    if (!r) {
      m.known = Known::kUnknown;
      return Failed("SET", key, r.error());
    }
    Done(s0, s1);
    if (!*r) return Wrong(key, "an unconditional SET was not stored");
    m = bench::ValueModel{Known::kPresent, version, size, ttl_ms, t1, bench::Deadline::After(t0, t1, ttl_ms)};
  }

  void Del(size_t k) {
    bench::ValueModel& m = values_[k];
    const std::string key = ValueKey(k);
    const int64_t t0 = run_.Now();
    const auto s0 = Steady::now();
    auto r = client_->Del(key);
    const auto s1 = Steady::now();
    const int64_t t1 = run_.Now();
    const Known before = m.known;
    m.known = r ? Known::kAbsent : Known::kUnknown;
    if (!r) return Failed("DEL", key, r.error());
    Done(s0, s1);
    if (before == Known::kUnknown) return;
    const Life life =
        before == Known::kAbsent ? Life::kExpired : bench::LifeAt(m.deadline, t0, t1, o_.margin_ms * 1000);
    if (*r && life == Life::kExpired) Wrong(key, "DEL found a key that was deleted or had expired");
    if (!*r && life == Life::kAlive) Wrong(key, "DEL did not find a key " + Describe(m, t1));
  }

  void Incr(size_t k) {
    bench::CounterModel& m = counters_[k];
    const std::string key = CounterKey(k);
    if (m.known == Known::kUnknown) {
      // Whatever it holds now, it holds nothing after this.
      auto r = client_->Del(key);
      if (!r) return Failed("DEL", key, r.error());
      m.known = Known::kAbsent;
      return;
    }
    const int64_t delta = 1 + static_cast<int64_t>(Random(9));
    // Odd counters are made with a TTL, so they expire and start again.
    const int64_t ttl_ms = k % 2 == 1 ? 200 + static_cast<int64_t>(Random(1801)) : 0;
    const int64_t t0 = run_.Now();
    const auto s0 = Steady::now();
    auto r = client_->Incr(key, delta, std::chrono::milliseconds(ttl_ms));
    const auto s1 = Steady::now();
    const int64_t t1 = run_.Now();
    if (!r) {
      m.known = Known::kUnknown;
      return Failed("INCR", key, r.error());
    }
    Done(s0, s1);
    run_.incrs.fetch_add(1, std::memory_order_relaxed);
    const Life life =
        m.known == Known::kAbsent ? Life::kExpired : bench::LifeAt(m.deadline, t0, t1, o_.margin_ms * 1000);
    const bool continued = life != Life::kExpired && *r == m.value + delta;
    const bool restarted = life != Life::kAlive && *r == delta;
    if (!continued && !restarted) {
      std::string want = life == Life::kAlive     ? std::to_string(m.value + delta)
                         : life == Life::kExpired ? std::to_string(delta)
                                                  : std::to_string(m.value + delta) + " or " + std::to_string(delta);
      return Wrong(key, "INCR by " + std::to_string(delta) + " returned " + std::to_string(*r) + ", expected " + want);
    }
    if (restarted) {
      if (m.known == Known::kPresent) run_.counter_restarts.fetch_add(1, std::memory_order_relaxed);
      m.deadline = bench::Deadline::After(t0, t1, ttl_ms);
    }
    m.known = Known::kPresent;
    m.value = *r;
  }

  void RateLimit(bool own) {
    const std::string key = own ? Prefix() + "rl" + std::to_string(limiter_generation_) : o_.prefix + ":rl";
    const int64_t t0 = run_.Now();
    const auto s0 = Steady::now();
    auto r = client_->RateLimit(key, o_.tier);
    const auto s1 = Steady::now();
    const int64_t t1 = run_.Now();
    if (!r) {
      if (own) NewLimiterKey();  // it may or may not have counted
      return Failed("RATELIMIT", key, r.error());
    }
    Done(s0, s1);
    const Decision& d = *r;
    (d.allowed ? run_.allowed : run_.denied).fetch_add(1, std::memory_order_relaxed);
    const bench::LimitShape shape = run_.Shape(d);
    if (std::string why = bench::CheckShape(d, shape); !why.empty()) return Wrong(key, "RATELIMIT " + why);
    const int64_t window_us = std::chrono::duration_cast<std::chrono::microseconds>(shape.window).count();
    if ((t1 - t0) * 4 > window_us) {
      // Too slow to place in a window: the own key's count is unknown from here.
      if (own) NewLimiterKey();
      return;
    }
    const int64_t end = (t0 + t1) / 2 + std::chrono::duration_cast<std::chrono::microseconds>(d.reset).count();
    std::string why;
    if (own) {
      own_windows_.Forget(t0 - 8 * window_us);
      why = bench::CheckOwnDecision(d, own_windows_.At(end, window_us, shape.limit));
    } else {
      why = run_.shared_limiter.Check(d, end, window_us, shape.limit);
    }
    if (!why.empty()) Wrong(key, "RATELIMIT " + why);
  }

  // The thread's own limiter key starts afresh under a new name.
  void NewLimiterKey() {
    ++limiter_generation_;
    own_windows_ = bench::WindowLedger{};
  }

  static std::string Clip(const std::string& s) { return s.size() <= 40 ? s : s.substr(0, 40) + "..."; }

  Run& run_;
  const Options& o_;
  const int index_;
  Tally& tally_;
  std::unique_ptr<cachet::Client> client_;
  bool just_connected_ = false;
  Steady::time_point reconnect_at_;
  std::vector<bench::ValueModel> values_;
  std::vector<bench::CounterModel> counters_;
  uint32_t version_ = 0;
  uint64_t limiter_generation_ = 0;
  bench::WindowLedger own_windows_;
  uint64_t rng_;
  std::string got_, want_;
};

// ------------------------------------------------------------ per second

struct Second {
  uint64_t ops = 0, errors = 0, reconnects = 0;
  double p50_us = 0, p99_us = 0, p999_us = 0;
  std::optional<Memory> memory;
};

bool WriteCsv(const std::string& path, const std::vector<Second>& seconds) {
  FILE* f = std::fopen(path.c_str(), "w");
  if (f == nullptr) return false;
  std::fprintf(f,
               "second,ops_per_s,p50_us,p99_us,p999_us,errors,reconnects,rss_kib,rss_private_kib,rss_anon_kib,"
               "rss_shmem_kib\n");
  for (size_t s = 0; s < seconds.size(); ++s) {
    const Second& x = seconds[s];
    const Memory m = x.memory.value_or(Memory{});
    std::fprintf(f, "%zu,%llu,%.1f,%.1f,%.1f,%llu,%llu,%lld,%lld,%lld,%lld\n", s + 1,
                 static_cast<unsigned long long>(x.ops), x.p50_us, x.p99_us, x.p999_us,
                 static_cast<unsigned long long>(x.errors), static_cast<unsigned long long>(x.reconnects),
                 static_cast<long long>(m.rss_kib), static_cast<long long>(m.private_kib()),
                 static_cast<long long>(m.anon_kib), static_cast<long long>(m.shmem_kib));
  }
  return std::fclose(f) == 0;
}

double MiB(int64_t kib) { return static_cast<double>(kib) / 1024.0; }

}  // namespace

int main(int argc, char** argv) {
  const Options o = Parse(argc, argv);
  {
    auto probe = cachet::Client::Connect(o.endpoint);
    if (!probe || !(*probe)->Ping()) {
      std::fprintf(stderr, "cachet-soak: cannot reach %s\n", o.endpoint.c_str());
      return 3;
    }
  }
  if (o.pid != 0 && !ReadMemory(o.pid)) {
    std::fprintf(stderr, "cachet-soak: no process %d to sample (--pid)\n", static_cast<int>(o.pid));
    return 2;
  }

  Run run(o);
  std::vector<Tally> tallies(static_cast<size_t>(o.clients));
  std::vector<std::unique_ptr<Worker>> workers;
  std::vector<std::thread> threads;
  for (int i = 0; i < o.clients; ++i) {
    workers.push_back(std::make_unique<Worker>(run, i, tallies[static_cast<size_t>(i)]));
  }
  for (auto& w : workers) threads.emplace_back([&w] { w->Loop(); });

  const bool tty = isatty(STDERR_FILENO) != 0;
  const size_t total = static_cast<size_t>(o.duration_s);
  const size_t warm_at = std::max<size_t>(1, (total + 4) / 5);  // the end of the first 20%
  std::vector<Second> seconds;
  bench::LatencyHistogram all;
  uint64_t last_ops = 0, last_reconnects = 0;
  bool daemon_gone = false;
  while (seconds.size() < total && !run.stop.load()) {
    std::this_thread::sleep_until(run.start + std::chrono::seconds(seconds.size() + 1));
    Second x;
    bench::LatencyHistogram h;
    for (Tally& t : tallies) {
      std::lock_guard<std::mutex> lock(t.mu);
      h.Merge(t.latency);
      x.errors += t.errors;
      t.latency = bench::LatencyHistogram{};
      t.errors = 0;
    }
    all.Merge(h);
    const uint64_t ops = run.ops.load(), reconnects = run.reconnects.load();
    x.ops = ops - last_ops;
    x.reconnects = reconnects - last_reconnects;
    last_ops = ops;
    last_reconnects = reconnects;
    x.p50_us = h.Quantile(0.5) / 1e3;
    x.p99_us = h.Quantile(0.99) / 1e3;
    x.p999_us = h.Quantile(0.999) / 1e3;
    if (o.pid != 0) {
      x.memory = ReadMemory(o.pid);
      if (!x.memory && !daemon_gone) {
        daemon_gone = true;
        run.Fail(run.errors, "ERROR: cachetd (pid " + std::to_string(o.pid) + ") is gone");
        run.stop = true;
      }
    }
    seconds.push_back(x);
    if (!o.quiet) {
      char rss[32] = "";
      if (x.memory) {
        std::snprintf(rss, sizeof rss, "  rss %.1f MiB (private %.1f)", MiB(x.memory->rss_kib),
                      MiB(x.memory->private_kib()));
      }
      std::fprintf(stderr, "%s%4zu/%zu s  %7llu ops/s  p99 %7.1f us  errors %llu  wrong %llu  reconnects %llu%s%s",
                   tty ? "\r" : "", seconds.size(), total, static_cast<unsigned long long>(x.ops), x.p99_us,
                   static_cast<unsigned long long>(run.errors.load()),
                   static_cast<unsigned long long>(run.wrong.load()), static_cast<unsigned long long>(reconnects), rss,
                   tty ? "  " : "\n");
    }
  }
  run.stop = true;
  for (std::thread& t : threads) t.join();
  const double elapsed = std::chrono::duration<double>(Steady::now() - run.start).count();
  if (!o.quiet && tty) std::fprintf(stderr, "\n");

  int status = 0;
  if (!o.csv.empty() && !WriteCsv(o.csv, seconds)) {
    std::fprintf(stderr, "cachet-soak: cannot write %s: %s\n", o.csv.c_str(), std::strerror(errno));
    status = 2;
  }
  if (!o.png.empty() && status == 0) {
    bench::PlotSpec spec;
    spec.left_label = "ops/s; p99 (us)";
    spec.right_label = "cachetd resident memory (KiB)";
    spec.left_log = true;
    spec.right_from_zero = true;
    spec.lines = {{2, "ops/s", false},
                  {4, "p99 (us)", false},
                  {8, "VmRSS (KiB)", true},
                  {9, "VmRSS less shared segments (KiB)", true}};
    std::string why;
    if (!bench::PlotCsv(o.csv, o.png, spec, &why)) {
      std::fprintf(stderr, "cachet-soak: plotting %s failed: %s\n", o.png.c_str(), why.c_str());
      status = 2;
    }
  }

  // The daemon's own view: evictions would make a wrong miss ambiguous.
  std::string daemon_note;
  if (auto c = cachet::Client::Connect(o.endpoint)) {
    if (auto stats = (*c)->Stats()) {
      for (const auto& [name, value] : *stats) {
        if (name == "evictions" && value > 0) {
          daemon_note = "  note: cachetd evicted " + std::to_string(value) +
                        " entries: a miss may have been an eviction (give it more --capacity)\n";
        }
      }
    }
  }

  // Memory growth after warm-up: the daemon's private memory is bounded;
  // VmRSS as a whole is reported.
  bool memory_failed = false;
  std::string memory_line;
  if (o.pid != 0 && seconds.size() >= warm_at && seconds[warm_at - 1].memory && seconds.back().memory) {
    const Memory first = *seconds.front().memory, warm = *seconds[warm_at - 1].memory, end = *seconds.back().memory;
    const int64_t growth = end.private_kib() - warm.private_kib();
    memory_failed = growth >= o.rss_bound_mib * 1024;
    char buf[512];
    std::snprintf(buf, sizeof buf,
                  "  cachetd VmRSS: %.1f MiB at 1 s, %.1f MiB at %zu s (end of warm-up), %.1f MiB at the end\n"
                  "  cachetd VmRSS less shared segments: %.1f MiB at 1 s, %.1f MiB at %zu s, %.1f MiB at the end: "
                  "%+.1f MiB after warm-up (bound %lld MiB)%s\n",
                  MiB(first.rss_kib), MiB(warm.rss_kib), warm_at, MiB(end.rss_kib), MiB(first.private_kib()),
                  MiB(warm.private_kib()), warm_at, MiB(end.private_kib()), MiB(growth),
                  static_cast<long long>(o.rss_bound_mib), memory_failed ? ": TOO MUCH" : "");
    memory_line = buf;
  } else if (o.pid != 0) {
    memory_line = "  cachetd VmRSS: the run ended before its warm-up did; no memory check\n";
  }

  const uint64_t errors = run.errors.load(), wrong = run.wrong.load();
  const bool passed = errors == 0 && wrong == 0 && !memory_failed;
  if (status == 0 && !passed) status = 1;
  {
    std::lock_guard<std::mutex> lock(run.mu);
    for (const std::string& f : run.failures) std::fprintf(stderr, "cachet-soak: %s\n", f.c_str());
  }
  std::printf("cachet-soak: %s, %d clients, %.1f s: %s\n", o.endpoint.c_str(), o.clients, elapsed,
              passed ? "PASSED" : "FAILED");
  std::printf("  %llu ops, %.0f ops/s; latency p50 %.1f us, p99 %.1f us, p999 %.1f us\n",
              static_cast<unsigned long long>(run.ops.load()), static_cast<double>(run.ops.load()) / elapsed,
              all.Quantile(0.5) / 1e3, all.Quantile(0.99) / 1e3, all.Quantile(0.999) / 1e3);
  std::printf(
      "  checked %llu reads (%llu misses after a TTL), %llu INCRs (%llu restarts after a TTL), "
      "%llu RATELIMIT allowed / %llu denied\n",
      static_cast<unsigned long long>(run.reads.load()), static_cast<unsigned long long>(run.expired_reads.load()),
      static_cast<unsigned long long>(run.incrs.load()), static_cast<unsigned long long>(run.counter_restarts.load()),
      static_cast<unsigned long long>(run.allowed.load()), static_cast<unsigned long long>(run.denied.load()));
  std::printf("  wrong replies %llu, errors %llu, tolerated at reconnect %llu, reconnects %llu\n",
              static_cast<unsigned long long>(wrong), static_cast<unsigned long long>(errors),
              static_cast<unsigned long long>(run.tolerated.load()),
              static_cast<unsigned long long>(run.reconnects.load()));
  std::printf("%s%s", memory_line.c_str(), daemon_note.c_str());
  return status;
}
