// Logs and eviction of Cache::Impl: appending items, making room, and the
// FIFO, CLOCK and S3-FIFO policies. All of it runs under the writer mutex.
//
// Making room processes the head item of a log. A dead item (erased,
// replaced, moved) is simply passed. A live one is either evicted or kept by
// copying it to a log's tail; which, is the policy's decision when the cache
// is over capacity, and always "keep" when only contiguous space is short.
#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstring>

#include "atomics.h"
#include "byte_copy.h"
#include "cache_impl.h"
#include "hashing.h"

namespace cachet {

using namespace detail;

namespace {
// S3-FIFO moves an item from the small queue to main once it was read this
// many times while in small.
constexpr uint8_t kPromoteFreq = 1;
}  // namespace

uint64_t Cache::Impl::TailRoom(const LogState& log) const {
  const LogShape& shape = ShapeOf(log);
  return shape.size - UsedBytes(shape, log.head, log.tail);
}

uint64_t Cache::Impl::RoomNeeded(const LogState& log, uint64_t bytes) const {
  const LogShape& shape = ShapeOf(log);
  const uint64_t to_end = shape.size - PhysOf(shape, log.tail);
  return bytes <= to_end ? bytes : to_end + bytes;  // an item never wraps: pad to the end first
}

void Cache::Impl::AdvanceHeadLocked(LogState& log, uint64_t bytes) {
  // Readers validate copies against head (ReadItem); AppendLocked fences
  // before reusing the memory this frees.
  StoreRelaxed(log.head, Forward(ShapeOf(log), log.head, bytes));
}

uint64_t Cache::Impl::AppendLocked(LogId id, const uint64_t* words, uint64_t bytes, uint64_t tag_bits) {
  LogState& log = header_->logs[id];
  const LogShape& shape = shapes_[id];
  // Pairs with the acquire fence in ReadItem: a reader that sees any word we
  // store below also sees the head advances that freed this memory.
  std::atomic_thread_fence(std::memory_order_release);
  const uint64_t to_end = shape.size - PhysOf(shape, log.tail);
  if (bytes > to_end) {
    auto* pad = reinterpret_cast<uint64_t*>(base_ + shape.base + PhysOf(shape, log.tail));
    StoreRelaxed(pad[0], PackMeta(static_cast<uint32_t>(to_end), 0, ItemKind::kPadding));
    StoreRelease(log.tail, Forward(shape, log.tail, to_end));  // release: repair trusts [head, tail)
  }
  const uint64_t offset = shape.base + PhysOf(shape, log.tail);
  auto* dst = reinterpret_cast<uint64_t*>(base_ + offset);
  constexpr uint64_t kHeaderWords = sizeof(ItemHeader) / 8;
  StoreRelaxed(dst[0], words[0]);  // meta
  StoreRelaxed(dst[2], words[2]);  // expires_at
  StoreWords(dst + kHeaderWords, words + kHeaderWords, bytes / 8 - kHeaderWords);
  const uint64_t pos = log.tail;
  StoreRelease(dst[1], pos);  // pos, last: publishes the item
  StoreRelease(log.tail, Forward(shape, pos, bytes));
  return MakeSlot(tag_bits, LapOf(shape, pos), offset / 8);
}

void Cache::Impl::MakeRoomLocked(LogId target, uint64_t bytes, LogPos skip) {
  // Readers in other processes may keep every item referenced faster than
  // we clear the bits: after about one lap's worth of steps (items counted at
  // entry), an over-capacity head is evicted whatever its counter says.
  const uint64_t max_second_chances = TotalLiveItems() + 64;
  Compaction compaction(target);
  for (uint64_t steps = 0;; ++steps) {
    const bool over = TotalLiveBytes() + bytes > options_.capacity_bytes || TotalLiveItems() + 1 > options_.max_entries;
    const LogState& log = header_->logs[target];
    if (!over && RoomNeeded(log, bytes) <= TailRoom(log)) return;
    if (over) {
      ProcessHeadLocked(ChooseVictimLocked(), true, skip, steps < max_second_chances);
    } else {
      CompactStepLocked(compaction, skip);
    }
  }
}

// Compaction copies a log's live head items to a tail until the contiguous
// room is there. While the live counts are true one lap of it is enough: the
// lap reclaims all dead space, and a log is sized for capacity_bytes plus an
// eighth plus two of the largest items. Counts that are too low (a segment
// written by something else, e.g. two index slots forged to name one item)
// would have it copy the same items round and round, forever, holding the
// writer mutex. So past two laps the counts are rebuilt (RepairLocked), and
// past two more the head is evicted instead of kept.
void Cache::Impl::CompactStepLocked(Compaction& c, LogPos skip) {
  LogState& log = header_->logs[c.log];
  const LogShape& shape = shapes_[c.log];
  if (c.passed > 2 * shape.size && !c.recounted) {
    std::fprintf(stderr,
                 "cachet: the live counts of segment '%s' say %llu items and %llu bytes, yet two laps of its %s "
                 "log made no room; recounting them from the index\n",
                 segment_->name().c_str(), static_cast<unsigned long long>(TotalLiveItems()),
                 static_cast<unsigned long long>(TotalLiveBytes()), c.log == kSmallLog ? "small" : "main");
    RepairLocked(skip);
    c.recounted = true;
    c.passed = 0;
    return;  // the caller checks again with true counts
  }
  const bool evict = c.passed > 2 * shape.size;
  const uint64_t head = log.head;
  ProcessHeadLocked(c.log, evict, skip, !evict);
  // Only a head or tail forged after attach sends the head back: count a lap.
  c.passed += log.head >= head ? UsedBytes(shape, head, log.head) : shape.size;
}

LogId Cache::Impl::ChooseVictimLocked() const {
  const LogState& small = header_->logs[kSmallLog];
  const LogState& main = header_->logs[kMainLog];
  if (options_.policy != EvictionPolicy::kS3Fifo || small.head == small.tail) return kMainLog;
  if (main.head == main.tail) return kSmallLog;
  const bool small_full = small.live_bytes >= small_target_bytes_ || small.live_items >= small_target_items_;
  return small_full ? kSmallLog : kMainLog;
}

uint64_t Cache::Impl::RecordBytesAtLocked(LogId id, uint64_t pos) const {
  const LogState& log = header_->logs[id];
  const LogShape& shape = shapes_[id];
  if (pos < log.head || pos >= log.tail || pos % 8 != 0 || log.tail % 8 != 0) return 0;
  const uint64_t phys = PhysOf(shape, pos);
  if (phys + sizeof(uint64_t) > shape.size) return 0;  // a position is never at or past the log's end
  const auto* item = reinterpret_cast<const ItemHeader*>(base_ + shape.base + phys);
  const uint64_t meta = item->meta;
  uint64_t bytes = 0;
  if (MetaKind(meta) == ItemKind::kPadding) {
    bytes = MetaValueLen(meta);  // padding runs to the log's end (AppendLocked)
    if (bytes != shape.size - phys) return 0;
  } else {
    if (phys + sizeof(ItemHeader) > shape.size || !ItemMetaValid(meta)) return 0;
    bytes = ItemBytes(MetaKeyLen(meta), MetaValueLen(meta));
    // Items never wrap, and each records where it was appended.
    if (phys + bytes > shape.size || item->pos != pos) return 0;
  }
  return bytes <= log.tail - pos ? bytes : 0;
}

uint64_t Cache::Impl::HeadRecordBytesLocked(LogId id) const {
  const LogState& log = header_->logs[id];
  const uint64_t bytes = RecordBytesAtLocked(id, log.head);
  if (bytes == 0) return 0;
  // A length grown by damage would pass the records after it with their
  // slots still in the index: the next record must start where this ends.
  const uint64_t next = Forward(shapes_[id], log.head, bytes);
  return next == log.tail || RecordBytesAtLocked(id, next) != 0 ? bytes : 0;
}

void Cache::Impl::DropDamagedLogLocked(LogId id, LogPos skip) {
  LogState& log = header_->logs[id];
  std::fprintf(stderr,
               "cachet: the %s log of segment '%s' holds a record this code never wrote at position %llu; "
               "dropping the log's items and repairing the index\n",
               id == kSmallLog ? "small" : "main", segment_->name().c_str(), static_cast<unsigned long long>(log.head));
  // The log restarts empty at a position appends can use: on the 8-byte
  // grid and inside the log (else at the start of the next lap). Readers of
  // its items see the head pass them and miss; the repair then drops their
  // slots and recounts what is live.
  const LogShape& shape = shapes_[id];
  uint64_t restart = log.tail & ~uint64_t{7};
  if (PhysOf(shape, restart) >= shape.size) restart = (LapOf(shape, restart) + 1) << shape.lap_shift;
  StoreRelaxed(log.tail, restart);
  StoreRelaxed(log.head, restart);
  RepairLocked(skip);
}

void Cache::Impl::ProcessHeadLocked(LogId id, bool over_capacity, LogPos skip, bool may_keep) {
  LogState& log = header_->logs[id];
  const LogShape& shape = shapes_[id];
  const uint64_t offset = shape.base + PhysOf(shape, log.head);
  const auto* item = reinterpret_cast<const ItemHeader*>(base_ + offset);
  // Only a segment written by something else fails this: a process with
  // write access that is buggy or hostile. Passing such a record could
  // stall or overrun; the log is dropped instead.
  const uint64_t bytes = HeadRecordBytesLocked(id);
  if (bytes == 0) return DropDamagedLogLocked(id, skip);
  const uint64_t meta = item->meta;
  if (MetaKind(meta) == ItemKind::kPadding) {
    AdvanceHeadLocked(log, bytes);
    return;
  }
  const auto unit = static_cast<uint32_t>(offset / 8);
  const std::string_view key(reinterpret_cast<const char*>(item + 1), MetaKeyLen(meta));
  const uint64_t hash = HashKey(key);
  const bool replaced_now = id == skip.log && log.head == skip.pos;
  const std::optional<SlotRef> ref =
      replaced_now ? std::nullopt : FindSlotLocked(hash, MakeSlot(TagBits(hash), LapOf(shape, log.head), unit));
  if (!ref) {  // dead: erased, replaced or moved; or the item being replaced now
    AdvanceHeadLocked(log, bytes);
    return;
  }
  const ItemView view{id, offset, bytes, key, item->expires_at};
  if (ExpiredAt(view.expires_at, clock_.NowMs())) {
    RemoveItemLocked(*ref, view);
    AddRelaxed(header_->expirations, uint64_t{1});
    AdvanceHeadLocked(log, bytes);
    return;
  }
  const uint8_t freq = LoadRelaxed(ref->bucket->freq[ref->index]);
  if (!over_capacity) {
    MoveItemLocked(*ref, view, kMainLog, freq, skip);
    return;
  }
  switch (may_keep ? options_.policy : EvictionPolicy::kFifo) {
    case EvictionPolicy::kFifo: break;
    case EvictionPolicy::kClock:
      if (freq > 0) return MoveItemLocked(*ref, view, kMainLog, 0, skip);
      break;
    case EvictionPolicy::kS3Fifo:
      if (id == kSmallLog) {
        if (freq >= kPromoteFreq) return MoveItemLocked(*ref, view, kMainLog, 0, skip);
        GhostPutLocked(FingerprintOf(hash));
      } else if (freq > 0) {
        return MoveItemLocked(*ref, view, kMainLog, static_cast<uint8_t>(freq - 1), skip);
      }
      break;
  }
  RemoveItemLocked(*ref, view);
  AddRelaxed(header_->evictions, uint64_t{1});
  AdvanceHeadLocked(log, bytes);
}

void Cache::Impl::MoveItemLocked(const SlotRef& ref, const ItemView& item, LogId to, uint8_t freq, LogPos skip) {
  LogState& from = header_->logs[item.log];
  LogState& dest = header_->logs[to];
  const bool same_log = item.log == to;
  // Room in another log is made first: that may move items through the
  // move buffer, which is free again when it returns.
  const uint64_t named = ref.bucket->slots[ref.index];
  for (Compaction c(to); !same_log && RoomNeeded(dest, item.bytes) > TailRoom(dest);) CompactStepLocked(c, skip);
  // A repair on the way (a damaged log dropped, the counts rebuilt) may have
  // dropped this item's slot: it is dead then, and the caller passes it next.
  if (ref.bucket->slots[ref.index] != named) return;

  LoadWords(reinterpret_cast<const uint64_t*>(base_ + item.offset), move_buffer_, item.bytes / 8);
  uint64_t& slot = ref.bucket->slots[ref.index];
  const uint64_t old_slot = slot;
  if (same_log) {
    // The head must pass the original before the tail can take its memory
    // back for the copy; readers of the original retry until the slot names
    // the copy. Until then the only whole copy is in the move buffer, and
    // the header says so: a writer killed in between leaves the repair to
    // append it (FinishMoveLocked). A move to another log needs no record:
    // the original stays inside its log until the slot names the copy.
    header_->move_bucket = ref.bucket_pos;
    header_->move_index = ref.index;
    header_->move_log = static_cast<uint8_t>(item.log);
    header_->move_freq = freq;
    StoreRelease(header_->move_slot, old_slot);
    AdvanceHeadLocked(from, item.bytes);
    if (RoomNeeded(dest, item.bytes) > TailRoom(dest)) {
      // Only when dead space leaves no contiguous room: evict after all.
      RemoveItemLocked(ref, item);
      AddRelaxed(header_->evictions, uint64_t{1});
      StoreRelease(header_->move_slot, uint64_t{0});
      return;
    }
  }
  StoreRelease(slot, AppendLocked(to, move_buffer_, item.bytes, old_slot & 0xffff'0000'0000'0000ull));
  StoreRelaxed(ref.bucket->freq[ref.index], freq);
  if (same_log) {
    StoreRelease(header_->move_slot, uint64_t{0});
  } else {
    AdvanceHeadLocked(from, item.bytes);
    StoreRelaxed(from.live_bytes, from.live_bytes - item.bytes);
    StoreRelaxed(from.live_items, from.live_items - 1);
    StoreRelaxed(dest.live_bytes, dest.live_bytes + item.bytes);
    StoreRelaxed(dest.live_items, dest.live_items + 1);
  }
}

// The ghost queue remembers fingerprints of keys evicted from the small
// queue, for about as many insertions as main holds items. Sets of
// kGhostWays entries (fingerprint << 32 | insertion stamp); oldest replaced.
bool Cache::Impl::GhostTakeLocked(uint32_t fingerprint) {
  if (ghost_ == nullptr) return false;
  uint64_t* set = ghost_ + FastRange(fingerprint, ghost_slots_ / kGhostWays) * kGhostWays;
  const auto now = static_cast<uint32_t>(header_->ghost_clock);
  const uint64_t window = std::max<uint64_t>(header_->logs[kMainLog].live_items, 1);
  for (uint32_t w = 0; w < kGhostWays; ++w) {
    const uint64_t e = set[w];
    if (e != 0 && static_cast<uint32_t>(e >> 32) == fingerprint &&
        static_cast<uint32_t>(now - static_cast<uint32_t>(e)) <= window) {
      set[w] = 0;
      return true;
    }
  }
  return false;
}

void Cache::Impl::GhostPutLocked(uint32_t fingerprint) {
  if (ghost_ == nullptr) return;
  uint64_t* set = ghost_ + FastRange(fingerprint, ghost_slots_ / kGhostWays) * kGhostWays;
  const auto now = static_cast<uint32_t>(++header_->ghost_clock);
  uint32_t victim = 0;
  uint32_t oldest_age = 0;
  for (uint32_t w = 0; w < kGhostWays; ++w) {
    if (set[w] == 0) {
      victim = w;
      break;
    }
    const uint32_t age = now - static_cast<uint32_t>(set[w]);
    if (age >= oldest_age) {
      oldest_age = age;
      victim = w;
    }
  }
  set[victim] = uint64_t{fingerprint} << 32 | now;
}

}  // namespace cachet
