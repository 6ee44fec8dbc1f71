// One rate limit across three hosts: the example http_service runs in
// three network namespaces of its own (addresses on a bridge,
// tests/cluster/netns.h). The test process sends requests for one API key
// to all three at a steady combined rate far above the limit and counts,
// per window, what the three admitted together.
//
// Gossip (--store gossip, peers from the policy file's [peers]): within
// docs/design.md's bound for synced rules, within H - 1 with
// share_remaining, at most the limit for local rules; and still within the
// bound when a host is killed mid-window or restarted (plus its catch-up),
// and after a cut-off host is healed, with every request answered meanwhile.
//
// Strict (--store cluster): each host also runs a cachetd node of one
// cluster (etcd on host 0), and the services ask the node that owns the
// key: exactly the limit in every window; with the owner killed, what the
// failure mode says (closed: nothing more) and every request still
// answered.
#include <httplib.h>
#include <signal.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "cachet/clock.h"
#include "cachet/cluster/etcd_client.h"
#include "cachet/cluster_client.h"
#include "cluster/netns.h"
#include "integration/daemon_process.h"

namespace cachet {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

constexpr int kHosts = 3;
constexpr int kPort = 8080;
constexpr uint64_t kLimit = 150;   // per 1 s window, for the key below
constexpr int kRatePerHost = 200;  // requests per second to each host: 600/s in all, 4x the limit
constexpr int64_t kWindowMs = 1000;
constexpr int64_t kGuardMs = 10;        // no request is sent this close to a window's edge
constexpr double kSyncSeconds = 0.010;  // the services' --sync-interval-ms
// What the hosts' and the test's own scheduling adds to the one-way delay d
// on this 2-core machine (sanitizers included): generous, since the bound
// still has to come out far below the limit's 2x that an unsynced limiter gives.
constexpr double kDelaySeconds = 0.040;

// docs/design.md: R * (I + d) * (H - 1) / H, for `hosts` hosts sharing `rate`.
uint64_t Bound(int hosts, double rate) {
  return static_cast<uint64_t>(rate * (kSyncSeconds + kDelaySeconds) * (hosts - 1) / hosts) + 1;
}

class LimiterNetnsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (auto why = testing::TestNetwork::Unsupported()) GTEST_SKIP() << "no network namespaces here: " << *why;
    auto net = testing::TestNetwork::Create(kHosts);
    ASSERT_TRUE(net.has_value()) << net.error().ToString();
    net_ = std::move(*net);
  }

  void TearDown() override {
    for (auto& s : services_) s.reset();  // SIGTERM each; a clean exit is checked
    std::remove(policy_path_.c_str());
  }

  void WritePolicy(const std::string& rule_options, const std::string& path = "", uint64_t limit = kLimit) {
    std::ofstream out(path.empty() ? policy_path_ : path);
    out << "[tier.anonymous]\nper_second = 1/1s\n"
        << "[tier.shared]\nper_second = " << limit << "/1s fixed_window " << rule_options << "\n"
        << "[keys]\nk-shared = shared\n";
    if (!peers_in_policy_) return;
    out << "[peers]\n";
    for (int i = 0; i < kHosts; ++i) out << "h" << i << " = tcp://" << net_->address(i) << ":7400\n";
  }

  // etcd on host 0, answering before this returns.
  void StartEtcd() {
    const std::string client_url = "http://" + net_->address(0) + ":2379";
    const std::string peer_url = "http://" + net_->address(0) + ":2380";
    etcd_.emplace(net_->Exec(
        0, {ETCD_PATH, "--name", "e", "--data-dir", etcd_dir_, "--listen-client-urls", client_url,
            "--advertise-client-urls", client_url, "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls",
            peer_url, "--initial-cluster", "e=" + peer_url, "--log-level", "warn"}));
    etcd_url_ = client_url;
    cluster::EtcdOptions options;
    options.endpoints = etcd_url_;
    auto etcd = cluster::EtcdClient::Create(options);
    ASSERT_TRUE(etcd.has_value()) << etcd.error().ToString();
    ASSERT_TRUE(testing::WaitUntil([&] { return etcd->Range("/").has_value(); }, seconds(20)))
        << "etcd did not answer in its namespace";
  }

  void StopEtcd() {
    if (etcd_) etcd_->Stop(testing::ChildProcess::kAnyExit);
    std::error_code ignored;
    std::filesystem::remove_all(etcd_dir_, ignored);
  }

  // The --store option and what goes with it, for host `host`.
  virtual std::vector<std::string> StoreArgs(int host) const = 0;

  void StartService(int host, const std::vector<std::string>& extra = {}) {
    std::vector<std::string> args{
        HTTP_SERVICE_PATH,     "--policy",  policy_path_, "--host", net_->address(host), "--port",
        std::to_string(kPort), "--threads", "4"};
    const std::vector<std::string> store = StoreArgs(host);
    args.insert(args.end(), store.begin(), store.end());
    args.insert(args.end(), extra.begin(), extra.end());
    services_[host].emplace(net_->Exec(host, args));
    ASSERT_TRUE(testing::WaitUntil([&] { return Get(host).has_value(); }, seconds(20)))
        << "http_service on host " << host << " did not answer; stderr:\n"
        << services_[host]->err();
  }

  void StartAll(const std::vector<std::string>& extra = {}) {
    for (int i = 0; i < kHosts; ++i) StartService(i, extra);
  }

  // One request as the shared key; the status, or nullopt if no answer.
  std::optional<int> Get(int host) {
    auto r = Request(host);
    if (!r) return std::nullopt;
    return r->status;
  }

  httplib::Result Request(int host) {
    httplib::Client client(net_->address(host), kPort);
    client.set_connection_timeout(seconds(1));
    client.set_read_timeout(seconds(2));
    return client.Get("/api/items", httplib::Headers{{"X-API-Key", "k-shared"}});
  }

  struct Load {
    std::vector<std::atomic<uint64_t>> admitted;  // per window, all hosts
    std::atomic<uint64_t> unanswered{0};          // requests to live, reachable hosts that got no answer
    std::atomic<uint64_t> other{0};               // answers other than 200 and 429
    explicit Load(size_t windows) : admitted(windows) {}
  };

  // Drives every host in `hosts` at kRatePerHost for `windows` whole windows
  // (from the next edge but one), calling `during(window)` at the start of
  // each window from the test's thread. A host whose index is in `down`
  // (set by `during`) is not sent to.
  std::unique_ptr<Load> Drive(int windows, const std::function<void(int)>& during = nullptr) {
    auto load = std::make_unique<Load>(static_cast<size_t>(windows));
    const Clock& clock = SystemClock::Instance();
    const int64_t first = (clock.NowMs() / kWindowMs + 2) * kWindowMs;
    const int64_t end = first + windows * kWindowMs;
    std::vector<std::thread> drivers;
    for (int h = 0; h < kHosts; ++h) {
      drivers.emplace_back([&, h] {
        httplib::Client client(net_->address(h), kPort);
        client.set_keep_alive(true);
        client.set_connection_timeout(seconds(1));
        client.set_read_timeout(seconds(2));
        const auto start = std::chrono::steady_clock::now();
        uint64_t sent = 0;
        for (int64_t now = clock.NowMs(); now < end; now = clock.NowMs()) {
          const int64_t into = now % kWindowMs;
          const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
          if (down_[h] || into < kGuardMs || into > kWindowMs - kGuardMs || sent >= elapsed * kRatePerHost) {
            std::this_thread::sleep_for(milliseconds(1));  // pacing
            continue;
          }
          ++sent;
          const int64_t window = (now - first) / kWindowMs;
          auto r = client.Get("/api/items", httplib::Headers{{"X-API-Key", "k-shared"}});
          if (!r) {
            if (!down_[h]) ++load->unanswered;
            continue;
          }
          if (r->status == 200 && now >= first) {
            load->admitted[static_cast<size_t>(window)]++;
          } else if (r->status != 200 && r->status != 429) {
            ++load->other;
          }
        }
      });
    }
    for (int w = 0; w < windows; ++w) {
      while (clock.NowMs() < first + w * kWindowMs) std::this_thread::sleep_for(milliseconds(1));
      if (during) during(w);
    }
    for (auto& t : drivers) t.join();
    std::printf("admitted per window (limit %llu): %s\n", static_cast<unsigned long long>(kLimit),
                Counts(*load).c_str());
    return load;
  }

  static std::string Counts(const Load& load) {
    std::string s;
    for (const auto& a : load.admitted) s += std::to_string(a.load()) + " ";
    return s;
  }

  // Synced rules: every window within the derived bound and at least the
  // limit (a host that stalled or lost counts shows as less).
  void ExpectSyncedWithinTheBound() {
    WritePolicy("");
    StartAll();
    auto load = Drive(4);
    const uint64_t bound = Bound(kHosts, kHosts * kRatePerHost);
    for (const auto& a : load->admitted) {
      EXPECT_LE(a.load(), kLimit + bound) << "admitted per window: " << Counts(*load);
      EXPECT_GE(a.load(), kLimit) << "admitted per window: " << Counts(*load);
    }
    EXPECT_EQ(load->unanswered.load(), 0u);
    EXPECT_EQ(load->other.load(), 0u);
  }

  // Host 1 killed and started again 100 ms into a window.
  void ExpectARestartCatchesUp() {
    WritePolicy("");
    StartAll();
    auto load = Drive(4, [&](int window) {
      if (window != 1) return;
      std::this_thread::sleep_for(milliseconds(100));
      down_[1] = true;
      services_[1]->Kill();
      StartService(1);  // answers once listening: from then on it takes requests
      down_[1] = false;
    });
    // Until its peers' snapshots reach it (it announces itself every sync
    // for its first second, and a peer that hears a new sender snapshots at
    // its next sync), the restarted host admits on its own count: about
    // 100 ms here, ZeroMQ's reconnect interval, as its peers reconnect to it.
    // Allow its rate for 250 ms in the window of the restart (a host that
    // never caught up would add up to the whole limit).
    const uint64_t bound = Bound(kHosts, kHosts * kRatePerHost);
    for (size_t w = 0; w < load->admitted.size(); ++w) {
      const uint64_t most = kLimit + bound + (w == 1 ? kRatePerHost * 250 / 1000 : 0);
      EXPECT_LE(load->admitted[w].load(), most) << "window " << w << "; admitted per window: " << Counts(*load);
    }
    EXPECT_GE(load->admitted[3].load(), kLimit) << Counts(*load);
    EXPECT_EQ(load->unanswered.load(), 0u);
  }

  std::unique_ptr<testing::TestNetwork> net_;
  bool peers_in_policy_ = true;  // gossip: the policy file lists the peers
  std::optional<testing::ChildProcess> etcd_;
  std::string etcd_url_;
  const std::string etcd_dir_ = "/tmp/" + testing::UniqueSegmentName("limits-etcd");
  const std::string policy_path_ = "/tmp/" + testing::UniqueSegmentName("limits") + ".policy";
  std::optional<testing::ChildProcess> services_[kHosts];
  std::atomic<bool> down_[kHosts] = {};
};

