#include "cachet/shm_rate_limiter.h"

#include "cachet/counter_table.h"
#include "limiter_engine.h"

namespace cachet {

namespace {

Result<void> CheckPolicy(const RateLimitPolicy& policy) {
  return policy.Validate([](const Rule& r) -> Result<void> {
    if (r.algorithm == Algorithm::kSlidingLog) {
      return MakeError(ErrorCode::kInvalidArgument,
                       "rule '" + r.name + "': the shared-memory store does not keep sliding logs; use sliding_window");
    }
    return {};
  });
}

}  // namespace

class ShmRateLimiter::Impl : public detail::LimiterEngine {
 public:
  using LimiterEngine::LimiterEngine;
};

ShmRateLimiter::ShmRateLimiter(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
ShmRateLimiter::~ShmRateLimiter() = default;

Result<std::unique_ptr<ShmRateLimiter>> ShmRateLimiter::Open(const std::string& name, RateLimitPolicy policy,
                                                             uint64_t capacity, const Clock& clock) {
  if (auto ok = CheckPolicy(policy); !ok) return tl::unexpected(ok.error());
  auto table = CounterTable::Open(name, capacity);
  if (!table) return tl::unexpected(table.error());
  auto impl = std::make_unique<Impl>(std::move(*table), clock);
  impl->Install(policy);
  return std::unique_ptr<ShmRateLimiter>(new ShmRateLimiter(std::move(impl)));
}

Result<void> ShmRateLimiter::Remove(const std::string& name) { return CounterTable::Remove(name); }

Result<Decision> ShmRateLimiter::Check(std::string_view key, std::string_view tier, uint64_t cost) {
  return impl_->Check(key, tier, cost);
}

Result<void> ShmRateLimiter::SetPolicy(RateLimitPolicy policy) {
  if (auto ok = CheckPolicy(policy); !ok) return ok;
  impl_->Install(policy);
  return {};
}

size_t ShmRateLimiter::ReclaimIdle(size_t max_slots) { return impl_->ReclaimIdle(max_slots); }

RateLimiterStats ShmRateLimiter::Stats() const { return impl_->Stats(); }

}  // namespace cachet
