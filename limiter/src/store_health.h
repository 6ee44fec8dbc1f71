// StoreHealth: what a limiter backed by a remote store (cachetd, Redis)
// does when the store cannot be reached: the configured failure mode, one
// report per change of state, and no new attempt before the retry interval,
// so an outage costs one timeout per interval rather than one per request.
#pragma once

#include <atomic>
#include <cstdio>
#include <functional>
#include <memory>
#include <mutex>

#include "cachet/clock.h"
#include "cachet/daemon_rate_limiter.h"
#include "cachet/rate_limiter.h"

namespace cachet::detail {

class StoreHealth {
 public:
  StoreHealth(const char* store, const DaemonRateLimiterOptions& options, std::unique_ptr<RateLimiter> fallback,
              const Clock& clock)
      : store_(store), options_(options), fallback_(std::move(fallback)), clock_(clock) {}

  // False while the store is known down and the retry interval has not passed.
  bool ShouldTry() const { return healthy_.load() || clock_.NowMs() >= next_attempt_ms_.load(); }

  void Succeeded() { Set(true, Error{}); }
  void Failed(const Error& why) {
    next_attempt_ms_.store(clock_.NowMs() + options_.retry_interval.count());
    Set(false, why);
  }
  bool healthy() const { return healthy_.load(); }

  // The decision when the store could not be asked.
  Result<Decision> Fallback(std::string_view key, std::string_view tier, uint64_t cost) {
    Decision d;
    d.rule = "store_unavailable";
    switch (options_.on_failure) {
      case FailureMode::kLocalFallback: return fallback_->Check(key, tier, cost);
      case FailureMode::kFailClosed:
        d.allowed = false;
        d.retry_after = options_.retry_interval;
        d.reset = options_.retry_interval;
        return d;
      case FailureMode::kFailOpen: break;
    }
    return d;
  }

 private:
  void Set(bool healthy, const Error& why) {
    if (healthy_.exchange(healthy) == healthy) return;
    std::lock_guard<std::mutex> lock(report_mu_);
    if (options_.on_health_change) {
      options_.on_health_change(healthy, why);
    } else if (healthy) {
      std::fprintf(stderr, "cachet: rate-limit store (%s) reachable again; decisions go to it\n", store_);
    } else {
      std::fprintf(stderr, "cachet: rate-limit store (%s) unreachable (%s); deciding by the failure mode\n", store_,
                   why.ToString().c_str());
    }
  }

  const char* store_;
  const DaemonRateLimiterOptions options_;
  std::unique_ptr<RateLimiter> fallback_;
  const Clock& clock_;
  std::atomic<bool> healthy_{true};
  std::atomic<int64_t> next_attempt_ms_{0};
  std::mutex report_mu_;
};

// Makes the local fallback limiter when the options ask for one.
inline Result<std::unique_ptr<RateLimiter>> MakeFallback(const DaemonRateLimiterOptions& options, const Clock& clock) {
  if (options.on_failure != FailureMode::kLocalFallback) return std::unique_ptr<RateLimiter>();
  if (!options.fallback_policy) return MakeError(ErrorCode::kInvalidArgument, "kLocalFallback needs a fallback_policy");
  return RateLimiter::Create(*options.fallback_policy, clock);
}

}  // namespace cachet::detail
