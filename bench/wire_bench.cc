// wire_bench: one load generator for cachetd and redis-server, so both are
// measured by the same loop, keys, values and clock. Driven by
// bench/compare_redis.sh; prints one result line per run.
//
//   wire_bench --target cachet --endpoint ipc:///tmp/x.sock --mode get --clients 1 --seconds 5
//   wire_bench --target redis --endpoint unix:/tmp/redis.sock --mode set --clients 50 --pipeline 16
//
// Modes: fill (store every key once), get, set, ping (the bare round trip). Keys are 16 bytes
// ("key:" + 12 digits) drawn uniformly from --keys; values are 100 bytes.
// --pipeline P sends P requests per round trip (cachet: MGET/MSET of P keys;
// redis: P pipelined commands). Latency is per round trip.
#include <hiredis/hiredis.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "cachet/client.h"

namespace {

struct Args {
  std::string target, endpoint, mode = "get";
  int clients = 1, pipeline = 1;
  int timing_batch = 1;  // round trips timed together; the sample is their mean
  double seconds = 5;
  uint64_t keys = 1'000'000;
};

// Writes "key:" and 12 digits into `out` (16 bytes) without allocating.
void KeyInto(uint64_t i, std::string& out) {
  out.assign("key:000000000000");
  for (int pos = 15; pos >= 4 && i != 0; --pos, i /= 10)
    out[static_cast<size_t>(pos)] = static_cast<char>('0' + i % 10);
}

std::string Key(uint64_t i) {
  std::string k;
  KeyInto(i, k);
  return k;
}

const std::string kValue(100, 'v');

// One connection's worth of work; returns false (after printing) on error.
class Conn {
 public:
  virtual ~Conn() = default;
  virtual bool Get(const std::vector<std::string>& keys) = 0;
  virtual bool Set(const std::vector<std::string>& keys) = 0;
  virtual bool Ping() = 0;
};

// Calls go through cachet::KeyValueClient, as an application written for
// one node or a cluster makes them (virtual dispatch included).
class CachetConn : public Conn {
 public:
  explicit CachetConn(std::unique_ptr<cachet::KeyValueClient> c) : c_(std::move(c)) {}
  bool Get(const std::vector<std::string>& keys) override {
    if (keys.size() == 1) {
      auto r = c_->GetInto(keys[0], &value_);
      return Check(r.has_value() && *r, r, "miss");
    }
    auto r = c_->MGet(keys);
    return Check(r.has_value(), r);
  }
  bool Ping() override {
    auto r = c_->Ping();
    return Check(r.has_value(), r);
  }
  bool Set(const std::vector<std::string>& keys) override {
    if (keys.size() == 1) {
      auto r = c_->Set(keys[0], kValue);
      return Check(r.has_value(), r);
    }
    std::vector<std::pair<std::string, std::string>> items;
    items.reserve(keys.size());
    for (const auto& k : keys) items.emplace_back(k, kValue);
    auto r = c_->MSet(items);
    return Check(r.has_value(), r);
  }

 private:
  // The reason is made only on failure: the timed path builds no string.
  template <typename R>
  static bool Check(bool ok, const R& r, const char* otherwise = "") {
    if (!ok) std::fprintf(stderr, "cachet: %s\n", r ? otherwise : r.error().ToString().c_str());
    return ok;
  }
  std::unique_ptr<cachet::KeyValueClient> c_;
  std::string value_;
};

class RedisConn : public Conn {
 public:
  explicit RedisConn(redisContext* c) : c_(c) {}
  ~RedisConn() override { redisFree(c_); }
  bool Get(const std::vector<std::string>& keys) override { return Run("GET", keys); }
  bool Set(const std::vector<std::string>& keys) override { return Run("SET", keys); }
  bool Ping() override {
    auto* reply = static_cast<redisReply*>(redisCommand(c_, "PING"));
    const bool ok = reply != nullptr && reply->type == REDIS_REPLY_STATUS;
    if (reply) freeReplyObject(reply);
    return ok;
  }

