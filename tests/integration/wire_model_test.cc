// Randomized operations over the wire against a model.
//
// A seeded sequence of GET, SET (plain, NX, XX, with and without TTL), DEL,
// EXISTS, INCR, DECR, EXPIRE, TTL, MGET, MSET and SCAN goes to a real
// cachetd through two clients (same host with shared-memory reads, and tcp),
// and every answer is checked against a std::map with TTLs. The daemon is
// restarted in between, with SIGTERM and with kill -9: acknowledged writes
// survive both.
//
// * Large cache (nothing is evicted): answers agree exactly with the model.
// * Small cache (evictions are certain): a key may be missing (an eviction
//   is a miss), but a value is never wrong and a deleted key never returns.
//
// The daemon keeps time on the wall clock, so the model keeps, for each key
// with a TTL, the interval its deadline lies in ([send time + ttl, reply time
// + ttl]); near the deadline both answers are accepted and the one observed
// is adopted.
//
// The seed is printed; CACHET_MODEL_SEED=<n> replays a run, CACHET_MODEL_OPS
// sets the operations per phase.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <deque>
#include <iostream>
#include <limits>
#include <map>
#include <random>
#include <sstream>

#include "cachet/client.h"
#include "daemon_process.h"
#include "process_control.h"

namespace cachet {
namespace {

using std::chrono::milliseconds;
using testing::DaemonProcess;

constexpr int64_t kNever = std::numeric_limits<int64_t>::max();

int64_t WallMs() {
  using namespace std::chrono;
  return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

uint64_t SeedFromEnvironment() {
  if (const char* s = std::getenv("CACHET_MODEL_SEED")) return std::strtoull(s, nullptr, 10);
  return (static_cast<uint64_t>(std::random_device{}()) << 32) | std::random_device{}();
}

int OpsPerPhase() {
  if (const char* s = std::getenv("CACHET_MODEL_OPS")) return std::atoi(s);
  return 3000;
}

// What the model knows of a key: its value, and the interval its deadline
// lies in (kNever for none). A key whose deadline is uncertain between "none"
// and a time has lo finite and hi = kNever.
struct Entry {
  std::string value;
  int64_t lo = kNever;
  int64_t hi = kNever;
};

enum class Known { kAlive, kDead, kEither };

class WireModel {
 public:
  WireModel(bool may_evict, uint64_t seed) : may_evict_(may_evict), seed_(seed), rng_(seed) {}

  // Runs `ops` random operations; false once a disagreement was reported.
  bool Run(Client& ipc, Client& tcp, int ops, std::chrono::steady_clock::time_point deadline) {
    for (int i = 0; i < ops && !failed_ && std::chrono::steady_clock::now() < deadline; ++i) {
      Client& c = Pick(2) == 0 ? ipc : tcp;
      Step(c, &c == &ipc ? "ipc" : "tcp");
    }
    return !failed_;
  }

  // Reads every key the model holds (and a few it does not), then walks SCAN:
  // each answer must agree with the model.
  bool VerifyAll(Client& c, const char* transport) {
    std::vector<std::string> keys;
    for (const auto& [k, e] : model_) keys.push_back(k);
    for (const std::string& k : keys) {
      if (failed_) break;
      Note(std::string("verify GET ") + k + " over " + transport);
      const int64_t t0 = WallMs();
      auto v = c.Get(k);
      if (!Ok(v)) break;
      Observe(k, *v, t0, WallMs());
    }
    Note(std::string("verify SCAN over ") + transport);
    uint64_t cursor = 0;
    int pages = 0;
    do {
      const int64_t t0 = WallMs();
      auto page = c.Scan(cursor, "*", 256);
      if (!Ok(page)) break;
      for (const std::string& k : page->keys) {
        // A key the daemon lists was live when listed: the model must not
        // say it is surely gone.
        Expect(State(k, t0, kNever) != Known::kDead, "SCAN listed '" + k + "', which the model says is gone");
      }
      cursor = page->cursor;
    } while (cursor != 0 && ++pages < 1000000 && !failed_);
    return !failed_;
  }

  uint64_t ops_done() const { return ops_; }
  const std::map<std::string, Entry>& model() const { return model_; }

 private:
  uint64_t Pick(uint64_t n) { return std::uniform_int_distribution<uint64_t>(0, n - 1)(rng_); }

  std::string StringKey() { return "k:" + std::to_string(Pick(may_evict_ ? 3000 : 300)); }
  std::string CounterKey() { return "n:" + std::to_string(Pick(may_evict_ ? 300 : 50)); }
  std::string AnyKey() { return Pick(4) == 0 ? CounterKey() : StringKey(); }
  std::string Value() {
    // Sizes from empty to 3 KiB; the content names the op, so a value from
    // another write can never pass for this one.
    const size_t size = Pick(8) == 0 ? Pick(3072) : Pick(64);
    std::string v = "#" + std::to_string(ops_) + ":";
    while (v.size() < size) v += static_cast<char>('a' + Pick(26));
    return v;
  }
  // No TTL most of the time, an hour sometimes, a short one often enough
  // that keys expire during the run.
  milliseconds Ttl() {
    switch (Pick(6)) {
      case 0: return std::chrono::hours(1);
      case 1: return milliseconds(20 + Pick(1500));
      default: return milliseconds(0);
    }
  }

  // What the model can say of `key` for an answer given between t0 and t1.
  Known State(const std::string& key, int64_t t0, int64_t t1) const {
    auto it = model_.find(key);
    if (it == model_.end()) return Known::kDead;
    const Entry& e = it->second;
    // The daemon's now lies in [t0, t1]; a key is live while now < deadline.
    // One millisecond of slack for the clocks' rounding.
    if (e.hi != kNever && t0 >= e.hi + 1) return Known::kDead;
    if (t1 != kNever && t1 + 1 < e.lo) return may_evict_ ? Known::kEither : Known::kAlive;
    return Known::kEither;
  }

  static std::pair<int64_t, int64_t> Deadline(milliseconds ttl, int64_t t0, int64_t t1) {
    if (ttl.count() == 0) return {kNever, kNever};
    return {t0 + ttl.count(), t1 + ttl.count()};
  }

  void Expect(bool ok, const std::string& what) {
    if (ok || failed_) return;
    failed_ = true;
    std::ostringstream history;
    for (const std::string& h : history_) history << "\n  " << h;
    ADD_FAILURE() << what << "\nop " << ops_ << ", seed " << seed_ << " (CACHET_MODEL_SEED=" << seed_
                  << " replays it); last operations:" << history.str();
  }
  template <typename T>
  bool Ok(const Result<T>& r) {
    Expect(r.has_value(), r ? "" : "call failed: " + r.error().ToString());
    return r.has_value();
  }
  void Note(std::string what) {
    history_.push_back(std::move(what));
    if (history_.size() > 12) history_.pop_front();
  }

  // A read of `key` answered `got` between t0 and t1.
  void Observe(const std::string& key, const std::optional<std::string>& got, int64_t t0, int64_t t1) {
    const Known k = State(key, t0, t1);
    if (got) {
      Expect(k != Known::kDead, "'" + key + "' is present with '" + Short(*got) + "', the model says it is gone");
      if (k != Known::kDead) {
        Expect(model_[key].value == *got,
               "'" + key + "' is '" + Short(*got) + "', the model says '" + Short(model_[key].value) + "'");
      }
    } else {
      Expect(k != Known::kAlive, "'" + key + "' is missing, the model holds '" + Short(model_[key].value) + "'");
      model_.erase(key);
    }
  }
  static std::string Short(const std::string& v) { return v.size() <= 24 ? v : v.substr(0, 24) + "..."; }

  void Step(Client& c, const char* transport) {
    ++ops_;
    const int64_t t0 = WallMs();
    switch (Pick(20)) {
      case 0:
      case 1:
      case 2:
      case 3: {  // GET
        const std::string key = AnyKey();
        Note(std::string("GET ") + key + " over " + transport);
        auto v = c.Get(key);
        if (Ok(v)) Observe(key, *v, t0, WallMs());
        break;
      }
      case 4:
      case 5:
      case 6: {  // SET, plain, NX or XX, maybe with a TTL
        const std::string key = StringKey(), value = Value();
        SetOptions o;
        o.ttl = Ttl();
        const uint64_t cond = Pick(4);
        o.condition = cond == 0   ? SetCondition::kIfAbsent
                      : cond == 1 ? SetCondition::kIfPresent
                                  : SetCondition::kAlways;
        Note("SET " + key + " " + Short(value) + " ttl " + std::to_string(o.ttl.count()) + " cond " +
             std::to_string(cond) + " over " + transport);
        auto stored = c.Set(key, value, o);
        if (!Ok(stored)) break;
        const int64_t t1 = WallMs();
        const Known k = State(key, t0, t1);
        const auto [lo, hi] = Deadline(o.ttl, t0, t1);
        if (o.condition == SetCondition::kAlways) {
          Expect(*stored, "a plain SET of '" + key + "' reported not stored");
          model_[key] = Entry{value, lo, hi};
        } else if (o.condition == SetCondition::kIfAbsent) {
          if (*stored) {
            Expect(k != Known::kAlive, "SET NX stored '" + key + "', which the model holds");
            model_[key] = Entry{value, lo, hi};
          } else {
            Expect(k != Known::kDead, "SET NX refused '" + key + "', which the model says is absent");
          }
        } else {
          if (*stored) {
            Expect(k != Known::kDead, "SET XX stored '" + key + "', which the model says is absent");
            model_[key] = Entry{value, lo, hi};
          } else {
            Expect(k != Known::kAlive, "SET XX refused '" + key + "', which the model holds");
            model_.erase(key);
          }
        }
        break;
      }
      case 7: {  // DEL
        const std::string key = AnyKey();
        Note("DEL " + key + " over " + transport);
        auto deleted = c.Del(key);
        if (!Ok(deleted)) break;
        const Known k = State(key, t0, WallMs());
        Expect(*deleted ? k != Known::kDead : k != Known::kAlive,
               "DEL '" + key + "' answered " + (*deleted ? "deleted" : "absent") + " against the model");
        model_.erase(key);
        break;
      }
      case 8: {  // EXISTS
        const std::string key = AnyKey();
        Note("EXISTS " + key + " over " + transport);
        auto exists = c.Exists(key);
        if (!Ok(exists)) break;
        const Known k = State(key, t0, WallMs());
        Expect(*exists ? k != Known::kDead : k != Known::kAlive,
               "EXISTS '" + key + "' answered " + (*exists ? "true" : "false") + " against the model");
        if (!*exists) model_.erase(key);
        break;
      }
      case 9:
      case 10:
      case 11: {  // INCR (with a TTL for a new key, sometimes) or DECR
        const std::string key = CounterKey();
        const bool decr = Pick(3) == 0;
        const int64_t delta = 1 + static_cast<int64_t>(Pick(1000));
        const milliseconds ttl = decr ? milliseconds(0) : Ttl();
        Note(std::string(decr ? "DECR " : "INCR ") + key + " by " + std::to_string(delta) + " ttl " +
             std::to_string(ttl.count()) + " over " + transport);
        auto r = decr ? c.Decr(key, delta) : c.Incr(key, delta, ttl);
        if (!Ok(r)) break;
        const int64_t t1 = WallMs();
        const int64_t signed_delta = decr ? -delta : delta;
        const Known k = State(key, t0, t1);
        const bool could_continue = k != Known::kDead && *r == std::stoll(model_[key].value) + signed_delta;
        const bool could_start = k != Known::kAlive && *r == signed_delta;
        Expect(could_continue || could_start, "INCR/DECR of '" + key + "' gave " + std::to_string(*r) +
                                                  " against the model's " +
                                                  (k == Known::kDead ? "absent key" : model_[key].value));
        const auto [lo, hi] = Deadline(ttl, t0, t1);
        Entry next{std::to_string(*r), lo, hi};
        if (could_continue && could_start) {  // both explain the answer: either deadline
          next.lo = std::min(lo, model_[key].lo);
          next.hi = std::max(hi, model_[key].hi);
        } else if (could_continue) {
          next.lo = model_[key].lo;  // an existing key keeps its TTL
          next.hi = model_[key].hi;
        }
        model_[key] = next;
        break;
      }
      case 12: {  // EXPIRE: now, soon, or in an hour
        const std::string key = AnyKey();
        const milliseconds ttl = Pick(4) == 0 ? milliseconds(0) : Pick(2) ? std::chrono::hours(1) : Ttl();
        Note("EXPIRE " + key + " " + std::to_string(ttl.count()) + " over " + transport);
        auto found = c.Expire(key, ttl);
        if (!Ok(found)) break;
        const int64_t t1 = WallMs();
        const Known k = State(key, t0, t1);
        Expect(*found ? k != Known::kDead : k != Known::kAlive,
               "EXPIRE '" + key + "' answered " + (*found ? "found" : "absent") + " against the model");
        if (!*found || ttl.count() == 0) {
          model_.erase(key);
        } else {
          const auto [lo, hi] = Deadline(ttl, t0, t1);
          model_[key].lo = lo;
          model_[key].hi = hi;
        }
        break;
      }
      case 13: {  // TTL
        const std::string key = AnyKey();
        Note("TTL " + key + " over " + transport);
        auto ttl = c.Ttl(key);
        if (!Ok(ttl)) break;
        const int64_t t1 = WallMs();
        const Known k = State(key, t0, t1);
        if (!*ttl) {
          Expect(k != Known::kAlive, "TTL says '" + key + "' is absent, the model holds it");
          model_.erase(key);
          break;
        }
        Expect(k != Known::kDead, "TTL found '" + key + "', which the model says is gone");
        if (k == Known::kDead) break;
        Entry& e = model_[key];
        if (**ttl == Cache::kNoExpiry) {
          Expect(e.hi == kNever, "TTL says '" + key + "' never expires, the model has a deadline");
          e.lo = e.hi = kNever;
        } else {
          // The deadline is now + ms left, now within [t0, t1].
          const int64_t left = (*ttl)->count();
          const int64_t lo = t0 + left - 1, hi = t1 + left + 1;
          Expect(e.lo != kNever && lo <= e.hi && hi >= e.lo,
                 "TTL of '" + key + "' is " + std::to_string(left) + " ms, outside the model's deadline");
          e.lo = std::max(e.lo, lo);
          e.hi = std::min(e.hi, hi);
        }
        break;
      }
      case 14:
      case 15: {  // MGET
        std::vector<std::string> keys;
        for (uint64_t n = 1 + Pick(6); n > 0; --n) keys.push_back(AnyKey());
        Note("MGET of " + std::to_string(keys.size()) + " from " + keys[0] + " over " + transport);
        auto values = c.MGet(keys);
        if (!Ok(values)) break;
        const int64_t t1 = WallMs();
        Expect(values->size() == keys.size(), "MGET answered " + std::to_string(values->size()) + " values");
        for (size_t i = 0; i < keys.size() && i < values->size(); ++i) Observe(keys[i], (*values)[i], t0, t1);
        break;
      }
      case 16:
      case 17: {  // MSET
        std::vector<std::pair<std::string, std::string>> items;
        for (uint64_t n = 1 + Pick(5); n > 0; --n) items.emplace_back(StringKey(), Value());
        Note("MSET of " + std::to_string(items.size()) + " from " + items[0].first + " over " + transport);
        if (!Ok(c.MSet(items))) break;
        for (const auto& [k, v] : items) model_[k] = Entry{v, kNever, kNever};  // the last of a repeated key wins
        break;
      }
      case 18: {  // SET of a counter (an integer value, maybe with a TTL)
        const std::string key = CounterKey();
        const std::string value = std::to_string(static_cast<int64_t>(Pick(2000000)) - 1000000);
        SetOptions o;
        o.ttl = Ttl();
        Note("SET " + key + " " + value + " over " + transport);
        if (!Ok(c.Set(key, value, o))) break;
        const auto [lo, hi] = Deadline(o.ttl, t0, WallMs());
        model_[key] = Entry{value, lo, hi};
        break;
      }
      default: {  // a page of SCAN from the start: what it lists is live
        Note(std::string("SCAN page over ") + transport);
        auto page = c.Scan(0, "k:*", 32);
        if (!Ok(page)) break;
        for (const std::string& k : page->keys) {
          Expect(k.rfind("k:", 0) == 0, "SCAN k:* listed '" + k + "'");
          Expect(State(k, t0, kNever) != Known::kDead, "SCAN listed '" + k + "', which the model says is gone");
        }
        break;
      }
    }
  }

  const bool may_evict_;
  const uint64_t seed_;
  std::mt19937_64 rng_;
  std::map<std::string, Entry> model_;
  std::deque<std::string> history_;
  uint64_t ops_ = 0;
  bool failed_ = false;
};

std::unique_ptr<Client> Connect(const std::string& endpoint) {
  ClientOptions o;
  o.timeout = std::chrono::seconds(5);  // a loaded machine must not turn an INCR into an unknown
  auto c = Client::Connect(endpoint, o);
  EXPECT_TRUE(c.has_value()) << c.error().ToString();
  return c ? std::move(*c) : nullptr;
}

// Three phases of random operations, with a SIGTERM restart and a kill -9
// restart between them; after each restart, every key of the model is read.
void RunAgainstTheModel(const std::vector<std::string>& daemon_args, bool may_evict) {
  const uint64_t seed = SeedFromEnvironment();
  std::cout << "seed " << seed << " (CACHET_MODEL_SEED=" << seed << " replays this run)" << std::endl;
  ::testing::Test::RecordProperty("seed", std::to_string(seed));
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(40);
  DaemonProcess daemon(daemon_args);
  ASSERT_TRUE(daemon.Start());
  const std::string tcp = daemon.tcp();
  auto ipc_client = Connect(daemon.ipc());
  auto tcp_client = Connect(tcp);
  ASSERT_TRUE(ipc_client && tcp_client);
  ASSERT_TRUE(ipc_client->ReadsSharedMemory());
  WireModel model(may_evict, seed);
  const int ops = OpsPerPhase();

  ASSERT_TRUE(model.Run(*ipc_client, *tcp_client, ops, deadline));
  for (const char* how : {"SIGTERM", "kill -9"}) {
    SCOPED_TRACE(std::string("after a restart with ") + how);
    if (std::string(how) == "SIGTERM") {
      ASSERT_EQ(daemon.Stop(), 0);
    } else {
      ASSERT_EQ(daemon.Kill(), 128 + SIGKILL);
    }
    ASSERT_TRUE(daemon.Start(tcp));
    ASSERT_NE(daemon.log().find("warm restart"), std::string::npos) << daemon.log();
    for (Client* c : {ipc_client.get(), tcp_client.get()}) {
      ASSERT_TRUE(testing::WaitUntil([&] { return c->Ping().has_value(); })) << c->endpoint();
    }
    ASSERT_TRUE(model.VerifyAll(*tcp_client, "tcp"));
    ASSERT_TRUE(model.VerifyAll(*ipc_client, "ipc"));
    ASSERT_TRUE(model.Run(*ipc_client, *tcp_client, ops, deadline));
  }
  ASSERT_TRUE(model.VerifyAll(*ipc_client, "ipc"));
  const int64_t evictions = testing::StatOf(*tcp_client, "evictions");
  std::cout << model.ops_done() << " operations, " << evictions << " evictions, " << model.model().size()
            << " keys in the model at the end" << std::endl;
  EXPECT_GT(model.ops_done(), 300u) << "the run was cut short by its time limit";
  if (may_evict) {
    EXPECT_GT(evictions, 0) << "a small cache that never evicted tests nothing more than a large one";
  } else {
    EXPECT_EQ(evictions, 0);
  }
}

TEST(WireModelTest, LargeCacheAgreesExactlyAcrossRestarts) { RunAgainstTheModel({"--capacity", "16MiB"}, false); }

TEST(WireModelTest, SmallCacheNeverReturnsAWrongValueAcrossRestarts) {
  // 128 KiB of items against about 3 MB written: evictions every few writes.
  RunAgainstTheModel({"--capacity", "128KiB", "--max-value-size", "4KiB", "--policy", "s3fifo"}, true);
}

TEST(WireModelTest, SmallClockCacheNeverReturnsAWrongValueAcrossRestarts) {
  RunAgainstTheModel({"--capacity", "128KiB", "--max-value-size", "4KiB", "--policy", "clock"}, true);
}

TEST(WireModelTest, SmallFifoCacheNeverReturnsAWrongValueAcrossRestarts) {
  RunAgainstTheModel({"--capacity", "128KiB", "--max-value-size", "4KiB", "--policy", "fifo"}, true);
}

}  // namespace
}  // namespace cachet