class GossipNetnsTest : public LimiterNetnsTest {
 protected:
  std::vector<std::string> StoreArgs(int host) const override {
    return {"--store",
            "gossip",
            "--gossip-bind",
            "tcp://" + net_->address(host) + ":7400",
            "--node-id",
            "h" + std::to_string(host),
            "--sync-interval-ms",
            "10",
            "--gossip-insecure"};  // veth addresses: other hosts reach them
  }
};

// The same services with the key pair the peers share (`cachectl keygen`,
// --gossip-key): counts go encrypted between the veth addresses. Host
// `stranger_` (none by default) has a pair of its own.
class GossipCurveNetnsTest : public GossipNetnsTest {
 protected:
  void SetUp() override {
    GossipNetnsTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    std::filesystem::create_directories(keys_dir_);
    for (const char* name : {"gossip", "other"}) {
      const testing::ProgramResult made =
          testing::RunProgram({CACHECTL_PATH, "keygen", keys_dir_ + "/" + name}, seconds(10));
      ASSERT_EQ(made.code, 0) << made.err;
    }
  }

  void TearDown() override {
    GossipNetnsTest::TearDown();
    std::error_code ignored;
    std::filesystem::remove_all(keys_dir_, ignored);
  }

  std::vector<std::string> StoreArgs(int host) const override {
    std::vector<std::string> args = GossipNetnsTest::StoreArgs(host);
    args.pop_back();  // --gossip-insecure
    args.insert(args.end(), {"--gossip-key", keys_dir_ + (host == stranger_ ? "/other.key" : "/gossip.key")});
    return args;
  }

