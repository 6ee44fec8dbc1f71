// ClusterClient and cachectl cluster against a real cluster: an etcd and
// three cachetd nodes on loopback (each its own segment, socket and port),
// joined with `cachectl cluster add-node` and left with `remove-node`. The
// client writes through one map, the map changes under it, and every value
// must read back exactly, routed by the new map; each node holds only the
// keys of its own slots; a node that dies fails only its own keys.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <set>

#include "cachet/client.h"
#include "cachet/cluster/etcd_client.h"
#include "cachet/cluster/shard_map.h"
#include "cachet/cluster_client.h"
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
    for (int i = 1; i <= 3; ++i) {
      nodes_.push_back(std::make_unique<testing::DaemonProcess>(
          std::vector<std::string>{"--cluster", "test", "--node-id", "n" + std::to_string(i), "--etcd",
                                   etcd_.endpoint(), "--replication", "1"}));
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
};

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
  options.timeout = std::chrono::milliseconds(300);
  options.retries = 1;
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

}  // namespace
}  // namespace cachet
