#include "cachet/daemon_rate_limiter.h"

#include <atomic>
#include <cstdio>
#include <mutex>

#include "cachet/client.h"

namespace cachet {

class DaemonRateLimiter::Impl {
 public:
  Impl(std::unique_ptr<Client> client, DaemonRateLimiterOptions options, std::unique_ptr<RateLimiter> fallback,
       const Clock& clock)
      : client_(std::move(client)), options_(std::move(options)), fallback_(std::move(fallback)), clock_(clock) {}

  Result<Decision> Check(std::string_view key, std::string_view tier, uint64_t cost) {
    if (cost == 0) return MakeError(ErrorCode::kInvalidArgument, "cost must be at least 1");
    const int64_t now = clock_.NowMs();
    if (!healthy_.load() && now < next_attempt_ms_.load()) return OnFailure(key, tier, cost);
    auto d = client_->RateLimit(key, tier, cost);
    if (d) {
      SetHealth(true, Error{});
      return d;
    }
    if (d.error().code != ErrorCode::kUnavailable && d.error().code != ErrorCode::kTimeout) {
      SetHealth(true, Error{});  // the daemon answered: the request itself is wrong
      return d;
    }
    next_attempt_ms_.store(now + options_.retry_interval.count());
    SetHealth(false, d.error());
    return OnFailure(key, tier, cost);
  }

  bool healthy() const { return healthy_.load(); }

 private:
  Result<Decision> OnFailure(std::string_view key, std::string_view tier, uint64_t cost) {
    switch (options_.on_failure) {
      case FailureMode::kLocalFallback: return fallback_->Check(key, tier, cost);
      case FailureMode::kFailClosed: {
        Decision d;
        d.allowed = false;
        d.retry_after = options_.retry_interval;
        d.reset = options_.retry_interval;
        d.rule = "store_unavailable";
        return d;
      }
      case FailureMode::kFailOpen: break;
    }
    Decision d;
    d.rule = "store_unavailable";
    return d;
  }

  // Reports each change of state once.
  void SetHealth(bool healthy, const Error& why) {
    if (healthy_.exchange(healthy) == healthy) return;
    std::lock_guard<std::mutex> lock(report_mu_);
    if (options_.on_health_change) {
      options_.on_health_change(healthy, why);
    } else if (healthy) {
      std::fprintf(stderr, "cachet: rate-limit daemon reachable again; decisions go to it\n");
    } else {
      std::fprintf(stderr, "cachet: rate-limit daemon unreachable (%s); deciding by the failure mode\n",
                   why.ToString().c_str());
    }
  }

  std::unique_ptr<Client> client_;
  const DaemonRateLimiterOptions options_;
  std::unique_ptr<RateLimiter> fallback_;
  const Clock& clock_;
  std::atomic<bool> healthy_{true};
  std::atomic<int64_t> next_attempt_ms_{0};
  std::mutex report_mu_;  // one report at a time
};

DaemonRateLimiter::DaemonRateLimiter(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
DaemonRateLimiter::~DaemonRateLimiter() = default;

Result<std::unique_ptr<DaemonRateLimiter>> DaemonRateLimiter::Connect(const std::string& endpoint,
                                                                      DaemonRateLimiterOptions options,
                                                                      const Clock& clock) {
  std::unique_ptr<RateLimiter> fallback;
  if (options.on_failure == FailureMode::kLocalFallback) {
    if (!options.fallback_policy) {
      return MakeError(ErrorCode::kInvalidArgument, "kLocalFallback needs a fallback_policy");
    }
    auto made = RateLimiter::Create(*options.fallback_policy, clock);
    if (!made) return tl::unexpected(made.error());
    fallback = std::move(*made);
  }
  ClientOptions client_options;
  client_options.timeout = options.timeout;
  client_options.retries = 0;
  client_options.shared_memory_reads = false;
  auto client = Client::Connect(endpoint, client_options);
  if (!client) return tl::unexpected(client.error());
  return std::unique_ptr<DaemonRateLimiter>(new DaemonRateLimiter(
      std::make_unique<Impl>(std::move(*client), std::move(options), std::move(fallback), clock)));
}

Result<Decision> DaemonRateLimiter::Check(std::string_view key, std::string_view tier, uint64_t cost) {
  return impl_->Check(key, tier, cost);
}

bool DaemonRateLimiter::healthy() const { return impl_->healthy(); }

}  // namespace cachet
