// cachet-load: drives one cachetd or a whole cluster with N client threads
// and an op mix for a set time, printing a progress line each second and a
// final report (ops/s, latency percentiles, errors by code, and the longest
// stretch with no operation succeeding, which is what a failover costs the
// clients). Optionally writes the per-second figures as CSV and plots them
// as a PNG through gnuplot.
//
//   cachet-load --endpoint tcp://127.0.0.1:7379 --clients 16 --duration 30
//   cachet-load --etcd http://10.0.0.9:2379 --cluster prod --mix get=50,set=50 --png load.png
//
// Each thread has a client of its own (cachet::Client for --endpoint,
// cachet::ClusterClient for --etcd/--seeds), so a thread is one synchronous
// connection: N threads keep at most N requests in flight. Latency is per
// op, recorded in a log-linear histogram (about 3% resolution) per thread
// and per second, merged at the end.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "bench_args.h"
#include "cachet/client.h"
#include "cachet/cluster_client.h"
#include "csv_plot.h"
#include "latency_histogram.h"

namespace {

using Clock = std::chrono::steady_clock;
using cachet::ErrorCode;

// ------------------------------------------------------------ options

struct Options {
  std::string endpoint;
  std::string etcd, cluster, seeds;
  int clients = 8;
  double duration_s = 10;
  int get = 80, set = 20, incr = 0, del = 0;  // the mix, in relative weights
  uint64_t keys = 10000;
  size_t value_size = 100;
  int64_t timeout_ms = 1000;
  std::string server_key, key;  // CURVE: the daemon's public key file, this client's key file
  std::string csv, png;
  bool json = false, quiet = false;
};

constexpr const char* kUsage =
    "usage: cachet-load (--endpoint E | --etcd URLS --cluster NAME | --seeds E,E --cluster NAME) [options]\n"
    "\n"
    "  --endpoint E        one cachetd (ipc://, tcp:// or stream://)\n"
    "  --etcd URLS         a cluster, found through its etcd (with --cluster)\n"
    "  --seeds E,E         a cluster, found through some of its nodes (with --cluster)\n"
    "  --cluster NAME      the cluster's name\n"
    "  --clients N         client threads, each with its own connection (default 8)\n"
    "  --duration S        seconds to run (default 10)\n"
    "  --mix get=80,set=20 relative weights of get, set, incr and del (default get=80,set=20)\n"
    "  --keys N            distinct keys, drawn uniformly (default 10000)\n"
    "  --value-size B      bytes per value set (default 100)\n"
    "  --timeout MS        the clients' per-request timeout (default 1000)\n"
    "  --server-key FILE   CURVE: the daemon's public key (server.pub), with --key\n"
    "  --key FILE          CURVE: this client's key file from cachectl keygen, with --server-key\n"
    "  --csv FILE          per-second figures: second, ops/s, p50/p99/p999 (us), errors\n"
    "  --png FILE          plot throughput and latency over time (needs gnuplot)\n"
    "  --json              the final report as one JSON document on stdout\n"
    "  --quiet             no progress line\n"
    "\n"
    "Exit: 0 done (errors are counted, not fatal), 2 bad arguments, 3 could not connect.\n";

constexpr cachet::bench::ToolUsage kTool{"cachet-load", kUsage};

[[noreturn]] void Usage(const std::string& why) { cachet::bench::RefuseArguments(kTool, why); }

int64_t ParseNumber(const std::string& flag, const std::string& text, int64_t min, int64_t max) {
  return cachet::bench::ParseWholeNumber(kTool, flag, text, min, max);
}

void ParseMix(const std::string& text, Options& o) {
  o.get = o.set = o.incr = o.del = 0;
  size_t at = 0;
  while (at <= text.size()) {
    const size_t comma = std::min(text.find(',', at), text.size());
    const std::string part = text.substr(at, comma - at);
    const size_t eq = part.find('=');
    if (eq == std::string::npos) Usage("--mix takes op=weight pairs, e.g. get=80,set=20; got '" + part + "'");
    const std::string op = part.substr(0, eq);
    const int weight = static_cast<int>(ParseNumber("--mix " + op, part.substr(eq + 1), 0, 1000000));
    if (op == "get") {
      o.get = weight;
    } else if (op == "set") {
      o.set = weight;
    } else if (op == "incr") {
      o.incr = weight;
    } else if (op == "del") {
      o.del = weight;
    } else {
      Usage("--mix knows get, set, incr and del, not '" + op + "'");
    }
    at = comma + 1;
  }
  if (o.get + o.set + o.incr + o.del == 0) Usage("--mix gives every op a weight of 0");
}

Options Parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--help" || flag == "-h") {
      std::fputs(kUsage, stdout);
      std::exit(0);
    }
    if (flag == "--json") {
      o.json = true;
      continue;
    }
    if (flag == "--quiet") {
      o.quiet = true;
      continue;
    }
    if (i + 1 >= argc) Usage(flag + " needs a value");
    const std::string value = argv[++i];
    if (flag == "--endpoint") {
      o.endpoint = value;
    } else if (flag == "--etcd") {
      o.etcd = value;
    } else if (flag == "--seeds") {
      o.seeds = value;
    } else if (flag == "--cluster") {
      o.cluster = value;
    } else if (flag == "--clients") {
      o.clients = static_cast<int>(ParseNumber(flag, value, 1, 4096));
    } else if (flag == "--duration") {
      o.duration_s = static_cast<double>(ParseNumber(flag, value, 1, 86400));
    } else if (flag == "--mix") {
      ParseMix(value, o);
    } else if (flag == "--keys") {
      o.keys = static_cast<uint64_t>(ParseNumber(flag, value, 1, int64_t{1} << 40));
    } else if (flag == "--value-size") {
      o.value_size = static_cast<size_t>(ParseNumber(flag, value, 0, 64 << 20));
    } else if (flag == "--timeout") {
      o.timeout_ms = ParseNumber(flag, value, 1, 3600000);
    } else if (flag == "--server-key") {
      o.server_key = value;
    } else if (flag == "--key") {
      o.key = value;
    } else if (flag == "--csv") {
      o.csv = value;
    } else if (flag == "--png") {
      o.png = value;
    } else {
      Usage("unknown option '" + flag + "'");
    }
  }
  const bool one = !o.endpoint.empty();
  const bool cluster = !o.etcd.empty() || !o.seeds.empty();
  if (one == cluster) Usage("give either --endpoint or a cluster (--etcd or --seeds, with --cluster)");
  if (cluster && o.cluster.empty()) Usage("a cluster needs --cluster NAME");
  return o;
}

