// DecisionCombiner: one request's decision from its rules' decisions, the
// same for every store. Denied if any enforced rule denies, reporting the
// denying rule that asks for the longest wait; else allowed, reporting the
// rule with the least left. Shadow rules only set shadow_denied.
#pragma once

#include <cstddef>

#include "decide.h"

namespace cachet::detail {

class DecisionCombiner {
 public:
  // `index` names the rule to the caller (its position in the rule set).
  void Add(const Verdict& d, bool shadow, size_t index = 0) {
    if (shadow) {
      shadow_denied_ |= !d.allowed;
      return;
    }
    if (!d.allowed) {
      if (allowed_ || d.retry_after > tightest_.retry_after) Take(d, index);
      allowed_ = false;
    } else if (allowed_ && (!have_ || d.remaining < tightest_.remaining)) {
      Take(d, index);
    }
    have_ = true;
  }

  bool allowed() const { return allowed_; }
  bool shadow_denied() const { return shadow_denied_; }
  bool any_enforced() const { return have_; }  // false when every rule is a shadow rule
  Verdict& tightest() { return tightest_; }
  size_t tightest_index() const { return index_; }

 private:
  void Take(const Verdict& d, size_t index) {
    tightest_ = d;
    index_ = index;
  }

  Verdict tightest_;
  size_t index_ = 0;
  bool allowed_ = true;
  bool shadow_denied_ = false;
  bool have_ = false;
};

}  // namespace cachet::detail
