#include "cachet/rate_limiter.h"

#include "limiter_engine.h"

#include <algorithm>
#include <functional>
#include <set>

namespace cachet {

namespace {

using detail::kMaxRulesPerSet;

Result<void> ValidateRules(const std::vector<Rule>& rules, const std::string& owner) {
  if (rules.empty()) return MakeError(ErrorCode::kInvalidArgument, owner + " has no rules");
  if (rules.size() > kMaxRulesPerSet) {
    return MakeError(ErrorCode::kInvalidArgument, owner + " has " + std::to_string(rules.size()) + " rules; at most " +
                                                      std::to_string(kMaxRulesPerSet));
  }
  std::set<std::string> names;
  for (const Rule& r : rules) {
    if (auto ok = r.Validate(); !ok) return MakeError(ErrorCode::kInvalidArgument, owner + ": " + ok.error().message);
    if (!names.insert(r.name).second) {
      return MakeError(ErrorCode::kInvalidArgument, owner + ": rule '" + r.name + "' appears twice");
    }
  }
  return {};
}

}  // namespace

Result<void> RateLimitPolicy::Validate() const {
  std::set<std::string> names;
  for (const Tier& t : tiers) {
    if (t.name.empty()) return MakeError(ErrorCode::kInvalidArgument, "a tier needs a name");
    if (!names.insert(t.name).second) {
      return MakeError(ErrorCode::kInvalidArgument, "tier '" + t.name + "' appears twice");
    }
    if (auto ok = ValidateRules(t.rules, "tier '" + t.name + "'"); !ok) return ok;
  }
  for (const auto& [key, rules] : overrides) {
    if (auto ok = ValidateRules(rules, "override for key '" + key + "'"); !ok) return ok;
  }
  return {};
}

Result<void> RateLimitPolicy::Validate(const std::function<Result<void>(const Rule&)>& check) const {
  if (auto ok = Validate(); !ok) return ok;
  for (const Tier& t : tiers) {
    for (const Rule& r : t.rules) {
      if (auto ok = check(r); !ok) return ok;
    }
  }
  for (const auto& [key, rules] : overrides) {
    for (const Rule& r : rules) {
      if (auto ok = check(r); !ok) return ok;
    }
  }
  return {};
}

Result<RateLimitPolicy::Resolved> RateLimitPolicy::Resolve(std::string_view key, std::string_view tier) const {
  if (!overrides.empty()) {
    if (auto o = overrides.find(std::string(key)); o != overrides.end()) return Resolved{&o->second, "override"};
  }
  if (const Tier* t = FindTier(tier)) return Resolved{&t->rules, t->name};
  return MakeError(ErrorCode::kInvalidArgument, "unknown tier '" + std::string(tier) + "'");
}

const Tier* RateLimitPolicy::FindTier(std::string_view name) const {
  for (const Tier& t : tiers) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

class RateLimiter::Impl : public detail::LimiterEngine {
 public:
  using LimiterEngine::LimiterEngine;
};

RateLimiter::RateLimiter(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
RateLimiter::~RateLimiter() = default;

Result<std::unique_ptr<RateLimiter>> RateLimiter::Create(RateLimitPolicy policy, const Clock& clock) {
  return Create(std::move(policy), RateLimiterOptions{}, clock);
}

namespace {
Result<std::unique_ptr<RateLimiter::Impl>> MakeEngine(const RateLimitPolicy& policy,
                                                      Result<std::unique_ptr<CounterTable>> table, const Clock& clock) {
  if (!table) return tl::unexpected(table.error());
  auto impl = std::make_unique<RateLimiter::Impl>(std::move(*table), clock);
  impl->Install(policy);
  return impl;
}
}  // namespace

Result<std::unique_ptr<RateLimiter>> RateLimiter::Create(RateLimitPolicy policy, RateLimiterOptions options,
                                                         const Clock& clock) {
  if (auto ok = policy.Validate(); !ok) return tl::unexpected(ok.error());
  auto impl = MakeEngine(policy, CounterTable::CreatePrivate(options.capacity), clock);
  if (!impl) return tl::unexpected(impl.error());
  return std::unique_ptr<RateLimiter>(new RateLimiter(std::move(*impl)));
}

Result<std::unique_ptr<RateLimiter>> RateLimiter::Open(const std::string& segment, RateLimitPolicy policy,
                                                       RateLimiterOptions options, const Clock& clock) {
  if (auto ok = policy.Validate(); !ok) return tl::unexpected(ok.error());
  auto impl = MakeEngine(policy, CounterTable::Open(segment, options.capacity), clock);
  if (!impl) return tl::unexpected(impl.error());
  return std::unique_ptr<RateLimiter>(new RateLimiter(std::move(*impl)));
}

Result<Decision> RateLimiter::Check(std::string_view key, std::string_view tier, uint64_t cost) {
  return impl_->Check(key, tier, cost);
}

Result<void> RateLimiter::SetPolicy(RateLimitPolicy policy) {
  if (auto ok = policy.Validate(); !ok) return ok;
  impl_->Install(policy);
  return {};
}

size_t RateLimiter::ReclaimIdle(size_t max_slots) { return impl_->ReclaimIdle(max_slots); }

RateLimiterStats RateLimiter::Stats() const { return impl_->Stats(); }

}  // namespace cachet
