// The rate-limit algorithms as the limiters call them: Evaluate giving a
// Verdict (a Decision without the rule's name, which the limiter copies
// once, for the one rule it reports), and the idle test from what a counter
// table keeps (algorithm and window).
#pragma once

#include <algorithm>
#include <cmath>
#include <string>

#include "cachet/rate_limit.h"

namespace cachet::detail {

// Decision's fields but the name: trivially copyable.
struct Verdict {
  bool allowed = true;
  bool shadow_denied = false;
  uint64_t limit = 0;
  std::chrono::milliseconds window{0};
  uint64_t remaining = 0;
  std::chrono::milliseconds reset{0};
  std::chrono::milliseconds retry_after{0};

  Decision ToDecision(const std::string& rule) const;
};

Verdict Decide(const Rule& rule, SlidingLog& log, int64_t now_ms, uint64_t cost, bool commit);

// The fixed-state algorithms, inline: they sit on every limiter's
// decision path, inside a compare-and-swap loop.

// Microseconds rounded up to whole milliseconds (a client told to wait must
// not come back early).
inline std::chrono::milliseconds CeilMs(int64_t us) {
  return std::chrono::milliseconds(us <= 0 ? 0 : (us + 999) / 1000);
}

inline Verdict Base(const Rule& rule) {
  Verdict d;
  d.limit = rule.limit;
  d.window = rule.window;
  return d;
}

// The aligned window `now` falls in. `known` is the state's window start
// (aligned: only these functions write it); most requests fall in it, which
// saves a division.
inline int64_t WindowStart(int64_t known, int64_t now, int64_t w) {
  return known <= now && now - known < w ? known : now - now % w;
}

// A window never moves back. A request whose time reads before the window
// already counted (read a moment before another thread's, or a wall clock
// stepped back) counts in that window: going back would forget its count.
inline int64_t NotBefore(int64_t window_start, int64_t now) { return std::max(window_start, now); }

inline Verdict FixedWindow(const Rule& rule, LimiterState& s, int64_t now, uint64_t cost, bool commit) {
  Verdict d = Base(rule);
  now = NotBefore(s.a, now);
  const int64_t w = rule.window.count();
  const int64_t start = WindowStart(s.a, now, w);
  const uint64_t count = s.a == start ? static_cast<uint64_t>(s.b) : 0;
  d.reset = std::chrono::milliseconds(start + w - now);
  if (cost <= rule.limit && count <= rule.limit - cost) {
    d.remaining = rule.limit - count - cost;
    if (commit) s = LimiterState{start, static_cast<int64_t>(count + cost), 0};
    return d;
  }
  d.allowed = false;
  d.remaining = rule.limit - std::min(count, rule.limit);
  d.retry_after = d.reset;
  return d;
}

inline Verdict SlidingWindow(const Rule& rule, LimiterState& s, int64_t now, uint64_t cost, bool commit) {
  Verdict d = Base(rule);
  now = NotBefore(s.a, now);
  const int64_t w = rule.window.count();
  const int64_t start = WindowStart(s.a, now, w);
  const int64_t elapsed = now - start;
  uint64_t curr = 0, prev = 0;
  if (s.a == start) {
    curr = static_cast<uint64_t>(s.b);
    prev = static_cast<uint64_t>(s.c);
  } else if (s.a == start - w) {
    prev = static_cast<uint64_t>(s.b);
  }
  const auto limit = static_cast<double>(rule.limit);
  // The previous window still overlaps the sliding window by (w - elapsed).
  const double estimate =
      static_cast<double>(prev) * static_cast<double>(w - elapsed) / static_cast<double>(w) + static_cast<double>(curr);
  const double after = estimate + static_cast<double>(cost);
  if (after <= limit) {
    d.remaining = static_cast<uint64_t>(std::floor(limit - after));
    d.reset = std::chrono::milliseconds(w - elapsed + w);
    if (commit) s = LimiterState{start, static_cast<int64_t>(curr + cost), static_cast<int64_t>(prev)};
    return d;
  }
  d.allowed = false;
  d.remaining = estimate >= limit ? 0 : static_cast<uint64_t>(std::floor(limit - estimate));
  d.reset = std::chrono::milliseconds(w - elapsed + (curr > 0 ? w : 0));
  if (cost > rule.limit) {
    d.retry_after = d.reset;
    return d;
  }
  // When does the estimate fall far enough? In this window the previous
  // count fades linearly; in the next one the current count does.
  const double room = limit - static_cast<double>(cost) - static_cast<double>(curr);
  double wait;
  if (room >= 0 && prev > 0) {
    wait = static_cast<double>(w - elapsed) - room * static_cast<double>(w) / static_cast<double>(prev);
  } else {
    const double next_room = limit - static_cast<double>(cost);
    const double into_next =
        curr == 0
            ? 0
            : std::max(0.0, static_cast<double>(w) - next_room * static_cast<double>(w) / static_cast<double>(curr));
    wait = static_cast<double>(w - elapsed) + into_next;
  }
  d.retry_after = std::chrono::milliseconds(std::max<int64_t>(1, static_cast<int64_t>(std::ceil(wait))));
  return d;
}

// GCRA's emission interval: microseconds per unit of cost.
inline int64_t GcraInterval(std::chrono::milliseconds window, uint64_t limit) {
  return std::max<int64_t>(1, window.count() * 1000 / static_cast<int64_t>(limit));
}

// GCRA: a theoretical arrival time (TAT) per key, in microseconds. Each unit
// of cost moves it one emission interval T = window / limit later; a request
// is admitted while TAT stays within burst * T of now.
inline Verdict TokenBucket(const Rule& rule, LimiterState& s, int64_t now, uint64_t cost, bool commit) {
  Verdict d = Base(rule);
  const uint64_t burst = rule.burst != 0 ? rule.burst : rule.limit;
  d.limit = burst;
  const int64_t now_us = now * 1000;
  const int64_t interval = GcraInterval(rule.window, rule.limit);
  const int64_t capacity = interval * static_cast<int64_t>(burst);
  const int64_t tat = std::max(s.a, now_us);
  const int64_t lead = tat - now_us;
  if (cost > burst) {
    d.allowed = false;
    d.remaining = static_cast<uint64_t>(std::max<int64_t>(0, (capacity - lead) / interval));
    d.reset = CeilMs(lead);
    d.retry_after = rule.window;
    return d;
  }
  const int64_t new_lead = lead + interval * static_cast<int64_t>(cost);
  if (new_lead <= capacity) {
    d.remaining = static_cast<uint64_t>((capacity - new_lead) / interval);
    d.reset = CeilMs(new_lead);
    if (commit) s.a = now_us + new_lead;
    return d;
  }
  d.allowed = false;
  d.remaining = static_cast<uint64_t>(std::max<int64_t>(0, (capacity - lead) / interval));
  d.reset = CeilMs(lead);
  d.retry_after = CeilMs(new_lead - capacity);
  return d;
}

inline Verdict Decide(const Rule& rule, LimiterState& state, int64_t now_ms, uint64_t cost, bool commit) {
  switch (rule.algorithm) {
    case Algorithm::kFixedWindow: return FixedWindow(rule, state, now_ms, cost, commit);
    case Algorithm::kSlidingWindow: return SlidingWindow(rule, state, now_ms, cost, commit);
    case Algorithm::kTokenBucket: return TokenBucket(rule, state, now_ms, cost, commit);
    case Algorithm::kSlidingLog: break;
  }
  Verdict d = Base(rule);  // a sliding-log rule needs a SlidingLog: refuse rather than guess
  d.allowed = false;
  return d;
}

bool IsIdle(Algorithm algorithm, int64_t window_ms, const LimiterState& state, int64_t now_ms);
bool IsIdle(const SlidingLog& log, int64_t window_ms, int64_t now_ms);

}  // namespace cachet::detail
