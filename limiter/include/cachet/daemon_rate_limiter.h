// DaemonRateLimiter: rate-limit decisions made by cachetd, so every process
// and host using one daemon shares one count (one round trip per decision).
//
// When the daemon cannot be reached within `timeout`, the decision follows
// `on_failure`: allow (fail open), deny (fail closed), or decide locally
// with `fallback_policy`. The outage is reported once to `on_health_change`
// (by default a line on stderr), the daemon is not asked again for
// `retry_interval` (so an outage costs no waiting per request), and the
// limiter goes back to the daemon by itself once it answers.
//
// ConnectCluster makes the same limiter over a sharded cluster: each key is
// decided by the primary of its slot (strict mode: exact, at one round trip;
// docs/design.md, "Strict limiting"). A key whose primary is down, or whose
// slot has no primary while one is elected, follows `on_failure` like an
// unreachable daemon; when the map names a new primary the limiter goes to
// it. The new primary starts the key's open windows from zero.
//
// Thread safety: Check may be called from any thread.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "cachet/clock.h"
#include "cachet/curve.h"
#include "cachet/rate_limiter.h"
#include "cachet/result.h"

namespace cachet {

struct ClusterClientOptions;  // cachet/cluster_client.h

enum class FailureMode { kFailOpen, kFailClosed, kLocalFallback };

struct DaemonRateLimiterOptions {
  FailureMode on_failure = FailureMode::kFailOpen;
  std::chrono::milliseconds timeout{50};
  std::chrono::milliseconds retry_interval{1000};
  std::optional<RateLimitPolicy> fallback_policy;  // required for kLocalFallback
  // Called on each change between reachable and unreachable.
  std::function<void(bool healthy, const Error& why)> on_health_change;
  // Connect: the daemon's public key and this client's pair when its tcp
  // endpoint speaks CURVE (ConnectCluster takes them in ClusterClientOptions).
  CurveClientKeys curve;
};

class DaemonRateLimiter {
 public:
  static Result<std::unique_ptr<DaemonRateLimiter>> Connect(const std::string& endpoint,
                                                            DaemonRateLimiterOptions options = {},
                                                            const Clock& clock = SystemClock::Instance());
  // `cluster.timeout` and `retries` are replaced by `options.timeout` and 0.
  static Result<std::unique_ptr<DaemonRateLimiter>> ConnectCluster(ClusterClientOptions cluster,
                                                                   DaemonRateLimiterOptions options = {},
                                                                   const Clock& clock = SystemClock::Instance());
  ~DaemonRateLimiter();

  // Errors only for requests no store could answer (an unknown tier, cost 0);
  // an unreachable daemon gives the failure mode's decision instead.
  Result<Decision> Check(std::string_view key, std::string_view tier, uint64_t cost = 1);
  bool healthy() const;

  class Impl;

 private:
  explicit DaemonRateLimiter(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace cachet