  const std::string keys_dir_ = "/tmp/" + testing::UniqueSegmentName("gossip-keys");
  int stranger_ = -1;
};

// The same services with no peer list: each registers in etcd (on host 0)
// and takes its peers from there (GossipMembership).
class GossipEtcdNetnsTest : public GossipNetnsTest {
 protected:
  void SetUp() override {
    GossipNetnsTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    peers_in_policy_ = false;
    StartEtcd();
  }

  void TearDown() override {
    GossipNetnsTest::TearDown();  // the services first: they withdraw from etcd
    StopEtcd();
  }

  std::vector<std::string> StoreArgs(int host) const override {
    std::vector<std::string> args = GossipNetnsTest::StoreArgs(host);
    args.insert(args.end(), {"--etcd", etcd_url_, "--cluster", "limits"});
    return args;
  }
};

// Each host runs a cachetd node of cluster "limits" with the policy file;
// etcd runs on host 0. The node of host 0 starts first (its map holds every
// slot), the others are added with `cachectl cluster add-node`, so the
// shared key has one owner, somewhere among the three.
class StrictNetnsTest : public LimiterNetnsTest {
 protected:
  void SetUp() override {
    LimiterNetnsTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    StartEtcd();
    if (HasFatalFailure()) return;
    WritePolicy("");
    for (int h = 0; h < kHosts; ++h) {
      std::vector<std::string> args{"--cluster", "limits",  "--node-id",  NodeId(h),
                                    "--etcd",    etcd_url_, "--insecure", "true"};
      const std::vector<std::string> more = NodeArgs(h);
      args.insert(args.end(), more.begin(), more.end());
      nodes_[h] = std::make_unique<testing::DaemonProcess>(args);
      nodes_[h]->SetCommandPrefix(net_->Command(h, {}));
      ASSERT_TRUE(nodes_[h]->Start(NodeEndpoint(h)));
      if (h > 0) AddNode(h);
    }
  }

