// Self-checking values for concurrency tests: a value names its key and a
// sequence number, and its filler is derived from both, so a torn read or a
// mix of two values can never pass Check().
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace cachet::testing {

inline std::string MakeValue(std::string_view key, uint64_t seq) {
  std::string v(key);
  v += '|';
  v += std::to_string(seq);
  v += '|';
  v.append(static_cast<size_t>(seq * 31 % 300), static_cast<char>('a' + (seq + key.size()) % 26));
  return v;
}

inline bool CheckValue(std::string_view key, std::string_view value) {
  if (value.substr(0, key.size()) != key || value.size() < key.size() + 3 || value[key.size()] != '|') return false;
  const size_t bar = value.find('|', key.size() + 1);
  if (bar == std::string_view::npos) return false;
  uint64_t seq = 0;
  for (char c : value.substr(key.size() + 1, bar - key.size() - 1)) {
    if (c < '0' || c > '9') return false;
    seq = seq * 10 + static_cast<uint64_t>(c - '0');
  }
  return value == MakeValue(key, seq);
}

}  // namespace cachet::testing
