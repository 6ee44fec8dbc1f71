// EtcdClient against a real etcd (tests/etcd_server.h), and against a fake
// one that answers garbage.
#include "cachet/cluster/etcd_client.h"

#include <gtest/gtest.h>
#include <httplib.h>

#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "etcd_server.h"
#include "test_util.h"

namespace cachet::cluster {
namespace {

using cachet::testing::EtcdServer;
using cachet::testing::FreeLoopbackPort;
using cachet::testing::WaitUntil;
using std::chrono::milliseconds;

// Every byte value, so keys and values cross the gateway's base64 intact.
std::string AllBytes() {
  std::string s;
  for (int i = 0; i < 256; ++i) s += static_cast<char>(i);
  return s;
}

// The error of a call that must fail (a kOk error if it succeeded).
template <typename T>
Error ErrorOf(const Result<T>& result) {
  return result.has_value() ? Error{ErrorCode::kOk, "the call succeeded"} : result.error();
}

class EtcdClientTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(etcd_.Start()); }

  EtcdClient Client(milliseconds timeout = milliseconds(2000)) { return ClientFor(etcd_.endpoint(), timeout); }
  static EtcdClient ClientFor(const std::string& endpoints, milliseconds timeout = milliseconds(2000)) {
    auto client = EtcdClient::Create(EtcdOptions{endpoints, timeout});
    EXPECT_TRUE(client.has_value()) << client.error().ToString();
    return std::move(*client);
  }

  EtcdServer etcd_;
};

TEST_F(EtcdClientTest, PutAndGetRoundTripBinaryKeysAndValues) {
  EtcdClient client = Client();
  const std::string key = std::string("/bin/\0\xff\x80", 8) + "k";
  const std::string value = AllBytes();
  auto first = client.Put(key, value);
  ASSERT_TRUE(first.has_value()) << first.error().ToString();
  EXPECT_GT(*first, 1);
  auto got = client.Get(key);
  ASSERT_TRUE(got.has_value()) << got.error().ToString();
  ASSERT_TRUE(got->has_value());
  EXPECT_EQ((*got)->key, key);
  EXPECT_EQ((*got)->value, value);
  EXPECT_EQ((*got)->create_revision, *first);
  EXPECT_EQ((*got)->mod_revision, *first);
  EXPECT_EQ((*got)->version, 1);
  EXPECT_EQ((*got)->lease, 0);

  auto second = client.Put(key, "");  // an empty value is a value
  ASSERT_TRUE(second.has_value());
  EXPECT_EQ(*second, *first + 1);
  got = client.Get(key);
  ASSERT_TRUE(got.has_value() && got->has_value());
  EXPECT_EQ((*got)->value, "");
  EXPECT_EQ((*got)->create_revision, *first);
  EXPECT_EQ((*got)->mod_revision, *second);
  EXPECT_EQ((*got)->version, 2);

  auto missing = client.Get(key + "x");
  ASSERT_TRUE(missing.has_value());
  EXPECT_FALSE(missing->has_value());
}

TEST_F(EtcdClientTest, RangeReturnsEveryKeyUnderThePrefixInKeyOrder) {
  EtcdClient client = Client();
  for (const std::string& key : {std::string("/p/b"), std::string("/p/\xff", 4), std::string("/p/a"), std::string("/p"),
                                 std::string("/q/a"), std::string("/p0")}) {
    ASSERT_TRUE(client.Put(key, "v" + key).has_value());
  }
  auto last = client.Put("/p/c", std::string("\0", 1));
  ASSERT_TRUE(last.has_value());
  auto range = client.Range("/p/");
  ASSERT_TRUE(range.has_value()) << range.error().ToString();
  EXPECT_EQ(range->revision, *last);
  std::vector<std::string> keys;
  for (const KeyValue& kv : range->kvs) keys.push_back(kv.key);
  EXPECT_EQ(keys, (std::vector<std::string>{"/p/a", "/p/b", "/p/c", std::string("/p/\xff", 4)}));
  EXPECT_EQ(range->kvs[2].value, std::string("\0", 1));
  EXPECT_EQ(range->kvs[0].value, "v/p/a");

  auto everything = client.Range("");
  ASSERT_TRUE(everything.has_value());
  EXPECT_EQ(everything->kvs.size(), 7u);
  auto none = client.Range("/nothing/");
  ASSERT_TRUE(none.has_value());
  EXPECT_TRUE(none->kvs.empty());
  EXPECT_EQ(none->revision, *last);
}

