// ClusterClient against scripted nodes: real ZeroMQ ROUTER peers on
// loopback speaking the cachet wire protocol, each holding its keys in a
// map and answering as a cluster node does (docs/protocol.md, "Cluster"):
// MOVED for a key whose slot its own view of the map gives another node,
// ASK or CLUSTER_DOWN where a test says so. No cachetd and no etcd: routing,
// the MGET/MSET split and the redirect rules are checked exactly, with
// every request each node received counted.
#include <gtest/gtest.h>

#include <atomic>
#include <map>
#include <mutex>
#include <thread>
#include <zmq.hpp>

#include "cachet/cluster/shard_map.h"
#include "cachet/cluster/slot.h"
#include "cachet/cluster_client.h"
#include "protocol.h"

namespace cachet {
namespace {

using wire::Op;

std::string Str(const msgpack::object& o) {
  return o.type == msgpack::type::BIN ? std::string(o.via.bin.ptr, o.via.bin.size)
                                      : std::string(o.via.str.ptr, o.via.str.size);
}

class ScriptedNode {
 public:
  explicit ScriptedNode(std::string id) : id_(std::move(id)), socket_(context_, zmq::socket_type::router) {
    socket_.set(zmq::sockopt::linger, 0);
    socket_.bind("tcp://127.0.0.1:*");
    endpoint_ = socket_.get(zmq::sockopt::last_endpoint);
    thread_ = std::thread([this] { Serve(); });
  }
  ~ScriptedNode() { Stop(); }

  void Stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }

  const std::string& id() const { return id_; }
  const std::string& endpoint() const { return endpoint_; }

  // What this node believes: the map it routes by and serves on CLUSTER.
  void SetView(const cluster::ShardMap& map, uint64_t epoch, std::map<std::string, std::string> nodes) {
    std::lock_guard<std::mutex> lock(mu_);
    view_json_ = map.ToJson();
    view_ = std::make_unique<cluster::ShardMap>(map);
    view_->set_epoch(epoch);
    nodes_ = std::move(nodes);
  }
  // A read of `key` not wrapped in ASK is answered ASK to `endpoint`.
  void AskFor(const std::string& key, const std::string& endpoint) {
    std::lock_guard<std::mutex> lock(mu_);
    ask_[key] = endpoint;
  }
  // The next `n` key requests are answered CLUSTER_DOWN.
  void ClusterDownFor(int n) { down_ = n; }

  std::map<std::string, std::string> store() const {
    std::lock_guard<std::mutex> lock(mu_);
    return store_;
  }
  void Put(const std::string& k, const std::string& v) {
    std::lock_guard<std::mutex> lock(mu_);
    store_[k] = v;
  }
  // Requests received, by op name ("ASK GET" for a wrapped one).
  int count(const std::string& op) const {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = counts_.find(op);
    return it == counts_.end() ? 0 : it->second;
  }

 private:
  void Serve() {
    while (!stop_) {
      zmq::pollitem_t item{static_cast<void*>(socket_), 0, ZMQ_POLLIN, 0};
      if (zmq::poll(&item, 1, std::chrono::milliseconds(20)) == 0) continue;
      zmq::message_t identity, frame;
      if (!socket_.recv(identity) || !socket_.recv(frame)) continue;
      wire::Writer out;
      Answer(static_cast<const char*>(frame.data()), frame.size(), out);
      socket_.send(identity, zmq::send_flags::sndmore);
      socket_.send(zmq::const_buffer(out.data(), out.size()), zmq::send_flags::none);
    }
  }

