// Cache::Impl: the store over one mapped segment (see layout.h for the map).
//
// Readers (Lookup) take no lock. Everything named *Locked requires the
// writer mutex in the segment, held through WriterLock. The writer alone
// writes items, slots, log heads and tails; readers write only the `freq`
// hint bytes and the striped hit/miss counters.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "cachet/cache.h"
#include "layout.h"
#include "segment.h"

namespace cachet {

class Cache::Impl {
 public:
  // Lays out a fresh segment for `options` (already validated).
  static std::unique_ptr<Impl> Format(std::unique_ptr<detail::Segment> segment, const CacheOptions& options,
                                      const detail::Geometry& geometry, const Clock& clock, uint64_t generation);
  // Validates the header of an existing segment.
  static Result<std::unique_ptr<Impl>> Attach(std::unique_ptr<detail::Segment> segment, const Clock& clock);

  // Lock-free. On a hit fills `value` (if not null) and `expires_at`. A
  // `touch` lookup counts as a hit or miss and marks the key as used.
  bool Lookup(std::string_view key, std::string* value, int64_t* expires_at, bool touch = true);
  void Prefetch(const std::string_view* keys, size_t count) const;

  // Who writes: the owner (the daemon, or any user of a private or named
  // cache), or a guest, whose writes need the segment's client-writes grant
  // and without it fail with kUnavailable, changing nothing.
  enum class Writer { kOwner, kGuest };
  Result<bool> Set(std::string_view key, std::string_view value, const SetOptions& options, Writer who);
  Result<int64_t> Incr(std::string_view key, int64_t delta, std::chrono::milliseconds ttl_on_create, Writer who);
  Cache::ScanPage Scan(uint64_t cursor, std::string_view pattern, size_t max_buckets);
  Result<bool> Erase(std::string_view key, Writer who);
  // ttl <= 0 erases the key; nullopt removes its TTL. False if absent.
  Result<bool> SetExpiry(std::string_view key, std::optional<std::chrono::milliseconds> ttl, Writer who);
  void SetClientWrites(bool granted);
  bool ClientWritesGranted() const;
  // Takes the writer lock for this thread until EndLease (Cache::WriterLease).
  Result<void> LeaseWriter(std::chrono::milliseconds wait);
  void EndLease();
  // Who holds the writer lock: "thread 123 (stopped)", for error messages.
  std::string WriterLockHolder() const;
  void Clear();
  size_t ReclaimExpired(size_t max_buckets);

  size_t Repair();
  void Heartbeat();
  void EndHeartbeat();
  size_t Size() const;
  CacheStats Stats() const;
  const CacheOptions& options() const { return options_; }
  const std::string& name() const { return segment_->name(); }
  const Clock& clock() const { return clock_; }

 private:
  class WriterLock;
  // A guest gives up on a lock held too long (its holder may be stopped).
  static std::optional<std::chrono::milliseconds> LockWaitFor(Writer who) {
    return who == Writer::kGuest ? std::optional<std::chrono::milliseconds>(Cache::kGuestLockWait) : std::nullopt;
  }
  // After taking `lock` for `who` at `now`: an error, changing nothing,
  // unless the lock is held and `who` may write (an owner always; a guest
  // while the grant is on and the daemon's heartbeat is fresh).
  Result<void> AdmitLocked(const WriterLock& lock, Writer who, int64_t now) const;
  struct SlotRef {
    detail::Bucket* bucket;
    uint32_t index;
    uint64_t home;        // home bucket of the key
    uint64_t bucket_pos;  // bucket number of the slot
  };
  struct ItemView {
    detail::LogId log = detail::kMainLog;
    uint64_t offset = 0;  // bytes from the segment base
    uint64_t bytes = 0;
    std::string_view key;
    int64_t expires_at = 0;
  };
  enum class ReadResult { kMatch, kMismatch, kTorn };
  // An item's full position: its log and its logical position there (lap and
  // offset). Eviction recognizes the item a Set is replacing by this, never
  // by its offset alone: every lap reuses the same offsets.
  struct LogPos {
    detail::LogId log;
    uint64_t pos;
  };
  static constexpr LogPos kNoItem{detail::kMainLog, ~uint64_t{0}};  // a position no head reaches

  Impl(std::unique_ptr<detail::Segment> segment, const Clock& clock);
  void BindGeometry();

  // Readers.
  ReadResult ReadItem(uint64_t slot, std::string_view key, std::string* value, int64_t* expires_at) const;
  // The log whose region holds `offset` (by this process's copy of the
  // geometry), or null.
  const detail::LogShape* LogContaining(uint64_t offset, detail::LogId* id) const;
  void CountHit(bool hit);

  // Writes (writer).
  Result<void> CheckSizes(std::string_view key, size_t value_size) const;
  static Result<int64_t> ExpiryFor(std::chrono::milliseconds ttl, int64_t now);
  // Lays the item out in a thread-local buffer, valid until the next call.
  static uint64_t* StageItem(std::string_view key, std::string_view value, int64_t expires_at);
  std::optional<SlotRef> FindLiveLocked(std::string_view key, uint64_t hash, int64_t now);
  void StoreLocked(const std::optional<SlotRef>& ref, uint64_t hash, const uint64_t* staged, int64_t now);

