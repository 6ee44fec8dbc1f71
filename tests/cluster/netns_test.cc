// TestNetwork: hosts in network namespaces on a bridge, with real cachetd
// and cachectl across them; partitions; and nothing left behind.
#include "cluster/netns.h"

#include <signal.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <string>

#include "cachet/client.h"
#include "integration/daemon_process.h"
#include "test_util.h"

namespace cachet::testing {
namespace {

using std::chrono::milliseconds;

bool Contains(const std::string& text, const std::string& word) { return text.find(word) != std::string::npos; }

std::string IpOut(const std::vector<std::string>& args) {
  auto out = RunIp(args);
  EXPECT_TRUE(out) << out.error().ToString();
  return out ? *out : "";
}

class TestNetworkTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (auto why = TestNetwork::Unsupported()) GTEST_SKIP() << "no network namespaces here: " << *why;
  }

  std::unique_ptr<TestNetwork> Make(int hosts) {
    auto network = TestNetwork::Create(hosts);
    EXPECT_TRUE(network) << network.error().ToString();
    return network ? std::move(*network) : nullptr;
  }

  // `cachectl ping` run inside host `from` against `endpoint`.
  static ProgramResult Ping(const TestNetwork& net, int from, const std::string& endpoint) {
    return net.Run(from, {CACHECTL_PATH, "--endpoint", endpoint, "--timeout", "300", "ping"});
  }
};

TEST_F(TestNetworkTest, HostsHaveTheirOwnAddressesAndReachEachOtherOverTcp) {
  auto net = Make(2);
  ASSERT_NE(net, nullptr);
  ASSERT_EQ(net->size(), 2);
  const std::string a = net->address(0), b = net->address(1);
  EXPECT_EQ(a.substr(0, 3), "10.");
  EXPECT_EQ(a.substr(0, a.rfind('.')), b.substr(0, b.rfind('.')));  // one /24
  EXPECT_EQ(a.substr(a.rfind('.')), ".1");
  EXPECT_EQ(b.substr(b.rfind('.')), ".2");
  EXPECT_EQ(net->bridge_address(), a.substr(0, a.rfind('.')) + ".254");
  // Each host sees its own eth0 with its address, and lo up.
  const ProgramResult addr = net->Run(0, {TestNetwork::IpPath(), "-o", "-4", "addr", "show"});
  ASSERT_EQ(addr.code, 0) << addr.err;
  EXPECT_TRUE(Contains(addr.out, "eth0    inet " + a + "/24")) << addr.out;
  EXPECT_TRUE(Contains(addr.out, "lo    inet 127.0.0.1/8")) << addr.out;
  EXPECT_FALSE(Contains(addr.out, b)) << addr.out;

  // A real cachetd inside host 0, on host 0's address.
  DaemonProcess daemon({"--insecure", "true"});
  daemon.SetCommandPrefix(net->Command(0, {}));
  ASSERT_TRUE(daemon.Start("tcp://" + a + ":*"));
  ASSERT_EQ(daemon.tcp().rfind("tcp://" + a + ":", 0), 0u) << daemon.tcp();
  // Served in clear to other hosts, as asked, and the log says so.
  EXPECT_NE(daemon.log().find("is served in clear text to other hosts"), std::string::npos) << daemon.log();

  // cachectl inside host 1 reaches it across the bridge...
  const ProgramResult ping = Ping(*net, 1, daemon.tcp());
  EXPECT_EQ(ping.code, 0) << ping.err;
  EXPECT_EQ(ping.out, "PONG\n");
  // ...but not on host 1's own loopback: they are two hosts.
  const std::string port = daemon.tcp().substr(daemon.tcp().rfind(':') + 1);
  const ProgramResult local = Ping(*net, 1, "tcp://127.0.0.1:" + port);
  EXPECT_EQ(local.code, 3) << local.out << local.err;

  // The test process reaches it through the bridge, with cachet::Client.
  auto client = Client::Connect(daemon.tcp());
  ASSERT_TRUE(client) << client.error().ToString();
  ASSERT_TRUE((*client)->Set("across", "hosts"));
  const ProgramResult get = net->Run(1, {CACHECTL_PATH, "--endpoint", daemon.tcp(), "get", "across"});
  EXPECT_EQ(get.code, 0) << get.err;
  EXPECT_EQ(get.out, "hosts\n");
  EXPECT_EQ(daemon.Stop(), 0);
}

