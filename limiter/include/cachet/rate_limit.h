// Rate-limit rules and the algorithms that apply them.
//
// A Rule is a limit per window with an algorithm. An algorithm is a pure
// function of (rule, per-key state, now, cost): it never reads a clock and
// keeps no state of its own, so the same code serves every counter store
// (in process now; shared memory, the daemon and Redis next). State for the
// window-counter algorithms and GCRA is one fixed 24-byte LimiterState; the
// exact sliding log keeps one timestamp per admitted request.
//
// Thread safety: the functions are reentrant; callers serialize access to
// one key's state.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <string>
#include <string_view>

#include "cachet/decision.h"
#include "cachet/result.h"

namespace cachet {

enum class Algorithm : uint8_t {
  kFixedWindow = 1,    // count per aligned window; up to 2x limit across a boundary
  kSlidingLog = 2,     // exact: one timestamp per admitted request
  kSlidingWindow = 3,  // current count + previous count weighted by overlap; constant memory
  kTokenBucket = 4,    // GCRA: one timestamp; bursts up to `burst`
};

const char* AlgorithmName(Algorithm algorithm);
Result<Algorithm> ParseAlgorithm(std::string_view name);

struct Rule {
  std::string name;    // unique within a tier, e.g. "per_minute"
  uint64_t limit = 0;  // cost units admitted per window
  std::chrono::milliseconds window{0};
  Algorithm algorithm = Algorithm::kSlidingWindow;
  uint64_t burst = 0;   // token bucket only: bucket size; 0 means `limit`
  bool shadow = false;  // count and report, never deny (dry run)
  // Across hosts (GossipRateLimiter), how the hosts share the limit: false,
  // their counts add up to one limit; true, they share no counts and each
  // host admits its share, `limit` (and `burst`) divided by the hosts it
  // knows to be alive. A store that decides for every host at once (in
  // process, shared memory, the daemon, Redis) has one host: no change.
  bool local = false;

  Result<void> Validate() const;
};

// Fixed-size state for fixed window, sliding window and GCRA.
struct LimiterState {
  int64_t a = 0;  // fixed/sliding: current window start (ms); GCRA: theoretical arrival time (us)
  int64_t b = 0;  // fixed/sliding: count in the current window
  int64_t c = 0;  // sliding: count in the previous window
};

// The sliding log's state: admitted requests, oldest first.
struct SlidingLog {
  struct Entry {
    int64_t at_ms;
    uint64_t cost;
  };
  std::deque<Entry> entries;
  uint64_t total = 0;
};

// Evaluates `rule` for a request of `cost` at `now_ms`. When the request is
// admitted and `commit` is true, the state is updated; a denied request
// never changes it. REQUIRES: rule.Validate() succeeded.
Decision Evaluate(const Rule& rule, LimiterState& state, int64_t now_ms, uint64_t cost, bool commit);
Decision Evaluate(const Rule& rule, SlidingLog& log, int64_t now_ms, uint64_t cost, bool commit);

// True when the state can be dropped: nothing in it limits a future request.
bool Idle(const Rule& rule, const LimiterState& state, int64_t now_ms);
bool Idle(const Rule& rule, const SlidingLog& log, int64_t now_ms);

}  // namespace cachet