using Histogram = cachet::bench::LatencyHistogram;

// ------------------------------------------------------------ the load

struct Second {
  Histogram latency;
  uint64_t errors = 0;
};

struct Worker {
  std::vector<Second> seconds;  // indexed by the second of the run
  std::map<ErrorCode, uint64_t> errors;
  std::string first_error;
};

std::unique_ptr<cachet::KeyValueClient> Connect(const Options& o, std::string* why) {
  auto keys = cachet::CurveClientKeys::Load(o.server_key, o.key);
  if (!keys) {
    *why = keys.error().ToString();
    return nullptr;
  }
  if (!o.endpoint.empty()) {
    cachet::ClientOptions co;
    co.timeout = std::chrono::milliseconds(o.timeout_ms);
    co.curve = *keys;
    auto c = cachet::Client::Connect(o.endpoint, co);
    if (!c) {
      *why = c.error().ToString();
      return nullptr;
    }
    return std::move(*c);
  }
  cachet::ClusterClientOptions co;
  co.etcd_endpoints = o.etcd;
  co.cluster = o.cluster;
  co.timeout = std::chrono::milliseconds(o.timeout_ms);
  co.curve = *keys;
  for (size_t at = 0; at < o.seeds.size();) {
    const size_t comma = std::min(o.seeds.find(',', at), o.seeds.size());
    co.seeds.push_back(o.seeds.substr(at, comma - at));
    at = comma + 1;
  }
  auto c = cachet::ClusterClient::Connect(co);
  if (!c) {
    *why = c.error().ToString();
    return nullptr;
  }
  return std::move(*c);
}

using cachet::bench::NextRandom;

struct Shared {
  std::atomic<uint64_t> ops{0};
  std::atomic<uint64_t> errors{0};
  std::atomic<int64_t> last_success_ns{0};  // since start
  std::atomic<int64_t> longest_gap_ns{0};
  std::atomic<bool> stop{false};
};

