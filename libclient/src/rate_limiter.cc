#include "cachet/rate_limiter.h"

#include <algorithm>
#include <atomic>
#include <functional>
#include <mutex>
#include <set>

namespace cachet {

namespace {

constexpr size_t kStripes = 64;

// One rule's counter for one key. `rule` is the rule it counted with: when
// the policy changes the rule's counting, the counter starts afresh.
struct Counter {
  std::string id;  // "tier/rule" or "override/rule"
  Rule rule;
  LimiterState state;
  std::unique_ptr<SlidingLog> log;  // sliding_log only
};

struct KeyCounters {
  std::vector<Counter> counters;
};

Decision Apply(Counter& c, int64_t now, uint64_t cost, bool commit) {
  if (c.rule.algorithm == Algorithm::kSlidingLog) {
    if (!c.log) c.log = std::make_unique<SlidingLog>();
    return Evaluate(c.rule, *c.log, now, cost, commit);
  }
  return Evaluate(c.rule, c.state, now, cost, commit);
}

bool CounterIdle(const Counter& c, int64_t now) {
  return c.rule.algorithm == Algorithm::kSlidingLog ? (!c.log || Idle(c.rule, *c.log, now))
                                                    : Idle(c.rule, c.state, now);
}

Result<void> ValidateRules(const std::vector<Rule>& rules, const std::string& owner) {
  if (rules.empty()) return MakeError(ErrorCode::kInvalidArgument, owner + " has no rules");
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

const Tier* RateLimitPolicy::FindTier(std::string_view name) const {
  for (const Tier& t : tiers) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

class RateLimiter::Impl {
 public:
  Impl(RateLimitPolicy policy, const Clock& clock)
      : clock_(clock), policy_(std::make_shared<const RateLimitPolicy>(std::move(policy))) {}

  Result<Decision> Check(std::string_view key, std::string_view tier_name, uint64_t cost) {
    if (cost == 0) return MakeError(ErrorCode::kInvalidArgument, "cost must be at least 1");
    const std::shared_ptr<const RateLimitPolicy> policy = Policy();
    const std::vector<Rule>* rules = nullptr;
    std::string prefix;
    if (auto o = policy->overrides.find(std::string(key)); o != policy->overrides.end()) {
      rules = &o->second;
      prefix = "override/";
    } else if (const Tier* tier = policy->FindTier(tier_name)) {
      rules = &tier->rules;
      prefix = tier->name + "/";
    } else {
      return MakeError(ErrorCode::kInvalidArgument, "unknown tier '" + std::string(tier_name) + "'");
    }

    const int64_t now = clock_.NowMs();
    Stripe& stripe = StripeFor(key);
    std::lock_guard<std::mutex> lock(stripe.mu);
    KeyCounters& kc = stripe.keys[std::string(key)];
    // Find or make every counter first: making one may move the others.
    for (const Rule& rule : *rules) (void)CounterFor(kc, prefix + rule.name, rule);
    std::vector<Counter*> counters;
    counters.reserve(rules->size());
    for (const Rule& rule : *rules) counters.push_back(&CounterFor(kc, prefix + rule.name, rule));

    // All rules are checked before any counts, so a denied request consumes nothing.
    bool allowed = true;
    bool shadow_denied = false;
    Decision tightest;
    bool have = false;
    for (Counter* c : counters) {
      const Decision d = Apply(*c, now, cost, /*commit=*/false);
      if (c->rule.shadow) {
        shadow_denied |= !d.allowed;
        continue;
      }
      if (!d.allowed) {
        if (allowed || d.retry_after > tightest.retry_after) tightest = d;
        allowed = false;
      } else if (allowed && (!have || d.remaining < tightest.remaining)) {
        tightest = d;
      }
      have = true;
    }
    if (allowed) {
      for (Counter* c : counters) (void)Apply(*c, now, cost, /*commit=*/true);  // a denying shadow rule stays as is
    }
    if (!have) {  // only shadow rules: report the first, never deny
      tightest = Apply(*counters.front(), now, cost, false);
      tightest.allowed = true;
      tightest.retry_after = std::chrono::milliseconds(0);
    }
    tightest.shadow_denied = shadow_denied;
    (allowed ? allowed_ : denied_).fetch_add(1, std::memory_order_relaxed);
    if (shadow_denied) shadow_denied_.fetch_add(1, std::memory_order_relaxed);
    return tightest;
  }

  Result<void> SetPolicy(RateLimitPolicy policy) {
    if (auto ok = policy.Validate(); !ok) return ok;
    std::lock_guard<std::mutex> lock(policy_mu_);
    policy_ = std::make_shared<const RateLimitPolicy>(std::move(policy));
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
    std::unordered_map<std::string, KeyCounters> keys;  // guarded by mu
  };

  std::shared_ptr<const RateLimitPolicy> Policy() const {
    std::lock_guard<std::mutex> lock(policy_mu_);
    return policy_;
  }

  Stripe& StripeFor(std::string_view key) { return stripes_[std::hash<std::string_view>{}(key) % kStripes]; }

  // REQUIRES: the key's stripe is locked.
  static Counter& CounterFor(KeyCounters& kc, const std::string& id, const Rule& rule) {
    for (Counter& c : kc.counters) {
      if (c.id != id) continue;
      if (!c.rule.SameCounting(rule)) {  // the policy changed how this rule counts
        c.state = LimiterState{};
        c.log.reset();
      }
      c.rule = rule;
      return c;
    }
    kc.counters.push_back(Counter{id, rule, LimiterState{}, nullptr});
    return kc.counters.back();
  }

  const Clock& clock_;
  mutable std::mutex policy_mu_;
  std::shared_ptr<const RateLimitPolicy> policy_;  // guarded by policy_mu_; the policy itself is immutable
  Stripe stripes_[kStripes];
  std::atomic<uint64_t> allowed_{0}, denied_{0}, shadow_denied_{0};
  std::atomic<size_t> reclaim_cursor_{0};
};

RateLimiter::RateLimiter(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
RateLimiter::~RateLimiter() = default;

Result<std::unique_ptr<RateLimiter>> RateLimiter::Create(RateLimitPolicy policy, const Clock& clock) {
  if (auto ok = policy.Validate(); !ok) return tl::unexpected(ok.error());
  return std::unique_ptr<RateLimiter>(new RateLimiter(std::make_unique<Impl>(std::move(policy), clock)));
}

Result<Decision> RateLimiter::Check(std::string_view key, std::string_view tier, uint64_t cost) {
  return impl_->Check(key, tier, cost);
}

Result<void> RateLimiter::SetPolicy(RateLimitPolicy policy) { return impl_->SetPolicy(std::move(policy)); }

size_t RateLimiter::ReclaimIdle(size_t max_keys) { return impl_->ReclaimIdle(max_keys); }

RateLimiterStats RateLimiter::Stats() const { return impl_->Stats(); }

}  // namespace cachet
