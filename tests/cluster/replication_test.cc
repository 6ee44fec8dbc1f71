// Replication and failover against a real etcd and real cachetd nodes on
// loopback: three nodes each hold a copy of every shard; writes reach every
// copy; a primary killed with SIGKILL under a load of writers and readers is
// replaced within the target and no acknowledged write is lost (the history
// is checked for linearizability); a primary stopped past its lease cannot
// acknowledge a write once it resumes; in eventual mode replicas serve
// reads.
#include <gtest/gtest.h>
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "cachet/client.h"
#include "cachet/cluster/etcd_client.h"
#include "cachet/cluster/shard_map.h"
#include "cachet/cluster/slot.h"
#include "cachet/cluster_client.h"
#include "cluster/linearizability.h"
#include "cluster/register_load.h"
#include "etcd_server.h"
#include "integration/daemon_process.h"
#include "integration/raw_wire.h"

namespace cachet {
namespace {

using Clock = std::chrono::steady_clock;
using testing::DaemonProcess;
using testing::Packer;
using testing::PackRequest;

class ReplicationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(etcd_.Start());
    cluster::EtcdOptions options;
    options.endpoints = etcd_.endpoint();
    auto client = cluster::EtcdClient::Create(options);
    ASSERT_TRUE(client.has_value()) << client.error().ToString();
    etcd_client_.emplace(std::move(*client));
  }

  // Writes a map of `ids` with a copy of every shard on each, and the
  // cluster's settings, then starts the nodes.
  void StartCluster(const std::vector<std::string>& ids, const std::string& consistency) {
    auto map = cluster::Plan(nullptr, ids, static_cast<uint32_t>(ids.size()));
    ASSERT_TRUE(map.has_value()) << map.error().ToString();
    const nlohmann::json settings = {{"replication", ids.size()}, {"consistency", consistency}};
    ASSERT_TRUE(etcd_client_->Put(Prefix() + "settings", settings.dump()).has_value());
    ASSERT_TRUE(etcd_client_->Put(Prefix() + "map", map->ToJson()).has_value());
    for (const std::string& id : ids) {
      auto& node = nodes_[id];
      node = std::make_unique<DaemonProcess>(
          std::vector<std::string>{"--cluster", name_, "--node-id", id, "--etcd", etcd_.endpoint()});
      ASSERT_TRUE(node->Start());
    }
  }

  std::string Prefix() const { return "/cachet/" + name_ + "/"; }

  std::map<std::string, int64_t> Stats(const std::string& id) {
    std::map<std::string, int64_t> stats;
    ClientOptions o;
    o.retries = 0;
    // Callers assert on the figures (an empty map reads as zeros): time for
    // a loaded machine under sanitizers to answer.
    o.timeout = std::chrono::milliseconds(2000);
    auto c = Client::Connect(nodes_.at(id)->tcp(), o);
    if (!c) return stats;
    auto s = (*c)->Stats();
    if (!s) return stats;
    for (const auto& [k, v] : *s) stats[k] = v;
    return stats;
  }

  // shard id -> node id of its primary, from etcd.
  std::map<uint32_t, std::string> Primaries() {
    std::map<uint32_t, std::string> out;
    auto range = etcd_client_->Range(Prefix() + "primary/");
    if (!range) return out;
    for (const cluster::KeyValue& kv : range->kvs) {
      const auto j = nlohmann::json::parse(kv.value);
      out[static_cast<uint32_t>(std::stoul(kv.key.substr(Prefix().size() + 8)))] = j.at("node").get<std::string>();
    }
    return out;
  }

