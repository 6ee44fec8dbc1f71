// Rate-limit decisions made by cachetd: one count shared by every client,
// and the failure modes when the daemon cannot be reached (fail open, fail
// closed, local fallback), each reported once and recovered from by itself.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <map>

#include "cachet/client.h"
#include "cachet/counter_table.h"
#include "cachet/daemon_rate_limiter.h"
#include "daemon_process.h"

namespace cachet {
namespace {

using std::chrono::milliseconds;
using std::chrono::minutes;

constexpr milliseconds kPatient{5000};  // a running daemon answers well within this, even under load

class DaemonLimiterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // Sliding window: a minute boundary inside the test does not reset it.
    std::ofstream(path_) << "[tier.regular]\nper_minute = 5/1m sliding_window\n";
    ASSERT_TRUE(daemon_.Start());
  }
  void TearDown() override {
    daemon_.Stop();
    (void)CounterTable::Remove(daemon_.segment() + "-ratelimit");
    std::remove(path_.c_str());
  }

  // The outage tests wait out `timeout` once per retry interval: short. The
  // others talk to a running daemon, whose reply may take a while on a
  // loaded machine, and a late reply would pass for an outage: long.
  DaemonRateLimiterOptions Options(FailureMode mode, milliseconds timeout) {
    DaemonRateLimiterOptions o;
    o.on_failure = mode;
    o.timeout = timeout;
    o.retry_interval = milliseconds(500);
    o.on_health_change = [this](bool healthy, const Error&) { (healthy ? recoveries_ : outages_)++; };
    Rule local;
    local.name = "local_per_minute";
    local.limit = 2;
    local.window = minutes(1);
    o.fallback_policy = RateLimitPolicy{};
    o.fallback_policy->tiers.push_back({"regular", {local}});
    return o;
  }

  std::unique_ptr<DaemonRateLimiter> Connect(FailureMode mode, milliseconds timeout = milliseconds(100)) {
    auto l = DaemonRateLimiter::Connect(daemon_.ipc(), Options(mode, timeout), clock_);
    EXPECT_TRUE(l.has_value()) << l.error().ToString();
    return std::move(*l);
  }

  int Admit(DaemonRateLimiter& l, const std::string& key, int tries) {
    int n = 0;
    for (int i = 0; i < tries; ++i) n += l.Check(key, "regular").value().allowed;
    return n;
  }

  const std::string path_ = "/tmp/" + testing::UniqueSegmentName("dl") + ".policy";
  testing::DaemonProcess daemon_{{"--rate-limit-policy", path_}};
  FakeClock clock_;
  int outages_ = 0, recoveries_ = 0;
};

TEST_F(DaemonLimiterTest, ClientsOfOneDaemonShareOneCount) {
  auto host_a = Connect(FailureMode::kFailClosed, kPatient);
  auto host_b = Connect(FailureMode::kFailClosed, kPatient);
  EXPECT_EQ(Admit(*host_a, "alice", 3) + Admit(*host_b, "alice", 10), 5);
  const Decision d = host_a->Check("alice", "regular").value();
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.rule, "per_minute");
  EXPECT_GE(d.retry_after, milliseconds(1));
  EXPECT_EQ(outages_, 0);
}

TEST_F(DaemonLimiterTest, StatsReportTheDaemonsDecisionsAndCounters) {
  auto limiter = Connect(FailureMode::kFailClosed, kPatient);
  EXPECT_EQ(Admit(*limiter, "alice", 7), 5);
  EXPECT_EQ(Admit(*limiter, "bob", 1), 1);
  auto client = std::move(*Client::Connect(daemon_.ipc()));
  auto stats = client->Stats();
  ASSERT_TRUE(stats.has_value()) << stats.error().ToString();
  std::map<std::string, int64_t> s(stats->begin(), stats->end());
  EXPECT_EQ(s["ratelimit_allowed"], 6);
  EXPECT_EQ(s["ratelimit_denied"], 2);
  EXPECT_EQ(s["ratelimit_counters"], 2);  // alice and bob, one rule each
  EXPECT_EQ(s["ratelimit_capacity"], 1 << 20);
}

TEST(DaemonLimiterOptionsTest, CapacityIsConfigurable) {
  const std::string path = "/tmp/" + testing::UniqueSegmentName("dlc") + ".policy";
  std::ofstream(path) << "[tier.regular]\nper_minute = 5/1m\n";
  testing::DaemonProcess daemon{{"--rate-limit-policy", path, "--rate-limit-capacity", "4096"}};
  ASSERT_TRUE(daemon.Start());
  auto client = std::move(*Client::Connect(daemon.ipc()));
  auto stats = client->Stats();
  ASSERT_TRUE(stats.has_value());
  std::map<std::string, int64_t> s(stats->begin(), stats->end());
  EXPECT_EQ(s["ratelimit_capacity"], 4096);
  daemon.Stop();
  (void)CounterTable::Remove(daemon.segment() + "-ratelimit");
  std::remove(path.c_str());
}

