// cachectl cluster against a real etcd: status reads the map and the node
// registrations; add-node, remove-node and rebalance write exactly the map
// cluster::Plan gives (compared with etcd's copy) under a txn on the map's
// revision, and refuse what they must without writing anything. Nodes are
// registered by the test itself (lease-bound keys, as cachetd writes them)
// at endpoints where nothing answers, so a change is written and then
// reported as not taken up within --timeout (exit 4); tests with running
// nodes are in cluster_client_cluster_test.cc.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "cachet/cluster/etcd_client.h"
#include "cachet/cluster/shard_map.h"
#include "cachet/cluster/slot.h"
#include "child_process.h"
#include "etcd_server.h"
#include "test_util.h"

namespace cachet {
namespace {

using nlohmann::json;
namespace cl = cluster;

class CachectlClusterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(etcd_server_.Start());
    cl::EtcdOptions options;
    options.endpoints = etcd_server_.endpoint();
    auto etcd = cl::EtcdClient::Create(options);
    ASSERT_TRUE(etcd.has_value());
    etcd_.emplace(std::move(*etcd));
    auto lease = etcd_->LeaseGrant(60);
    ASSERT_TRUE(lease.has_value());
    lease_ = lease->id;
  }

  // Registers node `id` as cachetd does, at a port where nothing listens.
  void Register(const std::string& id) {
    const json me = {{"id", id}, {"endpoint", "tcp://127.0.0.1:" + std::to_string(testing::FreeLoopbackPort())}};
    ASSERT_TRUE(etcd_->Put(prefix_ + "nodes/" + id, me.dump(), lease_).has_value());
  }

  // Writes a map planned for `nodes`; returns its epoch.
  int64_t WriteMap(const std::vector<std::string>& nodes) {
    auto map = cl::Plan(nullptr, nodes, 1);
    EXPECT_TRUE(map.has_value());
    auto rev = etcd_->Put(prefix_ + "map", map->ToJson());
    EXPECT_TRUE(rev.has_value());
    return rev.value_or(0);
  }

  cl::ShardMap StoredMap(int64_t* epoch) {
    auto kv = etcd_->Get(prefix_ + "map");
    EXPECT_TRUE(kv.has_value() && kv->has_value());
    *epoch = (*kv)->mod_revision;
    auto map = cl::ShardMap::FromJson((*kv)->value);
    EXPECT_TRUE(map.has_value());
    return *map;
  }

  // cachectl --json --etcd ... --cluster test ARGS; parses what it printed.
  json Run(std::vector<std::string> args, int expected_code, std::string* err = nullptr) {
    args.insert(args.begin(),
                {CACHECTL_PATH, "--json", "--etcd", etcd_server_.endpoint(), "--cluster", "test", "--timeout", "300"});
    const testing::ProgramResult o = testing::RunProgram(args);
    EXPECT_EQ(o.code, expected_code) << o.out << o.err;
    if (err) *err = o.err;
    if (o.out.empty()) return json();
    try {
      return json::parse(o.out);
    } catch (const json::exception& e) {
      ADD_FAILURE() << "cachectl printed no valid JSON (" << e.what() << "): " << o.out;
      return json();
    }
  }

  testing::EtcdServer etcd_server_;
  std::optional<cl::EtcdClient> etcd_;
  int64_t lease_ = 0;
  const std::string prefix_ = "/cachet/test/";
};

TEST_F(CachectlClusterTest, StatusListsNodesLiveOrDownShardsAndTheEpoch) {
  Register("a");
  Register("b");
  const int64_t epoch = WriteMap({"a", "c"});  // c is in the map but not registered: down
  const json st = Run({"cluster", "status"}, 0);
  EXPECT_EQ(st["cluster"], "test");
  EXPECT_EQ(st["epoch"], epoch);
  EXPECT_EQ(st["replication"], 1);
  ASSERT_EQ(st["nodes"].size(), 3u) << st.dump();
  EXPECT_EQ(st["nodes"][0]["id"], "a");
  EXPECT_EQ(st["nodes"][0]["state"], "live");
  EXPECT_EQ(st["nodes"][0]["in_map"], true);
  EXPECT_EQ(st["nodes"][1]["id"], "b");
  EXPECT_EQ(st["nodes"][1]["state"], "live");
  EXPECT_EQ(st["nodes"][1]["in_map"], false);
  EXPECT_EQ(st["nodes"][2]["id"], "c");
  EXPECT_EQ(st["nodes"][2]["state"], "down");
  EXPECT_EQ(st["nodes"][2]["endpoint"], "");
  ASSERT_EQ(st["shards"].size(), 2u);
  EXPECT_EQ(st["shards"][0]["slots"].get<uint32_t>() + st["shards"][1]["slots"].get<uint32_t>(), cl::kSlotCount);
  EXPECT_EQ(st["shards"][0]["slots"], 8192);
  EXPECT_EQ(st["shards"][0]["nodes"], json({"a"}));
  EXPECT_EQ(st["shards"][1]["nodes"], json({"c"}));
  EXPECT_EQ(st["shards"][0]["primary"], nullptr);

  // Without a map: the nodes, epoch 0, no shards.
  ASSERT_TRUE(etcd_->Delete(prefix_ + "map").has_value());
  const json none = Run({"cluster", "status"}, 0);
  EXPECT_EQ(none["epoch"], 0);
  EXPECT_EQ(none["has_map"], false);
  EXPECT_EQ(none["shards"], json::array());
  EXPECT_EQ(none["nodes"].size(), 2u);
}

