// http_service: an API behind cachet's rate limiter (cpp-httplib).
//
//   http_service --policy limits.ini [--port 8080] [--store memory|shm|cachetd|cluster|redis|gossip] ...
//   http_service --help              (every option, with its default)
//
// GET /api/...   the API. Every response carries the rate-limit headers; a
//                denied one is 429 Too Many Requests with Retry-After.
// GET /auth      for nginx's auth_request: 204 when allowed, 403 when denied
//                (auth_request accepts only 2xx, 401 and 403), with the same
//                headers. docs/operations.md shows the nginx side.
//
// Who a request counts as (TierResolver::Identify): an X-API-Key listed in
// the policy's [keys] counts under its own name in its tier; any other
// request, with an invented key or none, counts under its client address in
// the default tier. The client address is the socket peer's; only when the
// peer is one of the --trusted-proxy blocks (none by default) is it the
// right-most X-Forwarded-For address that is not a trusted proxy, so
// nothing a client writes in that header is believed unless a proxy we
// trust vouches for it.
//
// Where the counts live (--store): memory (this process), shm (a
// shared-memory table that every process of the host opening --shm-name
// shares), cachetd (the daemon at --daemon decides, with its own policy),
// cluster (strict: the cachetd node owning the key's slot decides; the map
// from --cluster-seed or --etcd and --cluster), redis (--redis) or gossip
// (this process, in sync with the same service on other hosts over PUB/SUB:
// --gossip-bind, and peers from --gossip-peer or the policy file's [peers],
// or with --etcd and --cluster every limiter of the cluster registered in
// etcd; --gossip-key FILE, the key pair the peers share, encrypts and
// authenticates the sync, and a --gossip-bind other hosts can reach needs
// it, or --gossip-insecure). For the three remote stores --on-failure
// chooses what an outage does: open (allow), closed (deny) or local (count
// here with the policy file's limits until the store answers again).
//
// The policy comes from --policy; SIGHUP reads the file again (a file that
// does not parse is reported and the running policy stays). With --pub it
// follows cachetd's published policy instead, and SIGHUP is ignored (send it
// to cachetd). SIGTERM and SIGINT stop the service: requests in progress are
// answered, then it exits 0.
//
// Signals are blocked in every thread and taken by one thread with sigwait,
// so they interrupt no blocking call anywhere in the process (httplib's
// sockets, the ZeroMQ sockets inside the library): no call sees EINTR.
#include <pthread.h>
#include <signal.h>

#include <httplib.h>
#include <boost/program_options.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <functional>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include "cachet/cluster_client.h"
#include "cachet/daemon_rate_limiter.h"
#include "cachet/gossip_membership.h"
#include "cachet/gossip_rate_limiter.h"
#include "cachet/http.h"
#include "cachet/policy_file.h"
#include "cachet/policy_subscriber.h"
#include "cachet/rate_limiter.h"
#include "cachet/redis_rate_limiter.h"
#include "cachet/shm_rate_limiter.h"
#include "cachet/tier_resolver.h"

namespace {

namespace po = boost::program_options;
using cachet::Decision;
using cachet::RateLimitPolicy;
using cachet::Result;

void Log(const std::string& line) {
  std::fprintf(stderr, "http_service: %s\n", line.c_str());
  std::fflush(stderr);
}

// --- Where the counts live ----------------------------------------------------

class Store {
 public:
  virtual ~Store() = default;
  virtual Result<Decision> Check(std::string_view key, std::string_view tier) = 0;
  // Installs a new policy file's limits (and, for gossip, its peers); on
  // error the current ones stay.
  virtual Result<void> Install(const cachet::PolicyFile& file) = 0;
  // The in-process limiter, for a PolicySubscriber; null for other stores.
  virtual cachet::RateLimiter* InProcess() { return nullptr; }
};

// The stores that apply the policy themselves (memory, shm, Redis).
template <class Limiter>
class PolicyStore final : public Store {
 public:
  explicit PolicyStore(std::unique_ptr<Limiter> limiter) : limiter_(std::move(limiter)) {}
  Result<Decision> Check(std::string_view key, std::string_view tier) override { return limiter_->Check(key, tier); }
  Result<void> Install(const cachet::PolicyFile& file) override { return limiter_->SetPolicy(file.policy); }
  cachet::RateLimiter* InProcess() override {
    if constexpr (std::is_same_v<Limiter, cachet::RateLimiter>) return limiter_.get();
    return nullptr;
  }

