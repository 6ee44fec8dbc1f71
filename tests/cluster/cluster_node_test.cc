// cachetd as a cluster node, against a real etcd and real daemons on
// loopback: the first node makes the map, a node answers MOVED for slots it
// does not serve, a join moves slots and their keys to the new node, writes
// made while a slot is imported win over the imported copy, and reads of keys
// not imported yet are sent back to the old owner with ASK.
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "cachet/client.h"
#include "cachet/clock.h"
#include "cachet/cluster/etcd_client.h"
#include "cachet/cluster/shard_map.h"
#include "cachet/cluster/slot.h"
#include "cachet/policy_subscriber.h"
#include "etcd_server.h"
#include "integration/daemon_process.h"
#include "integration/raw_wire.h"

namespace cachet {
namespace {

using testing::DaemonProcess;
using testing::Packer;
using testing::PackRequest;

class ClusterNodeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(etcd_.Start());
    cluster::EtcdOptions options;
    options.endpoints = etcd_.endpoint();
    auto client = cluster::EtcdClient::Create(options);
    ASSERT_TRUE(client.has_value()) << client.error().ToString();
    etcd_client_.emplace(std::move(*client));
  }

  // A node of cluster `name_` with id `id`, started.
  DaemonProcess& StartNode(const std::string& id, const std::vector<std::string>& extra = {}) {
    auto& node = nodes_[id];
    std::vector<std::string> args{"--cluster",      name_,           "--node-id", id, "--etcd",
                                  etcd_.endpoint(), "--replication", "1"};
    args.insert(args.end(), extra.begin(), extra.end());
    node = std::make_unique<DaemonProcess>(args);
    EXPECT_TRUE(node->Start());
    return *node;
  }

  std::unique_ptr<Client> Connect(const std::string& id) {
    ClientOptions o;
    o.retries = 0;
    // One attempt per call, which must be answered: time for a loaded
    // machine under ThreadSanitizer (the default second is not always).
    o.timeout = std::chrono::seconds(5);
    auto c = Client::Connect(nodes_.at(id)->tcp(), o);
    EXPECT_TRUE(c.has_value()) << c.error().ToString();
    return c ? std::move(*c) : nullptr;
  }

  std::map<std::string, int64_t> Stats(const std::string& id) {
    std::map<std::string, int64_t> stats;
    auto c = Connect(id);
    if (!c) return stats;
    auto s = c->Stats();
    EXPECT_TRUE(s.has_value()) << s.error().ToString();
    if (s) stats.insert(s->begin(), s->end());
    return stats;
  }

  // The map in etcd and its epoch (mod_revision).
  cluster::ShardMap Map() {
    auto kv = etcd_client_->Get("/cachet/" + name_ + "/map");
    EXPECT_TRUE(kv.has_value() && kv->has_value());
    auto map = cluster::ShardMap::FromJson((*kv)->value);
    EXPECT_TRUE(map.has_value()) << map.error().ToString();
    map->set_epoch(static_cast<uint64_t>((*kv)->mod_revision));
    return *map;
  }

  // Writes the plan for `nodes` as an operator's tool does; returns its epoch.
  uint64_t Replan(const std::vector<std::string>& nodes) {
    const cluster::ShardMap current = Map();
    auto next = cluster::Plan(&current, nodes, 1);
    EXPECT_TRUE(next.has_value()) << next.error().ToString();
    const std::string key = "/cachet/" + name_ + "/map";
    auto txn = etcd_client_->Txn(
        {cluster::Compare::ModRevision(key, cluster::Compare::Op::kEqual, static_cast<int64_t>(current.epoch()))},
        {cluster::TxnOp::Put(key, next->ToJson())}, {});
    EXPECT_TRUE(txn.has_value() && txn->succeeded);
    return txn ? static_cast<uint64_t>(txn->revision) : 0;
  }

  // Waits until node `id` serves the map of `epoch`, imports nothing and
  // sees a primary elected for every shard.
  bool WaitSettled(const std::string& id, uint64_t epoch) {
    return testing::WaitUntil(
        [&] {
          auto s = Stats(id);
          return s["cluster_epoch"] == static_cast<int64_t>(epoch) && s["cluster_importing_slots"] == 0 &&
                 s["cluster_shards_without_primary"] == 0;
        },
        std::chrono::seconds(20));
  }

  std::string Owner(const cluster::ShardMap& map, const std::string& key) { return map.ShardForKey(key).nodes.front(); }

