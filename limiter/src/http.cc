#include "cachet/http.h"

#include <arpa/inet.h>

#include <cstring>
#include <optional>

namespace cachet {

namespace {

int64_t CeilSeconds(std::chrono::milliseconds ms) { return ms.count() <= 0 ? 0 : (ms.count() + 999) / 1000; }

struct Address {
  int family = 0;
  std::array<uint8_t, 16> bytes{};
};

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// Parses an IPv4 or IPv6 address (IPv6 may be in brackets); an IPv4-mapped
// IPv6 address becomes IPv4.
std::optional<Address> ParseAddress(std::string_view text) {
  text = Trim(text);
  if (text.size() >= 2 && text.front() == '[' && text.back() == ']') text = text.substr(1, text.size() - 2);
  if (text.empty() || text.size() >= INET6_ADDRSTRLEN) return std::nullopt;
  const std::string s(text);
  Address a;
  if (inet_pton(AF_INET, s.c_str(), a.bytes.data()) == 1) {
    a.family = AF_INET;
    return a;
  }
  if (inet_pton(AF_INET6, s.c_str(), a.bytes.data()) == 1) {
    static const uint8_t kMapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (std::memcmp(a.bytes.data(), kMapped, 12) == 0) {
      std::memmove(a.bytes.data(), a.bytes.data() + 12, 4);
      a.family = AF_INET;
      return a;
    }
    a.family = AF_INET6;
    return a;
  }
  return std::nullopt;
}

std::string Format(const Address& a) {
  char buf[INET6_ADDRSTRLEN];
  inet_ntop(a.family, a.bytes.data(), buf, sizeof buf);
  return buf;
}

}  // namespace

std::vector<HttpHeader> RateLimitHeaders(const Decision& d, std::string_view policy) {
  const std::string name = "\"" + std::string(policy) + "\"";
  const std::string reset = std::to_string(CeilSeconds(d.reset));
  std::vector<HttpHeader> h = {
      {"RateLimit-Policy", name + ";q=" + std::to_string(d.limit) + ";w=" + std::to_string(CeilSeconds(d.window))},
      {"RateLimit", name + ";r=" + std::to_string(d.remaining) + ";t=" + reset},
      {"RateLimit-Limit", std::to_string(d.limit)},
      {"RateLimit-Remaining", std::to_string(d.remaining)},
      {"RateLimit-Reset", reset},
  };
  if (!d.allowed) h.push_back({"Retry-After", std::to_string(std::max<int64_t>(1, CeilSeconds(d.retry_after)))});
  return h;
}

Result<TrustedProxies> TrustedProxies::Parse(const std::vector<std::string>& cidrs) {
  TrustedProxies t;
  for (const std::string& cidr : cidrs) {
    const size_t slash = cidr.find('/');
    auto address = ParseAddress(std::string_view(cidr).substr(0, slash));
    if (!address) return MakeError(ErrorCode::kInvalidArgument, "trusted proxy '" + cidr + "' is not an address");
    const int max = address->family == AF_INET ? 32 : 128;
    int prefix = max;
    if (slash != std::string::npos) {
      const std::string bits = cidr.substr(slash + 1);
      if (bits.empty() || bits.size() > 3 || bits.find_first_not_of("0123456789") != std::string::npos ||
          std::stoi(bits) > max) {
        return MakeError(ErrorCode::kInvalidArgument,
                         "trusted proxy '" + cidr + "': prefix must be 0 to " + std::to_string(max));
      }
      prefix = std::stoi(bits);
    }
    t.blocks_.push_back({address->family, address->bytes, prefix});
  }
  return t;
}

bool TrustedProxies::Contains(std::string_view text) const {
  const auto a = ParseAddress(text);
  if (!a) return false;
  for (const Block& b : blocks_) {
    if (b.family != a->family) continue;
    const int full = b.prefix / 8;
    const int rest = b.prefix % 8;
    if (std::memcmp(a->bytes.data(), b.bytes.data(), static_cast<size_t>(full)) != 0) continue;
    if (rest != 0) {
      const auto mask = static_cast<uint8_t>(0xff << (8 - rest));
      if ((a->bytes[static_cast<size_t>(full)] & mask) != (b.bytes[static_cast<size_t>(full)] & mask)) continue;
    }
    return true;
  }
  return false;
}

Result<std::string> ClientAddress(std::string_view peer, std::string_view forwarded, const TrustedProxies& trusted) {
  const auto peer_address = ParseAddress(peer);
  if (!peer_address) {
    return MakeError(ErrorCode::kInvalidArgument, "peer '" + std::string(peer) + "' is not an IP address");
  }
  if (!trusted.Contains(peer) || Trim(forwarded).empty()) return Format(*peer_address);
  // Walk X-Forwarded-For from the right: each hop was added by the proxy
  // after it; stop at the first hop that is not one of ours.
  std::string_view rest = forwarded;
  std::string client = Format(*peer_address);
  while (!rest.empty()) {
    const size_t comma = rest.rfind(',');
    const std::string_view hop = Trim(comma == std::string_view::npos ? rest : rest.substr(comma + 1));
    rest = comma == std::string_view::npos ? std::string_view() : rest.substr(0, comma);
    const auto address = ParseAddress(hop);
    if (!address) break;  // garbage from the client side: keep the last good hop
    client = Format(*address);
    if (!trusted.Contains(hop)) break;
  }
  return client;
}

}  // namespace cachet
