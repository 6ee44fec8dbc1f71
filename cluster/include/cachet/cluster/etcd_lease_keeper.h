// LeaseKeeper: an etcd lease held for as long as this process can renew it,
// and the moment it can no longer count on it.
//
// Start() grants the lease; a thread of the keeper's own renews it every
// `interval` (a third of the TTL unless set). The lease is known to live
// until the TTL etcd last answered, counted from when that keepalive was
// sent (etcd renews it no earlier), measured on steady_clock. When that
// moment passes without a newer answer (etcd unreachable, hung or without a
// leader), or etcd answers that the lease is gone (expired or revoked), the
// keeper calls on_lost once and stops: a node must then step down, since
// etcd may already have dropped every key bound to the lease. A lost lease
// is never renewed again; start a new keeper to register again.
//
// Each keepalive waits for its answer as long as the lease surely has left
// (a late answer still extends it) and no longer, so the loss is reported
// on time even while etcd hangs.
//
// on_lost runs on the keeper's thread; it must not destroy the keeper.
// Destroying the keeper stops renewing promptly (the lease then lapses
// after its TTL); Revoke() ends it at once. lease_id(), ttl_seconds() and
// lost() are safe from any thread. Movable, not copyable.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>

#include "cachet/cluster/etcd_client.h"
#include "cachet/result.h"

namespace cachet::cluster {

struct LeaseKeeperOptions {
  int64_t ttl_seconds = 1;
  // Between keepalives; zero: a third of the granted TTL.
  std::chrono::milliseconds interval{0};

  Result<void> Validate() const;
};

class LeaseKeeper {
 public:
  using LostCallback = std::function<void(const Error& why)>;

  // Grants the lease (an error if etcd cannot be reached or refuses), then
  // starts renewing it.
  static Result<LeaseKeeper> Start(const EtcdOptions& etcd, const LeaseKeeperOptions& options, LostCallback on_lost);

  LeaseKeeper(LeaseKeeper&&) noexcept;
  LeaseKeeper& operator=(LeaseKeeper&&) noexcept;
  ~LeaseKeeper();

  int64_t lease_id() const;
  int64_t ttl_seconds() const;  // as granted
  bool lost() const;
  // The lease surely lives until here: the send time of the last keepalive
  // etcd answered, plus the TTL it granted (etcd counts from later). A
  // holder of lease-bound rights (a shard's primary) stops using them
  // before this time passes without a renewal.
  std::chrono::steady_clock::time_point expires() const;

  // Stops renewing and revokes the lease: every key bound to it is deleted
  // now. For a clean shutdown.
  [[nodiscard]] Result<void> Revoke();

 private:
  struct Impl;
  explicit LeaseKeeper(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace cachet::cluster