TEST_F(EtcdClientTest, DeleteRemovesOneKeyAndDeletePrefixEveryKeyUnderIt) {
  EtcdClient client = Client();
  for (const char* key : {"/d/a", "/d/b", "/d/c/1", "/d", "/e"}) ASSERT_TRUE(client.Put(key, "x").has_value());
  auto one = client.Delete("/d/a");
  ASSERT_TRUE(one.has_value()) << one.error().ToString();
  EXPECT_EQ(one->deleted, 1);
  auto again = client.Delete("/d/a");
  ASSERT_TRUE(again.has_value());
  EXPECT_EQ(again->deleted, 0);
  EXPECT_EQ(again->revision, one->revision);  // deleting nothing writes nothing
  auto prefix = client.DeletePrefix("/d/");
  ASSERT_TRUE(prefix.has_value());
  EXPECT_EQ(prefix->deleted, 2);
  EXPECT_EQ(prefix->revision, one->revision + 1);  // one revision for the whole range
  auto rest = client.Range("");
  ASSERT_TRUE(rest.has_value());
  ASSERT_EQ(rest->kvs.size(), 2u);
  EXPECT_EQ(rest->kvs[0].key, "/d");
  EXPECT_EQ(rest->kvs[1].key, "/e");
}

TEST_F(EtcdClientTest, TxnRunsTheBranchItsComparesChoose) {
  EtcdClient client = Client();
  auto put = client.Put("/t/k", AllBytes());
  ASSERT_TRUE(put.has_value());
  using Op = Compare::Op;
  // All hold: the success branch runs; its range sees its own put.
  auto yes = client.Txn(
      {Compare::Value("/t/k", Op::kEqual, AllBytes()), Compare::Version("/t/k", Op::kEqual, 1),
       Compare::ModRevision("/t/k", Op::kEqual, *put), Compare::CreateRevision("/t/k", Op::kLess, *put + 1)},
      {TxnOp::Put("/t/k", "second"), TxnOp::Put("/t/other", "o"), TxnOp::Get("/t/k")}, {TxnOp::Get("/t/never")});
  ASSERT_TRUE(yes.has_value()) << yes.error().ToString();
  EXPECT_TRUE(yes->succeeded);
  EXPECT_EQ(yes->revision, *put + 1);  // one revision for the whole transaction
  ASSERT_EQ(yes->ranges.size(), 1u);
  ASSERT_EQ(yes->ranges[0].kvs.size(), 1u);
  EXPECT_EQ(yes->ranges[0].kvs[0].value, "second");
  EXPECT_EQ(yes->ranges[0].kvs[0].version, 2);

  // One fails: the failure branch runs; the success branch's put does not.
  auto no = client.Txn({Compare::Value("/t/k", Op::kEqual, "second"), Compare::Version("/t/k", Op::kGreater, 2)},
                       {TxnOp::Put("/t/k", "third")},
                       {TxnOp::Range("/t/"), TxnOp::Delete("/t/other"), TxnOp::Get("/t/other")});
  ASSERT_TRUE(no.has_value()) << no.error().ToString();
  EXPECT_FALSE(no->succeeded);
  EXPECT_EQ(no->revision, *put + 2);  // the delete
  ASSERT_EQ(no->ranges.size(), 2u);
  ASSERT_EQ(no->ranges[0].kvs.size(), 2u);
  EXPECT_EQ(no->ranges[0].kvs[0].key, "/t/k");
  EXPECT_EQ(no->ranges[0].kvs[0].value, "second");
  EXPECT_TRUE(no->ranges[1].kvs.empty());
  auto k = client.Get("/t/k");
  ASSERT_TRUE(k.has_value() && k->has_value());
  EXPECT_EQ((*k)->value, "second");

  // Not-equal and a prefix delete.
  auto prefix = client.Txn({Compare::Value("/t/k", Op::kNotEqual, "third")}, {TxnOp::DeletePrefix("/t/")}, {});
  ASSERT_TRUE(prefix.has_value());
  EXPECT_TRUE(prefix->succeeded);
  EXPECT_TRUE(prefix->ranges.empty());
  auto left = client.Range("/t/");
  ASSERT_TRUE(left.has_value());
  EXPECT_TRUE(left->kvs.empty());
}