  void TearDown() override {
    LimiterNetnsTest::TearDown();  // the services first: they talk to the nodes
    for (auto& n : nodes_) n.reset();
    StopEtcd();
  }

  std::vector<std::string> StoreArgs(int host) const override {
    return {"--store", "cluster", "--cluster-seed", NodeEndpoint(host), "--on-failure", "closed"};
  }

  // The node's options besides the cluster's.
  virtual std::vector<std::string> NodeArgs(int) { return {"--rate-limit-policy", policy_path_}; }

  static std::string NodeId(int host) { return "n" + std::to_string(host); }
  std::string NodeEndpoint(int host) const { return "tcp://" + net_->address(host) + ":7379"; }

  // `cachectl cluster add-node` from the test process (etcd is reached over
  // the bridge); it returns once every moved slot is served by its node.
  void AddNode(int host) {
    const testing::ProgramResult o = testing::RunProgram({CACHECTL_PATH, "--etcd", etcd_url_, "--cluster", "limits",
                                                          "--timeout", "30000", "cluster", "add-node", NodeId(host)},
                                                         seconds(60));
    ASSERT_EQ(o.code, 0) << o.out << o.err;
  }

  // The host whose node owns the shared key, by the map host 0's node serves.
  int OwnerHost() {
    ClusterClientOptions o;
    o.seeds = {NodeEndpoint(0)};
    auto client = ClusterClient::Connect(o);
    EXPECT_TRUE(client.has_value()) << client.error().ToString();
    if (!client) return 0;
    auto node = (*client)->NodeForKey("k-shared");
    EXPECT_TRUE(node.has_value()) << node.error().ToString();
    for (int h = 0; h < kHosts; ++h) {
      if (node && node->first == NodeId(h)) return h;
    }
    ADD_FAILURE() << "k-shared has no owner among the hosts";
    return 0;
  }

