// Time to live: expiry at the deadline, TTL updates, and active reclaim.
// Time is a FakeClock: no test sleeps.
#include <gtest/gtest.h>

#include "cachet/cache.h"

namespace cachet {
namespace {

using std::chrono::milliseconds;

class TtlTest : public ::testing::Test {
 protected:
  void SetUp() override {
    CacheOptions o;
    o.capacity_bytes = 1 << 20;
    o.max_value_size = 1024;
    cache_ = std::move(*Cache::CreatePrivate(o, clock_));
  }
  SetOptions Ttl(int64_t ms) {
    SetOptions s;
    s.ttl = milliseconds(ms);
    return s;
  }
  FakeClock clock_;
  std::unique_ptr<Cache> cache_;
};

TEST_F(TtlTest, KeyLivesUntilJustBeforeDeadline) {
  ASSERT_TRUE(cache_->Set("k", "v", Ttl(1000)).has_value());
  clock_.Advance(milliseconds(999));
  EXPECT_EQ(cache_->Get("k"), "v");
  EXPECT_EQ(cache_->Ttl("k"), milliseconds(1));
}

TEST_F(TtlTest, KeyExpiresExactlyAtDeadline) {
  ASSERT_TRUE(cache_->Set("k", "v", Ttl(1000)).has_value());
  clock_.Advance(milliseconds(1000));
  EXPECT_EQ(cache_->Get("k"), std::nullopt);
  EXPECT_FALSE(cache_->Contains("k"));
  EXPECT_EQ(cache_->Ttl("k"), std::nullopt);
}

TEST_F(TtlTest, ExpiredReadCountsAsMiss) {
  ASSERT_TRUE(cache_->Set("k", "v", Ttl(10)).has_value());
  clock_.Advance(milliseconds(10));
  (void)cache_->Get("k");
  EXPECT_EQ(cache_->Stats().hits, 0u);
  EXPECT_EQ(cache_->Stats().misses, 1u);
}

TEST_F(TtlTest, ZeroTtlMeansNoExpiry) {
  ASSERT_TRUE(cache_->Set("k", "v", Ttl(0)).has_value());
  clock_.Advance(milliseconds(365LL * 24 * 3600 * 1000));
  EXPECT_EQ(cache_->Get("k"), "v");
  EXPECT_EQ(cache_->Ttl("k"), Cache::kNoExpiry);
}

TEST_F(TtlTest, NegativeOrHugeTtlIsRefused) {
  auto r = cache_->Set("k", "v", Ttl(-1));
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, ErrorCode::kInvalidArgument);
  EXPECT_FALSE(cache_->Set("k", "v", Ttl(Cache::kMaxTtl.count() + 1)).has_value());
  EXPECT_FALSE(cache_->Contains("k"));
}

TEST_F(TtlTest, UpdateResetsTtl) {
  ASSERT_TRUE(cache_->Set("k", "v1", Ttl(1000)).has_value());
  clock_.Advance(milliseconds(900));
  ASSERT_TRUE(cache_->Set("k", "v2", Ttl(1000)).has_value());
  clock_.Advance(milliseconds(900));
  EXPECT_EQ(cache_->Get("k"), "v2");
  clock_.Advance(milliseconds(100));
  EXPECT_EQ(cache_->Get("k"), std::nullopt);
}

TEST_F(TtlTest, UpdateWithoutTtlMakesKeyPersistent) {
  ASSERT_TRUE(cache_->Set("k", "v1", Ttl(1000)).has_value());
  ASSERT_TRUE(cache_->Set("k", "v2").has_value());
  clock_.Advance(milliseconds(5000));
  EXPECT_EQ(cache_->Get("k"), "v2");
}

TEST_F(TtlTest, SetIfAbsentSucceedsOverExpiredKey) {
  ASSERT_TRUE(cache_->Set("k", "old", Ttl(10)).has_value());
  clock_.Advance(milliseconds(10));
  SetOptions nx;
  nx.condition = SetCondition::kIfAbsent;
  EXPECT_TRUE(cache_->Set("k", "new", nx).value());
  EXPECT_EQ(cache_->Get("k"), "new");
}

TEST_F(TtlTest, ExpireSetsNewDeadline) {
  ASSERT_TRUE(cache_->Set("k", "v").has_value());
  EXPECT_TRUE(cache_->Expire("k", milliseconds(500)));
  EXPECT_EQ(cache_->Ttl("k"), milliseconds(500));
  clock_.Advance(milliseconds(500));
  EXPECT_FALSE(cache_->Contains("k"));
}

TEST_F(TtlTest, ExpireWithZeroRemovesKeyNow) {
  ASSERT_TRUE(cache_->Set("k", "v").has_value());
  EXPECT_TRUE(cache_->Expire("k", milliseconds(0)));
  EXPECT_FALSE(cache_->Contains("k"));
  EXPECT_EQ(cache_->Size(), 0u);
}

TEST_F(TtlTest, ExpireOfMissingOrExpiredKeyIsFalse) {
  EXPECT_FALSE(cache_->Expire("absent", milliseconds(100)));
  ASSERT_TRUE(cache_->Set("k", "v", Ttl(10)).has_value());
  clock_.Advance(milliseconds(10));
  EXPECT_FALSE(cache_->Expire("k", milliseconds(100)));
}

TEST_F(TtlTest, PersistRemovesTtl) {
  ASSERT_TRUE(cache_->Set("k", "v", Ttl(100)).has_value());
  EXPECT_TRUE(cache_->Persist("k"));
  clock_.Advance(milliseconds(1000));
  EXPECT_EQ(cache_->Get("k"), "v");
  EXPECT_FALSE(cache_->Persist("absent"));
}

TEST_F(TtlTest, ReclaimExpiredFreesEveryExpiredEntry) {
  for (int i = 0; i < 1000; ++i) ASSERT_TRUE(cache_->Set("t" + std::to_string(i), "v", Ttl(100)).has_value());
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(cache_->Set("p" + std::to_string(i), "v").has_value());
  clock_.Advance(milliseconds(100));
  size_t reclaimed = 0;
  for (int pass = 0; pass < 10000 && cache_->Size() > 10; ++pass) reclaimed += cache_->ReclaimExpired(64);
  EXPECT_EQ(cache_->Size(), 10u);
  const CacheStats s = cache_->Stats();
  EXPECT_EQ(s.expirations, 1000u);
  EXPECT_EQ(s.live_bytes, 10u * 32);
  EXPECT_LE(reclaimed, 1000u);  // the rest were swept by the writes themselves
  for (int i = 0; i < 10; ++i) EXPECT_TRUE(cache_->Contains("p" + std::to_string(i)));
}

TEST_F(TtlTest, WritesSweepExpiredEntriesWithoutExplicitReclaim) {
  for (int i = 0; i < 2000; ++i) ASSERT_TRUE(cache_->Set("t" + std::to_string(i), "v", Ttl(100)).has_value());
  clock_.Advance(milliseconds(100));
  // Each write sweeps a few index buckets; enough writes pass them all.
  for (int i = 0; i < 2000; ++i) ASSERT_TRUE(cache_->Set("n" + std::to_string(i % 10), "v").has_value());
  EXPECT_EQ(cache_->Size(), 10u);
  EXPECT_EQ(cache_->Stats().expirations, 2000u);
}

TEST(TtlCapacityTest, ExpiredEntriesMakeRoomWithoutEvictingLiveOnes) {
  FakeClock clock;
  CacheOptions o;
  o.max_entries = 100;
  o.capacity_bytes = 1 << 20;
  o.max_value_size = 64;
  o.policy = EvictionPolicy::kFifo;
  auto cache = std::move(*Cache::CreatePrivate(o, clock));
  SetOptions ttl;
  ttl.ttl = milliseconds(50);
  for (int i = 0; i < 100; ++i) ASSERT_TRUE(cache->Set("t" + std::to_string(i), "v", ttl).has_value());
  clock.Advance(milliseconds(50));
  for (int i = 0; i < 100; ++i) ASSERT_TRUE(cache->Set("n" + std::to_string(i), "v").has_value());
  EXPECT_EQ(cache->Stats().evictions, 0u);
  EXPECT_EQ(cache->Stats().expirations, 100u);
  for (int i = 0; i < 100; ++i) EXPECT_TRUE(cache->Contains("n" + std::to_string(i)));
}

}  // namespace
}  // namespace cachet
