#include "cachet/gossip_membership.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <thread>

#include "cachet/cluster/etcd_client.h"
#include "cachet/cluster/etcd_lease_keeper.h"
#include "cachet/cluster/etcd_watch.h"
#include "cachet/gossip_rate_limiter.h"

namespace cachet {
namespace {

// Re-read the directory this often even without a watch event: a watch
// that was lost and came back has delivered what it missed, but a re-read
// costs one small range and bounds how stale the peers can be.
constexpr std::chrono::seconds kRereadInterval{1};
// A registration that failed is tried again this often.
constexpr std::chrono::milliseconds kRetryInterval{500};

bool WildcardHost(const std::string& endpoint) {
  return endpoint.find("://0.0.0.0:") != std::string::npos || endpoint.find("://*:") != std::string::npos ||
         endpoint.find("://[::]:") != std::string::npos;
}

}  // namespace

Result<void> GossipMembershipOptions::Validate() const {
  if (cluster.empty()) return MakeError(ErrorCode::kInvalidArgument, "gossip membership needs the cluster's name");
  if (cluster.find('/') != std::string::npos) {
    return MakeError(ErrorCode::kInvalidArgument, "cluster name '" + cluster + "' must not contain '/'");
  }
  if (ttl_seconds < 1 || ttl_seconds > 60) {
    return MakeError(ErrorCode::kInvalidArgument, "gossip membership ttl_seconds must be 1 to 60");
  }
  if (etcd_timeout.count() < 1) return MakeError(ErrorCode::kInvalidArgument, "etcd_timeout must be positive");
  cluster::EtcdOptions e;
  e.endpoints = etcd;
  return e.Validate();
}

class GossipMembership::Impl {
 public:
  Impl(GossipRateLimiter& limiter, GossipMembershipOptions options) : limiter_(limiter), options_(std::move(options)) {
    etcd_options_.endpoints = options_.etcd;
    etcd_options_.request_timeout = options_.etcd_timeout;
    if (options_.advertise.empty()) options_.advertise = limiter_.endpoint();
    directory_ = "/cachet/" + options_.cluster + "/limiters/";
    key_ = directory_ + limiter_.node_id();
    value_ = nlohmann::json{{"id", limiter_.node_id()}, {"endpoint", options_.advertise}}.dump();
  }

  ~Impl() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stopping_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
    watch_.reset();
    if (lease_ && !lease_->lost()) {
      if (auto ok = lease_->Revoke(); !ok) {
        Report("gossip membership: could not withdraw " + key_ + " (" + ok.error().message +
               "); peers drop it within " + std::to_string(options_.ttl_seconds) + " s");
      }
    }
  }

  Result<void> Start() {
    if (WildcardHost(options_.advertise)) {
      return MakeError(ErrorCode::kInvalidArgument, "gossip membership: peers cannot connect to '" +
                                                        options_.advertise + "'; set advertise to this host's address");
    }
    auto client = cluster::EtcdClient::Create(etcd_options_);
    if (!client) return tl::unexpected(client.error());
    etcd_.emplace(std::move(*client));
    if (auto ok = Register(); !ok) return ok;
    auto revision = Reread();
    if (!revision) return tl::unexpected(revision.error());
    cluster::WatchOptions watch;
    watch.key = directory_;
    watch.prefix = true;
    watch.start_revision = *revision + 1;
    auto started =
        cluster::EtcdWatch::Start(etcd_options_, watch, [this](const cluster::WatchUpdate& u) { OnWatch(u); });
    if (!started) return tl::unexpected(started.error());
    watch_.emplace(std::move(*started));
    thread_ = std::thread([this] { Run(); });
    return {};
  }

  std::vector<std::string> peers() const {
    std::lock_guard<std::mutex> lock(mu_);
    return peers_;
  }
  uint64_t updates() const { return updates_.load(); }

 private:
  // Binds key_ to a new lease: a key that holds another endpoint belongs to
  // another live limiter (or one dead for less than its TTL) and is refused.
  Result<void> Register() {
    cluster::LeaseKeeperOptions lease_options;
    lease_options.ttl_seconds = options_.ttl_seconds;
    auto lease = cluster::LeaseKeeper::Start(etcd_options_, lease_options, [this](const Error& why) {
      Report("gossip membership: lost the registration lease (" + why.message + "); registering again");
      {
        std::lock_guard<std::mutex> lock(mu_);
        reregister_ = true;
      }
      cv_.notify_all();
    });
    if (!lease) return MakeError(lease.error().code, "gossip membership: " + lease.error().message);
    const int64_t id = lease->lease_id();
    auto txn = etcd_->Txn({cluster::Compare::CreateRevision(key_, cluster::Compare::Op::kEqual, 0)},
                          {cluster::TxnOp::Put(key_, value_, id)}, {cluster::TxnOp::Get(key_)});
    if (!txn) return MakeError(txn.error().code, "gossip membership: registering " + key_ + ": " + txn.error().message);
    if (!txn->succeeded) {
      const bool mine = !txn->ranges.empty() && !txn->ranges[0].kvs.empty() && txn->ranges[0].kvs[0].value == value_;
      if (!mine) {
        (void)lease->Revoke();
        const std::string held = txn->ranges.empty() || txn->ranges[0].kvs.empty() ? "" : txn->ranges[0].kvs[0].value;
        return MakeError(ErrorCode::kAlreadyExists, "gossip membership: node id '" + limiter_.node_id() +
                                                        "' is registered by another limiter (" + held +
                                                        "); give each a unique node id (a dead one drops out within " +
                                                        std::to_string(options_.ttl_seconds) + " s)");
      }
      // Our own entry from an earlier life (or an earlier lease): take it over.
      auto put = etcd_->Put(key_, value_, id);
      if (!put)
        return MakeError(put.error().code, "gossip membership: registering " + key_ + ": " + put.error().message);
    }
    std::lock_guard<std::mutex> lock(mu_);
    lease_.emplace(std::move(*lease));
    return {};
  }

