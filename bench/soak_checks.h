// The models cachet-soak checks cachetd's replies against (bench/soak.cc).
//
// Times are microseconds on the soak's steady clock. An operation is known
// only to have taken effect somewhere in [t0, t1], its start and the arrival
// of its reply, so every deadline is an interval and a check allows
// `margin` on either side (the daemon's own clock, millisecond TTLs).
//
// Each model belongs to one thread and is not shared, but for
// SharedWindowLedger, which every thread uses under its mutex.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <limits>
#include <mutex>
#include <string>
#include <vector>

#include "cachet/decision.h"

namespace cachet::bench {

inline constexpr int64_t kNever = std::numeric_limits<int64_t>::max() / 4;

// When a key's TTL runs out: somewhere in [earliest, latest] (kNever: no TTL).
struct Deadline {
  int64_t earliest = kNever;
  int64_t latest = kNever;

  // A TTL of `ttl_ms` set by an operation that ran within [t0, t1]; 0: none.
  static Deadline After(int64_t t0, int64_t t1, int64_t ttl_ms) {
    if (ttl_ms == 0) return {};
    return {t0 + ttl_ms * 1000, t1 + ttl_ms * 1000};
  }
};

enum class Life { kAlive, kExpired, kEither };

// What an operation that ran within [t0, t1] may find of a key with `d`.
inline Life LifeAt(const Deadline& d, int64_t t0, int64_t t1, int64_t margin) {
  if (t1 + margin < d.earliest) return Life::kAlive;
  if (t0 - margin > d.latest) return Life::kExpired;
  return Life::kEither;
}

// What one key holds, as far as its owner knows. kUnknown follows an
// operation whose outcome was not seen (an error): the next operation on the
// key writes it afresh instead of checking it.
enum class Known : uint8_t { kAbsent, kPresent, kUnknown };

struct ValueModel {
  Known known = Known::kAbsent;
  uint32_t version = 0;  // the value is SoakValue(thread, key, version, size)
  uint32_t size = 0;
  int64_t ttl_ms = 0;
  int64_t set_at = 0;  // t1 of the SET, for messages
  Deadline deadline;
};

struct CounterModel {
  Known known = Known::kAbsent;
  int64_t value = 0;
  Deadline deadline;
};

// The value a thread writes: names its writer, so a value read back under
// the wrong key or version shows whose it was; `size` bytes in all.
void SoakValue(int thread, uint64_t key, uint32_t version, uint32_t size, std::string* out);

// The shape every RATELIMIT decision of the soak's tier must have: one
// fixed_window rule. Learned from the first decision; later ones must agree.
struct LimitShape {
  uint64_t limit = 0;
  std::chrono::milliseconds window{0};
  std::string rule;
};

// One fixed window of a limiter key, as the client places it: by its end,
// estimated as the middle of [t0, t1] plus the decision's `reset`.
struct LimitWindow {
  int64_t end = 0;
  uint64_t admitted = 0;
  std::vector<bool> remaining_seen;  // indexed by Decision::remaining
};

// The windows of one limiter key. Two decisions are in the same window when
// their estimated ends are less than half a window apart (an estimate is off
// by at most the request's round trip, which the caller keeps under a
// quarter window; real window ends are a whole window apart).
class WindowLedger {
 public:
  LimitWindow& At(int64_t end, int64_t window_us, uint64_t limit);
  // Forgets windows that ended before `before`.
  void Forget(int64_t before);

 private:
  std::deque<LimitWindow> windows_;
};

// Checks one decision against `shape`; empty if it fits, else what is wrong.
std::string CheckShape(const Decision& d, const LimitShape& shape);

// The rules a decision on a key only its thread uses must follow: the
// admissions of a window are 1, 2, .. limit, remaining = limit - admitted,
// and a denial comes only once the window's limit is used. Empty if it
// fits, else what is wrong.
std::string CheckOwnDecision(const Decision& d, LimitWindow& w);

// A key every thread uses: the threads' decisions arrive here in any order,
// so only what holds in any order is checked: a window admits at most the
// limit, each remaining value once, and a denial leaves nothing remaining.
class SharedWindowLedger {
 public:
  std::string Check(const Decision& d, int64_t end, int64_t window_us, uint64_t limit);

 private:
  std::mutex mu_;
  WindowLedger ledger_;  // guarded by mu_
};

}  // namespace cachet::bench