TEST_F(DaemonLimiterTest, UnknownTierIsAnErrorNotAnOutage) {
  auto l = Connect(FailureMode::kFailOpen, kPatient);
  auto r = l->Check("alice", "gold");
  ASSERT_FALSE(r.has_value());
  EXPECT_NE(r.error().message.find("gold"), std::string::npos);
  EXPECT_TRUE(l->healthy());
}

TEST_F(DaemonLimiterTest, FailOpenAllowsAndReportsOnce) {
  auto l = Connect(FailureMode::kFailOpen);
  daemon_.Stop();
  EXPECT_EQ(Admit(*l, "alice", 20), 20);
  EXPECT_FALSE(l->healthy());
  EXPECT_EQ(outages_, 1);
}

TEST_F(DaemonLimiterTest, FailClosedDenies) {
  auto l = Connect(FailureMode::kFailClosed);
  daemon_.Stop();
  const Decision d = l->Check("alice", "regular").value();
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.rule, "store_unavailable");
  EXPECT_EQ(Admit(*l, "alice", 10), 0);
  EXPECT_EQ(outages_, 1);
}

TEST_F(DaemonLimiterTest, LocalFallbackAppliesTheLocalPolicy) {
  auto l = Connect(FailureMode::kLocalFallback);
  daemon_.Stop();
  EXPECT_EQ(Admit(*l, "alice", 10), 2);
}

TEST_F(DaemonLimiterTest, OutageCostsOneTimeoutPerRetryInterval) {
  auto l = Connect(FailureMode::kFailOpen);
  daemon_.Stop();
  const auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(Admit(*l, "alice", 1000), 1000);
  // One 100 ms timeout; the other 999 decisions do not wait (the fake clock
  // does not move, so the retry interval never passes).
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(2));
}

TEST_F(DaemonLimiterTest, RecoversByItselfWhenTheDaemonReturns) {
  auto l = Connect(FailureMode::kFailClosed);
  const std::string tcp = daemon_.tcp();
  daemon_.Stop();
  EXPECT_FALSE(l->Check("bob", "regular").value().allowed);
  ASSERT_TRUE(daemon_.Start(tcp));
  EXPECT_FALSE(l->Check("bob", "regular").value().allowed);  // still within the retry interval
  clock_.Advance(milliseconds(500));
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  bool allowed = false;
  while (!allowed && std::chrono::steady_clock::now() < deadline) {
    allowed = l->Check("bob", "regular").value().allowed;
    if (!allowed) clock_.Advance(milliseconds(500));  // reconnecting can take more than one try
  }
  EXPECT_TRUE(allowed);
  EXPECT_TRUE(l->healthy());
  EXPECT_EQ(outages_, 1);
  EXPECT_EQ(recoveries_, 1);
}

// RATELIMIT counters live in /dev/shm/<segment>-ratelimit, so a restarted
// daemon continues every window. A token bucket of 10 an hour refills one
// token every 6 minutes: the real clock the daemon reads cannot change
// these counts within a test.
class DaemonLimiterRestartTest : public ::testing::Test {
 protected:
  void SetUp() override { std::ofstream(path_) << "[tier.regular]\nper_hour = 10/1h token_bucket\n"; }
  void TearDown() override {
    daemon_.Stop();
    (void)CounterTable::Remove(table_);
    std::remove(path_.c_str());
  }

  // Decisions for `key` until the first denial (at most 20): how many were admitted.
  int AdmittedUntilDenied(const std::string& key) {
    DaemonRateLimiterOptions o;
    o.on_failure = FailureMode::kFailClosed;
    o.timeout = std::chrono::seconds(2);
    auto l = DaemonRateLimiter::Connect(daemon_.ipc(), o);
    EXPECT_TRUE(l.has_value()) << l.error().ToString();
    if (!l) return -1;
    int n = 0;
    for (int i = 0; i < 20; ++i) {
      auto d = (*l)->Check(key, "regular");
      EXPECT_TRUE(d.has_value() && (*l)->healthy());
      if (!d || !d->allowed) break;
      ++n;
    }
    return n;
  }
  int Admit(const std::string& key, int tries) {
    DaemonRateLimiterOptions o;
    o.on_failure = FailureMode::kFailClosed;
    o.timeout = std::chrono::seconds(2);
    auto l = std::move(*DaemonRateLimiter::Connect(daemon_.ipc(), o));
    int n = 0;
    for (int i = 0; i < tries; ++i) n += l->Check(key, "regular").value().allowed;
    EXPECT_TRUE(l->healthy());
    return n;
  }
  int64_t Stat(const std::string& name) {
    auto client = std::move(*Client::Connect(daemon_.ipc()));
    return testing::StatOf(*client, name);
  }
  bool TableExists() const {
    struct stat st;
    return stat(("/dev/shm/" + table_).c_str(), &st) == 0;
  }

