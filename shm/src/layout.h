// The layout of a cachet segment. Shared by every process that maps it, so
// every type here is trivially copyable and standard-layout, links are byte
// offsets from the segment base, and any change bumps kLayoutVersion.
//
//   [SegmentHeader][Bucket x bucket_count][ghost x ghost_slots][main log][small log][move buffer]
//
// Index: buckets of 7 slots, one cache line each. A slot is 0 (empty) or
// (tag << 32 | item offset in 8-byte units). Linear probing over buckets;
// `overflow` counts the items whose probe passed this bucket, so a lookup
// stops at the first bucket with overflow 0 and erase needs no tombstones.
//
// Logs: items are appended at `tail` and reclaimed from `head`: logical byte
// positions that only grow. A position is (lap << lap_shift | physical
// offset), with 2^lap_shift >= size, so neither side ever divides; a lap
// ends where an item would cross the physical end. An item is live
// iff a slot points to it. Items are never changed in place except for
// `expires_at`; an update appends a new item and swaps the slot.
//
// Move buffer: one item's worth of bytes where the writer keeps the item it
// is moving within a log, with the move recorded in the header, so that a
// repair can finish a move whose writer died after the head passed the
// original (the copy may need the original's memory).
#pragma once

#include <pthread.h>

#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "cachet/cache.h"

namespace cachet::detail {

inline constexpr uint64_t kMagic = 0x3174656863614321ull;  // "!Cachet1"
inline constexpr uint32_t kLayoutVersion = 2;
inline constexpr uint32_t kSlotsPerBucket = 7;
inline constexpr uint32_t kGhostWays = 4;
inline constexpr uint32_t kCounterStripes = 16;
inline constexpr uint8_t kMaxFreq = 3;
inline constexpr uint64_t kMaxSegmentBytes = 32ull << 30;  // slot offsets are 32-bit, 8-byte units

struct alignas(64) Bucket {
  uint64_t slots[kSlotsPerBucket];  // atomic: writer stores release, readers load acquire
  uint8_t freq[kSlotsPerBucket];    // atomic relaxed: readers bump on hit, writer resets; a hint only
  uint8_t overflow;                 // atomic relaxed: writer only writes; saturates at 255
};
static_assert(sizeof(Bucket) == 64);

enum class ItemKind : uint8_t { kItem = 1, kPadding = 2 };

// Precedes key and value bytes in a log; 8-byte aligned.
// `meta` comes first so that a padding item, which may be only 8 bytes long
// at the physical end of a log, still carries its kind and length.
struct ItemHeader {
  uint64_t meta;       // atomic relaxed: value_len | key_len << 32 | kind << 48
  uint64_t pos;        // atomic: logical position of this item; stored last, with release
  int64_t expires_at;  // atomic relaxed: ms since epoch, 0 = never; the one in-place update
};
static_assert(sizeof(ItemHeader) == 24);

inline uint64_t PackMeta(uint32_t value_len, uint16_t key_len, ItemKind kind) {
  return uint64_t{value_len} | uint64_t{key_len} << 32 | uint64_t(kind) << 48;
}
inline uint32_t MetaValueLen(uint64_t m) { return static_cast<uint32_t>(m); }
inline uint16_t MetaKeyLen(uint64_t m) { return static_cast<uint16_t>(m >> 32); }
inline ItemKind MetaKind(uint64_t m) { return static_cast<ItemKind>(static_cast<uint8_t>(m >> 48)); }
inline uint64_t ItemBytes(uint64_t key_len, uint64_t value_len) {
  return (sizeof(ItemHeader) + key_len + value_len + 7) & ~uint64_t{7};
}

// Where a log lies; fixed at creation. A process checks it at attach and
// from then on uses its own copy (Cache::Impl), never these words of the
// segment, which any other process could overwrite.
struct LogShape {
  uint64_t base;       // byte offset of the region
  uint64_t size;       // bytes
  uint64_t lap_shift;  // smallest k with 2^k >= size
};

struct LogState {
  LogShape shape;
  uint64_t head;        // atomic: writer stores; AppendLocked fences release before reusing memory
  uint64_t tail;        // writer only; stored with release so repair can trust [head, tail)
  uint64_t live_bytes;  // atomic relaxed: written by the writer, read by Stats
  uint64_t live_items;  // atomic relaxed: as live_bytes
};

inline uint64_t PhysOf(const LogShape& log, uint64_t pos) { return pos & ((uint64_t{1} << log.lap_shift) - 1); }
inline uint64_t LapOf(const LogShape& log, uint64_t pos) { return pos >> log.lap_shift; }
// The position `bytes` after `pos`; a position at the physical end becomes
// the start of the next lap.
inline uint64_t Forward(const LogShape& log, uint64_t pos, uint64_t bytes) {
  const uint64_t p = pos + bytes;
  return PhysOf(log, p) == log.size ? (LapOf(log, p) + 1) << log.lap_shift : p;
}
// Bytes of the region between head and tail (live, dead and padding).
inline uint64_t UsedBytes(const LogShape& log, uint64_t head, uint64_t tail) {
  return (LapOf(log, tail) - LapOf(log, head)) * log.size + PhysOf(log, tail) - PhysOf(log, head);
}
inline uint64_t LapShiftFor(uint64_t size) {
  uint64_t k = 0;
  while ((uint64_t{1} << k) < size) ++k;
  return k;
}

struct alignas(64) StripedCounter {
  uint64_t value;  // atomic relaxed
  uint8_t pad[56];
};

enum LogId : int { kMainLog = 0, kSmallLog = 1 };

struct alignas(64) SegmentHeader {
  // Identity, checked by every attach.
  uint64_t magic;
  uint32_t layout_version;
  uint32_t header_bytes;
  uint64_t segment_bytes;
  uint64_t generation;  // 1 when made; a daemon that rebuilds a bad segment makes old + 1
  int64_t created_ms;
  int64_t heartbeat_ms;  // atomic relaxed: for the daemon's liveness