  void Answer(const char* data, size_t size, wire::Writer& out) {
    uint64_t id = 0;
    auto r = wire::DecodeRequest(data, size, &id);
    ASSERT_TRUE(r.has_value()) << r.error().ToString();
    std::lock_guard<std::mutex> lock(mu_);
    const msgpack::object* a = r->args;
    uint32_t n = r->arg_count;
    Op op = r->op;
    bool asking = false;
    if (op == Op::kAsk) {
      op = *wire::ParseOp(Str(a[0]));
      ++a;
      --n;
      asking = true;
    }
    ++counts_[std::string(asking ? "ASK " : "") + wire::OpName(op)];
    if (op == Op::kPing) {
      out.BeginReply(r->id, ErrorCode::kOk);
      out.Str("PONG");
      return;
    }
    if (op == Op::kCluster) {
      out.BeginReply(r->id, ErrorCode::kOk);
      out.Map(5);
      out.Str("cluster");
      out.Str("test");
      out.Str("node");
      out.Str(id_);
      out.Str("epoch");
      out.Uint(view_->epoch());
      out.Str("map");
      out.Str(view_json_);
      out.Str("nodes");
      out.Map(static_cast<uint32_t>(nodes_.size()));
      for (const auto& [node, e] : nodes_) {
        out.Str(node);
        out.Str(e);
      }
      return;
    }
    if (down_ > 0) {
      --down_;
      out.ErrorReply(r->id, Error{ErrorCode::kClusterDown, "no shard map yet"});
      return;
    }
    // Keys are every argument of MGET, every other of MSET, else the first.
    const uint32_t step = op == Op::kMSet ? 2 : 1;
    const uint32_t keys = op == Op::kMGet || op == Op::kMSet ? n : 1;
    for (uint32_t i = 0; i < keys; i += step) {
      const std::string key = Str(a[i]);
      const std::string& owner = view_->ShardForKey(key).nodes.front();
      if (!asking && ask_.count(key)) {
        wire::WriteRedirect(out, r->id, ErrorCode::kAsk,
                            {"importing; ask the old owner", view_->epoch(), cluster::SlotOf(key), ask_[key]});
        return;
      }
      if (owner != id_ && !asking) {
        wire::WriteRedirect(out, r->id, ErrorCode::kMoved,
                            {"slot moved to " + owner, view_->epoch(), cluster::SlotOf(key), nodes_[owner]});
        return;
      }
    }
    switch (op) {
      case Op::kGet: {
        auto it = store_.find(Str(a[0]));
        if (it == store_.end()) {
          out.BeginReply(r->id, ErrorCode::kNotFound);
          out.Nil();
        } else {
          out.BeginReply(r->id, ErrorCode::kOk);
          out.Bytes(it->second);
        }
        return;
      }
      case Op::kSet:
        store_[Str(a[0])] = Str(a[1]);
        out.BeginReply(r->id, ErrorCode::kOk);
        out.Bool(true);
        return;
      case Op::kIncr: {
        auto& v = store_[Str(a[0])];
        v = std::to_string((v.empty() ? 0 : std::stoll(v)) + a[1].via.i64);
        out.BeginReply(r->id, ErrorCode::kOk);
        out.Int(std::stoll(v));
        return;
      }
      case Op::kMGet:
        out.BeginReply(r->id, ErrorCode::kOk);
        out.Array(n);
        for (uint32_t i = 0; i < n; ++i) {
          auto it = store_.find(Str(a[i]));
          if (it == store_.end()) {
            out.Nil();
          } else {
            out.Bytes(it->second);
          }
        }
        return;
      case Op::kMSet:
        for (uint32_t i = 0; i < n; i += 2) store_[Str(a[i])] = Str(a[i + 1]);
        out.BeginReply(r->id, ErrorCode::kOk);
        out.Nil();
        return;
      default: out.ErrorReply(r->id, Error{ErrorCode::kUnknownOp, "not scripted"});
    }
  }

  const std::string id_;
  zmq::context_t context_{1};
  zmq::socket_t socket_;
  std::string endpoint_;
  std::atomic<bool> stop_{false};
  std::atomic<int> down_{0};
  std::thread thread_;
  mutable std::mutex mu_;
  std::unique_ptr<cluster::ShardMap> view_;
  std::string view_json_;
  std::map<std::string, std::string> nodes_;
  std::map<std::string, std::string> ask_;
  std::map<std::string, std::string> store_;
  std::map<std::string, int> counts_;
};

class ClusterClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (const char* id : {"a", "b", "c"}) nodes_.push_back(std::make_unique<ScriptedNode>(id));
    for (const auto& n : nodes_) directory_[n->id()] = n->endpoint();
    auto planned = cluster::Plan(nullptr, {"a", "b", "c"}, 1);
    ASSERT_TRUE(planned.has_value()) << planned.error().ToString();
    map_ = std::make_unique<cluster::ShardMap>(*planned);
    for (const auto& n : nodes_) n->SetView(*map_, 7, directory_);
  }

  std::unique_ptr<ClusterClient> Connect(int max_redirects = 5) {
    ClusterClientOptions options;
    options.seeds = {nodes_[1]->endpoint()};
    options.timeout = std::chrono::milliseconds(2000);
    options.max_redirects = max_redirects;
    auto c = ClusterClient::Connect(options);
    EXPECT_TRUE(c.has_value()) << c.error().ToString();
    return c ? std::move(*c) : nullptr;
  }

  ScriptedNode& Node(const std::string& id) {
    for (auto& n : nodes_) {
      if (n->id() == id) return *n;
    }
    ADD_FAILURE() << "no node " << id;
    return *nodes_[0];
  }
  const std::string& Owner(const std::string& key) { return map_->ShardForKey(key).nodes.front(); }
  // A key whose slot the map gives `node`.
  std::string KeyOn(const std::string& node, int skip = 0) {
    for (int i = 0;; ++i) {
      std::string k = "key-" + std::to_string(i);
      if (Owner(k) == node && skip-- == 0) return k;
    }
  }

  std::vector<std::unique_ptr<ScriptedNode>> nodes_;
  std::map<std::string, std::string> directory_;
  std::unique_ptr<cluster::ShardMap> map_;
};

