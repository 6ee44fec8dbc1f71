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
// Threads: Route, GuardWrite, view() and the stats are for the server
// thread (view() from any); the watch, lease and import threads only
// publish new views. The cache is shared: the importer writes into it
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
}  // namespace cachet::cluster

namespace cachet::daemon {

// What the node knows of the cluster at one epoch. Immutable once published.
struct ClusterView {
  enum SlotState : uint8_t { kOther = 0, kMine = 1, kImporting = 2 };

  uint64_t epoch = 0;                            // 0: no map yet
  std::shared_ptr<const cluster::ShardMap> map;  // null until a map exists
  std::string map_json;                          // as stored in etcd
  std::map<std::string, std::string> endpoints;  // registered (live) node id -> endpoint
  std::vector<uint8_t> slot_state;               // kSlotCount entries
  std::vector<std::string> import_source;        // kSlotCount entries: endpoint, for kImporting slots
};

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
  struct Route {
    ErrorCode status = ErrorCode::kOk;
    uint64_t epoch = 0;
    uint32_t slot = 0;
    std::string endpoint;  // kMoved: where; kOk: the import source, or empty
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
  const ClusterSettings& settings() const { return settings_; }
  uint64_t epoch() const { return view()->epoch; }

  struct Stats {
    uint64_t epoch = 0;
    uint64_t owned_slots = 0;
    uint64_t importing_slots = 0;
    uint64_t imported_keys = 0;
    uint64_t import_failures = 0;
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
  // Re-reads the map and the directory from etcd and publishes the view.
  Result<void> Refresh();
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

  std::atomic<uint64_t> imported_keys_{0};
  std::atomic<uint64_t> import_failures_{0};
  std::atomic<bool> registered_{false};
  std::atomic<bool> reregister_{false};
};

}  // namespace cachet::daemon