  // Every running node sees a primary for every shard, and every primary's
  // followers hold a whole copy and have caught up.
  bool WaitHealthy(std::chrono::milliseconds limit = std::chrono::seconds(20)) {
    const auto deadline = Clock::now() + limit;
    while (Clock::now() < deadline) {
      bool healthy = true;
      for (const auto& [id, node] : nodes_) {
        if (node->pid() < 0) continue;
        auto s = Stats(id);
        if (s.empty() || s["cluster_shards_without_primary"] != 0 || s["cluster_replication_lag"] != 0 ||
            s["cluster_importing_slots"] != 0) {
          healthy = false;
        }
      }
      if (healthy) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return false;
  }

  std::unique_ptr<ClusterClient> ConnectCluster(std::chrono::milliseconds timeout = std::chrono::milliseconds(500)) {
    ClusterClientOptions o;
    o.etcd_endpoints = etcd_.endpoint();
    o.cluster = name_;
    o.timeout = timeout;
    o.retries = 8;
    o.backoff = std::chrono::milliseconds(20);
    o.max_redirects = 8;
    auto c = ClusterClient::Connect(o);
    EXPECT_TRUE(c.has_value()) << c.error().ToString();
    return c ? std::move(*c) : nullptr;
  }

  std::string AllLogs() {
    std::string all;
    for (const auto& [id, node] : nodes_) all += "---- " + id + "\n" + node->log();
    return all;
  }

  testing::EtcdServer etcd_;
  std::optional<cluster::EtcdClient> etcd_client_;
  std::string name_ = "repl";
  std::map<std::string, std::unique_ptr<DaemonProcess>> nodes_;
};

TEST_F(ReplicationTest, EveryWriteReachesEveryCopyAndOnlyPrimariesServeInStrongMode) {
  StartCluster({"n1", "n2", "n3"}, "strong");
  ASSERT_TRUE(WaitHealthy()) << AllLogs();
  // Every node holds every shard, as its primary or as a replica, and each
  // shard has one primary (the map's preferred node, unless it started over
  // a second after the first and another took the shard meanwhile).
  const auto primaries = Primaries();
  ASSERT_EQ(primaries.size(), 3u);
  int64_t led = 0;
  for (const auto& [id, node] : nodes_) {
    auto s = Stats(id);
    EXPECT_EQ(s["cluster_primary_shards"] + s["cluster_replica_shards"], 3) << id;
    led += s["cluster_primary_shards"];
  }
  EXPECT_EQ(led, 3);
  auto client = ConnectCluster();
  ASSERT_NE(client, nullptr);
  for (int i = 0; i < 300; ++i) {
    auto set = client->Set("key:" + std::to_string(i), "value:" + std::to_string(i));
    ASSERT_TRUE(set.has_value()) << set.error().ToString();
  }
  ASSERT_TRUE(client->Del("key:7").has_value());
  ASSERT_TRUE(client->Incr("counter", 5).has_value());
  ASSERT_TRUE(WaitHealthy());
  // Every copy holds every key (300 - 1 deleted + the counter).
  for (const auto& [id, node] : nodes_) EXPECT_EQ(Stats(id)["entries"], 300) << id;
  // STATS gives each node's role per shard; caught up, every copy of a
  // shard is at its primary's term and seq.
  std::map<uint32_t, std::set<std::pair<int64_t, int64_t>>> positions;  // shard -> {(term, seq)}
  int64_t entries_written = 0;
  for (const auto& [id, node] : nodes_) {
    auto s = Stats(id);
    for (const auto& [shard, primary] : primaries) {
      const std::string row = "cluster_shard_" + std::to_string(shard) + "_";
      EXPECT_EQ(s[row + "role"], primary == id ? 1 : 2) << id << " " << row;
      EXPECT_EQ(s.count(row + "lag"), primary == id ? 1u : 0u) << id << " " << row;
      EXPECT_EQ(s[row + "lag"], 0) << id << " " << row;
      positions[shard].insert({s[row + "term"], s[row + "seq"]});
      if (primary == id) entries_written += s[row + "seq"];
    }
  }
  for (const auto& [shard, at] : positions) EXPECT_EQ(at.size(), 1u) << "copies of shard " << shard << " differ";
  EXPECT_GE(entries_written, 302);  // 300 sets, a delete, an increment (and each term's marker)
  // A replica sends reads to the primary in strong mode.
  const std::string key = "key:1";
  auto map = cluster::ShardMap::FromJson(etcd_client_->Get(Prefix() + "map").value()->value);
  ASSERT_TRUE(map.has_value());
  const uint32_t shard = map->ShardForKey(key).id;
  std::string replica;
  for (const auto& [id, node] : nodes_) {
    if (id != primaries.at(shard)) replica = id;
  }
  ClientOptions o;
  o.retries = 0;
  auto direct = Client::Connect(nodes_.at(replica)->tcp(), o);
  ASSERT_TRUE(direct.has_value());
  auto got = (*direct)->Get(key);
  ASSERT_FALSE(got.has_value());
  EXPECT_EQ(got.error().code, ErrorCode::kMoved) << got.error().ToString();
  auto via_cluster = client->Get(key);
  ASSERT_TRUE(via_cluster.has_value()) << via_cluster.error().ToString();
  EXPECT_EQ(via_cluster->value_or(""), "value:1");
}

// The target: a shard is writable again within 2 s of its
// primary's death, and nothing acknowledged is lost, over many kills in a
// row. Writers and readers run throughout; their history must be
// linearizable.
TEST_F(ReplicationTest, KilledPrimariesAreReplacedWithinTwoSecondsAndLoseNoAcknowledgedWrite) {
  StartCluster({"n1", "n2", "n3"}, "strong");
  ASSERT_TRUE(WaitHealthy()) << AllLogs();
  const int kills = std::max(1, testing::EnvInt("CACHET_FAILOVER_KILLS", 20));
  constexpr int kKeys = 12;
  constexpr int kClients = 3;
  testing::RegisterLoad load(kClients, kKeys, [&]() -> std::unique_ptr<KeyValueClient> {
    return ConnectCluster(std::chrono::milliseconds(300));
  });

  std::vector<double> failover_ms;
  for (int k = 0; k < kills; ++k) {
    ASSERT_TRUE(WaitHealthy()) << "before kill " << k << "\n" << AllLogs();
    std::this_thread::sleep_for(std::chrono::milliseconds(200));  // let the writers write
    const auto primaries = Primaries();
    ASSERT_FALSE(primaries.empty());
    // Kill a primary, a different node each time round.
    const std::string victim = std::next(primaries.begin(), k % static_cast<int>(primaries.size()))->second;
    std::vector<uint32_t> victim_shards;
    for (const auto& [shard, node] : primaries) {
      if (node == victim) victim_shards.push_back(shard);
    }
    const std::string endpoint = nodes_.at(victim)->tcp();
    const auto killed = Clock::now();
    nodes_.at(victim)->Kill();
    // Writable again: every shard the victim led has a new primary that
    // acknowledges a write (a probe write, through a client of its own).
    auto probe = ConnectCluster(std::chrono::milliseconds(100));
    ASSERT_NE(probe, nullptr);
    auto map = cluster::ShardMap::FromJson(etcd_client_->Get(Prefix() + "map").value()->value);
    ASSERT_TRUE(map.has_value());
    for (uint32_t shard : victim_shards) {
      std::string key;
      for (int i = 0; key.empty(); ++i) {
        const std::string candidate = "probe:" + std::to_string(i);
        if (map->ShardForKey(candidate).id == shard) key = candidate;
      }
      bool written = false;
      while (!written && Clock::now() - killed < std::chrono::seconds(10)) {
        written = probe->Set(key, "x").has_value();
      }
      ASSERT_TRUE(written) << "shard " << shard << " not writable 10 s after kill " << k << "\n" << AllLogs();
    }
    failover_ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - killed).count());
    // The victim comes back on the same endpoint and gets a copy again.
    ASSERT_TRUE(nodes_.at(victim)->Start(endpoint)) << AllLogs();
  }
  ASSERT_TRUE(WaitHealthy()) << AllLogs();
  load.Stop();
  auto reader = ConnectCluster();
  ASSERT_NE(reader, nullptr);
  EXPECT_EQ(load.ReadAll(*reader, kClients), 0);
  const auto ops = load.history().History();
  const testing::CheckResult check = testing::CheckLinearizable(ops);
  EXPECT_TRUE(check.linearizable()) << check.key << ": " << check.explanation;
  EXPECT_GT(load.acked_writes(), static_cast<uint64_t>(kills) * 5) << "the writers made too little progress";

  std::sort(failover_ms.begin(), failover_ms.end());
  const double median = failover_ms[failover_ms.size() / 2];
  const double worst = failover_ms.back();
  std::printf("failover over %d kills: median %.0f ms, worst %.0f ms; %zu operations, %llu writes acknowledged\n",
              kills, median, worst, ops.size(), static_cast<unsigned long long>(load.acked_writes()));
  EXPECT_LT(worst, 2000.0) << "a shard took longer than 2 s to become writable";
}