TEST_F(ClusterClientTest, ConnectLearnsTheMapFromASeed) {
  auto client = Connect();
  ASSERT_NE(client, nullptr);
  EXPECT_EQ(client->epoch(), 7u);
  EXPECT_EQ(Node("b").count("CLUSTER"), 1);
  for (int i = 0; i < 200; ++i) {
    const std::string key = "k" + std::to_string(i);
    auto node = client->NodeForKey(key);
    ASSERT_TRUE(node.has_value());
    EXPECT_EQ(node->first, Owner(key)) << key;
    EXPECT_EQ(node->second, directory_[Owner(key)]) << key;
  }
}

TEST_F(ClusterClientTest, EveryKeyGoesToItsSlotsPrimary) {
  auto client = Connect();
  ASSERT_NE(client, nullptr);
  std::map<std::string, std::map<std::string, std::string>> expected;
  for (int i = 0; i < 300; ++i) {
    const std::string key = "k" + std::to_string(i), value = "v" + std::to_string(i);
    auto set = client->Set(key, value);
    ASSERT_TRUE(set.has_value()) << set.error().ToString();
    expected[Owner(key)][key] = value;
  }
  for (const auto& n : nodes_) {
    EXPECT_EQ(n->store(), expected[n->id()]) << n->id();
    EXPECT_EQ(n->count("SET"), static_cast<int>(expected[n->id()].size())) << "no request went astray";
  }
  auto got = client->Get("k42");
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(*got, std::optional<std::string>("v42"));
  auto miss = client->Get("absent");
  ASSERT_TRUE(miss.has_value());
  EXPECT_FALSE(miss->has_value());
}

TEST_F(ClusterClientTest, MGetSendsOnePartPerNodeAndKeepsTheOrderOfKeys) {
  auto client = Connect();
  ASSERT_NE(client, nullptr);
  std::vector<std::string> keys;
  std::vector<std::optional<std::string>> expected;
  for (int i = 0; i < 90; ++i) {
    keys.push_back("m" + std::to_string(i));
    if (i % 3 != 0) {
      Node(Owner(keys.back())).Put(keys.back(), "value of " + keys.back());
      expected.push_back("value of " + keys.back());
    } else {
      expected.emplace_back();  // a miss keeps its place
    }
  }
  auto got = client->MGet(keys);
  ASSERT_TRUE(got.has_value()) << got.error().ToString();
  EXPECT_EQ(*got, expected);
  for (const auto& n : nodes_) EXPECT_EQ(n->count("MGET"), 1) << n->id();
  for (const auto& n : nodes_) EXPECT_EQ(n->count("GET"), 0) << n->id();
}

TEST_F(ClusterClientTest, MSetSendsOnePartPerNodeAndStoresEachPairAtItsOwner) {
  auto client = Connect();
  ASSERT_NE(client, nullptr);
  std::vector<std::pair<std::string, std::string>> items;
  std::map<std::string, std::map<std::string, std::string>> expected;
  for (int i = 0; i < 60; ++i) {
    items.emplace_back("s" + std::to_string(i), std::to_string(i * i));
    expected[Owner(items.back().first)][items.back().first] = items.back().second;
  }
  ASSERT_TRUE(client->MSet(items).has_value());
  for (const auto& n : nodes_) {
    EXPECT_EQ(n->count("MSET"), 1) << n->id();
    EXPECT_EQ(n->store(), expected[n->id()]) << n->id();
  }
}