void Run(const Options& o, cachet::KeyValueClient& client, int index, Clock::time_point start, Shared& shared,
         Worker& w) {
  uint64_t rng = 0x9E3779B97F4A7C15ull * static_cast<uint64_t>(index + 1);
  const int total = o.get + o.set + o.incr + o.del;
  const std::string value(o.value_size, 'v');
  std::string key, got;
  while (!shared.stop.load(std::memory_order_relaxed)) {
    key = "load:" + std::to_string(NextRandom(rng) % o.keys);
    const int pick = static_cast<int>(NextRandom(rng) % static_cast<uint64_t>(total));
    const auto t0 = Clock::now();
    std::optional<cachet::Error> error;
    if (pick < o.get) {
      if (auto r = client.GetInto(key, &got); !r) error = r.error();
    } else if (pick < o.get + o.set) {
      if (auto r = client.Set(key, value); !r) error = r.error();
    } else if (pick < o.get + o.set + o.incr) {
      // A key holding a value set by this run is no integer: that is
      // NOT_INTEGER, counted as an error like any other.
      if (auto r = client.Incr("load:n:" + std::to_string(NextRandom(rng) % o.keys)); !r) error = r.error();
    } else {
      if (auto r = client.Del(key); !r) error = r.error();
    }
    const auto t1 = Clock::now();
    const int64_t at_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(t1 - start).count();
    const size_t second = static_cast<size_t>(at_ns / 1'000'000'000);
    if (second >= w.seconds.size()) break;  // past the end
    shared.ops.fetch_add(1, std::memory_order_relaxed);
    if (error) {
      ++w.seconds[second].errors;
      ++w.errors[error->code];
      if (w.first_error.empty()) w.first_error = error->ToString();
      shared.errors.fetch_add(1, std::memory_order_relaxed);
      continue;
    }
    w.seconds[second].latency.Add(std::chrono::duration_cast<std::chrono::nanoseconds>(t1 - t0).count());
    const int64_t previous = shared.last_success_ns.exchange(at_ns, std::memory_order_relaxed);
    const int64_t gap = at_ns - previous;
    int64_t longest = shared.longest_gap_ns.load(std::memory_order_relaxed);
    while (gap > longest && !shared.longest_gap_ns.compare_exchange_weak(longest, gap)) {
    }
  }
}

const char* CodeName(ErrorCode code) {
  switch (code) {
    case ErrorCode::kTimeout: return "TIMEOUT";
    case ErrorCode::kUnavailable: return "UNAVAILABLE";
    case ErrorCode::kClusterDown: return "CLUSTER_DOWN";
    case ErrorCode::kMoved: return "MOVED";
    case ErrorCode::kNotInteger: return "NOT_INTEGER";
    case ErrorCode::kProtocol: return "PROTOCOL";
    default: return "OTHER";
  }
}

bool Plot(const std::string& csv, const std::string& png, std::string* why) {
  cachet::bench::PlotSpec spec;
  spec.left_label = "latency (us)";
  spec.right_label = "ops/s";
  spec.left_log = true;
  spec.lines = {{3, "p50", false}, {4, "p99", false}, {5, "p999", false}, {2, "ops/s", true}};
  return cachet::bench::PlotCsv(csv, png, spec, why);
}

}  // namespace

