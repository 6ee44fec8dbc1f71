// Key hashing shared by the index, the ghost queue and recovery.
// XXH3: fast on short keys, and the same in every process and build.
#pragma once

#include <cstdint>
#include <string_view>

#define XXH_INLINE_ALL
#include <xxhash.h>

namespace cachet::detail {

inline uint64_t HashKey(std::string_view key) { return XXH3_64bits(key.data(), key.size()); }
// An index slot is (tag << 48 | lap << 32 | unit): the top 16 bits of the
// hash, the low 16 bits of the item's log lap, and the item's offset in
// 8-byte units. The home bucket uses the low half of the hash.
inline uint16_t TagOf(uint64_t hash) { return static_cast<uint16_t>(hash >> 48); }
inline uint64_t TagBits(uint64_t hash) { return hash & 0xffff'0000'0000'0000ull; }
inline uint16_t SlotTag(uint64_t slot) { return static_cast<uint16_t>(slot >> 48); }
inline uint16_t SlotLap(uint64_t slot) { return static_cast<uint16_t>(slot >> 32); }
inline uint32_t SlotUnit(uint64_t slot) { return static_cast<uint32_t>(slot); }
inline uint64_t MakeSlot(uint64_t tag_bits, uint64_t lap, uint64_t unit) {
  return tag_bits | (lap & 0xffff) << 32 | unit;
}
// The ghost queue's 32-bit fingerprint of a key; never 0 (0 is "empty").
inline uint32_t FingerprintOf(uint64_t hash) { return static_cast<uint32_t>(hash >> 32) | 1; }
// Maps 32 random bits onto [0, n) without a division.
inline uint64_t FastRange(uint32_t x, uint64_t n) { return (uint64_t{x} * n) >> 32; }

}  // namespace cachet::detail
