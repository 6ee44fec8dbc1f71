// ClusterClient and cachectl cluster against a real cluster: an etcd and
// three cachetd nodes on loopback (each its own segment, socket and port),
// joined with `cachectl cluster add-node` and left with `remove-node`. The
// client writes through one map, the map changes under it, and every value
// must read back exactly, routed by the new map; each node holds only the
// keys of its own slots; a node that dies fails only its own keys. Strict
// rate limiting: each key is decided by its slot's owner, once for the
// whole cluster; an owner that dies is the failure mode's to answer until
// it is back.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <atomic>
#include <cstdio>
#include <fstream>
#include <set>

#include "cachet/client.h"
#include "cachet/cluster/etcd_client.h"
#include "cachet/cluster/shard_map.h"
#include "cachet/cluster_client.h"
#include "cachet/daemon_rate_limiter.h"
#include "etcd_server.h"
#include "integration/daemon_process.h"

namespace cachet {
namespace {

using nlohmann::json;
namespace cl = cluster;

class ClusterClientClusterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(etcd_.Start());
    MakeNodes({});
  }

  void TearDown() override {
    nodes_.clear();
    if (!policy_path_.empty()) std::remove(policy_path_.c_str());
  }

  // Three nodes (not started), each with `extra` flags.
  void MakeNodes(const std::vector<std::string>& extra) {
    nodes_.clear();
    for (int i = 1; i <= 3; ++i) {
      std::vector<std::string> args{"--cluster", "test",           "--node-id",     "n" + std::to_string(i),
                                    "--etcd",    etcd_.endpoint(), "--replication", "1"};
      args.insert(args.end(), extra.begin(), extra.end());
      nodes_.push_back(std::make_unique<testing::DaemonProcess>(args));
    }
  }

  // Nodes that decide RATELIMIT by `policy` (a policy file's text).
  void MakeLimitingNodes(const std::string& policy) {
    policy_path_ = "/tmp/" + testing::UniqueSegmentName("strict") + ".policy";
    std::ofstream(policy_path_) << policy;
    MakeNodes({"--rate-limit-policy", policy_path_});
  }

  // A strict limiter learning the map from node `seed` (1-based).
  std::unique_ptr<DaemonRateLimiter> StrictLimiter(int seed, DaemonRateLimiterOptions options = {}) {
    ClusterClientOptions cluster;
    cluster.seeds = {nodes_[seed - 1]->tcp()};
    auto made = DaemonRateLimiter::ConnectCluster(cluster, options);
    EXPECT_TRUE(made.has_value()) << made.error().ToString();
    return made ? std::move(*made) : nullptr;
  }

  // A key whose slot node `node` (an id) owns in `client`'s map.
  static std::string KeyOwnedBy(ClusterClient& client, const std::string& node) {
    for (int i = 0;; ++i) {
      const std::string k = "user-" + std::to_string(i);
      if (client.NodeForKey(k)->first == node) return k;
    }
  }

  // cachectl cluster ARGS --json; the exit code checked, the output parsed.
  json Cachectl(std::vector<std::string> args, int expected_code = 0) {
    args.insert(args.begin(), {CACHECTL_PATH, "--json", "--etcd", etcd_.endpoint(), "--cluster", "test", "--timeout",
                               "30000", "cluster"});
    const testing::ProgramResult o = testing::RunProgram(args, std::chrono::seconds(40));
    EXPECT_EQ(o.code, expected_code) << o.out << o.err;
    try {
      return json::parse(o.out);
    } catch (const json::exception& e) {
      ADD_FAILURE() << "cachectl printed no JSON: " << o.out << o.err;
      return json();
    }
  }

  // Waits until node `i` is registered (its first start writes the map).
  void WaitRegistered(int i) {
    const std::string id = "n" + std::to_string(i);
    ASSERT_TRUE(testing::WaitUntil(
        [&] {
          const json st = Cachectl({"status"});
          for (const json& n : st["nodes"]) {
            if (n["id"] == id && n["state"] == "live") return true;
          }
          return false;
        },
        std::chrono::seconds(20), std::chrono::milliseconds(100)))
        << id << " did not register";
  }

