// TierResolver: which tier an API key belongs to.
//
//   cachet::TierResolver tiers("anonymous");       // the tier of unknown keys
//   tiers.Set(policy_file);                        // the file's [keys]; again on each new policy
//   limiter->Check("key:" + api_key, tiers.TierOf(api_key));
//
// Keys listed in the policy file's [keys] section come first; for the
// others, an optional callback of the application's (keys kept in a
// database, say) answers; a key neither knows gets the fallback tier.
//
// Thread safety: every method may be called from any thread; Set may run
// on a PolicySubscriber's thread while requests call TierOf.
#pragma once

#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

#include "cachet/policy_file.h"

namespace cachet {

class TierResolver {
 public:
  // The application's own lookup: the tier of `api_key`, or nullopt.
  using Lookup = std::function<std::optional<std::string>(std::string_view api_key)>;

  explicit TierResolver(std::string fallback_tier, Lookup lookup = nullptr);

  // Takes the API keys of a (new) policy file; the previous ones go.
  void Set(const PolicyFile& file);
  // The policy file's tier for the key, else the callback's, else the fallback.
  std::string TierOf(std::string_view api_key) const;
  // True when the file or the callback knows the key.
  bool Knows(std::string_view api_key) const;

 private:
  std::optional<std::string> Find(std::string_view api_key) const;

  const std::string fallback_;
  const Lookup lookup_;
  mutable std::mutex mu_;
  std::shared_ptr<const std::unordered_map<std::string, std::string>> keys_;  // guarded by mu_
};

}  // namespace cachet
