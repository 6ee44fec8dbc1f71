// The segment on huge pages: cachetd puts it on a hugetlbfs mount when one
// has room (huge-pages = auto or on), falls back to /dev/shm saying why
// (auto), or refuses to start (on); same-host clients map it from the path
// INFO gives, and a warm restart finds it there again.
//
// Each test mounts a hugetlbfs of its own (HugePageMount: root only).
#include <sys/stat.h>

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "cachet/client.h"
#include "daemon_process.h"
#include "huge_page_mount.h"

namespace cachet {
namespace {

using testing::HugePageMount;

class HugePagesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (auto why = HugePageMount::Unsupported()) GTEST_SKIP() << "no hugetlbfs here: " << *why;
  }
};

bool Exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0;
}

TEST_F(HugePagesTest, TheSegmentGoesOnHugePagesAndClientsMapItThere) {
  HugePageMount mount(64u << 20, 16);
  ASSERT_EQ(mount.error(), "");
  testing::DaemonProcess daemon({"--capacity", "8MiB", "--huge-pages", "on", "--huge-pages-dir", mount.dir()});
  const long free_before = HugePageMount::MemInfo("HugePages_Free");
  ASSERT_TRUE(daemon.Start());
  const std::string file = mount.dir() + "/" + daemon.segment();
  EXPECT_NE(daemon.log().find("created segment " + file + " on huge pages"), std::string::npos) << daemon.log();
  EXPECT_TRUE(Exists(file));
  EXPECT_FALSE(Exists("/dev/shm/" + daemon.segment()));
  // The segment's pages came out of the pool, reserved at once.
  EXPECT_GE(free_before - HugePageMount::MemInfo("HugePages_Free"), 4);

  const ClientOptions patient = testing::Patient();
  auto local = Client::Connect(daemon.ipc(), patient);
  ASSERT_TRUE(local.has_value());
  ASSERT_TRUE(testing::WaitUntilAttached(**local));
  EXPECT_TRUE((*local)->WritesSharedMemory());
  ASSERT_EQ((*local)->Set("k", "on huge pages"), true);
  EXPECT_EQ((*local)->Get("k").value(), "on huge pages");
  EXPECT_EQ(testing::StatOf(**local, "segment_page_bytes"), 2 << 20);

  EXPECT_EQ(daemon.Stop(), 0);
  ASSERT_TRUE(daemon.Start(daemon.tcp()));
  EXPECT_NE(daemon.log().find("warm restart: re-attached to segment " + file), std::string::npos) << daemon.log();
  auto remote = Client::Connect(daemon.tcp(), patient);
  ASSERT_TRUE(remote.has_value());
  EXPECT_EQ((*remote)->Get("k").value(), "on huge pages");
}

// A mount with room for one page cannot hold an 8 MiB cache.
TEST_F(HugePagesTest, AutoFallsBackToDevShmAndSaysWhy) {
  HugePageMount mount(2u << 20, 0);
  ASSERT_EQ(mount.error(), "");
  testing::DaemonProcess daemon({"--capacity", "8MiB", "--huge-pages-dir", mount.dir()});
  ASSERT_TRUE(daemon.Start());
  EXPECT_NE(
      daemon.log().find("huge pages: not used, the segment is in /dev/shm: cannot create segment file " + mount.dir()),
      std::string::npos)
      << daemon.log();
  EXPECT_TRUE(Exists("/dev/shm/" + daemon.segment()));
  EXPECT_FALSE(Exists(mount.dir() + "/" + daemon.segment()));  // nothing left behind
  auto local = Client::Connect(daemon.ipc());
  ASSERT_TRUE(local.has_value());
  ASSERT_TRUE(testing::WaitUntilAttached(**local));
  ASSERT_EQ((*local)->Set("k", "v"), true);
  EXPECT_EQ(testing::StatOf(**local, "segment_page_bytes"), 4096);
}

TEST_F(HugePagesTest, OnRefusesToStartWithoutRoomOrWithoutAMount) {
  HugePageMount mount(2u << 20, 0);
  ASSERT_EQ(mount.error(), "");
  const testing::ProgramResult no_room =
      testing::RunCachetd({"--capacity", "8MiB", "--huge-pages", "on", "--huge-pages-dir", mount.dir()});
  EXPECT_EQ(no_room.code, 1);
  EXPECT_NE(no_room.err.find("huge-pages = on: cannot create segment file"), std::string::npos) << no_room.err;
  const testing::ProgramResult not_hugetlbfs = testing::RunCachetd({"--huge-pages", "on", "--huge-pages-dir", "/tmp"});
  EXPECT_EQ(not_hugetlbfs.code, 1);
  EXPECT_NE(not_hugetlbfs.err.find("huge-pages-dir /tmp is not a hugetlbfs mount"), std::string::npos)
      << not_hugetlbfs.err;
  const testing::ProgramResult bad = testing::RunCachetd({"--huge-pages", "sometimes"});
  EXPECT_EQ(bad.code, 2);
  EXPECT_NE(bad.err.find("huge-pages must be auto, on or off"), std::string::npos) << bad.err;
}