  testing::EtcdServer etcd_;
  std::optional<cluster::EtcdClient> etcd_client_;
  const std::string name_ = testing::UniqueSegmentName("c");
  std::map<std::string, std::unique_ptr<DaemonProcess>> nodes_;
};

// A node's writes must reach its replicas, so it lets no same-host client
// write its segment, not even one that a standalone run before it (killed,
// so it revoked nothing) had let write: the segment offered to readers
// (eventual consistency) takes writes only through the node.
TEST_F(ClusterNodeTest, ANodeRevokesSameHostWritesEvenOnASegmentAStandaloneRunGranted) {
  DaemonProcess node;
  ASSERT_TRUE(node.Start());
  auto local = Client::Connect(node.ipc(), testing::Patient());
  ASSERT_TRUE(local.has_value());
  ASSERT_TRUE(testing::WaitUntilAttached(**local));
  ASSERT_TRUE((*local)->WritesSharedMemory());
  node.Kill();
  node.SetExtraArgs({"--cluster", name_, "--node-id", "a", "--etcd", etcd_.endpoint(), "--replication", "1",
                     "--consistency", "eventual"});
  ASSERT_TRUE(node.Start(node.tcp()));
  EXPECT_NE(node.log().find("same-host writes: off (a cluster node)"), std::string::npos) << node.log();
  EXPECT_FALSE((*local)->WritesSharedMemory());
  EXPECT_EQ(testing::StatOf(**local, "same_host_writes"), 0);
  const int64_t before = testing::StatOf(**local, "requests");
  ASSERT_EQ((*local)->Set("k", "through the node"), true);
  const int64_t served = testing::StatOf(**local, "requests") - before;
  EXPECT_TRUE(served == 2 || served == 3) << served;  // the SET, this STATS, maybe the client's INFO re-check
  EXPECT_EQ((*local)->Get("k").value(), "through the node");
}

TEST_F(ClusterNodeTest, TheFirstNodeMakesTheMapAndServesEverySlot) {
  StartNode("a");
  const cluster::ShardMap map = Map();
  ASSERT_EQ(map.shards().size(), 1u);
  EXPECT_EQ(map.shards()[0].nodes, std::vector<std::string>{"a"});
  EXPECT_EQ(map.shards()[0].SlotCount(), cluster::kSlotCount);

  auto c = Connect("a");
  ASSERT_TRUE(c);
  ASSERT_TRUE(c->Set("k", "v").has_value());
  EXPECT_EQ(c->Get("k").value(), "v");
  auto stats = Stats("a");
  EXPECT_EQ(stats["cluster_epoch"], static_cast<int64_t>(map.epoch()));
  EXPECT_EQ(stats["cluster_owned_slots"], cluster::kSlotCount);
  EXPECT_EQ(stats["cluster_registered"], 1);

  // CLUSTER: the node's view, with the map as etcd holds it.
  testing::RawWire wire(nodes_.at("a")->tcp());
  const testing::WireReply reply = wire.Call(PackRequest(1, "CLUSTER"));
  ASSERT_EQ(reply.status, 0u) << reply.message;
  std::map<std::string, msgpack::object> fields;
  for (const auto& kv : reply.payload().via.map) fields[kv.key.as<std::string>()] = kv.val;
  EXPECT_EQ(fields.at("cluster").as<std::string>(), name_);
  EXPECT_EQ(fields.at("node").as<std::string>(), "a");
  EXPECT_EQ(fields.at("epoch").as<uint64_t>(), map.epoch());
  EXPECT_EQ(cluster::ShardMap::FromJson(fields.at("map").as<std::string>()).value(), map);
  const auto directory = fields.at("nodes").as<std::map<std::string, std::string>>();
  EXPECT_EQ(directory, (std::map<std::string, std::string>{{"a", nodes_.at("a")->tcp()}}));
}

