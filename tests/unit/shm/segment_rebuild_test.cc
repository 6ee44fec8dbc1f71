// What cachetd does with a segment it finds at start that it cannot use
// (docs/operations.md, "Warm restart"; docs/design.md): a corrupt segment,
// or one made by another layout version, is never trusted; it is removed and
// rebuilt empty with a new generation, so that same-host clients re-attach.
//
// White-box: the old segment is damaged through shm/src/layout.h.
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <cstddef>
#include <cstring>
#include <string>

#include "cachet/cache.h"
#include "integration/daemon_process.h"
#include "layout.h"

namespace cachet {
namespace {

using detail::SegmentHeader;

// Writes `n` bytes at `offset` of the named segment, as another program might.
void Poke(const std::string& name, size_t offset, const void* bytes, size_t n) {
  const int fd = shm_open(("/" + name).c_str(), O_RDWR, 0);
  ASSERT_GE(fd, 0) << std::strerror(errno);
  void* p = mmap(nullptr, offset + n, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  close(fd);
  ASSERT_NE(p, MAP_FAILED);
  std::memcpy(static_cast<char*>(p) + offset, bytes, n);
  munmap(p, offset + n);
}

// The generation cachetd logged for the segment it rebuilt, or 0.
uint64_t RebuiltGeneration(const std::string& log) {
  const std::string marker = "rebuilding it empty (generation ";
  const size_t at = log.find(marker);
  if (at == std::string::npos) return 0;
  return std::stoull(log.substr(at + marker.size()));
}

struct Damage {
  const char* name;
  size_t offset;
  uint64_t value;
  const char* reason;  // in the daemon's log line
};

class SegmentRebuildTest : public ::testing::TestWithParam<Damage> {};

TEST_P(SegmentRebuildTest, UnusableSegmentIsRebuiltEmptyWithANewGeneration) {
  const Damage damage = GetParam();
  testing::DaemonProcess daemon;
  {
    // A segment left by an earlier run, with a key in it, then damaged.
    CacheOptions o;
    o.capacity_bytes = 8 << 20;
    o.max_value_size = 64 << 10;
    auto old = Cache::CreateNamed(daemon.segment(), o);
    ASSERT_TRUE(old.has_value()) << old.error().ToString();
    ASSERT_TRUE((*old)->Set("old", "1").has_value());
  }
  Poke(daemon.segment(), damage.offset, &damage.value, sizeof damage.value);
  ASSERT_FALSE(Cache::OpenNamed(daemon.segment()).has_value());

  const auto before =
      std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
  ASSERT_TRUE(daemon.Start());
  const std::string log = daemon.log();
  EXPECT_NE(log.find("cannot be used"), std::string::npos) << log;
  EXPECT_NE(log.find(damage.reason), std::string::npos) << log;
  // Its header cannot be trusted, so neither can its generation: the new one
  // is the time in seconds, above any count of rebuilds.
  const uint64_t generation = RebuiltGeneration(log);
  EXPECT_GE(generation, static_cast<uint64_t>(before)) << log;

  auto rebuilt = Cache::OpenNamed(daemon.segment());
  ASSERT_TRUE(rebuilt.has_value()) << rebuilt.error().ToString();
  EXPECT_EQ((*rebuilt)->Stats().generation, generation);
  EXPECT_EQ((*rebuilt)->Get("old"), std::nullopt);
  EXPECT_EQ((*rebuilt)->Size(), 0u);
  rebuilt->reset();
  EXPECT_EQ(daemon.Stop(), 0);
}

INSTANTIATE_TEST_SUITE_P(
    Damages, SegmentRebuildTest,
    ::testing::Values(Damage{"BadMagic", offsetof(SegmentHeader, magic), 0x1234, "bad magic number"},
                      Damage{"OtherLayoutVersion", offsetof(SegmentHeader, layout_version), 99, "layout version 99"},
                      Damage{"ZeroGeneration", offsetof(SegmentHeader, generation), 0, "generation is 0"},
                      Damage{"BadGeometry", offsetof(SegmentHeader, bucket_count), 3, "geometry"}),
    [](const auto& param_info) { return std::string(param_info.param.name); });

}  // namespace
}  // namespace cachet