  const std::string path_ = "/tmp/" + testing::UniqueSegmentName("dlr") + ".policy";
  testing::DaemonProcess daemon_{{"--rate-limit-policy", path_, "--rate-limit-capacity", "4096"}};
  const std::string table_ = daemon_.segment() + "-ratelimit";
};

TEST_F(DaemonLimiterRestartTest, CountsSurviveKillNine) {
  ASSERT_TRUE(daemon_.Start());
  EXPECT_EQ(Admit("alice", 6), 6);
  EXPECT_EQ(Admit("bob", 1), 1);
  EXPECT_EQ(daemon_.Kill(), 128 + SIGKILL);
  ASSERT_TRUE(daemon_.Start());
  EXPECT_EQ(Stat("ratelimit_counters"), 2);  // before any request: the table's, not a new one
  EXPECT_EQ(AdmittedUntilDenied("alice"), 4);
  EXPECT_EQ(AdmittedUntilDenied("bob"), 9);
  EXPECT_TRUE(daemon_.WaitForLog("rate-limit counters in /" + table_ + ": 2 live of 4096"));
}

TEST_F(DaemonLimiterRestartTest, CountsSurviveACleanStop) {
  ASSERT_TRUE(daemon_.Start());
  EXPECT_EQ(Admit("alice", 3), 3);
  EXPECT_EQ(daemon_.Stop(), 0);
  EXPECT_TRUE(TableExists());
  ASSERT_TRUE(daemon_.Start());
  EXPECT_EQ(AdmittedUntilDenied("alice"), 7);
  EXPECT_EQ(Stat("ratelimit_capacity"), 4096);
}

TEST_F(DaemonLimiterRestartTest, RemoveSegmentOnExitRemovesTheCountersToo) {
  daemon_.SetExtraArgs(
      {"--rate-limit-policy", path_, "--rate-limit-capacity", "4096", "--remove-segment-on-exit", "true"});
  ASSERT_TRUE(daemon_.Start());
  EXPECT_EQ(Admit("alice", 5), 5);
  EXPECT_TRUE(TableExists());
  EXPECT_EQ(daemon_.Stop(), 0);
  EXPECT_FALSE(TableExists());
  EXPECT_NE(daemon_.log().find("removed rate-limit table /" + table_), std::string::npos) << daemon_.log();
  ASSERT_TRUE(daemon_.Start());
  EXPECT_EQ(AdmittedUntilDenied("alice"), 10);  // a fresh start
}

TEST_F(DaemonLimiterRestartTest, ATableThatCannotBeUsedIsRebuiltEmpty) {
  // Another layout's table: a header page whose magic and version are not ours.
  const int fd = shm_open(("/" + table_).c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(ftruncate(fd, 4096 + 64 * 32), 0);
  const uint64_t header[2] = {0x3174726574636321ull, 1};
  ASSERT_EQ(pwrite(fd, header, sizeof header, 0), static_cast<ssize_t>(sizeof header));
  close(fd);
  ASSERT_TRUE(daemon_.Start());
  EXPECT_TRUE(daemon_.WaitForLog("rate-limit table /" + table_ + " cannot be used (counter table '" + table_ +
                                 "' has layout version 1, this library reads 2; remove it to rebuild); rebuilding it "
                                 "empty"))
      << daemon_.log();
  EXPECT_EQ(AdmittedUntilDenied("alice"), 10);
  EXPECT_EQ(Stat("ratelimit_capacity"), 4096);
}

TEST_F(DaemonLimiterRestartTest, ANewCapacityRebuildsTheTable) {
  ASSERT_TRUE(daemon_.Start());
  EXPECT_EQ(Admit("alice", 4), 4);
  EXPECT_EQ(daemon_.Stop(), 0);
  daemon_.SetExtraArgs({"--rate-limit-policy", path_, "--rate-limit-capacity", "8192"});
  ASSERT_TRUE(daemon_.Start());
  EXPECT_TRUE(daemon_.WaitForLog("rate-limit table /" + table_ +
                                 " holds 4096 counters, rate-limit-capacity is 8192; rebuilding it empty"))
      << daemon_.log();
  EXPECT_EQ(Stat("ratelimit_capacity"), 8192);
  EXPECT_EQ(AdmittedUntilDenied("alice"), 10);
}

}  // namespace
}  // namespace cachet
