#include "cachet/shm_rate_limiter.h"

#include <algorithm>
#include <mutex>

#include "cachet/counter_table.h"
#include "decision_combiner.h"

namespace cachet {

namespace {

// A stable 64-bit id for (rule owner, rule name, key): FNV-1a, then mixed.
// Stable across processes and builds, unlike std::hash.
uint64_t CounterId(std::string_view owner, std::string_view rule, std::string_view key) {
  uint64_t h = 0xcbf29ce484222325ull;
  auto feed = [&](std::string_view s) {
    for (unsigned char c : s) h = (h ^ c) * 0x100000001b3ull;
    h = (h ^ 0xff) * 0x100000001b3ull;  // separator: ("ab","c") differs from ("a","bc")
  };
  feed(owner);
  feed(rule);
  feed(key);
  h ^= h >> 31;
  h *= 0x7fb5d329728ea185ull;
  h ^= h >> 27;
  return h == 0 ? 1 : h;
}

// LimiterState <-> 16 bytes. Sliding window keeps both counts in `hi`.
CounterTable::Value Pack(const Rule& rule, const LimiterState& s) {
  if (rule.algorithm == Algorithm::kSlidingWindow) {
    return {static_cast<uint64_t>(s.a), static_cast<uint64_t>(s.b) << 32 | static_cast<uint32_t>(s.c)};
  }
  return {static_cast<uint64_t>(s.a), static_cast<uint64_t>(s.b)};
}

LimiterState Unpack(const Rule& rule, const CounterTable::Value& v) {
  if (rule.algorithm == Algorithm::kSlidingWindow) {
    return {static_cast<int64_t>(v.lo), static_cast<int64_t>(v.hi >> 32), static_cast<int64_t>(v.hi & 0xffffffff)};
  }
  return {static_cast<int64_t>(v.lo), static_cast<int64_t>(v.hi), 0};
}

// Takes back an admitted request of `cost` (a later rule denied it).
void Uncount(const Rule& rule, LimiterState& s, int64_t now, uint64_t cost) {
  const int64_t w = rule.window.count();
  const auto c = static_cast<int64_t>(cost);
  switch (rule.algorithm) {
    case Algorithm::kFixedWindow:
    case Algorithm::kSlidingWindow:
      if (s.a == now - now % w) s.b = std::max<int64_t>(0, s.b - c);
      break;
    case Algorithm::kTokenBucket: s.a -= std::max<int64_t>(1, w * 1000 / static_cast<int64_t>(rule.limit)) * c; break;
    case Algorithm::kSlidingLog: break;
  }
}

Result<void> CheckPolicy(const RateLimitPolicy& policy) {
  return policy.Validate([](const Rule& r) -> Result<void> {
    if (r.algorithm == Algorithm::kSlidingLog) {
      return MakeError(ErrorCode::kInvalidArgument,
                       "rule '" + r.name + "': the shared-memory store does not keep sliding logs; use sliding_window");
    }
    if (r.algorithm == Algorithm::kSlidingWindow && r.limit > 0xffffffffull) {
      return MakeError(ErrorCode::kInvalidArgument,
                       "rule '" + r.name + "': sliding_window limits above 2^32-1 do not fit shared memory");
    }
    return {};
  });
}

}  // namespace

class ShmRateLimiter::Impl {
 public:
  Impl(std::unique_ptr<CounterTable> table, RateLimitPolicy policy, const Clock& clock)
      : table_(std::move(table)), policy_(std::make_shared<const RateLimitPolicy>(std::move(policy))), clock_(clock) {}