// The election every shard's primary goes through: a put guarded by
// create_revision == 0. Of contenders racing, exactly one wins; each loser
// reads the winner in its failure branch.
TEST_F(EtcdClientTest, CreateRevisionZeroElectsExactlyOneOfTwoContenders) {
  for (int round = 0; round < 20; ++round) {
    const std::string key = "/cachet/test/primary/" + std::to_string(round);
    std::vector<Result<TxnResult>> results(2, MakeError(ErrorCode::kInternal, "not run"));
    std::atomic<int> ready{0};
    std::vector<std::thread> contenders;
    for (int who = 0; who < 2; ++who) {
      contenders.emplace_back([&, who] {
        EtcdClient client = Client();
        ready.fetch_add(1);
        while (ready.load() < 2) std::this_thread::yield();  // start together
        results[who] = client.Txn({Compare::CreateRevision(key, Compare::Op::kEqual, 0)},
                                  {TxnOp::Put(key, "node-" + std::to_string(who))}, {TxnOp::Get(key)});
      });
    }
    for (std::thread& t : contenders) t.join();
    ASSERT_TRUE(results[0].has_value()) << results[0].error().ToString();
    ASSERT_TRUE(results[1].has_value()) << results[1].error().ToString();
    ASSERT_NE(results[0]->succeeded, results[1]->succeeded) << "round " << round;
    const int winner = results[0]->succeeded ? 0 : 1;
    const TxnResult& loser = *results[1 - winner];
    ASSERT_EQ(loser.ranges.size(), 1u);
    ASSERT_EQ(loser.ranges[0].kvs.size(), 1u);
    EXPECT_EQ(loser.ranges[0].kvs[0].value, "node-" + std::to_string(winner));
    EXPECT_GT(loser.revision, results[winner]->revision - 1);
  }
}

TEST_F(EtcdClientTest, RevokingALeaseDeletesTheKeysBoundToIt) {
  EtcdClient client = Client();
  auto lease = client.LeaseGrant(30);
  ASSERT_TRUE(lease.has_value()) << lease.error().ToString();
  EXPECT_NE(lease->id, 0);
  EXPECT_EQ(lease->ttl_seconds, 30);
  ASSERT_TRUE(client.Put("/l/bound", "v", lease->id).has_value());
  ASSERT_TRUE(client.Put("/l/free", "v").has_value());
  auto bound = client.Get("/l/bound");
  ASSERT_TRUE(bound.has_value() && bound->has_value());
  EXPECT_EQ((*bound)->lease, lease->id);

  auto ttl = client.LeaseKeepAliveOnce(lease->id);
  ASSERT_TRUE(ttl.has_value()) << ttl.error().ToString();
  EXPECT_EQ(*ttl, 30);

  ASSERT_TRUE(client.LeaseRevoke(lease->id).has_value());
  auto gone = client.Get("/l/bound");
  ASSERT_TRUE(gone.has_value());
  EXPECT_FALSE(gone->has_value());
  auto free = client.Get("/l/free");
  ASSERT_TRUE(free.has_value());
  EXPECT_TRUE(free->has_value());

  auto after = client.LeaseKeepAliveOnce(lease->id);
  ASSERT_TRUE(after.has_value()) << after.error().ToString();
  EXPECT_EQ(*after, 0);
  auto twice = client.LeaseRevoke(lease->id);
  ASSERT_FALSE(twice.has_value());
  EXPECT_EQ(twice.error().code, ErrorCode::kNotFound);
  EXPECT_NE(twice.error().message.find("requested lease not found"), std::string::npos) << twice.error().message;
  EXPECT_NE(twice.error().message.find(etcd_.endpoint()), std::string::npos) << twice.error().message;
  auto put = client.Put("/l/late", "v", lease->id);
  ASSERT_FALSE(put.has_value());
  EXPECT_EQ(put.error().code, ErrorCode::kNotFound);
}

// The TTL runs on etcd's clock: the test polls etcd, with a deadline.
TEST_F(EtcdClientTest, ALeaseNotKeptAliveExpiresWithItsKeys) {
  EtcdClient client = Client();
  auto lease = client.LeaseGrant(1);
  ASSERT_TRUE(lease.has_value()) << lease.error().ToString();
  EXPECT_EQ(lease->ttl_seconds, 1);  // not raised: the fixture's election timeout allows 1 s
  ASSERT_TRUE(client.Put("/l/node", "v", lease->id).has_value());
  const auto granted = std::chrono::steady_clock::now();
  EXPECT_TRUE(WaitUntil(
      [&] {
        auto kv = client.Get("/l/node");
        return kv.has_value() && !kv->has_value();
      },
      std::chrono::seconds(10), milliseconds(20)));
  const auto took = std::chrono::steady_clock::now() - granted;
  EXPECT_LT(took, std::chrono::seconds(5));
  auto ttl = client.LeaseKeepAliveOnce(lease->id);
  ASSERT_TRUE(ttl.has_value());
  EXPECT_EQ(*ttl, 0);
}

