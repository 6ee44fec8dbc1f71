// Operations, limits and statistics of cachet::Cache, each run against a
// private and a named segment (one code serves both).
#include "cachet/cache.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <stdexcept>

#include "test_util.h"

namespace cachet {
namespace {

using std::chrono::milliseconds;

enum class Backing { kPrivate, kNamed };

class CacheTest : public ::testing::TestWithParam<Backing> {
 protected:
  void SetUp() override { cache_ = Make(DefaultOptions()); }
  void TearDown() override {
    cache_.reset();
    if (!name_.empty()) (void)Cache::RemoveNamed(name_);
  }

  static CacheOptions DefaultOptions() {
    CacheOptions o;
    o.capacity_bytes = 1 << 20;
    o.max_key_size = 64;
    o.max_value_size = 4096;
    return o;
  }

  std::unique_ptr<Cache> Make(const CacheOptions& options) {
    cache_.reset();
    if (!name_.empty()) (void)Cache::RemoveNamed(name_);
    Result<std::unique_ptr<Cache>> made = Cache::CreatePrivate(options, clock_);
    if (GetParam() == Backing::kNamed) {
      name_ = testing::UniqueSegmentName("ops");
      made = Cache::CreateNamed(name_, options, clock_);
    }
    EXPECT_TRUE(made.has_value()) << made.error().ToString();
    return std::move(*made);
  }

  FakeClock clock_;
  std::string name_;
  std::unique_ptr<Cache> cache_;
};

TEST_P(CacheTest, GetOfMissingKeyIsMiss) {
  EXPECT_EQ(cache_->Get("absent"), std::nullopt);
  EXPECT_FALSE(cache_->Contains("absent"));
}

TEST_P(CacheTest, SetThenGetReturnsValue) {
  ASSERT_TRUE(cache_->Set("k", "v").value());
  EXPECT_EQ(cache_->Get("k"), "v");
  EXPECT_TRUE(cache_->Contains("k"));
}

TEST_P(CacheTest, ValuesAreByteStrings) {
  const std::string key("a\0b", 3);
  const std::string value("\0\xff\x01zz\0", 6);
  ASSERT_TRUE(cache_->Set(key, value).has_value());
  EXPECT_EQ(cache_->Get(key), value);
  EXPECT_EQ(cache_->Get(std::string("a\0c", 3)), std::nullopt);
}

TEST_P(CacheTest, EmptyValueIsStoredAndDistinctFromMiss) {
  ASSERT_TRUE(cache_->Set("empty", "").has_value());
  EXPECT_EQ(cache_->Get("empty"), std::string());
}

TEST_P(CacheTest, OverwriteReplacesValueAndKeepsOneEntry) {
  ASSERT_TRUE(cache_->Set("k", "first").has_value());
  ASSERT_TRUE(cache_->Set("k", "a much longer second value").has_value());
  ASSERT_TRUE(cache_->Set("k", "3").has_value());
  EXPECT_EQ(cache_->Get("k"), "3");
  EXPECT_EQ(cache_->Size(), 1u);
}

TEST_P(CacheTest, ValuesOfEverySizeUpToTheLimitRoundTrip) {
  for (size_t n : {0, 1, 7, 8, 9, 15, 16, 17, 100, 1000, 4095, 4096}) {
    const std::string key = "size" + std::to_string(n);
    std::string value(n, '\0');
    for (size_t i = 0; i < n; ++i) value[i] = static_cast<char>('a' + (i * 7 + n) % 26);
    ASSERT_TRUE(cache_->Set(key, value).has_value()) << n;
    EXPECT_EQ(cache_->Get(key), value) << n;
  }
}

TEST_P(CacheTest, GetIntoReusesBuffer) {
  ASSERT_TRUE(cache_->Set("k", "value").has_value());
  std::string out = "previous content that is longer";
  EXPECT_TRUE(cache_->GetInto("k", &out));
  EXPECT_EQ(out, "value");
  EXPECT_FALSE(cache_->GetInto("nope", &out));
}

TEST_P(CacheTest, EraseRemovesKey) {
  ASSERT_TRUE(cache_->Set("k", "v").has_value());
  EXPECT_TRUE(cache_->Erase("k"));
  EXPECT_EQ(cache_->Get("k"), std::nullopt);
  EXPECT_FALSE(cache_->Erase("k"));
  EXPECT_EQ(cache_->Size(), 0u);
}

TEST_P(CacheTest, SetIfAbsentOnlyStoresNewKeys) {
  SetOptions nx;
  nx.condition = SetCondition::kIfAbsent;
  EXPECT_TRUE(cache_->Set("k", "1", nx).value());
  EXPECT_FALSE(cache_->Set("k", "2", nx).value());
  EXPECT_EQ(cache_->Get("k"), "1");
}

TEST_P(CacheTest, SetIfPresentOnlyReplacesExistingKeys) {
  SetOptions xx;
  xx.condition = SetCondition::kIfPresent;
  EXPECT_FALSE(cache_->Set("k", "1", xx).value());
  EXPECT_EQ(cache_->Get("k"), std::nullopt);
  ASSERT_TRUE(cache_->Set("k", "1").has_value());
  EXPECT_TRUE(cache_->Set("k", "2", xx).value());
  EXPECT_EQ(cache_->Get("k"), "2");
}

TEST_P(CacheTest, OversizedKeyIsRefusedAndChangesNothing) {
  ASSERT_TRUE(cache_->Set(std::string(64, 'k'), "fits").has_value());
  auto r = cache_->Set(std::string(65, 'k'), "v");
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, ErrorCode::kKeyTooLarge);
  EXPECT_NE(r.error().message.find("max_key_size"), std::string::npos) << r.error().message;
  EXPECT_EQ(cache_->Size(), 1u);
  EXPECT_EQ(cache_->Stats().sets, 1u);
}

TEST_P(CacheTest, EmptyKeyIsRefused) {
  auto r = cache_->Set("", "v");
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, ErrorCode::kInvalidArgument);
}

