// cachet::GossipMembership: a GossipRateLimiter's peers from the cluster's
// membership in etcd, instead of a static list.
//
//   cachet::GossipMembershipOptions m;
//   m.etcd = "http://10.0.0.9:2379";
//   m.cluster = "prod";                  // cachetd's `cluster`
//   m.advertise = "tcp://10.0.0.1:7400"; // what peers connect to
//   auto membership = cachet::GossipMembership::Join(*limiter, m);
//
// Join registers the limiter under /cachet/<cluster>/limiters/<node_id> with
// its endpoint, bound to a lease that a thread renews, and hands the limiter
// every endpoint registered there (SetPeers; its own is skipped). A watch on
// that directory makes every join and leave reach the limiter within a
// round trip to etcd. A limiter that dies drops out when its lease expires
// (ttl_seconds); one that stops cleanly (the destructor) at once.
//
// etcd is not on the decision path: a decision never waits for it. While
// etcd cannot be reached the limiter keeps the peers it has, and the
// membership registers again once etcd answers (its lease may have lapsed
// meanwhile). Problems are reported through on_error, once per change of
// state.
//
// Thread safety: peers() and updates() from any thread. The limiter must
// outlive the membership.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "cachet/result.h"

namespace cachet {

class GossipRateLimiter;

struct GossipMembershipOptions {
  std::string etcd;     // etcd's client URLs, comma-separated
  std::string cluster;  // the cluster's name
  // The endpoint peers connect to; empty: the limiter's endpoint(), which
  // must then name an address (not 0.0.0.0 or *).
  std::string advertise;
  // How long a limiter that died stays a peer; at least 1.
  int64_t ttl_seconds = 2;
  // Bounds each call to etcd.
  std::chrono::milliseconds etcd_timeout{1000};
  // Problems (etcd unreachable, a lost lease, a peer entry that is not an
  // endpoint); by default a line on stderr. Called from the membership's
  // threads, possibly two at once.
  std::function<void(const std::string& line)> on_error;

  Result<void> Validate() const;
};

class GossipMembership {
 public:
  // Registers the limiter and installs the peers registered now. Fails with
  // the reason when etcd cannot be reached, or when another live limiter
  // holds the same node id with another endpoint.
  static Result<std::unique_ptr<GossipMembership>> Join(GossipRateLimiter& limiter, GossipMembershipOptions options);
  // Stops watching and withdraws the registration.
  ~GossipMembership();
  GossipMembership(const GossipMembership&) = delete;
  GossipMembership& operator=(const GossipMembership&) = delete;

  // The endpoints last installed in the limiter, this one's included.
  std::vector<std::string> peers() const;
  // How many times the peers were installed (once at Join, then per change).
  uint64_t updates() const;

  class Impl;

 private:
  explicit GossipMembership(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace cachet