TEST_F(EtcdClientTest, BadArgumentsAreRefusedBeforeAnyRequest) {
  EtcdClient client = Client();
  auto lease = client.LeaseGrant(0);
  ASSERT_FALSE(lease.has_value());
  EXPECT_EQ(lease.error().code, ErrorCode::kInvalidArgument);
  for (const char* endpoints : {"", "https://127.0.0.1:2379", "127.0.0.1", "127.0.0.1:2379,,127.0.0.1:2380"}) {
    auto bad = EtcdClient::Create(EtcdOptions{endpoints, milliseconds(100)});
    ASSERT_FALSE(bad.has_value()) << endpoints;
    EXPECT_EQ(bad.error().code, ErrorCode::kInvalidArgument);
  }
}

TEST(EtcdClientUnreachableTest, NoEndpointAnsweringIsUnavailableNamingEachEndpoint) {
  const std::string a = "http://127.0.0.1:" + std::to_string(FreeLoopbackPort());
  const std::string b = "http://127.0.0.1:" + std::to_string(FreeLoopbackPort());
  auto client = EtcdClient::Create(EtcdOptions{a + "," + b, milliseconds(500)});
  ASSERT_TRUE(client.has_value());
  auto put = client->Put("k", "v");
  ASSERT_FALSE(put.has_value());
  EXPECT_EQ(put.error().code, ErrorCode::kUnavailable);
  EXPECT_NE(put.error().message.find(a), std::string::npos) << put.error().message;
  EXPECT_NE(put.error().message.find(b), std::string::npos) << put.error().message;
  EXPECT_NE(put.error().message.find("cannot connect"), std::string::npos) << put.error().message;
  auto get = client->Get("k");
  ASSERT_FALSE(get.has_value());
  EXPECT_EQ(get.error().code, ErrorCode::kUnavailable);
}

TEST_F(EtcdClientTest, ADeadFirstEndpointIsSkippedForALiveSecond) {
  const std::string dead = "http://127.0.0.1:" + std::to_string(FreeLoopbackPort());
  EtcdClient client = ClientFor(dead + "," + etcd_.endpoint());
  auto put = client.Put("/f/k", "v");
  ASSERT_TRUE(put.has_value()) << put.error().ToString();
  auto got = client.Get("/f/k");
  ASSERT_TRUE(got.has_value() && got->has_value()) << (got ? "" : got.error().ToString());
  EXPECT_EQ((*got)->value, "v");
  auto txn = client.Txn({}, {TxnOp::Get("/f/k")}, {});
  ASSERT_TRUE(txn.has_value());
  EXPECT_TRUE(txn->succeeded);
}

// A call on loopback takes about a millisecond. With Nagle's algorithm on,
// each waited 40 ms for a delayed ACK (httplib sends headers and body
// apart): 50 calls took over 2 s.
TEST_F(EtcdClientTest, CallsOnLoopbackDoNotWaitForDelayedAcks) {
  EtcdClient client = Client();
  ASSERT_TRUE(client.Put("/n/k", "v").has_value());
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < 50; ++i) ASSERT_TRUE(client.Get("/n/k").has_value());
  EXPECT_LT(std::chrono::steady_clock::now() - start, milliseconds(1000));
}

// A hung etcd (SIGSTOP) takes the request and never answers: a read gives
// up after the timeout and says so; a write says its outcome is unknown.
TEST_F(EtcdClientTest, AHungEtcdTimesOutWithinTheRequestTimeout) {
  EtcdClient client = Client(milliseconds(300));
  // The write goes through a patient client (etcd syncs it to disk, which a
  // loaded machine can make take more than 300 ms); the short-timeout client
  // reads it back, as often as it takes, so its connection is up.
  ASSERT_TRUE(Client().Put("/h/k", "v").has_value());
  ASSERT_TRUE(WaitUntil([&] { return client.Get("/h/k").has_value(); }));
  etcd_.Pause();
  const auto start = std::chrono::steady_clock::now();
  auto get = client.Get("/h/k");
  auto put = client.Put("/h/k", "w");
  const auto took = std::chrono::steady_clock::now() - start;
  etcd_.Resume();
  ASSERT_FALSE(get.has_value());
  EXPECT_EQ(get.error().code, ErrorCode::kUnavailable);
  EXPECT_NE(get.error().message.find(etcd_.endpoint()), std::string::npos) << get.error().message;
  EXPECT_NE(get.error().message.find("300 ms"), std::string::npos) << get.error().message;
  ASSERT_FALSE(put.has_value());
  EXPECT_EQ(put.error().code, ErrorCode::kTimeout);
  EXPECT_LT(took, std::chrono::seconds(3));
  // Back to normal once etcd runs again.
  EXPECT_TRUE(WaitUntil([&] { return client.Get("/h/k").has_value(); }, std::chrono::seconds(10)));
}