TEST_P(CacheTest, OversizedValueIsRefusedNotTruncated) {
  ASSERT_TRUE(cache_->Set("k", "old").has_value());
  auto r = cache_->Set("k", std::string(4097, 'v'));
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, ErrorCode::kValueTooLarge);
  EXPECT_NE(r.error().message.find("4097"), std::string::npos) << r.error().message;
  EXPECT_EQ(cache_->Get("k"), "old");
}

TEST_P(CacheTest, ClearRemovesEverything) {
  for (int i = 0; i < 100; ++i) ASSERT_TRUE(cache_->Set("k" + std::to_string(i), "v").has_value());
  cache_->Clear();
  EXPECT_EQ(cache_->Size(), 0u);
  EXPECT_EQ(cache_->Stats().live_bytes, 0u);
  for (int i = 0; i < 100; ++i) EXPECT_FALSE(cache_->Contains("k" + std::to_string(i)));
  ASSERT_TRUE(cache_->Set("after", "clear").has_value());
  EXPECT_EQ(cache_->Get("after"), "clear");
}

TEST_P(CacheTest, SizeCountsLiveEntries) {
  for (int i = 0; i < 50; ++i) ASSERT_TRUE(cache_->Set("k" + std::to_string(i), "v").has_value());
  EXPECT_EQ(cache_->Size(), 50u);
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(cache_->Erase("k" + std::to_string(i)));
  EXPECT_EQ(cache_->Size(), 30u);
}

TEST_P(CacheTest, StatsCountOperations) {
  ASSERT_TRUE(cache_->Set("a", "12345").has_value());
  ASSERT_TRUE(cache_->Set("b", "x").has_value());
  (void)cache_->Get("a");
  (void)cache_->Get("a");
  (void)cache_->Get("zzz");
  ASSERT_TRUE(cache_->Erase("b"));
  const CacheStats s = cache_->Stats();
  EXPECT_EQ(s.hits, 2u);
  EXPECT_EQ(s.misses, 1u);
  EXPECT_EQ(s.sets, 2u);
  EXPECT_EQ(s.erases, 1u);
  EXPECT_EQ(s.entries, 1u);
  EXPECT_EQ(s.live_bytes, 32u);  // 24-byte header + "a" + "12345", rounded up to 8
  EXPECT_EQ(s.capacity_bytes, 1u << 20);
  EXPECT_GT(s.segment_bytes, s.capacity_bytes);
  EXPECT_EQ(s.generation, 1u);
}

TEST_P(CacheTest, ManyKeysAllReadable) {
  for (int i = 0; i < 5000; ++i) {
    ASSERT_TRUE(cache_->Set("key:" + std::to_string(i), "value:" + std::to_string(i)).has_value());
  }
  for (int i = 0; i < 5000; ++i) ASSERT_EQ(cache_->Get("key:" + std::to_string(i)), "value:" + std::to_string(i));
  EXPECT_EQ(cache_->Size(), 5000u);
}