  // Starts node 1 (it writes the first map, all slots its own), then `more`
  // others, each added with cachectl.
  void StartCluster(int more) {
    ASSERT_TRUE(nodes_[0]->Start());
    WaitRegistered(1);
    ASSERT_TRUE(testing::WaitUntil([&] { return Cachectl({"status"})["has_map"] == true; }, std::chrono::seconds(20),
                                   std::chrono::milliseconds(100)));
    for (int i = 2; i <= 1 + more; ++i) {
      ASSERT_TRUE(nodes_[i - 1]->Start());
      WaitRegistered(i);
      const json added = Cachectl({"add-node", "n" + std::to_string(i)});
      ASSERT_EQ(added["done"], true) << added.dump();
    }
  }

  std::unique_ptr<ClusterClient> Connect(const std::string& seed) {
    ClusterClientOptions options;
    options.seeds = {seed};
    options.timeout = std::chrono::milliseconds(2000);
    auto c = ClusterClient::Connect(options);
    EXPECT_TRUE(c.has_value()) << c.error().ToString();
    return c ? std::move(*c) : nullptr;
  }

  cl::ShardMap StoredMap() {
    cl::EtcdOptions o;
    o.endpoints = etcd_.endpoint();
    auto etcd = cl::EtcdClient::Create(o);
    auto kv = etcd->Get("/cachet/test/map");
    EXPECT_TRUE(kv.has_value() && kv->has_value());
    auto map = cl::ShardMap::FromJson((*kv)->value);
    map->set_epoch(static_cast<uint64_t>((*kv)->mod_revision));
    return *map;
  }

  // Every key node `i` holds, through a plain Client on it.
  std::set<std::string> KeysOn(int i) {
    auto client = Client::Connect(nodes_[i - 1]->tcp());
    EXPECT_TRUE(client.has_value());
    std::set<std::string> keys;
    uint64_t cursor = 0;
    do {
      auto page = (*client)->Scan(cursor, "*", 4096);
      EXPECT_TRUE(page.has_value()) << page.error().ToString();
      if (!page) break;
      keys.insert(page->keys.begin(), page->keys.end());
      cursor = page->cursor;
    } while (cursor != 0);
    return keys;
  }

  testing::EtcdServer etcd_;
  std::vector<std::unique_ptr<testing::DaemonProcess>> nodes_;
  std::string policy_path_;
};

int64_t Stat(const std::string& endpoint, const std::string& name) {
  auto client = Client::Connect(endpoint);
  if (!client) return -1;
  auto stats = (*client)->Stats();
  if (!stats) return -1;
  for (const auto& [n, v] : *stats) {
    if (n == name) return v;
  }
  return -1;
}

TEST_F(ClusterClientClusterTest, EachNodeHoldsExactlyTheKeysOfItsSlotsAndMGetKeepsOrder) {
  StartCluster(2);
  auto client = Connect(nodes_[2]->tcp());
  ASSERT_NE(client, nullptr);
  const cl::ShardMap map = StoredMap();
  EXPECT_EQ(client->epoch(), map.epoch());
  std::vector<std::pair<std::string, std::string>> items;
  std::vector<std::string> keys;
  for (int i = 0; i < 600; ++i) {
    keys.push_back("key:" + std::to_string(i));
    items.emplace_back(keys.back(), "value " + std::to_string(i));
  }
  for (int i = 0; i < 300; ++i) ASSERT_TRUE(client->Set(items[i].first, items[i].second).has_value());
  ASSERT_TRUE(client->MSet({items.begin() + 300, items.end()}).has_value());
  std::set<std::string> all;
  for (int n = 1; n <= 3; ++n) {
    const std::set<std::string> held = KeysOn(n);
    for (const std::string& k : held) {
      EXPECT_EQ(map.ShardForKey(k).nodes.front(), "n" + std::to_string(n)) << k;
      all.insert(k);
    }
    EXPECT_GT(held.size(), 100u) << "n" << n;  // about a third each
  }
  EXPECT_EQ(all.size(), 600u);
  keys.push_back("never:set");
  auto values = client->MGet(keys);
  ASSERT_TRUE(values.has_value()) << values.error().ToString();
  ASSERT_EQ(values->size(), 601u);
  for (int i = 0; i < 600; ++i) EXPECT_EQ((*values)[i], std::optional<std::string>(items[i].second)) << i;
  EXPECT_FALSE((*values)[600].has_value());
  auto incr = client->Incr("counter", 7);
  ASSERT_TRUE(incr.has_value()) << incr.error().ToString();
  EXPECT_EQ(*incr, 7);
}