// A server in etcd's place that answers garbage: every call fails with
// kProtocol naming the endpoint; nothing crashes.
class FakeEtcd {
 public:
  explicit FakeEtcd(std::string body, int status = 200) : body_(std::move(body)), status_(status) {
    server_.Post(".*", [this](const httplib::Request&, httplib::Response& res) {
      res.status = status_;
      res.set_content(body_, "application/json");
    });
    port_ = server_.bind_to_any_port("127.0.0.1");
    thread_ = std::thread([this] { server_.listen_after_bind(); });
    EXPECT_TRUE(WaitUntil([this] { return server_.is_running(); }));
  }
  ~FakeEtcd() {
    server_.stop();
    thread_.join();
  }
  std::string endpoint() const { return "http://127.0.0.1:" + std::to_string(port_); }

 private:
  const std::string body_;
  const int status_;
  httplib::Server server_;
  int port_ = 0;
  std::thread thread_;
};

TEST(EtcdClientMalformedTest, GarbageAnswersAreProtocolErrors) {
  enum Call { kGet, kPut, kTxn, kGrant, kKeepAlive };
  const std::vector<Call> kAll = {kGet, kPut, kTxn, kGrant, kKeepAlive};
  const struct {
    const char* body;
    int status;
    std::vector<Call> failing;  // the calls this answer cannot be an answer to
  } cases[] = {
      {"not json at all", 200, kAll},
      {"[1,2,3]", 200, kAll},
      {"", 200, kAll},
      {R"({"header":{"revision":"x"}})", 200, kAll},
      {R"({"header":{"revision":"3"},"kvs":[{"key":"%%%"}]})", 200, {kGet, kTxn, kGrant, kKeepAlive}},
      {R"({"header":{"revision":"3"},"kvs":"nope"})", 200, {kGet, kTxn, kGrant, kKeepAlive}},
      {R"({"header":{"revision":"3"},"kvs":[{"key":"YQ=="},{"key":"Yg=="}]})", 200, {kGet}},
      {R"({"header":{"revision":"3"},"succeeded":"yes"})", 200, {kTxn}},
      {R"({"header":{"revision":"3"},"ID":"1"})", 200, {kTxn, kGrant, kKeepAlive}},
      {R"({"result":{"header":{"revision":"3"},"ID":"1","TTL":"-3"}})", 200, {kGet, kPut, kTxn, kGrant, kKeepAlive}},
      {R"({"result":{"header":{"revision":"3"},"ID":"2","TTL":"5"}})", 200, {kKeepAlive}},
      {"<html>bad gateway</html>", 502, kAll},
      {R"({"code":"three"})", 400, kAll},
  };
  for (const auto& c : cases) {
    FakeEtcd fake(c.body, c.status);
    auto client = EtcdClient::Create(EtcdOptions{fake.endpoint(), milliseconds(1000)});
    ASSERT_TRUE(client.has_value());
    for (const Call call : c.failing) {
      SCOPED_TRACE(std::string(c.body) + " as the answer to call " + std::to_string(call));
      Error error;
      switch (call) {
        case kGet: error = ErrorOf(client->Get("a")); break;
        case kPut: error = ErrorOf(client->Put("a", "b")); break;
        case kTxn: error = ErrorOf(client->Txn({}, {TxnOp::Get("a")}, {TxnOp::Get("a")})); break;
        case kGrant: error = ErrorOf(client->LeaseGrant(5)); break;
        case kKeepAlive: error = ErrorOf(client->LeaseKeepAliveOnce(1)); break;
      }
      EXPECT_EQ(error.code, ErrorCode::kProtocol) << error.ToString();
      EXPECT_NE(error.message.find(fake.endpoint()), std::string::npos) << error.message;
    }
  }
}

}  // namespace
}  // namespace cachet::cluster
