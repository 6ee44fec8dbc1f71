// ShmRateLimiter: host-wide rate limiting. Counters live in a named
// shared-memory CounterTable, so every process on the host that opens the
// same name shares one exact count per key, and a process that dies in the
// middle of a decision corrupts nothing (each update is one 16-byte
// compare-and-swap).
//
// Algorithms: fixed window, sliding window and token bucket (their state
// fits 16 bytes); the sliding log stays in-process. A tier with one rule is
// exact under any concurrency; with several rules, a request admitted by one
// rule and then denied by another (by a concurrent request) is taken back
// from the first, so a rule never admits more than its limit. Counters whose
// windows passed more than a second ago are reclaimed when a new key needs
// their room, or by ReclaimIdle from any process. The statistics count this
// handle's decisions; `counters` and `capacity` are the shared table's.
//
// Thread and process safety: every method, from any thread of any process.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "cachet/clock.h"
#include "cachet/rate_limiter.h"
#include "cachet/result.h"

namespace cachet {

class ShmRateLimiter {
 public:
  // Opens (or creates) the shared table `name` with room for `capacity`
  // (key, rule) counters alive at once: 32 bytes each.
  static Result<std::unique_ptr<ShmRateLimiter>> Open(const std::string& name, RateLimitPolicy policy,
                                                      uint64_t capacity = 1 << 20,
                                                      const Clock& clock = CoarseClock::Instance());
  static Result<void> Remove(const std::string& name);
  ~ShmRateLimiter();

  Result<Decision> Check(std::string_view key, std::string_view tier, uint64_t cost = 1);
  Result<void> SetPolicy(RateLimitPolicy policy);
  size_t ReclaimIdle(size_t max_slots = 4096);
  RateLimiterStats Stats() const;

  class Impl;

 private:
  explicit ShmRateLimiter(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace cachet
