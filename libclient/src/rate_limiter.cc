#include "cachet/rate_limiter.h"

#include "decision_combiner.h"

#include <algorithm>
#include <atomic>
#include <functional>
#include <mutex>
#include <set>

namespace cachet {

namespace {

constexpr size_t kStripes = 64;
constexpr size_t kMaxRulesPerSet = 16;

// Hash and equality that look strings up by string_view, without a copy.
struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
template <typename V>
using StringMap = std::unordered_map<std::string, V, StringHash, std::equal_to<>>;

// A rule with a numeric id that names "tier/rule" (or "override/rule") the
// same way in every policy this limiter has had, so counters follow by id.
struct CompiledRule {
  Rule rule;
  uint32_t id;
};
using RuleSet = std::vector<CompiledRule>;

struct CompiledPolicy {
  std::vector<std::pair<std::string, RuleSet>> tiers;  // few: a linear search beats hashing
  StringMap<RuleSet> overrides;
};

// One rule's counter for one key. `rule` points into the policy it last
// counted with; when a new policy counts differently, the counter restarts.
struct Counter {
  uint32_t id;
  const Rule* rule;
  LimiterState state;
  std::unique_ptr<SlidingLog> log;  // sliding_log only
};

struct KeyCounters {
  std::vector<Counter> counters;
};

Decision Apply(Counter& c, int64_t now, uint64_t cost, bool commit) {
  if (c.rule->algorithm == Algorithm::kSlidingLog) {
    if (!c.log) c.log = std::make_unique<SlidingLog>();
    return Evaluate(*c.rule, *c.log, now, cost, commit);
  }
  return Evaluate(*c.rule, c.state, now, cost, commit);
}

bool CounterIdle(const Counter& c, int64_t now) {
  return c.rule->algorithm == Algorithm::kSlidingLog ? (!c.log || Idle(*c.rule, *c.log, now))
                                                     : Idle(*c.rule, c.state, now);
}

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

class RateLimiter::Impl {
 public:
  Impl(const RateLimitPolicy& policy, const Clock& clock) : clock_(clock) { Install(policy); }

  Result<Decision> Check(std::string_view key, std::string_view tier_name, uint64_t cost) {
    if (cost == 0) return MakeError(ErrorCode::kInvalidArgument, "cost must be at least 1");
    const CompiledPolicy* policy = current_.load(std::memory_order_acquire);
    const RuleSet* rules = nullptr;
    if (!policy->overrides.empty()) {
      if (auto o = policy->overrides.find(key); o != policy->overrides.end()) rules = &o->second;
    }
    for (size_t i = 0; rules == nullptr && i < policy->tiers.size(); ++i) {
      if (policy->tiers[i].first == tier_name) rules = &policy->tiers[i].second;
    }
    if (rules == nullptr)
      return MakeError(ErrorCode::kInvalidArgument, "unknown tier '" + std::string(tier_name) + "'");

    const int64_t now = clock_.NowMs();
    Stripe& stripe = StripeFor(key);
    std::lock_guard<std::mutex> lock(stripe.mu);
    auto it = stripe.keys.find(key);
    if (it == stripe.keys.end()) it = stripe.keys.emplace(std::string(key), KeyCounters{}).first;
    KeyCounters& kc = it->second;
    // Make every counter first: adding one may move the others.
    for (const CompiledRule& r : *rules) (void)CounterFor(kc, r);
    Counter* counters[kMaxRulesPerSet];
    const size_t n = rules->size();
    for (size_t i = 0; i < n; ++i) counters[i] = &CounterFor(kc, (*rules)[i]);

    // All rules are checked before any counts, so a denied request consumes nothing.
    detail::DecisionCombiner combined;
    for (size_t i = 0; i < n; ++i)
      combined.Add(Apply(*counters[i], now, cost, /*commit=*/false), counters[i]->rule->shadow);
    const bool allowed = combined.allowed();
    const bool shadow_denied = combined.shadow_denied();
    Decision& tightest = combined.tightest();
    if (allowed) {
      for (size_t i = 0; i < n; ++i)
        (void)Apply(*counters[i], now, cost, /*commit=*/true);  // a denying shadow rule stays
    }
    if (!combined.any_enforced()) {  // only shadow rules: report the first, never deny
      tightest = Apply(*counters[0], now, cost, false);
      tightest.allowed = true;
      tightest.retry_after = std::chrono::milliseconds(0);
    }
    tightest.shadow_denied = shadow_denied;
    (allowed ? allowed_ : denied_).fetch_add(1, std::memory_order_relaxed);
    if (shadow_denied) shadow_denied_.fetch_add(1, std::memory_order_relaxed);
    return tightest;
  }

  Result<void> SetPolicy(const RateLimitPolicy& policy) {
    if (auto ok = policy.Validate(); !ok) return ok;
    Install(policy);
    return {};
  }

