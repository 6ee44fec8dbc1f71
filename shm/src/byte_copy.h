// Word-wise copies in and out of log memory. Items are 8-byte aligned and a
// reader may race with the writer reusing the memory, so every access to item
// bytes is an 8-byte relaxed atomic; readers validate afterwards (layout.h).
#pragma once

#include <cstdint>
#include <cstring>
#include <string_view>

#include "atomics.h"

namespace cachet::detail {

// Bytes are joined and split as the little-endian words they are stored in.
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__);

// The 8 bytes that start `offset` bytes past the aligned `words` (a byte
// offset, any alignment), read as the two aligned words that hold them.
// Both words must lie inside the item: callers only name bytes of it.
inline uint64_t LoadUnaligned(const uint64_t* words, uint64_t offset) {
  const uint64_t* w = words + offset / 8;
  const unsigned shift = static_cast<unsigned>(offset % 8) * 8;
  const uint64_t lo = LoadRelaxed(w[0]);
  return shift == 0 ? lo : (lo >> shift) | (LoadRelaxed(w[1]) << (64 - shift));
}

// Copies `len` bytes starting `offset` bytes past the aligned `words`,
// reading only the words that hold them. This is the same-host GET's value
// copy: whole words (joined from two when the value is not aligned), then
// one 8-byte store that ends at the last byte, overlapping what came before,
// so that no byte loop runs for the tail.
inline void LoadBytes(const uint64_t* words, uint64_t offset, uint64_t len, char* dst) {
  if (len < 8) {
    if (len == 0) return;
    // The bytes lie in at most two words; read those alone.
    const uint64_t first = offset % 8;
    const uint64_t* w = words + offset / 8;
    uint64_t x = LoadRelaxed(w[0]) >> (first * 8);
    if (first + len > 8) x |= LoadRelaxed(w[1]) << ((8 - first) * 8);
    std::memcpy(dst, &x, len);
    return;
  }
  const uint64_t whole = len / 8;
  if (offset % 8 == 0) {
    const uint64_t* w = words + offset / 8;
#pragma GCC unroll 4
    for (uint64_t i = 0; i < whole; ++i) {
      const uint64_t x = LoadRelaxed(w[i]);
      std::memcpy(dst + i * 8, &x, 8);
    }
  } else {
    // Each output word joins two neighbours; each source word is read once.
    const uint64_t* w = words + offset / 8;
    const unsigned shift = static_cast<unsigned>(offset % 8) * 8;
    uint64_t lo = LoadRelaxed(w[0]);
#pragma GCC unroll 4
    for (uint64_t i = 0; i < whole; ++i) {
      const uint64_t hi = LoadRelaxed(w[i + 1]);
      const uint64_t x = (lo >> shift) | (hi << (64 - shift));
      std::memcpy(dst + i * 8, &x, 8);
      lo = hi;
    }
  }
  if (len % 8 != 0) {
    const uint64_t x = LoadUnaligned(words, offset + len - 8);
    std::memcpy(dst + len - 8, &x, 8);
  }
}

// True if the `expected.size()` bytes at the aligned `words` equal `expected`.
inline bool BytesEqual(const uint64_t* words, std::string_view expected) {
  const char* p = expected.data();
  const uint64_t len = expected.size();
  uint64_t i = 0;
  for (; i + 8 <= len; i += 8) {
    uint64_t want;
    std::memcpy(&want, p + i, 8);
    if (LoadRelaxed(words[i / 8]) != want) return false;
  }
  if (i == len) return true;
  // The last 1 to 7 bytes: the low bytes of their word (little-endian).
  const uint64_t tail = len - i;
  const uint64_t mask = ~uint64_t{0} >> ((8 - tail) * 8);
  uint64_t want = 0;
  if (len >= 8) {
    std::memcpy(&want, p + len - 8, 8);  // ends at the last byte: no byte loop
    want >>= (8 - tail) * 8;
  } else {
    std::memcpy(&want, p, tail);
  }
  return ((LoadRelaxed(words[i / 8]) ^ want) & mask) == 0;
}

inline void StoreWords(uint64_t* dst, const uint64_t* src, uint64_t count) {
  for (uint64_t i = 0; i < count; ++i) StoreRelaxed(dst[i], src[i]);
}

inline void LoadWords(const uint64_t* src, uint64_t* dst, uint64_t count) {
  for (uint64_t i = 0; i < count; ++i) dst[i] = LoadRelaxed(src[i]);
}

}  // namespace cachet::detail