// The client keeps its old map while a node joins and another leaves; it
// follows MOVED to the new owners and reads every value back.
TEST_F(ClusterClientClusterTest, AJoinAndALeaveUnderTheClientLoseNoValue) {
  StartCluster(1);
  auto client = Connect(nodes_[0]->tcp());
  ASSERT_NE(client, nullptr);
  const uint64_t first_epoch = client->epoch();
  std::vector<std::pair<std::string, std::string>> items;
  for (int i = 0; i < 400; ++i) items.emplace_back("k" + std::to_string(i), "v" + std::to_string(i));
  ASSERT_TRUE(client->MSet(items).has_value());

  ASSERT_TRUE(nodes_[2]->Start());
  WaitRegistered(3);
  const json added = Cachectl({"add-node", "n3"});
  ASSERT_EQ(added["done"], true) << added.dump();
  EXPECT_EQ(added["moved_slots"], 5461);
  for (const auto& [k, v] : items) {
    auto got = client->Get(k);
    ASSERT_TRUE(got.has_value()) << k << ": " << got.error().ToString();
    EXPECT_EQ(*got, std::optional<std::string>(v)) << k;
  }
  EXPECT_GT(client->epoch(), first_epoch);  // learnt from a MOVED
  EXPECT_FALSE(KeysOn(3).empty());

  const json removed = Cachectl({"remove-node", "n1"});
  ASSERT_EQ(removed["done"], true) << removed.dump();
  EXPECT_TRUE(nodes_[0]->Stop() == 0);
  std::vector<std::string> keys;
  for (const auto& item : items) keys.push_back(item.first);
  auto values = client->MGet(keys);
  ASSERT_TRUE(values.has_value()) << values.error().ToString();
  for (size_t i = 0; i < items.size(); ++i) EXPECT_EQ((*values)[i], std::optional<std::string>(items[i].second));
  const json st = Cachectl({"status"});
  EXPECT_EQ(st["epoch"], removed["epoch"]);
  ASSERT_EQ(st["shards"].size(), 2u);
}

TEST_F(ClusterClientClusterTest, ANodeKilledFailsOnlyItsOwnKeys) {
  StartCluster(2);
  ClusterClientOptions options;
  options.seeds = {nodes_[0]->tcp()};
  // One attempt of a second per call: a live node under sanitizers on a
  // loaded machine answers within it, and each key of the dead node fails
  // after one timeout (a call's budget is timeout * (retries + 1)).
  options.timeout = std::chrono::milliseconds(1000);
  options.retries = 0;
  auto connected = ClusterClient::Connect(options);
  ASSERT_TRUE(connected.has_value()) << connected.error().ToString();
  ClusterClient& client = **connected;
  std::map<std::string, std::string> owner;
  for (int i = 0; i < 60; ++i) {
    const std::string k = "x" + std::to_string(i);
    ASSERT_TRUE(client.Set(k, "v").has_value());
    owner[k] = client.NodeForKey(k)->first;
  }
  nodes_[1]->Kill();
  for (const auto& [k, node] : owner) {
    auto got = client.Get(k);
    if (node == "n2") {
      ASSERT_FALSE(got.has_value()) << k;
      EXPECT_TRUE(got.error().code == ErrorCode::kUnavailable || got.error().code == ErrorCode::kTimeout)
          << got.error().ToString();
    } else {
      ASSERT_TRUE(got.has_value()) << k << ": " << got.error().ToString();
      EXPECT_EQ(*got, std::optional<std::string>("v"));
    }
  }
}

