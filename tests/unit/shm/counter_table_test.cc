// CounterTable: placement within a probe window, reclaim of idle counters
// (by sweep and by a new id that finds its window full), generations that
// keep a stale update off a reused slot, and exact counts across threads
// and processes, including processes killed while placing ids.
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "cachet/counter_table.h"
#include "test_util.h"

namespace cachet {
namespace {

using Value = CounterTable::Value;

// Adds 1 to hi and marks lo as touched.
const auto Increment = [](const Value& v) -> std::optional<Value> { return Value{1, v.hi + 1}; };
const auto Never = [](uint64_t, const Value&) { return false; };
const auto Always = [](uint64_t, const Value&) { return true; };

std::unique_ptr<CounterTable> Private(uint64_t capacity) {
  auto t = CounterTable::CreatePrivate(capacity);
  EXPECT_TRUE(t.has_value()) << t.error().ToString();
  return std::move(*t);
}

TEST(CounterTableTest, UpdatesAndLoadsById) {
  auto t = Private(1024);
  EXPECT_EQ(t->Load(7).hi, 0u);
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(t->Update(7, 0, Increment, Never).value());
  ASSERT_TRUE(t->Update(8, 0, Increment, Never).value());
  EXPECT_EQ(t->Load(7).hi, 5u);
  EXPECT_EQ(t->Load(8).hi, 1u);
  EXPECT_EQ(t->used(), 2u);
  // A function that declines writes nothing, but the id is placed.
  EXPECT_FALSE(t->Update(
                    9, 0, [](const Value&) -> std::optional<Value> { return std::nullopt; }, Never)
                   .value());
  EXPECT_EQ(t->Load(9).hi, 0u);
}

TEST(CounterTableTest, LowWordKeepsItsDocumentedWidth) {
  auto t = Private(64);
  const Value big{CounterTable::kMaxLo, ~uint64_t{0}};
  ASSERT_TRUE(t->Update(
                   3, 0, [&](const Value&) -> std::optional<Value> { return big; }, Never)
                  .value());
  EXPECT_EQ(t->Load(3).lo, CounterTable::kMaxLo);
  EXPECT_EQ(t->Load(3).hi, ~uint64_t{0});
}

TEST(CounterTableTest, BadArgumentsAreRefused) {
  auto t = Private(64);
  auto zero = t->Update(0, 0, Increment, Never);
  ASSERT_FALSE(zero.has_value());
  EXPECT_EQ(zero.error().code, ErrorCode::kInvalidArgument);
  EXPECT_FALSE(CounterTable::CreatePrivate(0).has_value());
  EXPECT_FALSE(CounterTable::CreatePrivate(uint64_t{1} << 29).has_value());
}

TEST(CounterTableTest, AFullWindowRefusesNewIdsUntilIdleOnesAreDropped) {
  auto t = Private(32);  // one probe window covers the whole table
  for (uint64_t id = 1; id <= 32; ++id) ASSERT_TRUE(t->Update(id, id, Increment, Never).has_value()) << id;
  auto full = t->Update(100, 0, Increment, Never);
  ASSERT_FALSE(full.has_value());
  EXPECT_EQ(full.error().code, ErrorCode::kNoSpace);
  // The idle check sees what each id was placed with: drop id 5 only.
  ASSERT_TRUE(t->Update(100, 0, Increment, [](uint64_t meta, const Value&) { return meta == 5; }).value());
  EXPECT_EQ(t->Load(5).hi, 0u);  // gone
  EXPECT_EQ(t->Load(100).hi, 1u);
  EXPECT_EQ(t->Load(6).hi, 1u);  // the others stay
  EXPECT_EQ(t->used(), 32u);
}

TEST(CounterTableTest, ReclaimDropsWhatTheIdleCheckApprovesAndIdsComeBackFresh) {
  auto t = Private(4096);
  for (uint64_t id = 1; id <= 1000; ++id) {
    for (uint64_t k = 0; k < id % 3; ++k) ASSERT_TRUE(t->Update(id, 0, Increment, Never).has_value());
  }
  // Ids counted to 1 or 2 are placed (667 of them): drop the 333 at 2.
  EXPECT_EQ(t->used(), 667u);
  const uint64_t dropped = t->Reclaim(4096, [](uint64_t, const Value& v) { return v.hi == 2; });
  EXPECT_EQ(dropped, 333u);
  EXPECT_EQ(t->used(), 334u);
  EXPECT_EQ(t->Load(2).hi, 0u);
  EXPECT_EQ(t->Load(4).hi, 1u);
  ASSERT_TRUE(t->Update(2, 0, Increment, Never).has_value());
  EXPECT_EQ(t->Load(2).hi, 1u);  // a dropped id starts again from zero
  EXPECT_EQ(t->Reclaim(4096, Always), 335u);
  EXPECT_EQ(t->used(), 0u);
}

TEST(CounterTableTest, SweepsShareOneCursor) {
  auto t = Private(1024);
  for (uint64_t id = 1; id <= 500; ++id) ASSERT_TRUE(t->Update(id, 0, Increment, Never).has_value());
  uint64_t dropped = 0;
  for (int i = 0; i < 4; ++i) dropped += t->Reclaim(256, Always);  // 4 x 256 slots: the whole table once
  EXPECT_EQ(dropped, 500u);
}

// Updates race a sweeper that drops every counter holding a mark, in a
// table so small that freed slots go to other ids. Each update marks an
// unmarked counter with its own id (and declines on a marked one). Then
// marks written == marks dropped + marks left (no update lost or applied
// twice), and every mark the sweeper judges sits in a slot placed for that
// id (no update landed on a slot after it changed hands).
TEST(CounterTableConcurrencyTest, UpdatesRacingReclaimBalanceExactly) {
  auto t = Private(32);
  // At least kRounds each, and on until the sweeper has dropped kDrops marks
  // (the threads may start at different times, or share one CPU), for at
  // most 10 seconds.
  constexpr int kThreads = 2, kIds = 16, kRounds = 20000;
  constexpr uint64_t kDrops = 100;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  std::atomic<bool> done{false};
  std::atomic<uint64_t> written{0}, dropped{0}, misplaced{0};
  const auto more = [&](int r) {
    return r < kRounds || (dropped.load() < kDrops && (r % 1024 != 0 || std::chrono::steady_clock::now() < deadline));
  };
  std::thread sweeper([&] {
    while (!done.load()) {
      dropped += t->Reclaim(32, [&](uint64_t meta, const Value& v) {
        if (v.hi == 1 && v.lo != meta) ++misplaced;
        return v.hi == 1;
      });
    }
  });
  std::vector<std::thread> threads;
  for (int th = 0; th < kThreads; ++th) {
    threads.emplace_back([&, th] {
      for (int r = 0; more(r); ++r) {
        const uint64_t id = 1 + (r * 7 + th) % kIds;
        auto ok = t->Update(
            id, /*meta=*/id,
            [id](const Value& v) -> std::optional<Value> {
              if (v.hi != 0) return std::nullopt;
              return Value{id, 1};
            },
            Never);
        ASSERT_TRUE(ok.has_value()) << ok.error().ToString();
        if (*ok) ++written;
      }
    });
  }
  for (auto& th : threads) th.join();
  done = true;
  sweeper.join();
  uint64_t left = 0;
  for (uint64_t id = 1; id <= kIds; ++id) {
    const Value v = t->Load(id);
    if (v.hi == 1) {
      EXPECT_EQ(v.lo, id);
    }
    left += v.hi;
  }
  EXPECT_GE(dropped.load(), kDrops);  // the race happened
  EXPECT_EQ(misplaced.load(), 0u);
  EXPECT_EQ(written.load(), dropped.load() + left);
}

// Forks `n` children that wait for one signal and then run `child`, whose
// result is their exit code; returns the exit codes.
template <typename Child>
std::vector<int> RunTogether(int n, Child child) {
  int start[2];
  if (pipe(start) != 0) return {};
  std::vector<pid_t> children;
  for (int c = 0; c < n; ++c) {
    const pid_t pid = fork();
    if (pid == 0) {
      char go;
      _exit(read(start[0], &go, 1) == 1 ? child() : 99);
    }
    children.push_back(pid);
  }
  for (int c = 0; c < n; ++c) (void)!write(start[1], "g", 1);
  close(start[0]);
  close(start[1]);
  std::vector<int> codes;
  for (pid_t pid : children) {
    int status = 0;
    waitpid(pid, &status, 0);
    codes.push_back(WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
  }
  return codes;
}

class NamedCounterTableTest : public ::testing::Test {
 protected:
  void TearDown() override { (void)CounterTable::Remove(name_); }
  const std::string name_ = testing::UniqueSegmentName("ctr");
};

TEST_F(NamedCounterTableTest, ProcessesPlacingTheSameIdsCountExactly) {
  ASSERT_TRUE(CounterTable::Open(name_, 1 << 16).has_value());
  constexpr int kChildren = 3, kIds = 20000;
  // Every child places every id (each first sight races the others).
  const std::vector<int> codes = RunTogether(kChildren, [&] {
    auto t = CounterTable::Open(name_, 1 << 16);
    if (!t) return 2;
    for (int id = 1; id <= kIds; ++id) {
      if (!(*t)->Update(static_cast<uint64_t>(id), 0, Increment, Never)) return 3;
    }
    return 0;
  });
  EXPECT_EQ(codes, std::vector<int>(kChildren, 0));
  auto t = std::move(*CounterTable::Open(name_, 1 << 16));
  EXPECT_EQ(t->used(), uint64_t{kIds});  // no id placed twice
  for (uint64_t id = 1; id <= kIds; ++id) ASSERT_EQ(t->Load(id).hi, uint64_t{kChildren}) << id;
}

// A placer killed while it holds a placement lock leaves the lock to be
// taken over, and any slot it left half-placed to be freed, by the next
// placer of that stripe. Rounds go on (bounded) until a kill has landed
// inside a placement, which the table counts as a repair.
TEST_F(NamedCounterTableTest, PlacersKilledMidwayLeaveEveryIdPlaceable) {
  constexpr uint64_t kCapacity = 1 << 16;
  auto t = std::move(*CounterTable::Open(name_, kCapacity));
  ASSERT_EQ(t->repairs(), 0u);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(40);
  uint64_t base = 1, own = uint64_t{1} << 40;  // the children's ids, and the parent's (never shared)
  int round = 0;
  for (; t->repairs() == 0 && std::chrono::steady_clock::now() < deadline; ++round, base += 1'000'000) {
    int ready[2];
    ASSERT_EQ(pipe(ready), 0);
    const pid_t pid = fork();
    if (pid == 0) {
      auto mine = CounterTable::Open(name_, kCapacity);
      if (!mine) _exit(2);
      // New ids only: every update takes a placement lock. Dropping keeps
      // room for more.
      for (uint64_t id = base;; ++id) {
        if (!(*mine)->Update(id, 0, Increment, Never)) (*mine)->Reclaim(kCapacity, Always);
        if (id == base + 64) (void)!write(ready[1], "r", 1);
      }
    }
    close(ready[1]);  // a child that dies before it is ready ends the read
    char r;
    const bool looping = read(ready[0], &r, 1) == 1;
    close(ready[0]);
    if (looping) std::this_thread::sleep_for(std::chrono::microseconds(500 + 997 * (round % 13)));  // a new moment
    kill(pid, SIGKILL);
    waitpid(pid, nullptr, 0);
    ASSERT_TRUE(looping);
    // Lock every stripe (4,096 new ids miss one of 64 stripes with odds of
    // e^-64), so a lock the child died holding is found now.
    t->Reclaim(kCapacity, Always);
    for (int i = 0; i < 4096; ++i) ASSERT_TRUE(t->Update(own++, 0, Increment, Never).has_value());
  }
  ASSERT_GT(t->repairs(), 0u) << "no kill fell inside a placement in " << round << " rounds";
  // Every stripe still places, and each id counts exactly.
  // (used() may be one off per kill that fell between placing and counting
  // a slot, as documented; the ids themselves must be exact.)
  t->Reclaim(kCapacity, Always);
  for (uint64_t id = 1; id <= 4096; ++id) {
    ASSERT_TRUE(t->Update(id * 7919, 0, Increment, Never).has_value()) << id;
    ASSERT_TRUE(t->Update(id * 7919, 0, Increment, Never).has_value()) << id;
    ASSERT_EQ(t->Load(id * 7919).hi, 2u) << id;
  }
}

TEST_F(NamedCounterTableTest, ProcessesStartingTogetherAllOpenOneTable) {
  constexpr int kChildren = 4;
  const std::vector<int> codes = RunTogether(kChildren, [&] {
    auto t = CounterTable::Open(name_, 1 << 20);  // 32 MiB: making it takes a while
    if (!t) {
      std::fprintf(stderr, "%s\n", t.error().ToString().c_str());
      return 2;
    }
    return (*t)->Update(42, 0, Increment, Never) ? 0 : 3;
  });
  EXPECT_EQ(codes, std::vector<int>(kChildren, 0));
  EXPECT_EQ(CounterTable::Open(name_, 1 << 20).value()->Load(42).hi, uint64_t{kChildren});
}

TEST_F(NamedCounterTableTest, ATableNeverFinishedIsReportedAfterAWait) {
  // What a maker killed before formatting leaves: the object, all zeros.
  const int fd = shm_open(("/" + name_).c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(ftruncate(fd, 4096 + 64 * 32), 0);
  close(fd);
  auto t = CounterTable::Open(name_, 64);
  ASSERT_FALSE(t.has_value());
  EXPECT_NE(t.error().message.find("never finished"), std::string::npos) << t.error().message;
}

TEST_F(NamedCounterTableTest, AnExistingTableKeepsTheCapacityItWasMadeWith) {
  ASSERT_TRUE(CounterTable::Open(name_, 64).has_value());
  auto again = CounterTable::Open(name_, 999);
  ASSERT_TRUE(again.has_value());
  EXPECT_EQ((*again)->capacity(), 64u);
}

// The header's layout version: a uint32_t at byte 8 (TableHeader in
// shm/src/counter_table.cc), after the 8-byte magic.
constexpr off_t kVersionAt = 8;

uint32_t PokeVersion(const std::string& name, std::optional<uint32_t> version, std::optional<uint64_t> magic = {}) {
  const int fd = shm_open(("/" + name).c_str(), O_RDWR, 0600);
  EXPECT_GE(fd, 0);
  uint32_t old = 0;
  EXPECT_EQ(pread(fd, &old, sizeof old, kVersionAt), static_cast<ssize_t>(sizeof old));
  if (version) {
    EXPECT_EQ(pwrite(fd, &*version, sizeof *version, kVersionAt), static_cast<ssize_t>(sizeof *version));
  }
  if (magic) {
    EXPECT_EQ(pwrite(fd, &*magic, sizeof *magic, 0), static_cast<ssize_t>(sizeof *magic));
  }
  close(fd);
  return old;
}

TEST_F(NamedCounterTableTest, ATableOfAnotherLayoutIsRefusedWithAReason) {
  {
    auto made = CounterTable::Open(name_, 64);
    ASSERT_TRUE(made.has_value());
    ASSERT_TRUE((*made)->Update(5, 0, Increment, Never).value());
  }
  ASSERT_EQ(PokeVersion(name_, std::nullopt), 2u);  // this build's layout
  // A later layout that kept the magic, and an earlier one with its own.
  const std::pair<uint32_t, std::optional<uint64_t>> others[] = {{3, std::nullopt}, {1, 0x3174726574636321ull}};
  for (const auto& [version, magic] : others) {
    SCOPED_TRACE("version " + std::to_string(version));
    PokeVersion(name_, version, magic);
    auto t = CounterTable::Open(name_, 64);
    ASSERT_FALSE(t.has_value());
    EXPECT_EQ(t.error().code, ErrorCode::kVersionMismatch);
    EXPECT_NE(t.error().message.find("layout version " + std::to_string(version) + ", this library reads 2"),
              std::string::npos)
        << t.error().message;
    EXPECT_NE(t.error().message.find("remove it to rebuild"), std::string::npos) << t.error().message;
    EXPECT_EQ(PokeVersion(name_, std::nullopt), version);  // refused untouched
  }
  // Removed, the name makes a fresh table.
  ASSERT_TRUE(CounterTable::Remove(name_).has_value());
  auto fresh = CounterTable::Open(name_, 64);
  ASSERT_TRUE(fresh.has_value()) << fresh.error().ToString();
  EXPECT_EQ((*fresh)->Load(5).hi, 0u);
}

// A capacity whose bytes (header + 32 per id) wrap to the mapping's size:
// refused as corrupt, not trusted (found by fuzzing).
TEST_F(NamedCounterTableTest, AForgedCapacityIsRefusedAsCorrupt) {
  ASSERT_TRUE(CounterTable::Open(name_, 256).has_value());
  constexpr off_t kCapacityAt = 16;                   // TableHeader: magic, version, reserved, capacity
  const uint64_t forged = (uint64_t{1} << 59) + 256;  // 32 x forged wraps to 32 x 256
  const int fd = shm_open(("/" + name_).c_str(), O_RDWR, 0600);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(pwrite(fd, &forged, sizeof forged, kCapacityAt), static_cast<ssize_t>(sizeof forged));
  close(fd);
  auto t = CounterTable::Open(name_, 256);
  ASSERT_FALSE(t.has_value());
  EXPECT_EQ(t.error().code, ErrorCode::kCorrupt);
}

}  // namespace
}  // namespace cachet
