// PolicySubscriber: keeps a RateLimiter's policy in step with cachetd's.
//
// cachetd publishes its rate-limit policy file on its `pub` endpoint when it
// starts, after each SIGHUP that changes it, and again every second. A
// PolicySubscriber listens there on a thread of its own and installs each new
// version in the limiter, so limits change without restarting the service
// and without resetting counters that still apply. A published policy that
// does not parse is ignored (the limiter keeps its policy) and counted.
//
// A policy's version is VersionOf(its text): the same file has the same
// version in every daemon and across restarts, and a changed file a new one,
// so a subscriber installs exactly the policies it does not hold yet, also
// after the daemon restarted with a file changed while it was down.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "cachet/curve.h"
#include "cachet/policy_file.h"
#include "cachet/rate_limiter.h"
#include "cachet/result.h"

namespace cachet {

class PolicySubscriber {
 public:
  // Starts listening on `endpoint` (the daemon's `pub`). The limiter must
  // outlive the subscriber. `on_policy`, if set, is called on the
  // subscriber's thread with each policy installed (its API-key tiers feed
  // the application's tier resolver). `curve`: the daemon's public key and
  // this subscriber's pair when its tcp `pub` speaks CURVE.
  static Result<std::unique_ptr<PolicySubscriber>> Start(const std::string& endpoint, RateLimiter& limiter,
                                                         std::function<void(const PolicyFile&)> on_policy = nullptr,
                                                         const CurveClientKeys& curve = {});
  // For any other limiter: `install` is called on the subscriber's thread
  // with each new policy; an error refuses that version (counted in
  // rejected(), the limiter keeping its policy). For a GossipRateLimiter:
  //   [&](const PolicyFile& f) { return gossip->Apply(f); }
  using Installer = std::function<Result<void>(const PolicyFile&)>;
  static Result<std::unique_ptr<PolicySubscriber>> Start(const std::string& endpoint, Installer install,
                                                         const CurveClientKeys& curve = {});
  ~PolicySubscriber();  // stops the thread
  PolicySubscriber(const PolicySubscriber&) = delete;
  PolicySubscriber& operator=(const PolicySubscriber&) = delete;

  // The version of a policy text: a 64-bit hash of it (XXH3), never 0.
  static uint64_t VersionOf(std::string_view policy_text);

  uint64_t version() const;   // last version installed; 0 before the first
  uint64_t rejected() const;  // versions that did not parse
  std::string last_error() const;

  class Impl;

 private:
  explicit PolicySubscriber(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace cachet