// Changing huge-pages moves the segment (rebuilt empty) and removes the old
// one; `auto` keeps whichever was served last, so no stale copy returns.
TEST_F(HugePagesTest, ChangingTheSettingMovesTheSegmentAndLeavesNoOldCopy) {
  HugePageMount mount(64u << 20, 16);
  ASSERT_EQ(mount.error(), "");
  const std::vector<std::string> dir = {"--huge-pages-dir", mount.dir()};
  auto with = [&](const char* setting) {
    std::vector<std::string> args = {"--capacity", "8MiB", "--huge-pages", setting};
    args.insert(args.end(), dir.begin(), dir.end());
    return args;
  };
  testing::DaemonProcess daemon(with("auto"));
  ASSERT_TRUE(daemon.Start());
  const std::string file = mount.dir() + "/" + daemon.segment();
  const std::string shm = "/dev/shm/" + daemon.segment();
  const ClientOptions patient = testing::Patient();
  auto set = [&](const std::string& key) {
    auto c = Client::Connect(daemon.tcp(), patient);
    return c && (*c)->Set(key, "1").value_or(false);
  };
  auto has = [&](const std::string& key) {
    auto c = Client::Connect(daemon.tcp(), patient);
    return c && (*c)->Get(key).value_or(std::nullopt).has_value();
  };
  ASSERT_TRUE(Exists(file));
  ASSERT_TRUE(set("on-huge"));
  EXPECT_EQ(daemon.Stop(), 0);

  daemon.SetExtraArgs(with("off"));
  ASSERT_TRUE(daemon.Start(daemon.tcp()));
  EXPECT_NE(daemon.log().find("is on huge pages and huge-pages = off; rebuilding it empty"), std::string::npos)
      << daemon.log();
  EXPECT_TRUE(Exists(shm));
  EXPECT_FALSE(Exists(file));  // its pages went back to the pool
  EXPECT_FALSE(has("on-huge"));
  ASSERT_TRUE(set("in-shm"));
  EXPECT_EQ(daemon.Stop(), 0);

  daemon.SetExtraArgs(with("auto"));  // the /dev/shm one is the one served last: kept
  ASSERT_TRUE(daemon.Start(daemon.tcp()));
  EXPECT_NE(daemon.log().find("warm restart: re-attached to segment /" + daemon.segment()), std::string::npos)
      << daemon.log();
  EXPECT_TRUE(has("in-shm"));
  EXPECT_FALSE(Exists(file));
  EXPECT_EQ(daemon.Stop(), 0);

  daemon.SetExtraArgs(with("on"));
  ASSERT_TRUE(daemon.Start(daemon.tcp()));
  EXPECT_TRUE(Exists(file));
  EXPECT_FALSE(Exists(shm));
  EXPECT_FALSE(has("in-shm"));
}

// `on` that cannot make the segment on huge pages refuses to start and
// leaves the segment it would have replaced as it was.
TEST_F(HugePagesTest, OnThatCannotMoveTheSegmentKeepsTheOldOne) {
  HugePageMount mount(2u << 20, 0);
  ASSERT_EQ(mount.error(), "");
  testing::DaemonProcess daemon({"--capacity", "8MiB", "--huge-pages", "off"});
  ASSERT_TRUE(daemon.Start());
  auto c = Client::Connect(daemon.tcp());
  ASSERT_TRUE(c.has_value());
  ASSERT_EQ((*c)->Set("kept", "1"), true);
  EXPECT_EQ(daemon.Stop(), 0);
  const testing::ProgramResult refused = testing::RunCachetd(
      {"--segment", daemon.segment(), "--capacity", "8MiB", "--huge-pages", "on", "--huge-pages-dir", mount.dir()});
  EXPECT_EQ(refused.code, 1);
  EXPECT_NE(refused.err.find("huge-pages = on: cannot create segment file"), std::string::npos) << refused.err;
  ASSERT_TRUE(daemon.Start(daemon.tcp()));
  auto again = Client::Connect(daemon.tcp());
  ASSERT_TRUE(again.has_value());
  EXPECT_EQ((*again)->Get("kept").value(), "1");
}

}  // namespace
}  // namespace cachet
