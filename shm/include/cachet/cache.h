// cachet::Cache: a key-value cache whose data lives in one memory segment.
//
// The segment is either private to this process (CreatePrivate) or a named
// POSIX shared-memory object that other processes attach to (CreateNamed,
// OpenNamed). The code is the same for both.
//
// Keys and values are byte strings. The cache holds at most
// `capacity_bytes` of items and `max_entries` items; beyond either, the
// eviction policy makes room. Every key may carry a TTL; an expired key reads
// as a miss at once and its space is reclaimed actively (ReclaimExpired, and
// a little on every write) as well as on access.
//
// Thread and process safety:
//  * Every method is safe to call from many threads at once.
//  * Reads (Get, GetInto, Contains, Ttl, Size, Stats) take no lock: they copy
//    optimistically and validate, so a reader in any process may be killed at
//    any instruction without harming writers or other readers.
//  * Writes serialize on a process-shared robust mutex in the segment. A
//    writer killed while holding it leaves the segment to be repaired by the
//    next writer (see docs/design.md, "Recovery").
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "cachet/clock.h"
#include "cachet/result.h"

namespace cachet {

enum class EvictionPolicy : uint8_t {
  kFifo = 1,    // evict in insertion order
  kClock = 2,   // LRU approximated by CLOCK (one reference bit, second chance)
  kS3Fifo = 3,  // small FIFO + main CLOCK-like FIFO + ghost queue (default)
};

const char* EvictionPolicyName(EvictionPolicy policy);
Result<EvictionPolicy> ParseEvictionPolicy(std::string_view name);

struct CacheOptions {
  // Bytes of live items (24-byte item header + key + value, rounded up to 8).
  uint64_t capacity_bytes = 64ull << 20;
  // Most items held at once; 0 derives it as capacity_bytes / 64.
  uint64_t max_entries = 0;
  uint32_t max_key_size = 250;
  uint32_t max_value_size = 1u << 20;
  EvictionPolicy policy = EvictionPolicy::kS3Fifo;

  Result<void> Validate() const;
};

enum class SetCondition : uint8_t { kAlways, kIfAbsent, kIfPresent };

struct SetOptions {
  // Time to live; zero means the key never expires. Negative, or more than
  // Cache::kMaxTtl, is an error.
  std::chrono::milliseconds ttl{0};
  SetCondition condition = SetCondition::kAlways;
};

struct CacheStats {
  uint64_t hits = 0;
  uint64_t misses = 0;
  uint64_t sets = 0;
  uint64_t erases = 0;
  uint64_t evictions = 0;
  uint64_t expirations = 0;  // expired items reclaimed
  uint64_t entries = 0;
  uint64_t live_bytes = 0;  // bytes of live items, as counted by capacity_bytes
  uint64_t capacity_bytes = 0;
  uint64_t max_entries = 0;
  uint64_t segment_bytes = 0;
  uint64_t page_bytes = 0;  // of the memory behind the segment: 4096, or a huge page's size
  uint64_t generation = 0;
  uint64_t repairs = 0;  // index repairs: a writer found dead mid-write, or a damaged log dropped
  int64_t heartbeat_ms = 0;
};

class Cache {
 public:
  class Impl;
  static constexpr std::chrono::milliseconds kNoExpiry = std::chrono::milliseconds::max();
  // Longest TTL accepted: about 100 years. Set refuses more; Expire clamps.
  static constexpr std::chrono::milliseconds kMaxTtl{100ll * 365 * 24 * 3600 * 1000};

  // A cache in memory private to this process.
  static Result<std::unique_ptr<Cache>> CreatePrivate(const CacheOptions& options,
                                                      const Clock& clock = SystemClock::Instance());
  // A new named segment: a POSIX shared-memory name ("cachet-x", in
  // /dev/shm) or the absolute path of a file on a hugetlbfs mount
  // ("/dev/hugepages/cachet-x"), for huge pages. Fails with kAlreadyExists
  // if one exists, kNoSpace if its memory cannot be reserved.
  // `generation` tells readers a rebuilt segment from the one it replaced.
  static Result<std::unique_ptr<Cache>> CreateNamed(const std::string& name, const CacheOptions& options,
                                                    const Clock& clock = SystemClock::Instance(),
                                                    uint64_t generation = 1);
  // Attaches to an existing named segment after validating its header.
  static Result<std::unique_ptr<Cache>> OpenNamed(const std::string& name,
                                                  const Clock& clock = SystemClock::Instance());
  // Removes the name; processes already attached keep their mapping.
  static Result<void> RemoveNamed(const std::string& name);

  ~Cache();
  Cache(const Cache&) = delete;
  Cache& operator=(const Cache&) = delete;

  // Get and GetInto count a hit or miss and mark the key as used for the
  // eviction policy; Contains and Ttl do neither.
  std::optional<std::string> Get(std::string_view key);
  // Like Get, but reuses `value`'s buffer. Returns false on a miss, and then
  // `*value` is unspecified.
  bool GetInto(std::string_view key, std::string* value);
  bool Contains(std::string_view key);
  // A hint for reading several keys (MGET): fetches the index lines of up
  // to kPrefetchKeys of `keys`, then the items they point at, so that the
  // reads that follow find them in the CPU cache instead of waiting on
  // memory one key after another. Reads nothing and counts nothing.
  static constexpr size_t kPrefetchKeys = 16;
  void Prefetch(const std::string_view* keys, size_t count) const;
  // For a loop over `count` keys in order, called before key `i` is used:
  // at the start of each group of kPrefetchKeys, prefetches that group, the
  // keys named by `key_at(j)` (a std::string_view) for j from i on.
  template <typename KeyAt>
  void PrefetchAhead(size_t i, size_t count, KeyAt key_at) const {
    // A key made on the fly (a std::string) would be gone before Prefetch.
    static_assert(std::is_same_v<decltype(key_at(i)), std::string_view>, "key_at must return a std::string_view");
    if (i % kPrefetchKeys != 0 || i >= count) return;
    std::string_view group[kPrefetchKeys];
    const size_t n = count - i < kPrefetchKeys ? count - i : kPrefetchKeys;
    for (size_t k = 0; k < n; ++k) group[k] = key_at(i + k);
    Prefetch(group, n);
  }
  // Remaining time to live; kNoExpiry if the key has none; nullopt if absent.
  std::optional<std::chrono::milliseconds> Ttl(std::string_view key);
  // The value (into `value`) and remaining time to live of `key` from one
  // consistent read, or nullopt if absent; like Ttl, counts no hit and marks
  // nothing for eviction. For copying keys elsewhere (replication).
  std::optional<std::chrono::milliseconds> Peek(std::string_view key, std::string* value);