TEST_F(ClusterNodeTest, ANodeThatDoesNotServeAKeysSlotAnswersMovedWithTheOwner) {
  StartNode("a");
  StartNode("b");  // registered, but the map still gives every slot to a
  const cluster::ShardMap map = Map();
  ASSERT_TRUE(testing::WaitUntil([&] { return Stats("b")["cluster_epoch"] == static_cast<int64_t>(map.epoch()); }));

  testing::RawWire wire(nodes_.at("b")->tcp());
  const testing::WireReply reply = wire.Call(PackRequest(7, "SET", 2, [](Packer& pk) {
    pk.pack(std::string("user:42"));
    pk.pack(std::string("x"));
  }));
  ASSERT_EQ(reply.status, 22u);  // MOVED
  EXPECT_EQ(reply.id, 7u);
  std::map<std::string, msgpack::object> fields;
  for (const auto& kv : reply.payload().via.map) fields[kv.key.as<std::string>()] = kv.val;
  EXPECT_EQ(fields.at("endpoint").as<std::string>(), nodes_.at("a")->tcp());
  EXPECT_EQ(fields.at("epoch").as<uint64_t>(), map.epoch());
  EXPECT_EQ(fields.at("slot").as<uint32_t>(), cluster::SlotOf("user:42"));
  EXPECT_NE(fields.at("message").as<std::string>().find("node 'a'"), std::string::npos);

  // Through the client library: the error says where, and nothing was stored on b.
  auto b = Connect("b");
  ASSERT_TRUE(b);
  auto get = b->Get("user:42");
  ASSERT_FALSE(get.has_value());
  EXPECT_EQ(get.error().code, ErrorCode::kMoved);
  EXPECT_EQ(Stats("b")["entries"], 0);
  // An ASK-wrapped read is served by b from its own store (a miss here).
  const testing::WireReply asked = wire.Call(PackRequest(8, "ASK", 2, [](Packer& pk) {
    pk.pack(std::string("GET"));
    pk.pack(std::string("user:42"));
  }));
  EXPECT_EQ(asked.status, 5u);
}

TEST_F(ClusterNodeTest, AJoinMovesAboutHalfTheSlotsAndEveryKeyOfThemToTheNewNode) {
  StartNode("a");
  auto a = Connect("a");
  ASSERT_TRUE(a);
  constexpr int kKeys = 3000;
  for (int i = 0; i < kKeys; ++i) {
    ASSERT_TRUE(a->Set("key" + std::to_string(i), "value" + std::to_string(i)).has_value());
  }
  StartNode("b");
  const uint64_t epoch = Replan({"a", "b"});
  ASSERT_TRUE(WaitSettled("b", epoch));
  ASSERT_TRUE(WaitSettled("a", epoch));

  const cluster::ShardMap map = Map();
  ASSERT_EQ(map.epoch(), epoch);
  auto b = Connect("b");
  ASSERT_TRUE(b);
  int on_b = 0;
  for (int i = 0; i < kKeys; ++i) {
    const std::string key = "key" + std::to_string(i);
    const bool b_owns = Owner(map, key) == "b";
    on_b += b_owns;
    Client& owner = b_owns ? *b : *a;
    Client& other = b_owns ? *a : *b;
    ASSERT_EQ(owner.Get(key).value(), "value" + std::to_string(i)) << key;
    auto moved = other.Get(key);
    ASSERT_FALSE(moved.has_value()) << key;
    EXPECT_EQ(moved.error().code, ErrorCode::kMoved) << key;
  }
  // One shard per node: b took half the slots, and the keys in them.
  EXPECT_EQ(Stats("b")["cluster_owned_slots"], cluster::kSlotCount / 2);
  EXPECT_EQ(Stats("b")["cluster_imported_keys"], on_b);
  EXPECT_GT(on_b, kKeys / 2 - 200);
  EXPECT_LT(on_b, kKeys / 2 + 200);

  // And back: b leaves the map, a imports b's keys again, including one
  // written on b after the join.
  ASSERT_TRUE(b->Set(std::string("key0"), "rewritten").has_value() || Owner(map, "key0") != "b");
  const uint64_t back = Replan({"a"});
  ASSERT_TRUE(WaitSettled("a", back));
  for (int i = 0; i < kKeys; ++i) {
    const std::string key = "key" + std::to_string(i);
    const std::string want = key == "key0" && Owner(map, "key0") == "b" ? "rewritten" : "value" + std::to_string(i);
    ASSERT_EQ(a->Get(key).value(), want) << key;
  }
}