 private:
  std::unique_ptr<Limiter> limiter_;
};

// gossip: this process decides and syncs with its peers, which come from
// the policy file's [peers] (or --gossip-peer) or, with --etcd, from the
// cluster's limiters registered in etcd.
class GossipStore final : public Store {
 public:
  explicit GossipStore(std::unique_ptr<cachet::GossipRateLimiter> limiter) : limiter_(std::move(limiter)) {}
  Result<void> Join(cachet::GossipMembershipOptions options) {
    auto joined = cachet::GossipMembership::Join(*limiter_, std::move(options));
    if (!joined) return tl::unexpected(joined.error());
    membership_ = std::move(*joined);
    return {};
  }
  Result<Decision> Check(std::string_view key, std::string_view tier) override { return limiter_->Check(key, tier); }
  Result<void> Install(const cachet::PolicyFile& file) override {
    if (!membership_) return limiter_->Apply(file);
    if (file.peers) Log("the policy's [peers] are not used: the peers are the cluster's limiters in etcd");
    return limiter_->SetPolicy(file.policy);
  }

 private:
  std::unique_ptr<cachet::GossipRateLimiter> limiter_;
  std::unique_ptr<cachet::GossipMembership> membership_;  // after limiter_, which it refers to
};

// cachetd (one daemon, or a cluster's key owners) decides with its own
// policy (reload cachetd to change it); the policy here only feeds the local
// fallback, so a new one means a new connection carrying it. Install runs on
// one thread at a time.
class DaemonStore final : public Store {
 public:
  using Connector =
      std::function<Result<std::unique_ptr<cachet::DaemonRateLimiter>>(const cachet::DaemonRateLimiterOptions&)>;
  static Result<std::unique_ptr<Store>> Connect(Connector connect, cachet::DaemonRateLimiterOptions options) {
    auto limiter = connect(options);
    if (!limiter) return tl::unexpected(limiter.error());
    return std::unique_ptr<Store>(new DaemonStore(std::move(connect), std::move(options), std::move(*limiter)));
  }
  Result<Decision> Check(std::string_view key, std::string_view tier) override {
    std::shared_ptr<cachet::DaemonRateLimiter> limiter;
    {
      std::lock_guard<std::mutex> lock(mu_);
      limiter = limiter_;
    }
    return limiter->Check(key, tier);
  }
  Result<void> Install(const cachet::PolicyFile& file) override {
    if (options_.on_failure != cachet::FailureMode::kLocalFallback) return {};
    cachet::DaemonRateLimiterOptions options = options_;
    options.fallback_policy = file.policy;
    auto limiter = connect_(options);
    if (!limiter) return tl::unexpected(limiter.error());
    options_ = std::move(options);
    std::lock_guard<std::mutex> lock(mu_);
    limiter_ = std::move(*limiter);
    return {};
  }

 private:
  DaemonStore(Connector connect, cachet::DaemonRateLimiterOptions options,
              std::unique_ptr<cachet::DaemonRateLimiter> limiter)
      : connect_(std::move(connect)), options_(std::move(options)), limiter_(std::move(limiter)) {}

