// Recovery of Cache::Impl: run by the writer that finds the writer mutex
// "owner dead", i.e. a writer was killed inside a write. Everything the
// readers rely on is re-derived from what survives on its own:
//  * log heads and tails (single words, each always consistent),
//  * a move within a log that the dead writer left half done, finished from
//    the copy in the move buffer,
//  * index slots (single words), each re-checked against the item it names.
// Slots naming anything but a whole, well-formed item with the slot's tag
// and lap inside its log's live window are dropped, and so is a second slot
// naming an item; live counts, TTL counts and bucket overflow counts are
// recomputed from the slots that remain.
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <memory>
#include <new>
#include <optional>

#include "atomics.h"
#include "cache_impl.h"
#include "hashing.h"

namespace cachet {

using namespace detail;

bool Cache::Impl::ItemValidLocked(uint64_t slot, uint64_t* home, uint64_t* bytes, LogId* log_id) {
  const uint64_t offset = uint64_t{SlotUnit(slot)} * 8;
  LogId id = kMainLog;
  const LogShape* log = LogContaining(offset, &id);
  if (log == nullptr || offset + sizeof(ItemHeader) > log->base + log->size) return false;
  const auto* item = reinterpret_cast<const ItemHeader*>(base_ + offset);
  const uint64_t meta = item->meta;
  const uint64_t size = ItemBytes(MetaKeyLen(meta), MetaValueLen(meta));
  if (!ItemMetaValid(meta) || offset + size > log->base + log->size) {
    return false;
  }
  // The item must lie wholly inside [head, tail) of its log.
  const LogState& state = header_->logs[id];
  if (PhysOf(*log, item->pos) != offset - log->base || item->pos < state.head ||
      Forward(*log, item->pos, size) > state.tail) {
    return false;
  }
  const std::string_view key(reinterpret_cast<const char*>(item + 1), MetaKeyLen(meta));
  const uint64_t hash = HashKey(key);
  if (TagOf(hash) != SlotTag(slot) || (LapOf(*log, item->pos) & 0xffff) != SlotLap(slot)) return false;
  // Any bucket is reachable from the home bucket: the overflow counts along
  // the way are recomputed by the caller.
  *home = HomeBucket(hash);
  *bytes = size;
  *log_id = id;
  return true;
}

bool Cache::Impl::FinishMoveLocked() noexcept {
  const uint64_t moving = header_->move_slot;
  if (moving == 0) return false;
  StoreRelaxed(header_->move_slot, uint64_t{0});
  const uint64_t b = header_->move_bucket;
  const uint32_t i = header_->move_index;
  if (b >= bucket_count_ || i >= kSlotsPerBucket || header_->move_log > kSmallLog) return false;
  uint64_t& slot = buckets_[b].slots[i];
  // Published (the slot names the copy), or evicted: nothing left to do.
  if (slot != moving) return false;
  // The copy must be the item the slot named: well formed, same key tag,
  // and its position the slot's offset and lap in that log.
  const auto id = static_cast<LogId>(header_->move_log);
  const LogShape& shape = shapes_[id];
  LogState& log = header_->logs[id];
  const auto* copy = reinterpret_cast<const ItemHeader*>(move_buffer_);
  const uint64_t meta = copy->meta;
  const uint64_t bytes = ItemBytes(MetaKeyLen(meta), MetaValueLen(meta));
  if (!ItemMetaValid(meta) || bytes > move_buffer_bytes_) {
    return false;
  }
  const uint64_t offset = uint64_t{SlotUnit(moving)} * 8;
  const uint64_t pos = copy->pos;
  const std::string_view key(reinterpret_cast<const char*>(copy + 1), MetaKeyLen(meta));
  if (offset < shape.base || PhysOf(shape, pos) != offset - shape.base ||
      (LapOf(shape, pos) & 0xffff) != SlotLap(moving) || TagOf(HashKey(key)) != SlotTag(moving)) {
    return false;
  }
  // The head has not passed the original: it is whole, and the slot stays.
  if (pos >= log.head) return false;
  const uint64_t tag_bits = moving & 0xffff'0000'0000'0000ull;
  if (const std::optional<uint64_t> appended = CopyAtTailLocked(id, bytes)) {
    // The writer died after appending the copy, before the slot named it.
    StoreRelease(slot, MakeSlot(tag_bits, LapOf(shape, *appended), (shape.base + PhysOf(shape, *appended)) / 8));
  } else if (RoomNeeded(log, bytes) <= TailRoom(log)) {
    StoreRelease(slot, AppendLocked(id, move_buffer_, bytes, tag_bits));
  } else {
    return false;  // no room even for the copy: the writer would have evicted it
  }
  StoreRelaxed(buckets_[b].freq[i], header_->move_freq);
  AddRelaxed(header_->moves_finished, uint64_t{1});
  return true;
}

std::optional<uint64_t> Cache::Impl::CopyAtTailLocked(LogId id, uint64_t bytes) const noexcept {
  const LogShape& shape = shapes_[id];
  const LogState& log = header_->logs[id];
  // The item that ends at the tail; an item that ended at the physical end
  // left the tail at the start of the next lap.
  uint64_t end = log.tail;
  if (PhysOf(shape, end) == 0 && LapOf(shape, end) > 0) end = ((LapOf(shape, end) - 1) << shape.lap_shift) + shape.size;
  if (PhysOf(shape, end) < bytes || end - bytes < log.head) return std::nullopt;
  const uint64_t pos = end - bytes;
  const auto* item = reinterpret_cast<const uint64_t*>(base_ + shape.base + PhysOf(shape, pos));
  // Whole and published (pos is stored last), and the same bytes as the
  // move buffer apart from pos: then it is the copy, or a dead twin of it
  // that no other slot names (one slot per key), which serves as well.
  constexpr size_t kPosWord = offsetof(ItemHeader, pos) / 8;
  if (item[kPosWord] != pos) return std::nullopt;
  for (size_t w = 0; w < bytes / 8; ++w) {
    if (w != kPosWord && item[w] != move_buffer_[w]) return std::nullopt;
  }
  return pos;
}

size_t Cache::Impl::RepairLocked(LogPos skip) noexcept {
  size_t dropped = 0;
  for (LogState& log : header_->logs) {
    const LogShape& shape = ShapeOf(log);
    if (log.head > log.tail || UsedBytes(shape, log.head, log.tail) > shape.size) StoreRelaxed(log.head, log.tail);
  }
  FinishMoveLocked();
  // New counts are built aside and published at the end, so lock-free
  // readers keep probing with the old overflow counts meanwhile (a count
  // that was too low can only have hidden keys; it is never lowered early).
  // Without memory for that, every bucket a surviving slot probes past is
  // saturated instead (255: unknown, never lowered): lookups stay right,
  // only longer. Nothing here throws: the writer mutex must be released.
  const std::unique_ptr<uint8_t[]> overflow(new (std::nothrow) uint8_t[bucket_count_]());
  if (!overflow) {
    std::fprintf(stderr, "cachet: repair has no memory for %llu overflow counts; saturating them\n",
                 static_cast<unsigned long long>(bucket_count_));
  }
  // One bit per 8-byte unit of the segment: set for each item a kept slot
  // names. A second slot naming the same item (only a forged index has one)
  // is dropped: removing the item would clear one slot and leave the other
  // counted and naming memory the log reuses.
  const uint64_t units = segment_->size() / 8;
  const std::unique_ptr<uint64_t[]> named(new (std::nothrow) uint64_t[(units + 63) / 64]());
  if (!named) {
    std::fprintf(stderr, "cachet: repair has no memory to find slots naming one item twice; keeping them\n");
  }
  uint64_t live_bytes[2] = {0, 0};
  uint64_t live_items[2] = {0, 0};
  uint64_t ttl_items = 0;
  for (uint64_t b = 0; b < bucket_count_; ++b) {
    Bucket& bucket = buckets_[b];
    for (uint32_t i = 0; i < kSlotsPerBucket; ++i) {
      const uint64_t slot = bucket.slots[i];
      if (slot == 0) continue;
      uint64_t home = 0;
      uint64_t bytes = 0;
      LogId log_id = kMainLog;
      const uint64_t unit = SlotUnit(slot);
      if (!ItemValidLocked(slot, &home, &bytes, &log_id) || live_items[0] + live_items[1] >= options_.max_entries ||
          (named && (named[unit / 64] >> (unit % 64) & 1) != 0)) {
        StoreRelease(bucket.slots[i], uint64_t{0});
        ++dropped;
        continue;
      }
      if (named) named[unit / 64] |= uint64_t{1} << (unit % 64);
      const auto* item = reinterpret_cast<const ItemHeader*>(base_ + unit * 8);
      // The item a write is replacing keeps its slot until the write ends,
      // but that write has already stopped counting it.
      if (log_id != skip.log || item->pos != skip.pos) {
        live_bytes[log_id] += bytes;
        live_items[log_id] += 1;
        if (item->expires_at != 0) ++ttl_items;
      }
      for (uint64_t x = home; x != b; x = NextBucket(x)) {
        if (!overflow) {
          StoreRelaxed(buckets_[x].overflow, uint8_t{255});
        } else if (overflow[x] < 255) {
          ++overflow[x];
        }
      }
    }
  }
  for (uint64_t b = 0; b < bucket_count_ && overflow; ++b) {
    if (buckets_[b].overflow != overflow[b]) StoreRelaxed(buckets_[b].overflow, overflow[b]);
  }
  for (int id : {kMainLog, kSmallLog}) {
    StoreRelaxed(header_->logs[id].live_bytes, live_bytes[id]);
    StoreRelaxed(header_->logs[id].live_items, live_items[id]);
  }
  header_->ttl_items = ttl_items;
  AddRelaxed(header_->repairs, uint64_t{1});
  return dropped;
}

}  // namespace cachet
