// Deliberate corruption, then recovery: index slots, item headers and item
// bytes of a live segment are overwritten as a buggy or hostile process
// might, and readers and the repair must do what docs/design.md promises:
//  * the reader refuses a forged item header (another lap at the same place,
//    or lengths past its log), and never crashes on one;
//  * a torn read is retried, then reported as one miss;
//  * the repair drops each bad index entry (and only those) and recomputes
//    the live counts and the probe counts from the entries that remain.
//
// White-box: the segment is reached through shm/src/layout.h.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "cachet/cache.h"
#include "hashing.h"
#include "layout.h"
#include "test_util.h"

namespace cachet {
namespace {

using detail::Bucket;
using detail::ItemHeader;
using detail::SegmentHeader;

std::string Key(int i) { return "key" + std::to_string(i); }
std::string Value(int i) { return "value-" + std::to_string(i) + std::string(static_cast<size_t>(i % 40), 'v'); }
uint64_t ItemBytes(const std::string& k, const std::string& v) { return (24 + k.size() + v.size() + 7) / 8 * 8; }

// Every key readable now has the value last written, and the counts are
// exactly those keys'; returns how many there are.
uint64_t ExpectCountsMatchTheKeys(Cache& cache, int n, const std::function<std::string(int)>& value_of) {
  uint64_t live = 0;
  uint64_t bytes = 0;
  for (int i = 0; i < n; ++i) {
    const std::optional<std::string> got = cache.Get(Key(i));
    if (!got) continue;
    EXPECT_EQ(*got, value_of(i)) << Key(i);
    ++live;
    bytes += ItemBytes(Key(i), *got);
  }
  const CacheStats s = cache.Stats();
  EXPECT_EQ(s.entries, live);
  EXPECT_EQ(s.live_bytes, bytes);
  EXPECT_LE(s.live_bytes, s.capacity_bytes);
  return live;
}

class CorruptionTest : public ::testing::Test {
 public:  // the pokes below are lambdas that reach into the fixture
  void SetUp() override { Make(CacheOptions{}); }
  void TearDown() override {
    Unmap();
    cache_.reset();
    (void)Cache::RemoveNamed(name_);
  }

