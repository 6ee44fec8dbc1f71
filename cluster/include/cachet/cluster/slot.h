// Hash slots: how the cluster spreads keys over shards.
//
// Every key belongs to one of kSlotCount slots, the same in every process,
// build and host: slots are what the shard map assigns to shards and what a
// rebalance moves, never single keys.
#pragma once

#include <cstdint>
#include <string_view>

namespace cachet::cluster {

inline constexpr uint32_t kSlotCount = 16384;

// The slot of `key`: bits 32..45 of the key's XXH3-64 hash. The store uses
// the low 32 bits for the home bucket and the top 16 for the tag, so the
// keys of one slot still spread over a node's whole index.
uint32_t SlotOf(std::string_view key);

}  // namespace cachet::cluster
