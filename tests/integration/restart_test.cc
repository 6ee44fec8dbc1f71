// Failures around the daemon: timeouts while it is down, reconnecting after
// a restart, warm restarts that keep the data, and kill -9 under write load.
#include <signal.h>
#include <sys/wait.h>

#include <gtest/gtest.h>

#include "cachet/client.h"
#include "daemon_process.h"
#include "value_codec.h"

namespace cachet {
namespace {

using std::chrono::milliseconds;
using testing::CheckValue;
using testing::MakeValue;

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
  auto over_tcp = Client::Connect(tcp, Quick());
  auto over_ipc = Client::Connect(daemon.ipc(), Quick());
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
  auto client = Client::Connect(daemon.ipc(), Quick());
  ASSERT_TRUE(client.has_value());
  ASSERT_TRUE((*client)->ReadsSharedMemory());
  ASSERT_TRUE((*client)->Set("old", "1").value());
  EXPECT_EQ(daemon.Stop(), 0);
  // Another capacity cannot reuse the segment: the daemon rebuilds it empty,
  // with the next generation.
  daemon.SetExtraArgs({"--capacity", "16MiB"});
  ASSERT_TRUE(daemon.Start(daemon.tcp()));
  EXPECT_NE(daemon.log().find("rebuilding it empty (generation 2)"), std::string::npos) << daemon.log();
  // The client still maps the old segment; within its check interval (1 s)
  // it notices the new generation and reads the new, empty one.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  std::optional<std::string> v = "1";
  while (v && std::chrono::steady_clock::now() < deadline) {
    auto r = (*client)->Get("old");
    ASSERT_TRUE(r.has_value());
    v = *r;
  }
  EXPECT_EQ(v, std::nullopt);
  EXPECT_TRUE((*client)->ReadsSharedMemory());
  ASSERT_TRUE((*client)->Set("new", "2").value());
  EXPECT_EQ((*client)->Get("new").value(), "2");
}

// Writers hammer the daemon while it is killed with SIGKILL again and again;
// after each restart every key read back holds a value written for it.
TEST(RestartTest, KillNineUnderWriteLoadNeverYieldsAWrongValue) {
  testing::DaemonProcess daemon;
  ASSERT_TRUE(daemon.Start());
  const std::string tcp = daemon.tcp();
  const std::string ipc = daemon.ipc();
  constexpr int kKeys = 300;
  constexpr int kKills = 8;
  for (int round = 0; round < kKills; ++round) {
    const pid_t writer = fork();
    if (writer == 0) {
      ClientOptions o = Quick();
      o.retries = 0;
      auto c = Client::Connect(ipc, o);
      if (!c) _exit(10);
      for (uint64_t seq = 0;; ++seq) {
        const std::string key = "key" + std::to_string(seq % kKeys);
        (void)(*c)->Set(key, MakeValue(key, seq * 16 + static_cast<uint64_t>(round)));
      }
    }
    std::this_thread::sleep_for(milliseconds(150 + 40 * (round % 4)));  // let writes pile up
    daemon.Kill();
    kill(writer, SIGKILL);
    waitpid(writer, nullptr, 0);
    ASSERT_TRUE(daemon.Start(tcp)) << "restart " << round;
    auto reader = Client::Connect(tcp, Quick());
    ASSERT_TRUE(reader.has_value());
    int found = 0;
    for (int i = 0; i < kKeys; ++i) {
      const std::string key = "key" + std::to_string(i);
      auto v = (*reader)->Get(key);
      ASSERT_TRUE(v.has_value()) << v.error().ToString();
      if (!*v) continue;
      ++found;
      ASSERT_TRUE(CheckValue(key, **v)) << "round " << round << ": " << key << " = " << **v;
    }
    EXPECT_GT(found, 0) << "round " << round << ": the warm restart kept nothing";
  }
  EXPECT_NE(daemon.log().find("warm restart: re-attached"), std::string::npos);
}

}  // namespace
}  // namespace cachet
