// DecisionCombiner: one request's decision from its rules' decisions, the
// same for every store. Denied if any enforced rule denies, reporting the
// denying rule that asks for the longest wait; else allowed, reporting the
// rule with the least left. Shadow rules only set shadow_denied.
#pragma once

#include "cachet/rate_limit.h"

namespace cachet::detail {

class DecisionCombiner {
 public:
  void Add(const Decision& d, bool shadow) {
    if (shadow) {
      shadow_denied_ |= !d.allowed;
      return;
    }
    if (!d.allowed) {
      if (allowed_ || d.retry_after > tightest_.retry_after) tightest_ = d;
      allowed_ = false;
    } else if (allowed_ && (!have_ || d.remaining < tightest_.remaining)) {
      tightest_ = d;
    }
    have_ = true;
  }

  bool allowed() const { return allowed_; }
  bool shadow_denied() const { return shadow_denied_; }
  bool any_enforced() const { return have_; }  // false when every rule is a shadow rule
  Decision& tightest() { return tightest_; }

 private:
  Decision tightest_;
  bool allowed_ = true;
  bool shadow_denied_ = false;
  bool have_ = false;
};

}  // namespace cachet::detail
