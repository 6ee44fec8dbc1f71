// Randomized operations against a model: a std::map of keys to values and
// deadlines, driven by the same FakeClock as the cache. Seeded and
// reproducible: each test prints its seed; CACHET_MODEL_SEED=<n> replays it.
//
// A cache may drop keys (eviction), so the model accepts a miss and then
// forgets the key; it never accepts a value other than the last one
// written, a miss right after a Set of a value that fits, a key coming back
// after it was dropped, a wrong TTL, or counts (entries, live bytes) that
// disagree with the keys the cache holds. Sizes go from 4 KiB, where the logs
// lap every few dozen writes, to 1 MiB; every eviction policy; with a
// concurrent reader; and with writers in other processes killed mid-burst.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <optional>
#include <ostream>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "cachet/cache.h"
#include "test_util.h"

namespace cachet {
namespace {

// Operations per test are each shape's `ops` divided by this.
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
constexpr int kOpsDivisor = 10;
#else
constexpr int kOpsDivisor = 1;
#endif

uint64_t SeedFor(const std::string& test) {
  if (const char* env = std::getenv("CACHET_MODEL_SEED")) return std::strtoull(env, nullptr, 10);
  const uint64_t seed = std::random_device{}() ^ (uint64_t{std::random_device{}()} << 32);
  std::printf("%s: seed %llu (replay with CACHET_MODEL_SEED=%llu)\n", test.c_str(),
              static_cast<unsigned long long>(seed), static_cast<unsigned long long>(seed));
  return seed;
}

// Self-checking values of any length: "key|seq|" then filler derived from
// both, cut to the length. A value shorter than its prefix is the prefix cut
// short, and still names at most one (key, seq).
std::string ValueFor(const std::string& key, uint64_t seq, size_t length) {
  std::string v = key + "|" + std::to_string(seq) + "|";
  for (size_t i = v.size(); i < length; ++i) v.push_back(static_cast<char>('a' + (seq * 7 + i) % 26));
  v.resize(length);
  return v;
}

// True if `value` could have been written for `key` by ValueFor (or is a
// decimal integer, which Incr writes).
bool PlausibleFor(const std::string& key, const std::string& value) {
  const auto all_digits = [](const std::string& s) {
    return !s.empty() && s.find_first_not_of("0123456789") == std::string::npos;
  };
  if (all_digits(value) || (value.size() > 1 && value[0] == '-' && all_digits(value.substr(1)))) return true;
  const std::string prefix = key + "|";
  if (value.size() <= prefix.size()) return value == prefix.substr(0, value.size());
  if (value.compare(0, prefix.size(), prefix) != 0) return false;
  const size_t bar = value.find('|', prefix.size());
  if (bar == std::string::npos) return all_digits(value.substr(prefix.size()));  // cut inside the number
  const std::string digits = value.substr(prefix.size(), bar - prefix.size());
  return all_digits(digits) && value == ValueFor(key, std::stoull(digits), value.size());
}

uint64_t ItemBytes(const std::string& key, const std::string& value) {
  return (24 + key.size() + value.size() + 7) / 8 * 8;
}

struct Shape {
  const char* name;
  uint64_t capacity_bytes;
  uint32_t max_value_size;
  int keys;
  int ops;  // about 1 s each, unsanitized
};

// gtest names a parameter by this, not by its bytes.
void PrintTo(const Shape& shape, std::ostream* os) { *os << shape.name; }

struct Entry {
  std::string value;
  int64_t expires_at = 0;  // 0: never
};

class Model {
 public:
  Model(Cache& cache, FakeClock& clock, const Shape& shape, uint64_t seed)
      : cache_(cache), clock_(clock), shape_(shape), rng_(seed) {}

  std::string Key(uint64_t i) const { return "k" + std::to_string(i); }
  std::string RandomKey() { return Key(rng_() % static_cast<uint64_t>(shape_.keys)); }

  // The live entry for `key` in the model, after dropping it if its
  // deadline has passed.
  Entry* Live(const std::string& key) {
    auto it = map_.find(key);
    if (it == map_.end()) return nullptr;
    if (it->second.expires_at != 0 && clock_.NowMs() >= it->second.expires_at) {
      map_.erase(it);
      return nullptr;
    }
    return &it->second;
  }

  // Checks a read of `key` against the model; a miss makes the model forget
  // the key (evicted). Returns false (with a failure) on a disagreement.
  void CheckRead(const std::string& key, const std::optional<std::string>& got, const char* what) {
    Entry* e = Live(key);
    if (got) {
      ASSERT_NE(e, nullptr) << what << ": " << key << " came back after it was dropped or expired";
      ASSERT_EQ(*got, e->value) << what << ": " << key << " holds another value than the last written";
    } else if (e != nullptr) {
      ASSERT_FALSE(pinned_ == key) << what << ": miss of " << key << " right after it was set";
      map_.erase(key);
    }
  }

