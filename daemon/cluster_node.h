// ClusterNode: this cachetd as a member of a sharded cluster (docs/design.md,
// "Cluster: the node"; docs/operations.md, "Cluster").
//
// Membership, the shard map and its epoch live in etcd. The node registers
// itself under a lease that a thread of LeaseKeeper renews, and a watch on
// the cluster's prefix re-reads the map and the node directory on every
// change, into an immutable ClusterView that the server thread reads for
// every keyed request (Route). Slots the node gains in a new epoch are first
// cleared of any keys it still holds for them, then imported from their
// previous owner on a thread of the node's own (SLOTDUMP), while the server
// serves writes to them and answers a local miss with ASK.
//
// Each shard's primary is elected in etcd (a key bound to the winner's
// lease, made in a transaction that fails if the key exists), among the
// copies that hold the whole shard, the most up-to-date first
// (docs/design.md, "Cluster: replication and failover"); the election runs
// on a thread of its own, which also registers the node again after a lost
// lease. The data itself moves in Replication, on the server thread.
//
// Threads: Route, GuardWrite, view() and the stats are for the server
// thread (view() from any); the watch, lease, election and import threads
// only publish new views. The cache is shared: the importer writes into it
// through its own writer lock, serialized per key with the server's writes
// by the import mutex (GuardWrite).
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_set>
#include <vector>

#include "cachet/cache.h"
#include "cachet/result.h"
#include "config.h"

namespace spdlog {
class logger;
}

namespace cachet::cluster {
class ShardMap;
class EtcdClient;
class EtcdWatch;
class LeaseKeeper;
struct KeyValue;
}  // namespace cachet::cluster

namespace cachet::daemon {

// A copy's place in its shard's history: the (term, seq) of the last write
// it holds. Terms are the etcd revisions at which primaries were elected, so
// a later primary's writes order after an earlier one's.
struct ShardPosition {
  uint64_t term = 0;
  uint64_t seq = 0;
  bool operator==(const ShardPosition& o) const { return term == o.term && seq == o.seq; }
  bool operator!=(const ShardPosition& o) const { return !(*this == o); }
};
inline bool Behind(const ShardPosition& a, const ShardPosition& b) {
  return a.term < b.term || (a.term == b.term && a.seq < b.seq);
}

// What the node knows of the cluster at one epoch. Immutable once published.
struct ClusterView {
  // kMine: this node is the slot's shard's elected primary. kReplica: it
  // holds a copy of the shard and another node leads it.
  enum SlotState : uint8_t { kOther = 0, kMine = 1, kImporting = 2, kReplica = 3 };
  struct Primary {
    std::string node;
    std::string endpoint;
    uint64_t term = 0;  // the etcd revision of its election
  };

  uint64_t epoch = 0;                            // 0: no map yet
  std::shared_ptr<const cluster::ShardMap> map;  // null until a map exists
  std::string map_json;                          // as stored in etcd
  std::map<std::string, std::string> endpoints;  // registered (live) node id -> endpoint
  std::map<uint32_t, Primary> primaries;         // shard id -> its primary, while it holds its lease
  std::set<uint32_t> elected_before;             // shards that have had a primary (their data has a history)
  std::map<uint32_t, std::map<std::string, ShardPosition>> candidates;  // shard -> standing node -> position
  uint32_t replication = 1;                                             // the cluster's target copies per shard
  bool strong = true;                                                   // the cluster's consistency mode
  std::vector<uint8_t> slot_state;                                      // kSlotCount entries
  std::vector<std::string> import_source;  // kSlotCount entries: endpoint, for kImporting slots
  // The cluster's rate-limit policy text and the etcd revision that wrote
  // it (0: none yet). Every node runs it; a SIGHUP that changes a node's
  // policy file replaces it (docs/operations.md, "Cluster").
  std::string policy;
  uint64_t policy_revision = 0;
};

// Erases every key of `cache` whose slot is set in `slots` (kSlotCount
// entries); returns how many. Walks the whole index.
size_t DropKeysOfSlots(Cache& cache, const std::vector<uint8_t>& slots);

class ClusterNode {
 public:
  // Registers this node, reads the cluster's map (making one with this node
  // alone when the cluster has none) and starts following etcd. Fails with
  // the reason when etcd cannot be reached or refuses.
  static Result<std::unique_ptr<ClusterNode>> Join(const ClusterSettings& settings, Cache& cache,
                                                   std::shared_ptr<spdlog::logger> log);
  // Stops following etcd and importing, and revokes the lease (the node is
  // down for the cluster at once).
  ~ClusterNode();
  ClusterNode(const ClusterNode&) = delete;
  ClusterNode& operator=(const ClusterNode&) = delete;

