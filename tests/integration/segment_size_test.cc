// The segment's size as docs/operations.md and `cachetd --help` state it:
// fixed parts plus a ratio of capacity. The exact formula is checked against
// the segments the library makes, the rounded one against its stated
// tolerance, and both against a real cachetd's /dev/shm file.
#include <gtest/gtest.h>

#include <filesystem>

#include "cachet/cache.h"
#include "daemon_process.h"

namespace cachet {
namespace {

uint64_t CeilDiv(uint64_t a, uint64_t b) { return (a + b - 1) / b; }
uint64_t RoundUp(uint64_t a, uint64_t to) { return CeilDiv(a, to) * to; }

// docs/operations.md, "Memory", word for word.
uint64_t ExactSegmentBytes(const CacheOptions& o) {
  const uint64_t c = o.capacity_bytes;
  const uint64_t e = o.max_entries != 0 ? o.max_entries : std::max<uint64_t>(1, c / 64);
  const uint64_t item = RoundUp(24 + o.max_key_size + o.max_value_size, 8);
  const uint64_t index = 64 * CeilDiv(e, 6);
  const uint64_t main_log = RoundUp(c + c / 8 + 2 * item, 8);
  uint64_t ghost = 0, small_log = 0;
  if (o.policy == EvictionPolicy::kS3Fifo) {
    ghost = RoundUp(8 * RoundUp(e, 4), 64);
    small_log = RoundUp(c / 10 + c / 10 / 8 + 2 * item, 8);
  }
  const uint64_t move_buffer = item;
  return 4096 + index + ghost + main_log + small_log + move_buffer;
}

// The rounded form, for the default max-entries.
double RoundedSegmentBytes(const CacheOptions& o) {
  const double item = static_cast<double>(o.max_key_size + o.max_value_size + 24);
  const double c = static_cast<double>(o.capacity_bytes);
  return o.policy == EvictionPolicy::kS3Fifo ? 1.53 * c + 5 * item + 4096 : 1.29 * c + 3 * item + 4096;
}

CacheOptions Options(uint64_t capacity, uint64_t entries, uint32_t key, uint32_t value, EvictionPolicy policy) {
  CacheOptions o;
  o.capacity_bytes = capacity;
  o.max_entries = entries;
  o.max_key_size = key;
  o.max_value_size = value;
  o.policy = policy;
  return o;
}

TEST(SegmentSizeTest, ExactFormulaGivesEverySegmentsSize) {
  int checked = 0;
  for (EvictionPolicy policy : {EvictionPolicy::kS3Fifo, EvictionPolicy::kClock, EvictionPolicy::kFifo}) {
    for (uint64_t capacity : {uint64_t{2} << 20, uint64_t{1400000}, uint64_t{16} << 20, uint64_t{40000001}}) {
      for (uint64_t entries : {uint64_t{0}, uint64_t{1}, uint64_t{999}, uint64_t{123457}}) {
        for (auto [key, value] : {std::pair<uint32_t, uint32_t>{250, 1 << 20}, {16, 1000}, {65535, 3}}) {
          const CacheOptions o = Options(capacity, entries, key, value, policy);
          auto cache = Cache::CreatePrivate(o);
          ASSERT_TRUE(cache.has_value()) << cache.error().ToString();
          EXPECT_EQ((*cache)->Stats().segment_bytes, ExactSegmentBytes(o))
              << EvictionPolicyName(policy) << " capacity " << capacity << " entries " << entries << " key " << key
              << " value " << value;
          ++checked;
        }
      }
    }
  }
  EXPECT_EQ(checked, 3 * 4 * 4 * 3);
}

TEST(SegmentSizeTest, RoundedFormulaIsWithinHalfAPercent) {
  for (EvictionPolicy policy : {EvictionPolicy::kS3Fifo, EvictionPolicy::kClock, EvictionPolicy::kFifo}) {
    for (uint64_t capacity : {uint64_t{1400000}, uint64_t{16} << 20, uint64_t{64} << 20, uint64_t{1} << 30}) {
      for (uint32_t value : {1000u, 1u << 20}) {
        const CacheOptions o = Options(capacity, 0, 250, value, policy);
        const double exact = static_cast<double>(ExactSegmentBytes(o));
        EXPECT_NEAR(RoundedSegmentBytes(o), exact, exact * 0.005)
            << EvictionPolicyName(policy) << " capacity " << capacity << " value " << value;
      }
    }
  }
}

// The two cases of the report: 16 MiB made 28 MiB, 1.4 MB made 6.4 MB (one
// largest item more since the move buffer).
TEST(SegmentSizeTest, SmallCachesAreDominatedByTheFixedPart) {
  EXPECT_EQ(ExactSegmentBytes(Options(16 << 20, 0, 250, 1 << 20, EvictionPolicy::kS3Fifo)), 30903560u);
  EXPECT_EQ(ExactSegmentBytes(Options(1400000, 0, 250, 1 << 20, EvictionPolicy::kS3Fifo)), 7389264u);
}

TEST(SegmentSizeTest, RealDaemonSegmentHasTheStatedSize) {
  testing::DaemonProcess daemon({"--capacity", "16MiB", "--max-value-size", "1MiB", "--max-key-size", "250"});
  ASSERT_TRUE(daemon.Start());
  const uint64_t expected = ExactSegmentBytes(Options(16 << 20, 0, 250, 1 << 20, EvictionPolicy::kS3Fifo));
  EXPECT_EQ(std::filesystem::file_size("/dev/shm/" + daemon.segment()), expected);
  auto client = Client::Connect(daemon.tcp());
  ASSERT_TRUE(client.has_value());
  EXPECT_EQ(testing::StatOf(**client, "memory_bytes"), static_cast<int64_t>(expected));
}

TEST(SegmentSizeTest, HelpStatesTheSize) {
  const testing::ProgramResult r = testing::RunProgram({CACHETD_PATH, "--help"});
  EXPECT_EQ(r.code, 0);
  EXPECT_NE(r.out.find("s3fifo:      1.53 x capacity + 5 x (max-key-size + max-value-size + 24) + 4 KiB"),
            std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("fifo, clock: 1.29 x capacity + 3 x (max-key-size + max-value-size + 24) + 4 KiB"),
            std::string::npos)
      << r.out;
}

}  // namespace
}  // namespace cachet
