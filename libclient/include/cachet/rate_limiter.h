// cachet::RateLimiter: decides whether a user may make a request.
//
//   auto limiter = cachet::RateLimiter::Create(policy);            // tiers and rules
//   auto d = (*limiter)->Check(api_key, "premium", /*cost=*/1);
//   if (d && !d->allowed) { /* 429, Retry-After: d->retry_after */ }
//
// Keys identify users (an IP address, an API key, an account id). Each tier
// has rules, and a request must pass all of them; a per-key override
// replaces a tier's rules for one user. A shadow rule counts and reports
// (Decision::shadow_denied) but never denies. A denied request consumes
// nothing.
//
// Counters live in this process (striped locks). SetPolicy swaps the policy
// at run time; counters of rules that count the same way (same tier, name,
// algorithm, limit, window, burst) carry over, others start afresh.
//
// Thread safety: every method may be called from any thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "cachet/clock.h"
#include "cachet/rate_limit.h"
#include "cachet/result.h"

namespace cachet {

struct Tier {
  std::string name;
  std::vector<Rule> rules;
};

struct RateLimitPolicy {
  std::vector<Tier> tiers;
  // Rules for single keys, replacing their tier's rules.
  std::unordered_map<std::string, std::vector<Rule>> overrides;

  Result<void> Validate() const;
  // Validate, plus `check` on every rule (a store's own restrictions).
  Result<void> Validate(const std::function<Result<void>(const Rule&)>& check) const;
  const Tier* FindTier(std::string_view name) const;

  // The rules that apply to `key` in `tier`: the key's override if it has
  // one, else the tier's. `owner` names them for counter ids ("override" or
  // the tier). INVALID_ARGUMENT for an unknown tier.
  struct Resolved {
    const std::vector<Rule>* rules;
    std::string_view owner;
  };
  Result<Resolved> Resolve(std::string_view key, std::string_view tier) const;
};

struct RateLimiterStats {
  uint64_t allowed = 0;
  uint64_t denied = 0;
  uint64_t shadow_denied = 0;  // requests a shadow rule would have denied
  uint64_t keys = 0;           // keys with live counters
};

class RateLimiter {
 public:
  static Result<std::unique_ptr<RateLimiter>> Create(RateLimitPolicy policy,
                                                     const Clock& clock = SystemClock::Instance());
  ~RateLimiter();
  RateLimiter(const RateLimiter&) = delete;
  RateLimiter& operator=(const RateLimiter&) = delete;

  // INVALID_ARGUMENT for an unknown tier or a cost of 0.
  Result<Decision> Check(std::string_view key, std::string_view tier, uint64_t cost = 1);

  // Validates and installs a new policy; on error the current one stays.
  Result<void> SetPolicy(RateLimitPolicy policy);

  // Drops counters of keys whose windows have all passed; returns how many
  // keys it dropped. Scans at most `max_keys` keys from where it stopped.
  size_t ReclaimIdle(size_t max_keys = 4096);

  RateLimiterStats Stats() const;

  class Impl;

 private:
  explicit RateLimiter(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace cachet
