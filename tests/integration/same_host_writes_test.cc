// Same-host writes: a client on the daemon's host writes the segment
// directly, under its writer lock, while the daemon grants it; every write
// still lands where the daemon serves it from, whatever happens to the daemon
// (reload, stop, kill -9, a rebuilt segment) and to the clients (kill -9).
#include <gtest/gtest.h>

#include <fstream>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "cachet/client.h"
#include "child_process.h"
#include "daemon_process.h"

namespace cachet {
namespace {

using std::chrono::milliseconds;
using testing::Patient;

// For calls meant to fail fast once the daemon is gone.
ClientOptions Quick() {
  ClientOptions o;
  o.timeout = milliseconds(200);
  o.retries = 0;
  return o;
}

std::unique_ptr<Client> Attached(const std::string& ipc, const ClientOptions& options = Patient()) {
  auto client = Client::Connect(ipc, options);
  if (!client) {
    ADD_FAILURE() << client.error().ToString();
    return nullptr;
  }
  if (!testing::WaitUntilAttached(**client)) ADD_FAILURE() << "never attached to the segment";
  return std::move(*client);
}

// Requests the daemon served between two STATS calls, not counting the
// second STATS itself.
int64_t RequestsDuring(Client& observer, const std::function<void()>& work) {
  const int64_t before = testing::StatOf(observer, "requests");
  work();
  return testing::StatOf(observer, "requests") - before - 1;
}

// A same-host client asks INFO once a second (has the segment changed?),
// so a window may hold one request more than the work's own.
::testing::AssertionResult ServedAbout(int64_t served, int64_t expected) {
  if (served == expected || served == expected + 1) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << served << " requests served, expected " << expected
                                       << " (or one more: an INFO re-check)";
}

TEST(SameHostWritesTest, EveryWriteOpSkipsTheSocketAndIsSeenOverTcp) {
  testing::DaemonProcess daemon;
  ASSERT_TRUE(daemon.Start());
  EXPECT_NE(daemon.log().find("same-host writes: clients on this host write segment"), std::string::npos)
      << daemon.log();
  auto local = Attached(daemon.ipc());
  auto remote = Client::Connect(daemon.tcp(), Patient());
  ASSERT_TRUE(local && remote.has_value());
  EXPECT_TRUE(local->WritesSharedMemory());
  EXPECT_EQ(testing::StatOf(**remote, "same_host_writes"), 1);

  const int64_t served = RequestsDuring(**remote, [&] {
    for (int i = 0; i < 200; ++i) ASSERT_EQ(local->Set("k" + std::to_string(i), "v" + std::to_string(i)), true);
    ASSERT_EQ(local->Set("k1", "again", {milliseconds(0), SetCondition::kIfAbsent}), false);
    ASSERT_EQ(local->Del("k2"), true);
    ASSERT_EQ(local->Del("k2"), false);
    ASSERT_EQ(local->Incr("n", 5), 5);
    ASSERT_EQ(local->Decr("n", 2), 3);
    ASSERT_EQ(local->Expire("k3", milliseconds(0)), true);  // a deadline now: gone
    ASSERT_EQ(local->Expire("k4", std::chrono::hours(1)), true);
    ASSERT_TRUE(local->MSet({{"m1", "a"}, {"m2", "b"}}).has_value());
  });
  EXPECT_TRUE(ServedAbout(served, 0)) << "a same-host write went over the socket";
  // Wrong input is refused as the daemon would, and changes nothing.
  auto not_integer = local->Incr("k5");
  ASSERT_FALSE(not_integer.has_value());
  EXPECT_EQ(not_integer.error().code, ErrorCode::kNotInteger);
  auto too_large = local->Set("big", std::string(2u << 20, 'x'));
  ASSERT_FALSE(too_large.has_value());
  EXPECT_EQ(too_large.error().code, ErrorCode::kValueTooLarge);

  Client& r = **remote;
  EXPECT_EQ(r.Get("k0").value(), "v0");
  EXPECT_EQ(r.Get("k1").value(), "v1");
  EXPECT_EQ(r.Get("k2").value(), std::nullopt);
  EXPECT_EQ(r.Get("k3").value(), std::nullopt);
  EXPECT_EQ(r.Get("k5").value(), "v5");
  EXPECT_EQ(r.Get("n").value(), "3");
  const auto ttl = r.Ttl("k4").value();
  ASSERT_TRUE(ttl.has_value());
  EXPECT_GT(*ttl, std::chrono::minutes(59));
  EXPECT_EQ(r.Get("m2").value(), "b");
  EXPECT_EQ(r.Get("big").value(), std::nullopt);
}

TEST(SameHostWritesTest, TheSettingTurnsThemOffAndOnAtReload) {
  const std::string config = "/tmp/" + testing::UniqueSegmentName("shw") + ".conf";
  std::ofstream(config) << "same-host-writes = false\n";
  testing::DaemonProcess daemon({"--config", config});
  ASSERT_TRUE(daemon.Start());
  auto local = Attached(daemon.ipc());
  ASSERT_TRUE(local);
  EXPECT_FALSE(local->WritesSharedMemory());
  EXPECT_TRUE(ServedAbout(RequestsDuring(*local,
                                         [&] {
                                           for (int i = 0; i < 50; ++i)
                                             ASSERT_EQ(local->Set("k" + std::to_string(i), "v"), true);
                                         }),
                          50));

  std::ofstream(config) << "same-host-writes = true\n";
  const size_t from = daemon.log().size();
  daemon.Hup();
  ASSERT_TRUE(daemon.WaitForLog("configuration reloaded", from)) << daemon.log();
  EXPECT_NE(daemon.log().find("same-host writes: clients on this host write", from), std::string::npos);
  EXPECT_TRUE(local->WritesSharedMemory());  // the grant is in the segment: seen at once
  EXPECT_TRUE(ServedAbout(RequestsDuring(*local, [&] { ASSERT_EQ(local->Set("direct", "1"), true); }), 0));

  std::ofstream(config) << "same-host-writes = off\n";
  const size_t again = daemon.log().size();
  daemon.Hup();
  ASSERT_TRUE(daemon.WaitForLog("configuration reloaded", again)) << daemon.log();
  EXPECT_FALSE(local->WritesSharedMemory());
  EXPECT_TRUE(ServedAbout(RequestsDuring(*local, [&] { ASSERT_EQ(local->Set("through", "2"), true); }), 1));
  EXPECT_EQ(local->Get("direct").value(), "1");
  EXPECT_EQ(local->Get("through").value(), "2");
  std::remove(config.c_str());
}

// The hazard: a client still mapping a segment the daemon no longer serves
// would write where nobody reads. The daemon revokes the grant on the old
// segment before it drops it, even after a kill -9 of the one before, so the
// client's next write goes over the socket into the new segment.
TEST(SameHostWritesTest, AWriteAfterARebuildReachesTheNewSegmentNotTheOldOne) {
  testing::DaemonProcess daemon;
  ASSERT_TRUE(daemon.Start());
  auto local = Attached(daemon.ipc());
  ASSERT_TRUE(local);
  ASSERT_EQ(local->Set("before", "1"), true);
  ASSERT_TRUE(local->WritesSharedMemory());
  daemon.Kill();  // the grant stays in the segment: no daemon revoked it

  daemon.SetExtraArgs({"--capacity", "16MiB"});
  ASSERT_TRUE(daemon.Start(daemon.tcp()));
  ASSERT_NE(daemon.log().find("rebuilding it empty"), std::string::npos) << daemon.log();
  ASSERT_EQ(local->Set("after", "2"), true);  // at once: before the client's 1 s re-check
  auto remote = Client::Connect(daemon.tcp(), Patient());
  ASSERT_TRUE(remote.has_value());
  EXPECT_EQ((*remote)->Get("after").value(), "2");
  EXPECT_EQ((*remote)->Get("before").value(), std::nullopt);  // the rebuild dropped everything
  // Within its check interval the client attaches to the new segment and
  // writes it directly again.
  EXPECT_TRUE(testing::WaitUntil(
      [&] {
        (void)local->Get("x");
        return local->WritesSharedMemory();
      },
      std::chrono::seconds(10), milliseconds(5)));
  const int64_t served = RequestsDuring(**remote, [&] { ASSERT_EQ(local->Set("direct", "3"), true); });
  EXPECT_TRUE(ServedAbout(served, 0));
  EXPECT_EQ((*remote)->Get("direct").value(), "3");
}

// After a kill -9 the grant stays, but the dead daemon's heartbeat ages:
// writes land in the segment (a warm restart keeps them) until it is older
// than Cache::kGuestHeartbeatLimit, then they go to the socket and fail.
TEST(SameHostWritesTest, AfterAKillNineWritesStopOnceTheHeartbeatIsStale) {
  testing::DaemonProcess daemon;
  ASSERT_TRUE(daemon.Start());
  auto local = Attached(daemon.ipc(), Quick());
  ASSERT_TRUE(local);
  ASSERT_TRUE(local->WritesSharedMemory());
  daemon.Kill();
  std::vector<std::string> landed;
  std::optional<Error> refused;
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  for (int i = 0; !refused && std::chrono::steady_clock::now() < give_up; ++i) {
    const std::string key = "w" + std::to_string(i);
    auto r = local->Set(key, "1");
    if (r) {
      landed.push_back(key);
    } else {
      refused.emplace(r.error());
    }
    std::this_thread::sleep_for(milliseconds(1));
  }
  ASSERT_TRUE(refused.has_value()) << "writes went on landing 10 s after the daemon died";
  EXPECT_TRUE(refused->code == ErrorCode::kUnavailable || refused->code == ErrorCode::kTimeout) << refused->ToString();
  const std::string failed = "w" + std::to_string(landed.size());
  ASSERT_TRUE(daemon.Start(daemon.tcp()));  // a warm restart: same options
  auto remote = Client::Connect(daemon.tcp(), Patient());
  ASSERT_TRUE(remote.has_value());
  for (const std::string& key : landed) EXPECT_EQ((*remote)->Get(key).value(), "1") << key;
  EXPECT_EQ((*remote)->Get(failed).value(), std::nullopt);
}

TEST(SameHostWritesTest, AStoppedDaemonTakesTheGrantBackSoWritesFail) {
  testing::DaemonProcess daemon;
  ASSERT_TRUE(daemon.Start());
  auto local = Attached(daemon.ipc(), Quick());
  ASSERT_TRUE(local);
  ASSERT_EQ(local->Set("k", "1"), true);
  EXPECT_EQ(daemon.Stop(), 0);
  EXPECT_FALSE(local->WritesSharedMemory());
  auto r = local->Set("k", "2");
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, ErrorCode::kUnavailable);
  EXPECT_EQ(local->Get("k").value(), "1");  // reads still come from the kept segment
}

// A same-host client stopped (SIGSTOP: a debugger, a frozen container)
// while it holds the segment's writer lock does not freeze the daemon:
// writes are answered BUSY, naming the stopped thread, and not run; reads,
// PING and STATS go on; once the client goes on, so do writes. A stop lands
// inside the lock only sometimes, so the test stops the writer until one has.
TEST(SameHostWritesTest, AClientStoppedHoldingTheLockDoesNotFreezeTheDaemon) {
  testing::DaemonProcess daemon;
  ASSERT_TRUE(daemon.Start());
  const std::string ipc = daemon.ipc();
  ClientOptions once = Patient();
  once.retries = 0;
  auto remote = Client::Connect(daemon.tcp(), once);
  ASSERT_TRUE(remote.has_value());
  ASSERT_EQ((*remote)->Set("before", "1"), true);
  auto writer = testing::ChildProcess::Fork(
      [&ipc] {
        auto c = Client::Connect(ipc, Patient());
        if (!c || !testing::WaitUntilAttached(**c) || !(*c)->WritesSharedMemory()) return 10;
        if (!(*c)->Set("writing", "yes").has_value()) return 11;
        for (uint64_t i = 0; !testing::ChildProcess::StopRequested(); ++i)
          (void)(*c)->Set("k" + std::to_string(i % 100), "v");
        return 0;
      },
      "same-host writer");
  // Attaching can take over a second on a loaded machine: stopping the
  // writer before it writes would never catch it inside the lock.
  ASSERT_TRUE(testing::WaitUntil([&] {
    auto v = (*remote)->Get("writing");
    return (v && *v) || !writer.running();
  })) << "the writer never wrote";
  ASSERT_TRUE(writer.running()) << "the writer exited with " << writer.Stop(testing::ChildProcess::kAnyExit);
  std::optional<Error> busy;
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  for (int attempt = 0; attempt < 100 && !busy && std::chrono::steady_clock::now() < give_up; ++attempt) {
    ASSERT_TRUE(writer.running()) << "the writer exited with " << writer.Stop(testing::ChildProcess::kAnyExit);
    writer.Signal(SIGSTOP);
    std::this_thread::sleep_for(milliseconds(20));
    const auto t0 = std::chrono::steady_clock::now();
    auto r = (*remote)->Set("during", "x");
    EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(2)) << "the daemon waited on the lock";
    // A BUSY that names no stopped thread is the lock taken by the writer
    // while it ran (a loaded machine can starve the daemon's 250 ms wait):
    // not the case under test, so stop it again.
    if (!r && r.error().message.find("(stopped)") != std::string::npos) busy = r.error();
    if (!busy) writer.Signal(SIGCONT);
  }
  ASSERT_TRUE(busy.has_value()) << "no stop landed inside the writer lock in 100 tries";
  EXPECT_EQ(busy->code, ErrorCode::kBusy) << busy->ToString();
  EXPECT_NE(busy->message.find("(stopped)"), std::string::npos) << busy->ToString();
  EXPECT_NE(busy->message.find("was not run"), std::string::npos) << busy->ToString();
  // Later writes do not wait again while it stays held, and say so.
  auto again = (*remote)->Set("during", "x");
  ASSERT_FALSE(again.has_value());
  EXPECT_EQ(again.error().code, ErrorCode::kBusy) << again.error().ToString();
  EXPECT_NE(again.error().message.find("is still held by thread"), std::string::npos) << again.error().ToString();
  // Reads and the rest go on while the lock stays held.
  EXPECT_EQ((*remote)->Get("before").value(), "1");
  EXPECT_TRUE((*remote)->Ping().has_value());
  EXPECT_GE(testing::StatOf(**remote, "busy_replies"), 1);
  EXPECT_NE(daemon.log().find("writes are answered BUSY until it is free"), std::string::npos) << daemon.log();
  writer.Signal(SIGCONT);
  EXPECT_TRUE(testing::WaitUntil([&] { return (*remote)->Set("after", "y").has_value(); }));
  EXPECT_EQ((*remote)->Get("after").value(), "y");
  EXPECT_TRUE(daemon.WaitForLog("writer lock is free again"));
  EXPECT_EQ(writer.Stop(), 0);
}

