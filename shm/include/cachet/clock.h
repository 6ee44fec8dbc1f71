// Clock: the one seam through which cachet code reads time.
//
// Expiry times are absolute wall-clock milliseconds since the Unix epoch, so
// that every process attached to a segment, and a daemon restarted on it,
// agrees on them. Tests inject FakeClock and move time with Advance(); no
// test sleeps for a TTL. Both clocks are safe to call from any thread.
#pragma once

#include <time.h>

#include <atomic>
#include <chrono>
#include <cstdint>

namespace cachet {

class Clock {
 public:
  virtual ~Clock() = default;
  // Milliseconds since the Unix epoch.
  virtual int64_t NowMs() const = 0;
};

class SystemClock final : public Clock {
 public:
  int64_t NowMs() const override {
    using namespace std::chrono;
    return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
  }
  // A process-wide instance, for callers that do not inject one.
  static SystemClock& Instance() {
    static SystemClock clock;
    return clock;
  }
};

// Wall-clock time as of the kernel's last tick (CLOCK_REALTIME_COARSE):
// a few nanoseconds to read where the precise clock takes tens, at the
// tick's resolution (1 to 4 ms on Linux). The rate limiters' default: a
// decision costs less than reading the precise clock, and a window edge
// that moves by a tick changes no limit.
class CoarseClock final : public Clock {
 public:
  int64_t NowMs() const override {
    timespec ts;
    clock_gettime(CLOCK_REALTIME_COARSE, &ts);
    return static_cast<int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1'000'000;
  }
  static CoarseClock& Instance() {
    static CoarseClock clock;
    return clock;
  }
};

class FakeClock final : public Clock {
 public:
  explicit FakeClock(int64_t start_ms = 1'700'000'000'000) : now_ms_(start_ms) {}
  int64_t NowMs() const override { return now_ms_.load(std::memory_order_relaxed); }
  void Advance(std::chrono::milliseconds d) { now_ms_.fetch_add(d.count(), std::memory_order_relaxed); }
  void Set(int64_t ms) { now_ms_.store(ms, std::memory_order_relaxed); }

 private:
  std::atomic<int64_t> now_ms_;
};

}  // namespace cachet
