// Word-wise copies in and out of log memory. Items are 8-byte aligned and a
// reader may race with the writer reusing the memory, so every access to item
// bytes is an 8-byte relaxed atomic; readers validate afterwards (layout.h).
#pragma once

#include <cstdint>
#include <cstring>
#include <string_view>

#include "atomics.h"

namespace cachet::detail {

// Copies `len` bytes starting `offset` bytes past the aligned `words`.
inline void LoadBytes(const uint64_t* words, uint64_t offset, uint64_t len, char* dst) {
  const uint64_t* w = words + offset / 8;
  const uint64_t skip = offset % 8;
  if (skip != 0 && len != 0) {
    const uint64_t x = LoadRelaxed(*w++);
    const uint64_t n = len < 8 - skip ? len : 8 - skip;
    std::memcpy(dst, reinterpret_cast<const char*>(&x) + skip, n);
    dst += n;
    len -= n;
  }
  for (; len >= 8; len -= 8, dst += 8) {
    const uint64_t x = LoadRelaxed(*w++);
    std::memcpy(dst, &x, 8);
  }
  if (len != 0) {
    const uint64_t x = LoadRelaxed(*w);
    std::memcpy(dst, &x, len);
  }
}

// True if the `expected.size()` bytes at the aligned `words` equal `expected`.
inline bool BytesEqual(const uint64_t* words, std::string_view expected) {
  const char* p = expected.data();
  uint64_t len = expected.size();
  for (; len >= 8; len -= 8, p += 8) {
    uint64_t want;
    std::memcpy(&want, p, 8);
    if (LoadRelaxed(*words++) != want) return false;
  }
  if (len == 0) return true;
  const uint64_t x = LoadRelaxed(*words);
  return std::memcmp(&x, p, len) == 0;
}

inline void StoreWords(uint64_t* dst, const uint64_t* src, uint64_t count) {
  for (uint64_t i = 0; i < count; ++i) StoreRelaxed(dst[i], src[i]);
}

inline void LoadWords(const uint64_t* src, uint64_t* dst, uint64_t count) {
  for (uint64_t i = 0; i < count; ++i) dst[i] = LoadRelaxed(src[i]);
}

}  // namespace cachet::detail