  std::unique_ptr<testing::DaemonProcess> nodes_[kHosts];
};

TEST_F(GossipNetnsTest, SyncedCountsHoldTheLimitWithinTheDerivedBound) { ExpectSyncedWithinTheBound(); }

TEST_F(GossipNetnsTest, ShareRemainingKeepsTheExcessToAFewRequests) {
  WritePolicy("");
  StartAll({"--share-remaining"});
  auto load = Drive(4);
  for (const auto& a : load->admitted) {
    // H - 1 in theory; a count that arrives after its extra was taken back
    // can let a few more through (docs/design.md).
    EXPECT_LE(a.load(), kLimit + 2 * (kHosts - 1)) << "admitted per window: " << Counts(*load);
    EXPECT_GE(a.load(), kLimit - kHosts) << "admitted per window: " << Counts(*load);
  }
  EXPECT_EQ(load->unanswered.load(), 0u);
}

TEST_F(GossipNetnsTest, LocalRulesAdmitAtMostTheLimit) {
  WritePolicy("local");
  StartAll();
  auto load = Drive(3);
  for (const auto& a : load->admitted) EXPECT_EQ(a.load(), kLimit) << "admitted per window: " << Counts(*load);
  EXPECT_EQ(load->unanswered.load(), 0u);
}

TEST_F(GossipNetnsTest, AHostKilledMidWindowLeavesTheOthersWithinTheBound) {
  WritePolicy("");
  StartAll();
  auto load = Drive(4, [&](int window) {
    if (window != 1) return;
    std::this_thread::sleep_for(milliseconds(100));  // into the window: the limit is being spent
    down_[2] = true;
    services_[2]->Kill();
    services_[2].reset();
  });
  const uint64_t bound = Bound(kHosts, kHosts * kRatePerHost);
  for (const auto& a : load->admitted) EXPECT_LE(a.load(), kLimit + bound) << "admitted per window: " << Counts(*load);
  // The two left still fill each window: nothing stalls on the dead peer.
  EXPECT_GE(load->admitted[3].load(), kLimit) << Counts(*load);
  EXPECT_EQ(load->unanswered.load(), 0u);
}

TEST_F(GossipNetnsTest, AHostRestartedMidWindowCatchesUpWithinAFewSyncs) { ExpectARestartCatchesUp(); }

