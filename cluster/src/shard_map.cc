#include "cachet/cluster/shard_map.h"

#include <algorithm>
#include <limits>
#include <numeric>
#include <unordered_map>
#include <unordered_set>
#include <utility>

#include <nlohmann/json.hpp>

#include "cachet/cluster/slot.h"

namespace cachet::cluster {
namespace {

constexpr uint32_t kFormatVersion = 1;

tl::unexpected<Error> Invalid(std::string message) {
  return MakeError(ErrorCode::kInvalidArgument, "shard map: " + std::move(message));
}

std::string Quoted(std::string_view s) { return "'" + std::string(s) + "'"; }

std::string RangeText(const SlotRange& range) {
  return "[" + std::to_string(range.first) + ", " + std::to_string(range.last) + "]";
}

bool Contains(const std::vector<std::string>& nodes, const std::string& node) {
  return std::find(nodes.begin(), nodes.end(), node) != nodes.end();
}

// Sorts and merges adjacent ranges. REQUIRES: the ranges do not overlap.
std::vector<SlotRange> Normalized(std::vector<SlotRange> ranges) {
  std::sort(ranges.begin(), ranges.end(), [](const SlotRange& a, const SlotRange& b) { return a.first < b.first; });
  std::vector<SlotRange> out;
  for (const SlotRange& range : ranges) {
    if (!out.empty() && out.back().last + 1 == range.first) {
      out.back().last = range.last;
    } else {
      out.push_back(range);
    }
  }
  return out;
}

Result<void> ValidateNodeIds(const std::vector<std::string>& nodes, const std::string& where) {
  std::unordered_set<std::string_view> seen;
  for (const std::string& node : nodes) {
    if (node.empty()) return Invalid(where + " has an empty node id");
    if (!seen.insert(node).second) return Invalid(where + " lists node " + Quoted(node) + " twice");
  }
  return {};
}

// ---- JSON decoding: each getter names the field and the type it found.

std::string TypeError(const std::string& path, const nlohmann::json& value, const char* expected) {
  return path + " is " + std::string(value.type_name()) + ", expected " + expected;
}

Result<const nlohmann::json*> Field(const nlohmann::json& object, const char* name, const std::string& path) {
  auto it = object.find(name);
  if (it == object.end()) return Invalid(path + " has no field " + Quoted(name));
  return &*it;
}

Result<uint32_t> ToUint32(const nlohmann::json& value, const std::string& path) {
  if (!value.is_number_unsigned() || value.get<uint64_t>() > std::numeric_limits<uint32_t>::max()) {
    if (value.is_number_unsigned()) return Invalid(path + " is " + value.dump() + ", above 4294967295");
    return Invalid(TypeError(path, value, "an unsigned integer"));
  }
  return static_cast<uint32_t>(value.get<uint64_t>());
}

Result<const nlohmann::json*> ToArray(const nlohmann::json& value, const std::string& path) {
  if (!value.is_array()) return Invalid(TypeError(path, value, "an array"));
  return &value;
}

Result<std::vector<std::string>> ToNodeList(const nlohmann::json& value, const std::string& path) {
  auto array = ToArray(value, path);
  if (!array) return tl::unexpected(array.error());
  std::vector<std::string> nodes;
  for (size_t i = 0; i < value.size(); ++i) {
    if (!value[i].is_string()) return Invalid(TypeError(path + "[" + std::to_string(i) + "]", value[i], "a string"));
    nodes.push_back(value[i].get<std::string>());
  }
  return nodes;
}

Result<Shard> ToShard(const nlohmann::json& value, const std::string& path) {
  if (!value.is_object()) return Invalid(TypeError(path, value, "an object"));
  Shard shard;
  auto id = Field(value, "id", path);
  if (!id) return tl::unexpected(id.error());
  auto id_value = ToUint32(**id, path + ".id");
  if (!id_value) return tl::unexpected(id_value.error());
  shard.id = *id_value;

  auto nodes = Field(value, "nodes", path);
  if (!nodes) return tl::unexpected(nodes.error());
  auto node_list = ToNodeList(**nodes, path + ".nodes");
  if (!node_list) return tl::unexpected(node_list.error());
  shard.nodes = std::move(*node_list);

  auto slots = Field(value, "slots", path);
  if (!slots) return tl::unexpected(slots.error());
  auto slot_array = ToArray(**slots, path + ".slots");
  if (!slot_array) return tl::unexpected(slot_array.error());
  for (size_t i = 0; i < (*slots)->size(); ++i) {
    const nlohmann::json& range = (**slots)[i];
    const std::string range_path = path + ".slots[" + std::to_string(i) + "]";
    if (!range.is_array() || range.size() != 2) {
      return Invalid(range_path + " is " + range.dump() + ", expected [first, last]");
    }
    auto first = ToUint32(range[0], range_path + "[0]");
    if (!first) return tl::unexpected(first.error());
    auto last = ToUint32(range[1], range_path + "[1]");
    if (!last) return tl::unexpected(last.error());
    shard.slots.push_back({*first, *last});
  }
  return shard;
}

}  // namespace

uint32_t Shard::SlotCount() const {
  uint32_t count = 0;
  for (const SlotRange& range : slots) count += range.size();
  return count;
}

Result<ShardMap> ShardMap::Create(uint32_t replication, std::vector<std::string> nodes, std::vector<Shard> shards,
                                  uint32_t next_shard_id) {
  if (auto ok = ValidateNodeIds(nodes, "'nodes'"); !ok) return tl::unexpected(ok.error());
  if (replication < 1 || replication > nodes.size()) {
    return Invalid("replication " + std::to_string(replication) + " is outside 1.." + std::to_string(nodes.size()) +
                   " (the number of nodes)");
  }
  const std::unordered_set<std::string_view> directory(nodes.begin(), nodes.end());
  std::sort(shards.begin(), shards.end(), [](const Shard& a, const Shard& b) { return a.id < b.id; });

  constexpr int32_t kNoShard = -1;
  std::vector<int32_t> owner(kSlotCount, kNoShard);
  for (size_t i = 0; i < shards.size(); ++i) {
    const Shard& shard = shards[i];
    const std::string name = "shard " + std::to_string(shard.id);
    if (i > 0 && shards[i - 1].id == shard.id) return Invalid(name + " appears twice");
    if (shard.id >= next_shard_id) {
      return Invalid(name + " is not below next_shard_id " + std::to_string(next_shard_id));
    }
    if (shard.nodes.empty()) return Invalid(name + " has no nodes");
    if (auto ok = ValidateNodeIds(shard.nodes, name); !ok) return tl::unexpected(ok.error());
    for (const std::string& node : shard.nodes) {
      if (!directory.contains(node)) return Invalid(name + " has node " + Quoted(node) + ", which is not in 'nodes'");
    }
    if (shard.nodes.size() != replication) {
      return Invalid(name + " has " + std::to_string(shard.nodes.size()) + " nodes, replication is " +
                     std::to_string(replication));
    }
    if (shard.slots.empty()) return Invalid(name + " has no slots");
    for (const SlotRange& range : shard.slots) {
      if (range.first > range.last) return Invalid(name + " has slot range " + RangeText(range) + " (first > last)");
      if (range.last >= kSlotCount) {
        return Invalid(name + " has slot range " + RangeText(range) + " (slots end at " +
                       std::to_string(kSlotCount - 1) + ")");
      }
      for (uint32_t slot = range.first; slot <= range.last; ++slot) {
        if (owner[slot] == static_cast<int32_t>(i)) {
          return Invalid(name + " lists slot " + std::to_string(slot) + " twice");
        }
        if (owner[slot] != kNoShard) {
          return Invalid("slot " + std::to_string(slot) + " is in shard " + std::to_string(shards[owner[slot]].id) +
                         " and in shard " + std::to_string(shard.id));
        }
        owner[slot] = static_cast<int32_t>(i);
      }
    }
  }
  for (uint32_t slot = 0; slot < kSlotCount; ++slot) {
    if (owner[slot] != kNoShard) continue;
    uint32_t last = slot;
    while (last + 1 < kSlotCount && owner[last + 1] == kNoShard) ++last;
    if (last == slot) return Invalid("slot " + std::to_string(slot) + " is in no shard");
    return Invalid("slots " + std::to_string(slot) + ".." + std::to_string(last) + " are in no shard");
  }

  ShardMap map;
  map.replication_ = replication;
  std::sort(nodes.begin(), nodes.end());
  map.nodes_ = std::move(nodes);
  for (Shard& shard : shards) shard.slots = Normalized(std::move(shard.slots));
  map.shards_ = std::move(shards);
  map.next_shard_id_ = next_shard_id;
  // Every shard owns at least one slot, so there are at most kSlotCount
  // shards and an index fits in 16 bits.
  map.slot_to_shard_.assign(owner.begin(), owner.end());
  return map;
}

Result<ShardMap> ShardMap::FromJson(std::string_view json) {
  nlohmann::json doc;
  try {
    doc = nlohmann::json::parse(json);
  } catch (const nlohmann::json::parse_error& e) {
    return Invalid(std::string("not JSON: ") + e.what());
  }
  const std::string top = "the document";
  if (!doc.is_object()) return Invalid(TypeError(top, doc, "an object"));

  auto version = Field(doc, "version", top);
  if (!version) return tl::unexpected(version.error());
  auto version_value = ToUint32(**version, "'version'");
  if (!version_value) return tl::unexpected(version_value.error());
  if (*version_value != kFormatVersion) {
    return Invalid("version " + std::to_string(*version_value) + " is not supported (this build reads version " +
                   std::to_string(kFormatVersion) + ")");
  }

  auto replication = Field(doc, "replication", top);
  if (!replication) return tl::unexpected(replication.error());
  auto replication_value = ToUint32(**replication, "'replication'");
  if (!replication_value) return tl::unexpected(replication_value.error());

  auto nodes = Field(doc, "nodes", top);
  if (!nodes) return tl::unexpected(nodes.error());
  auto node_list = ToNodeList(**nodes, "'nodes'");
  if (!node_list) return tl::unexpected(node_list.error());

  auto shards_field = Field(doc, "shards", top);
  if (!shards_field) return tl::unexpected(shards_field.error());
  auto shard_array = ToArray(**shards_field, "'shards'");
  if (!shard_array) return tl::unexpected(shard_array.error());
  std::vector<Shard> shards;
  uint32_t max_id = 0;
  for (size_t i = 0; i < (*shards_field)->size(); ++i) {
    auto shard = ToShard((**shards_field)[i], "shards[" + std::to_string(i) + "]");
    if (!shard) return tl::unexpected(shard.error());
    max_id = std::max(max_id, shard->id);
    shards.push_back(std::move(*shard));
  }

  // Optional: a hand-written map may leave it out; then no id above the
  // present ones has been used.
  uint32_t next_shard_id = shards.empty() ? 0 : max_id + 1;
  if (auto it = doc.find("next_shard_id"); it != doc.end()) {
    auto next = ToUint32(*it, "'next_shard_id'");
    if (!next) return tl::unexpected(next.error());
    next_shard_id = *next;
  } else if (!shards.empty() && max_id == std::numeric_limits<uint32_t>::max()) {
    return Invalid("shard 4294967295 leaves no id for a next shard");
  }
  return Create(*replication_value, std::move(*node_list), std::move(shards), next_shard_id);
}

std::string ShardMap::ToJson() const {
  nlohmann::ordered_json doc;
  doc["version"] = kFormatVersion;
  doc["replication"] = replication_;
  doc["next_shard_id"] = next_shard_id_;
  doc["nodes"] = nodes_;
  nlohmann::ordered_json shards = nlohmann::ordered_json::array();
  for (const Shard& shard : shards_) {
    nlohmann::ordered_json slots = nlohmann::ordered_json::array();
    for (const SlotRange& range : shard.slots) slots.push_back({range.first, range.last});
    shards.push_back({{"id", shard.id}, {"nodes", shard.nodes}, {"slots", std::move(slots)}});
  }
  doc["shards"] = std::move(shards);
  return doc.dump();
}

const Shard& ShardMap::ShardForKey(std::string_view key) const { return ShardForSlot(SlotOf(key)); }

const Shard* ShardMap::FindShard(uint32_t id) const {
  auto it = std::lower_bound(shards_.begin(), shards_.end(), id, [](const Shard& s, uint32_t v) { return s.id < v; });
  return it != shards_.end() && it->id == id ? &*it : nullptr;
}

bool ShardMap::operator==(const ShardMap& other) const {
  return replication_ == other.replication_ && nodes_ == other.nodes_ && shards_ == other.shards_ &&
         next_shard_id_ == other.next_shard_id_;
}

// ---- Planning (docs/design.md, "Cluster: slots, shards and rebalancing").

namespace {

// A shard while it is being planned.
struct Draft {
  uint32_t id = 0;
  std::vector<size_t> nodes;  // indices into the sorted live nodes; [0] is the preferred primary
  std::vector<bool> kept;     // per position: the node already held this shard in the previous map
  uint32_t size = 0;          // slots owned
  uint32_t target = 0;        // slots it must own