  Result<Decision> Check(std::string_view key, std::string_view tier_name, uint64_t cost) {
    if (cost == 0) return MakeError(ErrorCode::kInvalidArgument, "cost must be at least 1");
    std::shared_ptr<const RateLimitPolicy> policy;
    {
      std::lock_guard<std::mutex> lock(policy_mu_);
      policy = policy_;
    }
    auto resolved = policy->Resolve(key, tier_name);
    if (!resolved) return tl::unexpected(resolved.error());
    const std::vector<Rule>* rules = resolved->rules;
    const std::string_view owner = resolved->owner;
    const int64_t now = clock_.NowMs();
    const size_t n = rules->size();
    std::vector<uint64_t> ids(n);
    for (size_t i = 0; i < n; ++i) ids[i] = CounterId(owner, (*rules)[i].name, key);

    // Peek at every rule; a denied request touches nothing.
    detail::DecisionCombiner combined;
    for (size_t i = 0; i < n; ++i) {
      const Rule& rule = (*rules)[i];
      LimiterState s = Unpack(rule, table_->Load(ids[i]));
      combined.Add(Evaluate(rule, s, now, cost, false), rule.shadow);
    }
    bool allowed = combined.allowed();
    const bool shadow_denied = combined.shadow_denied();
    Decision tightest = combined.tightest();
    if (allowed) {
      // Commit rule by rule; a rule that a concurrent request filled in the
      // meantime denies, and the rules already counted give the cost back.
      for (size_t i = 0; i < n; ++i) {
        const Rule& rule = (*rules)[i];
        Decision committed;
        auto updated = table_->Update(ids[i], [&](const CounterTable::Value& v) -> std::optional<CounterTable::Value> {
          LimiterState s = Unpack(rule, v);
          committed = Evaluate(rule, s, now, cost, true);
          if (!committed.allowed) return std::nullopt;
          return Pack(rule, s);
        });
        if (!updated) return tl::unexpected(updated.error());
        if (committed.allowed || rule.shadow) {
          if (!rule.shadow && (committed.remaining < tightest.remaining || tightest.rule.empty())) tightest = committed;
          continue;
        }
        for (size_t j = 0; j < i; ++j) {
          const Rule& back = (*rules)[j];
          (void)table_->Update(ids[j], [&](const CounterTable::Value& v) -> std::optional<CounterTable::Value> {
            LimiterState s = Unpack(back, v);
            Uncount(back, s, now, cost);
            return Pack(back, s);
          });
        }
        tightest = committed;
        allowed = false;
        break;
      }
    }
    if (!combined.any_enforced()) {
      tightest.allowed = true;
      tightest.rule = (*rules)[0].name;
    }
    tightest.allowed = allowed;
    tightest.shadow_denied = shadow_denied;
    return tightest;
  }

  Result<void> SetPolicy(RateLimitPolicy policy) {
    if (auto ok = CheckPolicy(policy); !ok) return ok;
    std::lock_guard<std::mutex> lock(policy_mu_);
    policy_ = std::make_shared<const RateLimitPolicy>(std::move(policy));
    return {};
  }

 private:
  std::unique_ptr<CounterTable> table_;
  std::mutex policy_mu_;
  std::shared_ptr<const RateLimitPolicy> policy_;  // guarded by policy_mu_
  const Clock& clock_;
};

ShmRateLimiter::ShmRateLimiter(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
ShmRateLimiter::~ShmRateLimiter() = default;

Result<std::unique_ptr<ShmRateLimiter>> ShmRateLimiter::Open(const std::string& name, RateLimitPolicy policy,
                                                             uint64_t capacity, const Clock& clock) {
  if (auto ok = CheckPolicy(policy); !ok) return tl::unexpected(ok.error());
  auto table = CounterTable::Open(name, capacity);
  if (!table) return tl::unexpected(table.error());
  return std::unique_ptr<ShmRateLimiter>(
      new ShmRateLimiter(std::make_unique<Impl>(std::move(*table), std::move(policy), clock)));
}

Result<void> ShmRateLimiter::Remove(const std::string& name) { return CounterTable::Remove(name); }

Result<Decision> ShmRateLimiter::Check(std::string_view key, std::string_view tier, uint64_t cost) {
  return impl_->Check(key, tier, cost);
}

Result<void> ShmRateLimiter::SetPolicy(RateLimitPolicy policy) { return impl_->SetPolicy(std::move(policy)); }

}  // namespace cachet
