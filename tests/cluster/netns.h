// TestNetwork: N "hosts" for the cluster tests, each a Linux network
// namespace with its own address, joined by a bridge.
//
// Create(n) makes a bridge and, for host i, a namespace with a veth pair:
// one end ("eth0", address 10.A.B.(i+1)/24) inside the namespace, the other
// on the bridge; lo is up in each. The bridge itself holds 10.A.B.254, so
// the test process (outside every namespace) reaches each host too. The /24
// is picked per process and network (from the pid, skipping any subnet
// already routed here), so parallel test processes do not collide.
//
// Programs run inside host i through `ip netns exec` (Command / Exec /
// Run). Partition(i) takes host i's link off the bridge (`ip link set
// <veth> down` on the bridge side): it reaches no one and no one reaches
// it, the test process included; Heal(i) puts it back.
//
// The destructor removes every namespace, veth and the bridge, also after
// a failed test, and fails the test if any is left. Create() first removes
// what a crashed earlier run left: networks named for processes that no
// longer exist, or for this pid.
//
// Needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN) and iproute2's `ip`;
// Unsupported() says why not, for GTEST_SKIP.
//
// Thread safety: one thread of the test owns a TestNetwork.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "cachet/result.h"
#include "child_process.h"

namespace cachet::testing {

class TestNetwork {
 public:
  // Why namespaces cannot be made on this machine, or nullopt if they can.
  static std::optional<std::string> Unsupported();

  static Result<std::unique_ptr<TestNetwork>> Create(int hosts);
  ~TestNetwork();
  TestNetwork(const TestNetwork&) = delete;
  TestNetwork& operator=(const TestNetwork&) = delete;

  int size() const { return static_cast<int>(hosts_.size()); }
  // Host i's address ("10.A.B.(i+1)"), namespace name and bridge-side veth.
  const std::string& address(int i) const { return hosts_.at(i).address; }
  const std::string& namespace_name(int i) const { return hosts_.at(i).ns; }
  const std::string& veth(int i) const { return hosts_.at(i).veth; }
  // The bridge, and its address: how the test process reaches the hosts.
  const std::string& bridge() const { return bridge_; }
  const std::string& bridge_address() const { return bridge_address_; }

  // `args` (args[0] a path) run inside host i: "ip netns exec <ns> args...".
  // `ip netns exec` execs the program itself, so its pid is the program's.
  std::vector<std::string> Command(int i, const std::vector<std::string>& args) const;
  ChildProcess Exec(int i, const std::vector<std::string>& args) const;
  ProgramResult Run(int i, const std::vector<std::string>& args,
                    std::chrono::milliseconds limit = ChildProcess::kDeadline) const;

  [[nodiscard]] Result<void> Partition(int i);
  [[nodiscard]] Result<void> Heal(int i);

  // The path of `ip`, or "" when iproute2 is missing.
  static const std::string& IpPath();

 private:
  struct Host {
    std::string ns, veth, address;
  };
  TestNetwork() = default;
  Result<void> Build(int hosts);
  void Remove();

  std::string id_;
  std::string bridge_, bridge_address_;
  std::vector<Host> hosts_;
};

// Runs `ip args...` to its end; an error names the command and its stderr.
[[nodiscard]] Result<std::string> RunIp(const std::vector<std::string>& args);

}  // namespace cachet::testing
