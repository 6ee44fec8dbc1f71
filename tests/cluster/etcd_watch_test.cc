// EtcdWatch against a real etcd: order, resumption, compaction, loss, and
// a destructor that does not wait on a hung etcd.
#include "cachet/cluster/etcd_watch.h"

#include <gtest/gtest.h>
#include <httplib.h>

#include <chrono>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "cachet/cluster/etcd_client.h"
#include "etcd_server.h"
#include "test_util.h"

namespace cachet::cluster {
namespace {

using cachet::testing::EtcdServer;
using cachet::testing::FreeLoopbackPort;
using cachet::testing::WaitUntil;
using std::chrono::milliseconds;

// Collects what a watch delivers, for the test thread to look at.
class Recorder {
 public:
  EtcdWatch::Callback Callback() {
    return [this](const WatchUpdate& update) {
      std::lock_guard<std::mutex> lock(mu_);
      updates_.push_back(update);
    };
  }
  std::vector<WatchEvent> Events() const {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<WatchEvent> out;
    for (const WatchUpdate& u : updates_) out.insert(out.end(), u.events.begin(), u.events.end());
    return out;
  }
  std::vector<WatchUpdate> Of(WatchUpdate::Kind kind) const {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<WatchUpdate> out;
    for (const WatchUpdate& u : updates_) {
      if (u.kind == kind) out.push_back(u);
    }
    return out;
  }

 private:
  mutable std::mutex mu_;
  std::vector<WatchUpdate> updates_;
};

// "P key=value@rev" / "D key@rev": one event as the tests spell it.
std::string Describe(const WatchEvent& e) {
  return e.type == WatchEvent::Type::kPut ? "P " + e.kv.key + "=" + e.kv.value + "@" + std::to_string(e.kv.mod_revision)
                                          : "D " + e.kv.key + "@" + std::to_string(e.kv.mod_revision);
}
std::vector<std::string> Describe(const std::vector<WatchEvent>& events) {
  std::vector<std::string> out;
  for (const WatchEvent& e : events) out.push_back(Describe(e));
  return out;
}

// Open TCP connections from this host to loopback `port` (/proc/net/tcp).
int EstablishedTo(int port) {
  std::istringstream table(cachet::testing::ReadFile("/proc/net/tcp"));
  std::string line;
  std::getline(table, line);  // the header
  int count = 0;
  while (std::getline(table, line)) {
    std::istringstream fields(line);
    std::string slot, local, remote, state;
    fields >> slot >> local >> remote >> state;
    const size_t colon = remote.find(':');
    if (state == "01" && colon != std::string::npos && std::stoi(remote.substr(colon + 1), nullptr, 16) == port) {
      ++count;
    }
  }
  return count;
}

class EtcdWatchTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(etcd_.Start());
    auto client = EtcdClient::Create(Options());
    ASSERT_TRUE(client.has_value());
    client_.emplace(std::move(*client));
  }
  EtcdOptions Options() const { return EtcdOptions{etcd_.endpoint(), milliseconds(1000)}; }
  int64_t Put(const std::string& key, const std::string& value) {
    auto r = client_->Put(key, value);
    EXPECT_TRUE(r.has_value()) << r.error().ToString();
    return r.value_or(0);
  }
  EtcdWatch Watch(Recorder& recorder, WatchOptions options) {
    auto watch = EtcdWatch::Start(Options(), std::move(options), recorder.Callback());
    EXPECT_TRUE(watch.has_value()) << watch.error().ToString();
    return std::move(*watch);
  }

  EtcdServer etcd_;
  std::optional<EtcdClient> client_;
};

TEST_F(EtcdWatchTest, DeliversPutsAndDeletesUnderThePrefixInOrderFromARevision) {
  Put("/w/0-before", "old");  // before the start revision: not delivered
  const int64_t r1 = Put("/w/a", std::string("\0\xff", 2));
  const int64_t r2 = Put("/w/b", "2");
  ASSERT_TRUE(client_->Delete("/w/a").has_value());
  const int64_t r3 = r2 + 1;
  Put("/x/outside", "no");
  Recorder recorder;
  WatchOptions options;
  options.key = "/w/";
  options.prefix = true;
  options.start_revision = r1;
  EtcdWatch watch = Watch(recorder, options);
  ASSERT_TRUE(WaitUntil([&] { return recorder.Events().size() >= 3; }));
  // Then live changes, through a transaction too.
  const int64_t r5 = Put("/w/c", "3");
  auto txn = client_->Txn({}, {TxnOp::Put("/w/d", "4"), TxnOp::DeletePrefix("/w/b")}, {});
  ASSERT_TRUE(txn.has_value());
  ASSERT_TRUE(WaitUntil([&] { return recorder.Events().size() >= 6; }));
  EXPECT_EQ(Describe(recorder.Events()),
            (std::vector<std::string>{"P /w/a=" + std::string("\0\xff", 2) + "@" + std::to_string(r1),
                                      "P /w/b=2@" + std::to_string(r2), "D /w/a@" + std::to_string(r3),
                                      "P /w/c=3@" + std::to_string(r5), "P /w/d=4@" + std::to_string(txn->revision),
                                      "D /w/b@" + std::to_string(txn->revision)}));
  const std::vector<WatchEvent> events = recorder.Events();
  EXPECT_EQ(events[0].kv.create_revision, r1);
  EXPECT_EQ(events[0].kv.version, 1);
  EXPECT_TRUE(recorder.Of(WatchUpdate::Kind::kLost).empty());
  EXPECT_EQ(watch.next_revision(), txn->revision + 1);
}

