// Replication: the data plane of a cluster node's shards (docs/design.md,
// "Cluster: replication and failover"; the REPLICATE op in
// docs/protocol.md).
//
// A shard's primary streams the state of every key it writes, as entries
// numbered (term, seq), to the shard's other nodes over a DEALER socket per
// peer; a copy that cannot continue from what it holds gets a full copy of
// the shard (its keys dropped, then pages of the primary's keys, with the
// stream carrying on beside them) and is whole only once the copy ends.
// Entries carry a key's resulting value and TTL, never the op, so applying
// one twice, or after a page that already holds it, changes nothing.
//
// In strong mode a write's reply is held until a majority of the shard's
// nodes (the primary counts) hold its entry, and a read of a key with a
// write not yet held so is held too; a reply not released within
// kCommitTimeout fails with TIMEOUT (the write may or may not persist). A
// primary releases nothing once its lease may have lapsed. Replicas refuse
// entries from a term older than one they have seen (the fence for a
// deposed primary).
//
// Everything here runs on the server thread; the positions of the copies go
// to ClusterNode for the election.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>
#include <zmq.hpp>

#include "cachet/cache.h"
#include "cluster_node.h"
#include "protocol.h"

namespace spdlog {
class logger;
}

namespace cachet::cluster {
struct Shard;
}

namespace cachet::daemon {

// What a strong reply waits for: `seq` of `shard` held by a majority.
struct CommitWait {
  uint32_t shard = 0;
  uint64_t seq = 0;
};

// A reply the server has built but may not send before its write commits.
struct HeldReply {
  std::string routing_id;
  bool req_envelope = false;
  uint64_t request_id = 0;
  std::string data;  // the encoded reply
  std::chrono::steady_clock::time_point deadline;
};

class Replication {
 public:
  using Clock = std::chrono::steady_clock;
  static constexpr std::chrono::milliseconds kCommitTimeout{2000};

  Replication(ClusterNode& node, Cache& cache, zmq::context_t& context, std::shared_ptr<spdlog::logger> log);
  ~Replication();
  Replication(const Replication&) = delete;
  Replication& operator=(const Replication&) = delete;

  // Catches up with the node's view: leads the shards this node was
  // elected for, stops leading the others, follows the rest.
  void Follow();

  // Primary: records `key`'s state after a write to it (a no-op for a key
  // of no shard this node leads). Adds what a strong reply waits for.
  void Record(std::string_view key, std::vector<CommitWait>& waits);
  // For a read of `key` on a shard this node leads: adds what its reply
  // waits for (the key's last write, or the term's start), if anything.
  void ReadBarrier(std::string_view key, std::vector<CommitWait>& waits) const;
  // True if a reply waiting for `waits` may go now.
  bool Committed(const std::vector<CommitWait>& waits) const;
  void Hold(std::vector<CommitWait> waits, HeldReply reply);

  // Sends followers what they lack, reads their answers and moves the
  // commit. Replies released (or failed) go to `ready`. Returns true while
  // there is more to send (a full copy under way): poll without waiting.
  bool Pump(std::vector<HeldReply>& ready);
  // Stops leading every shard; the replies still held go to `ready` as
  // TIMEOUT errors. For shutdown.
  void StopAll(std::vector<HeldReply>& ready);
  // The peers' sockets, to poll with the server's.
  void AddPollItems(std::vector<zmq::pollitem_t>& items);

  // Replica: a REPLICATE request.
  void Handle(uint64_t id, const msgpack::object* args, uint32_t count, wire::Writer& out);
  // This node holds the whole of `shard` (reads may be served from it).
  bool Whole(uint32_t shard) const;

  struct Stats {
    uint64_t led_shards = 0;
    uint64_t followed_shards = 0;
    uint64_t max_lag = 0;  // entries, over the followers of the shards led
    uint64_t held = 0;
    uint64_t commit_timeouts = 0;
    uint64_t full_syncs = 0;
    uint64_t entries_applied = 0;
  };
  Stats stats() const;
  // One row per shard this node holds, for STATS (codes in docs/operations.md).
  enum class Role { kPrimary = 1, kReplica = 2, kCopying = 3 };  // kCopying: not whole yet
  struct ShardRow {
    uint32_t shard = 0;
    Role role = Role::kCopying;
    uint64_t term = 0;  // the newest term this copy knows: a primary's own
    uint64_t seq = 0;   // the last entry this copy holds
    uint64_t lag = 0;   // primary: its slowest follower, as in Stats::max_lag
  };
  std::vector<ShardRow> Shards() const;
  // Per follower of each shard led: entries behind, or -1 while not whole.
  std::map<std::string, int64_t> Lag() const;

 private:
  struct Entry;
  struct Log;
  struct Copy;
  struct Follower;
  struct Led;
  struct Peer;

  // A new view: leads, stops leading and follows as it says.
  void Adopt(std::shared_ptr<const ClusterView> v);
  void StartLeading(uint32_t shard, uint64_t term, const cluster::Shard& layout);
  void StopLeading(uint32_t shard, const std::string& why, std::vector<HeldReply>* failed);
  void SetFollowers(Led& led, const cluster::Shard& layout, const ClusterView& view);
  bool PumpFollower(uint32_t shard, Led& led, Follower& f, Clock::time_point now);
  void StartSync(uint32_t shard, Led& led, Follower& f);
  bool SendStream(uint32_t shard, Led& led, Follower& f);
  bool SendPages(uint32_t shard, Led& led, Follower& f);
  void ReadReplies(Peer& peer);
  void OnReply(const std::string& endpoint, uint64_t id, const msgpack::object& payload);
  void AdvanceCommit(uint32_t shard, Led& led);
  void Release(std::vector<HeldReply>& ready, Clock::time_point now);
  void Fail(HeldReply& reply, const std::string& why);
  Led* LedFor(std::string_view key, uint32_t* shard) const;
  Peer& PeerFor(const std::string& endpoint);
  bool Send(Peer& peer, const wire::Writer& request);
  void Publish(uint32_t shard);
  static uint64_t WorstLag(const Led& led, uint64_t last);

  ClusterNode& node_;
  Cache& cache_;
  zmq::context_t& context_;
  std::shared_ptr<spdlog::logger> log_;
  const std::string self_;
  std::shared_ptr<const ClusterView> view_;  // the view last followed

  std::map<uint32_t, std::unique_ptr<Copy>> copies_;    // every shard this node holds
  std::map<uint32_t, std::unique_ptr<Led>> led_;        // the shards it leads
  std::map<std::string, std::unique_ptr<Peer>> peers_;  // by endpoint
  struct Held {
    std::vector<CommitWait> waits;
    HeldReply reply;
  };
  std::deque<Held> held_;          // in arrival order
  std::vector<HeldReply> failed_;  // failed on StopLeading; sent by the next Pump
  uint64_t next_request_ = 1;

  uint64_t commit_timeouts_ = 0;
  uint64_t full_syncs_ = 0;
  uint64_t entries_applied_ = 0;
};

}  // namespace cachet::daemon