  bool Has(size_t node) const { return std::find(nodes.begin(), nodes.end(), node) != nodes.end(); }
};

// Fills every shard up to `replication` nodes, keeping the previous
// replicas that are still live first. `cap` is the most shards a node should
// hold; with one shard per node it is exactly `replication`.
void AssignReplicas(std::vector<Draft>& drafts, const std::vector<std::vector<size_t>>& previous_replicas,
                    size_t node_count, uint32_t replication) {
  const size_t cap = replication;
  std::vector<size_t> load(node_count, 0);
  for (const Draft& d : drafts) ++load[d.nodes[0]];

  // Keep previous replicas while their node has room.
  for (size_t i = 0; i < drafts.size(); ++i) {
    Draft& d = drafts[i];
    for (size_t node : previous_replicas[i]) {
      if (d.nodes.size() == replication) break;
      if (d.Has(node) || load[node] >= cap) continue;
      d.nodes.push_back(node);
      d.kept.push_back(true);
      ++load[node];
    }
  }

  for (size_t x = 0; x < drafts.size(); ++x) {
    Draft& d = drafts[x];
    const size_t primary = d.nodes[0];
    while (d.nodes.size() < replication) {
      // The first node after the primary on the ring of sorted ids that has
      // room: from scratch this lays shard i on nodes i, i+1, ..., i+R-1.
      bool placed = false;
      for (size_t k = 1; k < node_count && !placed; ++k) {
        const size_t node = (primary + k) % node_count;
        if (!d.Has(node) && load[node] < cap) {
          d.nodes.push_back(node);
          d.kept.push_back(false);
          ++load[node];
          placed = true;
        }
      }
      // Every node outside this shard is full, and a node u with room is in
      // it (the caps add up to the positions): u takes a position of another
      // shard y whose node n moves here. Positions assigned in this plan are
      // swapped before kept ones, which would cost a copy.
      for (size_t k = 0; k < node_count && !placed; ++k) {
        const size_t u = (primary + k) % node_count;
        if (load[u] >= cap) continue;
        for (int pass = 0; pass < 2 && !placed; ++pass) {
          for (size_t y = 0; y < drafts.size() && !placed; ++y) {
            Draft& other = drafts[y];
            if (y == x || other.Has(u)) continue;
            for (size_t pos = 1; pos < other.nodes.size() && !placed; ++pos) {
              const size_t n = other.nodes[pos];
              if (other.kept[pos] != (pass == 1) || d.Has(n)) continue;
              other.nodes[pos] = u;
              other.kept[pos] = false;
              d.nodes.push_back(n);
              d.kept.push_back(false);
              ++load[u];
              placed = true;
            }
          }
        }
      }
      // Not reachable with one shard per node; kept so a plan always
      // completes: the least loaded node outside the shard.
      if (!placed) {
        size_t best = node_count;
        for (size_t k = 1; k < node_count; ++k) {
          const size_t node = (primary + k) % node_count;
          if (!d.Has(node) && (best == node_count || load[node] < load[best])) best = node;
        }
        d.nodes.push_back(best);
        d.kept.push_back(false);
        ++load[best];
      }
    }
  }
}

}  // namespace

Result<ShardMap> Plan(const ShardMap* previous, const std::vector<std::string>& live_nodes, uint32_t replication) {
  if (live_nodes.empty()) return Invalid("no live node to plan for");
  if (auto ok = ValidateNodeIds(live_nodes, "the live node list"); !ok) return tl::unexpected(ok.error());
  if (live_nodes.size() > kSlotCount) {
    return Invalid(std::to_string(live_nodes.size()) + " live nodes, more than the " + std::to_string(kSlotCount) +
                   " slots");
  }
  if (replication < 1 || replication > live_nodes.size()) {
    return Invalid("replication " + std::to_string(replication) + " is outside 1.." +
                   std::to_string(live_nodes.size()) + " (the number of live nodes)");
  }
  std::vector<std::string> nodes = live_nodes;
  std::sort(nodes.begin(), nodes.end());
  std::unordered_map<std::string_view, size_t> index_of;
  for (size_t i = 0; i < nodes.size(); ++i) index_of.emplace(nodes[i], i);

  // One shard per live node. A previous shard survives while its preferred
  // primary is live (the lowest id, should a map name a node first twice);
  // a node without one gets a new shard with a never-used id.
  std::vector<Draft> drafts;
  std::vector<std::vector<size_t>> previous_replicas;   // per draft: live previous replicas, in order
  std::unordered_map<uint32_t, size_t> draft_of_shard;  // previous shard id -> draft
  std::vector<bool> has_shard(nodes.size(), false);
  uint32_t next_id = previous != nullptr ? previous->next_shard_id() : 0;
  if (previous != nullptr) {
    for (const Shard& shard : previous->shards()) {
      auto primary = index_of.find(shard.nodes[0]);
      if (primary == index_of.end() || has_shard[primary->second]) continue;
      has_shard[primary->second] = true;
      draft_of_shard.emplace(shard.id, drafts.size());
      Draft d;
      d.id = shard.id;
      d.nodes = {primary->second};
      d.kept = {true};
      drafts.push_back(std::move(d));
      std::vector<size_t> replicas;
      for (size_t pos = 1; pos < shard.nodes.size(); ++pos) {
        if (auto it = index_of.find(shard.nodes[pos]); it != index_of.end()) replicas.push_back(it->second);
      }
      previous_replicas.push_back(std::move(replicas));
    }
  }
  for (size_t node = 0; node < nodes.size(); ++node) {
    if (has_shard[node]) continue;
    if (next_id == std::numeric_limits<uint32_t>::max()) return Invalid("shard ids are exhausted");
    Draft d;
    d.id = next_id++;
    d.nodes = {node};
    d.kept = {false};
    drafts.push_back(std::move(d));
    previous_replicas.emplace_back();
  }

  // Slots: a surviving shard keeps its slots up to its target; the rest
  // (a dissolved shard's, a shrinking shard's highest) go, in ascending
  // order, to the shards below their target, in id order.
  constexpr size_t kFree = std::numeric_limits<size_t>::max();
  std::vector<size_t> owner(kSlotCount, kFree);
  if (previous != nullptr) {
    for (uint32_t slot = 0; slot < kSlotCount; ++slot) {
      auto it = draft_of_shard.find(previous->ShardForSlot(slot).id);
      if (it == draft_of_shard.end()) continue;
      owner[slot] = it->second;
      ++drafts[it->second].size;
    }
  }
  // Targets within one of even; the one-slot extras go to the largest
  // shards, which then give away the least.
  std::vector<size_t> by_size(drafts.size());
  std::iota(by_size.begin(), by_size.end(), 0);
  std::sort(by_size.begin(), by_size.end(), [&](size_t a, size_t b) {
    return drafts[a].size != drafts[b].size ? drafts[a].size > drafts[b].size : drafts[a].id < drafts[b].id;
  });
  const uint32_t count = static_cast<uint32_t>(drafts.size());
  for (uint32_t rank = 0; rank < count; ++rank) {
    drafts[by_size[rank]].target = kSlotCount / count + (rank < kSlotCount % count ? 1 : 0);
  }
  for (uint32_t slot = kSlotCount; slot-- > 0;) {
    if (owner[slot] == kFree) continue;
    Draft& d = drafts[owner[slot]];
    if (d.size > d.target) {
      owner[slot] = kFree;
      --d.size;
    }
  }
  std::vector<size_t> by_id(drafts.size());
  std::iota(by_id.begin(), by_id.end(), 0);
  std::sort(by_id.begin(), by_id.end(), [&](size_t a, size_t b) { return drafts[a].id < drafts[b].id; });
  size_t receiver = 0;
  for (uint32_t slot = 0; slot < kSlotCount; ++slot) {
    if (owner[slot] != kFree) continue;
    while (drafts[by_id[receiver]].size >= drafts[by_id[receiver]].target) ++receiver;
    owner[slot] = by_id[receiver];
    ++drafts[by_id[receiver]].size;
  }

  AssignReplicas(drafts, previous_replicas, nodes.size(), replication);

  std::vector<Shard> shards(drafts.size());
  for (size_t i = 0; i < drafts.size(); ++i) {
    shards[i].id = drafts[i].id;
    for (size_t node : drafts[i].nodes) shards[i].nodes.push_back(nodes[node]);
  }
  for (uint32_t slot = 0; slot < kSlotCount; ++slot) shards[owner[slot]].slots.push_back({slot, slot});
  auto map = ShardMap::Create(replication, std::move(nodes), std::move(shards), next_id);
  if (!map) {
    // A planner bug, never bad input: the inputs were validated above.
    return MakeError(ErrorCode::kInternal, "planned an invalid map: " + map.error().message);
  }
  return map;
}

uint32_t MapDiff::MovedSlots() const {
  uint32_t count = 0;
  for (const SlotMove& move : moves) count += move.slots.size();
  return count;
}

MapDiff Diff(const ShardMap& from, const ShardMap& to) {
  MapDiff diff;
  for (uint32_t slot = 0; slot < kSlotCount; ++slot) {
    const uint32_t old_shard = from.ShardForSlot(slot).id;
    const uint32_t new_shard = to.ShardForSlot(slot).id;
    if (old_shard == new_shard) continue;
    if (!diff.moves.empty()) {
      SlotMove& last = diff.moves.back();
      if (last.slots.last + 1 == slot && last.from_shard == old_shard && last.to_shard == new_shard) {
        last.slots.last = slot;
        continue;
      }
    }
    diff.moves.push_back({{slot, slot}, old_shard, new_shard});
  }

  static const std::vector<std::string> kNone;
  auto old_it = from.shards().begin();
  auto new_it = to.shards().begin();
  while (old_it != from.shards().end() || new_it != to.shards().end()) {
    // Both lists are sorted by id: walk them together.
    const bool take_old = new_it == to.shards().end() || (old_it != from.shards().end() && old_it->id <= new_it->id);
    const bool take_new = old_it == from.shards().end() || (new_it != to.shards().end() && new_it->id <= old_it->id);
    const std::vector<std::string>& old_nodes = take_old ? old_it->nodes : kNone;
    const std::vector<std::string>& new_nodes = take_new ? new_it->nodes : kNone;
    ReplicaChange change;
    change.shard = take_old ? old_it->id : new_it->id;
    for (const std::string& node : new_nodes) {
      if (!Contains(old_nodes, node)) change.added.push_back(node);
    }
    for (const std::string& node : old_nodes) {
      if (!Contains(new_nodes, node)) change.removed.push_back(node);
    }
    if (!change.added.empty() || !change.removed.empty()) diff.replicas.push_back(std::move(change));
    if (take_old) ++old_it;
    if (take_new) ++new_it;
  }
  return diff;
}

}  // namespace cachet::cluster