TEST_F(EtcdWatchTest, WatchesOneKeyOnly) {
  const int64_t start = Put("/k", "1");
  Put("/k2", "no");
  Put("/k", "2");
  Recorder recorder;
  EtcdWatch watch = Watch(recorder, WatchOptions{"/k", false, start});
  ASSERT_TRUE(WaitUntil([&] { return recorder.Events().size() >= 2; }));
  EXPECT_EQ(Describe(recorder.Events()),
            (std::vector<std::string>{"P /k=1@" + std::to_string(start), "P /k=2@" + std::to_string(start + 2)}));
}

// etcd killed and started again: the watch reports the outage once, then
// goes on from where it was, missing and repeating nothing.
TEST_F(EtcdWatchTest, ResumesAfterAnOutageWithoutLossOrRepeat) {
  const int64_t start = Put("/r/1", "a");
  Recorder recorder;
  WatchOptions options{"/r/", true, start};
  options.retry_interval = milliseconds(50);
  EtcdWatch watch = Watch(recorder, options);
  ASSERT_TRUE(WaitUntil([&] { return recorder.Events().size() == 1; }));
  etcd_.Kill();
  ASSERT_TRUE(WaitUntil([&] { return !recorder.Of(WatchUpdate::Kind::kLost).empty(); }));
  ASSERT_TRUE(etcd_.Start());  // same port, same data
  const int64_t r2 = Put("/r/2", "b");
  ASSERT_TRUE(WaitUntil([&] { return recorder.Events().size() >= 2; }));
  EXPECT_EQ(Describe(recorder.Events()),
            (std::vector<std::string>{"P /r/1=a@" + std::to_string(start), "P /r/2=b@" + std::to_string(r2)}));
  const auto lost = recorder.Of(WatchUpdate::Kind::kLost);
  ASSERT_EQ(lost.size(), 1u);
  EXPECT_EQ(lost[0].error.code, ErrorCode::kUnavailable);
  EXPECT_NE(lost[0].error.message.find(etcd_.endpoint()), std::string::npos) << lost[0].error.message;
}

TEST_F(EtcdWatchTest, ReportsACompactionAndGoesOnFromWhereHistoryStarts) {
  const int64_t r1 = Put("/c/k", "1");
  Put("/c/k", "2");
  const int64_t r3 = Put("/c/k", "3");
  // Compact everything before r3.
  httplib::Client http("127.0.0.1", etcd_.client_port());
  auto res = http.Post("/v3/kv/compaction", R"({"revision":")" + std::to_string(r3) + R"(","physical":true})",
                       "application/json");
  ASSERT_TRUE(res && res->status == 200) << (res ? res->body : "no answer");
  Recorder recorder;
  EtcdWatch watch = Watch(recorder, WatchOptions{"/c/", true, r1});
  ASSERT_TRUE(WaitUntil([&] { return recorder.Events().size() >= 1; }));
  const auto compacted = recorder.Of(WatchUpdate::Kind::kCompacted);
  ASSERT_EQ(compacted.size(), 1u);
  EXPECT_EQ(compacted[0].revision, r3);
  EXPECT_EQ(Describe(recorder.Events()), (std::vector<std::string>{"P /c/k=3@" + std::to_string(r3)}));
  EXPECT_TRUE(recorder.Of(WatchUpdate::Kind::kLost).empty());
}

TEST_F(EtcdWatchTest, DestructorReturnsPromptlyWhileEtcdIsHung) {
  const int64_t start = Put("/s/k", "v");
  Recorder recorder;
  WatchOptions options{"/s/", true, start};
  options.idle_timeout = std::chrono::seconds(60);  // the read would block this long
  std::optional<EtcdWatch> watch(Watch(recorder, options));
  ASSERT_TRUE(WaitUntil([&] { return recorder.Events().size() == 1; }));
  etcd_.Pause();
  const auto start_time = std::chrono::steady_clock::now();
  watch.reset();
  const auto took = std::chrono::steady_clock::now() - start_time;
  etcd_.Resume();
  EXPECT_LT(took, milliseconds(2000));  // far below the 60 s idle timeout; slack for a loaded machine
}