// The old owner stalls (SIGSTOP) while the new one imports: the new owner
// serves writes at once, sends reads of keys it has not got to the old
// owner (ASK), asks read-modify-write ops to retry, and after the import
// keeps what was written on it rather than the older imported copy.
TEST_F(ClusterNodeTest, WritesDuringAnImportWinAndMissingKeysAreAskedOfTheOldOwner) {
  StartNode("a");
  StartNode("b");
  auto a = Connect("a");
  ASSERT_TRUE(a);
  const cluster::ShardMap before = Map();
  auto after = cluster::Plan(&before, {"a", "b"}, 1);
  ASSERT_TRUE(after.has_value());
  // Keys that move to b.
  std::vector<std::string> moving;
  for (int i = 0; moving.size() < 3; ++i) {
    const std::string key = "m" + std::to_string(i);
    if (after->ShardForKey(key).nodes.front() == "b") moving.push_back(key);
  }
  for (const std::string& key : moving) ASSERT_TRUE(a->Set(key, "old").has_value());
  ASSERT_TRUE(a->Set(moving[2], "7").has_value());

  nodes_.at("a")->Signal(SIGSTOP);
  const uint64_t epoch = Replan({"a", "b"});
  // b is elected primary of its new shard and starts importing from a.
  ASSERT_TRUE(testing::WaitUntil([&] {
    auto s = Stats("b");
    return s["cluster_epoch"] == static_cast<int64_t>(epoch) && s["cluster_importing_slots"] > 0;
  }));

  auto b = Connect("b");
  ASSERT_TRUE(b);
  ASSERT_TRUE(b->Set(moving[0], "new").has_value());
  testing::RawWire wire(nodes_.at("b")->tcp());
  const testing::WireReply miss = wire.Call(PackRequest(3, "GET", 1, [&](Packer& pk) { pk.pack(moving[1]); }));
  EXPECT_EQ(miss.status, 23u);  // ASK
  std::map<std::string, msgpack::object> fields;
  for (const auto& kv : miss.payload().via.map) fields[kv.key.as<std::string>()] = kv.val;
  EXPECT_EQ(fields.at("endpoint").as<std::string>(), nodes_.at("a")->tcp());
  auto incr = b->Incr(moving[2]);
  ASSERT_FALSE(incr.has_value());
  EXPECT_EQ(incr.error().code, ErrorCode::kClusterDown);

  nodes_.at("a")->Signal(SIGCONT);
  ASSERT_TRUE(WaitSettled("b", epoch));
  EXPECT_EQ(b->Get(moving[0]).value(), "new");  // not the imported "old"
  EXPECT_EQ(b->Get(moving[1]).value(), "old");
  EXPECT_EQ(b->Incr(moving[2]).value(), 8);
  if (HasFailure()) ADD_FAILURE() << "a:\n" << nodes_.at("a")->Log() << "b:\n" << nodes_.at("b")->Log();
}

TEST_F(ClusterNodeTest, BadClusterSettingsAndAnUnreachableEtcdStopTheStartWithAReason) {
  const std::string id = testing::UniqueSegmentName("bad");
  auto run = [&](std::vector<std::string> extra) {
    std::vector<std::string> args = {"--segment", id, "--ipc", "", "--tcp", "tcp://127.0.0.1:*"};
    args.insert(args.end(), extra.begin(), extra.end());
    return testing::RunCachetd(args, std::chrono::seconds(20));
  };
  const testing::ProgramResult no_id = run({"--cluster", "c", "--etcd", etcd_.endpoint()});
  EXPECT_EQ(no_id.code, 2);
  EXPECT_NE(no_id.err.find("node-id"), std::string::npos) << no_id.err;
  const testing::ProgramResult no_cluster = run({"--node-id", "a"});
  EXPECT_EQ(no_cluster.code, 2);
  EXPECT_NE(no_cluster.err.find("need cluster"), std::string::npos) << no_cluster.err;
  const testing::ProgramResult wildcard =
      run({"--cluster", "c", "--node-id", "a", "--etcd", etcd_.endpoint(), "--advertise", "tcp://0.0.0.0:7379"});
  EXPECT_EQ(wildcard.code, 2);
  EXPECT_NE(wildcard.err.find("advertise"), std::string::npos) << wildcard.err;
  const testing::ProgramResult dead_etcd = run({"--cluster", "c", "--node-id", "a", "--etcd",
                                                "http://127.0.0.1:" + std::to_string(testing::FreeLoopbackPort())});
  EXPECT_EQ(dead_etcd.code, 1);
  EXPECT_NE(dead_etcd.err.find("cannot join cluster 'c'"), std::string::npos) << dead_etcd.err;
  testing::RemoveDaemonFiles(id);
}

// Limits reloaded on any node run on every node and reach every limiter
// that follows one: each node has its own copy of the policy file (as on
// hosts of their own) and publishes what it runs on its `pub`.
class ClusterPolicyTest : public ClusterNodeTest {
 protected:
  void TearDown() override {
    for (const auto& [id, path] : files_) std::remove(path.c_str());
  }