// A primary stopped (SIGSTOP) past its lease is replaced; when it resumes,
// a write it received while stopped is not acknowledged, and its value is
// nowhere in the cluster.
TEST_F(ReplicationTest, AResumedDeposedPrimaryAcknowledgesNothing) {
  StartCluster({"n1", "n2", "n3"}, "strong");
  ASSERT_TRUE(WaitHealthy()) << AllLogs();
  auto map = cluster::ShardMap::FromJson(etcd_client_->Get(Prefix() + "map").value()->value);
  ASSERT_TRUE(map.has_value());
  const std::string key = "fenced";
  const uint32_t shard = map->ShardForKey(key).id;
  auto cluster_client = ConnectCluster();
  ASSERT_TRUE(cluster_client->Set(key, "before").has_value());
  const std::string old_primary = Primaries().at(shard);
  DaemonProcess& stopped = *nodes_.at(old_primary);

  stopped.Signal(SIGSTOP);
  ClientOptions o;
  o.retries = 0;
  o.timeout = std::chrono::milliseconds(8000);
  auto direct = Client::Connect(stopped.tcp(), o);
  ASSERT_TRUE(direct.has_value());
  // Sent while the node is stopped; it is read when the node resumes.
  std::optional<Result<bool>> late;
  std::thread sender([&] { late = (*direct)->Set(key, "from-the-deposed-primary"); });
  // Another node takes the shard once the stopped node's lease lapses.
  const auto deadline = Clock::now() + std::chrono::seconds(10);
  std::string now_primary = old_primary;
  while (Clock::now() < deadline) {
    auto p = Primaries();
    if (p.count(shard) != 0 && p.at(shard) != old_primary) {
      now_primary = p.at(shard);
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ASSERT_NE(now_primary, old_primary) << AllLogs();
  stopped.Signal(SIGCONT);
  sender.join();
  ASSERT_TRUE(late.has_value());
  EXPECT_FALSE(late->has_value()) << "a deposed primary acknowledged a write";
  if (!late->has_value()) {
    const ErrorCode code = late->error().code;
    EXPECT_TRUE(code == ErrorCode::kClusterDown || code == ErrorCode::kMoved || code == ErrorCode::kTimeout)
        << late->error().ToString();
  }
  ASSERT_TRUE(WaitHealthy()) << AllLogs();
  auto got = cluster_client->Get(key);
  ASSERT_TRUE(got.has_value()) << got.error().ToString();
  EXPECT_EQ(got->value_or(""), "before");
}

TEST_F(ReplicationTest, InEventualModeReplicasServeReadsOnceTheirCopyIsWhole) {
  StartCluster({"n1", "n2", "n3"}, "eventual");
  ASSERT_TRUE(WaitHealthy()) << AllLogs();
  auto client = ConnectCluster();
  ASSERT_NE(client, nullptr);
  for (int i = 0; i < 100; ++i) ASSERT_TRUE(client->Set("e:" + std::to_string(i), std::to_string(i)).has_value());
  ASSERT_TRUE(WaitHealthy());
  // Every node answers every read itself: no redirect.
  for (const auto& [id, node] : nodes_) {
    ClientOptions o;
    o.retries = 0;
    auto direct = Client::Connect(node->tcp(), o);
    ASSERT_TRUE(direct.has_value());
    for (int i = 0; i < 100; ++i) {
      auto got = (*direct)->Get("e:" + std::to_string(i));
      ASSERT_TRUE(got.has_value()) << id << ": " << got.error().ToString();
      EXPECT_EQ(got->value_or(""), std::to_string(i)) << id;
    }
  }
  // ClusterClient spreads reads over the copies: every node serves some.
  std::map<std::string, int64_t> hits_before;
  for (const auto& [id, node] : nodes_) hits_before[id] = Stats(id)["hits"];
  for (int i = 0; i < 300; ++i) {
    auto got = client->Get("e:" + std::to_string(i % 100));
    ASSERT_TRUE(got.has_value()) << got.error().ToString();
    EXPECT_EQ(got->value_or(""), std::to_string(i % 100));
  }
  for (const auto& [id, node] : nodes_) EXPECT_GT(Stats(id)["hits"], hits_before[id] + 30) << id;
  // Writes still go to the primary only.
  const auto primaries = Primaries();
  auto map = cluster::ShardMap::FromJson(etcd_client_->Get(Prefix() + "map").value()->value);
  const std::string owner = primaries.at(map->ShardForKey("e:1").id);
  for (const auto& [id, node] : nodes_) {
    if (id == owner) continue;
    ClientOptions o;
    o.retries = 0;
    auto direct = Client::Connect(node->tcp(), o);
    auto set = (*direct)->Set("e:1", "on-a-replica");
    ASSERT_FALSE(set.has_value());
    EXPECT_EQ(set.error().code, ErrorCode::kMoved);
  }
}

// REPLICATE is node to node, but any client can send one: malformed ones
// get a clear error, change nothing, and the node goes on serving.
TEST_F(ReplicationTest, MalformedReplicateRequestsGetAClearErrorAndChangeNothing) {
  StartCluster({"n1", "n2", "n3"}, "strong");
  ASSERT_TRUE(WaitHealthy()) << AllLogs();
  auto client = ConnectCluster();
  ASSERT_TRUE(client->Set("kept", "value").has_value());
  const std::map<uint32_t, std::string> primaries = Primaries();
  const uint32_t shard = primaries.begin()->first;
  // A replica of `shard`.
  std::string replica;
  for (const auto& [id, node] : nodes_) {
    if (id != primaries.at(shard)) replica = id;
  }
  testing::RawWire wire(nodes_.at(replica)->tcp());
  struct Case {
    const char* what;
    uint32_t nargs;
    std::function<void(Packer&)> args;
    uint64_t status;  // expected
  };
  const Case cases[] = {
      {"too few arguments", 2, [&](Packer& pk) { pk.pack(shard), pk.pack(1); }, 1},
      {"a string for the term", 3, [&](Packer& pk) { pk.pack(shard), pk.pack("x"), pk.pack(0); }, 1},
      {"an unknown kind", 3, [&](Packer& pk) { pk.pack(shard), pk.pack(1), pk.pack(9); }, 1},
      {"a shard it holds no copy of", 5,
       [&](Packer& pk) { pk.pack(999), pk.pack(1), pk.pack(0), pk.pack(0), pk.pack(0); }, 24},
      {"an entry of 4 values", 9,
       [&](Packer& pk) {
         pk.pack(shard), pk.pack(1), pk.pack(0), pk.pack(0), pk.pack(0);
         pk.pack(1), pk.pack(1), pk.pack("k"), pk.pack("v");
       },
       1},
      {"a slot range past 16383", 7,
       [&](Packer& pk) {
         pk.pack(shard), pk.pack(1), pk.pack(1), pk.pack(0), pk.pack(0);
         pk.pack(0), pk.pack(20000);
       },
       1},
      {"a page triple cut short", 5,
       [&](Packer& pk) { pk.pack(shard), pk.pack(1), pk.pack(2), pk.pack("k"), pk.pack("v"); }, 1},
  };
  uint64_t id = 100;
  for (const Case& c : cases) {
    const testing::WireReply reply = wire.Call(PackRequest(++id, "REPLICATE", c.nargs, c.args));
    EXPECT_EQ(reply.status, c.status) << c.what << ": " << reply.message;
    EXPECT_FALSE(reply.message.empty()) << c.what;
  }
  // An old term is fenced off: accepted = false, and the node's known term.
  const testing::WireReply fenced = wire.Call(PackRequest(
      ++id, "REPLICATE", 5, [&](Packer& pk) { pk.pack(shard), pk.pack(1), pk.pack(0), pk.pack(0), pk.pack(0); }));
  ASSERT_EQ(fenced.status, 0u);
  ASSERT_EQ(fenced.payload().type, msgpack::type::ARRAY);
  EXPECT_FALSE(fenced.payload().via.array.ptr[1].as<bool>());
  EXPECT_GT(fenced.payload().via.array.ptr[2].as<uint64_t>(), 1u);
  // Nothing changed, and the cluster still serves.
  ASSERT_TRUE(WaitHealthy()) << AllLogs();
  auto got = client->Get("kept");
  ASSERT_TRUE(got.has_value()) << got.error().ToString();
  EXPECT_EQ(got->value_or(""), "value");
  ASSERT_TRUE(client->Set("kept", "again").has_value());
}

}  // namespace
}  // namespace cachet