  size_t ReclaimIdle(size_t max_keys) {
    const int64_t now = clock_.NowMs();
    size_t dropped = 0;
    size_t scanned = 0;
    for (size_t n = 0; n < kStripes && scanned < max_keys; ++n) {
      Stripe& stripe = stripes_[reclaim_cursor_.fetch_add(1, std::memory_order_relaxed) % kStripes];
      std::lock_guard<std::mutex> lock(stripe.mu);
      for (auto it = stripe.keys.begin(); it != stripe.keys.end() && scanned < max_keys; ++scanned) {
        const auto& counters = it->second.counters;
        const bool idle =
            std::all_of(counters.begin(), counters.end(), [&](const Counter& c) { return CounterIdle(c, now); });
        if (idle) {
          it = stripe.keys.erase(it);
          ++dropped;
        } else {
          ++it;
        }
      }
    }
    return dropped;
  }

  RateLimiterStats Stats() const {
    RateLimiterStats s;
    s.allowed = allowed_.load(std::memory_order_relaxed);
    s.denied = denied_.load(std::memory_order_relaxed);
    s.shadow_denied = shadow_denied_.load(std::memory_order_relaxed);
    for (const Stripe& stripe : stripes_) {
      std::lock_guard<std::mutex> lock(stripe.mu);
      s.keys += stripe.keys.size();
    }
    return s;
  }

 private:
  struct alignas(64) Stripe {
    mutable std::mutex mu;
    StringMap<KeyCounters> keys;  // guarded by mu
  };

  // Compiles and publishes a validated policy. Earlier policies stay alive
  // until the limiter goes: a check in flight, or a counter, may point into
  // one (policies change rarely; each is small).
  void Install(const RateLimitPolicy& policy) {
    std::lock_guard<std::mutex> lock(install_mu_);
    auto compiled = std::make_unique<CompiledPolicy>();
    auto compile = [&](const std::string& owner, const std::vector<Rule>& rules) {
      RuleSet set;
      for (const Rule& r : rules) set.push_back({r, Intern(owner + "/" + r.name)});
      return set;
    };
    for (const Tier& t : policy.tiers) compiled->tiers.emplace_back(t.name, compile(t.name, t.rules));
    for (const auto& [key, rules] : policy.overrides) compiled->overrides.emplace(key, compile("override", rules));
    current_.store(compiled.get(), std::memory_order_release);
    policies_.push_back(std::move(compiled));
  }

  // REQUIRES: install_mu_ held.
  uint32_t Intern(const std::string& name) {
    auto [it, inserted] = ids_.emplace(name, static_cast<uint32_t>(ids_.size()));
    return it->second;
  }

  Stripe& StripeFor(std::string_view key) { return stripes_[StringHash{}(key) % kStripes]; }

  // REQUIRES: the key's stripe is locked.
  static Counter& CounterFor(KeyCounters& kc, const CompiledRule& r) {
    for (Counter& c : kc.counters) {
      if (c.id != r.id) continue;
      if (c.rule != &r.rule) {  // a newer policy: keep the count only if it counts the same way
        if (!c.rule->SameCounting(r.rule)) {
          c.state = LimiterState{};
          c.log.reset();
        }
        c.rule = &r.rule;
      }
      return c;
    }
    kc.counters.push_back(Counter{r.id, &r.rule, LimiterState{}, nullptr});
    return kc.counters.back();
  }

  const Clock& clock_;
  std::mutex install_mu_;
  std::vector<std::unique_ptr<CompiledPolicy>> policies_;  // guarded by install_mu_
  std::unordered_map<std::string, uint32_t> ids_;          // guarded by install_mu_
  std::atomic<const CompiledPolicy*> current_{nullptr};
  Stripe stripes_[kStripes];
  std::atomic<uint64_t> allowed_{0}, denied_{0}, shadow_denied_{0};
  std::atomic<size_t> reclaim_cursor_{0};
};

RateLimiter::RateLimiter(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
RateLimiter::~RateLimiter() = default;

Result<std::unique_ptr<RateLimiter>> RateLimiter::Create(RateLimitPolicy policy, const Clock& clock) {
  if (auto ok = policy.Validate(); !ok) return tl::unexpected(ok.error());
  return std::unique_ptr<RateLimiter>(new RateLimiter(std::make_unique<Impl>(policy, clock)));
}

Result<Decision> RateLimiter::Check(std::string_view key, std::string_view tier, uint64_t cost) {
  return impl_->Check(key, tier, cost);
}

Result<void> RateLimiter::SetPolicy(RateLimitPolicy policy) { return impl_->SetPolicy(policy); }

size_t RateLimiter::ReclaimIdle(size_t max_keys) { return impl_->ReclaimIdle(max_keys); }

RateLimiterStats RateLimiter::Stats() const { return impl_->Stats(); }

}  // namespace cachet