  // Index (writer).
  uint64_t HomeBucket(uint64_t hash) const;
  uint64_t NextBucket(uint64_t b) const { return b + 1 == bucket_count_ ? 0 : b + 1; }
  std::optional<SlotRef> FindLocked(std::string_view key, uint64_t hash);
  std::optional<SlotRef> FindSlotLocked(uint64_t hash, uint64_t slot_value);
  // True if the index has an empty slot; the probe starts at `hash`'s home
  // bucket, where one is nearly always found.
  bool IndexHasFreeSlotLocked(uint64_t hash) const;
  SlotRef InsertSlotLocked(uint64_t hash, uint64_t slot_value);
  void ClearSlotLocked(const SlotRef& ref);
  ItemView ViewLocked(uint64_t slot) const;
  void RemoveItemLocked(const SlotRef& ref, const ItemView& item);
  size_t ReclaimExpiredLocked(size_t max_buckets, int64_t now);
  bool ExpiredAt(int64_t expires_at, int64_t now) const { return expires_at != 0 && now >= expires_at; }

  // Logs and eviction (writer).
  // This process's copy of `log`'s shape (see detail::LogShape).
  const detail::LogShape& ShapeOf(const detail::LogState& log) const {
    return shapes_[&log == &header_->logs[detail::kSmallLog] ? detail::kSmallLog : detail::kMainLog];
  }
  uint64_t TailRoom(const detail::LogState& log) const;
  uint64_t RoomNeeded(const detail::LogState& log, uint64_t bytes) const;
  void AdvanceHeadLocked(detail::LogState& log, uint64_t bytes);
  // Appends and returns the new item's slot value, with the tag of `tag_bits`.
  uint64_t AppendLocked(detail::LogId id, const uint64_t* words, uint64_t bytes, uint64_t tag_bits);
  // Items at `skip` are passed as dead: the item being replaced, already uncounted.
  void MakeRoomLocked(detail::LogId target, uint64_t bytes, LogPos skip);
  // One call's compaction of a log: how far its head has gone, and whether
  // the live counts were rebuilt because that went too far.
  struct Compaction {
    explicit Compaction(detail::LogId id) : log(id) {}
    detail::LogId log;
    uint64_t passed = 0;
    bool recounted = false;
  };
  // Passes or keeps the head item of `c.log`, or rebuilds the counts if the
  // compaction has gone round too often (see eviction.cc).
  void CompactStepLocked(Compaction& c, LogPos skip);
  detail::LogId ChooseVictimLocked() const;
  void ProcessHeadLocked(detail::LogId id, bool over_capacity, LogPos skip, bool may_keep);
  // True if `meta` is an item's this cache could hold: its kind, a key of
  // 1 to max_key_size bytes and a value within max_value_size.
  bool ItemMetaValid(uint64_t meta) const {
    return detail::MetaKind(meta) == detail::ItemKind::kItem && detail::MetaKeyLen(meta) != 0 &&
           detail::MetaKeyLen(meta) <= options_.max_key_size && detail::MetaValueLen(meta) <= options_.max_value_size;
  }
  // The bytes of the record at `pos` in log `id`, or 0 if it is not one
  // this code could have written there.
  uint64_t RecordBytesAtLocked(detail::LogId id, uint64_t pos) const;
  // The bytes of the record at log `id`'s head, or 0 if it or the record
  // after it is not whole (then the log is damaged from there on).
  uint64_t HeadRecordBytesLocked(detail::LogId id) const;
  // Empties a damaged log and repairs the index (its items' slots go).
  void DropDamagedLogLocked(detail::LogId id, LogPos skip);
  void MoveItemLocked(const SlotRef& ref, const ItemView& item, detail::LogId to, uint8_t freq, LogPos skip);
  uint64_t TotalLiveBytes() const;
  uint64_t TotalLiveItems() const;

  // Ghost queue of S3-FIFO (writer).
  bool GhostTakeLocked(uint32_t fingerprint);
  void GhostPutLocked(uint32_t fingerprint);

  // Recovery after a writer died holding the lock (writer).
  // Returns how many slots it dropped. Never throws: it runs while the
  // writer mutex is held, inside WriterLock's constructor and destructor.
  // `skip`: the item a write in progress is replacing (already uncounted).
  size_t RepairLocked(LogPos skip = kNoItem) noexcept;
  bool ItemValidLocked(uint64_t slot, uint64_t* home, uint64_t* bytes, detail::LogId* log);
  // Completes the move recorded in the header, if its writer died after the
  // head passed the original; clears the record. True if it appended the copy.
  bool FinishMoveLocked() noexcept;
  // The logical position of a whole copy of the move buffer's `bytes` that
  // ends at the tail of log `id`, if the dead writer appended one.
  std::optional<uint64_t> CopyAtTailLocked(detail::LogId id, uint64_t bytes) const noexcept;

  std::unique_ptr<detail::Segment> segment_;
  const Clock& clock_;
  char* base_ = nullptr;
  detail::SegmentHeader* header_ = nullptr;
  detail::Bucket* buckets_ = nullptr;
  uint64_t* ghost_ = nullptr;
  // Geometry validated at attach (or made by Format): never re-read from
  // the segment, where a buggy or hostile process could change it.
  uint64_t bucket_count_ = 0;
  uint64_t ghost_slots_ = 0;
  uint64_t small_target_bytes_ = 0;
  uint64_t small_target_items_ = 0;
  detail::LogShape shapes_[2] = {};
  CacheOptions options_;
  uint64_t* move_buffer_ = nullptr;  // in the segment; guarded by its writer mutex
  uint64_t move_buffer_bytes_ = 0;
};

}  // namespace cachet
