// Every op against a real cachetd, over ipc (reads through shared memory)
// and over tcp: one test body, run for both transports.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>

#include "cachet/client.h"
#include "daemon_process.h"

namespace cachet {
namespace {

using std::chrono::milliseconds;

enum class Transport { kIpc, kTcp };

class DaemonOpsTest : public ::testing::TestWithParam<Transport> {
 protected:
  void SetUp() override {
    ASSERT_TRUE(daemon_.Start());
    auto c = Client::Connect(GetParam() == Transport::kIpc ? daemon_.ipc() : daemon_.tcp());
    ASSERT_TRUE(c.has_value()) << c.error().ToString();
    client_ = std::move(*c);
  }
  int64_t Stat(const std::string& name) { return testing::StatOf(*client_, name); }

  testing::DaemonProcess daemon_;
  std::unique_ptr<Client> client_;
};

TEST_P(DaemonOpsTest, PingAnswers) { EXPECT_TRUE(client_->Ping().has_value()); }

TEST_P(DaemonOpsTest, SetGetDelRoundTrip) {
  EXPECT_EQ(client_->Get("k").value(), std::nullopt);
  EXPECT_TRUE(client_->Set("k", std::string("v\0w", 3)).value());
  EXPECT_EQ(client_->Get("k").value(), std::string("v\0w", 3));
  EXPECT_TRUE(client_->Exists("k").value());
  EXPECT_TRUE(client_->Del("k").value());
  EXPECT_FALSE(client_->Del("k").value());
  EXPECT_EQ(client_->Get("k").value(), std::nullopt);
  EXPECT_FALSE(client_->Exists("k").value());
}

TEST_P(DaemonOpsTest, ConditionalSets) {
  SetOptions nx;
  nx.condition = SetCondition::kIfAbsent;
  SetOptions xx;
  xx.condition = SetCondition::kIfPresent;
  EXPECT_FALSE(client_->Set("k", "1", xx).value());
  EXPECT_TRUE(client_->Set("k", "1", nx).value());
  EXPECT_FALSE(client_->Set("k", "2", nx).value());
  EXPECT_TRUE(client_->Set("k", "3", xx).value());
  EXPECT_EQ(client_->Get("k").value(), "3");
}

TEST_P(DaemonOpsTest, TtlAndExpire) {
  SetOptions ttl;
  ttl.ttl = milliseconds(60000);
  ASSERT_TRUE(client_->Set("t", "v", ttl).value());
  auto left = client_->Ttl("t").value();
  ASSERT_TRUE(left.has_value());
  EXPECT_GT(left->count(), 50000);
  EXPECT_LE(left->count(), 60000);
  ASSERT_TRUE(client_->Set("p", "v").value());
  EXPECT_EQ(client_->Ttl("p").value(), Cache::kNoExpiry);
  EXPECT_EQ(client_->Ttl("absent").value(), std::nullopt);
  EXPECT_TRUE(client_->Expire("p", milliseconds(30000)).value());
  EXPECT_LE(client_->Ttl("p").value()->count(), 30000);
  EXPECT_TRUE(client_->Expire("p", milliseconds(0)).value());
  EXPECT_EQ(client_->Get("p").value(), std::nullopt);
  EXPECT_FALSE(client_->Expire("absent", milliseconds(10)).value());
}

TEST_P(DaemonOpsTest, IncrAndDecrAreAtomicCounters) {
  EXPECT_EQ(client_->Incr("c").value(), 1);
  EXPECT_EQ(client_->Incr("c", 10).value(), 11);
  EXPECT_EQ(client_->Decr("c", 4).value(), 7);
  EXPECT_EQ(client_->Get("c").value(), "7");
  EXPECT_EQ(client_->Incr("fresh", 5, milliseconds(60000)).value(), 5);
  EXPECT_TRUE(client_->Ttl("fresh").value().has_value());
  EXPECT_NE(*client_->Ttl("fresh").value(), Cache::kNoExpiry);
  ASSERT_TRUE(client_->Set("s", "abc").value());
  auto bad = client_->Incr("s");
  ASSERT_FALSE(bad.has_value());
  EXPECT_EQ(bad.error().code, ErrorCode::kNotInteger);
}

TEST_P(DaemonOpsTest, MSetThenMGet) {
  ASSERT_TRUE(client_->MSet({{"a", "1"}, {"b", "2"}, {"c", "3"}}).has_value());
  auto values = client_->MGet({"a", "missing", "c"}).value();
  ASSERT_EQ(values.size(), 3u);
  EXPECT_EQ(values[0], "1");
  EXPECT_EQ(values[1], std::nullopt);
  EXPECT_EQ(values[2], "3");
}

TEST_P(DaemonOpsTest, ScanFindsEveryMatchingKey) {
  std::vector<std::pair<std::string, std::string>> items;
  for (int i = 0; i < 200; ++i) items.emplace_back("user:" + std::to_string(i), "x");
  for (int i = 0; i < 30; ++i) items.emplace_back("job:" + std::to_string(i), "x");
  ASSERT_TRUE(client_->MSet(items).has_value());
  std::vector<std::string> found;
  uint64_t cursor = 0;
  do {
    auto page = client_->Scan(cursor, "job:*", 4096).value();
    found.insert(found.end(), page.keys.begin(), page.keys.end());
    cursor = page.cursor;
  } while (cursor != 0);
  std::sort(found.begin(), found.end());
  EXPECT_EQ(found.size(), 30u);
  EXPECT_EQ(std::unique(found.begin(), found.end()), found.end());
}

TEST_P(DaemonOpsTest, StatsReportCounters) {
  ASSERT_TRUE(client_->Set("a", "1").value());
  (void)client_->Get("a");
  (void)client_->Get("nope");
  EXPECT_EQ(Stat("sets"), 1);
  EXPECT_EQ(Stat("hits"), 1);
  EXPECT_EQ(Stat("misses"), 1);
  EXPECT_EQ(Stat("entries"), 1);
  EXPECT_GE(Stat("connected_clients"), 1);
  EXPECT_GT(Stat("memory_bytes"), 0);
  for (const char* name : {"evictions", "expirations", "bytes", "ops_per_second", "uptime_seconds", "requests"}) {
    EXPECT_GE(Stat(name), 0) << name;
  }
}

TEST_P(DaemonOpsTest, FlushEmptiesTheCache) {
  ASSERT_TRUE(client_->MSet({{"a", "1"}, {"b", "2"}}).has_value());
  ASSERT_TRUE(client_->Flush().has_value());
  EXPECT_EQ(client_->Get("a").value(), std::nullopt);
  EXPECT_EQ(Stat("entries"), 0);
}

TEST_P(DaemonOpsTest, OversizedValueIsRefusedWithItsCode) {
  auto r = client_->Set("k", std::string(65 * 1024, 'v'));
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, ErrorCode::kValueTooLarge);
  auto k = client_->Set(std::string(300, 'k'), "v");
  ASSERT_FALSE(k.has_value());
  EXPECT_EQ(k.error().code, ErrorCode::kKeyTooLarge);
}

TEST_P(DaemonOpsTest, SameHostReadsSkipTheSocket) {
  ASSERT_TRUE(client_->Set("k", "v").value());
  const bool ipc = GetParam() == Transport::kIpc;
  EXPECT_EQ(client_->ReadsSharedMemory(), ipc);
  const int64_t before = Stat("requests");
  for (int i = 0; i < 100; ++i) ASSERT_EQ(client_->Get("k").value(), "v");
  const int64_t after = Stat("requests");
  // Each Stat() is one request; over ipc the 100 GETs never reach the daemon.
  EXPECT_EQ(after - before, ipc ? 1 : 101);
}

INSTANTIATE_TEST_SUITE_P(Transports, DaemonOpsTest, ::testing::Values(Transport::kIpc, Transport::kTcp),
                         [](const auto& param_info) { return param_info.param == Transport::kIpc ? "Ipc" : "Tcp"; });

}  // namespace
}  // namespace cachet