  // Where a request for `key` is served. kOk: here. kMoved: at
  // `redirect_endpoint`. kClusterDown: nowhere now (`message` says why).
  // For a read served here, `ask_on_miss` names the node to send it to if
  // the key is not here (the slot is being imported from it).
  // A read on a replica (`replica`, eventual mode only) is served here only
  // while the copy is whole (Replication::Synced); else it goes to
  // `primary_endpoint`.
  struct Route {
    ErrorCode status = ErrorCode::kOk;
    uint64_t epoch = 0;
    uint32_t slot = 0;
    uint32_t shard = 0;
    bool replica = false;
    std::string endpoint;  // kMoved: where; kOk: the import source, or empty
    std::string primary_endpoint;
    std::string message;
    bool ask_on_miss() const { return status == ErrorCode::kOk && !endpoint.empty(); }
  };
  // `write`: the op changes the key. `must_have`: the op's result depends on
  // the key's current value (INCR, DEL, a conditional SET): refused with
  // CLUSTER_DOWN on a slot being imported whose key is not here yet.
  Route RouteKey(std::string_view key, bool write, bool asking) const;
  // Held around a write served on a slot being imported: the importer skips
  // keys written here meanwhile. An empty lock for any other slot.
  std::unique_lock<std::mutex> GuardWrite(std::string_view key);

  std::shared_ptr<const ClusterView> view() const;
  // False once this node's lease may have lapsed (a margin before etcd can
  // expire it): a primary then stops acknowledging, as another may be
  // elected as soon as the lease is gone.
  bool LeaseFresh() const;
  // This node's copy of `shard`, for the election (from the server thread).
  // `whole`: it holds the shard's full data up to `position`.
  void SetPosition(uint32_t shard, ShardPosition position, bool whole);
  // Makes `text` the cluster's rate-limit policy (every node follows it
  // through its watch); with `only_if_absent`, only when the cluster has
  // none. The revision written, or 0 when one was there already.
  Result<uint64_t> PutPolicy(const std::string& text, bool only_if_absent);
  // Slot ranges whose import finished since the last call, by shard: the
  // primary sends its replicas a full copy of those shards again.
  std::vector<uint32_t> TakeResyncs();
  const ClusterSettings& settings() const { return settings_; }
  uint64_t epoch() const { return view()->epoch; }

  struct Stats {
    uint64_t epoch = 0;
    uint64_t owned_slots = 0;
    uint64_t importing_slots = 0;
    uint64_t imported_keys = 0;
    uint64_t import_failures = 0;
    uint64_t shards_without_primary = 0;
    bool registered = false;
  };
  Stats stats() const;

 private:
  struct ImportJob {
    uint64_t epoch;
    std::string source;
    std::vector<std::pair<uint32_t, uint32_t>> ranges;  // slots, both ends included
  };

  ClusterNode(ClusterSettings settings, Cache& cache, std::shared_ptr<spdlog::logger> log);
  Result<void> Register();
  Result<void> Bootstrap();
  // The election (docs/design.md, "Cluster: replication and failover").
  void ElectLoop();
  void Elect();
  void Claim(uint32_t shard, const char* why);
  void Resign(uint32_t shard, uint64_t term, const char* why);
  // Re-reads the map and the directory from etcd and publishes the view.
  Result<void> Refresh();
  Result<void> Parse(const std::vector<cluster::KeyValue>& kvs, ClusterView& view) const;
  void LogChanges(const ClusterView& before, const ClusterView& after) const;
  void Publish(std::shared_ptr<const ClusterView> next);
  void DropKeysOf(const std::vector<uint8_t>& slots);
  void ImportLoop();
  bool RunImport(const ImportJob& job);
  void FinishImport(const ImportJob& job);
  std::string Prefix() const { return "/cachet/" + settings_.name + "/"; }

  const ClusterSettings settings_;
  Cache& cache_;
  std::shared_ptr<spdlog::logger> log_;
  std::unique_ptr<cluster::EtcdClient> etcd_;
  mutable std::mutex lease_mutex_;  // guards the pointer: the election thread replaces it
  std::unique_ptr<cluster::LeaseKeeper> lease_;
  std::unique_ptr<cluster::EtcdWatch> watch_;

  mutable std::mutex view_mutex_;
  std::shared_ptr<const ClusterView> view_;
  std::mutex refresh_mutex_;  // one Refresh at a time (watch thread, importer)

  std::mutex import_mutex_;                  // guards touched_ and the importer's writes
  std::unordered_set<std::string> touched_;  // keys written here on importing slots
  std::mutex jobs_mutex_;
  std::condition_variable jobs_cv_;
  std::deque<ImportJob> jobs_;
  bool stopping_ = false;
  std::thread importer_;
  std::thread elector_;

  struct Copy {
    ShardPosition position;
    bool whole = false;
  };
  mutable std::mutex copies_mutex_;
  std::map<uint32_t, Copy> copies_;  // guarded by copies_mutex_
  struct Stood {
    ShardPosition position;
    std::chrono::steady_clock::time_point at;
  };
  std::map<uint32_t, Stood> stood_;  // elector thread: candidacies put under candidates/, and when
  std::map<uint32_t, std::chrono::steady_clock::time_point> headless_since_;  // elector thread
  std::vector<uint32_t> resyncs_;                                             // guarded by jobs_mutex_
  // Per slot, the shard and primary endpoint that last served it (under
  // refresh_mutex_): a slot that comes to this node from another shard is
  // imported from there; one whose shard only changed primary is not.
  std::vector<std::pair<uint32_t, std::string>> last_owner_;
  std::atomic<uint64_t> imported_keys_{0};
  std::atomic<uint64_t> import_failures_{0};
  std::atomic<bool> registered_{false};
  std::atomic<bool> reregister_{false};
};

}  // namespace cachet::daemon