  // Brings the model in line with what the cache still holds for `key`.
  void Sync(const std::string& key) { CheckRead(key, cache_.Get(key), "sync"); }

  void Step() {
    const uint64_t op = rng_() % 100;
    const std::string key = RandomKey();
    pinned_.clear();
    if (op < 30) {
      SetOp(key);
    } else if (op < 55) {
      CheckRead(key, cache_.Get(key), "Get");
    } else if (op < 60) {
      Sync(key);
      ASSERT_EQ(cache_.Erase(key), Live(key) != nullptr) << "Erase " << key;
      map_.erase(key);
    } else if (op < 67) {
      IncrOp(key);
    } else if (op < 73) {
      ExpireOp(key);
    } else if (op < 78) {
      TtlOp(key);
    } else if (op < 80) {
      Sync(key);
      const bool present = Live(key) != nullptr;
      ASSERT_EQ(cache_.Persist(key), present) << "Persist " << key;
      if (present) map_[key].expires_at = 0;
    } else if (op < 90) {
      clock_.Advance(std::chrono::milliseconds(rng_() % 400));
    } else if (op < 93) {
      (void)cache_.ReclaimExpired(rng_() % 64);
    } else if (op < 94) {
      FullCheck();
    } else {
      CheckRead(key, cache_.Contains(key) ? std::optional<std::string>(Expect(key)) : std::nullopt, "Contains");
    }
  }

  // What Contains' hit means for the model: the model's value, or a marker
  // that fails the comparison if the model has none.
  std::string Expect(const std::string& key) {
    Entry* e = Live(key);
    return e ? e->value : std::string("\x01(absent in the model)");
  }

  void SetOp(const std::string& key) {
    const uint64_t r = rng_();
    // Mostly large values in small caches: that is where logs lap fastest.
    size_t length = r % 4 == 0 ? rng_() % (shape_.max_value_size + 1) : shape_.max_value_size - rng_() % 64;
    const std::string value = ValueFor(key, ++seq_, length);
    SetOptions o;
    if ((r >> 8) % 3 == 0) o.ttl = std::chrono::milliseconds(1 + rng_() % 2000);
    const uint64_t cond = (r >> 16) % 10;
    if (cond >= 7) {
      Sync(key);
      o.condition = cond == 7 ? SetCondition::kIfAbsent : SetCondition::kIfPresent;
    }
    const bool present = Live(key) != nullptr;
    const Result<bool> stored = cache_.Set(key, value, o);
    ASSERT_TRUE(stored.has_value()) << stored.error().ToString();
    if (o.condition == SetCondition::kIfAbsent) {
      ASSERT_EQ(*stored, !present) << "SET NX " << key;
    } else if (o.condition == SetCondition::kIfPresent) {
      ASSERT_EQ(*stored, present) << "SET XX " << key;
    }
    if (!*stored) return;
    map_[key] = Entry{value, o.ttl.count() == 0 ? 0 : clock_.NowMs() + o.ttl.count()};
    pinned_ = key;
    CheckRead(key, cache_.Get(key), "Get after Set");
  }

  void IncrOp(const std::string& key) {
    Sync(key);
    const int64_t delta = static_cast<int64_t>(rng_() % 2001) - 1000;
    Entry* e = Live(key);
    const Result<int64_t> r = cache_.Incr(key, delta);
    if (e == nullptr) {
      ASSERT_TRUE(r.has_value()) << r.error().ToString();
      ASSERT_EQ(*r, delta);
      map_[key] = Entry{std::to_string(delta), 0};
    } else {
      int64_t old = 0;
      bool integer =
          !e->value.empty() && e->value.size() <= 20 && e->value.find_first_not_of("-0123456789") == std::string::npos;
      if (integer) {
        try {
          size_t used = 0;
          old = std::stoll(e->value, &used);
          integer = used == e->value.size();
        } catch (const std::exception&) {
          integer = false;
        }
      }
      if (!integer) {
        ASSERT_FALSE(r.has_value()) << "INCR of a non-integer " << key;
        ASSERT_EQ(r.error().code, ErrorCode::kNotInteger);
        return;
      }
      ASSERT_TRUE(r.has_value()) << r.error().ToString();
      ASSERT_EQ(*r, old + delta);
      e->value = std::to_string(old + delta);
    }
    pinned_ = key;
    CheckRead(key, cache_.Get(key), "Get after Incr");
  }

  void ExpireOp(const std::string& key) {
    Sync(key);
    const int64_t ms = static_cast<int64_t>(rng_() % 1500) - 100;
    const bool present = Live(key) != nullptr;
    ASSERT_EQ(cache_.Expire(key, std::chrono::milliseconds(ms)), present) << "Expire " << key;
    if (!present) return;
    if (ms <= 0) {
      map_.erase(key);
    } else {
      map_[key].expires_at = clock_.NowMs() + ms;
    }
  }

