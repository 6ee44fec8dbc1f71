#include "cachet/rate_limit.h"

#include <algorithm>
#include <cctype>
#include <cmath>

namespace cachet {

namespace {

using std::chrono::milliseconds;

// Microseconds rounded up to whole milliseconds (a client told to wait must
// not come back early).
milliseconds CeilMs(int64_t us) { return milliseconds(us <= 0 ? 0 : (us + 999) / 1000); }

Decision Base(const Rule& rule) {
  Decision d;
  d.limit = rule.limit;
  d.window = rule.window;
  d.rule = rule.name;
  return d;
}

Decision FixedWindow(const Rule& rule, LimiterState& s, int64_t now, uint64_t cost, bool commit) {
  Decision d = Base(rule);
  const int64_t w = rule.window.count();
  const int64_t start = now - now % w;
  const uint64_t count = s.a == start ? static_cast<uint64_t>(s.b) : 0;
  d.reset = milliseconds(start + w - now);
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

Decision SlidingWindow(const Rule& rule, LimiterState& s, int64_t now, uint64_t cost, bool commit) {
  Decision d = Base(rule);
  const int64_t w = rule.window.count();
  const int64_t start = now - now % w;
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
    d.reset = milliseconds(w - elapsed + w);
    if (commit) s = LimiterState{start, static_cast<int64_t>(curr + cost), static_cast<int64_t>(prev)};
    return d;
  }
  d.allowed = false;
  d.remaining = estimate >= limit ? 0 : static_cast<uint64_t>(std::floor(limit - estimate));
  d.reset = milliseconds(w - elapsed + (curr > 0 ? w : 0));
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
  d.retry_after = milliseconds(std::max<int64_t>(1, static_cast<int64_t>(std::ceil(wait))));
  return d;
}

// GCRA: a theoretical arrival time (TAT) per key, in microseconds. Each unit
// of cost moves it one emission interval T = window / limit later; a request
// is admitted while TAT stays within burst * T of now.
Decision TokenBucket(const Rule& rule, LimiterState& s, int64_t now, uint64_t cost, bool commit) {
  Decision d = Base(rule);
  const uint64_t burst = rule.burst != 0 ? rule.burst : rule.limit;
  d.limit = burst;
  const int64_t now_us = now * 1000;
  const int64_t interval = std::max<int64_t>(1, rule.window.count() * 1000 / static_cast<int64_t>(rule.limit));
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

void Expire(const Rule& rule, SlidingLog& log, int64_t now) {
  const int64_t w = rule.window.count();
  while (!log.entries.empty() && log.entries.front().at_ms + w <= now) {
    log.total -= log.entries.front().cost;
    log.entries.pop_front();
  }
}

}  // namespace

const char* AlgorithmName(Algorithm algorithm) {
  switch (algorithm) {
    case Algorithm::kFixedWindow: return "fixed_window";
    case Algorithm::kSlidingLog: return "sliding_log";
    case Algorithm::kSlidingWindow: return "sliding_window";
    case Algorithm::kTokenBucket: return "token_bucket";
  }
  return "unknown";
}

Result<Algorithm> ParseAlgorithm(std::string_view name) {
  std::string n(name);
  std::transform(n.begin(), n.end(), n.begin(), [](unsigned char c) { return c == '-' ? '_' : std::tolower(c); });
  if (n == "fixed_window") return Algorithm::kFixedWindow;
  if (n == "sliding_log") return Algorithm::kSlidingLog;
  if (n == "sliding_window") return Algorithm::kSlidingWindow;
  if (n == "token_bucket" || n == "gcra") return Algorithm::kTokenBucket;
  return MakeError(ErrorCode::kInvalidArgument,
                   "unknown algorithm '" + std::string(name) +
                       "'; expected fixed_window, sliding_log, sliding_window or token_bucket");
}

Result<void> Rule::Validate() const {
  const std::string who = "rule '" + name + "': ";
  if (name.empty()) return MakeError(ErrorCode::kInvalidArgument, "a rule needs a name");
  if (limit == 0) return MakeError(ErrorCode::kInvalidArgument, who + "limit must be at least 1");
  if (limit > (1ull << 40)) return MakeError(ErrorCode::kInvalidArgument, who + "limit must be at most 2^40");
  if (window.count() <= 0) return MakeError(ErrorCode::kInvalidArgument, who + "window must be positive");
  if (window > std::chrono::hours(24 * 366)) {
    return MakeError(ErrorCode::kInvalidArgument, who + "window must be at most a year");
  }
  if (algorithm != Algorithm::kFixedWindow && algorithm != Algorithm::kSlidingLog &&
      algorithm != Algorithm::kSlidingWindow && algorithm != Algorithm::kTokenBucket) {
    return MakeError(ErrorCode::kInvalidArgument, who + "unknown algorithm");
  }
  if (burst != 0 && algorithm != Algorithm::kTokenBucket) {
    return MakeError(ErrorCode::kInvalidArgument, who + "burst applies only to token_bucket");
  }
  if (algorithm == Algorithm::kSlidingLog && limit > 1'000'000) {
    return MakeError(ErrorCode::kInvalidArgument,
                     who + "sliding_log keeps one entry per request; use sliding_window above 1,000,000 per window");
  }
  return {};
}

bool Rule::SameCounting(const Rule& o) const {
  return algorithm == o.algorithm && limit == o.limit && window == o.window && burst == o.burst;
}

Decision Evaluate(const Rule& rule, LimiterState& state, int64_t now_ms, uint64_t cost, bool commit) {
  switch (rule.algorithm) {
    case Algorithm::kFixedWindow: return FixedWindow(rule, state, now_ms, cost, commit);
    case Algorithm::kSlidingWindow: return SlidingWindow(rule, state, now_ms, cost, commit);
    case Algorithm::kTokenBucket: return TokenBucket(rule, state, now_ms, cost, commit);
    case Algorithm::kSlidingLog: break;
  }
  Decision d = Base(rule);  // a sliding-log rule needs a SlidingLog: refuse rather than guess
  d.allowed = false;
  return d;
}

Decision Evaluate(const Rule& rule, SlidingLog& log, int64_t now_ms, uint64_t cost, bool commit) {
  Decision d = Base(rule);
  const int64_t w = rule.window.count();
  Expire(rule, log, now_ms);
  if (cost <= rule.limit && log.total <= rule.limit - cost) {
    if (commit) {
      log.entries.push_back({now_ms, cost});
      log.total += cost;
    }
    d.remaining = rule.limit - log.total - (commit ? 0 : cost);
    d.reset = milliseconds(log.entries.empty() ? w : log.entries.front().at_ms + w - now_ms);
    return d;
  }
  d.allowed = false;
  d.remaining = rule.limit - std::min(log.total, rule.limit);
  d.reset = milliseconds(log.entries.empty() ? 0 : log.entries.back().at_ms + w - now_ms);
  if (cost > rule.limit) {
    d.retry_after = rule.window;
    return d;
  }
  // The oldest entries leave first: wait for enough of them.
  uint64_t freed = 0;
  for (const SlidingLog::Entry& e : log.entries) {
    freed += e.cost;
    if (log.total - freed + cost <= rule.limit) {
      d.retry_after = milliseconds(e.at_ms + w - now_ms);
      break;
    }
  }
  return d;
}

bool Idle(const Rule& rule, const LimiterState& state, int64_t now_ms) {
  const int64_t w = rule.window.count();
  switch (rule.algorithm) {
    case Algorithm::kFixedWindow: return state.a + w <= now_ms;
    case Algorithm::kSlidingWindow: return state.a + 2 * w <= now_ms;
    case Algorithm::kTokenBucket: return state.a <= now_ms * 1000;
    case Algorithm::kSlidingLog: return true;
  }
  return true;
}

bool Idle(const Rule& rule, const SlidingLog& log, int64_t now_ms) {
  return log.entries.empty() || log.entries.back().at_ms + rule.window.count() <= now_ms;
}

}  // namespace cachet