TEST_F(EtcdWatchTest, DestructorReturnsPromptlyWhileOpeningOnAHungEtcd) {
  etcd_.Pause();
  Recorder recorder;
  WatchOptions options{"/s/", true, 1};
  options.idle_timeout = std::chrono::seconds(60);
  std::optional<EtcdWatch> watch(Watch(recorder, options));
  // The watch's thread is blocked once its connection is up (the kernel
  // accepts it for the stopped etcd).
  ASSERT_TRUE(WaitUntil([&] { return EstablishedTo(etcd_.client_port()) > 0; }));
  const auto start_time = std::chrono::steady_clock::now();
  watch.reset();
  const auto took = std::chrono::steady_clock::now() - start_time;
  etcd_.Resume();
  EXPECT_LT(took, milliseconds(2000));  // far below the 60 s idle timeout; slack for a loaded machine
  EXPECT_TRUE(recorder.Events().empty());
}

// A hung etcd is noticed: the silent stream is opened again after the idle
// timeout, which fails, and the loss is reported.
TEST_F(EtcdWatchTest, AHungEtcdIsReportedLostAfterTheIdleTimeout) {
  const int64_t start = Put("/s/k", "v");
  Recorder recorder;
  WatchOptions options{"/s/", true, start};
  options.idle_timeout = milliseconds(300);
  EtcdWatch watch = Watch(recorder, options);
  ASSERT_TRUE(WaitUntil([&] { return recorder.Events().size() == 1; }));
  etcd_.Pause();
  EXPECT_TRUE(WaitUntil([&] { return !recorder.Of(WatchUpdate::Kind::kLost).empty(); }, std::chrono::seconds(5)));
  etcd_.Resume();
  const int64_t later = Put("/s/k", "w");
  ASSERT_TRUE(WaitUntil([&] { return recorder.Events().size() >= 2; }));
  EXPECT_EQ(Describe(recorder.Events()),
            (std::vector<std::string>{"P /s/k=v@" + std::to_string(start), "P /s/k=w@" + std::to_string(later)}));
}

TEST_F(EtcdWatchTest, OpensTheStreamOnTheNextEndpointWhenTheFirstIsDead) {
  const std::string dead = "http://127.0.0.1:" + std::to_string(FreeLoopbackPort());
  const int64_t start = Put("/n/k", "v");
  Recorder recorder;
  auto watch = EtcdWatch::Start(EtcdOptions{dead + "," + etcd_.endpoint(), milliseconds(1000)},
                                WatchOptions{"/n/", true, start}, recorder.Callback());
  ASSERT_TRUE(watch.has_value()) << watch.error().ToString();
  ASSERT_TRUE(WaitUntil([&] { return recorder.Events().size() == 1; }));
  EXPECT_EQ(Describe(recorder.Events()), (std::vector<std::string>{"P /n/k=v@" + std::to_string(start)}));
  EXPECT_TRUE(recorder.Of(WatchUpdate::Kind::kLost).empty());
}

TEST(EtcdWatchUnreachableTest, NoEndpointIsReportedLostNamingIt) {
  const std::string dead = "http://127.0.0.1:" + std::to_string(FreeLoopbackPort());
  Recorder recorder;
  auto watch =
      EtcdWatch::Start(EtcdOptions{dead, milliseconds(200)}, WatchOptions{"/k", false, 1}, recorder.Callback());
  ASSERT_TRUE(watch.has_value());
  ASSERT_TRUE(WaitUntil([&] { return !recorder.Of(WatchUpdate::Kind::kLost).empty(); }));
  const auto lost = recorder.Of(WatchUpdate::Kind::kLost);
  EXPECT_EQ(lost[0].error.code, ErrorCode::kUnavailable);
  EXPECT_NE(lost[0].error.message.find(dead), std::string::npos) << lost[0].error.message;
}

TEST(EtcdWatchOptionsTest, BadOptionsAreRefused) {
  Recorder recorder;
  const EtcdOptions etcd{"127.0.0.1:2379", milliseconds(100)};
  auto zero = EtcdWatch::Start(etcd, WatchOptions{"/k", false, 0}, recorder.Callback());
  ASSERT_FALSE(zero.has_value());
  EXPECT_EQ(zero.error().code, ErrorCode::kInvalidArgument);
  auto no_callback = EtcdWatch::Start(etcd, WatchOptions{"/k", false, 1}, nullptr);
  ASSERT_FALSE(no_callback.has_value());
  EXPECT_EQ(no_callback.error().code, ErrorCode::kInvalidArgument);
  auto bad_endpoint =
      EtcdWatch::Start(EtcdOptions{"nope", milliseconds(100)}, WatchOptions{"/k", false, 1}, recorder.Callback());
  ASSERT_FALSE(bad_endpoint.has_value());
  EXPECT_EQ(bad_endpoint.error().code, ErrorCode::kInvalidArgument);
}

}  // namespace
}  // namespace cachet::cluster
