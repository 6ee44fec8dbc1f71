// Recovery of Cache::Impl: run by the writer that finds the writer mutex
// "owner dead", i.e. a writer was killed inside a write. Everything the
// readers rely on is re-derived from what survives on its own:
//  * log heads and tails (single words, each always consistent),
//  * index slots (single words), each re-checked against the item it names.
// Slots naming anything but a whole, well-formed item of the same key inside
// its log's live window are dropped; live counts and bucket overflow counts
// are recomputed from the slots that remain.
#include <cstring>

#include "atomics.h"
#include "cache_impl.h"
#include "hashing.h"

namespace cachet {

using namespace detail;

bool Cache::Impl::ItemValidLocked(uint64_t slot, uint64_t bucket_pos, uint64_t* home, uint64_t* bytes, LogId* log_id) {
  const uint64_t offset = uint64_t{SlotUnit(slot)} * 8;
  const LogState* log = LogContaining(offset);
  if (log == nullptr || offset + sizeof(ItemHeader) > log->base + log->size) return false;
  const auto* item = reinterpret_cast<const ItemHeader*>(base_ + offset);
  const uint64_t meta = item->meta;
  const uint64_t size = ItemBytes(MetaKeyLen(meta), MetaValueLen(meta));
  if (MetaKind(meta) != ItemKind::kItem || MetaKeyLen(meta) == 0 || MetaKeyLen(meta) > options_.max_key_size ||
      MetaValueLen(meta) > options_.max_value_size || offset + size > log->base + log->size) {
    return false;
  }
  // The item must lie wholly inside [head, tail) of its log.
  if (PhysOf(*log, item->pos) != offset - log->base || item->pos < log->head ||
      Forward(*log, item->pos, size) > log->tail) {
    return false;
  }
  const std::string_view key(reinterpret_cast<const char*>(item + 1), MetaKeyLen(meta));
  const uint64_t hash = HashKey(key);
  if (TagOf(hash) != static_cast<uint32_t>(slot >> 32)) return false;
  *home = HomeBucket(hash);
  // The slot must be reachable: at or after its home bucket, wrapping.
  const uint64_t distance = (bucket_pos + bucket_count_ - *home) % bucket_count_;
  if (distance >= bucket_count_) return false;
  *bytes = size;
  *log_id = log == &header_->logs[kSmallLog] ? kSmallLog : kMainLog;
  return true;
}

void Cache::Impl::RepairLocked() {
  for (LogState& log : header_->logs) {
    if (log.head > log.tail || UsedBytes(log, log.head, log.tail) > log.size) StoreRelaxed(log.head, log.tail);
    StoreRelaxed(log.live_bytes, uint64_t{0});
    StoreRelaxed(log.live_items, uint64_t{0});
  }
  for (uint64_t b = 0; b < bucket_count_; ++b) StoreRelaxed(buckets_[b].overflow, uint8_t{0});
  uint64_t live_slots = 0;
  header_->ttl_items = 0;
  for (uint64_t b = 0; b < bucket_count_; ++b) {
    Bucket& bucket = buckets_[b];
    for (uint32_t i = 0; i < kSlotsPerBucket; ++i) {
      const uint64_t slot = bucket.slots[i];
      if (slot == 0) continue;
      uint64_t home = 0;
      uint64_t bytes = 0;
      LogId log_id = kMainLog;
      if (!ItemValidLocked(slot, b, &home, &bytes, &log_id) || live_slots >= header_->max_entries) {
        StoreRelease(bucket.slots[i], uint64_t{0});
        continue;
      }
      ++live_slots;
      if (reinterpret_cast<const ItemHeader*>(base_ + uint64_t{SlotUnit(slot)} * 8)->expires_at != 0) {
        ++header_->ttl_items;
      }
      LogState& log = header_->logs[log_id];
      StoreRelaxed(log.live_bytes, log.live_bytes + bytes);
      StoreRelaxed(log.live_items, log.live_items + 1);
      for (uint64_t x = home; x != b; x = NextBucket(x)) {
        if (buckets_[x].overflow < 255) StoreRelaxed(buckets_[x].overflow, static_cast<uint8_t>(buckets_[x].overflow + 1));
      }
    }
  }
  AddRelaxed(header_->repairs, uint64_t{1});
}

}  // namespace cachet