TEST_P(CacheTest, ChurnWithErasesAndUpdatesKeepsEveryLiveKey) {
  // Erases and updates leave dead space in the logs; passing over it must
  // neither lose live keys nor evict while the cache is under capacity.
  for (int round = 0; round < 40; ++round) {
    for (int i = 0; i < 500; ++i) {
      ASSERT_TRUE(cache_->Set("k" + std::to_string(i), std::string(100, char('a' + round % 26))).has_value());
    }
    for (int i = 0; i < 500; i += 3) ASSERT_TRUE(cache_->Erase("k" + std::to_string(i)));
  }
  for (int i = 0; i < 500; ++i) {
    auto v = cache_->Get("k" + std::to_string(i));
    if (i % 3 == 0) {
      EXPECT_EQ(v, std::nullopt);
    } else {
      EXPECT_EQ(v, std::string(100, char('a' + 39 % 26))) << i;
    }
  }
  EXPECT_EQ(cache_->Stats().evictions, 0u);
}

TEST_P(CacheTest, IncrCreatesCountsAndKeepsTtl) {
  EXPECT_EQ(cache_->Incr("n", 5, milliseconds(1000)).value(), 5);
  EXPECT_EQ(cache_->Incr("n", -7).value(), -2);
  EXPECT_EQ(cache_->Get("n"), "-2");
  clock_.Advance(milliseconds(999));
  EXPECT_EQ(cache_->Incr("n", 1).value(), -1);
  clock_.Advance(milliseconds(1));
  EXPECT_FALSE(cache_->Contains("n"));  // the TTL from creation still applied
  EXPECT_EQ(cache_->Incr("n", 1).value(), 1);
}

TEST_P(CacheTest, IncrOfNonIntegerOrOverflowFailsAndChangesNothing) {
  ASSERT_TRUE(cache_->Set("s", "12abc").has_value());
  auto r = cache_->Incr("s", 1);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, ErrorCode::kNotInteger);
  EXPECT_EQ(cache_->Get("s"), "12abc");
  ASSERT_TRUE(cache_->Set("big", "9223372036854775807").has_value());
  auto o = cache_->Incr("big", 1);
  ASSERT_FALSE(o.has_value());
  EXPECT_EQ(o.error().code, ErrorCode::kOverflow);
  EXPECT_EQ(cache_->Get("big"), "9223372036854775807");
}

TEST_P(CacheTest, ScanWalksEveryKeyOnceWithPattern) {
  for (int i = 0; i < 300; ++i) ASSERT_TRUE(cache_->Set("user:" + std::to_string(i), "v").has_value());
  for (int i = 0; i < 50; ++i) ASSERT_TRUE(cache_->Set("job:" + std::to_string(i), "v").has_value());
  std::vector<std::string> seen;
  uint64_t cursor = 0;
  int pages = 0;
  do {
    Cache::ScanPage page = cache_->Scan(cursor, "job:*", 16);
    seen.insert(seen.end(), page.keys.begin(), page.keys.end());
    cursor = page.cursor;
    ++pages;
  } while (cursor != 0 && pages < 100000);
  std::sort(seen.begin(), seen.end());
  ASSERT_EQ(seen.size(), 50u);
  EXPECT_EQ(std::adjacent_find(seen.begin(), seen.end()), seen.end());
  EXPECT_GT(pages, 1);
  for (const std::string& k : seen) EXPECT_EQ(k.rfind("job:", 0), 0u);
}

INSTANTIATE_TEST_SUITE_P(Backings, CacheTest, ::testing::Values(Backing::kPrivate, Backing::kNamed),
                         [](const auto& param_info) {
                           return param_info.param == Backing::kPrivate ? "Private" : "Named";
                         });

TEST(CacheOptionsTest, RejectsCapacitySmallerThanOneItem) {
  CacheOptions o;
  o.capacity_bytes = 1000;
  o.max_value_size = 4096;
  auto ok = o.Validate();
  ASSERT_FALSE(ok.has_value());
  EXPECT_EQ(ok.error().code, ErrorCode::kInvalidArgument);
  EXPECT_NE(ok.error().message.find("capacity_bytes"), std::string::npos);
  EXPECT_FALSE(Cache::CreatePrivate(o).has_value());
}

TEST(CacheOptionsTest, RejectsKeyLimitOutOfRange) {
  CacheOptions o;
  o.max_key_size = 0;
  EXPECT_FALSE(o.Validate().has_value());
  o.max_key_size = 70000;
  EXPECT_FALSE(o.Validate().has_value());
}

TEST(CacheOptionsTest, RejectsSegmentsOverTheAddressableSize) {
  CacheOptions o;
  o.capacity_bytes = 64ull << 30;
  auto ok = o.Validate();
  ASSERT_FALSE(ok.has_value());
  EXPECT_NE(ok.error().message.find("MiB"), std::string::npos);
}

