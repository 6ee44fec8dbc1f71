// Failures around the daemon: timeouts while it is down, reconnecting after
// a restart, warm restarts that keep the data, and kill -9 under write load.
#include <gtest/gtest.h>

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <sstream>
#include <vector>

#include "cachet/client.h"
#include "child_process.h"
#include "daemon_process.h"
#include "value_codec.h"

namespace cachet {
namespace {

using std::chrono::milliseconds;
using testing::CheckValue;
using testing::MakeValue;
using testing::Patient;

ClientOptions Quick() {
  ClientOptions o;
  o.timeout = milliseconds(200);
  o.retries = 2;
  o.backoff = milliseconds(10);
  return o;
}

TEST(RestartTest, CallsFailWithinTheirTimeoutWhenNoDaemonRuns) {
  const std::string endpoint = "ipc:///tmp/" + testing::UniqueSegmentName("none") + ".sock";
  auto client = Client::Connect(endpoint, Quick());
  ASSERT_TRUE(client.has_value());
  EXPECT_FALSE((*client)->ReadsSharedMemory());
  const auto start = std::chrono::steady_clock::now();
  auto r = (*client)->Get("k");
  const auto took = std::chrono::steady_clock::now() - start;
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, ErrorCode::kUnavailable);
  EXPECT_NE(r.error().message.find(endpoint), std::string::npos) << r.error().message;
  // 3 attempts of 200 ms plus 10 + 20 ms of backoff, and scheduling slack.
  EXPECT_LT(took, std::chrono::milliseconds(3000));
  auto incr = (*client)->Incr("n");  // not retried: could apply twice
  ASSERT_FALSE(incr.has_value());
}

TEST(RestartTest, ClientStopsWaitingWhenTheDaemonDiesMidSession) {
  testing::DaemonProcess daemon;
  ASSERT_TRUE(daemon.Start());
  auto client = Client::Connect(daemon.tcp(), Quick());
  ASSERT_TRUE(client.has_value());
  ASSERT_TRUE((*client)->Set("k", "v").value());
  daemon.Kill();
  auto r = (*client)->Set("k", "v2");
  ASSERT_FALSE(r.has_value());
  EXPECT_TRUE(r.error().code == ErrorCode::kUnavailable || r.error().code == ErrorCode::kTimeout)
      << r.error().ToString();
}

TEST(RestartTest, ClientReconnectsAfterRestartAndWarmRestartKeepsData) {
  testing::DaemonProcess daemon;
  ASSERT_TRUE(daemon.Start());
  const std::string tcp = daemon.tcp();
  auto over_tcp = Client::Connect(tcp, Patient());
  auto over_ipc = Client::Connect(daemon.ipc(), Patient());
  ASSERT_TRUE(over_tcp.has_value() && over_ipc.has_value());
  for (int i = 0; i < 100; ++i) ASSERT_TRUE((*over_tcp)->Set("k" + std::to_string(i), "v" + std::to_string(i)).value());
  EXPECT_EQ(daemon.Stop(), 0);
  EXPECT_NE(daemon.log().find("kept for a warm restart (100 entries)"), std::string::npos) << daemon.log();

  ASSERT_TRUE(daemon.Start(tcp));  // same endpoints, same segment
  EXPECT_NE(daemon.log().find("warm restart: re-attached"), std::string::npos) << daemon.log();
  for (auto* client : {over_tcp->get(), over_ipc->get()}) {
    auto v = client->Get("k7");
    ASSERT_TRUE(v.has_value()) << v.error().ToString();
    EXPECT_EQ(*v, "v7");
    EXPECT_TRUE(client->Set("after", "restart").value());
  }
  EXPECT_EQ((*over_ipc)->Get("after").value(), "restart");
}

TEST(RestartTest, RebuiltSegmentIsReattachedByClients) {
  testing::DaemonProcess daemon;
  ASSERT_TRUE(daemon.Start());
  auto client = Client::Connect(daemon.ipc(), Patient());
  ASSERT_TRUE(client.has_value());
  ASSERT_TRUE(testing::WaitUntilAttached(**client));
  ASSERT_TRUE((*client)->Set("old", "1").value());
  EXPECT_EQ(daemon.Stop(), 0);
  // Another capacity cannot reuse the segment: the daemon rebuilds it empty,
  // with the next generation.
  daemon.SetExtraArgs({"--capacity", "16MiB"});
  ASSERT_TRUE(daemon.Start(daemon.tcp()));
  EXPECT_NE(daemon.log().find("rebuilding it empty (generation 2)"), std::string::npos) << daemon.log();
  // The client still maps the old segment; within its check interval (1 s)
  // it notices the new generation and reads the new, empty one. It looks at
  // the clock once per 1,024 reads, so the test reads without pausing (a
  // pause between reads would stretch the interval to 1,024 pauses).
  Result<std::optional<std::string>> v = std::optional<std::string>("1");
  EXPECT_TRUE(testing::WaitUntil(
      [&] {
        v = (*client)->Get("old");
        return !v || !*v;
      },
      std::chrono::seconds(10), milliseconds(0)));
  ASSERT_TRUE(v.has_value()) << v.error().ToString();
  EXPECT_EQ(*v, std::nullopt);
  EXPECT_TRUE((*client)->ReadsSharedMemory());
  ASSERT_TRUE((*client)->Set("new", "2").value());
  EXPECT_EQ((*client)->Get("new").value(), "2");
}

// The address ranges of the store's code (libcachet_shm) mapped in `pid`.
std::vector<std::pair<uint64_t, uint64_t>> StoreCode(pid_t pid) {
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  std::istringstream maps(testing::ReadFile("/proc/" + std::to_string(pid) + "/maps"));
  for (std::string line; std::getline(maps, line);) {
    uint64_t begin = 0, end = 0;
    char perms[5] = {};
    if (line.find("libcachet_shm") != std::string::npos &&
        std::sscanf(line.c_str(), "%" SCNx64 "-%" SCNx64 " %4s", &begin, &end, perms) == 3 && perms[2] == 'x') {
      ranges.emplace_back(begin, end);
    }
  }
  return ranges;
}

// Kills cachetd with SIGKILL, aiming at a moment when its request thread
// runs the store's code (inside a write, when writes are the load): stops
// it, looks where it stands (its program counter, when stopped outside a
// system call) and lets it run on, up to `looks` times. Aiming only raises
// the odds; the repairs after the restart tell where the kill landed.
void KillInsideTheStore(testing::DaemonProcess& daemon, int looks) {
  const pid_t pid = daemon.pid();
  const auto code = StoreCode(pid);
  const std::string proc = "/proc/" + std::to_string(pid);
  for (int i = 0; i < looks && !code.empty(); ++i) {
    daemon.Signal(SIGSTOP);
    const bool stopped =
        testing::WaitUntil([&] { return testing::ProcessState(pid) == 'T'; }, std::chrono::seconds(5), milliseconds(0));
    uint64_t sp = 0, pc = 0;
    if (stopped &&
        std::sscanf(testing::ReadFile(proc + "/syscall").c_str(), "-1 %" SCNx64 " %" SCNx64, &sp, &pc) == 2 &&
        std::any_of(code.begin(), code.end(), [&](const auto& r) { return pc >= r.first && pc < r.second; })) {
      break;
    }
    daemon.Signal(SIGCONT);
  }
  daemon.Kill();
}

// Writers hammer the daemon while it is killed with SIGKILL again and again;
// after each restart every key read back holds a value written for it. The
// kills that matter land while cachetd holds the segment's writer lock, in
// the middle of a write; the test goes on (bounded) until several have, and
// counts them by the repairs the restart reports.
TEST(RestartTest, KillNineUnderWriteLoadNeverYieldsAWrongValue) {
  // A small cache that evicts (items move within and between logs), written
  // in batches so that the daemon spends most of its time inside writes.
  testing::DaemonProcess daemon({"--capacity", "1MiB", "--max-value-size", "4KiB"});
  ASSERT_TRUE(daemon.Start());
  const std::string tcp = daemon.tcp();
  const std::string ipc = daemon.ipc();
  constexpr int kKeys = 3000;
  constexpr int kBatch = 100;
  constexpr int kWriters = 3;
  constexpr int kWantKillsInWrites = 5;
  constexpr int kMaxRounds = 40;
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(100);

  auto stat = [&](const char* name) {
    auto c = Client::Connect(tcp, Patient());
    return c ? testing::StatOf(**c, name) : -1;
  };
  // A clean warm restart runs repair once by itself; a kill inside a write
  // leaves the writer lock "owner dead", and taking it over repairs again.
  const int64_t repairs_at_start = stat("repairs");
  EXPECT_EQ(daemon.Stop(), 0);
  ASSERT_TRUE(daemon.Start(tcp));
  int64_t repairs = stat("repairs");
  const int64_t clean_restart_repairs = repairs - repairs_at_start;

  int rounds = 0;
  int kills_in_writes = 0;
  while (kills_in_writes < kWantKillsInWrites && rounds < kMaxRounds && std::chrono::steady_clock::now() < give_up) {
    const int round = rounds++;
    std::vector<testing::ChildProcess> writers;
    for (int w = 0; w < kWriters; ++w) {
      writers.push_back(testing::ChildProcess::Fork(
          [&, w] {
            ClientOptions o = Quick();
            o.retries = 0;
            o.shared_memory_writes = false;  // the daemon must do the writes it is killed in
            auto c = Client::Connect(ipc, o);
            if (!c) return 10;
            std::vector<std::pair<std::string, std::string>> batch;
            for (uint64_t seq = 0; !testing::ChildProcess::StopRequested(); ++seq) {
              const std::string key = "key" + std::to_string((seq * kWriters + w) % kKeys);
              // Sequence numbers of the longest values MakeValue makes (29 mod 300).
              const uint64_t unique = (seq * kMaxRounds + static_cast<uint64_t>(round)) * kWriters + w;
              batch.emplace_back(key, MakeValue(key, unique * 300 + 29));
              if (batch.size() == kBatch) {
                (void)(*c)->MSet(batch);  // fails while the daemon is down: expected
                batch.clear();
              }
            }
            return 0;
          },
          "writer " + std::to_string(w)));
    }
    // Kill once writes are flowing: the writers' batches, not a timer, set
    // the moment, and they keep it varied.
    const int64_t sets_before = stat("sets");
    ASSERT_TRUE(testing::WaitUntil([&] { return stat("sets") >= sets_before + 2000 + 150 * (round % 7); }))
        << "round " << round << ": the writers wrote nothing";
    KillInsideTheStore(daemon, 1000);
    for (auto& w : writers) EXPECT_EQ(w.Stop(), 0) << "a client must survive the daemon's death";
    ASSERT_TRUE(daemon.Start(tcp)) << "restart " << round;

    const int64_t now = stat("repairs");
    if (now - repairs > clean_restart_repairs) ++kills_in_writes;
    repairs = now;
    auto reader = Client::Connect(tcp, Patient());
    ASSERT_TRUE(reader.has_value());
    int found = 0;
    for (int first = 0; first < kKeys; first += kBatch) {
      std::vector<std::string> keys;
      for (int i = first; i < std::min(kKeys, first + kBatch); ++i) keys.push_back("key" + std::to_string(i));
      auto values = (*reader)->MGet(keys);
      ASSERT_TRUE(values.has_value()) << values.error().ToString();
      ASSERT_EQ(values->size(), keys.size());
      for (size_t i = 0; i < keys.size(); ++i) {
        if (!(*values)[i]) continue;
        ++found;
        ASSERT_TRUE(CheckValue(keys[i], *(*values)[i]))
            << "round " << round << ": " << keys[i] << " = " << *(*values)[i];
      }
    }
    EXPECT_GT(found, 0) << "round " << round << ": the warm restart kept nothing";
  }
  EXPECT_GE(kills_in_writes, kWantKillsInWrites) << "in " << rounds << " rounds";
  std::printf("%d of %d kills landed inside a write\n", kills_in_writes, rounds);
  EXPECT_NE(daemon.log().find("warm restart: re-attached"), std::string::npos);
}

}  // namespace
}  // namespace cachet
