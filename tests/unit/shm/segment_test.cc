// Named segments: create, attach, warm re-attach, and clear errors for a
// segment of another layout version, a corrupt one, or a bad name.
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstring>

#include "cachet/cache.h"
#include "test_util.h"

namespace cachet {
namespace {

// Offsets of the header fields these tests tamper with (see shm/src/layout.h).
constexpr size_t kMagicOffset = 0;
constexpr size_t kLayoutVersionOffset = 8;

class SegmentTest : public ::testing::Test {
 protected:
  void TearDown() override { (void)Cache::RemoveNamed(name_); }

  CacheOptions SmallOptions() {
    CacheOptions o;
    o.capacity_bytes = 64 << 10;
    o.max_value_size = 1024;
    return o;
  }

  // Writes `bytes` at `offset` of the named segment, as another program might.
  void Poke(size_t offset, const void* bytes, size_t n) {
    const int fd = shm_open(("/" + name_).c_str(), O_RDWR, 0);
    ASSERT_GE(fd, 0) << std::strerror(errno);
    void* p = mmap(nullptr, offset + n, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    ASSERT_NE(p, MAP_FAILED);
    std::memcpy(static_cast<char*>(p) + offset, bytes, n);
    munmap(p, offset + n);
    close(fd);
  }

  std::string name_ = testing::UniqueSegmentName("segment");
};

TEST_F(SegmentTest, OpenOfMissingSegmentIsNotFound) {
  auto r = Cache::OpenNamed(name_);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, ErrorCode::kNotFound);
  EXPECT_NE(r.error().message.find(name_), std::string::npos) << r.error().message;
}

TEST_F(SegmentTest, CreateTwiceIsAlreadyExists) {
  auto first = Cache::CreateNamed(name_, SmallOptions());
  ASSERT_TRUE(first.has_value());
  auto second = Cache::CreateNamed(name_, SmallOptions());
  ASSERT_FALSE(second.has_value());
  EXPECT_EQ(second.error().code, ErrorCode::kAlreadyExists);
}

TEST_F(SegmentTest, BadNamesAreRefused) {
  for (const char* bad : {"", "a/b"}) {
    auto r = Cache::CreateNamed(bad, SmallOptions());
    ASSERT_FALSE(r.has_value());
    EXPECT_EQ(r.error().code, ErrorCode::kInvalidArgument);
  }
}

TEST_F(SegmentTest, DataAndOptionsSurviveDetachAndReattach) {
  {
    auto cache = std::move(*Cache::CreateNamed(name_, SmallOptions()));
    ASSERT_TRUE(cache->Set("k", "kept").has_value());
  }
  auto again = Cache::OpenNamed(name_);
  ASSERT_TRUE(again.has_value()) << again.error().ToString();
  EXPECT_EQ((*again)->Get("k"), "kept");
  EXPECT_EQ((*again)->Options().capacity_bytes, 64u << 10);
  EXPECT_EQ((*again)->Options().max_value_size, 1024u);
  EXPECT_EQ((*again)->Options().policy, EvictionPolicy::kS3Fifo);
}

TEST_F(SegmentTest, TwoHandlesSeeEachOthersWrites) {
  auto writer = std::move(*Cache::CreateNamed(name_, SmallOptions()));
  auto reader = std::move(*Cache::OpenNamed(name_));
  ASSERT_TRUE(writer->Set("k", "1").has_value());
  EXPECT_EQ(reader->Get("k"), "1");
  ASSERT_TRUE(reader->Set("k", "2").has_value());
  EXPECT_EQ(writer->Get("k"), "2");
}

TEST_F(SegmentTest, OtherLayoutVersionIsRefusedClearly) {
  { ASSERT_TRUE(Cache::CreateNamed(name_, SmallOptions()).has_value()); }
  const uint32_t future = 99;
  Poke(kLayoutVersionOffset, &future, sizeof future);
  auto r = Cache::OpenNamed(name_);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, ErrorCode::kVersionMismatch);
  EXPECT_NE(r.error().message.find("99"), std::string::npos) << r.error().message;
}

TEST_F(SegmentTest, BadMagicIsCorrupt) {
  { ASSERT_TRUE(Cache::CreateNamed(name_, SmallOptions()).has_value()); }
  const uint64_t junk = 0x1234;
  Poke(kMagicOffset, &junk, sizeof junk);
  auto r = Cache::OpenNamed(name_);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, ErrorCode::kCorrupt);
  EXPECT_NE(r.error().message.find("magic"), std::string::npos) << r.error().message;
}

TEST_F(SegmentTest, TruncatedSegmentIsCorrupt) {
  const int fd = shm_open(("/" + name_).c_str(), O_RDWR | O_CREAT | O_EXCL, 0600);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(ftruncate(fd, 100), 0);
  close(fd);
  auto r = Cache::OpenNamed(name_);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, ErrorCode::kCorrupt);
}

TEST_F(SegmentTest, ResizedSegmentIsCorrupt) {
  { ASSERT_TRUE(Cache::CreateNamed(name_, SmallOptions()).has_value()); }
  const int fd = shm_open(("/" + name_).c_str(), O_RDWR, 0);
  ASSERT_GE(fd, 0);
  struct stat st {};
  ASSERT_EQ(fstat(fd, &st), 0);
  ASSERT_EQ(ftruncate(fd, st.st_size + 4096), 0);
  close(fd);
  auto r = Cache::OpenNamed(name_);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, ErrorCode::kCorrupt);
  EXPECT_NE(r.error().message.find("bytes"), std::string::npos) << r.error().message;
}

TEST_F(SegmentTest, RemoveOfMissingSegmentIsNotFound) {
  auto r = Cache::RemoveNamed(name_);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, ErrorCode::kNotFound);
}

}  // namespace
}  // namespace cachet