  // Options fixed at creation.
  uint64_t capacity_bytes;
  uint64_t max_entries;
  uint32_t max_key_size;
  uint32_t max_value_size;
  uint8_t policy;
  // Atomic: 1 while the owning daemon lets same-host clients write (see
  // Cache::SetClientWrites); changed, and relied on, under writer_mutex.
  // A byte that was reserved (zero) in segments made before it: a new
  // client attached to an old daemon's segment never writes it.
  uint8_t client_writes;
  uint8_t reserved[6];

  // Geometry.
  uint64_t bucket_count;
  uint64_t buckets_offset;
  uint64_t ghost_slots;  // 0 unless S3-FIFO
  uint64_t ghost_offset;
  uint64_t small_target_bytes;
  uint64_t small_target_items;
  LogState logs[2];
  uint64_t move_buffer_offset;
  uint64_t move_buffer_bytes;

  // Writer state (guarded by writer_mutex).
  uint64_t ghost_clock;
  uint64_t sweep_cursor;
  uint64_t ttl_items;  // live items with an expiry; 0 lets writes skip the sweep
  uint64_t repairs;    // atomic relaxed
  // The move within one log in progress: the slot's value before the move
  // (0: none; stored with release after the fields below and the move
  // buffer, cleared once the slot names the copy), where the slot is, and
  // the reference count the copy gets.
  uint64_t move_slot;
  uint64_t move_bucket;
  uint32_t move_index;
  uint8_t move_log;
  uint8_t move_freq;
  uint8_t move_reserved[2];
  uint64_t moves_finished;       // atomic relaxed: moves a repair completed from the move buffer
  pthread_mutex_t writer_mutex;  // process-shared, robust

  // Counters (atomic relaxed).
  uint64_t sets, erases, evictions, expirations;
  StripedCounter hits[kCounterStripes];
  StripedCounter misses[kCounterStripes];
};
static_assert(std::is_trivially_copyable_v<SegmentHeader> && std::is_standard_layout_v<SegmentHeader>);
static_assert(std::is_trivially_copyable_v<Bucket> && std::is_standard_layout_v<Bucket>);
static_assert(std::is_trivially_copyable_v<ItemHeader> && std::is_standard_layout_v<ItemHeader>);

inline constexpr uint64_t kHeaderBytes = (sizeof(SegmentHeader) + 4095) & ~uint64_t{4095};

// Where everything goes for a set of options.
struct Geometry {
  uint64_t max_entries = 0;
  uint64_t bucket_count = 0;
  uint64_t ghost_slots = 0;
  uint64_t main_log_bytes = 0;
  uint64_t small_log_bytes = 0;
  uint64_t small_target_bytes = 0;
  uint64_t small_target_items = 0;
  uint64_t move_buffer_bytes = 0;
  uint64_t segment_bytes = 0;
};
Geometry ComputeGeometry(const CacheOptions& options);

}  // namespace cachet::detail
