#include "cachet/rate_limit.h"

#include "decide.h"

#include <algorithm>
#include <cctype>
#include <cmath>

namespace cachet {

namespace {

using std::chrono::milliseconds;

using detail::Base;
using detail::Verdict;

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
  if (burst != 0) {
    // The bucket is kept as microseconds of lead over now: keep it far
    // inside 64 bits (2^60 us is some 36,000 years).
    const int64_t interval = detail::GcraInterval(window, limit);
    if (burst > static_cast<uint64_t>((int64_t{1} << 60) / interval)) {
      return MakeError(ErrorCode::kInvalidArgument, who + "burst " + std::to_string(burst) + " is too large for " +
                                                        std::to_string(limit) + " per window; at most " +
                                                        std::to_string((int64_t{1} << 60) / interval));
    }
  }
  if (algorithm == Algorithm::kSlidingWindow && limit > 0xffffffffull) {
    return MakeError(ErrorCode::kInvalidArgument,
                     who + "sliding_window counts at most 2^32-1 per window; use fixed_window or token_bucket");
  }
  if (algorithm == Algorithm::kSlidingLog && limit > 1'000'000) {
    return MakeError(ErrorCode::kInvalidArgument,
                     who + "sliding_log keeps one entry per request; use sliding_window above 1,000,000 per window");
  }
  return {};
}

namespace detail {

Verdict Decide(const Rule& rule, SlidingLog& log, int64_t now_ms, uint64_t cost, bool commit) {
  Verdict d = Base(rule);
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

bool IsIdle(Algorithm algorithm, int64_t window_ms, const LimiterState& state, int64_t now_ms) {
  switch (algorithm) {
    case Algorithm::kFixedWindow: return state.a + window_ms <= now_ms;
    case Algorithm::kSlidingWindow: return state.a + 2 * window_ms <= now_ms;
    case Algorithm::kTokenBucket: return state.a <= now_ms * 1000;
    case Algorithm::kSlidingLog: return true;
  }
  return true;
}

}  // namespace detail

Decision detail::Verdict::ToDecision(const std::string& rule) const {
  return Decision{allowed, limit, window, remaining, reset, retry_after, rule, shadow_denied};
}

Decision Evaluate(const Rule& rule, LimiterState& state, int64_t now_ms, uint64_t cost, bool commit) {
  return detail::Decide(rule, state, now_ms, cost, commit).ToDecision(rule.name);
}

Decision Evaluate(const Rule& rule, SlidingLog& log, int64_t now_ms, uint64_t cost, bool commit) {
  return detail::Decide(rule, log, now_ms, cost, commit).ToDecision(rule.name);
}

bool Idle(const Rule& rule, const LimiterState& state, int64_t now_ms) {
  return detail::IsIdle(rule.algorithm, rule.window.count(), state, now_ms);
}

bool detail::IsIdle(const SlidingLog& log, int64_t window_ms, int64_t now_ms) {
  return log.entries.empty() || log.entries.back().at_ms + window_ms <= now_ms;
}

bool Idle(const Rule& rule, const SlidingLog& log, int64_t now_ms) {
  return detail::IsIdle(log, rule.window.count(), now_ms);
}

}  // namespace cachet
