// RedisRateLimiter: rate-limit counters kept in Redis, for services that
// already run it. Each decision is one EVALSHA of a Lua script that applies
// every rule of the key's tier atomically on the Redis server (fixed window,
// sliding window and token bucket; the exact sliding log stays in-process).
// State per key and rule is one small hash that expires when idle.
//
// Unreachable Redis is handled like an unreachable daemon (see
// DaemonRateLimiterOptions): fail open, fail closed or a local fallback,
// reported once, retried after the interval.
//
// Thread safety: Check and SetPolicy may be called from any thread; checks
// share one connection under a mutex (use one limiter per thread for more).
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "cachet/clock.h"
#include "cachet/daemon_rate_limiter.h"
#include "cachet/rate_limiter.h"
#include "cachet/result.h"

namespace cachet {

class RedisRateLimiter {
 public:
  // `address` is "unix:/path/redis.sock" or "host:port".
  static Result<std::unique_ptr<RedisRateLimiter>> Connect(const std::string& address, RateLimitPolicy policy,
                                                           DaemonRateLimiterOptions options = {},
                                                           const Clock& clock = SystemClock::Instance());
  ~RedisRateLimiter();

  Result<Decision> Check(std::string_view key, std::string_view tier, uint64_t cost = 1);
  Result<void> SetPolicy(RateLimitPolicy policy);
  bool healthy() const;

  class Impl;

 private:
  explicit RedisRateLimiter(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace cachet
