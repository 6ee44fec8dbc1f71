#include "cluster/netns.h"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <set>
#include <sstream>

namespace cachet::testing {
namespace {

constexpr std::chrono::milliseconds kIpDeadline{10'000};
constexpr char kNamespacePrefix[] = "cachet-";
constexpr char kLinkPrefix[] = "ct";

std::string Base36(uint64_t n) {
  std::string out;
  do {
    out.insert(out.begin(), "0123456789abcdefghijklmnopqrstuvwxyz"[n % 36]);
    n /= 36;
  } while (n);
  return out;
}

bool AllDigits(const std::string& s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// The network a name belongs to: its id "<base36 pid>n<counter>", from
// names of namespaces "cachet-<id>-h<i>" and of links "ct<id>b" (the
// bridge) and "ct<id>h<i>" (a veth); nullopt for any other name.
struct NetworkId {
  std::string pid36, counter;
  std::string id() const { return pid36 + "n" + counter; }
};
std::optional<NetworkId> ParseName(const std::string& name, bool is_namespace) {
  const std::string prefix = is_namespace ? kNamespacePrefix : kLinkPrefix;
  if (name.rfind(prefix, 0) != 0) return std::nullopt;
  std::string rest = name.substr(prefix.size());
  if (!is_namespace && !rest.empty() && rest.back() == 'b') {
    rest.pop_back();
  } else {
    const size_t h = rest.rfind(is_namespace ? "-h" : "h");
    if (h == std::string::npos || !AllDigits(rest.substr(h + (is_namespace ? 2 : 1)))) return std::nullopt;
    rest.resize(h);
  }
  const size_t n = rest.rfind('n');
  if (n == std::string::npos || n == 0 || !AllDigits(rest.substr(n + 1))) return std::nullopt;
  NetworkId parsed{rest.substr(0, n), rest.substr(n + 1)};
  const bool base36 = std::all_of(parsed.pid36.begin(), parsed.pid36.end(),
                                  [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z'); });
  if (!base36) return std::nullopt;
  return parsed;
}

bool ProcessAlive(pid_t pid) { return kill(pid, 0) == 0 || errno == EPERM; }

// True if a name of `network` was left behind:
// its process is gone, or it is this very id (an earlier process with our pid).
bool Stale(const NetworkId& network, const std::string& own_id) {
  if (network.id() == own_id) return true;
  if (network.pid36.size() > 8) return false;  // not a pid: not one of ours
  const unsigned long long pid = std::stoull(network.pid36, nullptr, 36);
  return pid != static_cast<unsigned long long>(getpid()) && !ProcessAlive(static_cast<pid_t>(pid));
}

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (!line.empty()) lines.push_back(line);
  }
  return lines;
}

// Names in `ip netns list` ("name (id: 3)").
Result<std::vector<std::string>> NamespaceNames() {
  auto out = RunIp({"netns", "list"});
  if (!out) return tl::unexpected(out.error());
  std::vector<std::string> names;
  for (const std::string& line : Lines(*out)) names.push_back(line.substr(0, line.find(' ')));
  return names;
}

// Names in `ip -o link show` ("7: ctab1n0h0@if2: <...").
Result<std::vector<std::string>> LinkNames() {
  auto out = RunIp({"-o", "link", "show"});
  if (!out) return tl::unexpected(out.error());
  std::vector<std::string> names;
  for (const std::string& line : Lines(*out)) {
    const size_t begin = line.find(": ");
    if (begin == std::string::npos) continue;
    const size_t end = line.find_first_of("@:", begin + 2);
    names.push_back(line.substr(begin + 2, end - begin - 2));
  }
  return names;
}

// Removes every namespace and link of a stale network (see Stale).
void RemoveStale(const std::string& own_id) {
  if (auto links = LinkNames()) {
    for (const std::string& name : *links) {
      const std::optional<NetworkId> network = ParseName(name, /*is_namespace=*/false);
      if (network && Stale(*network, own_id)) {
        std::fprintf(stderr, "TestNetwork: removing %s, left by an earlier run\n", name.c_str());
        (void)RunIp({"link", "del", name});
      }
    }
  }
  if (auto namespaces = NamespaceNames()) {
    for (const std::string& name : *namespaces) {
      const std::optional<NetworkId> network = ParseName(name, /*is_namespace=*/true);
      if (network && Stale(*network, own_id)) {
        std::fprintf(stderr, "TestNetwork: removing namespace %s, left by an earlier run\n", name.c_str());
        (void)RunIp({"netns", "del", name});
      }
    }
  }
}

}  // namespace

const std::string& TestNetwork::IpPath() {
  static const std::string path = [] {
    for (const char* candidate : {"/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"}) {
      if (access(candidate, X_OK) == 0) return std::string(candidate);
    }
    return std::string();
  }();
  return path;
}

Result<std::string> RunIp(const std::vector<std::string>& args) {
  std::vector<std::string> command = {TestNetwork::IpPath()};
  command.insert(command.end(), args.begin(), args.end());
  const ProgramResult r = RunProgram(command, kIpDeadline);
  if (r.code == 0) return r.out;
  std::string text = "ip";
  for (const std::string& a : args) text += " " + a;
  std::string err = r.err;
  while (!err.empty() && err.back() == '\n') err.pop_back();
  return MakeError(ErrorCode::kIo, "'" + text + "' exited with " + std::to_string(r.code) + ": " + err);
}

std::optional<std::string> TestNetwork::Unsupported() {
  if (IpPath().empty()) return "iproute2's ip is not installed (scripts/install-deps.sh installs it)";
  // CAP_NET_ADMIN (12) for links and addresses, CAP_SYS_ADMIN (21) for
  // `ip netns add` (it unshares and bind-mounts).
  std::ifstream status("/proc/self/status");
  uint64_t effective = 0;
  for (std::string line; std::getline(status, line);) {
    if (line.rfind("CapEff:", 0) == 0) effective = std::stoull(line.substr(7), nullptr, 16);
  }
  constexpr uint64_t kNeeded = (uint64_t{1} << 12) | (uint64_t{1} << 21);
  if ((effective & kNeeded) != kNeeded) {
    char text[160];
    std::snprintf(text, sizeof text,
                  "network namespaces need CAP_NET_ADMIN and CAP_SYS_ADMIN (run as root); this process has "
                  "uid %d and capabilities 0x%llx",
                  static_cast<int>(geteuid()), static_cast<unsigned long long>(effective));
    return std::string(text);
  }
  return std::nullopt;
}

Result<std::unique_ptr<TestNetwork>> TestNetwork::Create(int hosts) {
  if (hosts < 1 || hosts > 99) {
    return MakeError(ErrorCode::kInvalidArgument, "a test network has 1 to 99 hosts, not " + std::to_string(hosts));
  }
  if (auto why = Unsupported()) return MakeError(ErrorCode::kIo, *why);
  std::unique_ptr<TestNetwork> network(new TestNetwork());
  auto built = network->Build(hosts);
  if (!built) return tl::unexpected(built.error());  // the destructor removed what was made
  return network;
}

Result<void> TestNetwork::Build(int hosts) {
  static std::atomic<int> counter{0};
  const int n = counter++;
  id_ = Base36(static_cast<uint64_t>(getpid())) + "n" + std::to_string(n);
  RemoveStale(id_);

  // A /24 of 10.100.0.0 - 10.255.255.0 from the pid and counter; the next
  // one if this host already routes it (another run, or a real network).
  const uint64_t slots = (256 - 100) * 256;
  uint64_t index = (static_cast<uint64_t>(getpid()) * 16 + static_cast<uint64_t>(n)) % slots;
  std::string subnet;
  for (int attempt = 0; attempt < 64; ++attempt, index = (index + 1) % slots) {
    const std::string candidate = "10." + std::to_string(100 + index / 256) + "." + std::to_string(index % 256) + ".";
    auto routes = RunIp({"-4", "route", "show", "match", candidate + "1"});
    if (!routes) return tl::unexpected(routes.error());
    bool taken = false;
    for (const std::string& line : Lines(*routes)) taken |= line.rfind("default", 0) != 0;
    if (!taken) {
      subnet = candidate;
      break;
    }
  }
  if (subnet.empty()) return MakeError(ErrorCode::kIo, "no free /24 in 10.100.0.0/8 after 64 tries");

  bridge_ = kLinkPrefix + id_ + "b";
  bridge_address_ = subnet + "254";
  for (int i = 0; i < hosts; ++i) {
    hosts_.push_back(Host{kNamespacePrefix + id_ + "-h" + std::to_string(i),
                          kLinkPrefix + id_ + "h" + std::to_string(i), subnet + std::to_string(i + 1)});
  }
  std::vector<std::vector<std::string>> steps = {
      {"link", "add", bridge_, "type", "bridge"},
      {"link", "set", bridge_, "up"},
      {"addr", "add", bridge_address_ + "/24", "dev", bridge_},
  };
  for (const Host& h : hosts_) {
    std::vector<std::vector<std::string>> host_steps = {
        {"netns", "add", h.ns},
        {"link", "add", h.veth, "type", "veth", "peer", "name", "eth0", "netns", h.ns},
        {"link", "set", h.veth, "master", bridge_, "up"},
        {"-n", h.ns, "addr", "add", h.address + "/24", "dev", "eth0"},
        {"-n", h.ns, "link", "set", "eth0", "up"},
        {"-n", h.ns, "link", "set", "lo", "up"},
    };
    steps.insert(steps.end(), host_steps.begin(), host_steps.end());
  }
  for (const auto& step : steps) {
    auto done = RunIp(step);
    if (!done) return MakeError(ErrorCode::kIo, "making the test network: " + done.error().message);
  }
  return {};
}

TestNetwork::~TestNetwork() { Remove(); }

void TestNetwork::Remove() {
  if (id_.empty()) return;
  // Deleting one end of a veth deletes both, at once (a namespace that a
  // stray process still holds would keep its end alive).
  for (const Host& h : hosts_) (void)RunIp({"link", "del", h.veth});
  for (const Host& h : hosts_) (void)RunIp({"netns", "del", h.ns});
  (void)RunIp({"link", "del", bridge_});
  // Check that nothing of this network is left.
  std::vector<std::string> left;
  auto links = LinkNames();
  auto namespaces = NamespaceNames();
  if (!links || !namespaces) {
    ADD_FAILURE() << "TestNetwork: cannot list what is left: "
                  << (links ? namespaces.error().message : links.error().message);
    return;
  }
  for (const std::string& name : *links) {
    const std::optional<NetworkId> network = ParseName(name, /*is_namespace=*/false);
    if (network && network->id() == id_) left.push_back(name);
  }
  for (const std::string& name : *namespaces) {
    const std::optional<NetworkId> network = ParseName(name, /*is_namespace=*/true);
    if (network && network->id() == id_) left.push_back(name);
  }
  if (!left.empty()) {
    std::string names;
    for (const std::string& name : left) names += " " + name;
    ADD_FAILURE() << "TestNetwork: left behind after removal:" << names;
  }
}

std::vector<std::string> TestNetwork::Command(int i, const std::vector<std::string>& args) const {
  std::vector<std::string> command = {IpPath(), "netns", "exec", namespace_name(i)};
  command.insert(command.end(), args.begin(), args.end());
  return command;
}

ChildProcess TestNetwork::Exec(int i, const std::vector<std::string>& args) const {
  return ChildProcess::Exec(Command(i, args));
}

ProgramResult TestNetwork::Run(int i, const std::vector<std::string>& args, std::chrono::milliseconds limit) const {
  return RunProgram(Command(i, args), limit);
}

Result<void> TestNetwork::Partition(int i) {
  auto done = RunIp({"link", "set", veth(i), "down"});
  if (!done) return tl::unexpected(done.error());
  return {};
}

Result<void> TestNetwork::Heal(int i) {
  auto done = RunIp({"link", "set", veth(i), "up"});
  if (!done) return tl::unexpected(done.error());
  return {};
}

}  // namespace cachet::testing
