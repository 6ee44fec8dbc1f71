#include "cachet/tier_resolver.h"

namespace cachet {

TierResolver::TierResolver(std::string fallback_tier, Lookup lookup)
    : fallback_(std::move(fallback_tier)),
      lookup_(std::move(lookup)),
      keys_(std::make_shared<const std::unordered_map<std::string, std::string>>()) {}

void TierResolver::Set(const PolicyFile& file) {
  auto keys = std::make_shared<const std::unordered_map<std::string, std::string>>(file.key_tiers);
  std::lock_guard<std::mutex> lock(mu_);
  keys_ = std::move(keys);
}

std::optional<std::string> TierResolver::Find(std::string_view api_key) const {
  std::shared_ptr<const std::unordered_map<std::string, std::string>> keys;
  {
    std::lock_guard<std::mutex> lock(mu_);
    keys = keys_;
  }
  if (auto it = keys->find(std::string(api_key)); it != keys->end()) return it->second;
  if (lookup_) return lookup_(api_key);  // outside the lock: it may be slow
  return std::nullopt;
}

std::string TierResolver::TierOf(std::string_view api_key) const { return Find(api_key).value_or(fallback_); }

bool TierResolver::Knows(std::string_view api_key) const { return Find(api_key).has_value(); }

Identity TierResolver::Identify(std::string_view api_key, std::string_view client_address) const {
  if (!api_key.empty()) {
    if (auto tier = Find(api_key)) return Identity{std::string(api_key), std::move(*tier), true};
  }
  return Identity{"ip:" + std::string(client_address), fallback_, false};
}

}  // namespace cachet