// Node a has adopted epoch 8, where a's shard went to b; the client still has
// epoch 7: a's MOVED makes it fetch the new map and go to b.
TEST_F(ClusterClientTest, MovedWithANewerEpochRefreshesTheMapAndRetriesThere) {
  auto client = Connect();
  ASSERT_NE(client, nullptr);
  const std::string key = KeyOn("a");
  auto newer = cluster::Plan(map_.get(), {"b", "c"}, 1);
  ASSERT_TRUE(newer.has_value());
  const std::string new_owner = newer->ShardForKey(key).nodes.front();
  for (const auto& n : nodes_) n->SetView(*newer, 8, directory_);
  auto set = client->Set(key, "moved");
  ASSERT_TRUE(set.has_value()) << set.error().ToString();
  EXPECT_EQ(client->epoch(), 8u);
  EXPECT_EQ(Node("a").count("SET"), 1);  // answered MOVED
  EXPECT_TRUE(Node("a").store().empty());
  EXPECT_EQ(Node(new_owner).store().at(key), "moved");
  EXPECT_EQ(client->NodeForKey(key)->first, new_owner);
}

// Node b has not caught up with epoch 8 yet and still sends the key's slot
// back to a, its owner at epoch 7: the client, at epoch 8, does not go back
// to a but asks b again after a pause, and gets its answer once b is there.
TEST_F(ClusterClientTest, AMovedFromANodeBehindTheClientIsRetriedNotFollowed) {
  auto newer = cluster::Plan(map_.get(), {"b", "c"}, 1);
  ASSERT_TRUE(newer.has_value());
  std::string key;
  for (int skip = 0; key.empty(); ++skip) {
    const std::string k = KeyOn("a", skip);
    if (newer->ShardForKey(k).nodes.front() == "b") key = k;
  }
  Node("a").SetView(*newer, 8, directory_);
  Node("c").SetView(*newer, 8, directory_);
  ClusterClientOptions options;
  options.seeds = {Node("c").endpoint()};
  options.timeout = std::chrono::milliseconds(300);
  options.retries = 1;
  auto connected = ClusterClient::Connect(options);
  ASSERT_TRUE(connected.has_value());
  ClusterClient& client = **connected;
  ASSERT_EQ(client.epoch(), 8u);
  auto behind = client.Get(key);
  ASSERT_FALSE(behind.has_value());
  EXPECT_EQ(behind.error().code, ErrorCode::kMoved);
  EXPECT_NE(behind.error().message.find("is behind (epoch 7 < 8)"), std::string::npos) << behind.error().message;
  EXPECT_GE(Node("b").count("GET"), 2);
  EXPECT_EQ(Node("a").count("GET"), 0);
  Node("b").SetView(*newer, 8, directory_);
  Node("b").Put(key, "at b");
  auto got = client.Get(key);
  ASSERT_TRUE(got.has_value()) << got.error().ToString();
  EXPECT_EQ(*got, std::optional<std::string>("at b"));
}

// Two nodes each believe the other serves the slot: the client gives up
// after max_redirects with a MOVED error naming both.
TEST_F(ClusterClientTest, ARedirectLoopEndsWithAClearError) {
  auto client = Connect(/*max_redirects=*/4);
  ASSERT_NE(client, nullptr);
  const std::string key = KeyOn("a");
  auto to_b = cluster::Plan(nullptr, {"b"}, 1);
  auto to_a = cluster::Plan(nullptr, {"a"}, 1);
  ASSERT_TRUE(to_b && to_a);
  Node("a").SetView(*to_b, 7, directory_);
  Node("b").SetView(*to_a, 7, directory_);
  auto got = client->Get(key);
  ASSERT_FALSE(got.has_value());
  EXPECT_EQ(got.error().code, ErrorCode::kMoved);
  EXPECT_NE(got.error().message.find("gave up after 4 redirects"), std::string::npos) << got.error().message;
  EXPECT_EQ(Node("a").count("GET") + Node("b").count("GET"), 5);  // the first try and 4 redirects
  EXPECT_EQ(client->epoch(), 7u);                                 // not newer: no refresh
}

