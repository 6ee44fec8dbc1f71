// cachet::Client: talks to a cachetd daemon.
//
// Connect with the daemon's endpoint:
//   "ipc:///run/cachet/cachetd.sock"  same host: GET, MGET, EXISTS and TTL read
//                                     the daemon's shared-memory segment
//                                     directly (no syscall, no lock); SET,
//                                     MSET, DEL, EXPIRE, INCR and DECR write
//                                     it directly (under the segment's writer
//                                     lock) while the daemon grants that (a
//                                     standalone daemon does, by default);
//                                     every other op goes over the ipc socket.
//   "tcp://10.0.0.5:7379"             another host: everything over TCP
//                                     (ZeroMQ; CURVE when configured).
//   "stream://127.0.0.1:7378"         the daemon's stream endpoint: the same
//                                     requests on a plain TCP connection,
//                                     without ZeroMQ's I/O threads (the
//                                     fastest round trip; clear text only).
// The API is the same for all.
//
// Failures are values: a miss is an empty optional, a timeout or an
// unreachable daemon is an Error with code TIMEOUT or UNAVAILABLE. Input the
// daemon would refuse is refused here first, with the daemon's code
// (docs/protocol.md, "Limits"): an empty or over-long key is KEY_TOO_LARGE
// for every call (never a miss), an over-long value VALUE_TOO_LARGE, a TTL
// over Cache::kMaxTtl (or below 0, but for Expire) INVALID_ARGUMENT. No call
// throws, none waits longer than `timeout * (retries + 1)` plus backoff, and
// a daemon that dies or restarts never crashes the client: the socket is
// rebuilt after a failure, and the shared-memory segment is re-attached when
// the daemon rebuilt it (new generation).
//
// Client implements KeyValueClient (cachet/key_value_client.h, where the
// shared operations' contract is), so code written against that interface
// runs on one node or, with ClusterClient, on a cluster; Scan, Stats, Flush,
// Reload and RateLimit are this daemon's own.
//
// Thread safety: a Client may be shared by threads. Shared-memory reads run
// in parallel without a lock; socket round trips are serialized by a mutex
// inside the Client (use one Client per thread for parallel writes).
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
#include "cachet/curve.h"
#include "cachet/decision.h"
#include "cachet/key_value_client.h"
#include "cachet/result.h"

namespace cachet {

struct ClientOptions {
  // Longest wait for one reply.
  std::chrono::milliseconds timeout{1000};
  // Extra attempts for idempotent ops (GET, SET without condition, DEL, ...);
  // INCR/DECR and conditional SETs are never retried (they could apply twice).
  int retries = 2;
  // Wait before the first retry; doubled for each further one.
  std::chrono::milliseconds backoff{20};
  // For ipc:// endpoints: read through the shared-memory segment.
  bool shared_memory_reads = true;
  // For ipc:// endpoints, with shared_memory_reads: write the segment
  // directly while the daemon grants it, else over the socket.
  bool shared_memory_writes = true;
  // For tcp:// endpoints of a daemon with CURVE: its public key and this
  // client's key pair (CurveClientKeys::Load reads them from key files).
  CurveClientKeys curve;
};

// STATS as name/value pairs, in the daemon's order.
using StatsList = std::vector<std::pair<std::string, int64_t>>;

class Client : public KeyValueClient {
 public:
  static Result<std::unique_ptr<Client>> Connect(const std::string& endpoint, const ClientOptions& options = {});
  ~Client() override;
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  Result<void> Ping() final;
  Result<std::optional<std::string>> Get(std::string_view key) final;
  // Like Get, reusing `value`'s buffer (no allocation on the shared-memory
  // path once it is large enough). True on a hit; on a miss `*value` is unspecified.
  Result<bool> GetInto(std::string_view key, std::string* value) final;
  Result<bool> Set(std::string_view key, std::string_view value, const SetOptions& options = {}) final;
  Result<bool> Del(std::string_view key) final;
  Result<bool> Exists(std::string_view key) final;
  // ttl <= 0 deletes the key. False if the key is absent.
  Result<bool> Expire(std::string_view key, std::chrono::milliseconds ttl) final;
  // Remaining TTL, Cache::kNoExpiry if none; empty optional if the key is absent.
  Result<std::optional<std::chrono::milliseconds>> Ttl(std::string_view key) final;
  Result<int64_t> Incr(std::string_view key, int64_t delta = 1,
                       std::chrono::milliseconds ttl_on_create = std::chrono::milliseconds(0)) final;
  Result<int64_t> Decr(std::string_view key, int64_t delta = 1) final;
  Result<std::vector<std::optional<std::string>>> MGet(const std::vector<std::string>& keys) final;
  Result<void> MSet(const std::vector<std::pair<std::string, std::string>>& items) final;
  Result<Cache::ScanPage> Scan(uint64_t cursor, std::string_view pattern = {}, uint32_t count = 64);
  Result<StatsList> Stats();
  Result<void> Flush();
  // Asks the daemon to re-read its configuration file (as SIGHUP does).
  Result<void> Reload();
  // One rate-limit decision made by the daemon against its policy, shared
  // by every client of that daemon. Never retried (it consumes).
  Result<Decision> RateLimit(std::string_view key, std::string_view tier, uint64_t cost = 1);

  // True while reads go through shared memory.
  bool ReadsSharedMemory() const;
  // True while writes go through shared memory (the daemon grants them).
  bool WritesSharedMemory() const;
  const std::string& endpoint() const;

  class Impl;

 private:
  explicit Client(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace cachet
