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
// Counters live in this process, in a fixed-size table of 32-byte slots
// updated by compare-and-swap (no lock on the decision path). Counters whose
// windows passed more than a second ago are reclaimed: when a new key finds
// its part of the table full, or by ReclaimIdle. SetPolicy swaps the policy at run time; a
// rule that keeps its tier, name, algorithm and window keeps its counters
// (a new limit applies to the requests already counted), others start
// afresh.
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
  // Requests that passed every rule's first look, were counted by some and
  // then denied by a later one (a concurrent request had taken the last of
  // its room); the rules that had counted them gave the cost back. Contention
  // on multi-rule tiers; each is also in `denied`.
  uint64_t given_back = 0;
  uint64_t counters = 0;  // live (key, rule) counters
  uint64_t capacity = 0;  // counters the table can hold
};

struct RateLimiterOptions {
  // (key, rule) counters alive at once: 32 bytes each, touched as keys
  // arrive. A key that finds no room gets NO_SPACE from Check.
  uint64_t capacity = uint64_t{1} << 20;
};

class RateLimiter {
 public:
  static Result<std::unique_ptr<RateLimiter>> Create(RateLimitPolicy policy,
                                                     const Clock& clock = CoarseClock::Instance());
  static Result<std::unique_ptr<RateLimiter>> Create(RateLimitPolicy policy, RateLimiterOptions options,
                                                     const Clock& clock = CoarseClock::Instance());
  // Like Create, but the counters live in the named shared-memory table
  // (/dev/shm/NAME, made with `options.capacity` if missing; an existing
  // one keeps its own capacity), which outlives the process: a restarted
  // process (after an exit, a crash or kill -9) continues every window
  // where it stood. Sliding logs still live in the process and start
  // afresh. For several processes counting together use ShmRateLimiter,
  // which refuses sliding logs rather than keep one per process. A table
  // that cannot be used (another layout, corrupt) is refused with the
  // reason; CounterTable::Remove removes it.
  static Result<std::unique_ptr<RateLimiter>> Open(const std::string& segment, RateLimitPolicy policy,
                                                   RateLimiterOptions options = {},
                                                   const Clock& clock = CoarseClock::Instance());
  ~RateLimiter();
  RateLimiter(const RateLimiter&) = delete;
  RateLimiter& operator=(const RateLimiter&) = delete;

  // INVALID_ARGUMENT for an unknown tier or a cost of 0; NO_SPACE when the
  // counter table has no room for a new key.
  Result<Decision> Check(std::string_view key, std::string_view tier, uint64_t cost = 1);

  // Validates and installs a new policy; on error the current one stays.
  Result<void> SetPolicy(RateLimitPolicy policy);

  // Drops counters whose windows have passed; returns how many it dropped.
  // Scans `max_slots` slots of the table from where the last call stopped.
  size_t ReclaimIdle(size_t max_slots = 4096);

  RateLimiterStats Stats() const;

  class Impl;

 private:
  explicit RateLimiter(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace cachet