int main(int argc, char** argv) {
  const Options o = Parse(argc, argv);
  const size_t seconds = static_cast<size_t>(o.duration_s);

  std::vector<std::unique_ptr<cachet::KeyValueClient>> clients;
  for (int i = 0; i < o.clients; ++i) {
    std::string why;
    auto c = Connect(o, &why);
    if (!c) {
      std::fprintf(stderr, "cachet-load: cannot connect: %s\n", why.c_str());
      return 3;
    }
    clients.push_back(std::move(c));
  }

  Shared shared;
  std::vector<Worker> workers(static_cast<size_t>(o.clients));
  for (Worker& w : workers) w.seconds.resize(seconds);
  const auto start = Clock::now();
  std::vector<std::thread> threads;
  for (int i = 0; i < o.clients; ++i) {
    threads.emplace_back(Run, std::cref(o), std::ref(*clients[static_cast<size_t>(i)]), i, start, std::ref(shared),
                         std::ref(workers[static_cast<size_t>(i)]));
  }
  uint64_t last_ops = 0;
  for (size_t s = 1; s <= seconds; ++s) {
    std::this_thread::sleep_until(start + std::chrono::seconds(s));
    const uint64_t ops = shared.ops.load();
    if (!o.quiet) {
      std::fprintf(stderr, "\r%3zu/%zu s  %9llu ops/s  %llu errors   ", s, seconds,
                   static_cast<unsigned long long>(ops - last_ops),
                   static_cast<unsigned long long>(shared.errors.load()));
    }
    last_ops = ops;
  }
  shared.stop = true;
  for (std::thread& t : threads) t.join();
  const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  if (!o.quiet) std::fprintf(stderr, "\n");

  // Per second, and over the whole run.
  Histogram all;
  std::map<ErrorCode, uint64_t> errors;
  std::string first_error;
  uint64_t error_total = 0;
  std::vector<Second> per_second(seconds);
  for (const Worker& w : workers) {
    for (size_t s = 0; s < seconds; ++s) {
      per_second[s].latency.Merge(w.seconds[s].latency);
      per_second[s].errors += w.seconds[s].errors;
    }
    for (const auto& [code, n] : w.errors) errors[code] += n;
    if (first_error.empty()) first_error = w.first_error;
  }
  for (const Second& s : per_second) {
    all.Merge(s.latency);
    error_total += s.errors;
  }
  const double us = 1e-3;
  if (!o.csv.empty()) {
    FILE* f = std::fopen(o.csv.c_str(), "w");
    if (f == nullptr) {
      std::fprintf(stderr, "cachet-load: cannot write %s: %s\n", o.csv.c_str(), std::strerror(errno));
      return 2;
    }
    // ops_per_s counts the ops that succeeded in that second.
    std::fprintf(f, "second,ops_per_s,p50_us,p99_us,p999_us,errors\n");
    for (size_t s = 0; s < seconds; ++s) {
      const Histogram& h = per_second[s].latency;
      std::fprintf(f, "%zu,%llu,%.1f,%.1f,%.1f,%llu\n", s + 1, static_cast<unsigned long long>(h.total()),
                   h.Quantile(0.5) * us, h.Quantile(0.99) * us, h.Quantile(0.999) * us,
                   static_cast<unsigned long long>(per_second[s].errors));
    }
    std::fclose(f);
  }
  if (!o.png.empty()) {
    if (o.csv.empty()) {
      std::fprintf(stderr, "cachet-load: --png plots the --csv file: give both\n");
      return 2;
    }
    std::string why;
    if (!Plot(o.csv, o.png, &why)) {
      std::fprintf(stderr, "cachet-load: plotting %s failed: %s\n", o.png.c_str(), why.c_str());
      return 2;
    }
  }

  const double ops_per_s = static_cast<double>(all.total()) / elapsed;
  // A run that ends failing: the stretch from the last success to the end counts too.
  const int64_t tail_ns = static_cast<int64_t>(elapsed * 1e9) - shared.last_success_ns.load();
  const double gap_ms = static_cast<double>(std::max(shared.longest_gap_ns.load(), tail_ns)) / 1e6;
  if (o.json) {
    nlohmann::json by_code = nlohmann::json::object();
    for (const auto& [code, n] : errors) by_code[CodeName(code)] = by_code.value(CodeName(code), uint64_t{0}) + n;
    const nlohmann::json report = {{"target", o.endpoint.empty() ? "cluster " + o.cluster : o.endpoint},
                                   {"clients", o.clients},
                                   {"seconds", elapsed},
                                   {"ops", all.total()},
                                   {"ops_per_s", ops_per_s},
                                   {"p50_us", all.Quantile(0.5) * us},
                                   {"p99_us", all.Quantile(0.99) * us},
                                   {"p999_us", all.Quantile(0.999) * us},
                                   {"errors", error_total},
                                   {"errors_by_code", by_code},
                                   {"first_error", first_error},
                                   {"longest_gap_ms", gap_ms}};
    std::printf("%s\n", report.dump(2).c_str());
  } else {
    std::printf("%s, %d clients, %.1f s\n", o.endpoint.empty() ? ("cluster " + o.cluster).c_str() : o.endpoint.c_str(),
                o.clients, elapsed);
    std::printf("  %llu ops, %.0f ops/s\n", static_cast<unsigned long long>(all.total()), ops_per_s);
    std::printf("  latency p50 %.1f us, p99 %.1f us, p999 %.1f us\n", all.Quantile(0.5) * us, all.Quantile(0.99) * us,
                all.Quantile(0.999) * us);
    std::printf("  errors %llu", static_cast<unsigned long long>(error_total));
    for (const auto& [code, n] : errors) std::printf("  %s %llu", CodeName(code), static_cast<unsigned long long>(n));
    std::printf("\n  longest gap with no op succeeding: %.1f ms\n", gap_ms);
    if (!first_error.empty()) std::printf("  first error: %s\n", first_error.c_str());
  }
  return 0;
}