TEST_F(TestNetworkTest, APartitionStopsTheTrafficAndAHealRestoresIt) {
  auto net = Make(3);
  ASSERT_NE(net, nullptr);
  DaemonProcess daemon({"--insecure", "true"});
  daemon.SetCommandPrefix(net->Command(0, {}));
  ASSERT_TRUE(daemon.Start("tcp://" + net->address(0) + ":*"));
  ASSERT_EQ(Ping(*net, 1, daemon.tcp()).code, 0);

  ASSERT_TRUE(net->Partition(0));
  const ProgramResult cut = Ping(*net, 1, daemon.tcp());
  EXPECT_EQ(cut.code, 3) << cut.out << cut.err;  // unreachable: no reply within the timeout
  EXPECT_EQ(Ping(*net, 2, daemon.tcp()).code, 3);
  // Hosts 1 and 2 still reach each other: only host 0 is cut off.
  DaemonProcess other({"--insecure", "true"});
  other.SetCommandPrefix(net->Command(2, {}));
  ASSERT_TRUE(other.Start("tcp://" + net->address(2) + ":*"));
  EXPECT_EQ(Ping(*net, 1, other.tcp()).code, 0);

  ASSERT_TRUE(net->Heal(0));
  ProgramResult healed;
  EXPECT_TRUE(WaitUntil([&] { return (healed = Ping(*net, 1, daemon.tcp())).code == 0; }, std::chrono::seconds(10),
                        milliseconds(50)))
      << healed.err;
  EXPECT_EQ(healed.out, "PONG\n");
}

TEST_F(TestNetworkTest, NothingIsLeftBehindAfterTheNetworkIsDestroyed) {
  auto net = Make(2);
  ASSERT_NE(net, nullptr);
  const std::vector<std::string> namespaces = {net->namespace_name(0), net->namespace_name(1)};
  const std::vector<std::string> links = {net->bridge(), net->veth(0), net->veth(1)};
  {
    const std::string ns_list = IpOut({"netns", "list"});
    const std::string link_list = IpOut({"-o", "link", "show"});
    for (const std::string& name : namespaces) EXPECT_TRUE(Contains(ns_list, name)) << name;
    for (const std::string& name : links)
      EXPECT_TRUE(Contains(link_list, name + (name == links[0] ? ":" : "@"))) << name;
  }
  // A program still running inside a host does not keep anything alive.
  ChildProcess sleeper = net->Exec(1, {"/bin/sleep", "30"});
  ASSERT_TRUE(WaitUntil([&] {
    return Contains(IpOut({"netns", "pids", namespaces[1]}), std::to_string(sleeper.pid()));
  }));
  net.reset();
  const std::string ns_list = IpOut({"netns", "list"});
  const std::string link_list = IpOut({"-o", "link", "show"});
  for (const std::string& name : namespaces) EXPECT_FALSE(Contains(ns_list, name)) << name;
  for (const std::string& name : links) EXPECT_FALSE(Contains(link_list, name)) << name;
  EXPECT_TRUE(Contains(link_list, "lo:"));  // the listing itself worked
  EXPECT_EQ(sleeper.Stop(ChildProcess::kAnyExit), 128 + SIGTERM);
}

TEST_F(TestNetworkTest, LeftoversOfACrashedRunAreRemoved) {
  // A network named for a process that no longer exists, as a crashed run leaves it.
  ChildProcess gone = ChildProcess::Fork([] { return 0; }, "short-lived");
  const pid_t dead = gone.pid();
  gone.Wait();
  std::string pid36;
  for (unsigned long long n = static_cast<unsigned long long>(dead); n; n /= 36) {
    pid36.insert(pid36.begin(), "0123456789abcdefghijklmnopqrstuvwxyz"[n % 36]);
  }
  const std::string ns = "cachet-" + pid36 + "n0-h0", bridge = "ct" + pid36 + "n0b";
  ASSERT_TRUE(RunIp({"netns", "add", ns}));
  ASSERT_TRUE(RunIp({"link", "add", bridge, "type", "bridge"}));
  auto net = Make(1);
  ASSERT_NE(net, nullptr);
  EXPECT_FALSE(Contains(IpOut({"netns", "list"}), ns));
  EXPECT_FALSE(Contains(IpOut({"-o", "link", "show"}), bridge + ":"));
  // Clean up by hand should the test fail.
  (void)RunIp({"netns", "del", ns});
  (void)RunIp({"link", "del", bridge});
}

TEST_F(TestNetworkTest, RefusesAnImpossibleSize) {
  auto net = TestNetwork::Create(0);
  ASSERT_FALSE(net);
  EXPECT_EQ(net.error().code, ErrorCode::kInvalidArgument);
}

}  // namespace
}  // namespace cachet::testing