TEST_F(CachectlClusterTest, AddNodeWritesThePlannedMapUnderTheRevisionItReadAndFollowsTheNodes) {
  Register("a");
  Register("b");
  Register("c");
  const int64_t before = WriteMap({"a", "b"});
  int64_t ignored = 0;
  const cl::ShardMap previous = StoredMap(&ignored);
  // Nothing answers at the registered endpoints: written, but not taken up.
  std::string err;
  const json out = Run({"cluster", "add-node", "c"}, 4, &err);
  EXPECT_NE(err.find("not every node had taken it up within 300 ms"), std::string::npos) << err;
  int64_t epoch = 0;
  const cl::ShardMap stored = StoredMap(&epoch);
  auto expected = cl::Plan(&previous, {"a", "b", "c"}, 1);
  ASSERT_TRUE(expected.has_value());
  EXPECT_TRUE(stored == *expected);
  EXPECT_GT(epoch, before);
  EXPECT_EQ(out["changed"], true);
  EXPECT_EQ(out["epoch"], epoch);
  EXPECT_EQ(out["previous_epoch"], before);
  EXPECT_EQ(out["moved_slots"], cl::Diff(previous, stored).MovedSlots());
  EXPECT_EQ(out["moved_slots"], 5461);  // a third of the slots, to the newcomer
  EXPECT_EQ(out["done"], false);
  ASSERT_EQ(out["nodes"].size(), 3u);
  EXPECT_EQ(out["nodes"][2]["id"], "c");
  EXPECT_EQ(out["nodes"][2]["done"], false);
}

TEST_F(CachectlClusterTest, AddNodeRefusesAnUnregisteredOrPresentNodeAndWritesNothing) {
  Register("a");
  const int64_t before = WriteMap({"a"});
  std::string err;
  EXPECT_EQ(Run({"cluster", "add-node", "ghost"}, 2, &err), json());
  EXPECT_NE(err.find("node 'ghost' is not registered"), std::string::npos) << err;
  Run({"cluster", "add-node", "a"}, 2, &err);
  EXPECT_NE(err.find("already in the map"), std::string::npos) << err;
  int64_t epoch = 0;
  (void)StoredMap(&epoch);
  EXPECT_EQ(epoch, before);
}

TEST_F(CachectlClusterTest, RemoveNodeGivesItsSlotsToTheOthersAndRefusesTheLastNode) {
  Register("a");
  Register("b");
  WriteMap({"a", "b", "c"});
  int64_t before = 0;
  const cl::ShardMap previous = StoredMap(&before);
  const json out = Run({"cluster", "remove-node", "c"}, 4);  // c may be down: it leaves all the same
  int64_t epoch = 0;
  const cl::ShardMap stored = StoredMap(&epoch);
  auto expected = cl::Plan(&previous, {"a", "b"}, 1);
  ASSERT_TRUE(expected.has_value());
  EXPECT_TRUE(stored == *expected);
  uint32_t held_by_c = 0;
  for (const cl::Shard& s : previous.shards()) held_by_c += s.nodes.front() == "c" ? s.SlotCount() : 0;
  EXPECT_EQ(out["moved_slots"], held_by_c);
  EXPECT_EQ(out["epoch"], epoch);

  std::string err;
  Run({"cluster", "remove-node", "c"}, 2, &err);
  EXPECT_NE(err.find("node 'c' is not in the map"), std::string::npos) << err;
  Run({"cluster", "remove-node", "b"}, 4);
  Run({"cluster", "remove-node", "a"}, 2, &err);
  EXPECT_NE(err.find("last node"), std::string::npos) << err;
}

TEST_F(CachectlClusterTest, RebalanceOfABalancedMapChangesNothing) {
  Register("a");
  const int64_t before = WriteMap({"a", "b"});
  const json out = Run({"cluster", "rebalance"}, 0);
  EXPECT_EQ(out, json({{"changed", false}, {"epoch", before}, {"moved_slots", 0}, {"done", true}}));
  int64_t epoch = 0;
  (void)StoredMap(&epoch);
  EXPECT_EQ(epoch, before);
}

TEST_F(CachectlClusterTest, UsageErrors) {
  std::string err;
  Run({"cluster", "add-node"}, 2, &err);
  EXPECT_NE(err.find("add-node takes ID"), std::string::npos) << err;
  Run({"cluster", "split"}, 2, &err);
  EXPECT_NE(err.find("unknown cluster command 'split'"), std::string::npos) << err;
  const testing::ProgramResult no_name = testing::RunProgram({CACHECTL_PATH, "cluster", "status"});
  EXPECT_EQ(no_name.code, 2);
  EXPECT_NE(no_name.err.find("--cluster NAME"), std::string::npos) << no_name.err;
  const testing::ProgramResult misplaced = testing::RunProgram({CACHECTL_PATH, "--etcd", "http://x", "ping"});
  EXPECT_EQ(misplaced.code, 2);
  EXPECT_NE(misplaced.err.find("--etcd does not apply to ping"), std::string::npos) << misplaced.err;
}

}  // namespace
}  // namespace cachet
