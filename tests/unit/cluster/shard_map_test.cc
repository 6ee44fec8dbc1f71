#include "cachet/cluster/shard_map.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <functional>
#include <map>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cachet/cluster/slot.h"

namespace cachet::cluster {
namespace {

constexpr uint32_t kSlots = kSlotCount;

uint32_t CeilDiv(uint32_t a, uint32_t b) { return (a + b - 1) / b; }

std::vector<std::string> Nodes(size_t count, size_t first = 0) {
  std::vector<std::string> nodes;
  for (size_t i = first; i < first + count; ++i) nodes.push_back("n" + std::to_string(i));
  return nodes;
}

ShardMap MustPlan(const ShardMap* previous, const std::vector<std::string>& nodes, uint32_t replication) {
  auto map = Plan(previous, nodes, replication);
  EXPECT_TRUE(map.has_value()) << map.error().ToString();
  return std::move(*map);
}

// The invariants every planned map keeps: one shard per node, whose
// preferred primary it is; slots within one of even; every node holding
// exactly `replication` shards; no node twice in a shard.
void ExpectBalanced(const ShardMap& map) {
  const uint32_t n = static_cast<uint32_t>(map.nodes().size());
  ASSERT_EQ(map.shards().size(), n);
  std::map<std::string, int> primaries;
  std::map<std::string, uint32_t> held;
  uint32_t total = 0;
  for (const Shard& shard : map.shards()) {
    const uint32_t size = shard.SlotCount();
    total += size;
    EXPECT_GE(size, kSlots / n) << "shard " << shard.id;
    EXPECT_LE(size, CeilDiv(kSlots, n)) << "shard " << shard.id;
    ASSERT_EQ(shard.nodes.size(), map.replication());
    ++primaries[shard.nodes[0]];
    std::vector<std::string> sorted = shard.nodes;
    std::sort(sorted.begin(), sorted.end());
    EXPECT_EQ(std::adjacent_find(sorted.begin(), sorted.end()), sorted.end()) << "shard " << shard.id;
    for (const std::string& node : shard.nodes) ++held[node];
  }
  EXPECT_EQ(total, kSlots);
  for (const std::string& node : map.nodes()) {
    EXPECT_EQ(primaries[node], 1) << node;
    EXPECT_EQ(held[node], map.replication()) << node;
  }
}

// ---- JSON

TEST(ShardMapJsonTest, RoundTripKeepsEveryFieldButTheEpoch) {
  ShardMap map = MustPlan(nullptr, Nodes(4), 3);
  map.set_epoch(42);
  const std::string json = map.ToJson();
  EXPECT_EQ(json.find("epoch"), std::string::npos);
  auto decoded = ShardMap::FromJson(json);
  ASSERT_TRUE(decoded.has_value()) << decoded.error().ToString();
  EXPECT_EQ(*decoded, map);
  EXPECT_EQ(decoded->ToJson(), json);
  EXPECT_EQ(decoded->epoch(), 0u);
  EXPECT_EQ(decoded->next_shard_id(), 4u);
}

TEST(ShardMapJsonTest, WritesTheDocumentOfTheDesign) {
  const ShardMap map = MustPlan(nullptr, Nodes(2), 1);
  EXPECT_EQ(map.ToJson(),
            R"({"version":1,"replication":1,"next_shard_id":2,"nodes":["n0","n1"],"shards":[)"
            R"({"id":0,"nodes":["n0"],"slots":[[0,8191]]},{"id":1,"nodes":["n1"],"slots":[[8192,16383]]}]})");
}

// A hand-written map: fields in any order, unknown fields, ranges split and
// unsorted, next_shard_id left out.
constexpr const char* kHandWritten = R"({
  "comment": "written by an operator", "replication": 2, "version": 1,
  "nodes": ["c", "a", "b"],
  "shards": [
    {"id": 7, "nodes": ["c", "a"], "slots": [[10923, 16383]], "weight": 3},
    {"id": 2, "nodes": ["a", "b"], "slots": [[100, 5460], [0, 99]]},
    {"id": 5, "nodes": ["b", "c"], "slots": [[5461, 10922]]}
  ]
})";

