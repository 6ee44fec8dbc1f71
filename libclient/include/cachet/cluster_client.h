// cachet::ClusterClient: talks to a sharded cachet cluster (docs/operations.md,
// "Cluster") through the same KeyValueClient interface as cachet::Client, so
// an application switches from one node to a cluster with the line that
// connects:
//
//   cachet::ClusterClientOptions options;
//   options.seeds = {"tcp://10.0.0.5:7379", "tcp://10.0.0.6:7379"};
//   auto connected = cachet::ClusterClient::Connect(options);
//   std::unique_ptr<cachet::KeyValueClient> cache = std::move(*connected);
//
// Connect learns the shard map and the node directory, by the CLUSTER op
// from the first seed that answers, else from etcd (the keys
// /cachet/<cluster>/map and /cachet/<cluster>/nodes/). Each key goes to the
// primary of its hash slot's shard. A node that no longer serves the slot
// answers MOVED with the map epoch it knows and the node that does: the
// client refreshes its map when that epoch is newer than its own and retries
// there, up to `max_redirects` times per key (then a MOVED error naming the
// last node, so a loop between misconfigured nodes ends). A MOVED from a node
// whose epoch is older than the client's is a node still catching up: the
// request is retried after a backoff, as CLUSTER_DOWN. A node importing
// the slot answers a read of a key it has not got yet with ASK: that one read
// is retried once at the old owner, wrapped in ASK, and the map is kept.
// CLUSTER_DOWN (a node without a map, or cut from etcd) and an unreachable
// node are retried after a doubling backoff, with a map refresh, until the
// call's budget `timeout * (retries + 1)` is spent. Requests refused with
// MOVED, ASK or CLUSTER_DOWN were not applied, so even INCR and conditional
// SETs follow them. A timeout, where the node may have applied the request,
// is retried for reads only: a write (SET, DEL, EXPIRE, INCR, an MSET part)
// comes back as TIMEOUT, "may or may not have been applied". Retrying even a
// plain SET could apply it a second time after another client's later
// write (a primary holding the first attempt's reply for its replicas, then
// failing over), which a strong cluster must not do.
//
// In an eventual-mode cluster, reads (GET, EXISTS, TTL, MGET) go to the
// shard's nodes in turn, replicas included, so they may return a value a
// little behind the primary's; writes always go to the primary. In strong
// mode everything goes to the primary.
//
// MGET and MSET are split by node: every part is sent before any reply is
// awaited, so a call costs one round trip to the slowest node, and MGET
// returns the values in the order of its keys. A part refused with a
// redirect is redone key by key through the redirect rules.
//
// Whole-cache operations:
//   Ping   every node that is some shard's primary must answer.
//   Scan   walks the whole cluster, one node after another; the cursor holds
//          the node's position in the map (top 16 bits) and that node's own
//          cursor (low 48 bits). A node returns only keys its shard owns in
//          the client's map. Keys moved by a map change during a scan may be
//          missed or returned twice (as a single node's resize can).
//   Stats  per node: one entry for each primary, with its counters or the
//          error that node gave.
//   Flush  every registered node flushes (replicas too: FLUSH is not
//          replicated); all are asked even if one fails, and the
//          first failure is returned naming its node.
// RateLimit is routed as a write to the key's primary, which decides by its
// own policy and counters: strict rate limiting, one count per key for the
// whole cluster (cachet::DaemonRateLimiter::ConnectCluster wraps it with a
// failure mode). RELOAD is a node's own: use cachet::Client on that node.
//
// Failures are values, as for cachet::Client: nothing throws, and a node
// that dies makes the calls routed to it fail with UNAVAILABLE or TIMEOUT
// (naming the node) until the map moves its slots elsewhere.
//
// Thread safety: a ClusterClient may be shared by threads; calls are
// serialized by a mutex inside it (use one per thread for parallel calls).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "cachet/cache.h"
#include "cachet/client.h"
#include "cachet/curve.h"
#include "cachet/key_value_client.h"
#include "cachet/result.h"

namespace cachet {

struct ClusterClientOptions {
  // Nodes to ask for the map (tcp:// endpoints of any cluster nodes).
  std::vector<std::string> seeds;
  // etcd client URLs, comma-separated ("http://10.0.0.2:2379,..."), and the
  // cluster's name: used when no seed answers. Either seeds or both of
  // these must be given.
  std::string etcd_endpoints;
  std::string cluster;
  // Longest wait for one reply.
  std::chrono::milliseconds timeout{1000};
  // Extra attempts after a lost connection (any op) or a timeout (reads);
  // the call's whole budget is timeout * (retries + 1).
  int retries = 2;
  // Wait before the first retry; doubled for each further one.
  std::chrono::milliseconds backoff{20};
  // MOVED replies followed for one key before giving up.
  int max_redirects = 5;
  // The cluster's public key (its nodes share one key pair) and this
  // client's key pair, when the nodes speak CURVE.
  CurveClientKeys curve;

  Result<void> Validate() const;
};

// STATS of one node.
struct NodeStats {
  std::string node;      // node id
  std::string endpoint;  // its tcp:// endpoint
  std::optional<Error> error;
  StatsList stats;  // empty when `error` is set
};

class ClusterClient final : public KeyValueClient {
 public:
  static Result<std::unique_ptr<ClusterClient>> Connect(const ClusterClientOptions& options);
  ~ClusterClient() override;

  Result<void> Ping() override;
  Result<std::optional<std::string>> Get(std::string_view key) override;
  Result<bool> GetInto(std::string_view key, std::string* value) override;
  Result<bool> Set(std::string_view key, std::string_view value, const SetOptions& options = {}) override;
  Result<bool> Del(std::string_view key) override;
  Result<bool> Exists(std::string_view key) override;
  Result<bool> Expire(std::string_view key, std::chrono::milliseconds ttl) override;
  Result<std::optional<std::chrono::milliseconds>> Ttl(std::string_view key) override;
  Result<int64_t> Incr(std::string_view key, int64_t delta = 1,
                       std::chrono::milliseconds ttl_on_create = std::chrono::milliseconds(0)) override;
  Result<int64_t> Decr(std::string_view key, int64_t delta = 1) override;
  Result<std::vector<std::optional<std::string>>> MGet(const std::vector<std::string>& keys) override;
  Result<void> MSet(const std::vector<std::pair<std::string, std::string>>& items) override;

  // One decision by the primary of `key`'s slot (see above). Never retried
  // after a timeout (it consumes).
  Result<Decision> RateLimit(std::string_view key, std::string_view tier, uint64_t cost = 1);

  // Whole-cluster operations (see above).
  Result<Cache::ScanPage> Scan(uint64_t cursor, std::string_view pattern = {}, uint32_t count = 64);
  Result<std::vector<NodeStats>> Stats();
  Result<void> Flush();

  // Fetches the map again (CLUSTER on a known node, else etcd).
  Result<void> RefreshMap();
  // The epoch of the map in use.
  uint64_t epoch() const;
  // The node a key is sent to first: {node id, endpoint}.
  Result<std::pair<std::string, std::string>> NodeForKey(std::string_view key) const;

  class Impl;

 private:
  explicit ClusterClient(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace cachet
