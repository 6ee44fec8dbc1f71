// HTTP helpers for the rate limiter: the response headers of a Decision,
// and the client address to limit by.
//
// Headers follow the IETF httpapi rate-limit draft: the structured fields
//   RateLimit-Policy: "default";q=100;w=60
//   RateLimit: "default";r=37;t=42
// on every response, the older drafts' RateLimit-Limit, RateLimit-Remaining
// and RateLimit-Reset for clients that read those, and Retry-After on a 429.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "cachet/rate_limit.h"
#include "cachet/result.h"

namespace cachet {

inline constexpr int kHttpTooManyRequests = 429;

struct HttpHeader {
  std::string name;
  std::string value;
};

// `policy` names the policy in the structured fields (a token or string).
std::vector<HttpHeader> RateLimitHeaders(const Decision& decision, std::string_view policy = "default");

// Proxies whose X-Forwarded-For is believed, as CIDR blocks ("10.0.0.0/8",
// "::1/128", or a bare address).
class TrustedProxies {
 public:
  static Result<TrustedProxies> Parse(const std::vector<std::string>& cidrs);
  bool Contains(std::string_view address) const;

 private:
  struct Block {
    int family;  // AF_INET or AF_INET6
    std::array<uint8_t, 16> bytes;
    int prefix;
  };
  std::vector<Block> blocks_;
};

// The address to rate-limit: `peer` itself, unless `peer` is a trusted
// proxy; then the right-most X-Forwarded-For entry that is not a trusted
// proxy (entries left of it could be forged by the client). Returned in
// canonical text form (IPv4-mapped IPv6 as IPv4), so every spelling of an
// address counts as one key. INVALID_ARGUMENT if `peer` is not an address.
Result<std::string> ClientAddress(std::string_view peer, std::string_view x_forwarded_for,
                                  const TrustedProxies& trusted);

}  // namespace cachet
