#include "soak_checks.h"

#include <algorithm>
#include <cstdlib>

namespace cachet::bench {

void SoakValue(int thread, uint64_t key, uint32_t version, uint32_t size, std::string* out) {
  *out = "t" + std::to_string(thread) + "k" + std::to_string(key) + "v" + std::to_string(version) + ":";
  const size_t head = out->size();
  out->resize(std::max<size_t>(size, head));
  for (size_t i = head; i < out->size(); ++i) (*out)[i] = static_cast<char>('a' + (version + i) % 26);
}

LimitWindow& WindowLedger::At(int64_t end, int64_t window_us, uint64_t limit) {
  for (LimitWindow& w : windows_) {
    if (std::llabs(w.end - end) < window_us / 2) return w;
  }
  LimitWindow fresh;
  fresh.end = end;
  fresh.remaining_seen.assign(limit, false);
  windows_.push_back(std::move(fresh));
  return windows_.back();
}

void WindowLedger::Forget(int64_t before) {
  while (!windows_.empty() && windows_.front().end < before) windows_.pop_front();
}

std::string CheckShape(const Decision& d, const LimitShape& shape) {
  if (d.limit != shape.limit || d.window != shape.window || d.rule != shape.rule) {
    return "decided by rule '" + d.rule + "' " + std::to_string(d.limit) + "/" + std::to_string(d.window.count()) +
           "ms, not the tier's '" + shape.rule + "' " + std::to_string(shape.limit) + "/" +
           std::to_string(shape.window.count()) + "ms";
  }
  if (d.shadow_denied) return "shadow_denied set, but the tier has no shadow rule";
  // A fixed window resets at its end: within (0, window] of any decision.
  if (d.reset <= std::chrono::milliseconds(0) || d.reset > d.window) {
    return "reset " + std::to_string(d.reset.count()) + " ms is outside (0, window]";
  }
  if (d.allowed && d.remaining >= d.limit) {
    return "allowed with remaining " + std::to_string(d.remaining) + " of a limit of " + std::to_string(d.limit);
  }
  if (!d.allowed && (d.remaining != 0 || d.retry_after <= std::chrono::milliseconds(0))) {
    return "denied with remaining " + std::to_string(d.remaining) + " and retry_after " +
           std::to_string(d.retry_after.count()) + " ms (want 0 and > 0)";
  }
  return {};
}

std::string CheckOwnDecision(const Decision& d, LimitWindow& w) {
  if (!d.allowed) {
    if (w.admitted < d.limit) {
      return "denied after only " + std::to_string(w.admitted) + " of " + std::to_string(d.limit) +
             " admissions in its window";
    }
    return {};
  }
  ++w.admitted;
  if (w.admitted > d.limit) {
    return "admission " + std::to_string(w.admitted) + " in one window, over the limit of " + std::to_string(d.limit);
  }
  if (d.remaining != d.limit - w.admitted) {
    return "admission " + std::to_string(w.admitted) + " of its window left remaining " + std::to_string(d.remaining) +
           ", not " + std::to_string(d.limit - w.admitted);
  }
  return {};
}

std::string SharedWindowLedger::Check(const Decision& d, int64_t end, int64_t window_us, uint64_t limit) {
  std::lock_guard<std::mutex> lock(mu_);
  ledger_.Forget(end - 8 * window_us);
  if (!d.allowed) return {};  // CheckShape saw remaining == 0
  LimitWindow& w = ledger_.At(end, window_us, limit);
  ++w.admitted;
  if (w.admitted > limit) {
    return "admission " + std::to_string(w.admitted) + " in one window, over the limit of " + std::to_string(limit);
  }
  if (d.remaining < w.remaining_seen.size()) {
    if (w.remaining_seen[d.remaining]) {
      return "two admissions in one window left remaining " + std::to_string(d.remaining);
    }
    w.remaining_seen[d.remaining] = true;
  }
  return {};
}

}  // namespace cachet::bench
