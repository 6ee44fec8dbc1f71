// Key hashing shared by the index, the ghost queue and recovery.
// XXH3: fast on short keys, and the same in every process and build.
#pragma once

#include <cstdint>
#include <string_view>

#define XXH_INLINE_ALL
#include <xxhash.h>

namespace cachet::detail {

inline uint64_t HashKey(std::string_view key) { return XXH3_64bits(key.data(), key.size()); }
// Index slots keep the high half of the hash; the home bucket uses the low half.
inline uint32_t TagOf(uint64_t hash) { return static_cast<uint32_t>(hash >> 32); }
inline uint64_t SlotValue(uint64_t hash, uint32_t unit) { return uint64_t{TagOf(hash)} << 32 | unit; }
inline uint32_t SlotUnit(uint64_t slot) { return static_cast<uint32_t>(slot); }
// Maps 32 random bits onto [0, n) without a division.
inline uint64_t FastRange(uint32_t x, uint64_t n) { return (uint64_t{x} * n) >> 32; }

}  // namespace cachet::detail
