// Several processes on one named segment: forked readers read what the
// writer wrote; readers and writers killed with SIGKILL harm no one else.
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <vector>

#include "cachet/cache.h"
#include "test_util.h"
#include "value_codec.h"

namespace cachet {
namespace {

using testing::CheckValue;
using testing::MakeValue;

constexpr int kKeys = 500;

std::string Key(int i) { return "key" + std::to_string(i); }

// Runs `body` in a child process; the child's exit status is body's result.
template <typename Body>
pid_t Spawn(Body body) {
  const pid_t pid = fork();
  if (pid == 0) _exit(body());
  return pid;
}

int WaitExit(pid_t pid) {
  int status = 0;
  if (waitpid(pid, &status, 0) != pid) return -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

class CrossProcessTest : public ::testing::Test {
 protected:
  void SetUp() override {
    CacheOptions o;
    o.capacity_bytes = 64 << 10;  // less than kKeys values: evictions all the time
    o.max_value_size = 512;
    auto made = Cache::CreateNamed(name_, o);
    ASSERT_TRUE(made.has_value()) << made.error().ToString();
    cache_ = std::move(*made);
  }
  void KillWritersMidWrite(bool guest);
  void TearDown() override {
    cache_.reset();
    (void)Cache::RemoveNamed(name_);
  }

  // A child that attaches and reads every key in a loop until `deadline`,
  // exiting 0 if each value it read was a valid one for its key. With
  // `in_loop_fd`, it writes one byte there once it is inside its read loop.
  pid_t SpawnReader(std::chrono::milliseconds run_for, int in_loop_fd = -1) {
    return Spawn([this, run_for, in_loop_fd]() mutable {
      auto cache = Cache::OpenNamed(name_);
      if (!cache) return 10;
      const auto end = std::chrono::steady_clock::now() + run_for;
      std::string v;
      while (std::chrono::steady_clock::now() < end) {
        for (int i = 0; i < kKeys; ++i) {
          if ((*cache)->GetInto(Key(i), &v) && !CheckValue(Key(i), v)) return 11;
          if (in_loop_fd >= 0) {
            if (write(in_loop_fd, "r", 1) != 1) return 12;
            close(in_loop_fd);
            in_loop_fd = -1;
          }
        }
      }
      return 0;
    });
  }

  std::string name_ = testing::UniqueSegmentName("xproc");
  std::unique_ptr<Cache> cache_;
};

TEST_F(CrossProcessTest, ForkedReaderReadsWhatWriterWrote) {
  constexpr int kFew = 100;  // all fit: nothing is evicted
  for (int i = 0; i < kFew; ++i) ASSERT_TRUE(cache_->Set(Key(i), MakeValue(Key(i), 7)).has_value());
  const pid_t child = Spawn([this] {
    auto cache = Cache::OpenNamed(name_);
    if (!cache) return 10;
    for (int i = 0; i < kFew; ++i) {
      if ((*cache)->Get(Key(i)) != MakeValue(Key(i), 7)) return 11;
    }
    return (*cache)->Get("absent") ? 12 : 0;
  });
  EXPECT_EQ(WaitExit(child), 0);
  // The child's reads were counted in the shared segment.
  EXPECT_EQ(cache_->Stats().hits, static_cast<uint64_t>(kFew));
}

TEST_F(CrossProcessTest, ReaderSeesOnlyWrittenValuesWhileWriterRewrites) {
  const pid_t reader = SpawnReader(std::chrono::milliseconds(1500));
  uint64_t seq = 0;
  const auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(1500);
  while (std::chrono::steady_clock::now() < end) {
    for (int i = 0; i < kKeys; ++i) ASSERT_TRUE(cache_->Set(Key(i), MakeValue(Key(i), ++seq)).has_value());
  }
  EXPECT_EQ(WaitExit(reader), 0);
  EXPECT_GT(cache_->Stats().evictions, 0u);
}

// Each victim is killed only once it has said it is inside its read loop
// (attached, reading while the writer rewrites every key), so every kill
// lands where a reader can be killed mid-read.
TEST_F(CrossProcessTest, KilledReadersLeaveWriterAndOtherReadersUnaffected) {
  const pid_t survivor = SpawnReader(std::chrono::milliseconds(2000));
  uint64_t seq = 0;
  int killed_in_loop = 0;
  constexpr int kRounds = 20;
  for (int round = 0; round < kRounds; ++round) {
    int in_loop[2];
    ASSERT_EQ(pipe(in_loop), 0);
    const pid_t victim = SpawnReader(std::chrono::milliseconds(60000), in_loop[1]);
    close(in_loop[1]);
    // Writes go on until the victim reports it is reading (bounded).
    const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    bool reading = false;
    while (!reading && std::chrono::steady_clock::now() < end) {
      for (int i = 0; i < kKeys; ++i) ASSERT_TRUE(cache_->Set(Key(i), MakeValue(Key(i), ++seq)).has_value());
      pollfd p{in_loop[0], POLLIN, 0};
      char byte = 0;
      reading = poll(&p, 1, 10) == 1 && read(in_loop[0], &byte, 1) == 1;
    }
    close(in_loop[0]);
    // More writes while it reads, then the kill.
    for (int i = 0; i < kKeys; ++i) ASSERT_TRUE(cache_->Set(Key(i), MakeValue(Key(i), ++seq)).has_value());
    ASSERT_EQ(kill(victim, SIGKILL), 0);
    EXPECT_EQ(WaitExit(victim), 128 + SIGKILL);
    killed_in_loop += reading;
  }
  EXPECT_EQ(killed_in_loop, kRounds) << "victims killed before they were reading";
  // The writer never waited on a reader; the survivor saw only valid values.
  EXPECT_EQ(WaitExit(survivor), 0);
  for (int i = 0; i < kKeys; ++i) {
    auto v = cache_->Get(Key(i));
    if (v) {
      EXPECT_TRUE(CheckValue(Key(i), *v));
    }
  }
}

// Writers in other processes are killed with SIGKILL at varying moments of
// their write loop until one dies holding the writer lock; the next write
// here repairs and every value left is one written for its key. A guest
// (a same-host client of the daemon, writing under the grant) is killed
// the same way as an owner.
void CrossProcessTest::KillWritersMidWrite(bool guest) {
  cache_->SetClientWrites(guest);
  cache_->Heartbeat();
  // A guest's clock stands still at the heartbeat: it never finds the daemon silent.
  const int64_t heartbeat = cache_->Stats().heartbeat_ms;
  uint64_t repairs_seen = 0;
  for (int round = 0; round < 40 && repairs_seen == 0; ++round) {
    int in_loop[2];
    ASSERT_EQ(pipe(in_loop), 0);
    const pid_t writer = Spawn([this, guest, heartbeat, round, in_loop_fd = in_loop[1]]() mutable {
      FakeClock clock;
      clock.Set(heartbeat);
      auto cache = Cache::OpenNamed(name_, clock);
      if (!cache) return 10;
      for (uint64_t seq = 0;; ++seq) {
        const std::string key = Key(static_cast<int>(seq % kKeys));
        const std::string value = MakeValue(key, seq << 8 | static_cast<uint64_t>(round));
        if (!(guest ? (*cache)->GuestSet(key, value) : (*cache)->Set(key, value)).has_value()) return 11;
        if (seq % 5 == 0) {
          const std::string gone = Key(static_cast<int>((seq * 7) % kKeys));
          if (guest ? !(*cache)->GuestErase(gone).has_value() : ((*cache)->Erase(gone), false)) return 13;
        }
        if (seq == 100) {  // deep in its loop: the parent may aim its kill now
          if (write(in_loop_fd, "w", 1) != 1) return 12;
          close(in_loop_fd);
        }
      }
    });
    close(in_loop[1]);
    // However slow the host (sanitizers, load), the kill comes only once the
    // writer is writing, then after a delay that varies by round.
    pollfd p{in_loop[0], POLLIN, 0};
    char byte = 0;
    ASSERT_EQ(poll(&p, 1, 20000), 1) << "the writer never reached its loop";
    ASSERT_EQ(read(in_loop[0], &byte, 1), 1);
    close(in_loop[0]);
    usleep(200 * static_cast<useconds_t>(round % 7));
    ASSERT_EQ(kill(writer, SIGKILL), 0);
    ASSERT_EQ(WaitExit(writer), 128 + SIGKILL);
    // The next write takes over the lock; if the dead writer held it, it repairs.
    ASSERT_TRUE(cache_->Set("after", "kill").has_value());
    repairs_seen = cache_->Stats().repairs;
    const CacheStats s = cache_->Stats();
    ASSERT_LE(s.live_bytes, 64u << 10);
    uint64_t found = 0;
    for (int i = 0; i < kKeys; ++i) {
      auto v = cache_->Get(Key(i));
      if (!v) continue;
      ++found;
      ASSERT_TRUE(CheckValue(Key(i), *v)) << *v;
    }
    ASSERT_EQ(cache_->Get("after"), "kill");
    ASSERT_EQ(found + 1, cache_->Size());
  }
  EXPECT_GE(repairs_seen, 1u) << "no kill landed inside a write in 40 tries";
}

TEST_F(CrossProcessTest, WriterKilledMidWriteIsRepairedByTheNextWriter) { KillWritersMidWrite(false); }

TEST_F(CrossProcessTest, GuestKilledMidWriteIsRepairedByTheNextWriter) { KillWritersMidWrite(true); }

// A guest in another process writes only under the grant, and only while
// the daemon's heartbeat is fresh; otherwise every write fails with
// UNAVAILABLE and changes nothing, while the owner's writes go on. The grant
// is seen at once, by a process already attached.
TEST_F(CrossProcessTest, GuestWritesNeedTheGrantAndALiveDaemonAndChangeNothingWithoutThem) {
  ASSERT_TRUE(cache_->Set("kept", "1").has_value());
  ASSERT_TRUE(cache_->Set("n", "5").has_value());
  EXPECT_FALSE(cache_->ClientWritesGranted());  // a new segment grants nothing
  cache_->Heartbeat();
  const int64_t heartbeat = cache_->Stats().heartbeat_ms;
  int step[2], done[2];
  ASSERT_EQ(pipe(step), 0);
  ASSERT_EQ(pipe(done), 0);
  const pid_t guest = Spawn([&]() {
    FakeClock clock;
    clock.Set(heartbeat);
    auto cache = Cache::OpenNamed(name_, clock);
    if (!cache) return 10;
    Cache& c = **cache;
    const auto refused = [](const auto& r) { return !r.has_value() && r.error().code == ErrorCode::kUnavailable; };
    if (!refused(c.GuestSet("new", "x")) || !refused(c.GuestSet("kept", "2")) || !refused(c.GuestErase("kept")) ||
        !refused(c.GuestExpire("kept", std::chrono::milliseconds(0))) ||
        !refused(c.GuestIncr("n", 1, std::chrono::milliseconds(0)))) {
      return 11;
    }
    char b = 0;
    if (write(done[1], "1", 1) != 1 || read(step[0], &b, 1) != 1) return 12;  // the parent grants
    // Granted, but the daemon has been silent for longer than the limit.
    clock.Advance(Cache::kGuestHeartbeatLimit + std::chrono::milliseconds(1));
    if (!refused(c.GuestSet("new", "x"))) return 16;
    clock.Set(heartbeat + Cache::kGuestHeartbeatLimit.count());  // exactly at the limit: still alive
    if (c.GuestSet("new", "x") != true || c.GuestIncr("n", 2, std::chrono::milliseconds(0)) != 7 ||
        c.GuestErase("kept") != true || c.GuestErase("kept") != false) {
      return 13;
    }
    if (write(done[1], "2", 1) != 1 || read(step[0], &b, 1) != 1) return 14;  // the parent revokes
    return refused(c.GuestSet("late", "y")) ? 0 : 15;
  });
  char b = 0;
  ASSERT_EQ(read(done[0], &b, 1), 1);
  EXPECT_EQ(cache_->Get("kept"), "1");
  EXPECT_EQ(cache_->Get("n"), "5");
  EXPECT_FALSE(cache_->Contains("new"));
  EXPECT_EQ(cache_->Stats().sets, 2u);
  cache_->SetClientWrites(true);
  EXPECT_TRUE(cache_->ClientWritesGranted());
  ASSERT_EQ(write(step[1], "g", 1), 1);
  ASSERT_EQ(read(done[0], &b, 1), 1);
  EXPECT_EQ(cache_->Get("new"), "x");
  EXPECT_EQ(cache_->Get("n"), "7");
  EXPECT_FALSE(cache_->Contains("kept"));
  cache_->SetClientWrites(false);
  ASSERT_TRUE(cache_->Set("owner", "still writes").has_value());
  ASSERT_EQ(write(step[1], "r", 1), 1);
  EXPECT_EQ(WaitExit(guest), 0);
  EXPECT_FALSE(cache_->Contains("late"));
  for (int fd : {step[0], step[1], done[0], done[1]}) close(fd);
}

// A process stopped while it holds the writer lock (SIGSTOP, a debugger)
// makes others wait only as long as they choose: a lease waits its bound
// and names the holder, a guest write gives up after kGuestLockWait. Once
// the holder goes on, the lock is free again.
TEST_F(CrossProcessTest, AWriterStoppedHoldingTheLockIsWaitedForOnlyWithinABound) {
  cache_->SetClientWrites(true);
  cache_->Heartbeat();
  const int64_t heartbeat = cache_->Stats().heartbeat_ms;
  int held[2];
  ASSERT_EQ(pipe(held), 0);
  const pid_t holder = Spawn([&] {
    auto cache = Cache::OpenNamed(name_);
    if (!cache) return 10;
    auto lease = (*cache)->LeaseWriter(std::chrono::seconds(5));
    if (!lease) return 11;
    if (write(held[1], "h", 1) != 1) return 12;
    raise(SIGSTOP);
    return (*cache)->Set("holder", "went on").has_value() ? 0 : 13;  // inside its own lease
  });
  char b = 0;
  ASSERT_EQ(read(held[0], &b, 1), 1);
  ASSERT_TRUE(testing::WaitUntil([&] { return testing::ProcessState(holder) == 'T'; }, std::chrono::seconds(10),
                                 std::chrono::milliseconds(1)));

  const auto t0 = std::chrono::steady_clock::now();
  auto lease = cache_->LeaseWriter(std::chrono::milliseconds(100));
  ASSERT_FALSE(lease.has_value());
  EXPECT_EQ(lease.error().code, ErrorCode::kTimeout);
  EXPECT_NE(lease.error().message.find("thread " + std::to_string(holder) + " (stopped)"), std::string::npos)
      << lease.error().message;
  EXPECT_GE(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(100));

  FakeClock clock;
  clock.Set(heartbeat);
  auto guest = Cache::OpenNamed(name_, clock);
  ASSERT_TRUE(guest.has_value());
  auto refused = (*guest)->GuestSet("k", "v");
  ASSERT_FALSE(refused.has_value());
  EXPECT_EQ(refused.error().code, ErrorCode::kUnavailable);
  EXPECT_NE(refused.error().message.find("(stopped)"), std::string::npos) << refused.error().message;

  ASSERT_EQ(kill(holder, SIGCONT), 0);
  EXPECT_EQ(WaitExit(holder), 0);
  auto free = cache_->LeaseWriter(std::chrono::seconds(5));
  ASSERT_TRUE(free.has_value()) << free.error().ToString();
  // Within a lease this thread's writes run under it; a second lease is refused.
  ASSERT_TRUE(cache_->Set("owner", "1").has_value());
  EXPECT_TRUE(cache_->Erase("holder"));
  EXPECT_EQ(cache_->LeaseWriter(std::chrono::milliseconds(0)).error().code, ErrorCode::kInvalidArgument);
  close(held[0]);
  close(held[1]);
}

}  // namespace
}  // namespace cachet