  const Connector connect_;
  cachet::DaemonRateLimiterOptions options_;  // SetPolicy's thread only
  std::mutex mu_;
  std::shared_ptr<cachet::DaemonRateLimiter> limiter_;  // guarded by mu_
};

// --- Options ---------------------------------------------------------------------

struct Args {
  std::string policy, pub, host, default_tier, store, shm_name, daemon, redis, on_failure, gossip_bind,
      gossip_advertise, node_id, etcd, cluster, server_key, key, gossip_key;
  cachet::CurveClientKeys curve;      // from server_key and key
  cachet::CurveKeyPair gossip_curve;  // from gossip_key
  int port = 0;
  unsigned threads = 0;
  uint64_t capacity = 0;
  int64_t timeout_ms = 0, retry_ms = 0, sync_ms = 0;
  bool share_remaining = false, gossip_insecure = false;
  std::vector<std::string> trusted, gossip_peers, cluster_seeds;
};

[[noreturn]] void Refuse(const std::string& why) {
  std::fprintf(stderr, "http_service: %s (see --help)\n", why.c_str());
  std::exit(2);
}

Args Parse(int argc, char** argv) {
  Args a;
  po::options_description o("options");
  o.add_options()("help,h", "print this help and exit")("policy", po::value(&a.policy)->value_name("FILE"),
                                                        "rate-limit policy file: tiers, rules, API keys (required)")(
      "host", po::value(&a.host)->default_value("127.0.0.1"), "address to listen on")(
      "port", po::value(&a.port)->default_value(8080), "port to listen on; 0 picks a free one")(
      "threads", po::value(&a.threads)->default_value(8), "threads answering requests (one per open connection)")(
      "trusted-proxy", po::value(&a.trusted)->value_name("CIDR")->composing(),
      "a proxy whose X-Forwarded-For is believed (repeatable); by default none, so the peer address counts")(
      "default-tier", po::value(&a.default_tier)->default_value("anonymous"),
      "tier of requests without a known API key")(
      "pub", po::value(&a.pub)->value_name("ENDPOINT"),
      "follow the policy cachetd publishes there (instead of the file's; SIGHUP is then ignored)")(
      "store", po::value(&a.store)->default_value("memory"),
      "where the counts live: memory, shm, cachetd, cluster (strict: each key's owner node decides), redis or gossip")(
      "capacity", po::value(&a.capacity)->default_value(uint64_t{1} << 20),
      "memory, shm and gossip: (key, rule) counters alive at once, 32 bytes each")(
      "shm-name", po::value(&a.shm_name)->default_value("cachet-limits"),
      "shm: name of the shared counter table (/dev/shm/NAME)")(
      "daemon", po::value(&a.daemon)->default_value("ipc:///tmp/cachetd.sock"), "cachetd: the daemon's endpoint")(
      "cluster-seed", po::value(&a.cluster_seeds)->value_name("ENDPOINT")->composing(),
      "cluster: a node's tcp:// endpoint to learn the shard map from (repeatable)")(
      "etcd", po::value(&a.etcd)->value_name("URLS"),
      "cluster: etcd client URLs, where no seed answers; gossip: the peers are the cluster's limiters in etcd")(
      "cluster", po::value(&a.cluster)->value_name("NAME"), "cluster and gossip with --etcd: the cluster's name")(
      "server-key", po::value(&a.server_key)->value_name("FILE"),
      "cachetd, cluster and --pub over tcp with CURVE: the daemon's (or cluster's) public key file")(
      "key", po::value(&a.key)->value_name("FILE"),
      "with --server-key: this service's key pair (cachectl keygen), admitted in the daemon's curve-authorized-keys")(
      "redis", po::value(&a.redis)->default_value("127.0.0.1:6379"), "redis: HOST:PORT or unix:/path/redis.sock")(
      "on-failure", po::value(&a.on_failure)->default_value("open"),
      "cachetd, cluster and redis, when the store does not answer: open (allow), closed (deny) or local (count here)")(
      "store-timeout-ms", po::value(&a.timeout_ms)->default_value(50), "cachetd, cluster and redis: wait per decision")(
      "retry-ms", po::value(&a.retry_ms)->default_value(1000),
      "cachetd, cluster and redis: after an outage, ask the store again after this long")(
      "gossip-bind", po::value(&a.gossip_bind)->default_value("tcp://127.0.0.1:7400"),
      "gossip: this host's PUB endpoint, which its peers subscribe to")(
      "gossip-advertise", po::value(&a.gossip_advertise)->value_name("ENDPOINT"),
      "gossip with --etcd: the endpoint registered for the peers (default: --gossip-bind)")(
      "gossip-peer", po::value(&a.gossip_peers)->value_name("ENDPOINT")->composing(),
      "gossip: a peer's PUB endpoint (repeatable); a policy file's [peers] replaces them")(
      "node-id", po::value(&a.node_id)->default_value(""), "gossip: this host's name among its peers (hostname:pid)")(
      "sync-interval-ms", po::value(&a.sync_ms)->default_value(10), "gossip: how often counts go to the peers")(
      "share-remaining", po::bool_switch(&a.share_remaining),
      "gossip: spend only this host's share of what is left between syncs (less over-admission)")(
      "gossip-key", po::value(&a.gossip_key)->value_name("FILE"),
      "gossip: the key pair every peer shares (NAME.key of cachectl keygen, mode 0600): the counts go "
      "encrypted, to and from holders of the pair only")(
      "gossip-insecure", po::bool_switch(&a.gossip_insecure),
      "gossip: without --gossip-key, send the counts in clear text from a --gossip-bind other hosts can reach "
      "(refused otherwise; logs a warning)");
  po::variables_map vm;
  try {
    po::store(po::parse_command_line(argc, argv, o), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    Refuse(e.what());
  }
  if (vm.count("help")) {
    std::ostringstream help;
    help << "usage: http_service --policy FILE [options]\n\n"
            "An HTTP API (/api/...) and an nginx auth_request endpoint (/auth) rate-limited by cachet.\n"
            "SIGHUP reloads the policy file, SIGTERM stops.\n\n"
         << o;
    std::fputs(help.str().c_str(), stdout);
    std::exit(0);
  }
  if (a.policy.empty()) Refuse("--policy is required");
  if (a.port < 0 || a.port > 65535) Refuse("--port must be 0 to 65535");
  if (a.threads < 1 || a.threads > 1024) Refuse("--threads must be 1 to 1024");
  if (a.timeout_ms < 1 || a.retry_ms < 1) Refuse("--store-timeout-ms and --retry-ms must be at least 1");
  const std::vector<std::pair<const char*, std::vector<std::string>>> applies = {
      {"capacity", {"memory", "shm", "gossip"}},
      {"shm-name", {"shm"}},
      {"daemon", {"cachetd"}},
      {"cluster-seed", {"cluster"}},
      {"etcd", {"cluster", "gossip"}},
      {"cluster", {"cluster", "gossip"}},
      {"gossip-advertise", {"gossip"}},
      {"redis", {"redis"}},
      {"on-failure", {"cachetd", "cluster", "redis"}},
      {"store-timeout-ms", {"cachetd", "cluster", "redis"}},
      {"retry-ms", {"cachetd", "cluster", "redis"}},
      {"gossip-bind", {"gossip"}},
      {"gossip-peer", {"gossip"}},
      {"node-id", {"gossip"}},
      {"sync-interval-ms", {"gossip"}},
      {"share-remaining", {"gossip"}},
      {"gossip-key", {"gossip"}},
      {"gossip-insecure", {"gossip"}},
  };
  const std::vector<std::string> known{"memory", "shm", "cachetd", "cluster", "redis", "gossip"};
  if (std::find(known.begin(), known.end(), a.store) == known.end()) {
    Refuse("--store must be memory, shm, cachetd, cluster, redis or gossip, not '" + a.store + "'");
  }
  if (a.store == "cluster" && a.cluster_seeds.empty() && (a.etcd.empty() || a.cluster.empty())) {
    Refuse("--store cluster needs --cluster-seed, or --etcd and --cluster");
  }
  if (a.store == "gossip" && a.etcd.empty() != a.cluster.empty()) {
    Refuse("--store gossip takes --etcd and --cluster together (peers from etcd), or neither");
  }
  if (a.store == "gossip" && !a.etcd.empty() && !a.gossip_peers.empty()) {
    Refuse("--gossip-peer does not go with --etcd: the peers come from etcd");
  }
  if (!a.gossip_advertise.empty() && a.etcd.empty()) Refuse("--gossip-advertise needs --etcd and --cluster");
  if (!a.gossip_key.empty() && a.gossip_insecure) {
    Refuse("--gossip-key and --gossip-insecure do not go together: with the key the counts are encrypted");
  }
  if (!a.gossip_key.empty()) {
    auto pair = cachet::ReadCurveKeyFile(a.gossip_key, true);
    if (!pair) Refuse("--gossip-key: " + pair.error().message);
    a.gossip_curve = *pair;
  }
  for (const auto& [option, stores] : applies) {
    if (vm.count(option) != 0 && !vm[option].defaulted() &&
        std::find(stores.begin(), stores.end(), a.store) == stores.end()) {
      Refuse(std::string("--") + option + " does not apply to --store " + a.store);
    }
  }
  if ((!a.server_key.empty() || !a.key.empty()) && a.store != "cachetd" && a.store != "cluster" && a.pub.empty()) {
    Refuse("--server-key and --key apply to --store cachetd or cluster, and to --pub");
  }
  if (auto keys = cachet::CurveClientKeys::Load(a.server_key, a.key); keys) {
    a.curve = *keys;
  } else {
    Refuse(keys.error().message);
  }
  if (a.on_failure != "open" && a.on_failure != "closed" && a.on_failure != "local") {
    Refuse("--on-failure must be open, closed or local, not '" + a.on_failure + "'");
  }
  return a;
}

Result<std::unique_ptr<Store>> MakeStore(const Args& a, const cachet::PolicyFile& file) {
  const RateLimitPolicy& policy = file.policy;
  auto wrap = [](auto limiter) -> Result<std::unique_ptr<Store>> {
    if (!limiter) return tl::unexpected(limiter.error());
    using Limiter = typename std::decay_t<decltype(**limiter)>;
    return std::unique_ptr<Store>(new PolicyStore<Limiter>(std::move(*limiter)));
  };
  if (a.store == "memory") return wrap(cachet::RateLimiter::Create(policy, cachet::RateLimiterOptions{a.capacity}));
  if (a.store == "shm") return wrap(cachet::ShmRateLimiter::Open(a.shm_name, policy, a.capacity));
  if (a.store == "gossip") {
    cachet::GossipOptions g;
    g.node_id = a.node_id;
    g.bind = a.gossip_bind;
    g.peers = file.peers ? *file.peers : a.gossip_peers;
    g.sync_interval = std::chrono::milliseconds(a.sync_ms);
    g.share_remaining = a.share_remaining;
    g.capacity = a.capacity;
    g.curve = a.gossip_curve;
    g.insecure = a.gossip_insecure;
    g.on_error = [](const std::string& line) { Log(line); };
    if (!a.etcd.empty()) g.peers.clear();  // from etcd, once joined
    auto limiter = cachet::GossipRateLimiter::Create(policy, g);
    if (!limiter) return tl::unexpected(limiter.error());
    auto store = std::make_unique<GossipStore>(std::move(*limiter));
    if (!a.etcd.empty()) {
      cachet::GossipMembershipOptions m;
      m.etcd = a.etcd;
      m.cluster = a.cluster;
      m.advertise = a.gossip_advertise;
      m.on_error = [](const std::string& line) { Log(line); };
      if (auto ok = store->Join(m); !ok) return tl::unexpected(ok.error());
    }
    return std::unique_ptr<Store>(std::move(store));
  }
  cachet::DaemonRateLimiterOptions options;
  options.on_failure = a.on_failure == "open"     ? cachet::FailureMode::kFailOpen
                       : a.on_failure == "closed" ? cachet::FailureMode::kFailClosed
                                                  : cachet::FailureMode::kLocalFallback;
  options.timeout = std::chrono::milliseconds(a.timeout_ms);
  options.retry_interval = std::chrono::milliseconds(a.retry_ms);
  options.curve = a.curve;
  if (options.on_failure == cachet::FailureMode::kLocalFallback) options.fallback_policy = policy;
  if (a.store == "redis") return wrap(cachet::RedisRateLimiter::Connect(a.redis, policy, options));
  if (a.store == "cluster") {
    cachet::ClusterClientOptions cluster;
    cluster.seeds = a.cluster_seeds;
    cluster.etcd_endpoints = a.etcd;
    cluster.cluster = a.cluster;
    cluster.curve = a.curve;
    return DaemonStore::Connect(
        [cluster](const cachet::DaemonRateLimiterOptions& o) {
          return cachet::DaemonRateLimiter::ConnectCluster(cluster, o);
        },
        options);
  }
  return DaemonStore::Connect(
      [endpoint = a.daemon](const cachet::DaemonRateLimiterOptions& o) {
        return cachet::DaemonRateLimiter::Connect(endpoint, o);
      },
      options);
}

// --- The service ---------------------------------------------------------------

class Service {
 public:
  Service(Args args, std::unique_ptr<Store> store, cachet::TrustedProxies trusted)
      : args_(std::move(args)), store_(std::move(store)), trusted_(std::move(trusted)), tiers_(args_.default_tier) {}

  // Checks a new policy file and installs it in the store and the resolver.
  Result<void> Install(const cachet::PolicyFile& file, bool in_store = true) {
    if (file.policy.FindTier(args_.default_tier) == nullptr) {
      return cachet::MakeError(cachet::ErrorCode::kInvalidArgument,
                               "the policy has no tier '" + args_.default_tier + "' (--default-tier)");
    }
    if (in_store) {
      if (auto ok = store_->Install(file); !ok) return ok;
    }
    tiers_.Set(file);
    return {};
  }

  // SIGHUP: the policy file again, unless the policy follows cachetd's.
  void Reload() {
    if (!args_.pub.empty()) return Log("SIGHUP ignored: the policy follows cachetd's (" + args_.pub + ")");
    auto file = cachet::LoadPolicyFile(args_.policy);
    auto ok = file ? Install(*file) : tl::unexpected(file.error());
    Log(ok ? "reloaded the policy from " + args_.policy
           : "kept the running policy; the reload failed: " + ok.error().message);
  }

  // --pub: cachetd's policy, installed by a subscriber. It installs in an
  // in-process limiter; for the other stores that one only checks the
  // policy, and the callback installs it in the store.
  Result<void> Follow(const RateLimitPolicy& initial) {
    cachet::RateLimiter* target = store_->InProcess();
    if (target == nullptr) {
      auto checker = cachet::RateLimiter::Create(initial, cachet::RateLimiterOptions{64});
      if (!checker) return tl::unexpected(checker.error());
      checker_ = std::move(*checker);
      target = checker_.get();
    }
    const bool in_store = store_->InProcess() == nullptr;
    auto sub = cachet::PolicySubscriber::Start(
        args_.pub, *target,
        [this, in_store](const cachet::PolicyFile& file) {
          auto ok = Install(file, in_store);
          Log(ok ? "installed cachetd's policy" : "refused cachetd's policy: " + ok.error().message);
        },
        args_.curve);
    if (!sub) return tl::unexpected(sub.error());
    subscriber_ = std::move(*sub);
    return {};
  }

  // Decides for one request and writes the rate-limit headers; false when
  // denied (or when no decision could be made: then the status is set).
  bool Decide(const httplib::Request& req, httplib::Response& res) {
    // A proxy may add a second X-Forwarded-For line rather than extend the
    // first: read them all, in order.
    std::string forwarded;
    for (size_t i = 0, n = req.get_header_value_count("X-Forwarded-For"); i < n; ++i) {
      forwarded += (i ? "," : "") + req.get_header_value("X-Forwarded-For", i);
    }
    auto address = cachet::ClientAddress(req.remote_addr, forwarded, trusted_);
    if (!address) {
      res.status = 400;
      res.set_content(address.error().message + "\n", "text/plain");
      return false;
    }
    const cachet::Identity who = tiers_.Identify(req.get_header_value("X-API-Key"), *address);
    auto d = store_->Check(who.key, who.tier);
    if (!d) {  // e.g. a tier cachetd's policy lacks, or a full counter table: fail closed, loudly
      Log("no decision for '" + who.key + "' in tier '" + who.tier + "': " + d.error().message);
      res.status = 503;
      res.set_content(d.error().message + "\n", "text/plain");
      return false;
    }
    for (const auto& h : cachet::RateLimitHeaders(*d, d->rule)) res.set_header(h.name, h.value);
    return d->allowed;
  }

 private:
  const Args args_;
  std::unique_ptr<Store> store_;
  const cachet::TrustedProxies trusted_;
  cachet::TierResolver tiers_;
  std::unique_ptr<cachet::RateLimiter> checker_;
  std::unique_ptr<cachet::PolicySubscriber> subscriber_;  // last: stops before the rest goes
};

}  // namespace

int main(int argc, char** argv) {
  // Before any thread exists, so that every thread inherits the mask.
  sigset_t signals;
  sigemptyset(&signals);
  for (int s : {SIGHUP, SIGTERM, SIGINT}) sigaddset(&signals, s);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  const Args args = Parse(argc, argv);
  auto file = cachet::LoadPolicyFile(args.policy);
  if (!file) Refuse(file.error().message);
  auto trusted = cachet::TrustedProxies::Parse(args.trusted);
  if (!trusted) Refuse(trusted.error().message);
  auto store = MakeStore(args, *file);
  if (!store) Refuse("--store " + args.store + ": " + store.error().message);
  Service service(args, std::move(*store), std::move(*trusted));
  if (auto ok = service.Install(*file, /*in_store=*/false); !ok) Refuse(ok.error().message);
  if (!args.pub.empty()) {
    if (auto ok = service.Follow(file->policy); !ok) Refuse("--pub: " + ok.error().message);
  }

  httplib::Server server;
  // Headers and body go out in two writes; without TCP_NODELAY the second
  // waits for the client's delayed ACK (40 ms per keep-alive request).
  server.set_tcp_nodelay(true);
  server.set_keep_alive_max_count(1000);
  server.new_task_queue = [n = args.threads] { return new httplib::ThreadPool(n); };
  server.Get(R"(/api/.*)", [&](const httplib::Request& req, httplib::Response& res) {
    if (service.Decide(req, res)) {
      res.set_content("{\"ok\":true}\n", "application/json");
    } else if (res.status < 400) {
      res.status = cachet::kHttpTooManyRequests;
      res.set_content("{\"error\":\"too many requests\"}\n", "application/json");
    }
  });
  server.Get("/auth", [&](const httplib::Request& req, httplib::Response& res) {
    if (service.Decide(req, res)) {
      res.status = 204;
    } else if (res.status < 400) {
      res.status = 403;  // auth_request's "deny"; nginx turns it into 429
    }
  });
  const int port = args.port == 0 ? server.bind_to_any_port(args.host)
                                  : (server.bind_to_port(args.host, args.port) ? args.port : -1);
  if (port < 0) {
    Log("cannot listen on " + args.host + ":" + std::to_string(args.port));
    return 1;
  }

  std::atomic<bool> served{false};
  std::thread signal_thread([&] {
    for (;;) {
      int sig = 0;
      if (sigwait(&signals, &sig) != 0) continue;
      if (sig == SIGHUP) {
        service.Reload();
        continue;
      }
      // SIGTERM, SIGINT, or main's wake-up once serving ended. httplib's
      // stop() does nothing until listening has begun: repeat until it took.
      while (!served.load()) {
        server.stop();
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
      return;
    }
  });
  std::printf("listening on http://%s:%d\n", args.host.c_str(), port);
  std::fflush(stdout);
  const bool clean = server.listen_after_bind();
  served.store(true);
  pthread_kill(signal_thread.native_handle(), SIGTERM);
  signal_thread.join();
  return clean ? 0 : 1;
}
