// ShardMap: which nodes hold which hash slots (docs/design.md, "Cluster:
// slots, shards and rebalancing").
//
// The kSlotCount slots are grouped into shards; each shard owns a set of
// slot ranges and is held by `replication` nodes, listed preferred primary
// first (the actual primary is elected in etcd; the map only says who should
// be). The map also records the node directory it was planned for and the
// next unused shard id, so a shard id is never given to a second shard.
//
// A map is immutable once built and always valid: every slot belongs to
// exactly one shard, every shard has exactly `replication` distinct nodes,
// all in the directory. It is built by Plan (the planner), by Create (from
// parts) or by FromJson (from the etcd key `/cachet/<cluster>/map`, which any
// operator can write, so decoding validates everything and says what is
// wrong). ShardForSlot is O(1) through a table built once.
//
// Pure logic, no I/O and no clock. A const ShardMap is safe to read from any
// number of threads.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "cachet/result.h"

namespace cachet::cluster {

// Slots first..last, both included.
struct SlotRange {
  uint32_t first = 0;
  uint32_t last = 0;

  uint32_t size() const { return last - first + 1; }
  bool operator==(const SlotRange&) const = default;
};

struct Shard {
  uint32_t id = 0;                 // stable for the shard's life, never reused
  std::vector<SlotRange> slots;    // ascending, disjoint, not adjacent
  std::vector<std::string> nodes;  // node ids; nodes[0] is the preferred primary

  uint32_t SlotCount() const;
  bool operator==(const Shard&) const = default;
};

class ShardMap {
 public:
  // Validates the parts (the same rules as FromJson) and builds the lookup
  // table. Slot ranges are sorted and adjacent ranges merged; shards are
  // sorted by id. `next_shard_id` must exceed every shard id.
  [[nodiscard]] static Result<ShardMap> Create(uint32_t replication, std::vector<std::string> nodes,
                                               std::vector<Shard> shards, uint32_t next_shard_id);

  // The JSON document of docs/design.md. Unknown fields are ignored; a
  // missing field, a wrong type or a broken rule is an INVALID_ARGUMENT
  // error naming the field, shard or slot concerned.
  [[nodiscard]] static Result<ShardMap> FromJson(std::string_view json);
  std::string ToJson() const;

  uint32_t replication() const { return replication_; }
  const std::vector<std::string>& nodes() const { return nodes_; }  // sorted
  const std::vector<Shard>& shards() const { return shards_; }      // by id
  uint32_t next_shard_id() const { return next_shard_id_; }

  // The etcd mod_revision of the map key this map was read from (0 for a
  // map not read from etcd). Not part of the JSON.
  uint64_t epoch() const { return epoch_; }
  void set_epoch(uint64_t epoch) { epoch_ = epoch; }

  // REQUIRES: slot < kSlotCount.
  const Shard& ShardForSlot(uint32_t slot) const { return shards_[slot_to_shard_[slot]]; }
  const Shard& ShardForKey(std::string_view key) const;
  // nullptr if the map has no shard `id`.
  const Shard* FindShard(uint32_t id) const;

  // Equal content; the epoch is not compared.
  bool operator==(const ShardMap& other) const;

 private:
  ShardMap() = default;

  uint32_t replication_ = 0;
  std::vector<std::string> nodes_;
  std::vector<Shard> shards_;
  uint32_t next_shard_id_ = 0;
  uint64_t epoch_ = 0;
  std::vector<uint16_t> slot_to_shard_;  // kSlotCount entries: index into shards_
};

// The map for `live_nodes` with `replication` copies of every shard, moving
// as few slots and replicas as it can from `previous` (nullptr: none).
// Deterministic: the same inputs give the same map, whatever the order of
// `live_nodes`. The rules are in docs/design.md: one shard per node, slots
// within one of even, every node holding `replication` shards.
// Errors (INVALID_ARGUMENT): no live node, an empty or repeated node id,
// more live nodes than slots, replication outside 1..live node count.
[[nodiscard]] Result<ShardMap> Plan(const ShardMap* previous, const std::vector<std::string>& live_nodes,
                                    uint32_t replication);

// What a change of map moves.
struct SlotMove {
  SlotRange slots;
  uint32_t from_shard = 0;
  uint32_t to_shard = 0;
  bool operator==(const SlotMove&) const = default;
};

struct ReplicaChange {
  uint32_t shard = 0;
  std::vector<std::string> added;    // must receive a full copy of the shard
  std::vector<std::string> removed;  // may drop the shard
  bool operator==(const ReplicaChange&) const = default;
};

struct MapDiff {
  std::vector<SlotMove> moves;          // by slot; adjacent slots with one (from, to) merged
  std::vector<ReplicaChange> replicas;  // by shard id: shards whose node set changed, new
                                        // shards (all added) and dropped ones (all removed)
  uint32_t MovedSlots() const;
};

// The slots whose owning shard changes from `from` to `to`, and the nodes
// that join or leave each shard. Shards are matched by id.
MapDiff Diff(const ShardMap& from, const ShardMap& to);

}  // namespace cachet::cluster