  // Node `id` with its own policy file holding `text`, publishing on ipc,
  // and a subscriber to what it publishes.
  void StartWithPolicy(const std::string& id, const std::string& text) {
    const std::string base = "/tmp/" + name_ + "-" + id;
    files_[id] = base + ".policy";
    WriteFile(id, text);
    const std::string pub = "ipc://" + base + "-pub.sock";
    StartNode(id, {"--rate-limit-policy", files_[id], "--pub", pub});
    auto sub = PolicySubscriber::Start(pub, [](const PolicyFile&) -> Result<void> { return {}; });
    ASSERT_TRUE(sub.has_value()) << sub.error().ToString();
    subscribers_[id] = std::move(*sub);
  }

  void WriteFile(const std::string& id, const std::string& text) { std::ofstream(files_.at(id)) << text; }

  // Every subscriber holds `text`'s version.
  bool AllFollow(const std::string& text) {
    for (const auto& [id, sub] : subscribers_) {
      if (sub->version() != PolicySubscriber::VersionOf(text)) return false;
    }
    return true;
  }

  static constexpr const char* kFive = "[tier.regular]\nper_hour = 5/1h sliding_window\n";
  static constexpr const char* kEight = "[tier.regular]\nper_hour = 8/1h sliding_window\n";
  std::map<std::string, std::string> files_;
  std::map<std::string, std::unique_ptr<PolicySubscriber>> subscribers_;
};

TEST_F(ClusterPolicyTest, ASighuppedPolicyRunsOnEveryNodeWithinASecondCountersKept) {
  StartWithPolicy("a", kFive);
  StartWithPolicy("b", kFive);
  StartWithPolicy("c", kFive);
  ASSERT_TRUE(testing::WaitUntil([&] { return AllFollow(kFive); }, std::chrono::seconds(10)));
  // Node a holds every slot, so it decides every key.
  auto a = Connect("a");
  ASSERT_NE(a, nullptr);
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(a->RateLimit("alice", "regular").value().allowed);

  WriteFile("c", kEight);  // edited on c's host only
  const size_t mark = nodes_.at("c")->log().size();
  const auto sent = std::chrono::steady_clock::now();
  nodes_.at("c")->Hup();
  ASSERT_TRUE(testing::WaitUntil([&] { return AllFollow(kEight); }, std::chrono::seconds(5)));
  const auto took = std::chrono::steady_clock::now() - sent;
  EXPECT_LT(took, std::chrono::seconds(1)) << std::chrono::duration_cast<std::chrono::milliseconds>(took).count();
  EXPECT_TRUE(nodes_.at("c")->WaitForLog("is now the cluster's rate-limit policy", mark)) << nodes_.at("c")->log();
  // a runs 8 per hour now and kept alice's 3: five more pass, then none.
  int admitted = 0;
  for (int i = 0; i < 10; ++i) admitted += a->RateLimit("alice", "regular").value().allowed;
  EXPECT_EQ(admitted, 5);
  auto stats = Stats("a");
  EXPECT_EQ(stats["cluster_policy_revision"], Stats("c")["cluster_policy_revision"]);
  EXPECT_GT(stats["cluster_policy_revision"], 0);
}

TEST_F(ClusterPolicyTest, ANodeStartedWithAnOlderFileRunsTheClustersPolicy) {
  StartWithPolicy("a", kEight);
  StartWithPolicy("b", kFive);  // a stale copy: the cluster's stays
  ASSERT_TRUE(testing::WaitUntil([&] { return AllFollow(kEight); }, std::chrono::seconds(10)));
  EXPECT_TRUE(nodes_.at("b")->WaitForLog("running the cluster's rate-limit policy")) << nodes_.at("b")->log();
  // A SIGHUP that does not change b's file leaves the cluster's policy be.
  nodes_.at("b")->Hup();
  EXPECT_TRUE(nodes_.at("b")->WaitForLog("configuration reloaded")) << nodes_.at("b")->log();
  EXPECT_TRUE(AllFollow(kEight));
  // A file that does not parse changes nothing anywhere.
  WriteFile("b", "[tier.regular]\nper_hour = lots\n");
  nodes_.at("b")->Hup();
  EXPECT_TRUE(nodes_.at("b")->WaitForLog("reload failed")) << nodes_.at("b")->log();
  EXPECT_TRUE(AllFollow(kEight));
  auto kv = etcd_client_->Get("/cachet/" + name_ + "/policy");
  ASSERT_TRUE(kv.has_value() && kv->has_value());
  EXPECT_EQ((*kv)->value, kEight);
}

}  // namespace
}  // namespace cachet
