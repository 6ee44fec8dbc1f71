// Named segments: create, attach, warm re-attach, and clear errors for a
// segment of another layout version, a corrupt one, or a bad name. A handle
// keeps the geometry it validated at attach, whatever another process
// writes into the header later.
//
// White-box: header fields are found through shm/src/layout.h.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstddef>
#include <cstring>

#include "cachet/cache.h"
#include "layout.h"
#include "test_util.h"

namespace cachet {
namespace {

using detail::SegmentHeader;

// Offsets of the header fields these tests tamper with.
constexpr size_t kMagicOffset = offsetof(SegmentHeader, magic);
constexpr size_t kLayoutVersionOffset = offsetof(SegmentHeader, layout_version);
constexpr size_t kSmallLogSizeOffset = offsetof(SegmentHeader, logs) + sizeof(detail::LogState) +
                                       offsetof(detail::LogState, shape) + offsetof(detail::LogShape, size);
static_assert(kMagicOffset == 0 && kLayoutVersionOffset == 8);

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

  // Reads `n` bytes at `offset` of the named segment.
  void Peek(size_t offset, void* bytes, size_t n) {
    const int fd = shm_open(("/" + name_).c_str(), O_RDONLY, 0);
    ASSERT_GE(fd, 0) << std::strerror(errno);
    void* p = mmap(nullptr, offset + n, PROT_READ, MAP_SHARED, fd, 0);
    ASSERT_NE(p, MAP_FAILED);
    std::memcpy(bytes, static_cast<char*>(p) + offset, n);
    munmap(p, offset + n);
    close(fd);
  }

  // Runs `body` in a child and returns its exit code, or 128 + the signal
  // that killed it: a crash in the body fails the test, not the test binary.
  template <typename Body>
  int InChild(Body body) {
    const pid_t pid = fork();
    if (pid == 0) _exit(body());
    int status = 0;
    if (waitpid(pid, &status, 0) != pid) return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }

  // The one used index slot of a segment holding one key: (offset, value).
  std::pair<size_t, uint64_t> OnlySlot() {
    SegmentHeader h;
    Peek(0, &h, sizeof h);
    std::pair<size_t, uint64_t> found{0, 0};
    for (uint64_t b = 0; b < h.bucket_count; ++b) {
      detail::Bucket bucket;
      Peek(h.buckets_offset + b * sizeof bucket, &bucket, sizeof bucket);
      for (uint32_t i = 0; i < detail::kSlotsPerBucket; ++i) {
        if (bucket.slots[i] != 0)
          found = {h.buckets_offset + b * sizeof bucket + i * sizeof(uint64_t), bucket.slots[i]};
      }
    }
    return found;
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
  for (const char* bad : {"", "a/b", "/tmp/dir/", "/tmp/../etc/cachet"}) {
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

// Issue 13, bug 3: a reader re-read the logs' bounds from the segment on
// every lookup. With the small log's size set to 2^40 by a buggy or hostile
// peer, a slot pointing past the mapping passed the bounds check and the
// reader died of SIGSEGV inside Get.
TEST_F(SegmentTest, ReaderKeepsTheGeometryItValidatedAtAttach) {
  auto writer = std::move(*Cache::CreateNamed(name_, SmallOptions()));
  ASSERT_TRUE(writer->Set("k", "v").has_value());
  auto reader = std::move(*Cache::OpenNamed(name_));
  SegmentHeader h;
  Peek(0, &h, sizeof h);
  const uint64_t huge = uint64_t{1} << 40;
  Poke(kSmallLogSizeOffset, &huge, sizeof huge);
  // The key's slot now names an offset 1 GiB past the end of the segment,
  // inside the small log as the header now describes it.
  const auto [slot_offset, slot] = OnlySlot();
  ASSERT_NE(slot, 0u);
  const uint64_t beyond = (h.segment_bytes + (uint64_t{1} << 30)) / 8;
  ASSERT_GT(h.logs[detail::kSmallLog].shape.base + huge, beyond * 8);
  const uint64_t forged = (slot & ~uint64_t{0xffffffff}) | beyond;
  Poke(slot_offset, &forged, sizeof forged);

  EXPECT_EQ(InChild([&reader] { return reader->Get("k").has_value() ? 1 : 0; }), 0) << "the reader crashed or hit";
  EXPECT_EQ(InChild([&reader] { return reader->Contains("k") ? 1 : 0; }), 0);
  // And the header as it now is cannot be attached.
  auto again = Cache::OpenNamed(name_);
  ASSERT_FALSE(again.has_value());
  EXPECT_EQ(again.error().code, ErrorCode::kCorrupt);
  EXPECT_NE(again.error().message.find("geometry"), std::string::npos) << again.error().message;
}

// The writer's S3-FIFO geometry (ghost table size, small-queue targets) is
// also the attached handle's own: a ghost table "grown" in the header by
// another process is not written past its real end.
TEST_F(SegmentTest, WriterKeepsTheQueueGeometryItValidatedAtAttach) {
  auto writer = std::move(*Cache::CreateNamed(name_, SmallOptions()));
  const uint64_t huge = uint64_t{1} << 40;
  Poke(offsetof(SegmentHeader, ghost_slots), &huge, sizeof huge);
  const uint64_t zero = 0;
  Poke(offsetof(SegmentHeader, small_target_bytes), &zero, sizeof zero);
  Poke(offsetof(SegmentHeader, small_target_items), &zero, sizeof zero);
  // Enough one-hit keys that many are evicted from the small queue into the
  // ghost; then read one of the most recent back.
  const int code = InChild([&writer] {
    for (int i = 0; i < 3000; ++i) {
      if (!writer->Set("key" + std::to_string(i), std::string(100, 'x')).has_value()) return 1;
    }
    return writer->Get("key2999") == std::string(100, 'x') && writer->Stats().evictions > 0 ? 0 : 2;
  });
  EXPECT_EQ(code, 0) << "the writer crashed or lost the newest key";
}

// The small queue's targets are part of the checked geometry.
TEST_F(SegmentTest, SmallQueueTargetsThatDisagreeWithTheOptionsAreCorrupt) {
  { ASSERT_TRUE(Cache::CreateNamed(name_, SmallOptions()).has_value()); }
  for (size_t field : {offsetof(SegmentHeader, small_target_bytes), offsetof(SegmentHeader, small_target_items)}) {
    uint64_t was = 0;
    Peek(field, &was, sizeof was);
    const uint64_t bad = was + 1;
    Poke(field, &bad, sizeof bad);
    auto r = Cache::OpenNamed(name_);
    ASSERT_FALSE(r.has_value());
    EXPECT_EQ(r.error().code, ErrorCode::kCorrupt);
    EXPECT_NE(r.error().message.find("geometry"), std::string::npos) << r.error().message;
    Poke(field, &was, sizeof was);
    ASSERT_TRUE(Cache::OpenNamed(name_).has_value());
  }
}

// An absolute path names a file segment (what a hugetlbfs mount holds);
// on any other file system it is a plain shared file mapping, and behaves
// as a /dev/shm segment does.
TEST_F(SegmentTest, AnAbsolutePathNamesASegmentFile) {
  const std::string path = "/tmp/" + name_ + ".segment";
  {
    auto made = Cache::CreateNamed(path, SmallOptions());
    ASSERT_TRUE(made.has_value()) << made.error().ToString();
    EXPECT_EQ((*made)->Name(), path);
    EXPECT_EQ((*made)->Stats().page_bytes, 4096u);
    ASSERT_TRUE((*made)->Set("k", "in a file").has_value());
    auto again = Cache::CreateNamed(path, SmallOptions());
    ASSERT_FALSE(again.has_value());
    EXPECT_EQ(again.error().code, ErrorCode::kAlreadyExists);
  }
  auto opened = Cache::OpenNamed(path);
  ASSERT_TRUE(opened.has_value()) << opened.error().ToString();
  EXPECT_EQ((*opened)->Get("k"), "in a file");
  opened->reset();
  ASSERT_TRUE(Cache::RemoveNamed(path).has_value());
  EXPECT_EQ(Cache::OpenNamed(path).error().code, ErrorCode::kNotFound);
  EXPECT_EQ(Cache::RemoveNamed(path).error().code, ErrorCode::kNotFound);
}

TEST_F(SegmentTest, RemoveOfMissingSegmentIsNotFound) {
  auto r = Cache::RemoveNamed(name_);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, ErrorCode::kNotFound);
}

}  // namespace
}  // namespace cachet
