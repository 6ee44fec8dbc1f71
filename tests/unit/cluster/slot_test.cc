#include "cachet/cluster/slot.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace cachet::cluster {
namespace {

// The slot function is part of the cluster's contract: every client and node,
// of every version, must put a key in the same slot. Golden values pin it.
TEST(SlotTest, KnownKeysHaveFixedSlots) {
  const std::vector<std::pair<std::string, uint32_t>> golden = {
      {"a", 12982u}, {"user:42", 9733u}, {"{tag}x", 2216u}, {"cachet", 6863u}};
  for (const auto& [key, slot] : golden) EXPECT_EQ(SlotOf(key), slot) << key;
}

TEST(SlotTest, EverySlotIsInRangeAndKeysSpreadEvenly) {
  std::vector<int> per_slot(kSlotCount);
  constexpr int kKeys = 1 << 20;
  for (int i = 0; i < kKeys; ++i) {
    const uint32_t slot = SlotOf("user:" + std::to_string(i));
    ASSERT_LT(slot, kSlotCount);
    ++per_slot[slot];
  }
  // 64 keys a slot on average; a uniform hash keeps every slot within
  // about 6 standard deviations (8) of it.
  for (uint32_t s = 0; s < kSlotCount; ++s) {
    EXPECT_GT(per_slot[s], 16) << "slot " << s;
    EXPECT_LT(per_slot[s], 112) << "slot " << s;
  }
}

}  // namespace
}  // namespace cachet::cluster