  // Reads the directory and installs its endpoints when they changed;
  // returns the revision read.
  Result<int64_t> Reread() {
    auto range = etcd_->Range(directory_);
    if (!range)
      return MakeError(range.error().code, "gossip membership: reading " + directory_ + ": " + range.error().message);
    std::vector<std::string> endpoints;
    for (const cluster::KeyValue& kv : range->kvs) {
      try {
        endpoints.push_back(nlohmann::json::parse(kv.value).at("endpoint").get<std::string>());
      } catch (const std::exception& e) {
        Report("gossip membership: ignoring " + kv.key + ": " + e.what());
      }
    }
    std::sort(endpoints.begin(), endpoints.end());
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (updates_.load() > 0 && endpoints == peers_) return range->revision;
    }
    if (auto ok = limiter_.SetPeers(endpoints); !ok) {
      return MakeError(ok.error().code, "gossip membership: " + ok.error().message);
    }
    std::lock_guard<std::mutex> lock(mu_);
    peers_ = std::move(endpoints);
    updates_.fetch_add(1);
    return range->revision;
  }

  void OnWatch(const cluster::WatchUpdate& update) {
    if (update.kind == cluster::WatchUpdate::Kind::kLost) {
      Report("gossip membership: lost the watch on etcd (" + update.error.message + "); keeping the peers");
      return;
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      dirty_ = true;
    }
    cv_.notify_all();
  }

  void Run() {
    std::unique_lock<std::mutex> lock(mu_);
    auto last_read = std::chrono::steady_clock::now();
    while (!stopping_) {
      cv_.wait_for(lock, reregister_ ? kRetryInterval : kRereadInterval, [&] { return stopping_ || dirty_; });
      if (stopping_) break;
      const bool reregister = reregister_;
      const bool due = dirty_ || std::chrono::steady_clock::now() - last_read >= kRereadInterval;
      dirty_ = false;
      lock.unlock();
      if (reregister) Reregister();
      if (due) {
        last_read = std::chrono::steady_clock::now();
        auto read = Reread();
        ReportOnce(read_problem_, read ? std::string() : read.error().message);
      }
      lock.lock();
    }
  }

  void Reregister() {
    std::optional<cluster::LeaseKeeper> old;
    {
      std::lock_guard<std::mutex> lock(mu_);
      old = std::move(lease_);
      lease_.reset();
    }
    old.reset();  // lost already: nothing to revoke
    if (auto ok = Register(); !ok) return ReportOnce(register_problem_, ok.error().message);
    register_problem_.clear();
    {
      std::lock_guard<std::mutex> lock(mu_);
      reregister_ = false;
    }
    Report("gossip membership: registered again as " + key_);
  }

  // Reports `line` unless `last` holds it (the problem reported last); ""
  // marks a recovery.
  void ReportOnce(std::string& last, const std::string& line) {
    if (line == last) return;
    last = line;
    if (!line.empty()) Report(line);
  }

  void Report(const std::string& line) const {
    if (options_.on_error) {
      options_.on_error(line);
    } else {
      std::fprintf(stderr, "%s\n", line.c_str());
    }
  }

  GossipRateLimiter& limiter_;
  GossipMembershipOptions options_;
  cluster::EtcdOptions etcd_options_;
  std::string directory_, key_, value_;
  std::optional<cluster::EtcdClient> etcd_;  // thread-safe
  std::optional<cluster::EtcdWatch> watch_;
  std::thread thread_;
  std::string read_problem_, register_problem_;  // the thread's: reported last

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::optional<cluster::LeaseKeeper> lease_;  // guarded by mu_
  std::vector<std::string> peers_;             // guarded by mu_
  bool dirty_ = false;                         // guarded by mu_: a watch event since the last read
  bool reregister_ = false;                    // guarded by mu_: the lease was lost
  bool stopping_ = false;                      // guarded by mu_
  std::atomic<uint64_t> updates_{0};
};

GossipMembership::GossipMembership(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
GossipMembership::~GossipMembership() = default;

Result<std::unique_ptr<GossipMembership>> GossipMembership::Join(GossipRateLimiter& limiter,
                                                                 GossipMembershipOptions options) {
  if (auto ok = options.Validate(); !ok) return tl::unexpected(ok.error());
  auto impl = std::make_unique<Impl>(limiter, std::move(options));
  if (auto ok = impl->Start(); !ok) return tl::unexpected(ok.error());
  return std::unique_ptr<GossipMembership>(new GossipMembership(std::move(impl)));
}

std::vector<std::string> GossipMembership::peers() const { return impl_->peers(); }
uint64_t GossipMembership::updates() const { return impl_->updates(); }

}  // namespace cachet