// Clients killed with SIGKILL in the middle of their write loops (some while
// holding the segment's writer lock) block nobody: the daemon and the other
// clients go on writing, and every value read is one written for its key.
TEST(SameHostWritesTest, ClientsKilledWhileWritingBlockNobody) {
  testing::DaemonProcess daemon;
  ASSERT_TRUE(daemon.Start());
  const std::string ipc = daemon.ipc();
  auto remote = Client::Connect(daemon.tcp(), Patient());
  ASSERT_TRUE(remote.has_value());
  constexpr int kRounds = 12;
  for (int round = 0; round < kRounds; ++round) {
    auto writer = testing::ChildProcess::Fork(
        [&ipc, round] {
          auto c = Client::Connect(ipc, Patient());
          if (!c || !testing::WaitUntilAttached(**c) || !(*c)->WritesSharedMemory()) return 10;
          for (uint64_t i = 0;; ++i) {
            const std::string key = "k" + std::to_string(i % 300);
            if (!(*c)->Set(key, key + "=" + std::to_string(round)).has_value()) return 11;
          }
        },
        "same-host writer");
    std::this_thread::sleep_for(milliseconds(150 + 37 * round));
    writer.Kill();
    ASSERT_EQ((*remote)->Set("remote", std::to_string(round)), true) << daemon.log();
    ASSERT_EQ((*remote)->Get("remote").value(), std::to_string(round));
  }
  auto local = Attached(ipc);
  ASSERT_TRUE(local);
  ASSERT_EQ(local->Set("local", "ok"), true);
  // The killed clients did write, through the segment (not the socket).
  EXPECT_GT(testing::StatOf(**remote, "sets"), 1000);
  int present = 0;
  for (int i = 0; i < 300; ++i) {
    const std::string key = "k" + std::to_string(i);
    auto v = (*remote)->Get(key);
    ASSERT_TRUE(v.has_value()) << v.error().ToString();
    if (*v) {
      ++present;
      EXPECT_EQ((*v)->rfind(key + "=", 0), 0u) << key << " holds " << **v;
    }
  }
  EXPECT_GT(present, 0);
  EXPECT_EQ((*remote)->Get("local").value(), "ok");
}

}  // namespace
}  // namespace cachet
