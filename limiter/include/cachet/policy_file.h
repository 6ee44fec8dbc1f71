// The rate-limit policy file: tiers, rules, per-key overrides and the API
// keys' tiers, in the INI style of cachetd's configuration.
//
//   [tier.regular]
//   per_minute = 100/1m sliding_window        # limit/window [algorithm] [burst=N] [shadow]
//   per_hour   = 1000/1h fixed_window
//
//   [tier.premium]
//   per_minute = 1000/1m token_bucket burst=200
//   trial      = 500/1m shadow                 # counted and reported, never denies
//
//   [override.key-3f9a]                        # rules for one key, replacing its tier's
//   per_minute = 5000/1m
//
//   [keys]                                     # API key -> tier, for the resolver
//   key-3f9a = premium
//
//   [peers]                                    # GossipRateLimiter's peers (their PUB endpoints)
//   web-1 = tcp://10.0.0.1:7400
//   web-2 = tcp://10.0.0.2:7400
//
// Windows take a unit: ms, s, m, h or d. The default algorithm is
// sliding_window. Errors name the source and line: "policy.ini:7: ...".
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "cachet/rate_limiter.h"
#include "cachet/result.h"

namespace cachet {

struct PolicyFile {
  RateLimitPolicy policy;
  std::unordered_map<std::string, std::string> key_tiers;  // API key -> tier name
  // The [peers] section's endpoints in file order; nullopt without one (a
  // limiter then keeps the peers it was given in code).
  std::optional<std::vector<std::string>> peers;

  // The tier of an API key, or `fallback` when the key is not listed.
  std::string TierOf(std::string_view api_key, std::string_view fallback) const;
};

// `source` names the text in error messages (a file name).
Result<PolicyFile> ParsePolicy(std::string_view text, std::string_view source = "policy");
Result<PolicyFile> LoadPolicyFile(const std::string& path);

}  // namespace cachet
