#include "cachet/daemon_rate_limiter.h"

#include <algorithm>
#include <atomic>
#include <functional>
#include <mutex>
#include <utility>
#include <vector>

#include "cachet/client.h"
#include "cachet/cluster_client.h"
#include "store_health.h"

namespace cachet {
namespace {

// The connections of one limiter: a decision takes one for its round trip
// and gives it back, so threads deciding at once do not queue behind one
// another's round trips (a client serializes its calls). The pool grows to
// the callers' concurrency and keeps what it made.
template <class C>
class ClientPool {
 public:
  using Connect = std::function<Result<std::unique_ptr<C>>()>;
  ClientPool(Connect connect, std::unique_ptr<C> first) : connect_(std::move(connect)) {
    idle_.push_back(std::move(first));
  }

  Result<std::unique_ptr<C>> Take() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!idle_.empty()) {
        std::unique_ptr<C> c = std::move(idle_.back());
        idle_.pop_back();
        return c;
      }
    }
    return connect_();
  }
  void Give(std::unique_ptr<C> c) {
    std::lock_guard<std::mutex> lock(mu_);
    idle_.push_back(std::move(c));
  }

 private:
  const Connect connect_;
  std::mutex mu_;
  std::vector<std::unique_ptr<C>> idle_;  // guarded by mu_
};

// One daemon (Client) or a cluster (ClusterClient): how a decision is asked.
Result<Decision> Ask(Client& c, std::string_view key, std::string_view tier, uint64_t cost, std::atomic<uint64_t>*) {
  return c.RateLimit(key, tier, cost);
}

// A cluster client learns a newer map before it asks when another has seen
// one (a failover found by one connection is not looked for again by each
// of the others), and reports the map it ends with.
Result<Decision> Ask(ClusterClient& c, std::string_view key, std::string_view tier, uint64_t cost,
                     std::atomic<uint64_t>* newest_epoch) {
  // A map that cannot be had shows in the failure of the decision itself.
  if (c.epoch() < newest_epoch->load(std::memory_order_relaxed)) (void)c.RefreshMap();
  auto d = c.RateLimit(key, tier, cost);
  uint64_t seen = newest_epoch->load(std::memory_order_relaxed);
  const uint64_t mine = c.epoch();
  while (mine > seen && !newest_epoch->compare_exchange_weak(seen, mine, std::memory_order_relaxed)) {
  }
  return d;
}

// No answer, or (in a cluster) no node able to decide for the key now: a
// dead primary not yet replaced, a node cut from etcd, redirects that went
// in circles.
bool Unreachable(ErrorCode code) {
  return code == ErrorCode::kUnavailable || code == ErrorCode::kTimeout || code == ErrorCode::kClusterDown ||
         code == ErrorCode::kMoved;
}

}  // namespace

class DaemonRateLimiter::Impl {
 public:
  virtual ~Impl() = default;
  virtual Result<Decision> Check(std::string_view key, std::string_view tier, uint64_t cost) = 0;
  virtual bool healthy() const = 0;
};

namespace {

template <class C>
class PooledLimiter final : public DaemonRateLimiter::Impl {
 public:
  PooledLimiter(const char* store, typename ClientPool<C>::Connect connect, std::unique_ptr<C> first,
                const DaemonRateLimiterOptions& options, std::unique_ptr<RateLimiter> fallback, const Clock& clock)
      : pool_(std::move(connect), std::move(first)), health_(store, options, std::move(fallback), clock) {}

  Result<Decision> Check(std::string_view key, std::string_view tier, uint64_t cost) override {
    if (cost == 0) return MakeError(ErrorCode::kInvalidArgument, "cost must be at least 1");
    if (!health_.ShouldTry()) return health_.Fallback(key, tier, cost);
    auto client = pool_.Take();
    if (!client) {
      health_.Failed(client.error());
      return health_.Fallback(key, tier, cost);
    }
    if (!health_.healthy()) Refresh(**client);
    auto d = Ask(**client, key, tier, cost, &newest_epoch_);
    pool_.Give(std::move(*client));
    if (d || !Unreachable(d.error().code)) {
      health_.Succeeded();  // the store answered, even if to say the request is wrong
      return d;
    }
    health_.Failed(d.error());
    return health_.Fallback(key, tier, cost);
  }

  bool healthy() const override { return health_.healthy(); }

 private:
  // After an outage a cluster may have moved the key's shard to a new
  // primary: the first decision that asks again learns the map first.
  static void Refresh(Client&) {}
  void Refresh(ClusterClient& c) {
    if (c.RefreshMap()) newest_epoch_.store(std::max(newest_epoch_.load(), c.epoch()));
  }

  ClientPool<C> pool_;
  detail::StoreHealth health_;
  std::atomic<uint64_t> newest_epoch_{0};  // the newest map epoch any pooled client has seen
};

}  // namespace

DaemonRateLimiter::DaemonRateLimiter(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
DaemonRateLimiter::~DaemonRateLimiter() = default;

Result<std::unique_ptr<DaemonRateLimiter>> DaemonRateLimiter::Connect(const std::string& endpoint,
                                                                      DaemonRateLimiterOptions options,
                                                                      const Clock& clock) {
  auto fallback = detail::MakeFallback(options, clock);
  if (!fallback) return tl::unexpected(fallback.error());
  ClientOptions client_options;
  client_options.timeout = options.timeout;
  client_options.retries = 0;
  client_options.shared_memory_reads = false;
  client_options.curve = options.curve;
  auto connect = [endpoint, client_options] { return Client::Connect(endpoint, client_options); };
  auto client = connect();
  if (!client) return tl::unexpected(client.error());
  return std::unique_ptr<DaemonRateLimiter>(new DaemonRateLimiter(std::make_unique<PooledLimiter<Client>>(
      "cachetd", std::move(connect), std::move(*client), options, std::move(*fallback), clock)));
}

Result<std::unique_ptr<DaemonRateLimiter>> DaemonRateLimiter::ConnectCluster(ClusterClientOptions cluster,
                                                                             DaemonRateLimiterOptions options,
                                                                             const Clock& clock) {
  auto fallback = detail::MakeFallback(options, clock);
  if (!fallback) return tl::unexpected(fallback.error());
  // A decision waits at most about `timeout` in all: one attempt, and a
  // lost node (or one being replaced) is the failure mode's to answer.
  cluster.timeout = options.timeout;
  cluster.retries = 0;
  cluster.backoff = std::min(cluster.backoff, options.timeout / 4);
  auto connect = [cluster] { return ClusterClient::Connect(cluster); };
  auto client = connect();
  if (!client) return tl::unexpected(client.error());
  return std::unique_ptr<DaemonRateLimiter>(new DaemonRateLimiter(std::make_unique<PooledLimiter<ClusterClient>>(
      "cachetd cluster", std::move(connect), std::move(*client), options, std::move(*fallback), clock)));
}

Result<Decision> DaemonRateLimiter::Check(std::string_view key, std::string_view tier, uint64_t cost) {
  return impl_->Check(key, tier, cost);
}

bool DaemonRateLimiter::healthy() const { return impl_->healthy(); }

}  // namespace cachet