  // Returns true if stored, false if the SetCondition was not met.
  Result<bool> Set(std::string_view key, std::string_view value, const SetOptions& options = {});
  // Adds `delta` to the decimal integer stored at `key` and returns the
  // result; a missing key starts at 0 and gets `ttl_on_create` (0 = none);
  // an existing key keeps its TTL. NOT_INTEGER / OVERFLOW leave it unchanged.
  Result<int64_t> Incr(std::string_view key, int64_t delta,
                       std::chrono::milliseconds ttl_on_create = std::chrono::milliseconds(0));

  // One page of a full walk: start with cursor 0 and pass back the returned
  // cursor until it is 0 again. Keys present for the whole walk are returned
  // at least once. `pattern` is a shell glob (fnmatch); empty matches all.
  struct ScanPage {
    uint64_t cursor = 0;
    std::vector<std::string> keys;
  };
  ScanPage Scan(uint64_t cursor, std::string_view pattern = {}, size_t max_buckets = 64);

  bool Erase(std::string_view key);
  // Sets a new TTL on an existing key; ttl <= 0 expires it now. False if absent.
  bool Expire(std::string_view key, std::chrono::milliseconds ttl);
  // Removes the TTL of an existing key. False if absent.
  bool Persist(std::string_view key);
  void Clear();

  // Reclaims expired items, scanning at most `max_buckets` index buckets from
  // where the previous call stopped. Returns how many it reclaimed.
  size_t ReclaimExpired(size_t max_buckets = 256);

  // Checks every index slot against the item it names and drops the ones
  // that fail (see docs/design.md, "Writers"); returns how many it dropped.
  // For a process that re-attaches to a segment whose writer may have died.
  size_t Repair();
  // Records that the owning daemon is alive (header heartbeat, clock time).
  void Heartbeat();
  // Records that it is gone (a heartbeat of 0), without the writer lock:
  // guest writes are refused from now on, and one under way finishes. For a
  // daemon that stops while the lock is held too long to revoke the grant.
  void EndHeartbeat();

  // Same-host writes (docs/design.md, "Same-host writes"). The daemon that
  // owns a named segment grants other processes on its host the right to
  // write it, or takes the right back; it is off in a new segment. A change
  // takes the writer lock, so once SetClientWrites(false) returns no guest
  // write is under way and none will begin. The daemon revokes it wherever
  // a write must pass through it (a cluster node) or the segment is about
  // to be dropped.
  void SetClientWrites(bool granted);
  bool ClientWritesGranted() const;
  // A guest's writes: as Set, Incr, Erase and Expire, but each first checks
  // under the writer lock that the grant is on and that the daemon's
  // heartbeat (Heartbeat) is at most kGuestHeartbeatLimit old; otherwise it
  // fails with kUnavailable and changes nothing. So a segment whose daemon
  // died takes no more writes once that time has passed.
  static constexpr std::chrono::milliseconds kGuestHeartbeatLimit{1000};
  // A guest write waits this long at most for the writer lock (its holder
  // may be another guest, stopped), then fails with kUnavailable.
  static constexpr std::chrono::milliseconds kGuestLockWait{1000};
  Result<bool> GuestSet(std::string_view key, std::string_view value, const SetOptions& options = {});
  Result<int64_t> GuestIncr(std::string_view key, int64_t delta, std::chrono::milliseconds ttl_on_create);
  Result<bool> GuestErase(std::string_view key);
  Result<bool> GuestExpire(std::string_view key, std::chrono::milliseconds ttl);

  // Holds the writer lock for the calling thread until it is destroyed; the
  // writes this thread makes on this cache meanwhile run under it. For an
  // owner whose clients share the lock and that must not wait forever on
  // one stopped while holding it (SIGSTOP, a debugger, a frozen container):
  // it leases the lock with a bounded wait before each write. A lease is
  // moved, not copied, and must end on the thread that took it.
  class WriterLease {
   public:
    WriterLease(WriterLease&& other) noexcept : impl_(other.impl_) { other.impl_ = nullptr; }
    WriterLease& operator=(WriterLease&&) = delete;
    WriterLease(const WriterLease&) = delete;
    ~WriterLease();

   private:
    friend class Cache;
    explicit WriterLease(Impl* impl) : impl_(impl) {}
    Impl* impl_;
  };
  // Waits at most `wait` for the writer lock. Fails with kTimeout, naming
  // the thread that holds it and its state ("thread 4242 (stopped)"), or
  // with kInvalidArgument if this thread already holds a lease.
  Result<WriterLease> LeaseWriter(std::chrono::milliseconds wait);

  size_t Size() const;
  CacheStats Stats() const;
  const CacheOptions& Options() const;
  // The name or path this cache was created or opened with; empty if private.
  const std::string& Name() const;

 private:
  explicit Cache(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace cachet
