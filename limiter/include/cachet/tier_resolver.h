// TierResolver: who a request counts as, and in which tier.
//
//   cachet::TierResolver tiers("anonymous");       // the tier of unknown clients
//   tiers.Set(policy_file);                        // the file's [keys]; again on each new policy
//   auto who = tiers.Identify(api_key, client_address);
//   limiter->Check(who.key, who.tier);
//
// Identify is the safe way to limit: a known API key counts under its own
// name (so [override.<key>] sections apply to it) in its tier, and any other
// request, with an invented key or none, counts under its client address in
// the fallback tier. Counting unknown keys under their own names would hand
// every invented key a fresh allowance.
//
// Keys listed in the policy file's [keys] section come first; for the
// others, an optional callback of the application's (keys kept in a
// database, say) answers; a key neither knows is unknown.
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

// What to count a request as: `key` for the limiter's Check, and its tier.
struct Identity {
  std::string key;   // the API key when known, else "ip:" + the client address
  std::string tier;  // the key's tier, or the fallback tier
  bool known_key = false;
};

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
  // The identity to count a request as: a known `api_key` (may be empty),
  // else `client_address` in the fallback tier. REQUIRES: client_address
  // is the address to limit, in one canonical spelling (ClientAddress in
  // cachet/http.h gives it), never empty.
  Identity Identify(std::string_view api_key, std::string_view client_address) const;

 private:
  std::optional<std::string> Find(std::string_view api_key) const;

  const std::string fallback_;
  const Lookup lookup_;
  mutable std::mutex mu_;
  std::shared_ptr<const std::unordered_map<std::string, std::string>> keys_;  // guarded by mu_
};

}  // namespace cachet