TEST(ShardMapJsonTest, DecodesAHandWrittenMapIgnoringUnknownFields) {
  auto map = ShardMap::FromJson(kHandWritten);
  ASSERT_TRUE(map.has_value()) << map.error().ToString();
  EXPECT_EQ(map->replication(), 2u);
  EXPECT_EQ(map->nodes(), (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_EQ(map->next_shard_id(), 8u);
  ASSERT_EQ(map->shards().size(), 3u);
  EXPECT_EQ(map->shards()[0].id, 2u);
  EXPECT_EQ(map->shards()[0].slots, (std::vector<SlotRange>{{0, 5460}}));
  EXPECT_EQ(map->shards()[2].nodes, (std::vector<std::string>{"c", "a"}));
  EXPECT_EQ(map->ShardForSlot(0).id, 2u);
  EXPECT_EQ(map->ShardForSlot(5460).id, 2u);
  EXPECT_EQ(map->ShardForSlot(5461).id, 5u);
  EXPECT_EQ(map->ShardForSlot(16383).id, 7u);
  EXPECT_EQ(map->FindShard(5), &map->shards()[1]);
  EXPECT_EQ(map->FindShard(3), nullptr);
}

struct BadMap {
  const char* name;
  std::function<void(nlohmann::json&)> edit;
  const char* message;
};

class ShardMapValidationTest : public testing::TestWithParam<BadMap> {};

TEST_P(ShardMapValidationTest, RefusesWithAClearMessage) {
  nlohmann::json doc = nlohmann::json::parse(kHandWritten);
  GetParam().edit(doc);
  auto map = ShardMap::FromJson(doc.dump());
  ASSERT_FALSE(map.has_value()) << doc.dump();
  EXPECT_EQ(map.error().code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(map.error().message, GetParam().message);
}

// doc["shards"][1] is shard 2, [0] is shard 7, [2] is shard 5.
const BadMap kBadMaps[] = {
    {"MissingSlot",
     [](auto& d) {
       d["shards"][1]["slots"] = {{0, 99}, {101, 5460}};
     },
     "shard map: slot 100 is in no shard"},
    {"MissingSlots",
     [](auto& d) {
       d["shards"][0]["slots"] = {{10923, 16000}};
     },
     "shard map: slots 16001..16383 are in no shard"},
    {"Overlap",
     [](auto& d) {
       d["shards"][2]["slots"] = {{5400, 10922}};
     },
     "shard map: slot 5400 is in shard 2 and in shard 5"},
    {"OverlapWithinAShard",
     [](auto& d) {
       d["shards"][1]["slots"] = {{0, 5460}, {5460, 5460}};
     },
     "shard map: shard 2 lists slot 5460 twice"},
    {"RangeBackwards",
     [](auto& d) {
       d["shards"][1]["slots"] = {{5460, 0}};
     },
     "shard map: shard 2 has slot range [5460, 0] (first > last)"},
    {"RangePastTheEnd",
     [](auto& d) {
       d["shards"][0]["slots"] = {{10923, 16384}};
     },
     "shard map: shard 7 has slot range [10923, 16384] (slots end at 16383)"},
    {"RangeNotAPair",
     [](auto& d) {
       d["shards"][0]["slots"] = {{10923, 16000, 16383}};
     },
     "shard map: shards[0].slots[0] is [10923,16000,16383], expected [first, last]"},
    {"NoSlots", [](auto& d) { d["shards"][0]["slots"] = nlohmann::json::array(); }, "shard map: shard 7 has no slots"},
    {"ShardWithoutNodes", [](auto& d) { d["shards"][2]["nodes"] = nlohmann::json::array(); },
     "shard map: shard 5 has no nodes"},
    {"NodeTwiceInAShard",
     [](auto& d) {
       d["shards"][2]["nodes"] = {"b", "b"};
     },
     "shard map: shard 5 lists node 'b' twice"},
    {"EmptyNodeIdInAShard",
     [](auto& d) {
       d["shards"][2]["nodes"] = {"b", ""};
     },
     "shard map: shard 5 has an empty node id"},
    {"NodeOutsideTheDirectory",
     [](auto& d) {
       d["shards"][2]["nodes"] = {"b", "z"};
     },
     "shard map: shard 5 has node 'z', which is not in 'nodes'"},
    {"FewerNodesThanReplication", [](auto& d) { d["shards"][2]["nodes"] = {"b"}; },
     "shard map: shard 5 has 1 nodes, replication is 2"},
    {"EmptyNodeIdInTheDirectory",
     [](auto& d) {
       d["nodes"] = {"a", "b", "c", ""};
     },
     "shard map: 'nodes' has an empty node id"},
    {"NodeTwiceInTheDirectory",
     [](auto& d) {
       d["nodes"] = {"a", "b", "c", "a"};
     },
     "shard map: 'nodes' lists node 'a' twice"},
    {"ReplicationAboveNodes", [](auto& d) { d["replication"] = 4; },
     "shard map: replication 4 is outside 1..3 (the number of nodes)"},
    {"ReplicationZero", [](auto& d) { d["replication"] = 0; },
     "shard map: replication 0 is outside 1..3 (the number of nodes)"},
    {"ReplicationAString", [](auto& d) { d["replication"] = "2"; },
     "shard map: 'replication' is string, expected an unsigned integer"},
    {"ReplicationNegative", [](auto& d) { d["replication"] = -2; },
     "shard map: 'replication' is number, expected an unsigned integer"},
    {"ReplicationFractional", [](auto& d) { d["replication"] = 2.5; },
     "shard map: 'replication' is number, expected an unsigned integer"},
    {"ShardIdTooLarge", [](auto& d) { d["shards"][0]["id"] = 4294967296ULL; },
     "shard map: shards[0].id is 4294967296, above 4294967295"},
    {"SlotAString", [](auto& d) { d["shards"][0]["slots"][0][1] = "16383"; },
     "shard map: shards[0].slots[0][1] is string, expected an unsigned integer"},
    {"NodesNotAnArray", [](auto& d) { d["nodes"] = "a,b,c"; }, "shard map: 'nodes' is string, expected an array"},
    {"NodeIdANumber",
     [](auto& d) {
       d["shards"][1]["nodes"] = {"a", 2};
     },
     "shard map: shards[1].nodes[1] is number, expected a string"},
    {"ShardNotAnObject", [](auto& d) { d["shards"][1] = 2; }, "shard map: shards[1] is number, expected an object"},
    {"MissingShards", [](auto& d) { d.erase("shards"); }, "shard map: the document has no field 'shards'"},
    {"MissingShardId", [](auto& d) { d["shards"][2].erase("id"); }, "shard map: shards[2] has no field 'id'"},
    {"DuplicateShardId", [](auto& d) { d["shards"][2]["id"] = 2; }, "shard map: shard 2 appears twice"},
    {"ShardIdNotBelowNext", [](auto& d) { d["next_shard_id"] = 7; }, "shard map: shard 7 is not below next_shard_id 7"},
    {"OtherVersion", [](auto& d) { d["version"] = 2; },
     "shard map: version 2 is not supported (this build reads version 1)"},
    {"NotAnObject", [](auto& d) { d = nlohmann::json::array(); },
     "shard map: the document is array, expected an object"},
};

INSTANTIATE_TEST_SUITE_P(Cases, ShardMapValidationTest, testing::ValuesIn(kBadMaps),
                         [](const testing::TestParamInfo<BadMap>& param_info) { return param_info.param.name; });

TEST(ShardMapJsonTest, RefusesTextThatIsNotJson) {
  auto map = ShardMap::FromJson(R"({"version": 1,)");
  ASSERT_FALSE(map.has_value());
  EXPECT_EQ(map.error().code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(map.error().message.rfind("shard map: not JSON: ", 0), 0u) << map.error().message;
}

TEST(ShardMapCreateTest, AppliesTheRulesOfTheJson) {
  auto map = ShardMap::Create(2, {"a"}, {Shard{0, {{0, kSlots - 1}}, {"a"}}}, 1);
  ASSERT_FALSE(map.has_value());
  EXPECT_EQ(map.error().message, "shard map: replication 2 is outside 1..1 (the number of nodes)");
  map = ShardMap::Create(1, {"a"}, {Shard{0, {{0, kSlots - 1}}, {"a"}}}, 1);
  ASSERT_TRUE(map.has_value()) << map.error().ToString();
}

// ---- Lookup

TEST(ShardMapLookupTest, TableAgreesWithTheRangesForEverySlot) {
  ShardMap map = MustPlan(nullptr, Nodes(3), 2);
  std::vector<ShardMap> maps;
  for (size_t n = 4; n <= 7; ++n) {
    map = MustPlan(&map, Nodes(n), 2);  // joins give shards several ranges
    maps.push_back(map);
  }
  maps.push_back(*ShardMap::FromJson(kHandWritten));
  for (const ShardMap& m : maps) {
    std::vector<int> seen(kSlots, 0);
    for (const Shard& shard : m.shards()) {
      for (const SlotRange& range : shard.slots) {
        for (uint32_t slot = range.first; slot <= range.last; ++slot) {
          ++seen[slot];
          ASSERT_EQ(m.ShardForSlot(slot).id, shard.id) << "slot " << slot;
        }
      }
    }
    EXPECT_EQ(std::count(seen.begin(), seen.end(), 1), static_cast<long>(kSlots));
  }
  EXPECT_EQ(&maps[0].ShardForKey("user:42"), &maps[0].ShardForSlot(9733));  // slot_test's golden value
}

// ---- Planning from scratch

TEST(ShardMapPlanTest, FromScratchSpreadsSlotsAndReplicasEvenly) {
  for (size_t n = 1; n <= 8; ++n) {
    for (uint32_t r = 1; r <= std::min<uint32_t>(3, static_cast<uint32_t>(n)); ++r) {
      SCOPED_TRACE("N=" + std::to_string(n) + " R=" + std::to_string(r));
      const ShardMap map = MustPlan(nullptr, Nodes(n), r);
      ExpectBalanced(map);
      for (size_t i = 0; i < n; ++i) EXPECT_EQ(map.shards()[i].id, i);
      EXPECT_EQ(map.next_shard_id(), n);
    }
  }
}

TEST(ShardMapPlanTest, FromScratchLaysEachShardOnTheNextNodesOfTheRing) {
  const ShardMap map = MustPlan(nullptr, Nodes(4), 3);
  const std::vector<std::vector<std::string>> expected = {
      {"n0", "n1", "n2"}, {"n1", "n2", "n3"}, {"n2", "n3", "n0"}, {"n3", "n0", "n1"}};
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(map.shards()[i].nodes, expected[i]);
    EXPECT_EQ(map.shards()[i].slots, (std::vector<SlotRange>{{uint32_t(i * 4096), uint32_t(i * 4096 + 4095)}}));
  }
}

TEST(ShardMapPlanTest, SameInputsGiveTheSameMapWhateverTheNodeOrder) {
  const ShardMap a = MustPlan(nullptr, {"n2", "n0", "n1"}, 2);
  const ShardMap b = MustPlan(nullptr, {"n0", "n1", "n2"}, 2);
  EXPECT_EQ(a.ToJson(), b.ToJson());
  const ShardMap a4 = MustPlan(&a, {"n3", "n1", "n0", "n2"}, 2);
  const ShardMap b4 = MustPlan(&b, {"n0", "n1", "n2", "n3"}, 2);
  EXPECT_EQ(a4.ToJson(), b4.ToJson());
}

TEST(ShardMapPlanTest, ReplanningTheSameNodesChangesNothing) {
  ShardMap map = MustPlan(nullptr, Nodes(5), 3);
  map = MustPlan(&map, Nodes(4), 3);  // after a leave, not a from-scratch layout
  const ShardMap again = MustPlan(&map, Nodes(4), 3);
  EXPECT_EQ(again, map);
  const MapDiff diff = Diff(map, again);
  EXPECT_TRUE(diff.moves.empty());
  EXPECT_TRUE(diff.replicas.empty());
}

TEST(ShardMapPlanTest, RefusesBadInputs) {
  const auto message = [](const std::vector<std::string>& nodes, uint32_t r) {
    auto map = Plan(nullptr, nodes, r);
    EXPECT_FALSE(map.has_value());
    EXPECT_EQ(map.error().code, ErrorCode::kInvalidArgument);
    return map.error().message;
  };
  EXPECT_EQ(message({}, 1), "shard map: no live node to plan for");
  EXPECT_EQ(message({"a", "b"}, 3), "shard map: replication 3 is outside 1..2 (the number of live nodes)");
  EXPECT_EQ(message({"a", "b"}, 0), "shard map: replication 0 is outside 1..2 (the number of live nodes)");
  EXPECT_EQ(message({"a", "b", "a"}, 1), "shard map: the live node list lists node 'a' twice");
  EXPECT_EQ(message({"a", ""}, 1), "shard map: the live node list has an empty node id");
  EXPECT_EQ(message(Nodes(kSlots + 1), 1), "shard map: 16385 live nodes, more than the 16384 slots");
}

// ---- Joins and leaves: how much moves

struct Change {
  size_t from_nodes;
  size_t to_nodes;
};

// The data a change of map copies: for every slot, the nodes that hold it
// in `to` and did not in `from`.
uint32_t SlotCopies(const ShardMap& from, const ShardMap& to) {
  uint32_t copies = 0;
  for (uint32_t slot = 0; slot < kSlots; ++slot) {
    const std::vector<std::string>& before = from.ShardForSlot(slot).nodes;
    for (const std::string& node : to.ShardForSlot(slot).nodes) {
      if (std::find(before.begin(), before.end(), node) == before.end()) ++copies;
    }
  }
  return copies;
}

// Plans `from` nodes, then `to` nodes (a join adds n<from>, a leave drops
// the node in the middle), checks the bound on the slots moved and prints
// the measured fraction. Returns the moved count.
uint32_t MeasureChange(Change change, uint32_t r) {
  const std::vector<std::string> before = Nodes(change.from_nodes);
  std::vector<std::string> after = Nodes(change.to_nodes);
  std::string gone;
  if (change.to_nodes < change.from_nodes) {
    after = before;
    gone = after[after.size() / 2];
    after.erase(after.begin() + static_cast<long>(after.size() / 2));
  }
  const ShardMap old_map = MustPlan(nullptr, before, r);
  const ShardMap new_map = MustPlan(&old_map, after, r);
  ExpectBalanced(new_map);
  const MapDiff diff = Diff(old_map, new_map);
  const uint32_t moved = diff.MovedSlots();

  if (change.to_nodes > change.from_nodes) {
    // A join: the new shard takes its share from the others, nothing else
    // moves, so the moved slots are exactly the new shard's.
    const Shard* added = new_map.FindShard(static_cast<uint32_t>(change.from_nodes));
    EXPECT_NE(added, nullptr);
    EXPECT_EQ(added->nodes[0], "n" + std::to_string(change.from_nodes));
    EXPECT_EQ(moved, added->SlotCount());
    EXPECT_LE(moved, CeilDiv(kSlots, static_cast<uint32_t>(change.to_nodes)));
    for (const SlotMove& move : diff.moves) EXPECT_EQ(move.to_shard, added->id);
    // The new node joins r-1 existing shards, each dropping one node.
    size_t existing_changed = 0;
    for (const ReplicaChange& rc : diff.replicas) {
      if (rc.shard == added->id) continue;
      ++existing_changed;
      EXPECT_EQ(rc.added, (std::vector<std::string>{added->nodes[0]}));
      EXPECT_EQ(rc.removed.size(), 1u);
    }
    EXPECT_EQ(existing_changed, r - 1);
  } else {
    // A leave: only the departed node's shard moves, spread over the others,
    // and each shard it held gets one other node in its place.
    const Shard* dissolved = nullptr;
    for (const Shard& shard : old_map.shards()) {
      if (shard.nodes[0] == gone) dissolved = &shard;
    }
    EXPECT_NE(dissolved, nullptr);
    EXPECT_EQ(new_map.FindShard(dissolved->id), nullptr);
    EXPECT_EQ(moved, dissolved->SlotCount());
    EXPECT_LE(moved, CeilDiv(kSlots, static_cast<uint32_t>(change.from_nodes)));
    for (const SlotMove& move : diff.moves) EXPECT_EQ(move.from_shard, dissolved->id);
    for (const ReplicaChange& rc : diff.replicas) {
      if (rc.shard == dissolved->id) continue;
      EXPECT_EQ(rc.added.size(), 1u);
      EXPECT_EQ(rc.removed, (std::vector<std::string>{gone}));
    }
  }
  // Copies: each moved slot goes to at most r nodes, and the r-1 shards the
  // joining (departed) node joins (left) each copy whole to one node.
  const uint32_t copies = SlotCopies(old_map, new_map);
  const uint32_t smaller = static_cast<uint32_t>(std::min(change.from_nodes, change.to_nodes));
  EXPECT_LE(copies, moved * r + (r - 1) * CeilDiv(kSlots, smaller));
  const size_t larger = std::max(change.from_nodes, change.to_nodes);
  std::printf(
      "shard map: %zu -> %zu nodes, R=%u: %u of %u slots change shard (%.1f%%, 1/%zu = %.1f%%); "
      "%u slot copies (%.1f%% of the %u held)\n",
      change.from_nodes, change.to_nodes, r, moved, kSlots, 100.0 * moved / kSlots, larger, 100.0 / larger, copies,
      100.0 * copies / (kSlots * r), kSlots * r);
  return moved;
}

TEST(ShardMapMovesTest, JoinMovesOnlyTheNewShardsShare) {
  for (uint32_t r = 1; r <= 3; ++r) {
    SCOPED_TRACE("R=" + std::to_string(r));
    EXPECT_EQ(MeasureChange({3, 4}, r), 4096u);
    EXPECT_EQ(MeasureChange({4, 5}, r), 3276u);  // 16384 = 5 * 3276 + 4: the new shard is not among the 4 larger
    EXPECT_EQ(MeasureChange({5, 6}, r), 2730u);  // 16384 = 6 * 2730 + 4
  }
}

TEST(ShardMapMovesTest, LeaveMovesOnlyTheDepartedShard) {
  for (uint32_t r = 1; r <= 2; ++r) {
    SCOPED_TRACE("R=" + std::to_string(r));
    EXPECT_EQ(MeasureChange({5, 4}, r), 3277u);  // n2's shard: slots 6554..9830
    EXPECT_EQ(MeasureChange({3, 2}, r), 5461u);  // n1's shard: slots 5462..10922
  }
  EXPECT_EQ(MeasureChange({5, 4}, 3), 3277u);
}

TEST(ShardMapMovesTest, JoinOfAFourthNodeMovesExactlyThis) {
  const ShardMap before = MustPlan(nullptr, Nodes(3), 3);
  const ShardMap after = MustPlan(&before, Nodes(4), 3);
  const MapDiff diff = Diff(before, after);
  EXPECT_EQ(diff.moves, (std::vector<SlotMove>{{{4096, 5461}, 0, 3}, {{9558, 10922}, 1, 3}, {{15019, 16383}, 2, 3}}));
  EXPECT_EQ(diff.replicas,
            (std::vector<ReplicaChange>{{0, {"n3"}, {"n1"}}, {1, {"n3"}, {"n2"}}, {3, {"n3", "n1", "n2"}, {}}}));
  EXPECT_EQ(after.shards()[0].nodes, (std::vector<std::string>{"n0", "n3", "n2"}));
  EXPECT_EQ(after.shards()[2].nodes, (std::vector<std::string>{"n2", "n0", "n1"}));
}

TEST(ShardMapMovesTest, LeaveSpreadsTheDepartedSlotsInEvenChunks) {
  const ShardMap before = MustPlan(nullptr, Nodes(4), 2);
  const ShardMap after = MustPlan(&before, {"n0", "n1", "n2"}, 2);
  const MapDiff diff = Diff(before, after);
  // 16384 = 3 * 5461 + 1; shard 0 takes the extra slot.
  EXPECT_EQ(diff.moves,
            (std::vector<SlotMove>{{{12288, 13653}, 3, 0}, {{13654, 15018}, 3, 1}, {{15019, 16383}, 3, 2}}));
  EXPECT_EQ(diff.replicas, (std::vector<ReplicaChange>{{2, {"n0"}, {"n3"}}, {3, {}, {"n3", "n0"}}}));
}

// Many joins and leaves in a row: the bounds hold at every step, ids are
// never reused, and the map stays balanced.
TEST(ShardMapMovesTest, BoundsHoldOverARandomRunOfJoinsAndLeaves) {
  std::mt19937 rng(9);
  std::vector<std::string> live = Nodes(3);
  size_t next_node = 3;
  ShardMap map = MustPlan(nullptr, live, 3);
  std::vector<uint32_t> ids_seen;
  for (int step = 0; step < 200; ++step) {
    const bool join = live.size() <= 3 || (live.size() < 12 && rng() % 2 == 0);
    const size_t n = live.size();
    std::string gone;
    if (join) {
      live.push_back("n" + std::to_string(next_node++));
    } else {
      const size_t victim = rng() % n;
      gone = live[victim];
      live.erase(live.begin() + static_cast<long>(victim));
    }
    const ShardMap next = MustPlan(&map, live, 3);
    SCOPED_TRACE("step " + std::to_string(step));
    ExpectBalanced(next);
    const uint32_t moved = Diff(map, next).MovedSlots();
    if (join) {
      EXPECT_LE(moved, CeilDiv(kSlots, static_cast<uint32_t>(n + 1)));
      EXPECT_GE(moved, kSlots / static_cast<uint32_t>(n + 1));
      EXPECT_EQ(std::find(ids_seen.begin(), ids_seen.end(), next.shards().back().id), ids_seen.end());
    } else {
      EXPECT_LE(moved, CeilDiv(kSlots, static_cast<uint32_t>(n)));
    }
    for (const Shard& shard : next.shards()) ids_seen.push_back(shard.id);
    map = next;
  }
}

TEST(ShardMapPlanTest, AReplacedNodeGetsANewShardId) {
  const ShardMap before = MustPlan(nullptr, Nodes(3), 2);
  const ShardMap after = MustPlan(&before, {"n0", "n1", "n9"}, 2);
  EXPECT_EQ(after.shards().back().id, 3u);
  EXPECT_EQ(after.shards().back().nodes[0], "n9");
  EXPECT_EQ(after.next_shard_id(), 4u);
  EXPECT_EQ(after.FindShard(2), nullptr);
  // Only n2's shard moves, whole, to n9's.
  EXPECT_EQ(Diff(before, after).moves, (std::vector<SlotMove>{{{10923, 16383}, 2, 3}}));
}

TEST(ShardMapPlanTest, ChangingReplicationMovesNoSlot) {
  const ShardMap two = MustPlan(nullptr, Nodes(4), 2);
  const ShardMap three = MustPlan(&two, Nodes(4), 3);
  ExpectBalanced(three);
  MapDiff diff = Diff(two, three);
  EXPECT_TRUE(diff.moves.empty());
  ASSERT_EQ(diff.replicas.size(), 4u);
  for (const ReplicaChange& rc : diff.replicas) {
    EXPECT_EQ(rc.added.size(), 1u);
    EXPECT_TRUE(rc.removed.empty());
  }
  const ShardMap one = MustPlan(&three, Nodes(4), 1);
  diff = Diff(three, one);
  EXPECT_TRUE(diff.moves.empty());
  for (const Shard& shard : one.shards())
    EXPECT_EQ(shard.nodes, (std::vector<std::string>{"n" + std::to_string(shard.id)}));
}

}  // namespace
}  // namespace cachet::cluster