  void Make(CacheOptions o) {
    Unmap();
    cache_.reset();
    (void)Cache::RemoveNamed(name_);
    if (o.capacity_bytes == CacheOptions{}.capacity_bytes) o.capacity_bytes = 256 << 10;
    o.max_value_size = 1024;
    auto made = Cache::CreateNamed(name_, o);
    ASSERT_TRUE(made.has_value()) << made.error().ToString();
    cache_ = std::move(*made);
    const int fd = shm_open(("/" + name_).c_str(), O_RDWR, 0);
    ASSERT_GE(fd, 0);
    struct stat st {};
    ASSERT_EQ(fstat(fd, &st), 0);
    void* p = mmap(nullptr, static_cast<size_t>(st.st_size), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    ASSERT_NE(p, MAP_FAILED);
    base_ = static_cast<char*>(p);
    size_ = static_cast<size_t>(st.st_size);
  }
  void Unmap() {
    if (base_ != nullptr) munmap(base_, size_);
    base_ = nullptr;
  }

  SegmentHeader& header() { return *reinterpret_cast<SegmentHeader*>(base_); }
  Bucket& bucket(uint64_t b) { return reinterpret_cast<Bucket*>(base_ + header().buckets_offset)[b]; }
  ItemHeader& item(uint64_t slot) { return *reinterpret_cast<ItemHeader*>(base_ + (slot & 0xffffffff) * 8); }
  std::string KeyOf(uint64_t slot) {
    const ItemHeader& h = item(slot);
    return std::string(reinterpret_cast<const char*>(&h + 1), static_cast<uint16_t>(h.meta >> 32));
  }
  // The index slot naming `key`'s item.
  uint64_t* SlotOf(const std::string& key) {
    for (uint64_t b = 0; b < header().bucket_count; ++b) {
      for (uint64_t& slot : bucket(b).slots) {
        if (slot != 0 && KeyOf(slot) == key) return &slot;
      }
    }
    ADD_FAILURE() << "no slot for " << key;
    static uint64_t none = 0;
    return &none;
  }

  // S3-FIFO over 16 KiB with 600 keys, each read once while in the small
  // log: leaving it, they are promoted, so main holds keys too.
  void MakeS3FifoWithKeysInMain() {
    CacheOptions o;
    o.capacity_bytes = 16 << 10;
    o.policy = EvictionPolicy::kS3Fifo;
    Make(o);
    for (int i = 0; i < 600; ++i) {
      ASSERT_TRUE(cache_->Set(Key(i), Value(i)).has_value());
      if (i >= 2) (void)cache_->Get(Key(i - 2));
    }
  }
  bool InMainLog(const std::string& key) {
    return cache_->Contains(key) && (*SlotOf(key) & 0xffffffff) * 8 < header().logs[detail::kSmallLog].shape.base;
  }
  // Makes the small log's head record a padding of length 0, which this
  // code never writes.
  void DamageSmallLogHead() {
    detail::LogState& small = header().logs[detail::kSmallLog];
    ASSERT_LT(small.head, small.tail);
    reinterpret_cast<ItemHeader*>(base_ + small.shape.base + detail::PhysOf(small.shape, small.head))->meta =
        detail::PackMeta(0, 0, detail::ItemKind::kPadding);
  }

  void Fill(int n) {
    for (int i = 0; i < n; ++i) ASSERT_TRUE(cache_->Set(Key(i), Value(i)).has_value());
  }
  // Every key but `except` reads back; the counts are those of the n - 1.
  void ExpectAllBut(int n, int except) {
    uint64_t bytes = 0;
    for (int i = 0; i < n; ++i) {
      if (i == except) {
        EXPECT_EQ(cache_->Get(Key(i)), std::nullopt) << Key(i);
        continue;
      }
      EXPECT_EQ(cache_->Get(Key(i)), Value(i)) << Key(i);
      bytes += ItemBytes(Key(i), Value(i));
    }
    const CacheStats s = cache_->Stats();
    EXPECT_EQ(s.entries, static_cast<uint64_t>(n - 1));
    EXPECT_EQ(s.live_bytes, bytes);
    // The dropped key can be written again and read back.
    ASSERT_TRUE(cache_->Set(Key(except), "again").has_value());
    EXPECT_EQ(cache_->Get(Key(except)), "again");
  }

  std::string name_ = testing::UniqueSegmentName("corrupt");
  std::unique_ptr<Cache> cache_;
  char* base_ = nullptr;
  size_t size_ = 0;
};

// A header at the item's place but from another lap (what a reused log's
// value bytes could imitate) is not the item the slot was published for.
TEST_F(CorruptionTest, ReaderRefusesAForgedHeaderFromAnotherLap) {
  Fill(20);
  const uint64_t slot = *SlotOf(Key(7));
  ItemHeader& h = item(slot);
  const uint64_t lap = uint64_t{1} << header().logs[detail::kMainLog].shape.lap_shift;
  const uint64_t genuine = h.pos;
  const uint64_t before = cache_->Stats().misses;
  for (const uint64_t forged : {genuine + lap, genuine + (lap << 16) + lap}) {
    h.pos = forged;
    EXPECT_EQ(cache_->Get(Key(7)), std::nullopt);
    EXPECT_FALSE(cache_->Contains(Key(7)));
  }
  EXPECT_EQ(cache_->Stats().misses, before + 2);  // one miss per Get, however often retried
  h.pos = genuine;
  EXPECT_EQ(cache_->Get(Key(7)), Value(7));
  for (int i = 0; i < 20; ++i) EXPECT_EQ(cache_->Get(Key(i)), Value(i));
}

// Lengths that would run the copy past its log's end (or past the limits)
// are refused; the reader neither crashes nor returns bytes of another item.
TEST_F(CorruptionTest, ReaderRefusesAHeaderWithLengthsPastItsLog) {
  Fill(20);
  ItemHeader& h = item(*SlotOf(Key(3)));
  const uint64_t genuine = h.meta;
  const uint64_t key_len = genuine >> 32 & 0xffff;
  const uint64_t kind = genuine & (uint64_t{0xff} << 48);
  const uint64_t huge_value = kind | key_len << 32 | 0xfffffff0u;
  const uint64_t huge_key = kind | uint64_t{0xffff} << 32 | (genuine & 0xffffffff);
  const uint64_t padding = (genuine & ~(uint64_t{0xff} << 48)) | uint64_t{2} << 48;
  for (const uint64_t forged : {huge_value, huge_key, padding}) {
    h.meta = forged;
    EXPECT_EQ(cache_->Get(Key(3)), std::nullopt);
  }
  h.meta = genuine;
  EXPECT_EQ(cache_->Get(Key(3)), Value(3));
}

// An item whose header names another place keeps reading as torn: the
// reader retries a bounded number of times, then reports one miss, and
// the rest of the cache reads on.
TEST_F(CorruptionTest, ATornReadIsRetriedThenReportedAsAMiss) {
  Fill(20);
  ItemHeader& h = item(*SlotOf(Key(11)));
  h.pos += 8;  // the header now claims the next word's place
  const CacheStats before = cache_->Stats();
  const auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(cache_->Get(Key(11)), std::nullopt);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(1));
  const CacheStats after = cache_->Stats();
  EXPECT_EQ(after.misses, before.misses + 1);
  EXPECT_EQ(after.hits, before.hits);
  for (int i = 0; i < 20; ++i) {
    if (i != 11) {
      EXPECT_EQ(cache_->Get(Key(i)), Value(i));
    }
  }
  // The repair drops the entry the torn item left.
  EXPECT_EQ(cache_->Repair(), 1u);
  ExpectAllBut(20, 11);
}

// Each kind of bad index entry, made by poking a slot, the item it names or
// its log, is dropped by the repair, alone. (key0 is the first item of the
// main log.)
TEST_F(CorruptionTest, RepairDropsEachBadIndexEntryAndOnlyIt) {
  struct Poke {
    const char* what;
    std::function<void(CorruptionTest&, uint64_t&)> apply;
  };
  const std::vector<Poke> pokes = {
      {"offset past the segment",
       [](CorruptionTest& t, uint64_t& slot) { slot = (slot & ~uint64_t{0xffffffff}) | (t.size_ / 8 + 1000); }},
      {"offset inside the index",
       [](CorruptionTest& t, uint64_t& slot) {
         slot = (slot & ~uint64_t{0xffffffff}) | (t.header().buckets_offset / 8);
       }},
      {"offset in the middle of an item", [](CorruptionTest&, uint64_t& slot) { slot += 1; }},
      {"another key's tag", [](CorruptionTest&, uint64_t& slot) { slot ^= uint64_t{0x5a5a} << 48; }},
      {"another lap", [](CorruptionTest&, uint64_t& slot) { slot ^= uint64_t{1} << 32; }},
      {"key bytes changed",
       [](CorruptionTest& t, uint64_t& slot) { reinterpret_cast<char*>(&t.item(slot) + 1)[0] ^= 0x20; }},
      {"key length zero", [](CorruptionTest& t, uint64_t& slot) { t.item(slot).meta &= ~(uint64_t{0xffff} << 32); }},
      {"value length past the log", [](CorruptionTest& t, uint64_t& slot) { t.item(slot).meta |= 0x7ffffff0u; }},
      {"padding kind",
       [](CorruptionTest& t, uint64_t& slot) {
         t.item(slot).meta = (t.item(slot).meta & ~(uint64_t{0xff} << 48)) | uint64_t{2} << 48;
       }},
      {"head moved past it",
       [](CorruptionTest& t, uint64_t& slot) {
         // The first item of the log is now outside [head, tail).
         const ItemHeader& first = t.item(slot);
         ASSERT_EQ(first.pos, 0u);
         t.header().logs[detail::kMainLog].head = ItemBytes(Key(0), Value(0));
       }},
  };
  for (const Poke& poke : pokes) {
    SCOPED_TRACE(poke.what);
    CacheOptions o;
    o.policy = EvictionPolicy::kFifo;  // one log: every item in the main log
    Make(o);
    Fill(30);
    poke.apply(*this, *SlotOf(Key(0)));
    EXPECT_EQ(cache_->Repair(), 1u);
    ExpectAllBut(30, 0);
    EXPECT_EQ(cache_->Repair(), 0u);  // nothing left to drop
  }
}

// Counts the repair recomputes from the entries that remain: live items and
// bytes, TTL items, and the probe counts that let a lookup pass a bucket.
TEST_F(CorruptionTest, RepairRecomputesCountsAndRevealsKeysHiddenByBadProbeCounts) {
  CacheOptions o;
  o.max_entries = 14;  // 3 buckets of 7 slots: keys spill past their home
  Make(o);
  Fill(14);
  SetOptions with_ttl;
  with_ttl.ttl = std::chrono::hours(1);
  ASSERT_TRUE(cache_->Set("ttl", "t", with_ttl).has_value());  // room for 14: one key was evicted for it
  uint64_t live = 0;
  uint64_t bytes = 0;
  std::vector<int> held;
  for (int i = 0; i < 14; ++i) {
    if (cache_->Contains(Key(i))) {
      held.push_back(i);
      bytes += ItemBytes(Key(i), Value(i));
      ++live;
    }
  }
  ASSERT_TRUE(cache_->Contains("ttl"));
  bytes += ItemBytes("ttl", "t");
  ++live;
  for (detail::LogState& log : header().logs) {
    log.live_items = 999;
    log.live_bytes = 123456789;
  }
  header().ttl_items = 77;
  int hidden = 0;
  for (uint64_t b = 0; b < header().bucket_count; ++b) bucket(b).overflow = 0;
  for (int i : held) hidden += !cache_->Contains(Key(i));
  ASSERT_GE(hidden, 1) << "no key lived outside its home bucket: the test proves nothing";

  EXPECT_EQ(cache_->Repair(), 0u);
  const CacheStats s = cache_->Stats();
  EXPECT_EQ(s.entries, live);
  EXPECT_EQ(s.live_bytes, bytes);
  EXPECT_EQ(header().ttl_items, 1u);
  for (int i : held) EXPECT_EQ(cache_->Get(Key(i)), Value(i)) << Key(i);
  EXPECT_EQ(cache_->Get("ttl"), "t");
}

// A process with write access may leave a record at a log's head that this
// code never wrote. The writer that must pass it to make room drops that
// log's items and repairs the index, and says so, rather than stall (a
// padding of length 0) or walk on by garbage lengths; then the cache works
// as before, with counts that match what it holds.
TEST_F(CorruptionTest, AWriterMeetingADamagedHeadRecordDropsThatLogAndGoesOn) {
  using detail::ItemKind;
  using detail::PackMeta;
  const std::vector<std::pair<const char*, std::function<void(ItemHeader&)>>> damages = {
      {"padding of length 0", [](ItemHeader& h) { h.meta = PackMeta(0, 0, ItemKind::kPadding); }},
      {"padding short of the log's end", [](ItemHeader& h) { h.meta = PackMeta(64, 0, ItemKind::kPadding); }},
      {"an unknown kind", [](ItemHeader& h) { h.meta |= uint64_t{0x70} << 48; }},
      {"a key longer than any key", [](ItemHeader& h) { h.meta |= uint64_t{0xffff} << 32; }},
      {"a value past the log", [](ItemHeader& h) { h.meta |= 0x7ffffff0u; }},
      {"the position of another record", [](ItemHeader& h) { h.pos += 8; }},
  };
  for (const auto& [what, damage] : damages) {
    SCOPED_TRACE(what);
    CacheOptions o;
    o.capacity_bytes = 16 << 10;
    o.policy = EvictionPolicy::kFifo;  // one log: every write's room comes from its head
    Make(o);
    Fill(1000);
    const detail::LogState& log = header().logs[detail::kMainLog];
    const uint64_t at = log.shape.base + detail::PhysOf(log.shape, log.head);
    damage(*reinterpret_cast<ItemHeader*>(base_ + at));
    const uint64_t repairs = cache_->Stats().repairs;

    ::testing::internal::CaptureStderr();
    for (int i = 1000; i < 1050; ++i) ASSERT_TRUE(cache_->Set(Key(i), Value(i)).has_value()) << Key(i);
    const std::string said = ::testing::internal::GetCapturedStderr();
    EXPECT_NE(said.find("main log of segment '" + name_ + "'"), std::string::npos) << said;

    uint64_t live = 0;
    uint64_t bytes = 0;
    for (int i = 0; i < 1050; ++i) {
      const std::optional<std::string> got = cache_->Get(Key(i));
      if (!got) continue;
      EXPECT_EQ(*got, Value(i)) << Key(i);
      ++live;
      bytes += ItemBytes(Key(i), Value(i));
    }
    EXPECT_TRUE(cache_->Contains(Key(1049)));
    const CacheStats s = cache_->Stats();
    EXPECT_EQ(s.repairs, repairs + 1);
    EXPECT_EQ(s.entries, live);
    EXPECT_EQ(s.live_bytes, bytes);
  }
}

// A head or tail off the 8-byte grid names no record: a writer meeting one
// drops the log as above, and a process attaching the segment refuses it.
TEST_F(CorruptionTest, ALogPositionOffTheGridIsDroppedByTheWriterAndRefusedAtAttach) {
  CacheOptions o;
  o.capacity_bytes = 16 << 10;
  o.policy = EvictionPolicy::kFifo;
  Make(o);
  Fill(1000);
  detail::LogState& log = header().logs[detail::kMainLog];
  log.head += 4;
  ::testing::internal::CaptureStderr();
  for (int i = 1000; i < 1050; ++i) ASSERT_TRUE(cache_->Set(Key(i), Value(i)).has_value()) << Key(i);
  EXPECT_NE(::testing::internal::GetCapturedStderr().find("holds a record this code never wrote"), std::string::npos);
  EXPECT_EQ(log.head % 8, 0u);
  EXPECT_EQ(cache_->Get(Key(1049)), Value(1049));

  log.tail += 4;
  const auto opened = Cache::OpenNamed(name_);
  ASSERT_FALSE(opened.has_value());
  EXPECT_EQ(opened.error().code, ErrorCode::kCorrupt);
  EXPECT_NE(opened.error().message.find("not a multiple of 8"), std::string::npos) << opened.error().message;
  log.tail -= 4;

  // Positions run to 2^lap_shift per lap but a log ends before that: one at
  // or past its end would have the next append write past it.
  ASSERT_LT(log.shape.size, uint64_t{1} << log.shape.lap_shift);
  const uint64_t head = log.head;
  const uint64_t tail = log.tail;
  log.head = log.tail = (detail::LapOf(log.shape, tail) << log.shape.lap_shift) + log.shape.size + 8;
  const auto past = Cache::OpenNamed(name_);
  ASSERT_FALSE(past.has_value());
  EXPECT_NE(past.error().message.find("past its end"), std::string::npos) << past.error().message;
  log.head = head;
  log.tail = tail;
}

// S3-FIFO: a write that replaces a key held in main, and has to make room
// in a small log whose head is damaged, drops the small log; the repair
// counts the old item (its slot is still valid), and the write must not
// count it twice.
TEST_F(CorruptionTest, AReplaceThatMeetsADamagedOtherLogCountsTheOldItemOnce) {
  MakeS3FifoWithKeysInMain();
  int in_main = -1;
  for (int i = 599; i >= 0 && in_main < 0; --i) {
    if (InMainLog(Key(i))) in_main = i;
  }
  ASSERT_GE(in_main, 0) << "no key in main: the test proves nothing";
  DamageSmallLogHead();
  const uint64_t repairs = cache_->Stats().repairs;

  ::testing::internal::CaptureStderr();
  const std::string replaced(1000, 'r');  // more than the old item: room must be made
  ASSERT_TRUE(cache_->Set(Key(in_main), replaced).has_value());
  EXPECT_NE(::testing::internal::GetCapturedStderr().find("small log"), std::string::npos);
  EXPECT_EQ(cache_->Stats().repairs, repairs + 1);
  EXPECT_EQ(cache_->Get(Key(in_main)), replaced);
  ExpectCountsMatchTheKeys(*cache_, 600, [&](int i) { return i == in_main ? replaced : Value(i); });
}

// A replace whose own log is dropped on the way: the repair takes the old
// item's slot and lowers the probe counts that led past its home bucket,
// so the new item is inserted anew rather than written where the old slot
// was (it would be out of reach of every lookup).
TEST_F(CorruptionTest, AReplaceWhoseOwnLogIsDroppedLeavesTheKeyReachable) {
  CacheOptions o;
  o.capacity_bytes = 4 << 10;
  o.max_entries = 14;  // 3 buckets of 7 slots: keys spill past their home
  o.policy = EvictionPolicy::kFifo;
  Make(o);
  for (int i = 0; i < 14; ++i) ASSERT_TRUE(cache_->Set(Key(i), std::string(250, 'v')).has_value());
  int spilled = -1;
  for (int i = 0; i < 14 && spilled < 0; ++i) {
    if (!cache_->Contains(Key(i))) continue;
    const uint64_t* slot = SlotOf(Key(i));
    const uint64_t home = detail::FastRange(static_cast<uint32_t>(detail::HashKey(Key(i))), header().bucket_count);
    const auto* first = &bucket(home).slots[0];
    if (slot < first || slot >= first + detail::kSlotsPerBucket) spilled = i;
  }
  ASSERT_GE(spilled, 0) << "no key lived outside its home bucket: the test proves nothing";
  detail::LogState& log = header().logs[detail::kMainLog];
  reinterpret_cast<ItemHeader*>(base_ + log.shape.base + detail::PhysOf(log.shape, log.head))->meta =
      detail::PackMeta(0, 0, detail::ItemKind::kPadding);

  ::testing::internal::CaptureStderr();
  const std::string replaced(1000, 'r');  // room must be made: the head is met
  ASSERT_TRUE(cache_->Set(Key(spilled), replaced).has_value());
  EXPECT_NE(::testing::internal::GetCapturedStderr().find("main log"), std::string::npos);
  EXPECT_EQ(cache_->Get(Key(spilled)), replaced);
  const CacheStats s = cache_->Stats();
  EXPECT_EQ(s.entries, 1u);
  EXPECT_EQ(s.live_bytes, ItemBytes(Key(spilled), replaced));
}

// Two slots naming one item (found by fuzzing a damaged index): the repair
// keeps one. Both kept, the item counted twice, and an erase cleared one
// slot and left the other naming the erased value and memory the log reuses.
TEST_F(CorruptionTest, RepairDropsASecondSlotNamingTheSameItem) {
  CacheOptions o;
  o.policy = EvictionPolicy::kFifo;
  Make(o);
  Fill(30);
  uint64_t* empty = nullptr;
  for (uint64_t b = 0; b < header().bucket_count && empty == nullptr; ++b) {
    for (uint64_t& slot : bucket(b).slots) {
      if (slot == 0 && empty == nullptr) empty = &slot;
    }
  }
  ASSERT_NE(empty, nullptr);
  *empty = *SlotOf(Key(3));
  EXPECT_EQ(cache_->Repair(), 1u);
  uint64_t bytes = 0;
  for (int i = 0; i < 30; ++i) bytes += ItemBytes(Key(i), Value(i));
  EXPECT_EQ(cache_->Stats().entries, 30u);
  EXPECT_EQ(cache_->Stats().live_bytes, bytes);
  ASSERT_TRUE(cache_->Erase(Key(3)));
  EXPECT_EQ(cache_->Get(Key(3)), std::nullopt);
  EXPECT_EQ(cache_->Stats().entries, 29u);
  EXPECT_EQ(cache_->Repair(), 0u);
}

// Live bytes forged low: the writer believes the cache is under capacity
// while its log is full of live items. With items of one size the log then
// settles into a cycle in which every item is copied from the head to the
// tail, and the head passes the previous lap's padding just as the tail
// needs it: compaction went round forever with the writer mutex held (found
// by fuzzing a damaged index). Two laps without room now rebuild the counts.
// (S3-FIFO's new items go to its small log, whose compaction moves them to
// main: this sequence does not settle into the cycle there.)
TEST_F(CorruptionTest, CompactionThatMakesNoRoomRecountsInsteadOfCopyingForever) {
  for (const EvictionPolicy policy : {EvictionPolicy::kFifo, EvictionPolicy::kClock}) {
    SCOPED_TRACE(static_cast<int>(policy));
    CacheOptions o;
    o.capacity_bytes = 16 << 10;
    o.policy = policy;
    Make(o);
    const std::string value(100, 'v');  // with 4-digit keys, every item is 136 bytes
    auto value_of = [&](int) { return value; };
    for (int i = 1000; i < 1500; ++i) ASSERT_TRUE(cache_->Set(Key(i), value).has_value());
    for (detail::LogState& log : header().logs) log.live_bytes /= 2;
    const uint64_t repairs = cache_->Stats().repairs;

    ::testing::internal::CaptureStderr();
    for (int i = 1500; i < 2000; ++i) ASSERT_TRUE(cache_->Set(Key(i), value).has_value()) << Key(i);
    const std::string said = ::testing::internal::GetCapturedStderr();
    EXPECT_NE(said.find("made no room; recounting them from the index"), std::string::npos) << said;
    EXPECT_GT(cache_->Stats().repairs, repairs);
    EXPECT_TRUE(cache_->Contains(Key(1999)));
    EXPECT_GT(ExpectCountsMatchTheKeys(*cache_, 2000, value_of), 0u);
  }
}

// Item counts forged low: items past max_entries would fill the index,
// which aborted the writer ("index full ... invariant broken"). A write
// that finds no empty slot now rebuilds the counts first, against the
// limits checked at attach, not the header's (forged high here too).
TEST_F(CorruptionTest, AnIndexFilledUnderCountsForgedLowIsRecountedNotAborted) {
  CacheOptions o;
  o.capacity_bytes = 256 << 10;  // bytes never bind here: entries do
  o.max_entries = 60;
  o.policy = EvictionPolicy::kFifo;
  Make(o);
  Fill(60);
  const uint64_t slots = header().bucket_count * detail::kSlotsPerBucket;
  ASSERT_GT(slots, 60u);
  ::testing::internal::CaptureStderr();
  for (int i = 60; i < 200; ++i) {
    for (detail::LogState& log : header().logs) log.live_items = 0;  // as a hostile writer keeps doing
    header().max_entries = uint64_t{1} << 30;
    ASSERT_TRUE(cache_->Set(Key(i), Value(i)).has_value()) << Key(i);
  }
  const std::string said = ::testing::internal::GetCapturedStderr();
  EXPECT_NE(said.find("is full with 0 items counted; recounting them"), std::string::npos) << said;
  EXPECT_TRUE(cache_->Contains(Key(199)));
  (void)cache_->Repair();  // the counts forged by the last round, rebuilt
  EXPECT_LE(ExpectCountsMatchTheKeys(*cache_, 200, Value), 60u);
  EXPECT_EQ(cache_->Stats().max_entries, 60u);
}

// As above, with a forged twin of the replaced item's slot earlier in the
// index: the repair that drops the damaged log keeps the twin and drops the
// slot the write holds. The twin must then name the new item; left naming
// the old one, uncounted, it made a second live entry for the key.
TEST_F(CorruptionTest, AReplaceWhoseSlotARepairSwappedForATwinLeavesOneEntry) {
  MakeS3FifoWithKeysInMain();
  // A key in main with an empty slot before its own, where the twin goes.
  int in_main = -1;
  uint64_t* twin = nullptr;
  for (int i = 599; i >= 0 && in_main < 0; --i) {
    if (!InMainLog(Key(i))) continue;
    const uint64_t* own = SlotOf(Key(i));  // buckets are one array: earlier slots have lower addresses
    for (uint64_t b = 0; b < header().bucket_count && twin == nullptr; ++b) {
      for (uint64_t& slot : bucket(b).slots) {
        if (&slot >= own || twin != nullptr) break;
        if (slot == 0) twin = &slot;
      }
    }
    if (twin != nullptr) in_main = i;
  }
  ASSERT_GE(in_main, 0) << "no key in main with an empty slot before it: the test proves nothing";
  *twin = *SlotOf(Key(in_main));
  DamageSmallLogHead();

  ::testing::internal::CaptureStderr();
  const std::string replaced(1000, 'r');  // more than the old item: room must be made
  ASSERT_TRUE(cache_->Set(Key(in_main), replaced).has_value());
  EXPECT_NE(::testing::internal::GetCapturedStderr().find("small log"), std::string::npos);
  EXPECT_EQ(cache_->Get(Key(in_main)), replaced);
  EXPECT_EQ(cache_->Repair(), 0u);  // nothing names the old item
  EXPECT_GT(ExpectCountsMatchTheKeys(*cache_, 600, [&](int i) { return i == in_main ? replaced : Value(i); }), 0u);
}

}  // namespace
}  // namespace cachet