// Two limiters on different seeds ask for one key of each node in turn:
// each key is admitted exactly its limit in all, every decision made (and
// counted) by the key's owner alone; a node asked about a key it does not
// own answers MOVED, so no second count can start there.
TEST_F(ClusterClientClusterTest, StrictLimitingCountsEachKeyOnceOnItsOwner) {
  // A token bucket of 5 an hour: no window edge for the test to straddle.
  MakeLimitingNodes("[tier.t]\nhourly = 5/1h token_bucket\n");
  StartCluster(1);
  auto client = Connect(nodes_[0]->tcp());
  ASSERT_NE(client, nullptr);
  const std::string on1 = KeyOwnedBy(*client, "n1"), on2 = KeyOwnedBy(*client, "n2");
  auto a = StrictLimiter(1), b = StrictLimiter(2);
  ASSERT_TRUE(a && b);
  for (const std::string& key : {on1, on2}) {
    SCOPED_TRACE(key);
    int admitted = 0;
    for (int i = 0; i < 10; ++i) {
      auto d = (i % 2 ? *a : *b).Check(key, "t");
      ASSERT_TRUE(d.has_value()) << d.error().ToString();
      EXPECT_EQ(d->limit, 5u);
      admitted += d->allowed ? 1 : 0;
    }
    EXPECT_EQ(admitted, 5);
  }
  EXPECT_TRUE(a->healthy() && b->healthy());
  for (int i = 1; i <= 2; ++i) {
    EXPECT_EQ(Stat(nodes_[i - 1]->tcp(), "ratelimit_allowed"), 5) << "n" << i;
    EXPECT_EQ(Stat(nodes_[i - 1]->tcp(), "ratelimit_denied"), 5) << "n" << i;
  }
  auto plain = Client::Connect(nodes_[1]->tcp());
  ASSERT_TRUE(plain.has_value());
  auto moved = (*plain)->RateLimit(on1, "t");
  ASSERT_FALSE(moved.has_value());
  EXPECT_EQ(moved.error().code, ErrorCode::kMoved) << moved.error().ToString();
  EXPECT_EQ(Stat(nodes_[1]->tcp(), "ratelimit_allowed"), 5);  // the refused request counted nothing
}

// The owner of a key dies: the next decision for it gives the failure
// mode's answer (here: deny) after one timeout, the limiter reports the
// outage, and later decisions wait for nothing until the retry interval has
// passed; once the node is back, decisions go to it again.
TEST_F(ClusterClientClusterTest, StrictLimitingFallsBackWhenAnOwnerDiesAndReturnsToIt) {
  MakeLimitingNodes("[tier.t]\nhourly = 1000/1h token_bucket\n");
  StartCluster(1);
  auto client = Connect(nodes_[0]->tcp());
  ASSERT_NE(client, nullptr);
  const std::string on2 = KeyOwnedBy(*client, "n2");
  std::atomic<int> reports_down{0}, reports_up{0};
  DaemonRateLimiterOptions options;
  options.on_failure = FailureMode::kFailClosed;
  options.timeout = std::chrono::milliseconds(100);
  options.retry_interval = std::chrono::milliseconds(300);
  options.on_health_change = [&](bool healthy, const Error&) { ++(healthy ? reports_up : reports_down); };
  auto limiter = StrictLimiter(1, options);
  ASSERT_NE(limiter, nullptr);
  ASSERT_TRUE(limiter->Check(on2, "t").value().allowed);
  const std::string n2 = nodes_[1]->tcp();
  nodes_[1]->Kill();
  auto d = limiter->Check(on2, "t");
  ASSERT_TRUE(d.has_value()) << d.error().ToString();
  EXPECT_FALSE(d->allowed);
  EXPECT_EQ(d->rule, "store_unavailable");
  EXPECT_FALSE(limiter->healthy());
  EXPECT_EQ(reports_down.load(), 1);
  for (int i = 0; i < 20; ++i) EXPECT_EQ(limiter->Check(on2, "t").value().rule, "store_unavailable");
  EXPECT_EQ(reports_down.load(), 1);  // one report per outage, not per decision
  ASSERT_TRUE(nodes_[1]->Start(n2));  // the same endpoint, as a restarted service has
  ASSERT_TRUE(testing::WaitUntil(
      [&] {
        auto again = limiter->Check(on2, "t");
        return again && again->allowed && again->rule != "store_unavailable";
      },
      std::chrono::seconds(20)));
  EXPECT_TRUE(limiter->healthy());
  EXPECT_EQ(reports_up.load(), 1);
}

}  // namespace
}  // namespace cachet