TEST_F(GossipNetnsTest, APartitionedHostLimitsOnItsOwnAndTheHealConverges) {
  WritePolicy("");
  StartAll();
  // Host 2 is cut off for windows 1 and 2 (the test cannot reach it either,
  // so only hosts 0 and 1 get requests then) and healed at the start of
  // window 3. In the window of the heal each side limits on its own until
  // the connections between them come back (TCP retransmits on its own
  // schedule), so up to the limit on each side; from the second window
  // after the heal on, the three hold one limit again.
  auto load = Drive(6, [&](int window) {
    if (window == 1) {
      down_[2] = true;
      ASSERT_TRUE(net_->Partition(2));
    } else if (window == 3) {
      ASSERT_TRUE(net_->Heal(2));
      ASSERT_TRUE(testing::WaitUntil([&] { return Get(2).has_value(); }, seconds(5))) << "host 2 unreachable";
      down_[2] = false;
    }
  });
  const uint64_t both_sides = 2 * kLimit + Bound(2, 2 * kRatePerHost);
  for (size_t w = 0; w < load->admitted.size(); ++w) {
    const int live = w == 1 || w == 2 ? 2 : kHosts;
    const uint64_t most = w == 3 || w == 4 ? both_sides : kLimit + Bound(live, live * kRatePerHost);
    EXPECT_LE(load->admitted[w].load(), most) << "window " << w << "; admitted per window: " << Counts(*load);
  }
  EXPECT_GE(load->admitted[5].load(), kLimit) << Counts(*load);
  EXPECT_EQ(load->unanswered.load(), 0u);
}

TEST_F(GossipCurveNetnsTest, PeersWithTheSharedKeyHoldTheLimitWithinTheDerivedBound) { ExpectSyncedWithinTheBound(); }

// A host with another key pair neither gets the others' counts nor gives
// them its own; the others log the failed handshakes. A window of a minute
// here: the test spends the limit on one host and then asks the others.
TEST_F(GossipCurveNetnsTest, AHostWithAnotherKeyGetsNoCountsAndIsRefused) {
  stranger_ = 2;
  constexpr uint64_t kMinuteLimit = 20;
  {
    std::ofstream out(policy_path_);
    out << "[tier.anonymous]\nper_second = 1/1s\n[tier.shared]\nper_minute = " << kMinuteLimit
        << "/1m fixed_window\n[keys]\nk-shared = shared\n[peers]\n";
    for (int i = 0; i < kHosts; ++i) out << "h" << i << " = tcp://" << net_->address(i) << ":7400\n";
  }
  // Far enough from the minute's end for the exchange below.
  while (SystemClock::Instance().NowMs() % 60000 > 40000) std::this_thread::sleep_for(milliseconds(100));
  StartAll();
  // Host 0 spends the minute (StartAll's probes of hosts 0 and 1 counted
  // in it too).
  uint64_t admitted = 0;
  while (admitted <= kMinuteLimit && Get(0) == 200) ++admitted;
  ASSERT_LE(admitted, kMinuteLimit);
  ASSERT_GE(admitted, kMinuteLimit - 2);
  // Host 1 shares host 0's key: it learns the minute is spent.
  EXPECT_TRUE(testing::WaitUntil([&] { return Get(1) == 429; }, seconds(10)));
  // Host 2 does not: it admits on its own count.
  EXPECT_EQ(Get(2), 200);
  EXPECT_TRUE(testing::WaitUntil([&] { return services_[0]->err().find("handshake failed") != std::string::npos; },
                                 seconds(10)))
      << services_[0]->err();
  EXPECT_NE(services_[0]->err().find("another server key"), std::string::npos) << services_[0]->err();
}

// Every host's decisions for the key are the owner's: exactly the limit in
// every window, whichever host a request reaches.
TEST_F(StrictNetnsTest, EveryWindowAdmitsExactlyTheLimit) {
  StartAll();
  auto load = Drive(3);
  for (const auto& a : load->admitted) EXPECT_EQ(a.load(), kLimit) << "admitted per window: " << Counts(*load);
  EXPECT_EQ(load->unanswered.load(), 0u);
  EXPECT_EQ(load->other.load(), 0u);
}

