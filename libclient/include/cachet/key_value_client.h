// cachet::KeyValueClient: the key-value operations every cachet client has,
// so an application is written once and given one node (cachet::Client) or
// a cluster (cachet::ClusterClient) by changing the line that connects:
//
//   auto connected = cachet::Client::Connect(endpoint);  // or a cluster's
//   if (!connected) return tl::unexpected(connected.error());
//   std::unique_ptr<cachet::KeyValueClient> cache = std::move(*connected);
//   auto hit = cache->Get("session:42");
//
// The contract below holds for every implementation; a cluster adds routing
// (each key goes to its slot's shard, docs/design.md "Cluster") but no new
// outcomes. Failures are values: a miss is an empty optional, not an error;
// an empty or over-long key is KEY_TOO_LARGE, an over-long value
// VALUE_TOO_LARGE, a TTL out of range INVALID_ARGUMENT (docs/protocol.md,
// "Limits"), all refused before anything is sent; a store that cannot be
// reached in time is TIMEOUT or UNAVAILABLE. No call throws. Idempotent calls
// may be retried by the implementation; INCR, DECR and conditional SETs
// never are (they could apply twice).
//
// Only operations with one meaning on one node and on a cluster are here.
// Left to the concrete classes: SCAN (a cursor belongs to one node's index),
// STATS (per node: `cachectl cluster status` gathers a cluster's), FLUSH
// (an administrative act, not an application's), RELOAD and RATELIMIT (a
// node's configuration and policy).
//
// Thread safety: as the implementation documents (cachet::Client may be
// shared by threads). Default arguments are those declared here; an
// implementation repeats them unchanged, so a call means the same through
// the interface and through the concrete class.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "cachet/cache.h"
#include "cachet/result.h"

namespace cachet {

class KeyValueClient {
 public:
  virtual ~KeyValueClient() = default;
  KeyValueClient(const KeyValueClient&) = delete;
  KeyValueClient& operator=(const KeyValueClient&) = delete;

  // OK when the store answers. A cluster: every shard's primary answered.
  virtual Result<void> Ping() = 0;

  // The value, or an empty optional on a miss (absent or expired).
  virtual Result<std::optional<std::string>> Get(std::string_view key) = 0;
  // Like Get, reusing `value`'s buffer. True on a hit; on a miss `*value`
  // is unspecified.
  virtual Result<bool> GetInto(std::string_view key, std::string* value) = 0;

  // True if stored; false if `options.condition` was not met (kIfAbsent on a
  // present key, kIfPresent on an absent one).
  virtual Result<bool> Set(std::string_view key, std::string_view value, const SetOptions& options = {}) = 0;
  // True if the key was there.
  virtual Result<bool> Del(std::string_view key) = 0;
  virtual Result<bool> Exists(std::string_view key) = 0;
  // Sets the key's TTL; ttl <= 0 deletes the key. False if the key is absent.
  virtual Result<bool> Expire(std::string_view key, std::chrono::milliseconds ttl) = 0;
  // Remaining TTL, Cache::kNoExpiry if none; an empty optional if absent.
  virtual Result<std::optional<std::chrono::milliseconds>> Ttl(std::string_view key) = 0;

  // Adds `delta` to the decimal 64-bit integer stored at `key` (an absent key
  // counts as 0 and, if ttl_on_create > 0, is created with that TTL) and
  // returns the new value; atomic per key (on a cluster, at the key's
  // primary). NOT_INTEGER if the value is not such an integer, OVERFLOW if
  // the result would leave the 64-bit range.
  virtual Result<int64_t> Incr(std::string_view key, int64_t delta = 1,
                               std::chrono::milliseconds ttl_on_create = std::chrono::milliseconds(0)) = 0;
  virtual Result<int64_t> Decr(std::string_view key, int64_t delta = 1) = 0;

  // One result per key, in the order of `keys` (none for none, without a
  // round trip). A bad key fails the whole
  // call, naming the key by its index. Each key's value is as fresh as a Get
  // of it; the keys are not read at one instant (a cluster reads each node's
  // part in parallel).
  virtual Result<std::vector<std::optional<std::string>>> MGet(const std::vector<std::string>& keys) = 0;
  // Stores every pair (none: OK, without a round trip). A bad pair stores
  // nothing. Not atomic across keys:
  // readers may see some pairs before others, and on a cluster an error
  // from one node may leave the other nodes' pairs stored; the call is
  // idempotent, so repeating it after an error is safe.
  virtual Result<void> MSet(const std::vector<std::pair<std::string, std::string>>& items) = 0;

 protected:
  KeyValueClient() = default;
};

}  // namespace cachet
