// Helpers shared by the rate-limiter tests.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <string>

#include "cachet/clock.h"
#include "cachet/rate_limit.h"

namespace cachet::testing {

inline Rule MakeRule(const std::string& name, uint64_t limit, std::chrono::milliseconds window,
                     Algorithm a = Algorithm::kSlidingWindow, uint64_t burst = 0) {
  Rule r;
  r.name = name;
  r.limit = limit;
  r.window = window;
  r.algorithm = a;
  r.burst = burst;
  return r;
}

// One tier, "regular", with one rule, "per_minute": `limit` per 60 s.
inline RateLimitPolicy PerMinutePolicy(uint64_t limit, Algorithm a = Algorithm::kFixedWindow) {
  RateLimitPolicy p;
  p.tiers.push_back({"regular", {MakeRule("per_minute", limit, std::chrono::minutes(1), a)}});
  return p;
}

// The schedule the store-parity tests walk: times on and around window
// edges, costs of 1 and 2. Calls step(index, cost) after moving the clock.
template <typename Step>
void WalkParitySchedule(FakeClock& clock, Step step) {
  const int64_t steps_ms[] = {0, 0, 0, 0, 0, 10, 990, 0, 0, 0, 250, 500, 15000, 0, 0, 30000, 0, 29999, 1, 0};
  for (size_t i = 0; i < std::size(steps_ms); ++i) {
    clock.Advance(std::chrono::milliseconds(steps_ms[i]));
    step(i, uint64_t{i % 7 == 3 ? 2u : 1u});
  }
}

}  // namespace cachet::testing