TEST(CacheOptionsTest, RejectsCapacityThatWouldOverflowTheGeometry) {
  CacheOptions o;
  o.capacity_bytes = 0xE38E38E38E38E3A0ull;
  o.max_entries = 1000;
  auto ok = o.Validate();
  ASSERT_FALSE(ok.has_value());
  EXPECT_NE(ok.error().message.find("capacity_bytes"), std::string::npos);
}

TEST_P(CacheTest, ContainsAndTtlDoNotCountAsReads) {
  ASSERT_TRUE(cache_->Set("k", "v").has_value());
  EXPECT_TRUE(cache_->Contains("k"));
  EXPECT_FALSE(cache_->Contains("nope"));
  EXPECT_TRUE(cache_->Ttl("k").has_value());
  std::string value;
  EXPECT_FALSE(cache_->Peek("nope", &value).has_value());
  EXPECT_EQ(cache_->Stats().hits, 0u);
  EXPECT_EQ(cache_->Stats().misses, 0u);
}

TEST_P(CacheTest, PeekReadsValueAndTtlTogetherWithoutCountingAReadOrAnExpiredKey) {
  SetOptions with_ttl;
  with_ttl.ttl = std::chrono::milliseconds(60'000);
  ASSERT_TRUE(cache_->Set("t", "timed", with_ttl).has_value());
  ASSERT_TRUE(cache_->Set("p", "forever").has_value());
  std::string value;
  auto ttl = cache_->Peek("t", &value);
  ASSERT_TRUE(ttl.has_value());
  EXPECT_EQ(value, "timed");
  EXPECT_GT(ttl->count(), 59'000);
  EXPECT_LE(ttl->count(), 60'000);
  ttl = cache_->Peek("p", &value);
  ASSERT_TRUE(ttl.has_value());
  EXPECT_EQ(value, "forever");
  EXPECT_EQ(*ttl, Cache::kNoExpiry);
  ASSERT_TRUE(cache_->Expire("t", std::chrono::milliseconds(0)));
  EXPECT_FALSE(cache_->Peek("t", &value).has_value());
  EXPECT_EQ(cache_->Stats().hits, 0u);
  EXPECT_EQ(cache_->Stats().misses, 0u);
}

// A clock that throws on its n-th reading from now on, as a user clock might.
class ThrowingClock : public Clock {
 public:
  int64_t NowMs() const override {
    if (countdown_ > 0 && --countdown_ == 0) throw std::runtime_error("clock broke");
    return 1'700'000'000'000;
  }
  void ThrowOnCall(int n) const { countdown_ = n; }

 private:
  mutable int countdown_ = 0;
};

TEST(CacheFailureTest, ExceptionInsideAWriteIsReportedAndLeavesCountsConsistent) {
  ThrowingClock clock;
  CacheOptions o;
  o.capacity_bytes = 256;  // eight items of 24 + 2 + 1 bytes, rounded to 32
  o.max_key_size = 16;
  o.max_value_size = 64;
  o.policy = EvictionPolicy::kFifo;
  auto cache = std::move(*Cache::CreatePrivate(o, clock));
  for (int i = 0; i < 8; ++i) ASSERT_TRUE(cache->Set("k" + std::to_string(i), "v").has_value());
  // Replacing a key with a larger value in a full cache: the second clock
  // reading happens while making room, after the old item stopped counting.
  clock.ThrowOnCall(2);
  auto r = cache->Set("k3", std::string(40, 'n'));
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, ErrorCode::kInternal);
  EXPECT_NE(r.error().message.find("clock broke"), std::string::npos);
  size_t present = 0;
  for (int i = 0; i < 8; ++i) present += cache->Contains("k" + std::to_string(i));
  EXPECT_EQ(cache->Size(), present);
  EXPECT_EQ(cache->Stats().repairs, 1u);
  ASSERT_TRUE(cache->Set("k3", "after").has_value());
  EXPECT_EQ(cache->Get("k3"), "after");
}

TEST(CacheOptionsTest, ParsesPolicyNames) {
  EXPECT_EQ(ParseEvictionPolicy("fifo").value(), EvictionPolicy::kFifo);
  EXPECT_EQ(ParseEvictionPolicy("LRU").value(), EvictionPolicy::kClock);
  EXPECT_EQ(ParseEvictionPolicy("clock").value(), EvictionPolicy::kClock);
  EXPECT_EQ(ParseEvictionPolicy("s3-fifo").value(), EvictionPolicy::kS3Fifo);
  auto bad = ParseEvictionPolicy("lfu");
  ASSERT_FALSE(bad.has_value());
  EXPECT_NE(bad.error().message.find("lfu"), std::string::npos);
}

}  // namespace
}  // namespace cachet