 private:
  bool Run(const char* cmd, const std::vector<std::string>& keys) {
    for (const auto& k : keys) {
      if (cmd[0] == 'G') {
        redisAppendCommand(c_, "GET %b", k.data(), k.size());
      } else {
        redisAppendCommand(c_, "SET %b %b", k.data(), k.size(), kValue.data(), kValue.size());
      }
    }
    for (size_t i = 0; i < keys.size(); ++i) {
      void* reply = nullptr;
      if (redisGetReply(c_, &reply) != REDIS_OK || reply == nullptr) {
        std::fprintf(stderr, "redis: %s\n", c_->errstr);
        return false;
      }
      const int type = static_cast<redisReply*>(reply)->type;
      freeReplyObject(reply);
      if (type == REDIS_REPLY_ERROR || (cmd[0] == 'G' && type == REDIS_REPLY_NIL)) {
        std::fprintf(stderr, "redis: %s reply of type %d\n", cmd, type);
        return false;
      }
    }
    return true;
  }
  redisContext* c_;
};

std::unique_ptr<Conn> Connect(const Args& a) {
  if (a.target == "cachet") {
    auto c = cachet::Client::Connect(a.endpoint);
    if (!c) {
      std::fprintf(stderr, "cachet: %s\n", c.error().ToString().c_str());
      return nullptr;
    }
    return std::make_unique<CachetConn>(std::move(*c));
  }
  redisContext* c = nullptr;
  if (a.endpoint.rfind("unix:", 0) == 0) {
    c = redisConnectUnix(a.endpoint.substr(5).c_str());
  } else {
    const size_t colon = a.endpoint.rfind(':');
    c = redisConnect(a.endpoint.substr(0, colon).c_str(), std::atoi(a.endpoint.c_str() + colon + 1));
  }
  if (c == nullptr || c->err) {
    std::fprintf(stderr, "redis: cannot connect to %s\n", a.endpoint.c_str());
    return nullptr;
  }
  return std::make_unique<RedisConn>(c);
}

struct ThreadResult {
  uint64_t ops = 0;
  std::vector<uint32_t> latency_ns;  // per round trip
  bool ok = true;
};

void Worker(const Args& a, int index, std::atomic<bool>& go, ThreadResult& out) {
  auto conn = Connect(a);
  if (!conn) {
    out.ok = false;
    return;
  }
  uint64_t x = 0x9E3779B97F4A7C15ull * static_cast<uint64_t>(index + 1);
  std::vector<std::string> batch(static_cast<size_t>(a.pipeline));
  out.latency_ns.reserve(1 << 20);
  while (!go.load(std::memory_order_acquire)) std::this_thread::yield();
  const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(a.seconds);
  const bool get = a.mode == "get";
  // Keys for a timing batch are drawn before the clock starts.
  std::vector<std::vector<std::string>> round(static_cast<size_t>(a.timing_batch), batch);
  while (std::chrono::steady_clock::now() < end) {
    for (auto& trip : round) {
      for (auto& k : trip) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        KeyInto(x % a.keys, k);
      }
    }
    const auto t0 = std::chrono::steady_clock::now();
    for (const auto& trip : round) {
      const bool ok = a.mode == "ping" ? conn->Ping() : get ? conn->Get(trip) : conn->Set(trip);
      if (!ok) {
        out.ok = false;
        return;
      }
    }
    const auto t1 = std::chrono::steady_clock::now();
    out.ops += round.size() * batch.size();
    const int64_t ns = std::chrono::duration_cast<std::chrono::nanoseconds>(t1 - t0).count() / a.timing_batch;
    out.latency_ns.push_back(static_cast<uint32_t>(std::min<int64_t>(UINT32_MAX, ns)));
  }
}

int Fill(const Args& a) {
  auto conn = Connect(a);
  if (!conn) return 1;
  std::vector<std::string> batch;
  for (uint64_t i = 0; i < a.keys; ++i) {
    batch.push_back(Key(i));
    if (batch.size() == 1000 || i + 1 == a.keys) {
      if (!conn->Set(batch)) return 1;
      batch.clear();
    }
  }
  std::printf("filled %s with %llu keys\n", a.target.c_str(), static_cast<unsigned long long>(a.keys));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Args a;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string f = argv[i], v = argv[i + 1];
    if (f == "--target")
      a.target = v;
    else if (f == "--endpoint")
      a.endpoint = v;
    else if (f == "--mode")
      a.mode = v;
    else if (f == "--clients")
      a.clients = std::atoi(v.c_str());
    else if (f == "--pipeline")
      a.pipeline = std::atoi(v.c_str());
    else if (f == "--seconds")
      a.seconds = std::atof(v.c_str());
    else if (f == "--keys")
      a.keys = std::strtoull(v.c_str(), nullptr, 10);
    else if (f == "--timing-batch")
      a.timing_batch = std::atoi(v.c_str());
    else {
      std::fprintf(stderr, "wire_bench: unknown option %s\n", f.c_str());
      return 2;
    }
  }
  if ((a.target != "cachet" && a.target != "redis") || a.endpoint.empty() || a.clients < 1 || a.pipeline < 1 ||
      a.timing_batch < 1 || a.seconds <= 0 || a.seconds > 600 || a.keys == 0) {
    std::fprintf(stderr,
                 "usage: wire_bench --target cachet|redis --endpoint E [--mode fill|get|set] [--clients N]"
                 " [--pipeline P] [--seconds S<=600] [--keys N]\n");
    return 2;
  }
  if (a.mode == "fill") return Fill(a);

  std::atomic<bool> go{false};
  std::vector<ThreadResult> results(static_cast<size_t>(a.clients));
  std::vector<std::thread> threads;
  for (int i = 0; i < a.clients; ++i) threads.emplace_back(Worker, std::cref(a), i, std::ref(go), std::ref(results[i]));
  std::this_thread::sleep_for(std::chrono::milliseconds(200));  // let every client connect before timing
  const auto start = std::chrono::steady_clock::now();
  go.store(true, std::memory_order_release);
  for (auto& t : threads) t.join();
  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  uint64_t ops = 0;
  std::vector<uint32_t> all;
  for (auto& r : results) {
    if (!r.ok) return 1;
    ops += r.ops;
    all.insert(all.end(), r.latency_ns.begin(), r.latency_ns.end());
  }
  std::sort(all.begin(), all.end());
  auto pct = [&](double p) {
    return all.empty() ? 0u : all[std::min(all.size() - 1, static_cast<size_t>(p * all.size()))];
  };
  std::printf("target=%s mode=%s clients=%d pipeline=%d ops=%llu ops_per_s=%.0f p50_ns=%u p99_ns=%u\n",
              a.target.c_str(), a.mode.c_str(), a.clients, a.pipeline, static_cast<unsigned long long>(ops),
              ops / elapsed, pct(0.5), pct(0.99));
  return 0;
}