// The owner's node is killed mid-window (its shard has no other copy):
// every service finds it within its 50 ms store timeout and denies by
// --on-failure closed, so no window admits more than the limit and every
// request is still answered.
TEST_F(StrictNetnsTest, AnOwnerKilledMidWindowFailsClosedAndNothingStalls) {
  const int owner = OwnerHost();
  StartAll();
  auto load = Drive(3, [&](int window) {
    if (window != 1) return;
    std::this_thread::sleep_for(milliseconds(100));
    nodes_[owner]->Kill();
  });
  for (const auto& a : load->admitted) EXPECT_LE(a.load(), kLimit) << "admitted per window: " << Counts(*load);
  EXPECT_EQ(load->admitted[0].load(), kLimit) << Counts(*load);
  EXPECT_EQ(load->admitted[2].load(), 0u) << Counts(*load);
  EXPECT_EQ(load->unanswered.load(), 0u);
  EXPECT_EQ(load->other.load(), 0u);
}

// Limits reloaded on one host reach every host's limiter. Each host keeps
// its own copy of the policy file for its node, which publishes what it
// runs on its `pub`; each host's service (gossip) follows its own node's.
class ClusterPolicyNetnsTest : public StrictNetnsTest {
 protected:
  void TearDown() override {
    StrictNetnsTest::TearDown();
    for (int h = 0; h < kHosts; ++h) std::remove(HostPolicy(h).c_str());
  }

  std::vector<std::string> NodeArgs(int host) override {
    WritePolicy("", HostPolicy(host));
    return {"--rate-limit-policy", HostPolicy(host), "--pub", NodePub(host)};
  }

  std::vector<std::string> StoreArgs(int host) const override {
    return {"--store",
            "gossip",
            "--gossip-bind",
            "tcp://" + net_->address(host) + ":7400",
            "--node-id",
            "h" + std::to_string(host),
            "--pub",
            NodePub(host),
            "--gossip-insecure"};
  }

  std::string HostPolicy(int host) const { return policy_path_ + "." + std::to_string(host); }
  std::string NodePub(int host) const { return "tcp://" + net_->address(host) + ":7500"; }

  // The limit host `host`'s service answers with, or 0 with no answer.
  uint64_t LimitAt(int host) {
    auto r = Request(host);
    if (!r || !r->has_header("RateLimit-Limit")) return 0;
    return std::stoull(r->get_header_value("RateLimit-Limit"));
  }
};

TEST_F(ClusterPolicyNetnsTest, ALimitReloadedOnOneHostReachesEveryHostWithinASecond) {
  StartAll();
  for (int h = 0; h < kHosts; ++h) {
    ASSERT_TRUE(testing::WaitUntil([&] { return LimitAt(h) == kLimit; }, seconds(10))) << "host " << h;
  }
  constexpr uint64_t kLowered = 60;
  WritePolicy("", HostPolicy(2), kLowered);
  const auto sent = std::chrono::steady_clock::now();
  nodes_[2]->Hup();
  std::vector<milliseconds> took(kHosts, milliseconds(-1));
  ASSERT_TRUE(testing::WaitUntil(
      [&] {
        bool all = true;
        for (int h = 0; h < kHosts; ++h) {
          if (took[h].count() >= 0) continue;
          if (LimitAt(h) != kLowered) {
            all = false;
            continue;
          }
          took[h] = std::chrono::duration_cast<milliseconds>(std::chrono::steady_clock::now() - sent);
        }
        return all;
      },
      seconds(10)));
  for (int h = 0; h < kHosts; ++h) {
    std::printf("host %d runs the new limit after %lld ms\n", h, static_cast<long long>(took[h].count()));
    EXPECT_LT(took[h], seconds(1)) << "host " << h;
  }
}

TEST_F(GossipEtcdNetnsTest, PeersFromEtcdHoldTheLimitWithinTheDerivedBound) { ExpectSyncedWithinTheBound(); }

// The restarted host registers again under its node id (taking over its
// entry from its previous life) and its peers reconnect to it.
TEST_F(GossipEtcdNetnsTest, AHostRestartedMidWindowRejoinsAndCatchesUp) { ExpectARestartCatchesUp(); }

}  // namespace
}  // namespace cachet