  void TtlOp(const std::string& key) {
    const auto ttl = cache_.Ttl(key);
    Entry* e = Live(key);
    if (!ttl) {
      CheckRead(key, std::nullopt, "Ttl");
      return;
    }
    ASSERT_NE(e, nullptr) << "Ttl: " << key << " came back";
    if (e->expires_at == 0) {
      ASSERT_EQ(*ttl, Cache::kNoExpiry) << key;
    } else {
      ASSERT_EQ(ttl->count(), e->expires_at - clock_.NowMs()) << key;
    }
  }

  // Every key agrees; the counts are the model's; Scan lists the model's keys.
  void FullCheck() {
    (void)cache_.ReclaimExpired(SIZE_MAX);
    const CacheStats s = cache_.Stats();
    std::set<std::string> scanned;
    uint64_t cursor = 0;
    do {
      Cache::ScanPage page = cache_.Scan(cursor, "", 16);
      for (std::string& k : page.keys) scanned.insert(std::move(k));
      cursor = page.cursor;
    } while (cursor != 0);
    for (int i = 0; i < shape_.keys; ++i) {
      Sync(Key(static_cast<uint64_t>(i)));
      if (::testing::Test::HasFatalFailure()) return;
    }
    std::set<std::string> expected;
    uint64_t bytes = 0;
    for (const auto& [k, e] : map_) {
      expected.insert(k);
      bytes += ItemBytes(k, e.value);
    }
    if (scanned != expected) {
      std::string extra;
      std::string missing;
      for (const std::string& k : scanned) {
        if (!expected.count(k)) extra += " '" + k.substr(0, 24) + "'";
      }
      for (const std::string& k : expected) {
        if (!scanned.count(k)) missing += " '" + k + "'";
      }
      FAIL() << "Scan lists keys the model does not hold:" << extra << "; and misses:" << missing;
    }
    ASSERT_EQ(s.entries, map_.size());
    ASSERT_EQ(s.live_bytes, bytes);
    ASSERT_LE(s.live_bytes, shape_.capacity_bytes);
  }

  // After another process wrote: adopt what the cache holds, checking that
  // each value is one that could have been written for its key.
  void Adopt() {
    (void)cache_.ReclaimExpired(SIZE_MAX);
    map_.clear();
    for (int i = 0; i < shape_.keys; ++i) {
      const std::string key = Key(static_cast<uint64_t>(i));
      const auto v = cache_.Get(key);
      if (!v) continue;
      ASSERT_TRUE(PlausibleFor(key, *v)) << key << " holds a value never written for it: " << *v;
      const auto ttl = cache_.Ttl(key);
      ASSERT_TRUE(ttl.has_value());
      map_[key] = Entry{*v, *ttl == Cache::kNoExpiry ? 0 : clock_.NowMs() + ttl->count()};
    }
  }

  std::mt19937_64& rng() { return rng_; }