// The new owner b is importing the key's slot from a: b answers ASK, the
// client asks a once with ["ASK", "GET", key], and keeps its map.
TEST_F(ClusterClientTest, AskRetriesThatReadOnceAtTheOldOwnerWrappedInAsk) {
  auto client = Connect();
  ASSERT_NE(client, nullptr);
  const std::string key = KeyOn("b");
  Node("a").Put(key, "still at a");
  Node("b").AskFor(key, Node("a").endpoint());
  auto got = client->Get(key);
  ASSERT_TRUE(got.has_value()) << got.error().ToString();
  EXPECT_EQ(*got, std::optional<std::string>("still at a"));
  EXPECT_EQ(Node("a").count("ASK GET"), 1);
  EXPECT_EQ(Node("a").count("GET"), 0);
  EXPECT_EQ(client->NodeForKey(key)->first, "b");
  EXPECT_EQ(client->epoch(), 7u);
  // An MGET part refused with ASK is redone key by key, the asked key at a.
  const std::string other = KeyOn("b", 1);
  Node("b").Put(other, "at b");
  auto both = client->MGet({other, key});
  ASSERT_TRUE(both.has_value()) << both.error().ToString();
  EXPECT_EQ(*both, (std::vector<std::optional<std::string>>{"at b", "still at a"}));
  EXPECT_EQ(Node("a").count("ASK GET"), 2);
}

TEST_F(ClusterClientTest, ClusterDownIsRetriedAfterABackoff) {
  auto client = Connect();
  ASSERT_NE(client, nullptr);
  const std::string key = KeyOn("c");
  Node("c").ClusterDownFor(2);
  auto incr = client->Incr(key, 5);  // not idempotent, yet refused requests are safe to resend
  ASSERT_TRUE(incr.has_value()) << incr.error().ToString();
  EXPECT_EQ(*incr, 5);
  EXPECT_EQ(Node("c").count("INCR"), 3);
}

TEST_F(ClusterClientTest, ANodeThatStaysDownFailsItsKeysWithinTheBudgetOthersStillServe) {
  ClusterClientOptions options;
  options.seeds = {Node("a").endpoint()};
  options.timeout = std::chrono::milliseconds(200);
  options.retries = 1;
  auto connected = ClusterClient::Connect(options);
  ASSERT_TRUE(connected.has_value());
  ClusterClient& client = **connected;
  Node("c").Stop();
  const auto start = std::chrono::steady_clock::now();
  auto got = client.Get(KeyOn("c"));
  const auto took = std::chrono::steady_clock::now() - start;
  ASSERT_FALSE(got.has_value());
  EXPECT_TRUE(got.error().code == ErrorCode::kTimeout || got.error().code == ErrorCode::kUnavailable)
      << got.error().ToString();
  EXPECT_NE(got.error().message.find(Node("c").endpoint()), std::string::npos) << got.error().message;
  EXPECT_LT(took, std::chrono::milliseconds(2000));
  auto other = client.Set(KeyOn("a"), "fine");
  ASSERT_TRUE(other.has_value()) << other.error().ToString();
  auto mget = client.MGet({KeyOn("a"), KeyOn("c")});
  ASSERT_FALSE(mget.has_value());
  EXPECT_NE(mget.error().message.find(Node("c").endpoint()), std::string::npos) << mget.error().message;
}

TEST_F(ClusterClientTest, BadOptionsAndNoReachableSeedAreClearErrors) {
  ClusterClientOptions none;
  auto c = ClusterClient::Connect(none);
  ASSERT_FALSE(c.has_value());
  EXPECT_EQ(c.error().code, ErrorCode::kInvalidArgument);
  ClusterClientOptions bad;
  bad.seeds = {"10.0.0.1:7379"};
  EXPECT_EQ(ClusterClient::Connect(bad).error().code, ErrorCode::kInvalidArgument);
  ClusterClientOptions dead;
  const std::string endpoint = Node("a").endpoint();
  Node("a").Stop();
  dead.seeds = {endpoint};
  dead.timeout = std::chrono::milliseconds(100);
  auto d = ClusterClient::Connect(dead);
  ASSERT_FALSE(d.has_value());
  EXPECT_EQ(d.error().code, ErrorCode::kUnavailable);
  EXPECT_NE(d.error().message.find(endpoint), std::string::npos) << d.error().message;
  // Keys are checked before anything is sent.
  auto client = Connect();
  ASSERT_NE(client, nullptr);
  EXPECT_EQ(client->Get("").error().code, ErrorCode::kKeyTooLarge);
  EXPECT_EQ(client->MGet({"ok", ""}).error().code, ErrorCode::kKeyTooLarge);
}

}  // namespace
}  // namespace cachet
