#include "cachet/cluster/slot.h"

#define XXH_INLINE_ALL  // header-only, as in the store
#include <xxhash.h>

namespace cachet::cluster {

uint32_t SlotOf(std::string_view key) {
  return static_cast<uint32_t>(XXH3_64bits(key.data(), key.size()) >> 32) % kSlotCount;
}

}  // namespace cachet::cluster