 private:
  Cache& cache_;
  FakeClock& clock_;
  Shape shape_;
  std::mt19937_64 rng_;
  std::map<std::string, Entry> map_;
  std::string pinned_;  // the key just set: a miss of it is a failure
  uint64_t seq_ = 0;
};

const Shape kShapes[] = {
    {"4KiB", 4 << 10, 256, 40, 200000},     // logs lap every few dozen writes
    {"16KiB", 16 << 10, 1024, 60, 150000},  // values near a quarter of the cache
    {"64KiB", 64 << 10, 512, 400, 60000},   // a few hundred entries
    {"1MiB", 1 << 20, 4096, 2000, 15000},   // mostly fits
};

int OpsFor(const Shape& shape) { return shape.ops / kOpsDivisor; }

using Param = std::tuple<EvictionPolicy, Shape>;

std::string ParamName(const ::testing::TestParamInfo<Param>& info) {
  return std::string(EvictionPolicyName(std::get<0>(info.param))) + "_" + std::get<1>(info.param).name;
}

CacheOptions OptionsFor(const Param& p) {
  CacheOptions o;
  o.policy = std::get<0>(p);
  o.capacity_bytes = std::get<1>(p).capacity_bytes;
  o.max_key_size = 16;
  o.max_value_size = std::get<1>(p).max_value_size;
  return o;
}

class ModelTest : public ::testing::TestWithParam<Param> {
 protected:
  std::string TestName() const { return ::testing::UnitTest::GetInstance()->current_test_info()->name(); }
};

TEST_P(ModelTest, RandomOperationsAgreeWithTheModel) {
  const uint64_t seed = SeedFor(TestName());
  SCOPED_TRACE("seed " + std::to_string(seed));
  FakeClock clock;
  auto cache = std::move(*Cache::CreatePrivate(OptionsFor(GetParam()), clock));
  Model model(*cache, clock, std::get<1>(GetParam()), seed);
  for (int i = 0; i < OpsFor(std::get<1>(GetParam())) && !HasFatalFailure(); ++i) model.Step();
  if (!HasFatalFailure()) model.FullCheck();
}

// A reader thread reads all the while; every value it sees must be one
// written for its key. Its reads also set the reference bits the CLOCK and
// S3-FIFO policies act on.
TEST_P(ModelTest, RandomOperationsAgreeWithTheModelUnderAConcurrentReader) {
  const uint64_t seed = SeedFor(TestName());
  SCOPED_TRACE("seed " + std::to_string(seed));
  FakeClock clock;
  auto cache = std::move(*Cache::CreatePrivate(OptionsFor(GetParam()), clock));
  Model model(*cache, clock, std::get<1>(GetParam()), seed);
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> reads{0};
  std::atomic<uint64_t> bad{0};
  std::thread reader([&] {
    std::mt19937_64 rng(seed + 1);
    std::string v;
    while (!stop.load(std::memory_order_relaxed)) {
      const std::string key = "k" + std::to_string(rng() % static_cast<uint64_t>(std::get<1>(GetParam()).keys));
      if (cache->GetInto(key, &v) && !PlausibleFor(key, v)) bad.fetch_add(1);
      reads.fetch_add(1, std::memory_order_relaxed);
    }
  });
  for (int i = 0; i < OpsFor(std::get<1>(GetParam())) && !HasFatalFailure(); ++i) model.Step();
  if (!HasFatalFailure()) model.FullCheck();
  stop = true;
  reader.join();
  EXPECT_EQ(bad.load(), 0u);
  EXPECT_GT(reads.load(), 0u);
}

// Bursts of writes from forked writers killed by SIGKILL at a random moment,
// between rounds of model-checked operations: the next writer repairs, and
// the model adopts what the dead writer left after checking each value.
TEST_P(ModelTest, RandomOperationsAgreeWithTheModelAcrossKilledWriters) {
  const uint64_t seed = SeedFor(TestName());
  SCOPED_TRACE("seed " + std::to_string(seed));
  FakeClock clock;
  const std::string name = testing::UniqueSegmentName("model");
  auto made = Cache::CreateNamed(name, OptionsFor(GetParam()), clock);
  ASSERT_TRUE(made.has_value()) << made.error().ToString();
  std::unique_ptr<Cache> cache = std::move(*made);
  Model model(*cache, clock, std::get<1>(GetParam()), seed);
  const int keys = std::get<1>(GetParam()).keys;
  constexpr int kRounds = 8;
  for (int round = 0; round < kRounds && !HasFatalFailure(); ++round) {
    for (int i = 0; i < OpsFor(std::get<1>(GetParam())) / kRounds / 2 && !HasFatalFailure(); ++i) model.Step();
    if (HasFatalFailure()) break;
    const uint64_t writer_seed = model.rng()();
    const uint64_t sets_before = cache->Stats().sets;
    const pid_t writer = fork();
    if (writer == 0) {
      testing::DieWithParent();
      auto mine = Cache::OpenNamed(name, clock);
      if (!mine) _exit(10);
      std::mt19937_64 rng(writer_seed);
      for (uint64_t seq = 1;; ++seq) {
        const std::string key = "k" + std::to_string(rng() % static_cast<uint64_t>(keys));
        const size_t length = rng() % (std::get<1>(GetParam()).max_value_size + 1);
        if (rng() % 8 == 0) {
          (void)(*mine)->Erase(key);
        } else if (!(*mine)->Set(key, ValueFor(key, (uint64_t{1} << 40) + seq, length)).has_value()) {
          _exit(11);
        }
      }
    }
    ASSERT_GT(writer, 0);
    const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (cache->Stats().sets == sets_before && std::chrono::steady_clock::now() < end) usleep(100);
    usleep(static_cast<useconds_t>(model.rng()() % 2000));
    ASSERT_EQ(kill(writer, SIGKILL), 0);
    int status = 0;
    ASSERT_EQ(waitpid(writer, &status, 0), writer);
    ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << "the writer exited by itself: " << status;
    (void)cache->Repair();
    model.Adopt();
    if (!HasFatalFailure()) model.FullCheck();
  }
  cache.reset();
  (void)Cache::RemoveNamed(name);
}

INSTANTIATE_TEST_SUITE_P(PoliciesAndSizes, ModelTest,
                         ::testing::Combine(::testing::Values(EvictionPolicy::kFifo, EvictionPolicy::kClock,
                                                              EvictionPolicy::kS3Fifo),
                                            ::testing::ValuesIn(kShapes)),
                         ParamName);

}  // namespace
}  // namespace cachet
